"""ConceptDescriptions for the project's own semanticIds.

An element's semanticId names a concept. Concepts of a public dictionary (ECLASS, IEC CDD, the IDTA's
admin-shell.io ids, OPC UA companion specifications, ...) are defined there, and a reader looks them up
there. A semanticId the configuration invents (`urn:edge-agent:demo:concept:SpindleSpeed`, any id not
from such a dictionary) is defined nowhere else, so the environment carries its ConceptDescription:
id = the semanticId, an IEC 61360 data specification with
- preferredName: the element's display name (every language given), and its idShort in English where
  no English name is given (AASc-3a-002 wants one in English);
- definition: the element's description, where one is given. IEC 61360 (AASc-3a-008) wants a definition
  in English in every ConceptDescription: where the description gives none, an English sentence says what
  the agent knows (the idShort, value type and unit) and that the configuration gives no definition;
- unit: the element's unit;
- dataType: the element's xs: type mapped to IEC 61360's DataTypeIec61360 (below).
Several elements that share a semanticId share one ConceptDescription: names and definition from the
first element that gives them, unit and data type only where all of them agree (a concept with two units
would be wrong about one of them).

No `isCaseOf` to ECLASS or IEC CDD: an id is only worth citing if it is certainly the right one, and
none was checked against the dictionaries for the signals the shipped configurations use (spindle speed,
temperatures, ...). A configuration that knows the standard id should use it as the semanticId.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from basyx.aas import model
from basyx.aas.model import datatypes
from basyx.aas.model.concept import ConceptDescription

from ._common import external_reference
from .spec import Element
from .text import TEXT_LIMIT, is_english, lang_texts
from .types import ValueType

# Current id of the IEC 61360 template (IDTA-01003-a-3-0-1 dropped the minor version from it).
IEC61360_TEMPLATE = "https://admin-shell.io/DataSpecificationTemplates/DataSpecificationIec61360/3"

# ISO/IEC 11179-6 IRDI, `RAI#DI#VI`, the RAI opening with an ISO 6523 ICD: ECLASS (0173-1#02-AAO128#002),
# IEC CDD (0112/2///61987#ABA565#009).
_IRDI = re.compile(r"[0-9]{4}[-/][^#\s]*#[^#\s]+#[^#\s]+")
# Hosts of public dictionaries and specifications whose IRIs are semanticIds (a subdomain counts too).
_STANDARD_HOSTS = (
    "admin-shell.io",  # IDTA submodel templates, AAS metamodel
    "eclass-cdp.com",  # ECLASS as IRIs (https://api.eclass-cdp.com/0173-1-02-...)
    "eclass.eu",
    "cdd.iec.ch",  # IEC Common Data Dictionary
    "opcfoundation.org",  # OPC UA and its companion specifications
    "qudt.org",  # units and quantity kinds
    "w3.org",
)

_INTEGERS = frozenset(
    datatypes.XSD_TYPE_NAMES[t]
    for t in (
        datatypes.Byte,
        datatypes.Short,
        datatypes.Int,
        datatypes.Long,
        datatypes.Integer,
        datatypes.UnsignedByte,
        datatypes.UnsignedShort,
        datatypes.UnsignedInt,
        datatypes.UnsignedLong,
    )
)
_REALS = frozenset(datatypes.XSD_TYPE_NAMES[t] for t in (datatypes.Float, datatypes.Double, datatypes.Decimal))
_OTHERS: dict[str, model.DataTypeIEC61360] = {
    "xs:boolean": model.DataTypeIEC61360.BOOLEAN,
    "xs:dateTime": model.DataTypeIEC61360.TIMESTAMP,
    "xs:date": model.DataTypeIEC61360.DATE,
    "xs:time": model.DataTypeIEC61360.TIME,
    "xs:base64Binary": model.DataTypeIEC61360.BLOB,
    "xs:anyURI": model.DataTypeIEC61360.IRI,
}


def is_standard_id(semantic_id: str) -> bool:
    """Whether `semantic_id` is an IRDI or an IRI of a public dictionary (which then defines the concept)."""
    if _IRDI.fullmatch(semantic_id):
        return True
    try:
        host = (urlsplit(semantic_id).hostname or "").lower()
    except ValueError:
        return False
    return any(host == h or host.endswith(f".{h}") for h in _STANDARD_HOSTS)


def iec61360_type(vt: ValueType, has_unit: bool) -> model.DataTypeIEC61360:
    """The IEC 61360 data type of an element of value type `vt`: numbers are *_MEASURE with a unit (which
    AASc-3a-009 then requires) and *_COUNT without one; LocalizedText is STRING_TRANSLATABLE."""
    if vt.multilanguage:
        return model.DataTypeIEC61360.STRING_TRANSLATABLE
    if vt.xs in _INTEGERS:
        return model.DataTypeIEC61360.INTEGER_MEASURE if has_unit else model.DataTypeIEC61360.INTEGER_COUNT
    if vt.xs in _REALS:
        return model.DataTypeIEC61360.REAL_MEASURE if has_unit else model.DataTypeIEC61360.REAL_COUNT
    return _OTHERS.get(vt.xs, model.DataTypeIEC61360.STRING)


def unit_spec(id_short: str, unit: str, vt: ValueType) -> model.EmbeddedDataSpecification:
    """The unit as IEC 61360 content embedded in an element (readable without concept descriptions)."""
    return model.EmbeddedDataSpecification(
        external_reference(IEC61360_TEMPLATE),
        model.DataSpecificationIEC61360(
            # AASc-3a-002 wants an English preferred name; the idShort is the only name we have.
            model.PreferredNameTypeIEC61360({"en": id_short}),
            data_type=vt.measure,
            unit=unit,
        ),
    )


@dataclass(frozen=True, slots=True)
class Use:
    """One element that carries a semanticId."""

    spec: Element
    id_short: str
    value_type: ValueType


def build_concept_descriptions(uses: Iterable[Use], language: str) -> list[ConceptDescription]:
    """One ConceptDescription per own (not standard) semanticId, in the order the ids are first used.
    Raises ValueError (from basyx) for texts the metamodel rejects; the builder checked them before."""
    by_id: dict[str, list[Use]] = {}
    for use in uses:
        semantic_id = use.spec.semantic_id
        if semantic_id and not is_standard_id(semantic_id):
            by_id.setdefault(semantic_id, []).append(use)
    return [_concept(semantic_id, group, language) for semantic_id, group in by_id.items()]


def _concept(semantic_id: str, uses: list[Use], language: str) -> ConceptDescription:
    first = uses[0]
    named = next((u for u in uses if u.spec.display_name is not None), None)
    names = lang_texts(named.spec.display_name, language) if named and named.spec.display_name is not None else {}
    if not any(is_english(tag) for tag in names):
        names["en"] = (named or first).id_short
    described = next((u.spec.description for u in uses if u.spec.description), None)
    units = {u.spec.unit for u in uses}
    unit = units.pop() if len(units) == 1 else None
    data_types = {iec61360_type(u.value_type, unit is not None) for u in uses}
    definition = lang_texts(described, language) if described else {}
    if not any(is_english(tag) for tag in definition):
        definition["en"] = _stated(first, {u.value_type.xs for u in uses}, unit)
    content = model.DataSpecificationIEC61360(
        model.PreferredNameTypeIEC61360(names),
        data_type=data_types.pop() if len(data_types) == 1 else None,
        definition=model.DefinitionTypeIEC61360(definition),
        unit=unit,
    )
    return ConceptDescription(
        semantic_id,
        id_short=first.id_short,
        embedded_data_specifications=(model.EmbeddedDataSpecification(external_reference(IEC61360_TEMPLATE), content),),
    )


def _stated(first: Use, value_types: set[str], unit: str | None) -> str:
    """The English definition where the configuration gives none: only what the agent knows."""
    typed = f"value type {first.value_type.xs}" if len(value_types) == 1 else "value type varies"
    with_unit = f", unit {unit}" if unit else ""
    text = f"{first.id_short}: a machine value the edge agent reads over OPC UA ({typed}{with_unit}). "
    return (text + "The configuration gives no definition.")[:TEXT_LIMIT]
