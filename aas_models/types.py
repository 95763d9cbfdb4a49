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
    data_type_id: int  # the DataType's numeric NodeId in namespace 0 (i=11 is Double, i=294 UtcTime)
    xs: str  # "xs:double", ...; LANG_STRING for LocalizedText
    datatype: model.DataTypeDefXsd | None  # basyx value class; None → MultiLanguageProperty
    convert: Converter  # a plain value (adapters.sample.Sample.value) → the SDK's value; raises ValueRejected
    measure: model.DataTypeIEC61360 | None  # IEC 61360 data type of an element that has a unit

    @property
    def multilanguage(self) -> bool:
        return self.datatype is None


def _row(
    opcua: str,
    data_type_id: int,
    datatype: model.DataTypeDefXsd | None,
    conv: Converter,
    measure: model.DataTypeIEC61360 | None = None,
) -> tuple[str, ValueType]:
    xs = LANG_STRING if datatype is None else datatypes.XSD_TYPE_NAMES[datatype]
    return opcua, ValueType(opcua, data_type_id, xs, datatype, conv, measure)


_TYPES: dict[str, ValueType] = dict(
    (
        _row("Boolean", 1, datatypes.Boolean, convert.boolean),
        _row("SByte", 2, datatypes.Byte, convert.integer(datatypes.Byte), _INTEGER),
        _row("Byte", 3, datatypes.UnsignedByte, convert.integer(datatypes.UnsignedByte), _INTEGER),
        _row("Int16", 4, datatypes.Short, convert.integer(datatypes.Short), _INTEGER),
        _row("UInt16", 5, datatypes.UnsignedShort, convert.integer(datatypes.UnsignedShort), _INTEGER),
        _row("Int32", 6, datatypes.Int, convert.integer(datatypes.Int), _INTEGER),
        _row("UInt32", 7, datatypes.UnsignedInt, convert.integer(datatypes.UnsignedInt), _INTEGER),
        _row("Int64", 8, datatypes.Long, convert.integer(datatypes.Long), _INTEGER),
        _row("UInt64", 9, datatypes.UnsignedLong, convert.integer(datatypes.UnsignedLong), _INTEGER),
        _row("Float", 10, datatypes.Float, convert.float32, _REAL),
        _row("Double", 11, datatypes.Double, convert.double, _REAL),
        _row("String", 12, datatypes.String, convert.string),
        _row("DateTime", 13, datatypes.DateTime, convert.date_time),
        _row("UtcTime", 294, datatypes.DateTime, convert.date_time),
        _row("ByteString", 15, datatypes.Base64Binary, convert.base64),
        _row("LocalizedText", 21, None, convert.lang_string),
        _row("StatusCode", 19, datatypes.UnsignedInt, convert.integer(datatypes.UnsignedInt), _INTEGER),
        _row("Guid", 14, datatypes.String, convert.string),
        _row("NodeId", 17, datatypes.String, convert.string),
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


# The other way, for a file someone else wrote (agent/mapping_aas.py): several OPC UA types share an xs: type
# (DateTime and UtcTime; UInt32 and StatusCode; String, Guid and NodeId), so the first row of each wins unless
# the DataType's NodeId tells them apart.
_BY_XS: dict[str, str] = {}
for _vt in _TYPES.values():
    _BY_XS.setdefault(_vt.xs, _vt.opcua)
_BY_DATA_TYPE_ID: dict[int, str] = {vt.data_type_id: vt.opcua for vt in _TYPES.values()}


def opcua_type_for(xs: str, data_type_id: int | None = None) -> str | None:
    """The OPC UA type of an element of value type `xs` ("xs:double", LANG_STRING): the one the DataType
    `data_type_id` (namespace 0) names when it has that xs: type, else the table's first; None if none has it."""
    named = _BY_DATA_TYPE_ID.get(data_type_id) if data_type_id is not None else None
    if named is not None and _TYPES[named].xs == xs:
        return named
    return _BY_XS.get(xs)
