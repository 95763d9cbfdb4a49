"""Exports every tool reads: each shipped config x metamodel 3.0 and 3.1 x JSON, XML and AASX.

Each file is checked by (a) aas-core3 verification for its version, (b) the official JSON schema or XSD for
its version (the published ones, read from shared/reference/schemas beside the repo) and (c) for 3.0,
the IDTA test engines, whose
result object is read (an exit status once said 0 on a failure). Then the command line: the format
follows the -o extension, and mistakes are one-line errors with exit status 2.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from xml.etree import ElementTree

import aas_core3.jsonization as core30_json
import aas_core3.verification as core30_verification
import aas_core3.xmlization as core30_xml
import aas_core3_1.jsonization as core31_json
import aas_core3_1.verification as core31_verification
import aas_core3_1.xmlization as core31_xml
import jsonschema_rs
import pytest
import yaml
from aas_test_engines import file as test_engines
from aas_test_engines.result import AasTestResult, Level
from basyx.aas import model
from lxml import etree  # type: ignore[import-untyped]

from aas_models.build import ShellEnvironment
from aas_models.export import FORMATS, METAMODELS, ExportError, format_for, write_environment
from aas_models.interfaces import AID_SUBMODEL, AIMC_SUBMODEL
from agent.config import load
from agent.shells import build_shells
from tests.helpers import ROOT, unavailable

SCHEMAS = Path(__file__).resolve().parents[1].parent / "shared/reference/schemas"  # not copied: see aas-notes.md
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
VERSIONS = METAMODELS
NAMESPACE = {"3.0": "https://admin-shell.io/aas/3/0", "3.1": "https://admin-shell.io/aas/3/1"}
CORE: dict[str, tuple[ModuleType, ModuleType, ModuleType]] = {
    "3.0": (core30_json, core30_xml, core30_verification),
    "3.1": (core31_json, core31_xml, core31_verification),
}
CASES = [(config.stem, version, fmt) for config in CONFIGS for version in VERSIONS for fmt in FORMATS]
XS = "{http://www.w3.org/2001/XMLSchema}"
REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
AAS_SPEC = "http://admin-shell.io/aasx/relationships/aas-spec"


def _case_id(case: tuple[str, str, str]) -> str:
    return "-".join(case)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], Path]:
    """Every config x version x format, written once for the whole module."""
    assert CONFIGS, "no configs/*.yaml"
    out = tmp_path_factory.mktemp("exports")
    files: dict[tuple[str, str, str], Path] = {}
    for config in CONFIGS:
        env = build_shells(load(config))
        for version in VERSIONS:
            for fmt in FORMATS:
                path = out / f"{config.stem}-{version}.{fmt}"
                files[(config.stem, version, fmt)] = write_environment(env, fmt, path, metamodel=version)
    return files


def _need(name: str) -> Path:
    file = SCHEMAS / name
    if not file.is_file():
        unavailable(f"{file} not found: the official AAS schemas live in shared/reference/schemas beside the repo")
    return file


@pytest.fixture(scope="module")
def json_schemas() -> dict[str, Any]:
    return official_json_schemas()


@pytest.fixture(scope="module")
def xsds() -> dict[str, Any]:
    return official_xsds()


# The schemas' XML-character pattern spells characters above U+FFFF as UTF-16 surrogate pairs (for
# JavaScript's regex engine). jsonschema-rs matches code points, as Python does, and refuses surrogates in
# a pattern; the same set written as code point ranges is what the pattern means. (jsonschema-rs: the pure
# Python validator took ~55 s per 400 kB environment, this one 25 ms.)
XML_CHARS = "^[\\t\\n\\r\\x{20}-\\x{D7FF}\\x{E000}-\\x{FFFD}\\x{10000}-\\x{10FFFF}]*$"


def _code_points(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            k: XML_CHARS if k == "pattern" and isinstance(v, str) and "\\ud800" in v else _code_points(v)
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_code_points(x) for x in schema]
    return schema


def official_json_schemas() -> dict[str, Any]:
    """The official JSON schema of each version, as jsonschema-rs validators (skips, or fails under CI, where
    they are absent)."""
    for v in VERSIONS:
        _need(f"aas-{v}.json")
    return {
        v: jsonschema_rs.Draft201909Validator(_code_points(json.loads((SCHEMAS / f"aas-{v}.json").read_bytes())))
        for v in VERSIONS
    }


def test_the_rewritten_character_pattern_means_what_the_official_one_does() -> None:
    """Every pattern the rewrite replaced, against Python's own reading of the original (surrogate pairs are
    how UTF-16 spells U+10000..U+10FFFF): the same verdict on the XML-character boundaries."""
    import re

    file = _need("aas-3.0.json")
    original = next(v for v in re.findall(r'"pattern": "([^"]*)"', file.read_text(encoding="utf-8")) if "\\ud800" in v)
    js_semantics = re.compile(json.loads(f'"{original}"'))  # matched against UTF-16 code units, as in JavaScript
    rewritten = jsonschema_rs.Draft201909Validator({"type": "string", "pattern": XML_CHARS})
    verdicts = []
    for text in ("plain", "\t\n\r", "한국어", "\ud7ff\ue000\ufffd", "𝄞", "\U0010ffff", "a\x01", "\x7f", "\ufffe", ""):
        utf16 = text.encode("utf-16-le")
        units = "".join(chr(int.from_bytes(utf16[i : i + 2], "little")) for i in range(0, len(utf16), 2))
        expected = js_semantics.fullmatch(units) is not None
        verdicts.append(expected)
        assert rewritten.is_valid(text) == expected, repr(text)
    assert verdicts.count(False) == 2  # a\x01 and U+FFFE: the test tells the two apart


def official_xsds() -> dict[str, Any]:
    """The official XSD of each version, as lxml schemas."""
    schemas: dict[str, Any] = {}
    for version in VERSIONS:
        tree = etree.parse(str(_need(f"AAS-{version}.xsd")))
        root = tree.getroot()
        if root.find(f"{XS}element[@name='environment']") is None:
            # AAS-3.0.xsd (v3.0.6) declares no global root element (aas-specs-metamodel#457); 3.1's has this one.
            assert version == "3.0", f"AAS-{version}.xsd lost its environment element"
            etree.SubElement(root, f"{XS}element", name="environment", type="environment_t")
        schemas[version] = etree.XMLSchema(tree)
    return schemas


def _spec_parts(package: zipfile.ZipFile) -> list[str]:
    """The aas-spec parts the package's relationships name (root -> aasx-origin -> aas-spec)."""
    root = ElementTree.fromstring(package.read("_rels/.rels"))
    origins = [
        r.get("Target", "").lstrip("/")
        for r in root.iter(f"{REL}Relationship")
        if r.get("Type", "").endswith("/aasx-origin")
    ]
    assert len(origins) == 1, origins
    directory, name = origins[0].rsplit("/", 1)
    rels = ElementTree.fromstring(package.read(f"{directory}/_rels/{name}.rels"))
    return [r.get("Target", "").lstrip("/") for r in rels.iter(f"{REL}Relationship") if r.get("Type") == AAS_SPEC]


def _xml(path: Path, fmt: str) -> bytes:
    """The XML document of an .xml export, or the one aas-spec part of an .aasx."""
    if fmt == "xml":
        return path.read_bytes()
    with zipfile.ZipFile(path) as package:
        parts = _spec_parts(package)
        assert len(parts) == 1 and parts[0].endswith(".xml"), parts
        return package.read(parts[0])


# --- (a) aas-core3 verification --------------------------------------------------------------------


def assert_core_verifies(path: Path, version: str, fmt: str) -> Any:
    """(a) on one file: aas-core3 of `version` reads it and its verification finds nothing; the environment."""
    jsonization, xmlization, verification = CORE[version]
    if fmt == "json":
        environment = jsonization.environment_from_jsonable(json.loads(path.read_bytes()))
    else:  # the reader refuses any namespace but its version's
        environment = xmlization.environment_from_str(_xml(path, fmt).decode())
    assert [f"{e.path}: {e.cause}" for e in verification.verify(environment)] == []
    return environment


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_aas_core_verification_finds_nothing(
    exports: dict[tuple[str, str, str], Path], case: tuple[str, str, str]
) -> None:
    _, version, fmt = case
    environment = assert_core_verifies(exports[case], version, fmt)
    assert len(environment.asset_administration_shells) == len(load(ROOT / "configs" / f"{case[0]}.yaml").equipment)
    # What is verified includes each machine's Asset Interfaces Description and Mapping Configuration.
    semantic_ids = {s.id: s.semantic_id.keys[0].value for s in environment.submodels if s.semantic_id}
    for shell in environment.asset_administration_shells:
        referred = {semantic_ids.get(r.keys[0].value) for r in shell.submodels or []}
        assert {AID_SUBMODEL, AIMC_SUBMODEL} <= referred, shell.id


# --- (b) the official JSON schema / XSD --------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_official_schema(
    exports: dict[tuple[str, str, str], Path],
    json_schemas: dict[str, Any],
    xsds: dict[str, Any],
    case: tuple[str, str, str],
) -> None:
    _, version, fmt = case
    assert_matches_schema(exports[case], version, fmt, json_schemas, xsds)


def assert_matches_schema(
    path: Path, version: str, fmt: str, json_schemas: dict[str, Any], xsds: dict[str, Any]
) -> None:
    """(b) on one file: the official JSON schema or XSD of `version` accepts it."""
    if fmt == "json":
        document = json.loads(path.read_bytes())
        errors = [f"{list(e.instance_path)}: {e.message[:200]}" for e in json_schemas[version].iter_errors(document)]
        assert errors == []
        return
    tree = etree.fromstring(_xml(path, fmt))
    assert tree.tag == f"{{{NAMESPACE[version]}}}environment"
    assert xsds[version].validate(tree), str(xsds[version].error_log)


# --- (c) the IDTA test engines (3.0) --------------------------------------------------------------------

CHECKS: dict[str, Callable[..., AasTestResult]] = {  # binary files, as their own check_file command opens them
    "json": test_engines.check_json_file,
    "xml": test_engines.check_xml_file,
    "aasx": test_engines.check_aasx_file,
}


def _results(result: AasTestResult, depth: int = 0) -> Iterator[tuple[int, AasTestResult]]:
    yield depth, result
    for sub in result.sub_results:
        yield from _results(sub, depth + 1)


def _report(result: AasTestResult) -> str:
    return "\n".join(f"{'  ' * d}{r.level.name} {r.message}" for d, r in _results(result))


@pytest.mark.parametrize("config", [c.stem for c in CONFIGS])
@pytest.mark.parametrize("fmt", FORMATS)
def test_idta_test_engines_accept_the_30_exports(
    exports: dict[tuple[str, str, str], Path], config: str, fmt: str
) -> None:
    assert_test_engines_accept(exports[(config, "3.0", fmt)], fmt)


def assert_test_engines_accept(path: Path, fmt: str) -> None:
    """(c) on one 3.0 file: the IDTA test engines' check finds nothing, not even a warning."""
    with path.open("rb") as f:
        result = CHECKS[fmt](f)
    assert result.ok(), _report(result)
    # ok() lets warnings through; "No aas spec found" is one, and would mean nothing was checked.
    assert [r.message for _, r in _results(result) if r.level != Level.INFO] == [], _report(result)
    if fmt == "aasx":
        assert any(r.message == "Checking aasx/data.xml" for _, r in _results(result)), _report(result)


def test_idta_test_engines_refuse_31_xml_which_is_why_30_is_the_default(
    exports: dict[tuple[str, str, str], Path],
) -> None:
    with exports[(CONFIGS[0].stem, "3.1", "aasx")].open("rb") as f:
        result = CHECKS["aasx"](f)
    assert not result.ok()
    refusals = [r.message for _, r in _results(result) if "invalid namespace" in r.message]
    assert any("aas/3/1" in message for message in refusals), _report(result)


# --- the two versions carry the same content, in the same package -----------------------------------


@pytest.mark.parametrize("config", [c.stem for c in CONFIGS])
def test_30_and_31_carry_the_same_environment(exports: dict[tuple[str, str, str], Path], config: str) -> None:
    """For what the shipped configs emit, 3.0 JSON is the 3.1 JSON (no rewrite was needed) and AASX holds the XML."""
    as_30, as_31 = (json.loads(exports[(config, version, "json")].read_bytes()) for version in VERSIONS)
    assert as_30 == as_31
    assert _xml(exports[(config, "3.0", "aasx")], "aasx") == exports[(config, "3.0", "xml")].read_bytes()


def _package_layout(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as package:
        types = ElementTree.fromstring(package.read("[Content_Types].xml"))
        rels = {
            name: sorted((r.get("Type"), r.get("Target")) for r in ElementTree.fromstring(package.read(name)))
            for name in package.namelist()
            if name.endswith(".rels")
        }
        core = ElementTree.fromstring(package.read("docProps/core.xml"))
        return {
            "parts": sorted(package.namelist()),
            "content types": sorted((o.get("PartName"), o.get("ContentType")) for o in types),
            "relationships": rels,
            "creator": core.findtext("{http://purl.org/dc/elements/1.1/}creator"),
        }


def test_aasx_packaging_is_the_same_for_both_versions(exports: dict[tuple[str, str, str], Path]) -> None:
    config = CONFIGS[0].stem
    layout_30 = _package_layout(exports[(config, "3.0", "aasx")])
    assert layout_30 == _package_layout(exports[(config, "3.1", "aasx")])
    assert ("/aasx/data.xml", "application/xml") in layout_30["content types"]
    assert layout_30["creator"] == "edge-agent"


# --- what 3.0 cannot carry: handled, or refused in one line -----------------------------------------


def _env() -> ShellEnvironment:
    return build_shells(load(CONFIGS[0]))


def _operational(env: ShellEnvironment) -> model.Submodel:
    submodel = env.store.get_item(env.submodel_id(env.shells[0].id))
    assert isinstance(submodel, model.Submodel)
    return submodel


def _refused(env: ShellEnvironment, tmp_path: Path, *words: str) -> None:
    for fmt in FORMATS:
        with pytest.raises(ExportError) as refused:
            write_environment(env, fmt, tmp_path / f"env.{fmt}", metamodel="3.0")
        assert "\n" not in str(refused.value) and all(w in str(refused.value) for w in words), str(refused.value)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one is left


def test_an_idshort_with_a_hyphen_is_31_only(tmp_path: Path, json_schemas: dict[str, Any]) -> None:
    env = _env()
    _operational(env).submodel_element.add(model.Property("Feed-Rate", model.datatypes.Double, 1.5))
    _refused(env, tmp_path, "Feed-Rate", "3.0")
    out = write_environment(env, "json", tmp_path / "env.json", metamodel="3.1")
    assert list(json_schemas["3.1"].iter_errors(json.loads(out.read_bytes()))) == []


def test_an_identifier_over_2000_characters_is_31_only(tmp_path: Path) -> None:
    env = _env()
    long_iri = "https://example.com/" + "x" * 2010
    reference = model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, long_iri),))
    _operational(env).submodel_element.add(model.Property("Long", model.datatypes.String, "x", semantic_id=reference))
    _refused(env, tmp_path, "2030 characters", "2000")
    write_environment(env, "json", tmp_path / "env.json", metamodel="3.1")


def test_asset_kind_role_is_31_only(tmp_path: Path) -> None:
    env = _env()
    shell = env.store.get_item(env.shells[0].id)
    assert isinstance(shell, model.AssetAdministrationShell)
    shell.asset_information.asset_kind = model.AssetKind.ROLE
    _refused(env, tmp_path, "Role")


def test_an_element_kind_the_30_export_does_not_handle_is_refused(tmp_path: Path) -> None:
    env = _env()
    _operational(env).submodel_element.add(model.Blob("Picture", "image/png", b"\x89PNG"))
    _refused(env, tmp_path, "Blob", "Picture")


def test_a_dangling_submodel_reference_fails_the_export(tmp_path: Path) -> None:
    env = _env()
    env.store.discard(_operational(env))
    _refused(env, tmp_path, "submodel")


def test_an_extlang_language_tag_becomes_its_canonical_form_in_30(
    tmp_path: Path, json_schemas: dict[str, Any], xsds: dict[str, Any]
) -> None:
    """3.0's language pattern refuses 'zh-yue' (one extlang); RFC 5646's canonical form of it is 'yue'."""
    env = _env()
    text = model.MultiLanguageTextType({"zh-yue-HK": "運行中", "en": "running"})
    _operational(env).submodel_element.add(model.MultiLanguageProperty("Message", text))
    for version, expected in zip(VERSIONS, ({"yue-HK", "en"}, {"zh-yue-HK", "en"}), strict=True):
        doc = json.loads(write_environment(env, "json", tmp_path / f"{version}.json", metamodel=version).read_bytes())
        assert list(json_schemas[version].iter_errors(doc)) == []
        message = next(e for e in doc["submodels"][1]["submodelElements"] if e["idShort"] == "Message")
        assert {t["language"] for t in message["value"]} == expected
    xml = write_environment(env, "xml", tmp_path / "3.0.xml", metamodel="3.0")
    assert xsds["3.0"].validate(etree.parse(str(xml))), str(xsds["3.0"].error_log)


@pytest.mark.parametrize(
    ("name", "requested", "expected"),
    [
        ("plant.json", None, "json"),
        ("plant.xml", None, "xml"),
        ("PLANT.AASX", None, "aasx"),
        ("plant.aasx", "aasx", "aasx"),
        ("plant", "xml", "xml"),  # no extension to disagree with
        ("plant.zip", "aasx", "aasx"),
    ],
)
def test_format_for(name: str, requested: str | None, expected: str) -> None:
    assert format_for(name, requested) == expected


# --- the command line --------------------------------------------------------------------------------


def _export(tmp_path: Path, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`edge-agent export` with the demo config, its data_dir (usage log) moved into tmp_path."""
    config = tmp_path / "agent.yaml"
    if not config.exists():
        document = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8"))
        document["agent"]["data_dir"] = str(tmp_path / "data")
        config.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    command = [*prefix, sys.executable, "-m", "agent.cli", "export", "-c", str(config), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def _one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert all(w in done.stderr for w in words), done.stderr


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_takes_the_format_from_the_extension_and_writes_30(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"plant.{fmt}"
    done = _export(tmp_path, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert f"({fmt}, AAS metamodel 3.0)" in done.stdout
    if fmt == "json":
        environment = core30_json.environment_from_jsonable(json.loads(out.read_bytes()))
        assert len(environment.asset_administration_shells or []) == 3
    else:
        assert ElementTree.fromstring(_xml(out, fmt)).tag == f"{{{NAMESPACE['3.0']}}}environment"
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_cli_writes_31_on_request(tmp_path: Path) -> None:
    out = tmp_path / "plant.aasx"
    done = _export(tmp_path, "-o", str(out), "--metamodel", "3.1")
    assert done.returncode == 0, done.stderr
    assert ElementTree.fromstring(_xml(out, "aasx")).tag == f"{{{NAMESPACE['3.1']}}}environment"


def test_cli_refuses_a_format_the_extension_contradicts(tmp_path: Path) -> None:
    _one_line_error(_export(tmp_path, "-o", str(tmp_path / "plant.aasx"), "--format", "json"), "--format json", ".aasx")
    assert not (tmp_path / "plant.aasx").exists()


def test_cli_names_the_allowed_extensions_for_an_unknown_one(tmp_path: Path) -> None:
    _one_line_error(_export(tmp_path, "-o", str(tmp_path / "plant.zip")), ".json", ".xml", ".aasx", "--format")
    done = _export(tmp_path, "-o", str(tmp_path / "plant.zip"), "--format", "aasx")  # said explicitly: fine
    assert done.returncode == 0 and zipfile.is_zipfile(tmp_path / "plant.zip"), done.stderr


def test_cli_missing_directory_is_a_one_line_error(tmp_path: Path) -> None:
    _one_line_error(_export(tmp_path, "-o", str(tmp_path / "nowhere" / "plant.aasx")), "does not exist")


def test_cli_unwritable_directory_is_a_one_line_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root writes anywhere unless it gives up the capability that lets it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            unavailable("running as root and setpriv (util-linux) is missing to drop CAP_DAC_OVERRIDE")
        prefix = (setpriv, "--bounding-set=-dac_override,-dac_read_search", "--")
    try:
        _one_line_error(_export(tmp_path, "-o", str(locked / "plant.json"), prefix=prefix), "Permission denied")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


# --- the lazy asset interfaces (aas_models/lazy.py) export as the held ones ----------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_lazy_and_held_asset_interfaces_give_the_same_files(tmp_path: Path, config: Path) -> None:
    """The agent's environment (AID and AIMC built when read) and one with every submodel held as SDK objects
    give the same file, byte for byte, in every version and format (AASX: the same XML part)."""
    from aas_models.build import build_environment
    from agent.shells import shell_specs, site_spec

    cfg = load(config)
    specs = shell_specs(cfg)
    site = site_spec(cfg)
    built = {
        lazy: build_environment(specs, language=cfg.site.language, site=site, concept_descriptions=True, lazy=lazy)
        for lazy in (True, False)
    }
    # A shell's submodel references are a set, iterated in hash order: the same in both, in one process.
    for version in VERSIONS:
        for fmt in FORMATS:
            files = {
                lazy: write_environment(env, fmt, tmp_path / f"{lazy}-{version}.{fmt}", metamodel=version)
                for lazy, env in built.items()
            }
            if fmt == "aasx":
                parts = []
                for file in files.values():
                    with zipfile.ZipFile(file) as package:
                        parts.append(package.read("aasx/data.xml"))
                assert parts[0] == parts[1], (version, fmt)
            else:
                assert files[True].read_bytes() == files[False].read_bytes(), (version, fmt)
    assert b"AssetInterfacesDescription" in (tmp_path / "True-3.0.json").read_bytes()
