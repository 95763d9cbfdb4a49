"""A config from an AAS that describes its own interfaces: `edge-agent mapping from-aas FILE -o config.yaml`.

A machine builder may ship the machine's AAS (AASX, JSON or XML; metamodel 3.0 or 3.1) with an Asset
Interfaces Description (AID 1.0 or 1.1: the OPC UA endpoint and one property per node) and an Asset
Interfaces Mapping Configuration (AIMC 1.0: each AID property related to the element that holds its value).
This turns them into a config (aas_models/interfaces.py writes them the same way, so exporting the config gives
equivalent AID and AIMC back):

- a source per OPC UA interface: id = its title, endpoint = EndpointMetadata.base, security = the
  uav_securityMode / uav_securityPolicy of its OPC UA channel scheme;
- an equipment per shell that holds an AIMC: id and idShort = the shell's idShort, aas_id and asset_id = the
  shell's, name = its displayName, nameplate from its Digital Nameplate (TODO placeholders, marked, for what
  the file does not say);
- a point per MappingSourceSinkRelation: node from the AID property's forms.href (or uav_browsePath), path =
  the target element's idShort path in its submodel, type from the target's valueType (the AID property's
  valueSemantics tells DateTime from UtcTime and the like, aas_models/types.py), array for a list, unit,
  semantic_id, display_name and description (every language) from the target, mode poll where the AID
  property is not observable.

The file is read as the JSON form of the metamodel, which 3.0 and 3.1 share for these elements: JSON as it
is, 3.0 XML through aas-core3.0, 3.1 XML through basyx, an AASX's aas-spec parts by their relationships
(basyx's AASX reader refuses 3.0 XML, which most AASX in circulation hold). Problems are one line each
(AasFileError), naming the file and where in it.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import aas_core3.jsonization as core30_json
import aas_core3.xmlization as core30_xml
from basyx.aas.adapter import json as basyx_json
from basyx.aas.adapter import xml as basyx_xml

from aas_models import interfaces as aid
from aas_models import nameplate as plate
from aas_models.types import LANG_STRING, opcua_type_for
from adapters.opcua.values import node_id_problem
from agent import config as config_mod
from agent.config_base import ID_SHORT, PLAIN_ID
from agent.mapping import Options, _comment, _q, _sinks, plain_id

_NAMESPACE_30 = "https://admin-shell.io/aas/3/0"
_NAMESPACE_31 = "https://admin-shell.io/aas/3/1"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_NAMEPLATES = (
    "https://admin-shell.io/idta/nameplate/3/0/Nameplate",
    "https://admin-shell.io/zvei/nameplate/2/0/Nameplate",
)
_POLICIES = ("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
_MODES = ("None", "Sign", "SignAndEncrypt")
_DATA_TYPE = re.compile(r"(?:nsu=http://opcfoundation\.org/UA/;|ns=0;|http://opcfoundation\.org/UA/#)?i=(\d+)")
TODO = "TODO"


class AasFileError(Exception):
    """The file cannot become a config; the message is one line naming the file and the place in it."""


@dataclass
class FromAas:
    text: str  # the config, YAML
    config: config_mod.Config
    points: dict[str, int]  # equipment id -> points
    todo: list[str] = field(default_factory=list)  # placeholders the supplier fills: "cnc01 nameplate order_code"
    skipped: list[str] = field(default_factory=list)  # interfaces that are not OPC UA


# ---------------------------------------------------------------- reading the file


def read_environment(path: Path) -> dict[str, Any]:
    """The environment in `path` as AAS JSON (dicts and lists); AasFileError for what cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AasFileError(f"{path}: cannot read: {e.strerror}") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _json(data, str(path))
    if suffix == ".xml":
        return _xml(data, str(path))
    if suffix == ".aasx":
        return _aasx(data, str(path))
    raise AasFileError(f"{path}: cannot tell the format from the extension: use .aasx, .json or .xml")


def _json(data: bytes, where: str) -> dict[str, Any]:
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as e:
        raise AasFileError(f"{where}: not AAS JSON: {' '.join(str(e).split())}") from None
    if not isinstance(document, dict):
        raise AasFileError(f"{where}: not AAS JSON: the top level is not an object with submodels")
    return document


def _xml(data: bytes, where: str) -> dict[str, Any]:
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as e:
        raise AasFileError(f"{where}: not XML: {e}") from None
    namespace = root.tag[1:].partition("}")[0] if root.tag.startswith("{") else ""
    try:
        if namespace == _NAMESPACE_30:
            environment = core30_xml.environment_from_str(data.decode("utf-8-sig"))
            jsonable = core30_json.to_jsonable(environment)
            return jsonable if isinstance(jsonable, dict) else {}
        if namespace == _NAMESPACE_31:
            store = basyx_xml.read_aas_xml_file(BytesIO(data), failsafe=False)
            return _json(basyx_json.object_store_to_json(store).encode(), where)
    except (core30_xml.DeserializationException, ValueError, KeyError, TypeError) as e:
        raise AasFileError(
            f"{where}: not a valid AAS {namespace[-3:]} XML document: {' '.join(str(e).split())}"
        ) from None
    raise AasFileError(
        f"{where}: not an AAS environment: root element {root.tag} "
        f"(expected the namespace {_NAMESPACE_30} or {_NAMESPACE_31})"
    )


def _aasx(data: bytes, where: str) -> dict[str, Any]:
    """Every aas-spec part of the package (AAS Part 5: /_rels/.rels → aasx-origin → aas-spec), merged."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as package:
            origins = [t for t, kind in _relationships(package, "_rels/.rels") if kind.endswith("/aasx-origin")]
            if not origins:
                raise AasFileError(f"{where}: not an AASX package: no aasx-origin relationship in _rels/.rels")
            directory, _, name = origins[0].rpartition("/")
            specs = [
                t for t, kind in _relationships(package, f"{directory}/_rels/{name}.rels") if kind.endswith("/aas-spec")
            ]
            if not specs:
                raise AasFileError(f"{where}: the AASX package names no aas-spec part (the environment)")
            parts = [(spec, package.read(spec)) for spec in specs]
    except (zipfile.BadZipFile, KeyError) as e:
        raise AasFileError(f"{where}: not an AASX package: {e}") from None
    merged: dict[str, Any] = {}
    for spec, part in parts:
        read = _json(part, f"{where}:/{spec}") if spec.lower().endswith(".json") else _xml(part, f"{where}:/{spec}")
        for key in ("assetAdministrationShells", "submodels", "conceptDescriptions"):
            merged.setdefault(key, []).extend(_list(read.get(key)))
    return merged


def _relationships(package: zipfile.ZipFile, name: str) -> list[tuple[str, str]]:
    """(target without the leading '/', type) of each relationship in the part `name`."""
    try:
        root = ElementTree.fromstring(package.read(name))
    except ElementTree.ParseError as e:
        raise AasFileError(f"not an AASX package: {name}: {e}") from None
    return [(r.get("Target", "").lstrip("/"), r.get("Type", "")) for r in root.iter(f"{_REL}Relationship")]


# ---------------------------------------------------------------- walking the JSON form


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in _list(value) if isinstance(v, dict)]


def _semantic_id(element: dict[str, Any]) -> str:
    keys = _dicts((element.get("semanticId") or {}).get("keys"))
    return str(keys[0].get("value", "")).strip() if keys else ""


def _children(element: dict[str, Any]) -> list[dict[str, Any]]:
    if "submodelElements" in element:
        return _dicts(element["submodelElements"])
    if element.get("modelType") == "Entity":
        return _dicts(element.get("statements"))
    return _dicts(element.get("value"))


def _child(element: dict[str, Any], id_short: str, semantic_id: str | None = None) -> dict[str, Any] | None:
    """The child with that semanticId (ignoring surrounding spaces: templates have some), else that idShort."""
    children = _children(element)
    if semantic_id is not None:
        found = next((c for c in children if _semantic_id(c) == semantic_id), None)
        if found is not None:
            return found
    return next((c for c in children if c.get("idShort") == id_short), None)


def _text(element: dict[str, Any] | None) -> str | None:
    value = element.get("value") if element is not None else None
    return value.strip() if isinstance(value, str) and value.strip() else None


def _texts(value: Any) -> dict[str, str] | None:
    """A lang string list as {language: text}; None when it holds none."""
    texts = {str(t["language"]): str(t["text"]) for t in _dicts(value) if t.get("language") and t.get("text")}
    return texts or None


def _keys(reference: Any) -> list[tuple[str, str]]:
    return [(str(k.get("type", "")), str(k.get("value", ""))) for k in _dicts((reference or {}).get("keys"))]


def _shown(reference: Any) -> str:
    keys = _keys(reference)
    return " / ".join(value for _, value in keys) if keys else "(empty)"


class _Environment:
    def __init__(self, document: dict[str, Any], name: str) -> None:
        self.name = name
        self.submodels = {str(s.get("id")): s for s in _dicts(document.get("submodels"))}
        self.shells = _dicts(document.get("assetAdministrationShells"))

    def with_semantic_id(self, *semantic_ids: str) -> list[dict[str, Any]]:
        return [s for s in self.submodels.values() if _semantic_id(s) in semantic_ids]

    def resolve(self, reference: Any) -> tuple[dict[str, Any], dict[str, Any], list[str | int]] | None:
        """(submodel, element, idShort path with list indices) of a ModelReference, or None if it points nowhere."""
        keys = _keys(reference)
        if not keys or keys[0][0] != "Submodel" or keys[0][1] not in self.submodels:
            return None
        submodel = self.submodels[keys[0][1]]
        element = submodel
        path: list[str | int] = []
        for _, value in keys[1:]:
            if element.get("modelType") == "SubmodelElementList":
                items = _dicts(element.get("value"))
                if not value.isdigit() or int(value) >= len(items):
                    return None
                element = items[int(value)]
                path.append(int(value))
                continue
            found = next((c for c in _children(element) if c.get("idShort") == value), None)
            if found is None:
                return None
            element = found
            path.append(value)
        return submodel, element, path

    def shell_of(self, submodel_id: str) -> dict[str, Any] | None:
        for shell in self.shells:
            if any(_keys(r)[-1:] == [("Submodel", submodel_id)] for r in _dicts(shell.get("submodels"))):
                return shell
        return None


# ---------------------------------------------------------------- from the environment to a config


@dataclass
class _Source:
    id: str
    endpoint: str
    mode: str
    policy: str


@dataclass
class _Equipment:
    id: str
    id_short: str
    aas_id: str
    asset_id: str | None
    name: dict[str, str] | None
    source: str
    nameplate: dict[str, Any]
    placeholders: set[str]  # nameplate keys the file does not give: TODO values
    points: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str | None] = field(default_factory=list)  # per point: a comment for the supplier


def from_aas(path: Path, now: datetime | None = None) -> FromAas:
    """The config for the AID and AIMC in `path`; AasFileError (one line) when it cannot be made."""
    env = _Environment(read_environment(path), str(path))
    return _Builder(env).build(now or datetime.now(UTC))


class _Builder:
    def __init__(self, env: _Environment) -> None:
        self.env = env
        self.sources: dict[tuple[str, str, str], _Source] = {}  # (endpoint, mode, policy) -> source
        self.equipment: dict[str, _Equipment] = {}  # shell id -> equipment
        self.todo: list[str] = []
        self.skipped: list[str] = []
        self.languages: list[str] = []  # of the AID titles found in the targets' displayNames

    def fail(self, where: str, problem: str) -> AasFileError:
        return AasFileError(f"{self.env.name}: {where}: {problem}")

    def build(self, now: datetime) -> FromAas:
        env = self.env
        if not env.with_semantic_id(aid.AID_SUBMODEL, aid.AID_SUBMODEL_10):
            raise AasFileError(
                f"{env.name}: no Asset Interfaces Description submodel (semanticId {aid.AID_SUBMODEL} or "
                f"{aid.AID_SUBMODEL_10}): the file does not say how the machine is read"
            )
        mappings = env.with_semantic_id(aid.AIMC_SUBMODEL)
        if not mappings:
            raise AasFileError(
                f"{env.name}: no Asset Interfaces Mapping Configuration submodel (semanticId {aid.AIMC_SUBMODEL}): "
                "the file does not relate the interface's properties to elements"
            )
        for submodel in mappings:
            self.mapping(submodel)
        if not any(e.points for e in self.equipment.values()):
            why = "; ".join(self.skipped) or "the mapping configurations relate nothing"
            raise AasFileError(f"{env.name}: no OPC UA point to collect: {why}")
        text = self.render(now)
        try:
            cfg = config_mod.parse(text, f"config from {env.name}")
        except config_mod.ConfigError as e:
            raise AasFileError(
                f"{env.name}: the config made from it does not load: {' '.join(str(e).split())}"
            ) from None
        points = {e.id: len(e.points) for e in self.equipment.values() if e.points}
        return FromAas(text, cfg, points, self.todo, self.skipped)

    def mapping(self, submodel: dict[str, Any]) -> None:
        where = f"submodel {submodel.get('id')!r}"
        configurations = _child(submodel, "MappingConfigurations", aid.MAPPING_CONFIGURATIONS)
        if configurations is None:
            raise self.fail(where, "has no MappingConfigurations list")
        for i, configuration in enumerate(_children(configurations)):
            here = f"{where}, MappingConfigurations[{i}]"
            reference = _child(configuration, "InterfaceReference", aid.INTERFACE_REFERENCE)
            interface = self.env.resolve(reference.get("value") if reference else None)
            if interface is None:
                shown = _shown(reference.get("value")) if reference else "nothing"
                raise self.fail(here, f"InterfaceReference points to {shown}, which is not in the file")
            aid_submodel, interface_smc, interface_path = interface
            source = self.source(interface_smc, f"submodel {aid_submodel.get('id')!r}, {_dotted(interface_path)}")
            if source is None:
                continue
            shell = self.env.shell_of(str(submodel.get("id"))) or self.env.shell_of(str(aid_submodel.get("id")))
            if shell is None:
                raise self.fail(where, "belongs to no shell: no assetAdministrationShell refers to it or to its AID")
            equipment = self.equipment_of(shell, source)
            if equipment.source != source.id:
                raise self.fail(
                    here,
                    f"maps a second OPC UA interface ({source.endpoint}) for shell {shell.get('idShort')!r}, "
                    f"which is read from {equipment.source}: the agent reads one machine from one source",
                )
            relations = _child(configuration, "MappingSourceSinkRelations", aid.MAPPING_RELATIONS)
            for j, relation in enumerate(_children(relations) if relations is not None else []):
                point, note = self.point(relation, f"{here}, MappingSourceSinkRelations[{j}]")
                equipment.points.append(point)
                equipment.notes.append(note)

    def source(self, interface: dict[str, Any], where: str) -> _Source | None:
        """The interface as a source; None (and a note) when it is not OPC UA."""
        endpoint = _child(interface, "EndpointMetadata", aid.ENDPOINT_METADATA)
        base = _text(_child(endpoint, "base", aid.BASE)) if endpoint is not None else None
        if base is None:
            raise self.fail(where, "has no EndpointMetadata.base: the file does not say where the server is")
        if not base.startswith("opc.tcp://"):
            self.skipped.append(f"{where} is not OPC UA (base {base})")
            return None
        mode, policy = self.security(endpoint or {}, where)
        key = (base, mode, policy)
        if key not in self.sources:
            title = _text(_child(interface, "title", aid.TITLE)) or "opcua"
            taken = {s.id for s in self.sources.values()}
            name, n = title, 1
            while name in taken:
                n += 1
                name = f"{title}-{n}"
            self.sources[key] = _Source(name, base, mode, policy)
        return self.sources[key]

    def security(self, endpoint: dict[str, Any], where: str) -> tuple[str, str]:
        """(mode, policy) of the scheme EndpointMetadata.security names, or of the OPC UA channel scheme."""
        definitions = _child(endpoint, "securityDefinitions", aid.DEFINES_SECURITY_SCHEME)
        schemes = _children(definitions) if definitions is not None else []
        chosen = [r for e in _children(_child(endpoint, "security") or {}) if (r := self.env.resolve(e.get("value")))]
        named = [element for _, element, _ in chosen]
        channel = next((s for s in named + schemes if _semantic_id(s) == aid.CHANNEL_SCHEME), None)
        if channel is None:
            return "None", "None"  # nosec, or a scheme that is not OPC UA's: no channel security said
        mode = _text(_child(channel, "uav_securityMode", aid.SECURITY_MODE)) or "None"
        policy = _text(_child(channel, "uav_securityPolicy", aid.SECURITY_POLICY)) or "None"
        policy = policy.rpartition("#")[2]  # http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256
        if mode not in _MODES:
            raise self.fail(where, f"uav_securityMode {mode!r} is not an OPC UA security mode ({', '.join(_MODES)})")
        if policy not in _POLICIES:
            raise self.fail(
                where, f"uav_securityPolicy {policy!r} is not one the agent speaks ({', '.join(_POLICIES)})"
            )
        return mode, policy

    def equipment_of(self, shell: dict[str, Any], source: _Source) -> _Equipment:
        shell_id = str(shell.get("id"))
        if shell_id in self.equipment:
            return self.equipment[shell_id]
        id_short = str(shell.get("idShort") or "")
        eid = id_short if PLAIN_ID.match(id_short) else plain_id(id_short or shell_id)
        taken = {e.id for e in self.equipment.values()}
        base, n = eid, 1
        while eid in taken:
            n += 1
            eid = f"{base}-{n}"
        information = shell.get("assetInformation") or {}
        equipment = _Equipment(
            eid,
            id_short,
            shell_id,
            information.get("globalAssetId"),
            _texts(shell.get("displayName")),
            source.id,
            *self.nameplate(shell, eid),
        )
        self.equipment[shell_id] = equipment
        return equipment

    def nameplate(self, shell: dict[str, Any], eid: str) -> tuple[dict[str, Any], set[str]]:
        """The config's nameplate keys from the shell's Digital Nameplate, and the mandatory ones it does not
        give, which get TODO placeholders (noted in self.todo too)."""
        found = next(
            (
                sm
                for r in _dicts(shell.get("submodels"))
                if (sm := self.env.submodels.get(_keys(r)[-1][1] if _keys(r) else "")) is not None
                and _semantic_id(sm) in _NAMEPLATES
            ),
            {},
        )

        def value(id_short: str, semantic_id: str, within: dict[str, Any] = found) -> Any:
            element = _child(within, id_short, semantic_id) if within else None
            if element is None:
                return None
            if element.get("modelType") == "MultiLanguageProperty":
                return _texts(element.get("value"))
            return _text(element)

        out: dict[str, Any] = {}
        placeholders: set[str] = set()
        for key, id_short, semantic_id, placeholder in (
            ("manufacturer_name", "ManufacturerName", plate.MANUFACTURER_NAME, f"{TODO} manufacturer"),
            (
                "product_designation",
                "ManufacturerProductDesignation",
                plate.MANUFACTURER_PRODUCT_DESIGNATION,
                f"{TODO} product",
            ),
            ("uri_of_product", "URIOfTheProduct", plate.URI_OF_THE_PRODUCT, f"https://example.com/{TODO}/{eid}"),
            ("order_code", "OrderCodeOfManufacturer", plate.ORDER_CODE_OF_MANUFACTURER, f"{TODO}-{eid}"),
            ("serial_number", "SerialNumber", plate.SERIAL_NUMBER, None),
            ("year_of_construction", "YearOfConstruction", plate.YEAR_OF_CONSTRUCTION, None),
            ("product_family", "ManufacturerProductFamily", plate.MANUFACTURER_PRODUCT_FAMILY, None),
            ("software_version", "SoftwareVersion", plate.SOFTWARE_VERSION, None),
            ("hardware_version", "HardwareVersion", plate.HARDWARE_VERSION, None),
        ):
            given = value(id_short, semantic_id)
            if given is None and placeholder is not None:
                self.todo.append(f"{eid} nameplate {key}")
                placeholders.add(key)
                given = placeholder
            if given is not None:
                out[key] = given
        address = _child(found, "AddressInformation", plate.ADDRESS_INFORMATION) if found else None
        if address is not None:
            parts = {
                key: given
                for key, id_short, semantic_id in (
                    ("street", "Street", plate.STREET),
                    ("zipcode", "Zipcode", plate.ZIPCODE),
                    ("city", "CityTown", plate.CITY_TOWN),
                    ("country_code", "NationalCode", plate.NATIONAL_CODE),
                )
                if (given := value(id_short, semantic_id, address)) is not None
            }
            country = parts.get("country_code")
            if isinstance(country, dict):  # a MultiLanguageProperty in the template; the config wants "KR"
                parts["country_code"] = next(iter(country.values()))
            if parts:
                out["address"] = parts
        return out, placeholders

    def point(self, relation: dict[str, Any], where: str) -> tuple[dict[str, Any], str | None]:
        """The point's config keys, and a note where the file keeps its element elsewhere than OperationalData."""
        first, second = self.env.resolve(relation.get("first")), self.env.resolve(relation.get("second"))
        if first is None:
            raise self.fail(where, f"first points to {_shown(relation.get('first'))}, which is not in the file")
        if second is None:
            raise self.fail(where, f"second points to {_shown(relation.get('second'))}, which is not in the file")
        _, described, _ = first
        target_submodel, target, path = second
        at = f"{where}: second {_dotted(path)}"
        if any(isinstance(p, int) for p in path) or not path:
            raise self.fail(at, "is inside a list; the agent maps elements of collections only")
        for segment in path:
            if not ID_SHORT.match(str(segment)):
                raise self.fail(at, f"idShort {segment!r} cannot be a config path (2+ characters: letters, digits, _)")
        point: dict[str, Any] = {}
        forms = _child(described, "forms", aid.HAS_FORM) or {}
        href = _text(_child(forms, "href", aid.HREF))
        browse_path = _text(_child(forms, "uav_browsePath", aid.BROWSE_PATH))
        node = aid.node_of_href(href) if href else None
        if node is not None and node not in ("/", ""):
            problem = node_id_problem(node)
            if problem:
                raise self.fail(
                    f"{where}: first's forms.href", f"{href!r} is not an OPC UA node id (expected /?id=ns=2;s=...)"
                )
            point["node"] = node
        elif browse_path is not None:
            point["browse_path"] = browse_path
        else:
            raise self.fail(
                f"{where}: first's forms.href", f"{href!r} is not an OPC UA node id (expected /?id=ns=2;s=...)"
            )
        point["path"] = ".".join(str(p) for p in path)
        point.update(self.value_type(described, target, at))
        unit = _text(_child(described, "unit", aid.UNIT)) or _unit(target)
        if unit is not None:
            point["unit"] = unit
        if _semantic_id(target):
            point["semantic_id"] = _semantic_id(target)
        names, descriptions = _texts(target.get("displayName")), _texts(target.get("description"))
        if names is not None:
            point["display_name"] = names
            title = _text(_child(described, "title", aid.TITLE))
            self.languages += [tag for tag, text in names.items() if text == title]
        if descriptions is not None:
            point["description"] = descriptions
        observable = _child(described, "observable", aid.OBSERVABLE)
        if observable is not None and str(observable.get("value")).strip().lower() in ("false", "0"):
            point["mode"] = "poll"
        elsewhere = target_submodel.get("idShort") not in (None, "OperationalData")
        note = f"in the file: submodel {target_submodel.get('idShort')}; the agent puts every point in OperationalData"
        return point, note if elsewhere else None

    def value_type(self, described: dict[str, Any], target: dict[str, Any], where: str) -> dict[str, Any]:
        kind = target.get("modelType")
        array = kind == "SubmodelElementList"
        if array:
            kind = target.get("typeValueListElement")
        if kind == "MultiLanguageProperty":
            xs = LANG_STRING
        elif kind == "Property":
            xs = str(target.get("valueTypeListElement" if array else "valueType"))
        else:
            raise self.fail(
                where, f"is a {kind}: the agent collects Properties, MultiLanguageProperties and lists of them"
            )
        semantics = _child(described, "valueSemantics", aid.VALUE_SEMANTICS)
        keys = _keys(semantics.get("value")) if semantics is not None else []
        match = _DATA_TYPE.fullmatch(keys[0][1]) if keys else None
        opcua = opcua_type_for(xs, int(match.group(1)) if match else None)
        if opcua is None:
            raise self.fail(where, f"value type {xs} has no OPC UA built-in type the agent maps")
        return {"type": opcua, "array": True} if array else {"type": opcua}

    # ------------------------------------------------------------ the YAML text

    def render(self, now: datetime) -> str:
        language = max(set(self.languages), key=self.languages.count) if self.languages else None
        lines = [
            f"# Written by `edge-agent mapping from-aas {_comment(self.env.name)}`",
            f"# on {now.strftime('%Y-%m-%d %H:%M:%S')} UTC from its Asset Interfaces Description and Mapping",
            "# Configuration. Before production: set site (its id is in topics and AAS ids), fill the TODO lines",
            "# (what the file did not say), replace the file sink; then `edge-agent check -c THIS-FILE --live`.",
            "# Every key: docs/configuration.md.",
            "version: 1",
            "site:",
            f"  id: {_q('my-site')}  # {TODO}: your site id (letters, digits, _ - .)",
        ]
        if language is not None:
            lines.append(f"  language: {_q(language)}  # the language of the interface's titles in the file")
        lines += ["agent:", f"  data_dir: {_q('data')}", "sources:"]
        for s in self.sources.values():
            lines += [f"  - id: {_q(s.id)}", f"    endpoint: {_q(s.endpoint)}"]
            if s.policy != "None" or s.mode != "None":
                lines.append(f"    security: {{policy: {s.policy}, mode: {s.mode}}}")
        lines.append("equipment:")
        for e in self.equipment.values():
            if e.points:
                lines += self.render_equipment(e)
        lines += _sinks(Options(endpoint="", sink_path="data/records.jsonl"))
        return "\n".join(lines) + "\n"

    def render_equipment(self, e: _Equipment) -> list[str]:
        lines = [f"  - id: {_q(e.id)}"]
        if e.name is not None:
            lines.append(f"    name: {_json_text(e.name)}")
        lines.append(f"    source: {_q(e.source)}")
        if e.id_short:
            lines.append(f"    id_short: {_q(e.id_short)}")
        lines.append(f"    aas_id: {_q(e.aas_id)}")
        if e.asset_id:
            lines.append(f"    asset_id: {_q(e.asset_id)}")
        missing = f"  # {TODO}: what the file's Digital Nameplate does not give" if e.placeholders else ""
        lines.append(f"    nameplate:{missing}")
        for key, value in e.nameplate.items():
            mark = f"  # {TODO}: not in the file" if key in e.placeholders else ""
            lines.append(f"      {key}: {_json_text(value)}{mark}")
        lines.append("    points:")
        for p, note in zip(e.points, e.notes, strict=True):
            if note is not None:
                lines.append(f"      # {note}")
            first = True
            for key, value in p.items():
                lines.append(f"      {'- ' if first else '  '}{key}: {_json_text(value)}")
                first = False
        return lines


def _json_text(value: Any) -> str:
    """A YAML scalar or flow mapping: JSON's syntax is YAML's (non-ASCII text kept as it is)."""
    return json.dumps(value, ensure_ascii=False)


def _unit(element: dict[str, Any]) -> str | None:
    for spec in _dicts(element.get("embeddedDataSpecifications")):
        unit = (spec.get("dataSpecificationContent") or {}).get("unit")
        if isinstance(unit, str) and unit.strip():
            return unit.strip()
    return None


def _dotted(path: list[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "(the submodel)"


__all__ = ["AasFileError", "FromAas", "from_aas", "read_environment"]
