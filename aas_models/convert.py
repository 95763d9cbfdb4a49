"""Plain Python values into the values the SDK's elements hold, with the checks the metamodel needs.

Functions only; which one serves which OPC UA type is a column of the table in `types.py`.
Each raises `ValueRejected` with a reason a supplier can act on; the caller adds shell and path.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from basyx.aas import model
from basyx.aas.model import datatypes

from ._common import xml_safe

# OPC UA's invariant locale is the empty string, which is no BCP 47 tag; "und" (undetermined) is.
UNDETERMINED_LANGUAGE = "und"

_FLOAT32 = struct.Struct("<f")

Converter = Callable[[object], object]


class ValueRejected(ValueError):
    """A value that does not fit its element's type."""


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueRejected(f"not a bool ({type(value).__name__})")
    return value


def integer(datatype: Callable[[int], int]) -> Converter:
    """A converter into one of the SDK's range-checked integer classes (xs:byte ... xs:unsignedLong)."""

    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueRejected(f"not an integer ({type(value).__name__})")
        try:
            return datatype(value)
        except ValueError as e:
            raise ValueRejected(str(e)) from None

    return convert


def double(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueRejected(f"not a number ({type(value).__name__})")
    try:
        return float(value)  # also drops float subclasses (numpy) whose repr is not lexical xs:double
    except OverflowError:
        raise ValueRejected("integer too large for xs:double") from None


def float32(value: object) -> datatypes.Float:
    number = double(value)
    if not math.isfinite(number):
        return datatypes.Float(number)
    try:
        packed = _FLOAT32.pack(number)
    except OverflowError:
        raise ValueRejected("outside the 32-bit xs:float range") from None
    # The shortest decimal that reads back to the same 32 bits, so 0.1f exports as "0.1",
    # not as the double expansion "0.10000000149011612".
    for digits in range(1, 10):
        candidate = float(f"{number:.{digits}g}")
        try:
            if _FLOAT32.pack(candidate) == packed:
                return datatypes.Float(candidate)
        except OverflowError:  # near the largest float32 a short decimal rounds up past it ("3.4e+38")
            continue
    raise AssertionError("9 significant digits always round-trip a float32")


def string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueRejected(f"not a str ({type(value).__name__})")
    if not xml_safe(value):
        raise ValueRejected("contains characters XML cannot carry (control characters or lone surrogates)")
    return str(value)


def date_time(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise ValueRejected(f"not a datetime ({type(value).__name__})")
    if value.utcoffset() is None:
        raise ValueRejected("naive datetime; a timezone-aware (UTC) datetime is required")
    return value.astimezone(UTC)


def base64(value: object) -> datatypes.Base64Binary:
    if not isinstance(value, bytes | bytearray):
        raise ValueRejected(f"not bytes ({type(value).__name__})")
    return datatypes.Base64Binary(value)


def lang_string(value: object) -> model.MultiLanguageTextType | None:
    """{"language", "text"} into a lang string; an empty text is no value (the metamodel has no empty one)."""
    if not isinstance(value, Mapping):
        raise ValueRejected(f'not a {{"language", "text"}} dict ({type(value).__name__})')
    text = value.get("text")
    language = value.get("language") or UNDETERMINED_LANGUAGE
    if not isinstance(text, str) or not isinstance(language, str):
        raise ValueRejected('"text" and "language" must be str')
    if not text:
        return None
    if not xml_safe(text):
        raise ValueRejected("text contains characters XML cannot carry")
    try:
        # Some servers send POSIX locales ("en_US"); BCP 47 spells them "en-US".
        return model.MultiLanguageTextType({language.replace("_", "-"): text})
    except ValueError as e:
        raise ValueRejected(str(e)) from None
