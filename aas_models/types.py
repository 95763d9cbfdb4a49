"""The one table of value types: OPC UA built-in type ↔ xs: type ↔ basyx type (shared/reference/aas-notes.md).

The config's type names are this table's keys; records carry its xs: names, which the wire
format encodes (uploader/wire.py keys its codecs by the same strings). Adding a type is one row.

LocalizedText has no xs: type: it becomes a MultiLanguageProperty, and `xs` names it
`LANG_STRING` ("langString", as RDF calls a language-tagged string and as the records-v1 wire schema
spells it), so a receiver never mistakes a {"language", "text"} value for a plain xs:string.
"""

from __future__ import annotations

from dataclasses import dataclass

from basyx.aas import model
from basyx.aas.model import datatypes

from . import convert
from .convert import Converter

LANG_STRING = "langString"

_INTEGER = model.DataTypeIEC61360.INTEGER_MEASURE
_REAL = model.DataTypeIEC61360.REAL_MEASURE


@dataclass(frozen=True, slots=True)
class ValueType:
    """How one OPC UA built-in type is represented in the AAS."""

    opcua: str
    xs: str  # "xs:double", ...; LANG_STRING for LocalizedText
    datatype: model.DataTypeDefXsd | None  # basyx value class; None → MultiLanguageProperty
    convert: Converter  # a plain value (adapters.sample.Sample.value) → the SDK's value; raises ValueRejected
    measure: model.DataTypeIEC61360 | None  # IEC 61360 data type of an element that has a unit

    @property
    def multilanguage(self) -> bool:
        return self.datatype is None


def _row(
    opcua: str, datatype: model.DataTypeDefXsd | None, conv: Converter, measure: model.DataTypeIEC61360 | None = None
) -> tuple[str, ValueType]:
    xs = LANG_STRING if datatype is None else datatypes.XSD_TYPE_NAMES[datatype]
    return opcua, ValueType(opcua, xs, datatype, conv, measure)


_TYPES: dict[str, ValueType] = dict(
    (
        _row("Boolean", datatypes.Boolean, convert.boolean),
        _row("SByte", datatypes.Byte, convert.integer(datatypes.Byte), _INTEGER),
        _row("Byte", datatypes.UnsignedByte, convert.integer(datatypes.UnsignedByte), _INTEGER),
        _row("Int16", datatypes.Short, convert.integer(datatypes.Short), _INTEGER),
        _row("UInt16", datatypes.UnsignedShort, convert.integer(datatypes.UnsignedShort), _INTEGER),
        _row("Int32", datatypes.Int, convert.integer(datatypes.Int), _INTEGER),
        _row("UInt32", datatypes.UnsignedInt, convert.integer(datatypes.UnsignedInt), _INTEGER),
        _row("Int64", datatypes.Long, convert.integer(datatypes.Long), _INTEGER),
        _row("UInt64", datatypes.UnsignedLong, convert.integer(datatypes.UnsignedLong), _INTEGER),
        _row("Float", datatypes.Float, convert.float32, _REAL),
        _row("Double", datatypes.Double, convert.double, _REAL),
        _row("String", datatypes.String, convert.string),
        _row("DateTime", datatypes.DateTime, convert.date_time),
        _row("UtcTime", datatypes.DateTime, convert.date_time),
        _row("ByteString", datatypes.Base64Binary, convert.base64),
        _row("LocalizedText", None, convert.lang_string),
        _row("StatusCode", datatypes.UnsignedInt, convert.integer(datatypes.UnsignedInt), _INTEGER),
        _row("Guid", datatypes.String, convert.string),
        _row("NodeId", datatypes.String, convert.string),
    )
)

OPCUA_TYPES: tuple[str, ...] = tuple(_TYPES)


class UnknownTypeError(ValueError):
    def __init__(self, opcua_type: str) -> None:
        self.opcua_type = opcua_type
        super().__init__(
            f"unknown OPC UA built-in type {opcua_type!r}; allowed (case-sensitive): {', '.join(OPCUA_TYPES)}"
        )


def value_type(opcua_type: str) -> ValueType:
    try:
        return _TYPES[opcua_type]
    except KeyError:
        raise UnknownTypeError(opcua_type) from None


def xs_type(opcua_type: str) -> str:
    """The AAS value type name, e.g. "xs:double"; "langString" for LocalizedText."""
    return value_type(opcua_type).xs
