"""Metamodel 3.0 output: the SDK's 3.1 environment, carried over to aas-core3.0 and written by it.

basyx-python-sdk 2.2 writes metamodel 3.1 only; the tools most customers use (IDTA test engines, AASX
Package Explorer, BaSyx servers) read 3.0 and refuse a 3.1 XML document for its namespace alone. So a 3.0
export takes the SDK's 3.1 JSON, applies the 3.1 -> 3.0 differences below, parses the result with
aas-core3.0 (PyPI `aas-core3.0`, module `aas_core3`), requires its verification to find nothing, and lets
aas-core3.0 write the JSON or XML. AASX packaging is the one basyx's AASXWriter makes.

What differs between 3.0 (aas-specs-metamodel v3.0.6) and 3.1 (v3.1.2), taken from the official JSON
schemas and XSDs of both (tests/schemas/), and what happens here (D1-D8 mark the code):
  D1 XML namespace https://admin-shell.io/aas/3/1 vs .../3/0: aas-core3.0's writer writes 3/0. JSON has
     no version marker: for the elements this project emits, a valid 3.0 JSON is the same document.
  D2 idShort: 3.1 allows '-' inside (and wants >= 2 characters); 3.0 is ^[a-zA-Z][a-zA-Z0-9_]*$. A '-'
     cannot be carried without renaming the element, which changes the paths consumers address: refused.
  D3 Identifier-typed strings (id, globalAssetId, assetType, Key value, SpecificAssetId value, templateId,
     IEC 61360 value) allow 2048 characters in 3.1, 2000 in 3.0: longer ones are refused.
  D4 Language tags: 3.0's pattern accepts extlang subtags only as exactly three ({2} where 3.1 has
     {0,2}), so 'zh-yue' fails 3.0. Rewritten to the RFC 5646 canonical form, which drops the prefix
     ('zh-yue-HK' -> 'yue-HK', the same language); two extlangs (registered nowhere) are refused. The
     grandfathered tags both patterns list literally ('zh-min-nan', 'no-bok', ...) are kept.
  D5 AssetKind 'Role' is new in 3.1 and has no 3.0 equivalent: refused.
  D6 3.1 added an XML-character pattern to Property, Range, Qualifier and Extension values; 3.0 has
     none. 3.1 is the stricter: nothing to do.
  D7 Made optional in 3.1, mandatory in 3.0: Entity.entityType, RelationshipElement first/second,
     ValueReferencePair.valueId, Blob/File contentType (also 128 -> 100 characters); File value and
     Resource path (defaultThumbnail) are only file: URIs or absolute paths in 3.0. Element kinds are
     allow-listed (_MODEL_TYPES) and the attributes are refused (_NOT_HANDLED): a new kind must get its
     differences handled here before it ships. The hierarchy's Entity and RelationshipElement are
     allowed with what 3.0 requires of them (an entityType; first and second), and refused without it.
     ReferenceElement (the asset interfaces' references) has no difference.
     ConceptDescription has no difference but D3 (its id) and D4 (its IEC 61360 texts).
  D8 AASX (Part 5): relationship types, part names and content types are the same for both versions;
     only the XML inside differs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aas_core3.jsonization as aas_jsonization
import aas_core3.types as aas_types
import aas_core3.verification as aas_verification
import aas_core3.xmlization as aas_xmlization
from basyx.aas import model
from basyx.aas.adapter import aasx
from pyecma376_2 import DEFAULT_CORE_PROPERTIES_NAME  # pyecma376_2: basyx's own AASX dependency
from pyecma376_2.core_properties import OPCCoreProperties
from pyecma376_2.package_model import RELATIONSHIP_TYPE_CORE_PROPERTIES, OPCRelationship, OPCTargetMode
from pyecma376_2.zip_package import ZipPackageWriter

from .build import ShellEnvironment
from .export import ExportError
from .export import dumps_json as sdk_json

MAX_IDENTIFIER_30 = 2000  # D3: 3.1 allows 2048
_ID_SHORT_30 = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*")  # D2
_IDENTIFIER_FIELDS = frozenset({"id", "globalAssetId", "assetType", "templateId"})  # D3
# D4: a 2-3 letter language followed by 3-letter extlang subtags (script is 4 letters, region 2 or 3 digits).
_EXTLANG = re.compile(r"([a-zA-Z]{2,3})((?:-[a-zA-Z]{3})+)(?=-|$)")
_GRANDFATHERED = frozenset(
    (
        "en-gb-oed", "i-ami", "i-bnn", "i-default", "i-enochian", "i-hak", "i-klingon", "i-lux", "i-mingo",
        "i-navajo", "i-pwn", "i-tao", "i-tay", "i-tsu", "sgn-be-fr", "sgn-be-nl", "sgn-ch-de", "art-lojban",
        "cel-gaulish", "no-bok", "no-nyn", "zh-guoyu", "zh-hakka", "zh-min", "zh-min-nan", "zh-xiang",
    )
)  # fmt: skip
# D7: the kinds whose 3.0/3.1 differences are handled above, and the attributes that are not.
_MODEL_TYPES = frozenset(
    {
        "AssetAdministrationShell",
        "Submodel",
        "SubmodelElementCollection",
        "SubmodelElementList",
        "Property",
        "MultiLanguageProperty",
        "DataSpecificationIec61360",
        "ConceptDescription",
        "Entity",  # D7: entityType mandatory in 3.0
        "RelationshipElement",  # D7: first and second mandatory in 3.0
        "ReferenceElement",  # no difference: value optional in both (interfaces.py)
    }
)
_REQUIRED_30 = {"Entity": ("entityType",), "RelationshipElement": ("first", "second")}  # D7
_NOT_HANDLED = frozenset({"defaultThumbnail", "valueList"})
_CONTAINERS = frozenset(
    {"assetAdministrationShells", "submodels", "conceptDescriptions", "submodelElements", "value", "statements"}
)

XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'
DATA_PART = "/aasx/data.xml"  # the name basyx's AASXWriter gives the XML aas-spec part


def convert(env: ShellEnvironment) -> aas_types.Environment:
    """The environment as aas-core3.0 objects; ExportError (one line) if 3.0 cannot carry it."""
    with env.store.kept():  # the lazy submodels (lazy.py): built once for the check and the JSON
        _check_submodel_references(env.store)
        document = json.loads(sdk_json(env))  # the SDK's 3.1 JSON
    try:
        environment = aas_jsonization.environment_from_jsonable(_to_30(document, "environment"))
    except aas_jsonization.DeserializationException as e:
        raise ExportError(f"metamodel 3.0: {e.path}: {_line(e.cause)}") from e
    errors = [f"{error.path}: {_line(error.cause)}" for error in aas_verification.verify(environment)]
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise ExportError(f"metamodel 3.0: aas-core3.0 verification failed: {'; '.join(errors[:3])}{more}")
    return environment


def dumps_json(environment: aas_types.Environment) -> bytes:
    """3.0 JSON written by aas-core3.0 (UTF-8, non-ASCII text unescaped)."""
    return json.dumps(aas_jsonization.to_jsonable(environment), ensure_ascii=False).encode()


def dumps_xml(environment: aas_types.Environment) -> bytes:
    """3.0 XML written by aas-core3.0: namespace https://admin-shell.io/aas/3/0 (D1)."""
    return (XML_DECLARATION + aas_xmlization.to_str(environment)).encode()


def write_aasx(path: Path, xml: bytes, properties: OPCCoreProperties) -> None:
    """The package basyx's AASXWriter makes (same parts, content types and relationships, D8) around `xml`."""
    internal = OPCTargetMode.INTERNAL
    origin = aasx.AASXWriter.AASX_ORIGIN_PART_NAME
    with ZipPackageWriter(path) as writer:
        with writer.open_part(origin, "text/plain"):
            pass
        with writer.open_part(DATA_PART, "application/xml") as part:
            part.write(xml)
        writer.write_relationships((), DATA_PART)  # basyx writes the (here empty) aas-suppl list too
        with writer.open_part(DEFAULT_CORE_PROPERTIES_NAME, "application/xml") as part:
            properties.write_xml(part)
        writer.write_relationships(
            [OPCRelationship("r0", aasx.RELATIONSHIP_TYPE_AAS_SPEC, DATA_PART, internal)], origin
        )
        writer.write_relationships(
            [
                OPCRelationship("r1", aasx.RELATIONSHIP_TYPE_AASX_ORIGIN, origin, internal),
                OPCRelationship(
                    "r2",
                    RELATIONSHIP_TYPE_CORE_PROPERTIES,
                    DEFAULT_CORE_PROPERTIES_NAME,
                    internal,
                ),
            ]
        )


def _check_submodel_references(store: model.AbstractObjectStore[str, model.Identifiable]) -> None:
    """What basyx's AASXWriter(failsafe=False) checks: a dangling reference fails the export."""
    for shell in _shells(store):
        for reference in shell.submodel:
            try:
                reference.resolve(store)
            except KeyError:
                raise ExportError(f"shell {shell.id!r} refers to a submodel that is not there: {reference}") from None


def _shells(store: model.AbstractObjectStore[str, model.Identifiable]) -> Iterator[model.AssetAdministrationShell]:
    return (o for o in store if isinstance(o, model.AssetAdministrationShell))


def _to_30(node: Any, where: str) -> Any:
    """A copy of a 3.1 JSON node that 3.0 accepts, or ExportError naming `where`."""
    if isinstance(node, list):
        return [_to_30(item, f"{where}[{i}]") for i, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("id"), str):
        where = repr(node["id"])
    elif isinstance(node.get("idShort"), str):
        where = f"{where}/{node['idShort']}"
    model_type = node.get("modelType")
    if model_type is not None and model_type not in _MODEL_TYPES:  # D7
        raise ExportError(f"metamodel 3.0: {where}: {model_type} is not handled by the 3.0 export (use 3.1)")
    for key in _REQUIRED_30.get(str(model_type), ()):  # D7
        if node.get(key) is None:
            raise ExportError(f"metamodel 3.0: {where}: a {model_type} without {key} exists only in 3.1 (use 3.1)")
    converted: dict[str, Any] = {}
    for key, value in node.items():
        here = where if key in _CONTAINERS else f"{where}.{key}"
        if key in _NOT_HANDLED:  # D7
            raise ExportError(f"metamodel 3.0: {here} is not handled by the 3.0 export (use 3.1)")
        if key == "idShort" and not _ID_SHORT_30.fullmatch(value):  # D2
            raise ExportError(
                f"metamodel 3.0: {here} {value!r}: 3.0 allows only letters, digits and '_' (use 3.1 or rename)"
            )
        if key in _IDENTIFIER_FIELDS or (key == "value" and model_type == "DataSpecificationIec61360"):  # D3
            _check_length(value, here)
        elif key == "keys" or key == "specificAssetIds":  # D3
            for i, item in enumerate(value):
                _check_length(item["value"], f"{here}[{i}].value")
        elif key == "language":  # D4
            value = _language_30(value, here)
        elif key == "assetKind" and value == "Role":  # D5
            raise ExportError(f"metamodel 3.0: {here}: AssetKind 'Role' exists only in 3.1 (use 3.1)")
        converted[key] = _to_30(value, here)
    return converted


def _check_length(text: str, where: str) -> None:
    if len(text) > MAX_IDENTIFIER_30:
        raise ExportError(
            f"metamodel 3.0: {where} has {len(text)} characters; 3.0 allows {MAX_IDENTIFIER_30} (3.1: 2048)"
        )


def _language_30(tag: str, where: str) -> str:
    if tag.lower() in _GRANDFATHERED:
        return tag
    match = _EXTLANG.match(tag)
    if match is None:
        return tag
    extlangs = match.group(2).split("-")[1:]
    if len(extlangs) != 1:
        raise ExportError(f"metamodel 3.0: {where}: language tag {tag!r} has {len(extlangs)} extlang subtags")
    return extlangs[0] + tag[match.end() :]


def _line(text: str) -> str:
    return " ".join(text.split())
