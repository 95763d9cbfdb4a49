"""Config errors point at the right place: every place (file:line, key path), the value, what is allowed."""

from __future__ import annotations

import pytest

from agent.config import ConfigError, parse
from agent.config_errors import key_path
from agent.config_sinks import MqttSinkConfig
from tests.test_config import GOOD

POINT = """\
      - node: ns=2;s=CNC01.Other
        path: {path}
        type: Double
"""
LAST_POINT = "        deadband: {type: percent, value: 2}\n"


def error(text: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse(text, "x.yaml")
    return str(err.value)


def with_point(path: str) -> str:
    """GOOD with a second point (lines 23-25, its path on line 24) in equipment[0]."""
    return GOOD.replace(LAST_POINT, LAST_POINT + POINT.format(path=path))


def test_a_duplicate_equipment_id_names_both_places() -> None:
    equipment = GOOD[GOOD.index("  - id: cnc01") : GOOD.index("sinks:")]
    other = equipment.replace("id: cnc01", "id: cnc02")
    text = GOOD.replace("sinks:", other + equipment + "sinks:")
    assert error(text) == (
        "x.yaml:9: equipment[0].id and x.yaml:37: equipment[2].id: 'cnc01' is used twice; "
        "each equipment needs its own id"
    )


def test_a_path_mapped_twice_names_both_points() -> None:
    assert error(with_point("Spindle.Speed")) == (
        "x.yaml:18: equipment[0].points[0].path and x.yaml:24: equipment[0].points[1].path: "
        "'Spindle.Speed' is used twice; a path is mapped once per equipment"
    )


def test_duplicate_source_and_sink_ids_name_both_places() -> None:
    text = GOOD.replace("equipment:", "  - id: plc1\n    endpoint: opc.tcp://10.0.0.2:4840/\nequipment:")
    assert error(text) == (
        "x.yaml:4: sources[0].id and x.yaml:8: sources[1].id: 'plc1' is used twice; each source needs its own id"
    )
    text = GOOD + "  - type: file\n    id: out\n    path: a.jsonl\n  - type: file\n    id: out\n    path: b.jsonl\n"
    assert error(text) == (
        "x.yaml:27: sinks[1].id and x.yaml:30: sinks[2].id: 'out' is used twice; "
        "each sink needs its own id (a sink without 'id' takes its type as id: give each sink an 'id')"
    )
    # two sinks without an id: the place is the sink's own line
    assert error(GOOD + "  - type: mqtt\n    host: 10.0.0.9\n").startswith(
        "x.yaml:24: sinks[0].id and x.yaml:26: sinks[1].id: 'mqtt' is used twice;"
    )


def test_a_path_that_is_a_value_and_a_collection_is_caught_at_check_time() -> None:
    assert error(with_point("Spindle")) == (
        "x.yaml:18: equipment[0].points[0].path and x.yaml:24: equipment[0].points[1].path: "
        "'Spindle' is both a value and a collection (it holds 'Spindle.Speed'); "
        "a path is either one value or a collection of values: rename one of the two points"
    )


def test_every_duplicate_is_reported_not_only_the_first() -> None:
    text = GOOD.replace("equipment:", "  - id: plc1\n    endpoint: opc.tcp://h:4840/\nequipment:")
    assert error(text + "  - type: mqtt\n    host: 10.0.0.9\n").splitlines() == [
        "x.yaml:4: sources[0].id and x.yaml:8: sources[1].id: 'plc1' is used twice; each source needs its own id",
        "x.yaml:26: sinks[0].id and x.yaml:28: sinks[1].id: 'mqtt' is used twice; "
        "each sink needs its own id (a sink without 'id' takes its type as id: give each sink an 'id')",
    ]


@pytest.mark.parametrize("node", ["ns=2:CNC01.SpindleSpeed", "ns=2;x='x", 'ns=2;i="7"'])
def test_a_malformed_node_id_is_shown_as_written_with_the_forms_allowed(node: str) -> None:
    quoted = "'" + node.replace("'", "''") + "'"  # a YAML single-quoted scalar
    msg = error(GOOD.replace("ns=2;s=CNC01.SpindleSpeed", quoted))
    assert msg == (
        f"x.yaml:17: equipment[0].points[0].node: not a valid OPC UA node id: {node}; a node id looks like "
        "ns=<index>;s=<string>, or i=<number>, g=<guid> or b=<base64> in place of s= "
        "(ns= left out for namespace 0), e.g. ns=2;s=CNC01.SpindleSpeed or ns=3;i=1001"
    )
    assert "\\" not in msg and "Error(" not in msg and "got" not in msg


def test_key_paths_are_written_one_way() -> None:
    assert key_path(("sources", 0, "password")) == "sources[0].password"
    assert key_path(("equipment", 1, "points", 3, "type")) == "equipment[1].points[3].type"
    assert key_path(()) == ""
    msg = error(GOOD.replace("hunter2-secret", "${NOT_SET_ANYWHERE_42}"))
    assert msg == "x.yaml:7: sources[0].password: environment variable NOT_SET_ANYWHERE_42 is used but not set"
    msg = error(GOOD.replace("type: Double", "type: Float64"))
    assert msg.startswith("x.yaml:19: equipment[0].points[0].type: unknown OPC UA type 'Float64'")
    for wrong in ("sources.0", "sources -> 0", "equipment.0", "points.0"):
        assert wrong not in msg


def test_references_point_at_the_key_that_names_them() -> None:
    assert error(GOOD.replace("    source: plc1", "    source: plc2")) == (
        "x.yaml:10: equipment[0].source: source 'plc2' is not defined (did you mean 'plc1'?); defined: plc1"
    )
    text = GOOD.replace("    points:", "    analysis: {state: Spindle.Sped}\n    points:")
    assert error(text) == (
        "x.yaml:16: equipment[0].analysis.state: 'Spindle.Sped' is not the path of one of this "
        "equipment's points (did you mean 'Spindle.Speed'?)"
    )
    text = GOOD + "control:\n  allow:\n    - {machine: cnc1, element: Spindle.Speed}\n"
    assert error(text) == (
        "x.yaml:28: control.allow[0].machine: allow cnc1 Spindle.Speed: no equipment 'cnc1' "
        "(did you mean 'cnc01'?); defined: cnc01"
    )


def test_a_valid_config_is_parsed_once_and_line_numbers_are_worked_out_only_for_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second, pure-Python parse that finds each key's line is paid only when an error is reported."""
    from agent import config_errors

    calls: list[int] = []
    real = config_errors.key_lines
    monkeypatch.setattr(config_errors, "key_lines", lambda text: calls.append(1) or real(text))
    parse(GOOD, "good.yaml")
    assert calls == []
    with pytest.raises(ConfigError) as e:
        parse(GOOD.replace("sampling_ms: 100", "sampling_ms: -5"), "bad.yaml")
    assert calls == [1] and "bad.yaml:21:" in str(e.value) and "sampling_ms" in str(e.value)
    assert config_errors.SafeLoader.__name__ == "CSafeLoader"  # libyaml is there: the fast loader is used


def test_a_wire_version_the_agent_cannot_send_names_the_versions_it_can() -> None:
    def with_version(v: int) -> str:
        return GOOD.replace("    host: 127.0.0.1\n", f"    host: 127.0.0.1\n    wire_version: {v}\n")

    assert error(with_version(4)) == "x.yaml:26: sinks[0].wire_version: Input should be 2 or 3 (got 4)"
    for text, version in ((with_version(3), 3), (GOOD, 2)):
        sink = parse(text).sinks[0]
        assert isinstance(sink, MqttSinkConfig) and sink.wire_version == version
