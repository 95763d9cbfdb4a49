"""Turning asyncua values into the plain Python values the agent receives, and type checks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from asyncua import ua

PLAIN_TYPES: frozenset[type] = frozenset({bool, int, float, str, bytes, type(None)})

# A built-in type's DataType node is ns=0;i=<its VariantType value>. Servers may declare one of
# these standard subtypes instead; their values travel as the built-in type they derive from.
_SUBTYPES: dict[int, str] = {
    ua.ObjectIds.Duration: "Double",
    ua.ObjectIds.UtcTime: "DateTime",
    ua.ObjectIds.Enumeration: "Int32",
    **dict.fromkeys(
        (
            ua.ObjectIds.LocaleId,
            ua.ObjectIds.NormalizedString,
            ua.ObjectIds.DecimalString,
            ua.ObjectIds.DurationString,
            ua.ObjectIds.TimeString,
            ua.ObjectIds.DateString,
        ),
        "String",
    ),
}
BUILTIN_TYPE_IDS: dict[int, str] = {t.value: t.name for t in ua.VariantType if t.value} | _SUBTYPES
TYPE_ALIASES: dict[str, str] = {"UtcTime": "DateTime"}


_STATUS_NAMES: dict[int, str] = {
    code: name for name, code in vars(ua.StatusCodes).items() if isinstance(code, int) and not name.startswith("_")
}


def status_name(code: int) -> str:
    """The StatusCode's name for people: "Good", "BadNodeIdUnknown", "UncertainLastUsableValue"; info bits
    (overflow, limits) are named after it; an unknown code is shown as hex."""
    name = _STATUS_NAMES.get(code & 0xFFFF0000)
    if name is None:
        return f"0x{code:08X}"
    extra = []
    if code & 0x480 == 0x480:
        extra.append("Overflow")
    limit = (code >> 8) & 0x3 if code & 0x400 else 0
    if limit:
        extra.append({1: "Low", 2: "High", 3: "Constant"}[limit])
    return "+".join([name, *extra])


# OPC UA's "no time" is DateTime 0 (and anything before 1601), which asyncua decodes as 1601-01-01.
NO_TIME_YEAR = 1601


def no_time(t: datetime | None) -> datetime | None:
    """None for OPC UA's "no time"; any other time as it is."""
    return None if t is None or t.year == NO_TIME_YEAR else t


def plain(v: Any) -> Any:
    """A value as the agent expects it (see adapters.sample.Sample)."""
    t = type(v)
    if t in PLAIN_TYPES:
        return v
    if t is datetime:
        return v if v.tzinfo is not None else v.replace(tzinfo=UTC)
    if t is list:
        return [plain(x) for x in v]
    if t is ua.LocalizedText:
        return {"language": v.Locale or "", "text": v.Text or ""}
    if t is ua.StatusCode:
        return int(v.value)
    if t is uuid.UUID:
        return str(v)
    if t is ua.NodeId or t is ua.ExpandedNodeId or t is ua.QualifiedName:
        return v.to_string()
    if isinstance(v, IntEnum):
        return int(v)
    if isinstance(v, bytearray):
        return bytes(v)
    return str(v)


def declared_type(data_type: ua.NodeId) -> str | None:
    """The built-in type name for a server's DataType attribute, None if it is not a built-in one."""
    if data_type.NamespaceIndex != 0 or not isinstance(data_type.Identifier, int):
        return None
    return BUILTIN_TYPE_IDS.get(data_type.Identifier)


def expected(opcua_type: str) -> str:
    return TYPE_ALIASES.get(opcua_type, opcua_type)


def node_id_problem(text: str) -> str | None:
    """Why `text` is not a node id in OPC UA string notation (ns=2;s=Name, i=85, ...), or None."""
    try:
        ua.NodeId.from_string(text)
    except (ValueError, ua.UaStringParsingError) as e:
        return f"not a valid OPC UA node id: {e}; expected e.g. 'ns=2;s=CNC01.SpindleSpeed' or 'ns=3;i=1001'"
    return None
