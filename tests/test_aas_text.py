"""Shells that speak the site's language, carry names, explain their concepts and show the plant's structure.

- Language: site.language (default ko-KR) tags every plain-string text; a {language: text} map carries each.
- Names: equipment name -> shell (and operational submodel) displayName; a point's display_name/description.
- Concept descriptions for the project's own semanticIds (IEC 61360: preferred name, unit, data type).
- The site's Hierarchical Structures submodel (IDTA 02011): site -> line -> machine, ids from the template.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import aas_core3_1.jsonization as core31_json
import aas_core3_1.verification as core31_verification
import pytest
import yaml
from aas_test_engines import file as test_engines
from aas_test_engines.result import Level
from basyx.aas import model

from aas_models import hierarchy
from aas_models.build import ModelBuildError, build_environment
from aas_models.concepts import is_standard_id
from aas_models.export import write_environment
from aas_models.spec import Element, Nameplate, Shell
from agent.config import Config, ConfigError, load, parse
from agent.shells import build_shells
from tests.helpers import ROOT

TEMPLATE = ROOT.parent / "shared/reference/idta-templates/hierarchical-structures-1.1.1.json"

KOREAN = """\
site:
  id: plant-ansan
  name: 안산 공장
sources:
  - id: plc1
    endpoint: opc.tcp://127.0.0.1:4840/
  - id: plc2
    endpoint: opc.tcp://127.0.0.1:4841/
equipment:
  - id: cnc01
    name: 수직형 머시닝센터 1호기
    source: plc1
    line: 가공 1라인
    nameplate:
      manufacturer_name: 한국정밀기계
      product_designation: {ko-KR: 수직형 머시닝센터, en: Vertical machining centre}
      uri_of_product: https://maker.example.kr/products/vmc
      order_code: VMC-01
      product_family: VMC
      address: {street: 테헤란로 1, zipcode: "06234", city: {ko-KR: 서울, en: Seoul}, country_code: KR}
    points:
      - node: ns=2;s=CNC01.SpindleSpeed
        path: Spindle.Speed
        type: Double
        unit: rpm
        semantic_id: urn:example-supplier:concept:SpindleSpeed
        display_name: 주축 회전수
        description: {ko-KR: 주축의 회전 속도, en: Rotational speed of the main spindle}
      - node: ns=2;s=CNC01.Temperature
        path: Spindle.Temperature
        type: Float
        unit: °C
        semantic_id: "0173-1#02-AAO128#002"
      - {node: ns=2;s=CNC01.Count, path: PartCount, type: UInt32, semantic_id: "urn:example-supplier:concept:PartCount"}
  - id: cnc02
    name: {ko-KR: 수직형 머시닝센터 2호기, en: Vertical machining centre 2}
    source: plc1
    line: 가공 1라인
    nameplate:
      manufacturer_name: 한국정밀기계
      product_designation: 수직형 머시닝센터
      uri_of_product: https://maker.example.kr/products/vmc
      order_code: VMC-02
    points:
      - {node: ns=2;s=CNC02.Count, path: PartCount, type: UInt32, unit: pcs,
         semantic_id: "urn:example-supplier:concept:PartCount"}
      - {node: ns=2;s=CNC02.Note, path: Note, type: LocalizedText, semantic_id: "https://admin-shell.io/x/Note"}
  - id: prs01
    name: Press
    source: plc2
    nameplate:
      manufacturer_name: Simpac
      product_designation: SPC-200
      uri_of_product: https://example.com/spc-200
      order_code: SPC-200
    points:
      - {node: ns=2;s=PRS01.Tonnage, path: Tonnage, type: Double, unit: kN,
         semantic_id: "urn:example-supplier:concept:Tonnage"}
sinks:
  - type: mqtt
    host: 127.0.0.1
"""


def _config(text: str = KOREAN, **site: Any) -> Config:
    document = yaml.safe_load(text)
    document["site"].update(site)
    return parse(yaml.safe_dump(document, allow_unicode=True), "agent.yaml")


def _doc(cfg: Config) -> dict[str, Any]:
    """The 3.1 JSON environment (the SDK's), as a dict."""
    env = build_shells(cfg)
    from aas_models.export import dumps_json

    loaded: dict[str, Any] = json.loads(dumps_json(env))
    return loaded


def _submodel(doc: dict[str, Any], submodel_id: str) -> dict[str, Any]:
    return next(sm for sm in doc["submodels"] if sm["id"] == submodel_id)


def _children(node: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = node.get("submodelElements") or node.get("value") or node.get("statements") or []
    return found


def _at(node: dict[str, Any], *path: str) -> dict[str, Any]:
    for segment in path:
        node = next(c for c in _children(node) if c.get("idShort") == segment)
    return node


def _texts(lang_strings: list[dict[str, str]]) -> dict[str, str]:
    return {t["language"]: t["text"] for t in lang_strings}


def _nameplate(doc: dict[str, Any], cfg: Config, index: int = 0) -> dict[str, Any]:
    return _submodel(doc, f"{cfg.aas_id(cfg.equipment[index])}/sm/Nameplate")


# --- language ------------------------------------------------------------------------------------


def test_korean_nameplate_text_is_tagged_ko_kr_by_default() -> None:
    cfg = _config()
    assert cfg.site.language == "ko-KR"
    plate = _nameplate(_doc(cfg), cfg)
    assert plate["submodelElements"][1]["idShort"] == "ManufacturerName"
    assert _at(plate, "ManufacturerName")["value"] == [{"language": "ko-KR", "text": "한국정밀기계"}]
    assert _at(plate, "ManufacturerProductFamily")["value"] == [{"language": "ko-KR", "text": "VMC"}]
    address = _at(plate, "AddressInformation")
    assert _at(address, "Street")["value"] == [{"language": "ko-KR", "text": "테헤란로 1"}]
    assert _at(address, "NationalCode")["value"] == [{"language": "ko-KR", "text": "KR"}]


def test_site_language_en_tags_en() -> None:
    cfg = _config(language="en")
    doc = _doc(cfg)
    assert _at(_nameplate(doc, cfg), "ManufacturerName")["value"] == [{"language": "en", "text": "한국정밀기계"}]
    shell = doc["assetAdministrationShells"][0]
    assert shell["displayName"] == [{"language": "en", "text": "수직형 머시닝센터 1호기"}]


def test_a_map_gives_every_language_it_names() -> None:
    cfg = _config()
    doc = _doc(cfg)
    plate = _nameplate(doc, cfg)
    assert _texts(_at(plate, "ManufacturerProductDesignation")["value"]) == {
        "ko-KR": "수직형 머시닝센터",
        "en": "Vertical machining centre",
    }
    assert _texts(_at(plate, "AddressInformation", "CityTown")["value"]) == {"ko-KR": "서울", "en": "Seoul"}
    # a map is taken as it is: the site language does not add or retag anything
    plate_en = _nameplate(_doc(_config(language="en")), cfg)
    assert _texts(_at(plate_en, "ManufacturerProductDesignation")["value"]) == {
        "ko-KR": "수직형 머시닝센터",
        "en": "Vertical machining centre",
    }


def test_shipped_english_configs_say_en() -> None:
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        assert load(config).site.language == "en", config.name


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"site": {"language": "not a tag"}}, ["site.language", "'not a tag'", "BCP 47"]),
        ({"site": {"language": "ko_KR"}}, ["site.language", "'ko_KR'"]),
        ({"name": {"ko-KR": "설비", "en_US": "machine"}}, ["equipment[0].name", "'en_US'", "BCP 47"]),
        ({"product_designation": {"ko-kr": "y", "ko-KR": "z"}}, ["product_designation", "'ko-KR'", "'ko-kr'", "same"]),
        ({"product_designation": {"ko-KR": " "}}, ["equipment[0].nameplate.product_designation", "ko-KR", "empty"]),
        ({"product_designation": {}}, ["equipment[0].nameplate.product_designation", "empty"]),
        ({"description": ""}, ["equipment[0].points[0].description", "empty"]),
        ({"display_name": ["x"]}, ["equipment[0].points[0].display_name", "language tag to text"]),
    ],
)
def test_a_bad_language_tag_or_text_is_a_config_error_naming_the_key(change: dict[str, Any], words: list[str]) -> None:
    document = yaml.safe_load(KOREAN)
    machine = document["equipment"][0]
    for key, value in change.items():
        if key == "site":
            document["site"].update(value)
        elif key == "product_designation":
            machine["nameplate"][key] = value
        elif key in ("description", "display_name"):
            machine["points"][0][key] = value
        else:
            machine[key] = value
    with pytest.raises(ConfigError) as err:
        parse(yaml.safe_dump(document, allow_unicode=True), "agent.yaml")
    message = str(err.value)
    assert all(w in message for w in words), message
    assert message.startswith("agent.yaml:") and len(message.splitlines()) == 1, message


def test_a_yaml_boolean_as_language_key_is_explained() -> None:
    text = KOREAN.replace("name: 수직형 머시닝센터 1호기", "name: {no: Maskin, ko-KR: 설비}")
    with pytest.raises(ConfigError, match="quote it"):
        parse(text, "agent.yaml")


def test_the_builder_refuses_a_bad_language_on_its_own() -> None:
    shell = Shell(
        "urn:x:aas:m1",
        "M1",
        "urn:x:asset:m1",
        Nameplate({"ko-KR": "가", "not a tag": "x"}, "P", "https://example.com/p", "O"),
        (Element("Speed", "Double"),),
    )
    with pytest.raises(ModelBuildError, match=r"manufacturer_name.*'not a tag'"):
        build_environment([shell])
    with pytest.raises(ModelBuildError, match="language 'en_US'"):
        build_environment([], language="en_US")


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["korean", *(c.stem for c in sorted((ROOT / "configs").glob("*.yaml")))])
def test_each_shell_display_name_is_the_equipment_name(config: str) -> None:
    cfg = _config() if config == "korean" else load(ROOT / "configs" / f"{config}.yaml")
    doc = _doc(cfg)
    shells = {s["id"]: s for s in doc["assetAdministrationShells"]}
    for e in cfg.equipment:
        expected = None if e.name is None else {cfg.site.language: e.name} if isinstance(e.name, str) else e.name
        shell = shells[cfg.aas_id(e)]
        operational = _submodel(doc, f"{cfg.aas_id(e)}/sm/OperationalData")
        if expected is None:
            assert "displayName" not in shell and "displayName" not in operational
        else:
            assert _texts(shell["displayName"]) == expected
            assert _texts(operational["displayName"]) == expected


def test_point_display_name_and_description_reach_the_element() -> None:
    cfg = _config()
    doc = _doc(cfg)
    speed = _at(_submodel(doc, f"{cfg.aas_id(cfg.equipment[0])}/sm/OperationalData"), "Spindle", "Speed")
    assert speed["displayName"] == [{"language": "ko-KR", "text": "주축 회전수"}]
    assert _texts(speed["description"]) == {"ko-KR": "주축의 회전 속도", "en": "Rotational speed of the main spindle"}
    count = _at(_submodel(doc, f"{cfg.aas_id(cfg.equipment[0])}/sm/OperationalData"), "PartCount")
    assert "displayName" not in count and "description" not in count


# --- concept descriptions ------------------------------------------------------------------------


def _concepts(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        cd["id"]: cd["embeddedDataSpecifications"][0]["dataSpecificationContent"]
        for cd in doc.get("conceptDescriptions", [])
    }


IEC61360_OF = {  # (xs type, with unit) -> DataTypeIec61360, for the types the demo config uses
    ("xs:string", False): "STRING",
    ("xs:int", False): "INTEGER_COUNT",
    ("xs:unsignedShort", False): "INTEGER_COUNT",
    ("xs:unsignedInt", False): "INTEGER_COUNT",
    ("xs:unsignedInt", True): "INTEGER_MEASURE",
    ("xs:double", True): "REAL_MEASURE",
    ("xs:float", True): "REAL_MEASURE",
    ("xs:boolean", False): "BOOLEAN",
}


def test_every_project_semantic_id_of_the_demo_has_a_concept_description_with_unit_and_type() -> None:
    cfg = load(ROOT / "configs" / "demo.yaml")
    env = build_shells(cfg)
    from aas_models.export import dumps_json

    concepts = _concepts(json.loads(dumps_json(env)))
    own = {p.semantic_id for e in cfg.equipment for p in e.points if p.semantic_id}
    assert own and all(s.startswith("urn:edge-agent:demo:concept:") for s in own)
    from agent.shells import analysis_elements

    analysed = {a.semantic_id for a in analysis_elements()}  # the EdgeAnalysis collection of analysed machines
    assert set(concepts) == own | analysed
    for e in cfg.equipment:
        for p in e.points:
            if p.semantic_id is None:
                continue
            content = concepts[p.semantic_id]
            assert content.get("unit") == p.unit, p.semantic_id
            xs = env.slot(cfg.aas_id(e), p.path).value_type.xs
            assert content["dataType"] == IEC61360_OF[(xs, p.unit is not None)], p.semantic_id
            names = _texts(content["preferredName"])
            assert names["en"] == (p.display_name["en"] if isinstance(p.display_name, dict) else p.path)
            assert "en" in _texts(content["definition"])  # AASc-3a-008
    speed = concepts["urn:edge-agent:demo:concept:SpindleSpeed"]
    assert _texts(speed["preferredName"]) == {"en": "Spindle speed", "ko-KR": "주축 회전수"}
    assert _texts(speed["definition"]) == {"en": "Rotational speed of the main spindle", "ko-KR": "주축의 회전 속도"}


def test_concepts_of_standard_dictionaries_are_not_described_again() -> None:
    concepts = _concepts(_doc(_config()))
    assert set(concepts) == {
        "urn:example-supplier:concept:SpindleSpeed",
        "urn:example-supplier:concept:PartCount",
        "urn:example-supplier:concept:Tonnage",
    }  # not the ECLASS IRDI, not the admin-shell.io IRI
    speed = concepts["urn:example-supplier:concept:SpindleSpeed"]
    assert _texts(speed["preferredName"]) == {"ko-KR": "주축 회전수", "en": "Speed"}  # English: the idShort
    assert _texts(speed["definition"])["ko-KR"] == "주축의 회전 속도"
    assert (speed["unit"], speed["dataType"]) == ("rpm", "REAL_MEASURE")
    # PartCount: no unit on cnc01, pcs on cnc02: the concept claims neither unit, and counts
    count = concepts["urn:example-supplier:concept:PartCount"]
    assert "unit" not in count and count["dataType"] == "INTEGER_COUNT"
    for standard in ("0173-1#02-AAO128#002", "0112/2///61987#ABA565#009", "https://admin-shell.io/idta/x/1/0"):
        assert is_standard_id(standard)
    for own in ("urn:edge-agent:demo:concept:State", "https://example.com/semantics/Speed", "Speed"):
        assert not is_standard_id(own)


# --- hierarchy -----------------------------------------------------------------------------------


def _template_ids() -> set[str]:
    if not TEMPLATE.is_file():
        pytest.skip(f"{TEMPLATE} not found")
    ids: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("modelType") == "ConceptDescription":
                ids.add(node["id"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(TEMPLATE.read_text(encoding="utf-8")))
    return ids


def test_hierarchy_ids_are_the_templates() -> None:
    ids = _template_ids()
    for semantic_id in (
        hierarchy.SUBMODEL_SEMANTIC_ID,
        hierarchy.ENTRY_NODE,
        hierarchy.NODE,
        hierarchy.HAS_PART,
        hierarchy.ARCHE_TYPE,
    ):
        assert semantic_id in ids


def _semantic(node: dict[str, Any]) -> str:
    value: str = node["semanticId"]["keys"][0]["value"]
    return value


@pytest.mark.parametrize("config", ["korean", *(c.stem for c in sorted((ROOT / "configs").glob("*.yaml")))])
def test_the_hierarchy_lists_every_machine_under_its_line(config: str) -> None:
    cfg = _config() if config == "korean" else load(ROOT / "configs" / f"{config}.yaml")
    env = build_shells(cfg)
    doc = _doc(cfg)
    assert env.hierarchy_id is not None
    sm = _submodel(doc, env.hierarchy_id)
    assert _semantic(sm) == hierarchy.SUBMODEL_SEMANTIC_ID
    assert sm["semanticId"]["type"] == "ExternalReference"
    entry, arche = sm["submodelElements"]
    assert (_semantic(arche), arche["value"]) == (hierarchy.ARCHE_TYPE, "Full")
    assert _semantic(entry) == hierarchy.ENTRY_NODE
    assert entry["entityType"] == "SelfManagedEntity"
    assert entry["globalAssetId"] == f"{cfg.site.aas_prefix}:asset:{cfg.site.id}"

    expected: dict[str, list[str]] = {}  # line name -> globalAssetIds, in config order
    for e in cfg.equipment:
        expected.setdefault(e.line or e.source, []).append(cfg.asset_id(e))
    found: dict[str, list[str]] = {}
    entities = [s for s in entry["statements"] if s["modelType"] == "Entity"]
    for line in entities:
        assert (_semantic(line), line["entityType"]) == (hierarchy.NODE, "CoManagedEntity")
        assert "globalAssetId" not in line and "specificAssetIds" not in line
        machines = [s for s in line["statements"] if s["modelType"] == "Entity"]
        for machine in machines:
            assert (_semantic(machine), machine["entityType"]) == (hierarchy.NODE, "SelfManagedEntity")
            assert "specificAssetIds" not in machine  # basyx issue #636 worked around
        name = _texts(line["displayName"])[cfg.site.language]
        found[name] = [m["globalAssetId"] for m in machines]
        _check_has_part(line, machines, [env.hierarchy_id, entry["idShort"], line["idShort"]])
    assert found == expected
    _check_has_part(entry, entities, [env.hierarchy_id, entry["idShort"]])


def _check_has_part(parent: dict[str, Any], children: list[dict[str, Any]], parent_path: list[str]) -> None:
    """Every child has one HasPart in the parent's statements: first = the parent, second = the child."""
    relations = [s for s in parent["statements"] if s["modelType"] == "RelationshipElement"]
    assert len(relations) == len(children)
    for relation, child in zip(relations, children, strict=True):
        assert _semantic(relation) == hierarchy.HAS_PART
        first = [k["value"] for k in relation["first"]["keys"]]
        second = [k["value"] for k in relation["second"]["keys"]]
        assert relation["first"]["type"] == relation["second"]["type"] == "ModelReference"
        assert first == parent_path and second == [*parent_path, child["idShort"]]


def test_machines_of_the_korean_config_sit_on_their_lines() -> None:
    cfg = _config()
    env = build_shells(cfg)
    entry = env.store.get_item(env.hierarchy_id or "")
    assert isinstance(entry, model.Submodel)
    site = entry.get_referable("plant_ansan")
    assert isinstance(site, model.Entity) and site.display_name == model.MultiLanguageNameType({"ko-KR": "안산 공장"})
    lines = {str(next(iter((e.display_name or {}).values()))): e for e in site.statement if isinstance(e, model.Entity)}
    assert set(lines) == {"가공 1라인", "plc2"}  # given, and the default: the source id
    assert lines["가공 1라인"].id_short == "Line_1"  # free text becomes a valid idShort
    machines = {e.id_short: e for e in lines["가공 1라인"].statement if isinstance(e, model.Entity)}
    assert set(machines) == {"cnc01", "cnc02"}
    assert machines["cnc02"].display_name == model.MultiLanguageNameType(
        {"ko-KR": "수직형 머시닝센터 2호기", "en": "Vertical machining centre 2"}
    )


# --- what the exports carry ----------------------------------------------------------------------


def test_korean_config_exports_verify_in_both_versions(tmp_path: Path) -> None:
    env = build_shells(_config())
    # 3.0: the export itself is verified by aas-core3.0 before anything is written; then the IDTA test engines
    for fmt in ("json", "xml", "aasx"):
        out = write_environment(env, fmt, tmp_path / f"env30.{fmt}", metamodel="3.0")
        with out.open("rb") as f:
            result = getattr(test_engines, f"check_{fmt}_file")(f)
        assert result.ok()
        assert not [r for r in _results(result) if r.level != Level.INFO]
    document = json.loads(write_environment(env, "json", tmp_path / "env31.json", metamodel="3.1").read_bytes())
    environment = core31_json.environment_from_jsonable(document)
    assert [f"{e.path}: {e.cause}" for e in core31_verification.verify(environment)] == []


def _results(result: Any) -> list[Any]:
    found = [result]
    for sub in result.sub_results:
        found += _results(sub)
    return found


def test_the_31_aasx_carries_the_hierarchy_and_the_concepts(tmp_path: Path) -> None:
    env = build_shells(_config())
    out = write_environment(env, "aasx", tmp_path / "env.aasx", metamodel="3.1")
    with zipfile.ZipFile(out) as package:
        xml = package.read("aasx/data.xml").decode()
    assert "<aas:idShort>HierarchicalStructures</aas:idShort>" in xml
    assert xml.count("<aas:conceptDescription>") == 3
