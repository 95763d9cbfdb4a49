"""Time Series Data 1.1 (aas_models/timeseries.py, docs/aas.md): the records a machine's shell carries.

The figures of each segment are those of its records, values are the exact values the pipeline stored, the
window keeps the newest records, an interruption splits the segments without anything invented between them,
exports with and without records pass aas-core3, the official schemas and the IDTA test engines, and a running
agent serves through its API the values the factory simulator wrote, at the times it wrote them.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aas_models import spec
from aas_models.build import ShellEnvironment, build_environment
from aas_models.export import FORMATS, METAMODELS, write_environment
from aas_models.live import LiveValues
from aas_models.timeseries import (
    MAX_RING_VALUES,
    TimeSeriesRing,
    rings_for,
    time_series_id,
    variables,
)
from adapters.sample import Interruption, Sample
from agent.api.aas import encode_id, to_json
from agent.config import load, parse
from agent.config_sinks import HttpSinkConfig
from agent.pipeline import OVERFLOW, Pipeline, make_binding
from agent.shells import LINKED_QUERY, build_shells, shell_spec, site_spec
from simulators.agentproc import AgentProcess
from simulators.factory import FactoryThread
from simulators.factory.agentconfig import factory_config
from simulators.ports import free_port
from tests.helpers import ROOT, wait_until
from tests.test_api import Http
from tests.test_end_to_end import expected, same
from tests.test_export import (
    assert_core_verifies,
    assert_matches_schema,
    assert_test_engines_accept,
    official_json_schemas,
    official_xsds,
)
from uploader import wire
from uploader.buffer import Buffer

T0 = 1_790_000_000.25  # an epoch second with an exact binary fraction
SHELL_ID = "urn:test:aas:m1"
NAMEPLATE = spec.Nameplate("Test Machines Co.", "Test machine", "https://example.com/m1", "OC-1")
ELEMENTS = (
    spec.Element("Spindle.Speed", "Double", semantic_id="urn:test:concept:speed", unit="rpm"),
    spec.Element("Vibration", "Float"),
    spec.Element("Counter", "Int64"),
    spec.Element("Total", "UInt64"),
    spec.Element("Program", "String"),
    spec.Element("Running", "Boolean"),
    spec.Element("Level", "Byte"),
    spec.Element("Spectrum", "Double", is_array=True),
    spec.Element("Message", "LocalizedText"),
)
RECORDED = ["Spindle_Speed", "Vibration", "Counter", "Total", "Program", "Running", "Level"]


def machine(window: int = 10, elements: Sequence[spec.Element] = ELEMENTS, **more: Any) -> spec.Shell:
    ts = spec.TimeSeries(records=window, sampling_interval_s=0.5, **more)
    return spec.Shell(SHELL_ID, "m1", "urn:test:asset:m1", NAMEPLATE, tuple(elements), time_series=ts)


def environment(shell: spec.Shell) -> tuple[ShellEnvironment, LiveValues, TimeSeriesRing]:
    env = build_environment([shell], language="en")
    live = LiveValues(series=rings_for(env.shells))
    return env, live, live.series[shell.id]


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def served(env: ShellEnvironment, live: LiveValues, shell_id: str = SHELL_ID) -> dict[str, Any]:
    """The Time Series Data submodel as the API serves it, after the rings were written."""
    live.apply_series(env)
    return to_json(env.store.get_item(time_series_id(env.shell(shell_id))))


def child(doc: dict[str, Any], id_short: str) -> dict[str, Any]:
    children = doc.get("submodelElements", doc.get("value"))
    assert isinstance(children, list), doc
    [found] = [c for c in children if c["idShort"] == id_short]
    return found


def segments(submodel: dict[str, Any]) -> list[dict[str, Any]]:
    """Each InternalSegment as {figure: lexical value, "records": [{idShort: lexical value}]}."""
    out: list[dict[str, Any]] = []
    for seg in child(submodel, "Segments")["value"]:
        if not seg["idShort"].startswith("InternalSegment"):
            continue
        figures: dict[str, Any] = {"idShort": seg["idShort"], "records": []}
        for e in seg.get("value", []):
            if e["idShort"] == "Records":
                figures["records"] = [{p["idShort"]: p.get("value") for p in r["value"]} for r in e["value"]]
            elif e["modelType"] == "MultiLanguageProperty":
                figures[e["idShort"]] = e["value"][0]["text"]
            else:
                figures[e["idShort"]] = e.get("value")
        out.append(figures)
    return out


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- the segment's figures and values ------------------------------------------------------------------------


def test_a_segment_tells_the_true_figures_and_the_exact_values_of_its_records() -> None:
    env, live, ring = environment(machine())
    add = ring.values.append
    for path, value in (("Spindle.Speed", math.nan), ("Vibration", math.inf), ("Counter", 2**63 - 1),
                        ("Total", 2**64 - 1), ("Program", ""), ("Running", True)):  # fmt: skip
        add((T0, path, value))
    for path, value in (("Spindle.Speed", -math.inf), ("Counter", -(2**63)), ("Level", 255), ("Vibration", 0.1)):
        add((T0 + 1.000001, path, value))
    ring.touch(T0 + 2)
    doc = served(env, live)
    [seg] = segments(doc)
    first, second = seg["records"]
    assert first == {
        "Time": first["Time"],
        "Spindle_Speed": "NaN",
        "Vibration": "INF",
        "Counter": "9223372036854775807",
        "Total": "18446744073709551615",
        "Program": "",
        "Running": "true",
    }
    assert second == {"Time": second["Time"], "Spindle_Speed": "-INF", "Vibration": "0.1", "Counter":
                      "-9223372036854775808", "Level": "255"}  # fmt: skip
    assert moment(first["Time"]) == at(0) and moment(second["Time"]) == at(1.000001)
    assert seg["RecordCount"] == "2"
    assert (seg["StartTime"], seg["EndTime"]) == (first["Time"], second["Time"])
    assert seg["State"] == "in progress" and moment(seg["LastUpdate"]) == at(2)
    assert seg["SamplingInterval"] == "500"  # ms, the unit is on the element

    record = child(child(doc, "Metadata"), "Record")
    assert [p["idShort"] for p in record["value"]] == ["Time", *RECORDED], "no array, no LocalizedText"
    kinds = {p["idShort"]: (p["valueType"], p.get("semanticId", {}).get("keys", [{}])[0].get("value"))
             for p in record["value"]}  # fmt: skip
    assert kinds["Time"] == ("xs:dateTime", "https://admin-shell.io/idta/TimeSeries/UtcTime/1/1")
    assert kinds["Spindle_Speed"] == ("xs:double", "urn:test:concept:speed")
    assert kinds["Total"] == ("xs:unsignedLong", None) and kinds["Level"] == ("xs:unsignedByte", None)


def test_values_that_do_not_fit_and_bad_samples_are_not_records() -> None:
    env, live, ring = environment(machine())
    add = ring.values.append
    add((T0, "Level", 256))  # over xs:unsignedByte: refused, as the live model refuses it
    add((T0, "Counter", None))  # a Bad sample carries no value
    add((T0 + 1, "Level", 7))
    add((T0 + 1, "Counter", "seven"))
    add((T0 + 1, "Spectrum", [1.0, 2.0]))  # not a variable of the records
    [seg] = segments(served(env, live))
    assert seg["records"] == [{"Time": seg["StartTime"], "Level": "7"}]
    assert seg["RecordCount"] == "1" and moment(seg["StartTime"]) == at(1) == moment(seg["EndTime"])


def test_the_largest_float32_is_a_value_in_the_records_and_the_live_model() -> None:
    largest = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]  # 3.4028234663852886e38
    env, live, ring = environment(machine())
    ring.values.append((T0, "Vibration", largest))
    live.update(SHELL_ID, "Vibration", largest)
    assert live.apply(env) == [], "a short decimal of it rounds past the float32 range; the converter copes"
    [seg] = segments(served(env, live))
    assert float32(float(seg["records"][0]["Vibration"])) == largest


def test_record_idshorts_are_valid_and_unique_whatever_the_paths() -> None:
    elements = (
        spec.Element("A.B_C", "Double"),
        spec.Element("A_B.C", "Double"),
        spec.Element("Time", "Double"),
        spec.Element("X" * 100 + "." + "Y" * 100, "Int32"),
        spec.Element("X" * 100 + "_" + "Y" * 100, "Int32"),
    )
    names = [v.id_short for v in variables(machine(elements=elements))]
    assert names == ["A_B_C", "A_B_C_2", "Time_2", "X" * 100 + "_" + "Y" * 27, "X" * 100 + "_" + "Y" * 25 + "_2"]
    assert all(len(n) <= 128 for n in names)


# -- the window ------------------------------------------------------------------------------------------------


def test_the_ring_keeps_only_the_newest_records() -> None:
    env, live, ring = environment(machine(window=3))
    assert ring.values.maxlen == 3 * len(RECORDED), "room for the window's records of every variable"
    for i in range(40):
        ring.values.append((T0 + i, "Counter", i))
    [seg] = segments(served(env, live))
    assert [r["Counter"] for r in seg["records"]] == ["37", "38", "39"]
    assert seg["RecordCount"] == "3" and moment(seg["StartTime"]) == at(37) and moment(seg["EndTime"]) == at(39)
    assert len(ring.values) == ring.values.maxlen == 21


def test_the_ring_never_holds_more_than_its_ceiling() -> None:
    many = tuple(spec.Element(f"V{i:04d}", "Double") for i in range(200))
    ring = TimeSeriesRing(machine(window=10_000, elements=many))
    assert ring.values.maxlen == MAX_RING_VALUES


def test_a_record_the_window_cut_into_is_left_out_whole() -> None:
    env, live, ring = environment(machine(window=2))  # 2 records of 7 variables: 14 values at most
    every = {"Spindle.Speed": 1.0, "Vibration": 2.0, "Counter": 3, "Total": 4, "Program": "p", "Running": True,
             "Level": 5}  # fmt: skip
    for path, value in every.items():
        ring.values.append((T0, path, value))
    ring.gap(T0 + 1, "server restart")  # the marker takes a place in the ring too
    for path, value in every.items():
        ring.values.append((T0 + 2, path, value))
    assert len(ring.values) == 14 and ring.values[0][1] == "Vibration", "the first instant lost its first value"
    figures = segments(served(env, live))
    assert [s["idShort"] for s in figures] == ["InternalSegment02"], "the cut record is not shown half"
    [record] = figures[0]["records"]
    assert moment(record["Time"]) == at(2) and len(record) == 1 + 7


def test_an_unchanged_ring_is_not_written_again() -> None:
    env, live, ring = environment(machine())
    ring.values.append((T0, "Counter", 1))
    assert live.apply_series(env) == 1
    holder = env.store.get_item(time_series_id(env.shell(SHELL_ID))).get_referable("Segments")
    before = list(holder.value)
    assert live.apply_series(env) == 0 and list(holder.value) == before
    ring.values.append((T0 + 1, "Counter", 2))
    assert live.apply_series(env) == 1 and list(holder.value) != before


def test_a_read_of_one_submodel_writes_no_other_machines_records() -> None:
    other = replace(machine(), id="urn:test:aas:m2", id_short="m2", asset_id="urn:test:asset:m2")
    env = build_environment([machine(), other], language="en")
    live = LiveValues(series=rings_for(env.shells))
    for ring in live.series.values():
        ring.values.append((T0, "Counter", 1))
    assert live.apply_series(env, [f"{SHELL_ID}/sm/OperationalData"]) == 0
    assert live.apply_series(env, [time_series_id(other)]) == 1
    assert [r.changed() for r in live.series.values()] == [True, False]
    assert live.apply_series(env) == 1


# -- gaps --------------------------------------------------------------------------------------------------------


def test_a_gap_splits_the_segments_and_nothing_is_invented_inside() -> None:
    env, live, ring = environment(machine())
    written = {T0: 1, T0 + 1: 2, T0 + 10: 3, T0 + 11: 4}
    ring.values.append((T0, "Counter", 1))
    ring.values.append((T0 + 1, "Counter", 2))
    ring.touch(T0 + 1.5)
    ring.gap(T0 + 2, "source-disconnected: connection lost")
    ring.gap(T0 + 3, "a second one, before any value: nothing more to close")
    ring.values.append((T0 + 10, "Counter", 3))
    ring.values.append((T0 + 11, "Counter", 4))
    ring.touch(T0 + 11.5)
    before, after = segments(served(env, live))
    assert (before["idShort"], after["idShort"]) == ("InternalSegment01", "InternalSegment02")
    assert before["State"] == "completed" and after["State"] == "in progress"
    assert before["Description"] == "Ended by an interruption of collection: source-disconnected: connection lost"
    assert moment(before["LastUpdate"]) == at(2) and moment(after["LastUpdate"]) == at(11.5)
    assert (before["RecordCount"], moment(before["StartTime"]), moment(before["EndTime"])) == ("2", at(0), at(1))
    assert (after["RecordCount"], moment(after["StartTime"]), moment(after["EndTime"])) == ("2", at(10), at(11))
    shown = {moment(r["Time"]).timestamp(): int(r["Counter"]) for s in (before, after) for r in s["records"]}
    assert shown == written, "every record is one that was collected; none between the segments"


def test_an_empty_series_is_one_segment_without_records() -> None:
    env, live, _ = environment(machine())
    submodel = to_json(env.store.get_item(time_series_id(env.shell(SHELL_ID))))
    [seg] = segments(submodel)
    assert seg == {"idShort": "InternalSegment01", "RecordCount": "0", "SamplingInterval": "500", "records": []}
    assert [e["idShort"] for e in child(submodel, "Segments")["value"]] == ["InternalSegment01"]
    assert live.apply_series(env) == 0, "nothing collected: nothing to write"


# -- through the pipeline ------------------------------------------------------------------------------------


def quick() -> Iterator[float]:
    return itertools.repeat(0.01)


def test_the_pipeline_records_stored_values_and_an_interruption_or_overflow_splits_the_segments(
    tmp_path: Path,
) -> None:
    env, live, ring = environment(machine())
    submodel = f"{SHELL_ID}/sm/OperationalData"
    speed = wire.Element(shell=SHELL_ID, submodel=submodel, path="Spindle.Speed", value_type="xs:double", node="S")
    level = wire.Element(shell=SHELL_ID, submodel=submodel, path="Level", value_type="xs:unsignedByte", node="L")
    spectrum = wire.Element(
        shell=SHELL_ID, submodel=submodel, path="Spectrum", value_type="xs:double", node="A", is_array=True
    )
    bindings = [make_binding(h, "plc", "m1", e) for h, e in ((1, speed), (2, level), (3, spectrum))]

    def sample(handle: int, value: Any, seconds: float, status: int = 0) -> Sample:
        return Sample(handle, value, at(seconds), at(seconds), status)

    async def run(p: Pipeline) -> None:
        await p.on_samples([sample(1, 1.5, 0), sample(2, 7, 0), sample(3, [1.0], 0)])
        await p.on_samples([sample(1, 1.5, 0), sample(2, "not a byte", 1), sample(1, math.nan, 1)])  # repeat, misfit
        await p.on_interruption(Interruption("plc", (1, 2, 3), at(2), None, "server restart"))
        await p.on_interruption(Interruption("plc", (1, 2, 3), at(2), at(5), "server restart"))
        await p.on_samples([sample(1, 2.5, 5), sample(2, 8, 5)])
        await p.on_samples([sample(1, 3.5, 9, OVERFLOW)])  # the server discarded values before this one

    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        asyncio.run(run(Pipeline(bindings, [], [buf], live, delays=quick)))
    assert [e[1] for e in ring.values].count(None) == 2, "two gap markers: the interruption, the overflow"
    first, second, third = segments(served(env, live))
    assert [r.get("Spindle_Speed") for r in first["records"]] == ["1.5", "NaN"]
    assert [r.get("Level") for r in first["records"]] == ["7", None], "the misfit value is no record value"
    assert second["records"] == [{"Time": second["StartTime"], "Spindle_Speed": "2.5", "Level": "8"}]
    assert third["records"] == [{"Time": third["StartTime"], "Spindle_Speed": "3.5"}]
    assert [s["State"] for s in (first, second, third)] == ["completed", "completed", "in progress"]
    assert "server restart" in first["Description"] and "overflowed" in second["Description"]
    assert "Description" not in third


# -- configuration ------------------------------------------------------------------------------------------


def test_the_config_sets_the_window_links_the_receiver_and_can_turn_it_off() -> None:
    cfg = load(ROOT / "configs" / "demo.yaml")
    e = cfg.equipment[0]
    ts = shell_spec(cfg, e).time_series
    assert ts is not None and ts.records == 1000 and ts.linked_endpoint is None and ts.linked_query is None
    assert ts.sampling_interval_s == cfg.sources[0].publishing_interval_ms / 1000
    http = HttpSinkConfig(type="http", url="https://cloud.example.com/kamp/")
    linked = cfg.model_copy(update={"sinks": (*cfg.sinks, http)})
    ts = shell_spec(linked, e).time_series
    assert ts is not None and ts.linked_endpoint == f"https://cloud.example.com/kamp/v1/assets/{e.id}/records"
    assert ts.linked_query == LINKED_QUERY == "element={element}&from={from}&to={to}"
    text = (ROOT / "configs" / "demo.yaml").read_text()
    small = parse(text + "aas:\n  time_series: {records: 20}\n")
    assert rings_for(build_shells(small).shells)[small.aas_id(e)].window == 20
    off = parse(text + "aas:\n  time_series: {enabled: false}\n")
    env = build_shells(off)
    assert not rings_for(env.shells) and not [o for o in env.store if getattr(o, "id_short", "") == "TimeSeries"]


# -- exports: every validator, with and without records --------------------------------------------------------

VALUES: dict[str, list[Any]] = {  # per OPC UA type: values a machine sends, edge cases included
    "Boolean": [True, False],
    "SByte": [-128, 127],
    "Byte": [0, 255],
    "Int16": [-(2**15), 2**15 - 1],
    "UInt16": [0, 2**16 - 1],
    "Int32": [-(2**31), 2**31 - 1],
    "UInt32": [0, 2**32 - 1],
    "Int64": [-(2**63), 2**63 - 1],
    "UInt64": [0, 2**64 - 1],
    "Float": [math.nan, math.inf, 0.1],
    "Double": [math.nan, -math.inf, 1.5],
    "String": ["", "정상 가동 중"],
    "DateTime": [datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)],
    "UtcTime": [datetime(1970, 1, 1, tzinfo=UTC)],
    "ByteString": [b"", bytes(range(256))],
    "StatusCode": [0, 0x80000000],
    "Guid": ["00000000-0000-0000-0000-000000000000"],
    "NodeId": ["ns=2;s=CNC01.State"],
}


def filled(env: ShellEnvironment, live: LiveValues, shell_id: str) -> int:
    """A shell's ring filled with a few instants of values of every variable's type, and an interruption (one
    shell: the JSON schema's time grows with every nested record, and one machine has every type)."""
    count = 0
    for ring in (live.series[shell_id],):
        for i in range(4):
            if i == 2:
                ring.gap(T0 + i, "server restart")
            for path, v in ring.variables.items():
                choices = VALUES[v.value_type.opcua]
                ring.values.append((T0 + i, path, choices[i % len(choices)]))
                count += 1
        ring.touch(T0 + 4)
    live.apply_series(env)
    return count


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("version", METAMODELS)
@pytest.mark.parametrize("records", ["with-records", "without-records"])
def test_exports_with_time_series_pass_every_validator(tmp_path: Path, records: str, version: str, fmt: str) -> None:
    cfg = load(ROOT / "configs" / "demo.yaml")
    http = HttpSinkConfig(type="http", url="http://127.0.0.1:8080")
    cfg = cfg.model_copy(update={"sinks": (*cfg.sinks, http)})  # with a LinkedSegment
    # As build_shells, without the Asset Interfaces submodels: test_export.py checks them in every export, and
    # the JSON schema takes tens of seconds over each of them; here the Time Series Data is what is new.
    shells = [replace(shell_spec(cfg, e), interface=None) for e in cfg.equipment]
    env = build_environment(shells, language=cfg.site.language, site=site_spec(cfg), concept_descriptions=True)
    live = LiveValues(series=rings_for(env.shells))
    if records == "with-records":
        assert filled(env, live, env.shells[0].id) > 80
    document = to_json(env.store.get_item(time_series_id(env.shells[0])))
    figures = segments(document)
    assert [int(s["RecordCount"]) > 0 for s in figures] == ([True, True] if records == "with-records" else [False])
    assert [e["idShort"] for e in child(document, "Segments")["value"]][-1] == "LinkedSegment01"
    path = write_environment(env, fmt, tmp_path / f"env.{fmt}", metamodel=version)  # type: ignore[arg-type]
    assert_core_verifies(path, version, fmt)
    assert_matches_schema(path, version, fmt, official_json_schemas(), official_xsds())
    if version == "3.0":
        assert_test_engines_accept(path, fmt)


# -- a running agent and the factory simulator -----------------------------------------------------------------


def plain(value_type: str, text: str | None) -> Any:
    """An AAS Property's lexical value as the plain value the pipeline had."""
    assert text is not None
    if value_type == "xs:boolean":
        return text == "true"
    if value_type in ("xs:double", "xs:float"):
        number = {"NaN": math.nan, "INF": math.inf, "-INF": -math.inf}.get(text)
        return float(text) if number is None else number
    if value_type == "xs:dateTime":
        return datetime.fromisoformat(text)
    if value_type == "xs:base64Binary":
        return base64.b64decode(text)
    if value_type == "xs:string":
        return text
    return int(text)


def float32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def test_a_running_agent_serves_the_records_the_simulator_wrote(tmp_path: Path) -> None:
    api_port = free_port()
    with FactoryThread(port=free_port(), period=0.1, machines=1) as factory:
        config = tmp_path / "agent.yaml"
        sink = f"- type: file\n  path: {tmp_path / 'records.jsonl'}"
        text = factory_config(opc_port=factory.port, data_dir=tmp_path / "data", sinks=sink, machines=1, events=False)
        config.write_text(text + f"api: {{port: {api_port}}}\naas:\n  time_series: {{records: 30}}\n")
        cfg = load(config)
        [e] = cfg.equipment
        nodes = {p.path.replace(".", "_"): p.node for p in e.points}
        submodel = f"/submodels/{encode_id(time_series_id(shell_spec(cfg, e)))}"
        with AgentProcess(config, tmp_path / "agent.log") as agent:
            http = Http(api_port)
            wait_until("the API to listen", lambda: http.call("GET", "/description")[0] == 200, 60)

            def full() -> list[dict[str, Any]] | None:
                found = segments(http.get(submodel))
                return found if sum(int(s["RecordCount"]) for s in found) == 30 else None

            figures = wait_until("30 records in the Time Series Data", full, 60)
            document = http.get(submodel)
            assert agent.stop() == 0, agent.log()[-3000:]
        written = {node: dict(factory.written(node)) for node in nodes.values() if node}
    types = {p["idShort"]: p["valueType"] for p in child(child(document, "Metadata"), "Record")["value"]}
    assert "Diagnostics_UInt64" in types and "Diagnostics_LocalizedText" not in types
    checked: set[str] = set()
    for seg in figures:
        times = [moment(r["Time"]) for r in seg["records"]]
        assert times == sorted(times) and len(set(times)) == len(times)
        assert (moment(seg["StartTime"]), moment(seg["EndTime"])) == (times[0], times[-1])
        assert int(seg["RecordCount"]) == len(times)
        for record, when in zip(seg["records"], times, strict=True):
            values = {k: v for k, v in record.items() if k != "Time"}
            assert values, "a record has values"
            for name, text in values.items():
                history = written[nodes[name]]
                assert when in history, f"{name} @ {when} was never written by the simulator"
                got, want = plain(types[name], text), expected(history[when])
                if types[name] == "xs:float":  # "0.1" is the shortest text of the float32 the machine sent
                    got, want = float32(got), float32(want)
                assert same(got, want), (name, when, text, history[when])
                checked.add(name)
    assert {"PartCount", "Diagnostics_Double", "Diagnostics_UInt64", "Diagnostics_String"} <= checked, checked
    last = figures[-1]
    assert last["State"] == "in progress"
    assert moment(last["LastUpdate"]) >= moment(last["EndTime"]) - timedelta(seconds=5)
