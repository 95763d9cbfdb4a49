"""aas_models: build, live values, export.

Exports are checked with aas-core3.1, the official JSON schemas and XSD, and the basyx readers.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aas_core3_1.jsonization as aas_jsonization
import aas_core3_1.verification as aas_verification
import jsonschema
import pytest
from basyx.aas import model
from basyx.aas.adapter import aasx
from basyx.aas.adapter import json as aas_json
from basyx.aas.adapter import xml as aas_xml
from lxml import etree  # type: ignore[import-untyped]

from aas_models._common import external_reference
from aas_models.build import IEC61360_TEMPLATE, ModelBuildError, ShellEnvironment, build_environment
from aas_models.export import dumps_json, write_environment
from aas_models.lazy import LazySubmodel
from aas_models.live import LiveValues, ValueProblem
from aas_models.nameplate import SUBMODEL_SEMANTIC_ID
from aas_models.spec import Address, Element, Nameplate, Shell
from aas_models.types import LANG_STRING, OPCUA_TYPES, UnknownTypeError, value_type, xs_type
from tests.helpers import EXPECTED_XS, unavailable

SCHEMAS = Path(__file__).resolve().parents[1].parent / "shared/reference/schemas"

PRESS = "urn:example:aas:press-01"
OVEN = "urn:example:aas:oven-01"
SPEED_SEMANTIC_ID = "https://example.com/semantics/SpindleSpeed"
U64_MAX = 18446744073709551615
I64_MIN = -9223372036854775808
KST = timezone(timedelta(hours=9))

PRESS_ELEMENTS = (
    Element("State.Running", "Boolean"),
    Element("State.Mode", "SByte"),
    Element("State.Level", "Byte"),
    Element("Counts.Short", "Int16"),
    Element("Counts.UShort", "UInt16"),
    Element("Counts.Int", "Int32", unit="pcs"),
    Element("Counts.UInt", "UInt32"),
    Element("Counts.Long", "Int64"),
    Element("Counts.ULong", "UInt64"),
    Element("Spindle.Speed", "Double", semantic_id=SPEED_SEMANTIC_ID, unit="1/min", description="스핀들 속도"),
    Element("Spindle.Motor.Temperature", "Float", unit="°C"),
    Element("Operator", "String"),
    Element("Recipe", "String"),
    Element("LastChange", "DateTime"),
    Element("ServerTime", "UtcTime"),
    Element("Payload", "ByteString"),
    Element("Message", "LocalizedText", semantic_id="https://example.com/semantics/Message"),
    Element("Status", "StatusCode"),
    Element("BatchId", "Guid"),
    Element("SourceNode", "NodeId"),
    Element("Axis.Positions", "Double", is_array=True, unit="mm", semantic_id="https://example.com/semantics/Pos"),
    Element("Alarms", "UInt32", is_array=True),
    Element("Messages", "LocalizedText", is_array=True),
)

OVEN_ELEMENTS = (
    Element("Temperature", "Double", unit="°C"),
    Element("Zones.Setpoints", "Float", is_array=True, unit="°C"),
    Element("Zones.Count", "Byte"),
)

PRESS_VALUES: dict[str, Any] = {
    "State.Running": True,
    "State.Mode": -128,
    "State.Level": 255,
    "Counts.Short": -32768,
    "Counts.UShort": 65535,
    "Counts.Int": 2147483647,
    "Counts.UInt": 4294967295,
    "Counts.Long": I64_MIN,
    "Counts.ULong": U64_MAX,
    "Spindle.Speed": math.nan,
    "Spindle.Motor.Temperature": 21.5,
    "Operator": "",
    "Recipe": "프레스 레시피 A-7",
    "LastChange": datetime(2024, 5, 1, 12, 30, 45, 123456, tzinfo=UTC),
    "ServerTime": datetime(2024, 5, 1, 21, 30, tzinfo=KST),
    "Payload": b"\x00\xffedge",
    "Message": {"language": "ko", "text": "정상 가동"},
    "Status": 0x80000000,
    "BatchId": "72962b91-fa75-4ae6-8d28-b404dc7daf63",
    "SourceNode": "ns=2;s=Press.Spindle.Speed",
    "Axis.Positions": [1.5, math.inf, -math.inf, math.nan],
    "Alarms": [],
    "Messages": [{"language": "en", "text": "door open"}, {"language": "", "text": "invariant"}],
}

OVEN_VALUES: dict[str, Any] = {
    "Temperature": math.inf,
    "Zones.Setpoints": [180.0, 0.1],
    "Zones.Count": 3,
}


def _shell(shell_id: str, id_short: str, elements: tuple[Element, ...], **nameplate: Any) -> Shell:
    return Shell(
        id=shell_id,
        id_short=id_short,
        asset_id=shell_id.replace(":aas:", ":asset:"),
        nameplate=Nameplate(
            manufacturer_name="한국정밀기계",
            product_designation="Servo press SP-300",
            uri_of_product="https://maker.example.kr/products/sp-300",
            order_code="SP-300-KR",
            **nameplate,
        ),
        elements=elements,
    )


def _shells() -> list[Shell]:
    return [
        _shell(
            PRESS,
            "Press01",
            PRESS_ELEMENTS,
            address=Address(street="테헤란로 1", zipcode="06234", city="Seoul", country_code="KR"),
            serial_number="SN-0001",
            year_of_construction="2023",
            product_family="SP",
            software_version="4.2.1",
            hardware_version="B",
        ),
        _shell(OVEN, "Oven01", OVEN_ELEMENTS),
    ]


@pytest.fixture(scope="module")
def env() -> ShellEnvironment:
    environment = build_environment(_shells())
    live = LiveValues()
    for path, value in PRESS_VALUES.items():
        live.update(PRESS, path, value)
    for path, value in OVEN_VALUES.items():
        live.update(OVEN, path, value)
    assert live.apply(environment) == []
    return environment


@pytest.fixture(scope="module")
def exported(env: ShellEnvironment, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("export")
    return {fmt: write_environment(env, fmt, out / f"env.{fmt}", metamodel="3.1") for fmt in ("json", "xml", "aasx")}


@pytest.fixture(scope="module")
def doc(exported: dict[str, Path]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(exported["json"].read_bytes())
    return loaded


def _submodel(doc: dict[str, Any], submodel_id: str) -> dict[str, Any]:
    return next(sm for sm in doc["submodels"] if sm["id"] == submodel_id)


def _at(doc: dict[str, Any], submodel_id: str, path: str) -> dict[str, Any]:
    children = _submodel(doc, submodel_id)["submodelElements"]
    node: dict[str, Any] = {}
    for segment in path.split("."):
        node = next(c for c in children if c.get("idShort") == segment)
        children = node.get("value", [])
    return node


def _op(shell_id: str = PRESS) -> str:
    return f"{shell_id}/sm/OperationalData"


def _value(doc: dict[str, Any], path: str, shell_id: str = PRESS) -> Any:
    return _at(doc, _op(shell_id), path).get("value")


def _schema(name: str) -> dict[str, Any]:
    file = SCHEMAS / name
    if not file.is_file():
        unavailable(f"{file} not found: the official AAS schemas live in shared/reference/schemas beside the repo")
    loaded: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    return loaded


# --- types -------------------------------------------------------------------------------------


def test_type_table_matches_aas_notes() -> None:
    assert {name: xs_type(name) for name in OPCUA_TYPES} == EXPECTED_XS
    assert EXPECTED_XS["LocalizedText"] == LANG_STRING
    assert value_type("LocalizedText").multilanguage
    assert not value_type("Byte").multilanguage
    assert value_type("Byte").datatype is model.datatypes.UnsignedByte


def test_unknown_type_names_type_and_allowed() -> None:
    with pytest.raises(UnknownTypeError) as info:
        xs_type("Int")
    assert isinstance(info.value, ValueError)
    assert "'Int'" in str(info.value)
    assert "Int32" in str(info.value) and "LocalizedText" in str(info.value)


def test_elements_cover_every_opcua_type() -> None:
    assert {e.opcua_type for e in PRESS_ELEMENTS} == set(OPCUA_TYPES)


# --- build -------------------------------------------------------------------------------------


def test_environment_index(env: ShellEnvironment) -> None:
    assert env.submodel_id(PRESS) == f"{PRESS}/sm/OperationalData"
    assert env.nameplate_id(OVEN) == f"{OVEN}/sm/Nameplate"
    assert env.semantic_id(PRESS, "Spindle.Speed") == SPEED_SEMANTIC_ID
    assert env.semantic_id(PRESS, "Operator") is None
    assert env.unit(PRESS, "Axis.Positions") == "mm"
    speed = env.element(PRESS, "Spindle.Speed")
    assert isinstance(speed, model.Property) and speed.id_short == "Speed"
    assert isinstance(speed.parent, model.SubmodelElementCollection) and speed.parent.id_short == "Spindle"
    assert isinstance(env.element(PRESS, "Messages"), model.SubmodelElementList)
    assert len(list(env.slots())) == len(PRESS_ELEMENTS) + len(OVEN_ELEMENTS)
    with pytest.raises(KeyError, match="has no element 'Nope'"):
        env.element(PRESS, "Nope")
    with pytest.raises(KeyError, match="no shell"):
        env.submodel_id("urn:nope")


def test_shells_and_nameplate(doc: dict[str, Any]) -> None:
    shells = {s["id"]: s for s in doc["assetAdministrationShells"]}
    assert set(shells) == {PRESS, OVEN}
    info = shells[PRESS]["assetInformation"]
    assert info == {"assetKind": "Instance", "globalAssetId": "urn:example:asset:press-01"}
    referenced = {ref["keys"][0]["value"] for ref in shells[PRESS]["submodels"]}
    assert referenced == {f"{PRESS}/sm/Nameplate", f"{PRESS}/sm/OperationalData"}

    plate = _submodel(doc, f"{PRESS}/sm/Nameplate")
    assert plate["idShort"] == "Nameplate"
    assert plate["semanticId"]["keys"] == [{"type": "GlobalReference", "value": SUBMODEL_SEMANTIC_ID}]
    by_id = {e["idShort"]: e for e in plate["submodelElements"]}
    assert list(by_id) == [
        "URIOfTheProduct",
        "ManufacturerName",
        "ManufacturerProductDesignation",
        "AddressInformation",
        "ManufacturerProductFamily",
        "OrderCodeOfManufacturer",
        "SerialNumber",
        "YearOfConstruction",
        "HardwareVersion",
        "SoftwareVersion",
    ]
    assert by_id["ManufacturerName"]["modelType"] == "MultiLanguageProperty"
    assert by_id["ManufacturerName"]["value"] == [{"language": "ko-KR", "text": "한국정밀기계"}]
    assert by_id["ManufacturerName"]["semanticId"]["keys"][0]["value"] == "0112/2///61987#ABA565#009"
    assert by_id["URIOfTheProduct"]["valueType"] == "xs:anyURI"
    assert by_id["OrderCodeOfManufacturer"]["value"] == "SP-300-KR"
    address = {e["idShort"]: e for e in by_id["AddressInformation"]["value"]}
    assert list(address) == ["Street", "Zipcode", "CityTown", "NationalCode"]
    assert address["NationalCode"]["value"] == [{"language": "ko-KR", "text": "KR"}]

    oven_plate = _submodel(doc, f"{OVEN}/sm/Nameplate")
    assert [e["idShort"] for e in oven_plate["submodelElements"]] == [
        "URIOfTheProduct",
        "ManufacturerName",
        "ManufacturerProductDesignation",
        "AddressInformation",
        "OrderCodeOfManufacturer",
    ]


def test_operational_structure(doc: dict[str, Any]) -> None:
    op = _submodel(doc, _op())
    assert op["idShort"] == "OperationalData"
    speed = _at(doc, op["id"], "Spindle.Speed")
    assert speed["semanticId"] == {
        "type": "ExternalReference",
        "keys": [{"type": "GlobalReference", "value": SPEED_SEMANTIC_ID}],
    }
    assert speed["description"] == [{"language": "ko-KR", "text": "스핀들 속도"}]
    assert _at(doc, op["id"], "Spindle.Motor")["modelType"] == "SubmodelElementCollection"

    positions = _at(doc, op["id"], "Axis.Positions")
    assert positions["modelType"] == "SubmodelElementList"
    assert positions["typeValueListElement"] == "Property"
    assert positions["valueTypeListElement"] == "xs:double"
    assert positions["orderRelevant"] is True
    assert all("idShort" not in child for child in positions["value"])
    assert _at(doc, op["id"], "Messages")["typeValueListElement"] == "MultiLanguageProperty"


def test_unit_is_readable_from_export(doc: dict[str, Any]) -> None:
    for path, unit, data_type in (
        ("Spindle.Speed", "1/min", "REAL_MEASURE"),
        ("Axis.Positions", "mm", "REAL_MEASURE"),
        ("Counts.Int", "pcs", "INTEGER_MEASURE"),
    ):
        (spec,) = _at(doc, _op(), path)["embeddedDataSpecifications"]
        assert spec["dataSpecification"]["keys"][0]["value"] == IEC61360_TEMPLATE
        content = spec["dataSpecificationContent"]
        assert content["modelType"] == "DataSpecificationIec61360"
        assert content["unit"] == unit
        assert content["dataType"] == data_type
    assert "embeddedDataSpecifications" not in _at(doc, _op(), "Operator")


# --- lexical values ----------------------------------------------------------------------------


def test_lexical_values(doc: dict[str, Any]) -> None:
    assert _value(doc, "Spindle.Speed") == "NaN"
    assert _value(doc, "Temperature", OVEN) == "INF"
    assert [c["value"] for c in _value(doc, "Axis.Positions")] == ["1.5", "INF", "-INF", "NaN"]
    level = _at(doc, _op(), "State.Level")
    assert (level["value"], level["valueType"]) == ("255", "xs:unsignedByte")
    mode = _at(doc, _op(), "State.Mode")
    assert (mode["value"], mode["valueType"]) == ("-128", "xs:byte")
    assert _value(doc, "Counts.ULong") == "18446744073709551615"
    assert _value(doc, "Counts.Long") == "-9223372036854775808"
    assert _value(doc, "State.Running") == "true"
    assert _value(doc, "Operator") == ""
    assert _value(doc, "Recipe") == "프레스 레시피 A-7"
    assert _value(doc, "Payload") == "AP9lZGdl"
    assert _value(doc, "LastChange") == "2024-05-01T12:30:45.123456+00:00"
    assert _value(doc, "ServerTime") == "2024-05-01T12:30:00+00:00"  # KST normalised to UTC
    assert _value(doc, "Status") == "2147483648"
    assert _value(doc, "Message") == [{"language": "ko", "text": "정상 가동"}]
    assert [c["value"] for c in _value(doc, "Messages")] == [
        [{"language": "en", "text": "door open"}],
        [{"language": "und", "text": "invariant"}],
    ]
    assert "value" not in _at(doc, _op(), "Alarms")
    assert _value(doc, "Spindle.Motor.Temperature") == "21.5"
    assert [c["value"] for c in _value(doc, "Zones.Setpoints", OVEN)] == ["180.0", "0.1"]


def test_dumps_json_matches_file(env: ShellEnvironment, exported: dict[str, Path]) -> None:
    snapshot = dumps_json(env)
    assert json.loads(snapshot) == json.loads(exported["json"].read_bytes())
    assert "프레스".encode() in snapshot


# --- validation of the exports -----------------------------------------------------------------


def test_json_passes_aas_core_verification(doc: dict[str, Any]) -> None:
    environment = aas_jsonization.environment_from_jsonable(doc)
    errors = [f"{e.path}: {e.cause}" for e in aas_verification.verify(environment)]
    assert errors == []


@pytest.mark.parametrize("schema_file", ["aas-3.1.json", "aas-3.0.json"])
def test_json_matches_official_schema(doc: dict[str, Any], schema_file: str) -> None:
    validator = jsonschema.Draft201909Validator(_schema(schema_file))
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(doc)]
    assert errors == []


def test_xml_matches_xsd(exported: dict[str, Path]) -> None:
    xsd = SCHEMAS / "AAS-3.1.xsd"
    if not xsd.is_file():
        unavailable(f"{xsd} not found: the official AAS schemas live in shared/reference/schemas beside the repo")
    schema = etree.XMLSchema(etree.parse(str(xsd)))
    document = etree.parse(str(exported["xml"]))
    assert schema.validate(document), str(schema.error_log)


def _check_round_trip(store: model.DictIdentifiableStore[model.Identifiable]) -> None:
    assert {PRESS, OVEN} <= {obj.id for obj in store}
    operational = store.get_item(f"{PRESS}/sm/OperationalData")
    assert isinstance(operational, model.Submodel)
    spindle = operational.get_referable("Spindle")
    assert isinstance(spindle, model.SubmodelElementCollection)
    speed = spindle.get_referable("Speed")
    assert isinstance(speed, model.Property) and math.isnan(speed.value)
    counts = operational.get_referable("Counts")
    assert isinstance(counts, model.SubmodelElementCollection)
    ulong = counts.get_referable("ULong")
    assert isinstance(ulong, model.Property) and ulong.value == U64_MAX
    recipe = operational.get_referable("Recipe")
    assert isinstance(recipe, model.Property) and recipe.value == "프레스 레시피 A-7"
    message = operational.get_referable("Message")
    assert isinstance(message, model.MultiLanguageProperty) and dict(message.value or {}) == {"ko": "정상 가동"}
    oven = store.get_item(f"{OVEN}/sm/OperationalData")
    assert isinstance(oven, model.Submodel)
    temperature = oven.get_referable("Temperature")
    assert isinstance(temperature, model.Property) and temperature.value == math.inf


def test_json_and_xml_read_back_with_basyx(exported: dict[str, Path]) -> None:
    _check_round_trip(aas_json.read_aas_json_file(exported["json"], failsafe=False))
    _check_round_trip(aas_xml.read_aas_xml_file(exported["xml"], failsafe=False))


def test_aasx_reads_back(exported: dict[str, Path]) -> None:
    store: model.DictIdentifiableStore[model.Identifiable] = model.DictIdentifiableStore()
    with aasx.AASXReader(exported["aasx"], failsafe=False) as reader:
        ids = reader.read_into(store, aasx.DictSupplementaryFileContainer())  # type: ignore[no-untyped-call]
        properties = reader.get_core_properties()
    assert ids == {
        PRESS,
        OVEN,
        f"{PRESS}/sm/Nameplate",
        f"{PRESS}/sm/OperationalData",
        f"{OVEN}/sm/Nameplate",
        f"{OVEN}/sm/OperationalData",
    }
    assert properties.creator == "edge-agent" and properties.created is not None
    _check_round_trip(store)


# --- bad specs ---------------------------------------------------------------------------------


def _build_one(*elements: Element, id_short: str = "Machine01") -> ShellEnvironment:
    return build_environment([_shell("urn:example:aas:bad", id_short, elements)])


@pytest.mark.parametrize(
    ("path", "segment"),
    [
        ("Spindle.Max-Speed", "Max-Speed"),
        ("Spindle.X", "X"),
        ("1Speed", "1Speed"),
        ("Spindle..Speed", ""),
        ("Speed rpm", "Speed rpm"),
    ],
)
def test_invalid_id_short_is_rejected(path: str, segment: str) -> None:
    with pytest.raises(ModelBuildError) as info:
        _build_one(Element("Fine", "Double"), Element(path, "Double"))
    message = str(info.value)
    assert "urn:example:aas:bad" in message
    assert repr(path) in message and repr(segment) in message
    assert "letter first" in message and "'_'" in message


def test_invalid_shell_id_short_is_rejected() -> None:
    with pytest.raises(ModelBuildError, match=r"shell 'urn:example:aas:bad'.*idShort 'press-1'"):
        _build_one(Element("Speed", "Double"), id_short="press-1")


def test_unknown_opcua_type_is_rejected() -> None:
    with pytest.raises(ModelBuildError) as info:
        _build_one(Element("Spindle.Speed", "Int"))
    message = str(info.value)
    assert "urn:example:aas:bad" in message and "'Spindle.Speed'" in message
    assert "'Int'" in message and "Int32" in message
    assert isinstance(info.value.__cause__, UnknownTypeError)


def test_duplicate_path_is_rejected() -> None:
    with pytest.raises(ModelBuildError, match=r"shell 'urn:example:aas:bad', element 'Ax\.By': path declared twice"):
        _build_one(Element("Ax.By", "Double"), Element("Ax.By", "Int32"))


@pytest.mark.parametrize(
    "elements",
    [
        (Element("Spindle", "Double"), Element("Spindle.Speed", "Double")),
        (Element("Spindle.Speed", "Double"), Element("Spindle", "Double")),
        (Element("Axis", "Double", is_array=True), Element("Axis.Xpos", "Double")),
    ],
)
def test_leaf_collection_clash_is_rejected(elements: tuple[Element, ...]) -> None:
    with pytest.raises(ModelBuildError) as info:
        _build_one(*elements)
    message = str(info.value)
    assert "urn:example:aas:bad" in message
    assert "value element and also a collection" in message


def test_duplicate_shell_id_is_rejected() -> None:
    shell = _shell("urn:example:aas:twin", "Twin01", (Element("Speed", "Double"),))
    with pytest.raises(ModelBuildError, match="already used by an earlier shell"):
        build_environment([shell, shell])


def test_empty_nameplate_text_is_rejected() -> None:
    shell = Shell(
        id="urn:example:aas:bad",
        id_short="Machine01",
        asset_id="urn:example:asset:bad",
        nameplate=Nameplate("", "Press", "https://x.example/p", "P-1"),
        elements=(),
    )
    with pytest.raises(ModelBuildError, match=r"shell 'urn:example:aas:bad': nameplate manufacturer_name"):
        build_environment([shell])


# --- live values -------------------------------------------------------------------------------


def test_update_touches_no_sdk_object_until_apply() -> None:
    environment = _build_one(Element("Speed", "Double"))
    live = LiveValues()
    live.update("urn:example:aas:bad", "Speed", 12.5)
    speed = environment.element("urn:example:aas:bad", "Speed")
    assert isinstance(speed, model.Property) and speed.value is None
    assert live.apply(environment) == []
    assert speed.value == 12.5
    assert live.apply(environment) == []  # nothing pending: nothing rewritten


def test_bad_values_are_reported_not_raised() -> None:
    shell_id = "urn:example:aas:bad"
    environment = _build_one(
        Element("Level", "Byte"),
        Element("Speed", "Double"),
        Element("Count", "Int32"),
        Element("Stamp", "DateTime"),
        Element("Ratio", "Float"),
        Element("Name", "String"),
        Element("Text", "LocalizedText"),
        Element("Values", "Int16", is_array=True),
        Element("Good", "UInt64"),
    )
    live = LiveValues()
    for path, value in {"Level": 7, "Speed": 1.0, "Name": "ok", "Values": [1, 2]}.items():
        live.update(shell_id, path, value)
    assert live.apply(environment) == []

    bad: dict[str, object] = {
        "Level": 300,
        "Speed": "fast",
        "Count": True,
        "Stamp": datetime(2024, 1, 1),
        "Ratio": 1e39,
        "Name": "bell\x07",
        "Text": {"language": "not a tag", "text": "x"},
        "Values": [1, 70000],
        "Unknown": 1,
    }
    for path, value in bad.items():
        live.update(shell_id, path, value)
    live.update(shell_id, "Good", U64_MAX)
    problems = live.apply(environment)

    assert live.problems == problems
    assert all(isinstance(p, ValueProblem) for p in problems)
    by_path = {p.path: p for p in problems}
    assert set(by_path) == set(bad)
    assert by_path["Level"].expected == "xs:unsignedByte" and by_path["Level"].value == "300"
    assert by_path["Speed"].expected == "xs:double"
    assert by_path["Values"].expected == "list of xs:short" and "item 1" in by_path["Values"].reason
    assert "naive" in by_path["Stamp"].reason
    assert "Unknown" in by_path["Unknown"].reason
    text = str(by_path["Level"])
    assert shell_id in text and "'Level'" in text and "300" in text and "xs:unsignedByte" in text

    def value_of(path: str) -> object:
        element = environment.element(shell_id, path)
        assert isinstance(element, model.Property)
        return element.value

    assert value_of("Level") == 7  # the previous good value stays
    assert value_of("Speed") == 1.0
    assert value_of("Name") == "ok"
    values = environment.element(shell_id, "Values")
    assert isinstance(values, model.SubmodelElementList)
    assert [child.value for child in values.value if isinstance(child, model.Property)] == [1, 2]
    assert value_of("Good") == U64_MAX  # the bad values did not block the good one


def test_none_clears_values() -> None:
    shell_id = "urn:example:aas:bad"
    environment = _build_one(
        Element("Speed", "Double"), Element("Text", "LocalizedText"), Element("Arr", "Int32", is_array=True)
    )
    live = LiveValues()
    live.update(shell_id, "Speed", 3)
    live.update(shell_id, "Text", {"language": "en_US", "text": "hi"})
    live.update(shell_id, "Arr", (1, 2, 3))
    assert live.apply(environment) == []
    speed = environment.element(shell_id, "Speed")
    assert isinstance(speed, model.Property) and speed.value == 3.0 and type(speed.value) is float
    text = environment.element(shell_id, "Text")
    assert isinstance(text, model.MultiLanguageProperty) and dict(text.value or {}) == {"en-US": "hi"}
    for path in ("Speed", "Text", "Arr"):
        live.update(shell_id, path, None)
    live.update(shell_id, "Text", {"language": "en", "text": ""})
    assert live.apply(environment) == []
    arr = environment.element(shell_id, "Arr")
    assert text.value is None
    assert isinstance(arr, model.SubmodelElementList) and len(arr.value) == 0
    assert speed.value is None


# --- memory: lazy asset interfaces, shared references (aas_models/lazy.py, _common.py) ---------------------


def _environments(config: Path) -> tuple[ShellEnvironment, ShellEnvironment]:
    """The shipped config's environment as the agent builds it (lazy) and with every submodel held (eager)."""
    from agent.config import load
    from agent.shells import shell_specs, site_spec

    cfg = load(config)
    specs = shell_specs(cfg)

    def build(lazy: bool) -> ShellEnvironment:
        site = site_spec(cfg)
        return build_environment(specs, language=cfg.site.language, site=site, concept_descriptions=True, lazy=lazy)

    return build(True), build(False)


def _normalised(document: bytes) -> dict[str, Any]:
    """An environment's JSON, the shells' submodel references (a set in the SDK) sorted."""
    loaded: dict[str, Any] = json.loads(document)
    for shell in loaded.get("assetAdministrationShells", []):
        shell["submodels"].sort(key=lambda r: r["keys"][0]["value"])
    return loaded


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_the_lazy_environment_serializes_as_the_eager_one(config: Path) -> None:
    lazy, eager = _environments(config)
    assert len(lazy.shells) > 1  # several machines
    held = [type(e).__name__ for e in lazy.store.entries()]
    assert held.count("LazySubmodel") == 2 * len(lazy.shells)  # each machine's AID and AIMC: not held as objects
    assert "LazySubmodel" not in [type(e).__name__ for e in eager.store.entries()]
    assert [o.id for o in lazy.store] == [o.id for o in eager.store]  # the same objects, in the same order
    assert _normalised(dumps_json(lazy)) == _normalised(dumps_json(eager))
    # the JSON the API serves a lazy submodel from is the serializer's JSON of the built one
    for entry in lazy.store.entries():
        if isinstance(entry, LazySubmodel):
            built = eager.store.get_item(entry.id)
            assert isinstance(built, model.Submodel)
            assert (entry.id_short, entry.semantic_id) == (built.id_short, built.semantic_id)
            assert entry.doc() == json.loads(json.dumps(built, cls=aas_json.AASToJsonEncoder))


def test_a_lazy_submodel_is_built_when_asked_for_and_kept_only_within_kept() -> None:
    lazy, _ = _environments(CONFIGS[0])
    shell = lazy.shells[0]
    aid_id = f"{shell.id}/sm/AssetInterfacesDescription"
    entry = lazy.store.entry(aid_id)
    assert isinstance(entry, LazySubmodel) and aid_id in set(lazy.store.ids())
    first, second = lazy.store.get_item(aid_id), lazy.store.get_item(aid_id)
    assert isinstance(first, model.Submodel) and first is not second  # built, not held
    assert not lazy.store.__contains__(first)  # not the store's own object
    with lazy.store.kept():
        kept = lazy.store.get_item(aid_id)
        assert isinstance(kept, model.Submodel) and kept is lazy.store.get_item(aid_id) and kept in lazy.store
        interface = kept.get_referable("InterfaceOPCUA")
        aimc = lazy.store.get_item(f"{shell.id}/sm/AssetInterfacesMappingConfiguration")
        assert isinstance(aimc, model.Submodel)
        configurations = aimc.get_referable("MappingConfigurations")
        assert isinstance(configurations, model.SubmodelElementList)
        reference = configurations.value[0].get_referable("InterfaceReference")
        assert isinstance(reference, model.ReferenceElement) and isinstance(reference.value, model.ModelReference)
        assert reference.value.resolve(lazy.store) is interface
    assert lazy.store.get_item(aid_id) is not kept
    with pytest.raises(KeyError):
        lazy.store.add_lazy(entry)  # one id, one entry
    with pytest.raises(KeyError):
        lazy.store.add(first)


def test_a_bad_interface_is_refused_when_the_model_is_built_not_when_it_is_read() -> None:
    from dataclasses import replace

    from aas_models.spec import Interface

    read = tuple(replace(e, node=f"ns=2;s={e.path}") for e in OVEN_ELEMENTS)
    bad = replace(_shells()[1], elements=read, interface=Interface(title="line1", base="http://not-opc"))
    with pytest.raises(ModelBuildError, match=r"opc\.tcp"):
        build_environment([bad])
    good = replace(bad, interface=Interface(title="line1", base="opc.tcp://10.0.0.5:4840"))
    assert _normalised(dumps_json(build_environment([good]))) == _normalised(
        dumps_json(build_environment([good], lazy=False))
    )


def test_equal_references_are_one_immutable_object() -> None:
    assert external_reference("urn:x:a") is external_reference("urn:x:a")
    reference = external_reference("urn:x:a")
    with pytest.raises(AttributeError):
        reference.key = ()
    with pytest.raises(AttributeError):
        reference.key[0].value = "urn:x:b"
    lazy, _ = _environments(CONFIGS[0])
    with lazy.store.kept():
        aid = lazy.store.get_item(f"{lazy.shells[0].id}/sm/AssetInterfacesDescription")
        assert isinstance(aid, model.Submodel)
        properties = aid.get_referable(["InterfaceOPCUA", "InteractionMetadata", "properties"])
        assert isinstance(properties, model.SubmodelElementCollection)
        semantic_ids = {id(p.semantic_id) for p in properties.value}
        assert len(properties.value) > 1 and len(semantic_ids) == 1  # shared, not one per point
