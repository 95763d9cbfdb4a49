"""The versioned wire format: how record values are written and how batches become payloads.

A record body is one JSON object, encoded once when the record enters the buffer; the buffer
stores it without its id, and `payload()` splices the stable id in when the batch is sent, so
a resend after a crash carries the same id. The JSON Schema that describes payloads ships in
`uploader/schema/` and is the one file both the agent and any receiver load.

Values are JSON numbers only where JSON holds them exactly: integers beyond ±2**53 and the
float specials travel as their xs: lexical strings ("NaN", "INF", "-INF"), because orjson
would silently turn NaN into null and many JSON readers round big integers.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson

WIRE_VERSION = 1
SCHEMA_FILE = "records-v1.schema.json"
MAX_SAFE_INT = 2**53

ValueEncoder = Callable[[Any], Any]

_INT_RANGES: dict[str, tuple[int, int]] = {
    "xs:byte": (-(2**7), 2**7 - 1),
    "xs:unsignedByte": (0, 2**8 - 1),
    "xs:short": (-(2**15), 2**15 - 1),
    "xs:unsignedShort": (0, 2**16 - 1),
    "xs:int": (-(2**31), 2**31 - 1),
    "xs:unsignedInt": (0, 2**32 - 1),
    "xs:long": (-(2**63), 2**63 - 1),
    "xs:unsignedLong": (0, 2**64 - 1),
}


class WireValueError(ValueError):
    """A value does not fit the element's declared xs: type."""


def encode_float(v: Any) -> Any:
    if type(v) is not float:
        if not isinstance(v, int | float) or isinstance(v, bool):
            raise WireValueError(f"expected a floating-point value, got {type(v).__name__} {v!r}")
        v = float(v)
    if v - v == 0.0:  # finite: the cheapest test that is False for NaN and ±INF
        return v
    if v != v:
        return "NaN"
    return "INF" if v > 0 else "-INF"


def _int_encoder(xs: str) -> ValueEncoder:
    lo, hi = _INT_RANGES[xs]

    def encode(v: Any) -> Any:
        if type(v) is not int:
            raise WireValueError(f"expected an integer for {xs}, got {type(v).__name__} {v!r}")
        if v < lo or v > hi:
            raise WireValueError(f"{v} is outside {xs} [{lo}, {hi}]")
        return v if -MAX_SAFE_INT <= v <= MAX_SAFE_INT else str(v)

    return encode


def _encode_bool(v: Any) -> Any:
    if type(v) is not bool:
        raise WireValueError(f"expected a boolean, got {type(v).__name__} {v!r}")
    return v


def _encode_str(v: Any) -> Any:
    if type(v) is not str:
        raise WireValueError(f"expected a string, got {type(v).__name__} {v!r}")
    return v


def _encode_bytes(v: Any) -> Any:
    if not isinstance(v, bytes | bytearray):
        raise WireValueError(f"expected bytes, got {type(v).__name__} {v!r}")
    return base64.b64encode(v).decode("ascii")


def encode_datetime(v: Any) -> str:
    if not isinstance(v, datetime):
        raise WireValueError(f"expected a datetime, got {type(v).__name__} {v!r}")
    when: datetime = v if v.tzinfo is not None else v.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _encode_langstring(v: Any) -> Any:
    if isinstance(v, dict) and "text" in v:
        return [{"language": v.get("language") or "en", "text": v["text"] if v["text"] is not None else ""}]
    raise WireValueError(f"expected localized text {{'language', 'text'}}, got {type(v).__name__} {v!r}")


_SCALAR_ENCODERS: dict[str, ValueEncoder] = {
    "xs:boolean": _encode_bool,
    "xs:float": encode_float,
    "xs:double": encode_float,
    "xs:string": _encode_str,
    "xs:dateTime": encode_datetime,
    "xs:base64Binary": _encode_bytes,
    "langString": _encode_langstring,
    **{xs: _int_encoder(xs) for xs in _INT_RANGES},
}

XS_TYPES: tuple[str, ...] = tuple(_SCALAR_ENCODERS)


def value_encoder(xs_type: str, *, is_array: bool = False) -> ValueEncoder:
    """The function that turns a plain Python value of `xs_type` into its JSON form."""
    try:
        scalar = _SCALAR_ENCODERS[xs_type]
    except KeyError:
        raise WireValueError(f"unknown value type {xs_type!r}; allowed: {', '.join(XS_TYPES)}") from None
    if not is_array:
        return scalar

    def encode_array(v: Any) -> Any:
        if not isinstance(v, list | tuple):
            raise WireValueError(f"expected an array of {xs_type}, got {type(v).__name__} {v!r}")
        return [scalar(x) for x in v]

    return encode_array


def dumps(obj: Any) -> bytes:
    """orjson with the options every record uses (UTC 'Z' datetimes, no NaN-to-null surprises upstream)."""
    return orjson.dumps(obj, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


def record_prefix(fixed: dict[str, Any]) -> bytes:
    """The constant part of every body for one element, encoded once: `{"k":v,...,`."""
    return dumps(fixed)[:-1] + b","


def body(prefix: bytes, varying: dict[str, Any]) -> bytes:
    """A record body: the element's constant prefix plus the fields that change per value."""
    return prefix + dumps(varying)[1:]


def payload(header: dict[str, Any], ids: Sequence[str], bodies: Sequence[bytes]) -> bytes:
    """One message: the batch header and its records, each with its id spliced in front."""
    head = dumps({"v": WIRE_VERSION, **header})[:-1]
    parts = [b'{"id":"' + i.encode() + b'",' + b[1:] for i, b in zip(ids, bodies, strict=True)]
    return head + b',"records":[' + b",".join(parts) + b"]}"


def record_id(origin: str, seq: int) -> str:
    return f"{origin}-{seq}"


def schema() -> dict[str, Any]:
    """The payload JSON Schema (draft 2020-12) shipped with the package."""
    text = resources.files("uploader").joinpath("schema", SCHEMA_FILE).read_bytes()
    result: dict[str, Any] = orjson.loads(text)
    return result


def decode_value(xs_type: str, v: Any, *, is_array: bool = False) -> Any:
    """Inverse of the encoder for receivers and tests: the JSON form back to a Python value."""
    if is_array:
        return [decode_value(xs_type, x) for x in v]
    if xs_type in ("xs:float", "xs:double"):
        if isinstance(v, str):
            return {"NaN": math.nan, "INF": math.inf, "-INF": -math.inf}[v]
        return float(v)
    if xs_type in _INT_RANGES:
        return int(v)
    if xs_type == "xs:dateTime":
        return datetime.fromisoformat(v.replace("Z", "+00:00"))
    if xs_type == "xs:base64Binary":
        return base64.b64decode(v)
    if xs_type == "langString":
        return {"language": v[0]["language"], "text": v[0]["text"]}
    return v
