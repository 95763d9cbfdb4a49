"""Asset Interfaces Description and Mapping Configuration (aas_models/interfaces.py), and `edge-agent mapping
from-aas` (agent/mapping_aas.py): what the AID and AIMC say for a config, that exports carrying them pass every
checker, that config -> export -> from-aas -> config gives the same points and the same AID and AIMC (through the
real command line, both metamodels, AASX and JSON), that a machine builder's file made elsewhere becomes a config
`edge-agent check` accepts, and that each file it cannot use is a one-line error with exit status 2.

Every file is made here (basyx, aas-core3.0); the shipped configs' exports are checked in tests/test_export.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import aas_core3.jsonization as core30_json
import pytest
from basyx.aas import model
from basyx.aas.adapter import aasx as basyx_aasx
from basyx.aas.adapter import json as basyx_json
from basyx.aas.model import datatypes
from pyecma376_2.core_properties import OPCCoreProperties

from aas_models import export30
from aas_models import interfaces as aid
from aas_models.build import ShellEnvironment, build_environment
from aas_models.export import FORMATS, METAMODELS, dumps_json, write_environment
from aas_models.text import lang_texts
from agent import config as config_mod
from agent.shells import build_shells
from tests.helpers import ROOT
from tests.test_export import (
    CHECKS,
    _report,
    _results,
    assert_core_verifies,
    assert_matches_schema,
    official_json_schemas,
    official_xsds,
)

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))

# Korean texts, both text forms, dots in paths (and an idShort that clashes once they become '_'), a browse
# path, an array, a polled node, the OPC UA types whose xs: type is shared, a node id with '#', '&', '%' and a
# space, and two sources: one with channel security.
RICH = """\
version: 1
site: {id: plant-ansan, language: ko-KR}
sources:
  - {id: line1, endpoint: "opc.tcp://10.0.0.5:4840/", security: {policy: Basic256Sha256, mode: SignAndEncrypt}}
  - {id: line2, endpoint: "opc.tcp://10.0.0.6:4841"}
equipment:
  - id: cnc01
    name: {ko-KR: 수직형 머시닝센터 1호기, en: Vertical machining centre 1}
    source: line1
    nameplate:
      manufacturer_name: 한국정밀기계
      product_designation: {ko-KR: 수직형 머시닝센터, en: Vertical machining centre}
      uri_of_product: "https://example.com/p/cnc01"
      order_code: VMC-1
      serial_number: SN-1
      address: {city: 안산, country_code: KR}
    points:
      - node: "ns=2;s=CNC01.Spindle#1&2 %"
        path: Spindle.Speed
        type: Double
        unit: rpm
        semantic_id: "0173-1#02-AAH880#003"
        display_name: {ko-KR: 주축 회전수, en: Spindle speed}
        description: {ko-KR: "주축의 회전 속도 \\"실측\\"", en: Rotational speed}
      - {node: "ns=2;s=CNC01.SpindleSpeedRaw", path: Spindle_Speed, type: Float, display_name: 주축 원시값}
      - browse_path: "0:Objects/2:CNC01/2:Axes"
        path: Axes
        type: Double
        array: true
        mode: poll
        description: 축 위치
      - {node: "ns=2;i=1001", path: Status.Code, type: StatusCode, mode: poll}
      - {node: "ns=2;s=CNC01.Started", path: Status.Started, type: UtcTime}
      - {node: "ns=2;g=5ce9dbce-5d79-434c-9ac3-1cfba9a6e92c", path: Status.Batch, type: Guid}
      - {node: "ns=2;s=CNC01.Program", path: Program, type: NodeId}
      - {node: "ns=2;s=CNC01.Message", path: Message, type: LocalizedText, display_name: 메시지}
      - {node: "ns=2;s=CNC01.Count", path: Count, type: UInt32, unit: pcs}
  - id: prs-01
    source: line2
    nameplate: {manufacturer_name: M, product_designation: P, uri_of_product: "https://example.com/q", order_code: B2}
    points:
      - {node: "ns=3;i=7", path: Tonnage, type: Float, unit: kN, display_name: 톤수}
sinks:
  - {type: file, path: out.jsonl}
"""


def _rich(tmp_path: Path) -> Path:
    path = tmp_path / "rich.yaml"
    path.write_text(RICH, encoding="utf-8")
    return path


def _submodel(env: ShellEnvironment, identifier: str) -> model.Submodel:
    submodel = env.store.get_item(identifier)
    assert isinstance(submodel, model.Submodel)
    return submodel


def _value(collection: model.SubmodelElementCollection, id_short: str) -> Any:
    element = collection.get_referable(id_short)
    assert isinstance(element, model.Property), id_short
    return element.value


def _interface(env: ShellEnvironment, shell_id: str) -> model.SubmodelElementCollection:
    interface = _submodel(env, f"{shell_id}/sm/AssetInterfacesDescription").get_referable(aid.INTERFACE_ID_SHORT)
    assert isinstance(interface, model.SubmodelElementCollection)
    return interface


def _properties(env: ShellEnvironment, shell_id: str) -> list[model.SubmodelElementCollection]:
    properties = _interface(env, shell_id).get_referable(["InteractionMetadata", "properties"])
    assert isinstance(properties, model.SubmodelElementCollection)
    return [p for p in properties.value if isinstance(p, model.SubmodelElementCollection)]


def _relations(env: ShellEnvironment, shell_id: str) -> list[model.RelationshipElement]:
    aimc = _submodel(env, f"{shell_id}/sm/AssetInterfacesMappingConfiguration")
    configurations = aimc.get_referable("MappingConfigurations")
    assert isinstance(configurations, model.SubmodelElementList) and len(configurations.value) == 1
    relations = configurations.value[0].get_referable("MappingSourceSinkRelations")
    assert isinstance(relations, model.SubmodelElementList)
    return list(relations.value)


def _semantic(element: model.HasSemantics) -> str:
    assert element.semantic_id is not None
    return str(element.semantic_id.key[0].value)


# --- what the AID and AIMC say -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_the_aid_describes_the_endpoint_and_every_point_of_a_shipped_config(path: Path) -> None:
    cfg = config_mod.load(path)
    env = build_shells(cfg)
    with env.store.kept():  # the lazy AID/AIMC (aas_models/lazy.py): built once, so references resolve to them
        for e in cfg.equipment:
            shell_id = cfg.aas_id(e)
            source = next(s for s in cfg.sources if s.id == e.source)
            assert _semantic(_submodel(env, f"{shell_id}/sm/AssetInterfacesDescription")) == aid.AID_SUBMODEL
            interface = _interface(env, shell_id)
            assert _semantic(interface) == aid.INTERFACE
            assert [str(r.key[0].value) for r in interface.supplemental_semantic_id] == [
                "http://opcfoundation.org/UA/WoT-Binding/",
                "https://www.w3.org/2019/wot/td",
            ]
            assert _value(interface, "title") == source.id
            endpoint = interface.get_referable("EndpointMetadata")
            assert isinstance(endpoint, model.SubmodelElementCollection)
            assert _value(endpoint, "base") == source.endpoint
            channel = endpoint.get_referable(["securityDefinitions", "opcua_channel_sc"])
            assert isinstance(channel, model.SubmodelElementCollection)
            assert (_value(channel, "uav_securityMode"), _value(channel, "uav_securityPolicy")) == (
                source.security.mode,
                source.security.policy,
            )
            security = endpoint.get_referable("security")
            assert isinstance(security, model.SubmodelElementList)
            assert [r.value.resolve(env.store) for r in security.value] == [channel]
            described = {_value(p, "key"): p for p in _properties(env, shell_id)}
            assert list(described) == [p.path for p in e.points]  # every point, in order, with its path exactly
            for point in e.points:
                p = described[point.path]
                forms = p.get_referable("forms")
                assert isinstance(forms, model.SubmodelElementCollection)
                if point.node is not None:
                    assert _value(forms, "href") == f"/?id={point.node}"  # the shipped node ids need no encoding
                else:  # addressed by browse path: the href is the endpoint, uav_browsePath names the node
                    assert (_value(forms, "href"), _value(forms, "uav_browsePath")) == ("/", point.browse_path)
                assert _value(p, "observable") is (point.mode == "subscribe")
                assert _value(p, "type") == ("array" if point.array else aid.wot_type(point.type))
                if point.unit:
                    assert _value(p, "unit") == point.unit


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_aimc_relations_lead_from_each_aid_property_to_its_operational_element(path: Path) -> None:
    cfg = config_mod.load(path)
    env = build_shells(cfg)
    with env.store.kept():  # the lazy AID/AIMC (aas_models/lazy.py): built once, so references resolve to them
        for e in cfg.equipment:
            shell_id = cfg.aas_id(e)
            relations = _relations(env, shell_id)
            assert len(relations) == len(e.points)
            for relation, point in zip(relations, e.points, strict=True):
                first, second = relation.first.resolve(env.store), relation.second.resolve(env.store)
                assert isinstance(first, model.SubmodelElementCollection) and _value(first, "key") == point.path
                assert second is env.element(shell_id, point.path)
            aimc = _submodel(env, f"{shell_id}/sm/AssetInterfacesMappingConfiguration")
            configuration = aimc.get_referable("MappingConfigurations").value[0]
            reference = configuration.get_referable("InterfaceReference")
            assert reference.value.resolve(env.store) is _interface(env, shell_id)
            shell = env.store.get_item(shell_id)
            assert isinstance(shell, model.AssetAdministrationShell)
            assert {f"{shell_id}/sm/AssetInterfacesDescription", aimc.id} <= {
                str(r.key[0].value) for r in shell.submodel
            }


def test_paths_with_dots_get_unique_idshorts_and_keep_the_path_types_and_security(tmp_path: Path) -> None:
    cfg = config_mod.load(_rich(tmp_path))
    env = build_shells(cfg)
    shell_id = cfg.aas_id(cfg.equipment[0])
    props = {p.id_short: p for p in _properties(env, shell_id)}
    assert [_value(p, "key") for p in props.values()] == [p.path for p in cfg.equipment[0].points]
    assert _value(props["Spindle_Speed"], "key") == "Spindle.Speed"
    assert _value(props["Spindle_Speed_2"], "key") == "Spindle_Speed"
    speed = props["Spindle_Speed"]
    assert _value(speed, "title") == "주축 회전수"  # the site's language
    assert _value(speed.get_referable("forms"), "href") == "/?id=ns=2;s=CNC01.Spindle%231%262%20%25"
    axes = props["Axes"]
    assert (_value(axes, "type"), _value(axes.get_referable("items"), "type")) == ("array", "number")
    assert _value(axes, "observable") is False
    forms = axes.get_referable("forms")
    assert (_value(forms, "href"), _value(forms, "uav_browsePath")) == ("/", "0:Objects/2:CNC01/2:Axes")
    semantics = {
        k: props[k].get_referable("valueSemantics").value.key[0].value for k in ("Status_Code", "Status_Started")
    }
    assert semantics == {
        "Status_Code": "nsu=http://opcfoundation.org/UA/;i=19",
        "Status_Started": "nsu=http://opcfoundation.org/UA/;i=294",
    }
    assert _value(props["Message"], "type") == "object"
    channel = _interface(env, shell_id).get_referable(["EndpointMetadata", "securityDefinitions", "opcua_channel_sc"])
    assert (_value(channel, "uav_securityMode"), _value(channel, "uav_securityPolicy")) == (
        "SignAndEncrypt",
        "Basic256Sha256",
    )


@pytest.mark.parametrize(
    "node", ["ns=2;s=A#B&C", "ns=2;s=100%", "ns=2;s=주축 속도", "ns=2;s=a\tb", "ns=2;s=x=y;z", "i=85"]
)
def test_an_href_gives_its_node_id_back_exactly(node: str) -> None:
    written = aid.href(node)
    assert not any(c in written[len("/?id=") :] for c in "#& \t")
    assert aid.node_of_href(written) == node
    assert aid.node_of_href(f"opc.tcp://10.0.0.5:4840{written}") == node  # with the endpoint in front


def test_a_machine_without_read_elements_gets_no_interfaces(tmp_path: Path) -> None:
    env = build_shells(config_mod.load(_rich(tmp_path)))
    spec = env.shells[0]
    bare = replace(spec, elements=tuple(replace(e, node=None, browse_path=None) for e in spec.elements))
    built = build_environment([bare])
    assert not [s for s in built.store if isinstance(s, model.Submodel) and "AssetInterfaces" in (s.id_short or "")]


# --- exports with AID and AIMC pass every checker --------------------------------------------------------------


@pytest.fixture(scope="module")
def rich_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    out = tmp_path_factory.mktemp("rich")
    env = build_shells(config_mod.load(_rich(out)))
    return {
        (version, fmt): write_environment(env, fmt, out / f"rich-{version}.{fmt}", metamodel=version)
        for version in METAMODELS
        for fmt in FORMATS
    }


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("version", METAMODELS)
def test_exports_with_interfaces_pass_aas_core_and_the_official_schema(
    rich_exports: dict[tuple[str, str], Path], version: str, fmt: str
) -> None:
    path = rich_exports[(version, fmt)]
    environment = assert_core_verifies(path, version, fmt)
    semantic_ids = [s.semantic_id.keys[0].value for s in environment.submodels if s.semantic_id]
    assert (semantic_ids.count(aid.AID_SUBMODEL), semantic_ids.count(aid.AIMC_SUBMODEL)) == (2, 2)  # per machine
    assert_matches_schema(path, version, fmt, official_json_schemas(), official_xsds())


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_idta_test_engines_accept_the_30_exports_with_interfaces(
    rich_exports: dict[tuple[str, str], Path], fmt: str
) -> None:
    with rich_exports[("3.0", fmt)].open("rb") as f:
        result = CHECKS[fmt](f)
    assert result.ok(), _report(result)
    assert [r.message for _, r in _results(result) if r.level.name != "INFO"] == [], _report(result)


# --- the round trip through the command line ---------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def _interfaces_json(env: ShellEnvironment) -> dict[str, Any]:
    """The AID and AIMC submodels of the environment, as JSON, by id."""
    document = json.loads(dumps_json(env))
    return {s["id"]: s for s in document["submodels"] if s["idShort"].startswith("AssetInterfaces")}


_POINT_KEYS = ("node", "browse_path", "path", "type", "array", "unit", "mode", "semantic_id")


def _points(cfg: config_mod.Config) -> list[list[dict[str, Any]]]:
    """Each equipment's points as what they mean: texts as {language: text} (a plain one in the site's language)."""

    def texts(text: Any) -> dict[str, str] | None:
        return lang_texts(text, cfg.site.language) if text is not None else None

    return [
        [
            {
                **{k: getattr(p, k) for k in _POINT_KEYS},
                "display_name": texts(p.display_name),
                "description": texts(p.description),
            }
            for p in e.points
        ]
        for e in cfg.equipment
    ]


def _from_aas(file: Path, out: Path) -> config_mod.Config:
    done = _cli("mapping", "from-aas", str(file), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout
    checked = _cli("check", "-c", str(out))
    assert checked.returncode == 0, checked.stderr
    return config_mod.load(out)


@pytest.mark.parametrize(("version", "fmt"), [(v, f) for v in METAMODELS for f in ("aasx", "json")])
def test_config_export_from_aas_export_gives_the_same_points_and_interfaces(
    tmp_path: Path, version: str, fmt: str
) -> None:
    before = config_mod.load(_rich(tmp_path))
    env = build_shells(before)
    exported = write_environment(env, fmt, tmp_path / f"machine.{fmt}", metamodel=version)
    after = _from_aas(exported, tmp_path / "back.yaml")
    assert _points(after) == _points(before)
    assert [e.points[0].display_name for e in after.equipment] == [
        {"ko-KR": "주축 회전수", "en": "Spindle speed"},
        {"ko-KR": "톤수"},
    ]
    assert after.equipment[0].points[0].description == {"ko-KR": '주축의 회전 속도 "실측"', "en": "Rotational speed"}
    assert [(s.id, s.endpoint, s.security.policy, s.security.mode) for s in after.sources] == [
        (s.id, s.endpoint, s.security.policy, s.security.mode) for s in before.sources
    ]
    assert after.equipment[0].name == {"ko-KR": "수직형 머시닝센터 1호기", "en": "Vertical machining centre 1"}
    assert after.equipment[0].nameplate.manufacturer_name == {"ko-KR": "한국정밀기계"}
    assert after.equipment[0].nameplate.address.city == {"ko-KR": "안산"}
    assert _interfaces_json(build_shells(after)) == _interfaces_json(env)
    assert "한국정밀기계" in (tmp_path / "back.yaml").read_text(encoding="utf-8")  # written as it is, not escaped


def test_a_shipped_config_survives_the_round_trip_through_xml(tmp_path: Path) -> None:
    before = config_mod.load(CONFIGS[0])
    env = build_shells(before)
    after = _from_aas(write_environment(env, "xml", tmp_path / "plant.xml"), tmp_path / "back.yaml")
    assert _points(after) == _points(before)
    assert _interfaces_json(build_shells(after)) == _interfaces_json(env)


# --- a machine builder's file -------------------------------------------------------------------------------


def _ref(*keys: tuple[model.KeyTypes, str]) -> model.ModelReference[Any]:
    return model.ModelReference(tuple(model.Key(t, v) for t, v in keys), model.Referable)


def _ext(value: str) -> model.ExternalReference:
    return model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, value),))


def _builders_environment(href: str = "/?id=ns=4;s=Press%23Force") -> model.DictIdentifiableStore[model.Identifiable]:
    """An AAS as another tool would write it: AID 1.0, its own idShorts and ids, no key, no valueSemantics, no
    nameplate, nosec plus an OPC UA channel scheme, the unit only in the target's IEC 61360 data, an HTTP
    interface beside the OPC UA one, and targets in nested collections of a submodel not called OperationalData."""
    aid_id, data_id = "https://builder.example/sm/aid/7", "https://builder.example/sm/data/7"
    key_sm, key_smc = model.KeyTypes.SUBMODEL, model.KeyTypes.SUBMODEL_ELEMENT_COLLECTION

    def prop(name: str, value: Any, semantic: str, kind: Any = datatypes.String) -> model.Property:
        return model.Property(name, kind, value, semantic_id=_ext(semantic))

    def described(name: str, wot: str, observable: bool, form_href: str) -> model.SubmodelElementCollection:
        return model.SubmodelElementCollection(
            name,
            (
                prop("type", wot, aid.TYPE),
                prop("observable", observable, aid.OBSERVABLE, datatypes.Boolean),
                model.SubmodelElementCollection(
                    "forms", (prop("href", form_href, aid.HREF),), semantic_id=_ext(aid.HAS_FORM)
                ),
            ),
            semantic_id=_ext(aid.PROPERTY_DEFINITION),
        )

    def interface(name: str, base: str, binding: str, props: tuple[model.SubmodelElementCollection, ...]) -> Any:
        return model.SubmodelElementCollection(
            name,
            (
                prop("title", f"{name.lower()}", aid.TITLE),
                model.SubmodelElementCollection(
                    "EndpointMetadata",
                    (
                        prop("base", base, aid.BASE, datatypes.AnyURI),
                        prop("contentType", "application/json", aid.CONTENT_TYPE),
                        model.SubmodelElementCollection(
                            "securityDefinitions",
                            (
                                model.SubmodelElementCollection(
                                    "channel",
                                    (
                                        prop(
                                            "uav_securityMode", "Sign", aid.SECURITY_MODE + " "
                                        ),  # the template's space
                                        prop(
                                            "uav_securityPolicy",
                                            "http://opcfoundation.org/UA/SecurityPolicy#Aes128_Sha256_RsaOaep",
                                            aid.SECURITY_POLICY,
                                        ),
                                    ),
                                    semantic_id=_ext(aid.CHANNEL_SCHEME),
                                ),
                            ),
                            semantic_id=_ext(aid.DEFINES_SECURITY_SCHEME),
                        ),
                    ),
                    semantic_id=_ext(aid.ENDPOINT_METADATA),
                ),
                model.SubmodelElementCollection(
                    "InteractionMetadata",
                    (model.SubmodelElementCollection("properties", props, semantic_id=_ext(aid.PROPERTY_AFFORDANCE)),),
                    semantic_id=_ext(aid.INTERACTION_METADATA),
                ),
            ),
            semantic_id=_ext(aid.INTERFACE),
            supplemental_semantic_id=(_ext(binding),),
        )

    description = model.Submodel(
        aid_id,
        id_short="AID",
        semantic_id=_ext(aid.AID_SUBMODEL_10),
        submodel_element=(
            interface(
                "PressPLC",
                "opc.tcp://192.168.10.20:4840",
                "http://opcfoundation.org/UA/WoT-Binding",
                (described("force", "number", True, href), described("strokes", "integer", False, "/?id=ns=4;i=12")),
            ),
            interface("Web", "http://192.168.10.20/api", "http://www.w3.org/2011/http", ()),
        ),
    )
    unit = model.EmbeddedDataSpecification(
        _ext("https://admin-shell.io/DataSpecificationTemplates/DataSpecificationIec61360/3"),
        model.DataSpecificationIEC61360(model.PreferredNameTypeIEC61360({"en": "Force"}), unit="kN"),
    )
    data = model.Submodel(
        data_id,
        id_short="MachineData",
        submodel_element=(
            model.SubmodelElementCollection(
                "Press",
                (
                    model.Property(
                        "Force",
                        datatypes.Double,
                        display_name=model.MultiLanguageNameType({"ko-KR": "프레스 하중", "en": "Press force"}),
                        description=model.MultiLanguageTextType({"ko-KR": "램에 걸리는 힘"}),
                        embedded_data_specifications=(unit,),
                    ),
                    model.Property("Strokes", datatypes.UnsignedInt),
                ),
            ),
        ),
    )
    base = (key_sm, aid_id), (key_smc, "PressPLC")
    relations = model.SubmodelElementList(
        "MappingSourceSinkRelations",
        model.RelationshipElement,
        (
            model.RelationshipElement(
                None,
                _ref(*base, (key_smc, "InteractionMetadata"), (key_smc, "properties"), (key_smc, name)),
                _ref((key_sm, data_id), (key_smc, "Press"), (model.KeyTypes.PROPERTY, target)),
                semantic_id=_ext(aid.MAPPING_RELATION),
            )
            for name, target in (("force", "Force"), ("strokes", "Strokes"))
        ),
        semantic_id_list_element=_ext(aid.MAPPING_RELATION),
    )
    mapping = model.Submodel(
        "https://builder.example/sm/aimc/7",
        id_short="AIMC",
        semantic_id=_ext(aid.AIMC_SUBMODEL),
        submodel_element=(
            model.SubmodelElementList(
                "MappingConfigurations",
                model.SubmodelElementCollection,
                (
                    model.SubmodelElementCollection(
                        None,
                        (model.ReferenceElement("InterfaceReference", _ref(*base)), relations),
                        semantic_id=_ext(aid.MAPPING_CONFIGURATION),
                    ),
                    model.SubmodelElementCollection(  # the web interface: no OPC UA, skipped with a note
                        None,
                        (model.ReferenceElement("InterfaceReference", _ref((key_sm, aid_id), (key_smc, "Web"))),),
                        semantic_id=_ext(aid.MAPPING_CONFIGURATION),
                    ),
                ),
                semantic_id_list_element=_ext(aid.MAPPING_CONFIGURATION),
            ),
        ),
    )
    shell = model.AssetAdministrationShell(
        model.AssetInformation(model.AssetKind.INSTANCE, global_asset_id="https://builder.example/asset/press-7"),
        "https://builder.example/aas/press-7",
        id_short="Press7",
        display_name=model.MultiLanguageNameType({"ko-KR": "유압 프레스 7호기"}),
        submodel={model.ModelReference.from_referable(s) for s in (description, data, mapping)},
    )
    return model.DictIdentifiableStore([shell, description, data, mapping])


def _write_30_aasx(store: model.DictIdentifiableStore[model.Identifiable], path: Path) -> Path:
    """A metamodel 3.0 AASX, as most tools write one: basyx's JSON read by aas-core3.0, its XML packaged."""
    environment = core30_json.environment_from_jsonable(json.loads(basyx_json.object_store_to_json(store)))
    properties = OPCCoreProperties()
    properties.creator = "a machine builder"
    export30.write_aasx(path, export30.dumps_xml(environment), properties)
    return path


def test_a_machine_builders_30_aasx_becomes_a_config_check_accepts(tmp_path: Path) -> None:
    aasx = _write_30_aasx(_builders_environment(), tmp_path / "press-7.aasx")
    out = tmp_path / "press.yaml"
    done = _cli("mapping", "from-aas", str(aasx), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "note: skipped" in done.stdout and "is not OPC UA (base http://192.168.10.20/api)" in done.stdout
    assert "Press7 nameplate manufacturer_name" in done.stdout  # the placeholders to fill, by name
    assert _cli("check", "-c", str(out)).returncode == 0
    cfg = config_mod.load(out)
    (source,) = cfg.sources
    assert (source.id, source.endpoint) == ("pressplc", "opc.tcp://192.168.10.20:4840")
    assert (source.security.mode, source.security.policy) == ("Sign", "Aes128_Sha256_RsaOaep")
    (press,) = cfg.equipment
    assert (press.id, press.id_short, press.aas_id, press.asset_id) == (
        "Press7",
        "Press7",
        "https://builder.example/aas/press-7",
        "https://builder.example/asset/press-7",
    )
    assert press.name == {"ko-KR": "유압 프레스 7호기"}
    force, strokes = press.points
    assert (force.node, force.path, force.type, force.unit, force.mode) == (
        "ns=4;s=Press#Force",
        "Press.Force",
        "Double",
        "kN",
        "subscribe",
    )
    assert force.display_name == {"ko-KR": "프레스 하중", "en": "Press force"}
    assert force.description == {"ko-KR": "램에 걸리는 힘"}
    assert (strokes.node, strokes.path, strokes.type, strokes.mode) == ("ns=4;i=12", "Press.Strokes", "UInt32", "poll")
    text = out.read_text(encoding="utf-8")
    assert text.count("# TODO: not in the file") == 4  # the nameplate's mandatory keys, each marked
    assert "submodel MachineData" in text  # where the file had the elements


# --- files it cannot use: one line, exit status 2, nothing written ---------------------------------------------


def _one_line_error(tmp_path: Path, file: Path, *words: str) -> None:
    out = tmp_path / "never.yaml"
    done = _cli("mapping", "from-aas", str(file), "-o", str(out))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert all(w in done.stderr for w in words), done.stderr
    assert not out.exists()


def _builders_json(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "builder.json"
    path.write_text(basyx_json.object_store_to_json(_builders_environment(**changes)), encoding="utf-8")
    return path


def test_a_file_without_an_aid_is_refused(tmp_path: Path) -> None:
    path = _builders_json(tmp_path)
    document = json.loads(path.read_text(encoding="utf-8"))
    document["submodels"] = [s for s in document["submodels"] if s["idShort"] != "AID"]
    path.write_text(json.dumps(document), encoding="utf-8")
    _one_line_error(tmp_path, path, str(path), "no Asset Interfaces Description submodel", aid.AID_SUBMODEL)


def test_a_file_without_an_aimc_is_refused(tmp_path: Path) -> None:
    path = _builders_json(tmp_path)
    document = json.loads(path.read_text(encoding="utf-8"))
    document["submodels"] = [s for s in document["submodels"] if s["idShort"] != "AIMC"]
    path.write_text(json.dumps(document), encoding="utf-8")
    _one_line_error(tmp_path, path, "no Asset Interfaces Mapping Configuration submodel", aid.AIMC_SUBMODEL)


def test_a_relation_that_points_nowhere_is_named(tmp_path: Path) -> None:
    path = _builders_json(tmp_path)
    document = json.loads(path.read_text(encoding="utf-8"))
    data = next(s for s in document["submodels"] if s["idShort"] == "MachineData")
    data["submodelElements"][0]["value"] = data["submodelElements"][0]["value"][:1]  # Strokes is gone
    path.write_text(json.dumps(document), encoding="utf-8")
    _one_line_error(
        tmp_path,
        path,
        "submodel 'https://builder.example/sm/aimc/7', MappingConfigurations[0], MappingSourceSinkRelations[1]",
        "second points to https://builder.example/sm/data/7 / Press / Strokes, which is not in the file",
    )


def test_an_href_that_is_no_node_id_is_named(tmp_path: Path) -> None:
    path = _builders_json(tmp_path, href="/sampleDevice/properties/force")
    _one_line_error(
        tmp_path,
        path,
        "MappingSourceSinkRelations[0]: first's forms.href",
        "'/sampleDevice/properties/force' is not an OPC UA node id",
    )


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("machine.aasx", b"not a zip", ("not an AASX package",)),
        ("machine.json", b"{not json", ("not AAS JSON",)),
        ("machine.xml", b"<environment/>", ("not an AAS environment", "https://admin-shell.io/aas/3/0")),
        ("machine.zip", b"", ("cannot tell the format", ".aasx, .json or .xml")),
    ],
)
def test_a_file_that_is_no_aas_is_refused(tmp_path: Path, name: str, content: bytes, words: tuple[str, ...]) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    _one_line_error(tmp_path, path, str(path), *words)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    _one_line_error(tmp_path, tmp_path / "nowhere.aasx", "cannot read", "No such file")


def test_basyx_reads_the_31_aasx_the_same_way(tmp_path: Path) -> None:
    """The 3.1 AASX written by basyx's own writer (not the export) converts too."""
    store = _builders_environment()
    path = tmp_path / "press-31.aasx"
    with basyx_aasx.AASXWriter(str(path)) as writer:
        shell = next(o for o in store if isinstance(o, model.AssetAdministrationShell))
        writer.write_aas(shell.id, store, basyx_aasx.DictSupplementaryFileContainer())
    assert zipfile.is_zipfile(path)
    cfg = _from_aas(path, tmp_path / "press.yaml")
    assert [p.node for p in cfg.equipment[0].points] == ["ns=4;s=Press#Force", "ns=4;i=12"]
