"""OPC UA built-in type → AAS value type, as fixed in shared/reference/aas-notes.md.

LocalizedText has no xs: type: it becomes a MultiLanguageProperty, and `xs_type` names it
`LANG_STRING` ("langString", as RDF calls a language-tagged string and as the records-v1 wire schema
spells it), so a receiver never mistakes a {"language", "text"} value for a plain xs:string.
"""

from __future__ import annotations

from dataclasses import dataclass

from basyx.aas import model
from basyx.aas.model import datatypes

LANG_STRING = "langString"


@dataclass(frozen=True, slots=True)
class ValueType:
    """How one OPC UA built-in type is represented in the AAS."""

    opcua: str
    xs: str  # "xs:double", ...; LANG_STRING for LocalizedText
    datatype: model.DataTypeDefXsd | None  # basyx value class; None → MultiLanguageProperty

    @property
    def multilanguage(self) -> bool:
        return self.datatype is None


def _entry(opcua: str, datatype: model.DataTypeDefXsd | None) -> tuple[str, ValueType]:
    xs = LANG_STRING if datatype is None else datatypes.XSD_TYPE_NAMES[datatype]
    return opcua, ValueType(opcua, xs, datatype)


_TYPES: dict[str, ValueType] = dict(
    (
        _entry("Boolean", datatypes.Boolean),
        _entry("SByte", datatypes.Byte),
        _entry("Byte", datatypes.UnsignedByte),
        _entry("Int16", datatypes.Short),
        _entry("UInt16", datatypes.UnsignedShort),
        _entry("Int32", datatypes.Int),
        _entry("UInt32", datatypes.UnsignedInt),
        _entry("Int64", datatypes.Long),
        _entry("UInt64", datatypes.UnsignedLong),
        _entry("Float", datatypes.Float),
        _entry("Double", datatypes.Double),
        _entry("String", datatypes.String),
        _entry("DateTime", datatypes.DateTime),
        _entry("UtcTime", datatypes.DateTime),
        _entry("ByteString", datatypes.Base64Binary),
        _entry("LocalizedText", None),
        _entry("StatusCode", datatypes.UnsignedInt),
        _entry("Guid", datatypes.String),
        _entry("NodeId", datatypes.String),
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
