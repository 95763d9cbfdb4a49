"""Mapping tables as CSV (agent/mapping_csv.py, `edge-agent mapping export|import`): export then
import gives the same points; Excel's BOM, `;` separator and Korean text are handled; every bad
cell names the CSV line and column."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent import config as config_mod
from agent import mapping_csv

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))

KOREAN = """\
version: 1
site: {id: plant1}
sources:
  - {id: line1, endpoint: "opc.tcp://127.0.0.1:4840/"}
equipment:
  - id: cnc01
    source: line1
    nameplate:
      {manufacturer_name: 한화정밀, product_designation: 머시닝센터, uri_of_product: "https://e.com/p", order_code: A1}
    analysis: {state: State}
    points:  # the table replaces these
      - node: "ns=2;s=CNC01.SpindleSpeed"
        path: Spindle.Speed
        type: Double
        unit: rpm
        display_name: {ko-KR: 주축 회전수, en: "Spindle speed, main"}
        description: {ko-KR: "주축의 회전 속도 \\"실측\\"", en: Rotational speed}
        sampling_ms: 250
        queue_size: 5
        deadband: {type: percent, value: 2.5}
        trigger: status_value_timestamp
      - browse_path: "0:Objects/2:CNC01/2:Axes"
        path: Axes
        type: Double
        array: true
        mode: poll
        sampling_ms: 1000
        display_name: 축 위치
      - {node: "ns=2;s=CNC01.State", path: State, type: String, semantic_id: "0173-1#02-AAH880#003", array: false}
  - id: prs01
    source: line1
    nameplate: {manufacturer_name: M, product_designation: P, uri_of_product: "https://example.com/q", order_code: B2}
    points:
      - {node: "ns=2;i=1001", path: Tonnage, type: Float, deadband: {type: absolute, value: 0.1}}
sinks:
  - {type: file, path: out.jsonl}
"""


def _round_trip(config_text: str, tmp_path: Path) -> tuple[config_mod.Config, config_mod.Config]:
    before = config_mod.parse(config_text)
    out = tmp_path / "mapping.csv"
    mapping_csv.export_csv(before, out)
    result = mapping_csv.import_csv(config_text, mapping_csv.read_csv_text(out), "config.yaml", str(out))
    return before, config_mod.parse(result.text)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_survives_the_round_trip(path: Path, tmp_path: Path) -> None:
    before, after = _round_trip(path.read_text(encoding="utf-8"), tmp_path)
    assert [e.points for e in after.equipment] == [e.points for e in before.equipment]
    assert after.model_dump(exclude={"equipment"}) == before.model_dump(exclude={"equipment"})


def test_korean_text_maps_deadbands_browse_paths_and_arrays_survive(tmp_path: Path) -> None:
    before, after = _round_trip(KOREAN, tmp_path)
    assert [e.points for e in after.equipment] == [e.points for e in before.equipment]
    assert after.equipment[0].points[0].display_name == {"ko-KR": "주축 회전수", "en": "Spindle speed, main"}
    assert after.equipment[0].points[1].browse_path == "0:Objects/2:CNC01/2:Axes"
    assert after.equipment[0].points[1].array is True
    assert after.equipment[1].points[0].deadband == config_mod.Deadband(type="absolute", value=0.1)
    assert after.equipment[0].nameplate == before.equipment[0].nameplate
    assert after.equipment[0].analysis == before.equipment[0].analysis


def test_the_file_has_a_bom_crlf_and_korean_intact(tmp_path: Path) -> None:
    out = tmp_path / "mapping.csv"
    mapping_csv.export_csv(config_mod.parse(KOREAN), out)
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    assert data.count(b"\r\n") == 5 and data.count(b"\n") == 5  # header and 4 points, CRLF only
    text = data.decode("utf-8-sig")
    header = text.split("\r\n")[0].split(",")
    assert header[:3] == ["equipment", "path", "node"]
    assert "display_name[ko-KR]" in header and "display_name[en]" in header and "display_name" in header
    assert "deadband_type" in header and "deadband_value" in header
    assert "주축 회전수" in text and "축 위치" in text
    assert '"Spindle speed, main"' in text  # csv quoting


def test_semicolon_separated_without_bom_and_with_decimal_commas(tmp_path: Path) -> None:
    table = (
        "equipment;path;node;type;unit;display_name[ko-KR];deadband_type;deadband_value\r\n"
        'prs01;Tonnage;"ns=2;s=PRS01.Tonnage";Double;kN;프레스 톤수;absolute;2,5\r\n'
        'prs01;Strokes;"ns=2;s=PRS01.Strokes";UInt32;;;;\r\n'
        ";;;;;;;\r\n"
    )
    result = mapping_csv.import_csv(KOREAN, table, "config.yaml", "mapping.csv")
    cfg = result.config
    prs = cfg.equipment[1]
    assert [p.path for p in prs.points] == ["Tonnage", "Strokes"]
    assert prs.points[0].deadband == config_mod.Deadband(type="absolute", value=2.5)
    assert prs.points[0].display_name == {"ko-KR": "프레스 톤수"}
    assert cfg.equipment[0].points == config_mod.parse(KOREAN).equipment[0].points  # not named: kept
    assert result.points == {"prs01": 2}
    assert "프레스 톤수" in result.text  # allow_unicode


def test_a_bad_type_cell_names_line_column_and_what_is_allowed() -> None:
    table = (
        "equipment,path,node,type,array,queue_size\n"
        "prs01,Tonnage,ns=2;s=PRS01.Tonnage,Double,,\n"
        "prs01,Strokes,ns=2;s=PRS01.Strokes,Uint32,maybe,0\n"
    )
    with pytest.raises(mapping_csv.MappingError) as e:
        mapping_csv.import_csv(KOREAN, table, "config.yaml", "mapping.csv")
    text = str(e.value)
    assert "mapping.csv:3: column type: unknown OPC UA type 'Uint32' (did you mean 'UInt32'?)" in text
    assert "allowed: Boolean" in text
    assert "mapping.csv:3: column array:" in text and "allowed: true or false" in text
    assert "mapping.csv:3: column queue_size:" in text
    assert len(e.value.problems) == 3, text


def test_missing_address_duplicate_paths_and_a_quoted_multi_line_cell() -> None:
    table = (
        "equipment,path,node,type,description\n"
        'prs01,Tonnage,ns=2;s=PRS01.Tonnage,Double,"two\nlines"\n'
        "prs01,Tonnage,,Double,\n"
    )
    with pytest.raises(mapping_csv.MappingError) as e:
        mapping_csv.import_csv(KOREAN, table, "config.yaml", "mapping.csv")
    text = str(e.value)
    assert "mapping.csv:4: column node/browse_path: give exactly one of 'node'" in text


def test_a_path_mapped_twice_names_its_rows() -> None:
    table = (
        "equipment,path,node,type\n"
        "prs01,Tonnage,ns=2;s=X,Double\nprs01,Strokes,ns=2;s=Y,Double\nprs01,Tonnage,ns=2;s=Z,Double\n"
    )
    with pytest.raises(mapping_csv.MappingError) as e:
        mapping_csv.import_csv(KOREAN, table, "config.yaml", "mapping.csv")
    assert "'Tonnage'" in str(e.value) and "twice" in str(e.value)


def test_an_unknown_equipment_gets_a_did_you_mean() -> None:
    table = "equipment,path,node,type\ncnc1,Speed,ns=2;s=X,Double\n"
    with pytest.raises(mapping_csv.MappingError) as e:
        mapping_csv.import_csv(KOREAN, table, "config.yaml", "mapping.csv")
    assert "mapping.csv:2: column equipment: 'cnc1' is not an equipment of config.yaml (did you mean 'cnc01'?)" in str(
        e.value
    )


def test_an_unknown_column_gets_a_did_you_mean() -> None:
    with pytest.raises(mapping_csv.MappingError) as e:
        mapping_csv.import_csv(KOREAN, "equipment,path,node,type,unti\n", "config.yaml", "mapping.csv")
    assert "mapping.csv:1: column 5 'unti' is not known (did you mean 'unit'?)" in str(e.value)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "mapping", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_the_cli_round_trip_and_a_refused_table(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(KOREAN, encoding="utf-8")
    table, new = tmp_path / "mapping.csv", tmp_path / "new.yaml"
    done = _cli("export", "-c", str(config), "-o", str(table))
    assert done.returncode == 0, done.stderr
    assert "4 points of 2 equipment" in done.stdout
    done = _cli("import", "-c", str(config), "--csv", str(table), "-o", str(new))
    assert done.returncode == 0, done.stderr
    assert "comments of the original config are not carried over" in done.stdout
    assert [e.points for e in config_mod.load(new).equipment] == [e.points for e in config_mod.parse(KOREAN).equipment]

    bad = tmp_path / "bad.csv"
    bad.write_text("equipment;path;node;type\r\ncnc01;Speed;ns=2;s=X;Dubble\r\n", encoding="utf-8-sig")
    new.unlink()
    done = _cli("import", "-c", str(config), "--csv", str(bad), "-o", str(new))
    assert done.returncode == 2
    assert f"{bad}:2: column equipment" not in done.stderr
    assert "cells but the header names 4 columns" in done.stderr  # the unquoted ';' in the node id
    assert not new.exists()
    bad.write_text('equipment;path;node;type\r\ncnc01;Speed;"ns=2;s=X";Dubble\r\n', encoding="utf-8-sig")
    done = _cli("import", "-c", str(config), "--csv", str(bad), "-o", str(new))
    assert done.returncode == 2
    assert f"{bad}:2: column type: unknown OPC UA type 'Dubble' (did you mean 'Double'?)" in done.stderr
    assert "Traceback" not in done.stderr and not new.exists()
