"""Latest live values: plain dict stores on the hot path, written into the SDK model only on demand.

`update` runs per sample and must stay a single dict store; all conversion, range checking and SDK
work happens in `apply`, which runs only before a snapshot, an export or an API read.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from basyx.aas import model
from basyx.aas.model import datatypes

from ._common import xml_safe
from .build import Binding, ShellEnvironment, UnknownElementError
from .types import ValueType

# OPC UA's invariant locale is the empty string, which is no BCP 47 tag; "und" (undetermined) is.
UNDETERMINED_LANGUAGE = "und"

_FLOAT32 = struct.Struct("<f")
_SHOWN_CHARS = 80


@dataclass(frozen=True, slots=True)
class ValueProblem:
    """A value `apply` did not write; the element keeps its previous value."""

    shell_id: str
    path: str
    value: str  # repr of the offending value, shortened
    expected: str  # e.g. "xs:unsignedByte", "list of xs:int", "langString"
    reason: str

    def __str__(self) -> str:
        return (
            f"shell {self.shell_id!r}, element {self.path!r}: value {self.value} not written "
            f"(expected {self.expected}): {self.reason}"
        )


class _Rejected(Exception):
    pass


class LiveValues:
    """Not thread-safe: call `update` and `apply` from the same thread (the agent's event loop).

    Accepted values per OPC UA type: bool; int for the integer types (range-checked on apply);
    float or int for Float/Double (NaN and ±inf included; Float is range-checked and rounded to
    32 bits); str for String, Guid and NodeId; bytes for ByteString; timezone-aware datetime for
    DateTime/UtcTime (normalised to UTC); {"language": str, "text": str} for LocalizedText; a list
    of those for arrays; None clears the value.
    """

    __slots__ = ("_pending", "problems")

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], object] = {}
        self.problems: list[ValueProblem] = []  # from the last apply

    def update(self, shell_id: str, path: str, value: object) -> None:
        self._pending[(shell_id, path)] = value

    def apply(self, env: ShellEnvironment) -> list[ValueProblem]:
        """Write every value updated since the last apply; never raises for a bad value."""
        pending, self._pending = self._pending, {}
        problems: list[ValueProblem] = []
        for (shell_id, path), value in pending.items():
            try:
                binding = env.binding(shell_id, path)
            except UnknownElementError as e:
                problems.append(ValueProblem(shell_id, path, _show(value), "a configured element", str(e)))
                continue
            try:
                _write(binding, value)
            except _Rejected as e:
                problems.append(ValueProblem(shell_id, path, _show(value), _expected(binding), str(e)))
            except Exception as e:  # an SDK surprise must cost one value, not the whole snapshot
                reason = f"unexpected {type(e).__name__}: {e}"
                problems.append(ValueProblem(shell_id, path, _show(value), _expected(binding), reason))
        self.problems = problems
        return problems


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _expected(binding: Binding) -> str:
    return f"list of {binding.value_type.xs}" if binding.spec.is_array else binding.value_type.xs


def _write(binding: Binding, value: object) -> None:
    vt = binding.value_type
    element = binding.element
    if isinstance(element, model.SubmodelElementList):
        element.value = _list_children(vt, value)
    elif isinstance(element, model.MultiLanguageProperty):
        element.value = None if value is None else _lang_string(value)
    elif isinstance(element, model.Property):
        element.value = None if value is None else _CONVERTERS[element.value_type](value)
    else:  # the builder creates nothing else
        raise TypeError(f"unexpected SDK element {element!r}")


def _list_children(vt: ValueType, value: object) -> list[model.SubmodelElement]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise _Rejected(f"an array element needs a list, got {type(value).__name__}")
    children: list[model.SubmodelElement] = []
    for index, item in enumerate(value):
        try:
            if item is None:
                raise _Rejected("missing value")
            if vt.datatype is None:
                children.append(model.MultiLanguageProperty(None, _lang_string(item)))
            else:
                children.append(model.Property(None, vt.datatype, _CONVERTERS[vt.datatype](item)))
        except _Rejected as e:
            raise _Rejected(f"item {index}: {e}") from None
    return children


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Rejected(f"not a bool ({type(value).__name__})")
    return value


def _integer(datatype: Callable[[int], int], value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Rejected(f"not an integer ({type(value).__name__})")
    try:
        return datatype(value)
    except ValueError as e:
        raise _Rejected(str(e)) from None


def _double(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Rejected(f"not a number ({type(value).__name__})")
    try:
        return float(value)  # also drops float subclasses (numpy) whose repr is not lexical xs:double
    except OverflowError:
        raise _Rejected("integer too large for xs:double") from None


def _float32(value: object) -> datatypes.Float:
    number = _double(value)
    if not math.isfinite(number):
        return datatypes.Float(number)
    try:
        packed = _FLOAT32.pack(number)
    except OverflowError:
        raise _Rejected("outside the 32-bit xs:float range") from None
    # The shortest decimal that reads back to the same 32 bits, so 0.1f exports as "0.1",
    # not as the double expansion "0.10000000149011612".
    for digits in range(1, 10):
        candidate = float(f"{number:.{digits}g}")
        if _FLOAT32.pack(candidate) == packed:
            return datatypes.Float(candidate)
    raise AssertionError("9 significant digits always round-trip a float32")


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Rejected(f"not a str ({type(value).__name__})")
    if not xml_safe(value):
        raise _Rejected("contains characters XML cannot carry (control characters or lone surrogates)")
    return str(value)


def _date_time(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise _Rejected(f"not a datetime ({type(value).__name__})")
    if value.utcoffset() is None:
        raise _Rejected("naive datetime; a timezone-aware (UTC) datetime is required")
    return value.astimezone(UTC)


def _base64(value: object) -> datatypes.Base64Binary:
    if not isinstance(value, bytes | bytearray):
        raise _Rejected(f"not bytes ({type(value).__name__})")
    return datatypes.Base64Binary(value)


def _lang_string(value: object) -> model.MultiLanguageTextType | None:
    if not isinstance(value, Mapping):
        raise _Rejected(f'not a {{"language", "text"}} dict ({type(value).__name__})')
    text = value.get("text")
    language = value.get("language") or UNDETERMINED_LANGUAGE
    if not isinstance(text, str) or not isinstance(language, str):
        raise _Rejected('"text" and "language" must be str')
    if not text:
        return None  # the metamodel has no empty lang string; an empty text means no value
    if not xml_safe(text):
        raise _Rejected("text contains characters XML cannot carry")
    try:
        # Some servers send POSIX locales ("en_US"); BCP 47 spells them "en-US".
        return model.MultiLanguageTextType({language.replace("_", "-"): text})
    except ValueError as e:
        raise _Rejected(str(e)) from None


_CONVERTERS: dict[model.DataTypeDefXsd, Callable[[object], object]] = {
    datatypes.Boolean: _boolean,
    datatypes.Float: _float32,
    datatypes.Double: _double,
    datatypes.String: _string,
    datatypes.DateTime: _date_time,
    datatypes.Base64Binary: _base64,
    **{
        datatype: partial(_integer, datatype)
        for datatype in (
            datatypes.Byte,
            datatypes.UnsignedByte,
            datatypes.Short,
            datatypes.UnsignedShort,
            datatypes.Int,
            datatypes.UnsignedInt,
            datatypes.Long,
            datatypes.UnsignedLong,
        )
    },
}
