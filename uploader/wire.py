"""The versioned wire format: every record body and every payload is written here, and only here.

A record body is one JSON object, encoded once when the record enters the buffer; the buffer
stores it without its id, and `payload()` splices the stable id in when the batch is sent, so
a resend after a crash carries the same id. The JSON Schema that describes payloads ships in
`uploader/schema/` and is the one file both the agent and any receiver load; the record
builders below are the only code that must satisfy it.

Values are JSON numbers only where JSON holds them exactly: integers beyond ±2**53 and the
float specials travel as their xs: lexical strings ("NaN", "INF", "-INF"), because orjson
would silently turn NaN into null and many JSON readers round big integers.

Value codecs are keyed by the xs: type name, a string the caller passes in (the AAS side owns
that vocabulary, aas_models/types.py): adding a type is one row in `_CODECS`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from itertools import repeat
from typing import Any

import orjson

WIRE_VERSION = 2
SCHEMA_FILE = "records-v2.schema.json"
MAX_SAFE_INT = 2**53

ValueEncoder = Callable[[Any], Any]
ValueDecoder = Callable[[Any], Any]

_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
_dumps = orjson.dumps


class WireValueError(ValueError):
    """A value does not fit the element's declared xs: type."""


# -- value codecs ---------------------------------------------------------------------------------


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


def _decode_float(v: Any) -> float:
    if isinstance(v, str):
        return {"NaN": math.nan, "INF": math.inf, "-INF": -math.inf}[v]
    return float(v)


def _int_encoder(xs: str, lo: int, hi: int) -> ValueEncoder:
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


def _decode_datetime(v: Any) -> datetime:
    return datetime.fromisoformat(v.replace("Z", "+00:00"))


def _encode_langstring(v: Any) -> Any:
    if isinstance(v, dict) and "text" in v:
        return [{"language": v.get("language") or "en", "text": v["text"] if v["text"] is not None else ""}]
    raise WireValueError(f"expected localized text {{'language', 'text'}}, got {type(v).__name__} {v!r}")


def _decode_langstring(v: Any) -> dict[str, str]:
    return {"language": v[0]["language"], "text": v[0]["text"]}


def _same(v: Any) -> Any:
    return v


@dataclass(frozen=True, slots=True)
class _Codec:
    encode: ValueEncoder
    decode: ValueDecoder


def _int(xs: str, bits: int, *, signed: bool) -> tuple[str, _Codec]:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return xs, _Codec(_int_encoder(xs, lo, hi), int)


_CODECS: dict[str, _Codec] = dict(
    (
        ("xs:boolean", _Codec(_encode_bool, _same)),
        _int("xs:byte", 8, signed=True),
        _int("xs:unsignedByte", 8, signed=False),
        _int("xs:short", 16, signed=True),
        _int("xs:unsignedShort", 16, signed=False),
        _int("xs:int", 32, signed=True),
        _int("xs:unsignedInt", 32, signed=False),
        _int("xs:long", 64, signed=True),
        _int("xs:unsignedLong", 64, signed=False),
        ("xs:float", _Codec(encode_float, _decode_float)),
        ("xs:double", _Codec(encode_float, _decode_float)),
        ("xs:string", _Codec(_encode_str, _same)),
        ("xs:dateTime", _Codec(encode_datetime, _decode_datetime)),
        ("xs:base64Binary", _Codec(_encode_bytes, base64.b64decode)),
        ("langString", _Codec(_encode_langstring, _decode_langstring)),
    )
)

XS_TYPES: tuple[str, ...] = tuple(_CODECS)


def _codec(xs_type: str) -> _Codec:
    try:
        return _CODECS[xs_type]
    except KeyError:
        raise WireValueError(f"unknown value type {xs_type!r}; allowed: {', '.join(XS_TYPES)}") from None


def value_encoder(xs_type: str, *, is_array: bool = False) -> ValueEncoder:
    """The function that turns a plain Python value of `xs_type` into its JSON form."""
    scalar = _codec(xs_type).encode
    if not is_array:
        return scalar

    def encode_array(v: Any) -> Any:
        if not isinstance(v, list | tuple):
            raise WireValueError(f"expected an array of {xs_type}, got {type(v).__name__} {v!r}")
        return [scalar(x) for x in v]

    return encode_array


def decode_value(xs_type: str, v: Any, *, is_array: bool = False) -> Any:
    """Inverse of the encoder for receivers and tests: the JSON form back to a Python value."""
    decode = _codec(xs_type).decode
    if is_array:
        return [decode(x) for x in v]
    return decode(v)


def jsonable(v: Any) -> Any:
    """Event fields and status details: any plain value into something JSON holds faithfully."""
    if isinstance(v, float):
        return encode_float(v)
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_SAFE_INT:
        return str(v)
    if isinstance(v, bytes):
        return _encode_bytes(v)
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    return v


def dumps(obj: Any) -> bytes:
    """orjson with the options every record uses (UTC 'Z' datetimes)."""
    return _dumps(obj, option=_OPTIONS)


# -- record bodies (one JSON object each, without "id"; see the schema's $defs) -------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Element:
    """What every data record of one AAS element says about it."""

    shell: str  # AAS identifier
    submodel: str  # submodel identifier
    path: str  # idShort path, dot-separated
    value_type: str  # xs: type name, or "langString"
    node: str  # OPC UA node id (or "browse:" path) the values come from
    semantic_id: str | None = None
    is_array: bool = False
    unit: str | None = None


def data_prefix(e: Element) -> bytes:
    """The constant part of every data record of one element, encoded once: `{"shell":…,…,`."""
    fixed: dict[str, Any] = {"shell": e.shell, "submodel": e.submodel, "path": e.path}
    if e.semantic_id:
        fixed["semanticId"] = e.semantic_id
    fixed["valueType"] = e.value_type
    if e.is_array:
        fixed["array"] = True
    if e.unit:
        fixed["unit"] = e.unit
    fixed["node"] = e.node
    return dumps(fixed)[:-1] + b","


def data_body(prefix: bytes, value: Any, source_time: Time, server_time: Time, status: int) -> bytes:
    """A data record: the element's prefix plus the encoded value, its two timestamps and status."""
    return prefix + data_tail(value, source_time, server_time, status)


Time = datetime | int | None
"""A record time: a datetime, None, or an OPC UA DateTime as its int of 100 ns ticks since 1601-01-01 UTC
(years 1602-9999; adapters/sample.py), written as the datetime it stands for would be."""


def data_tail(value: Any, source_time: Time, server_time: Time, status: int) -> bytes:
    """What follows the prefix in a data record: `"value":…,"sourceTime":…,"serverTime":…,"status":…}`. The
    buffer keeps an element's prefix once and each record's tail (uploader/buffer/records.py)."""
    if source_time.__class__ is int:
        global _last_source
        last = _last_source  # a server often stamps a whole scan of values with one time
        if source_time == last[0]:
            source = last[1]
        else:
            source = _ticks_json(source_time)
            _last_source = (source_time, source)
        kept = _last_time
        if server_time == source_time:
            server = source
        elif server_time == kept[0]:  # `_time`'s own first step, without the call
            server = kept[1]
        else:
            server = _time(server_time)
    elif server_time.__class__ is int:
        source, server = _time(source_time), _time(server_time)
    else:
        varying = {"value": value, "sourceTime": source_time, "serverTime": server_time, "status": status}
        return _dumps(varying, option=_OPTIONS)[1:]
    return _TAIL % (_dumps(value, option=_OPTIONS), source, server, status)


_TAIL = b'"value":%b,"sourceTime":%b,"serverTime":%b,"status":%d}'
_GOOD_TAIL = b'"value":%b,"sourceTime":%b,"serverTime":%b,"status":0}'


def float_tails(values: Sequence[float], sources: Sequence[int], servers: Sequence[int | None]) -> list[bytes]:
    """`data_tail` of each of many values at once, byte for byte, where every value is a finite float with
    status Good (0), every source time OPC UA ticks and every server time ticks or None: one orjson call for
    all the values, and the times as `_times_json` writes them."""
    if not values:
        return []
    texts = _dumps(values).strip(b"[]").split(b",")  # a float's JSON has no comma, and no bracket
    if len(texts) != len(values):  # not floats after all
        return list(map(data_tail, values, sources, servers, repeat(0)))
    source = _times_json(sources)
    if servers == sources:
        server = source
    elif None in servers:
        known = dict(zip(sources, source, strict=True))
        server = [known[t] if t in known else _time(t) for t in servers]
    else:
        server = _times_json(servers)  # type: ignore[arg-type]  # no None in them
    return list(map(_GOOD_TAIL.__mod__, zip(texts, source, server, strict=True)))


def _times_json(ticks: Sequence[int]) -> list[bytes]:
    """`_ticks_json` of each: once per distinct time where few are (a server stamping a scan of values with
    one), else one by one (C-level passes over the numbers measured slower than that: bench/README.md)."""
    distinct = set(ticks)
    if len(distinct) * 4 <= len(ticks):
        known = {t: _ticks_json(t) for t in distinct}
        return list(map(known.__getitem__, ticks))
    return list(map(_ticks_json, ticks))


_TICKS_AT_UNIX = 116444736000000000  # as adapters/sample.py: TICKS_AT_UNIX_EPOCH (uploader imports no adapter)
_UNIX = datetime(1970, 1, 1, tzinfo=UTC)
_SECONDS: dict[int, bytes] = {}  # POSIX second -> its JSON string without the closing 'Z"' (as orjson writes it)
# The last ticks `_time` wrote (a server time is often one per publish), and the last source ticks `data_tail`
# wrote, each with its JSON: one tuple, replaced whole. -1 before the first (no time is: None must never match).
_last_time: tuple[Any, bytes] = (-1, b"")
_last_source: tuple[Any, bytes] = (-1, b"")


def _ticks_json(ticks: int) -> bytes:
    """OPC UA ticks as JSON: exactly what orjson writes for the datetime they stand for (whole µs). Per value one
    lookup of its millisecond (a busy server's values share them) and one join with its microseconds."""
    milli = ticks // 10_000  # milliseconds since 1601; 1970 falls on a whole second of them
    head = _MILLIS.get(milli)
    if head is None:
        head = _milli_json(milli)
    micro = (ticks - milli * 10_000) // 10
    if micro or milli % 1000:
        return head + _MICROS[micro]
    return head[:-4] + b'Z"'  # a whole second: orjson writes no fraction


_MILLIS: dict[int, bytes] = {}  # millisecond (since 1601) -> its JSON string up to the microseconds: `"….123`
_MICROS = tuple(b'%03dZ"' % n for n in range(1000))  # a millisecond's microseconds and the string's end


def _milli_json(milli: int) -> bytes:
    if len(_MILLIS) >= 4096:  # the milliseconds of the last seconds of values are enough
        _MILLIS.clear()
    unix_milli = milli - _TICKS_AT_UNIX // 10_000
    second = unix_milli // 1000
    start = _SECONDS.get(second)
    if start is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        start = _SECONDS[second] = _dumps(_UNIX + timedelta(seconds=second), option=_OPTIONS)[:-2]
    head = _MILLIS[milli] = b"%b.%03d" % (start, unix_milli - second * 1000)
    return head


def _time(t: Time) -> bytes:
    """A record time as JSON, as orjson writes it (ticks as the datetime they stand for)."""
    if t.__class__ is not int:
        return _dumps(t, option=_OPTIONS)
    global _last_time
    last = _last_time
    if t == last[0]:
        return last[1]
    made = _ticks_json(t)
    _last_time = (t, made)
    return made


def event_body(*, shell: str, source: str, node: str, time: datetime, fields: dict[str, Any]) -> bytes:
    """An event record; severity and message are lifted out of the fields when the server sent them."""
    rec: dict[str, Any] = {
        "shell": shell,
        "source": source,
        "node": node,
        "time": time,
        "eventType": str(fields.get("EventType", "")),
        "fields": jsonable(fields),
    }
    if isinstance(fields.get("Severity"), int):
        rec["severity"] = fields["Severity"]
    msg = fields.get("Message")
    if isinstance(msg, dict):
        rec["message"] = msg.get("text", "")
    elif msg is not None:
        rec["message"] = str(msg)
    return dumps(rec)


@dataclass(frozen=True, slots=True)
class GapElement:
    """One element's interrupted range, in the clock its own timestamps use."""

    path: str
    start: datetime | None  # its last delivered value (None: unknown, e.g. never had one)
    end: datetime | None  # its first value after (None: until its next value)
    clock: str  # "source", "server", "agent" or "records" (the dropped records' own times)
    end_clock: str | None = None  # when the element's first value after used another clock


def gap_body(
    *,
    shell: str,
    submodel: str,
    start: datetime,
    end: datetime,
    reason: str,
    elements: Sequence[GapElement],
    events: Sequence[str] = (),
    lost: int | None = None,
) -> bytes:
    """Collection for these elements (and event sources) of one machine was interrupted.

    `start`/`end` bound the interruption as the agent saw it (its own clock); each element's own
    bounds are in its clock. `lost` counts values known to be lost (quota drops, refused batches).
    """
    els = []
    for e in elements:
        el: dict[str, Any] = {"path": e.path, "start": e.start, "end": e.end, "clock": e.clock}
        if e.end_clock is not None:
            el["endClock"] = e.end_clock
        els.append(el)
    rec: dict[str, Any] = {
        "shell": shell,
        "submodel": submodel,
        "start": start,
        "end": end,
        "reason": reason,
        "elements": els,
    }
    if events:
        rec["events"] = list(events)
    if lost is not None:
        rec["lost"] = lost
    return dumps(rec)


def status_body(time: datetime, kind: str, message: str, **extra: Any) -> bytes:
    """A status record: what happened (`kind`), for whom to read (`message`), and any details."""
    return dumps({"time": time, "kind": kind, "message": message, **jsonable(extra)})


def usage_body(*, event: str, time: datetime, use: str, user: str, ip: str, data_bytes: int, action: str = "") -> bytes:
    """A usage record (사후관리): one real use of the agent by a person. `event` is the event's own id,
    the same in every copy of it, so the usage-log sender and receivers count it once."""
    rec: dict[str, Any] = {"event": event, "time": time, "use": use, "user": user, "ip": ip, "bytes": data_bytes}
    if action:
        rec["action"] = action
    return dumps(rec)


def analysis_body(*, shell: str, summary: dict[str, Any]) -> bytes:
    """An analysis record: one machine's period summary from the edge analysis (docs/analysis.md),
    as the analyzer made it, with the period's end as `time` and the machine's shell."""
    return dumps({"time": summary["end"], "shell": shell, **jsonable(summary)})


def agent_state(state: str, down: Sequence[str] = ()) -> bytes:
    """The agent's health on a status channel (MQTT: retained): "online", "degraded" (with the parts
    that are down) or "offline"."""
    doc: dict[str, Any] = {"state": state}
    if down:
        doc["down"] = list(down)
    return dumps(doc)


# -- payloads ---------------------------------------------------------------------------------------


def payload(header: dict[str, Any], ids: Sequence[str], bodies: Sequence[bytes]) -> bytes:
    """One message: the batch header and its records, each with its id spliced in front."""
    return _message(header, [b'{"id":"' + i.encode() + b'",' + b[1:] for i, b in zip(ids, bodies, strict=True)])


def payload_of(header: dict[str, Any], origin: str, seqs: Sequence[int], bodies: Sequence[bytes]) -> bytes:
    """`payload` with the ids `record_id(origin, seq)`, made as bytes in one pass (the forwarder's call)."""
    lead = b'{"id":"' + origin.encode() + b"-"
    return _message(header, [b'%b%d",%b' % (lead, q, b[1:]) for q, b in zip(seqs, bodies, strict=True)])


def _message(header: dict[str, Any], records: list[bytes]) -> bytes:
    return dumps({"v": WIRE_VERSION, **header})[:-1] + b',"records":[' + b",".join(records) + b"]}"


# -- version 3: each record head once per message (docs/wire.md) ------------------------------------

WIRE_VERSIONS = (2, 3)
HEADS_VERSION = 3
"""A version-3 message is a version-2 message whose records share their heads: a data record's constant part
(shell, submodel, path, valueType, node...) travels once per message in "heads", and each record that has one
says which with "h" instead of repeating it. `expand()` turns it back into the version-2 message."""


def head_object(head: bytes) -> bytes | None:
    """A stored record head (`{"shell":…,"node":…,`: the start of a body) as the JSON object a version-3
    message lists in "heads"; None if it is not the start of an object (its records then travel whole)."""
    if head[:1] != b"{" or head[-1:] != b"," or len(head) < 3:
        return None
    return head[:-1] + b"}"


def payload_v3(
    header: dict[str, Any],
    origin: str,
    heads: Sequence[bytes],
    seqs: Sequence[int],
    tails: Sequence[bytes],
    refs: Sequence[int],
) -> bytes:
    """A version-3 message: `heads` are the JSON objects (as bytes) its records refer to; record i is
    `tails[i]` with head `refs[i]` (an index into `heads`), or, where `refs[i]` is -1, the whole body `tails[i]`."""
    lead = b'{"id":"' + origin.encode() + b"-"
    records = [
        b'%b%d","h":%d,%b' % (lead, q, r, t) if r >= 0 else b'%b%d",%b' % (lead, q, t[1:])
        for q, t, r in zip(seqs, tails, refs, strict=True)
    ]
    return (
        dumps({"v": HEADS_VERSION, **header})[:-1]
        + b',"heads":['
        + b",".join(heads)
        + b'],"records":['
        + b",".join(records)
        + b"]}"
    )


class WireFormatError(ValueError):
    """A message that is not what its version says; the text names where and what is allowed."""


def expand(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[int, str]]:
    """A parsed version-3 message as the version-2 message it stands for, and the records that cannot be
    expanded (index → why: an "h" that names no head, a field both in the record and its head); those are
    left as they came. A version-2 message comes back as it is. Raises WireFormatError for a version-3
    envelope whose "heads" is not a list of JSON objects."""
    if doc.get("v") != HEADS_VERSION:
        return doc, {}
    heads = doc.get("heads")
    if not isinstance(heads, list) or not all(isinstance(h, dict) for h in heads):
        raise WireFormatError('$.heads: a version-3 message needs "heads", a list of JSON objects')
    records = doc.get("records")
    if not isinstance(records, list):
        return {**{k: v for k, v in doc.items() if k != "heads"}, "v": WIRE_VERSION}, {}
    problems: dict[int, str] = {}
    out: list[Any] = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "h" not in rec:
            out.append(rec)
            continue
        h = rec["h"]
        if not isinstance(h, int) or isinstance(h, bool) or not 0 <= h < len(heads):
            problems[i] = f'$.records[{i}].h: an index into "heads" (0 to {len(heads) - 1}), got {h!r}'
            out.append(rec)
            continue
        head = heads[h]
        rest = {k: v for k, v in rec.items() if k not in ("id", "h")}
        both = sorted(head.keys() & rest.keys())
        if both:
            problems[i] = f"$.records[{i}]: {', '.join(both)} both in the record and in its head {h}"
            out.append(rec)
            continue
        full = {"id": rec["id"]} if "id" in rec else {}
        full.update(head)
        full.update(rest)
        out.append(full)
    expanded = {k: v for k, v in doc.items() if k not in ("heads", "records")}
    expanded["v"] = WIRE_VERSION
    expanded["records"] = out
    return expanded, problems


def record_id(origin: str, seq: int) -> str:
    return f"{origin}-{seq}"


def schema() -> dict[str, Any]:
    """The payload JSON Schema (draft 2020-12) shipped with the package."""
    text = resources.files("uploader").joinpath("schema", SCHEMA_FILE).read_bytes()
    result: dict[str, Any] = orjson.loads(text)
    return result
