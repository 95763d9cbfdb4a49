"""Nodes that move under the agent: a PLC program download renumbers them, deletes one, changes a type.

The factory simulator serves numeric node ids here (`numeric_ids`), as PLCs do; a restart with another
first number is a download that renumbered every tag. The adapter learns each node's browse path at its
first resolve and finds the node again by it; a node that is gone or changed is reported as soon as a
value says so (a Bad status, or a value of another type), not at the next reconnect.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from adapters.opcua.source import OpcUaSource
from adapters.opcua.spec import Endpoint, NodeItem
from adapters.sample import NodeProblem, Sample
from simulators.agentproc import AgentProcess
from simulators.factory import FactoryThread
from simulators.ports import free_port
from tests.helpers import Collected, file_records, wait_until

SPEED = "ns=2;s=CNC01.SpindleSpeed"
COUNT = "ns=2;s=CNC01.PartCount"
STEADY = "ns=2;s=CNC01.Diagnostics.Double"  # changes every round


def quick() -> Iterator[float]:
    return itertools.repeat(0.2)


class Timeline(Collected):
    """Collected, plus when each batch and problem arrived (monotonic), to order them."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[float, list[Sample]]] = []
        self.problem_times: list[tuple[float, NodeProblem]] = []

    async def emit(self, samples: Sequence[Sample]) -> None:
        await super().emit(samples)
        self.batches.append((time.monotonic(), list(samples)))

    async def problem(self, p: NodeProblem) -> None:
        await super().problem(p)
        self.problem_times.append((time.monotonic(), p))


async def collect(source: OpcUaSource, done: Callable[[], bool], timeout: float, what: str) -> None:
    """Run `source` until `done()`; it keeps running only for this call."""
    task = asyncio.create_task(source.run())
    deadline = time.monotonic() + timeout
    try:
        while not done():
            assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
            assert not task.done(), repr(task.exception())
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def values_since(sink: Collected, handle: int, since: datetime) -> list[tuple[datetime, object]]:
    return [(s.source_time, s.value) for s in sink.of(handle) if s.source_time and s.source_time > since]


def source_for(
    url: str, items: list[NodeItem], sink: Collected, publishing_ms: float = 100, **kw: object
) -> OpcUaSource:
    endpoint = Endpoint(id="plc", url=url, publishing_interval_ms=publishing_ms, timeout_s=5)
    return OpcUaSource(
        endpoint, items, emit=sink.emit, emit_events=sink.emit_events, interrupted=sink.interrupted,
        problem=sink.problem, state=sink.state, delays=quick, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_renumbering_download_is_followed_by_the_browse_paths_learnt_at_first_resolve() -> None:
    kept: list[dict[str, str]] = []
    with FactoryThread(port=free_port(), period=0.1, machines=1, numeric_ids=1000) as fac:
        speed, count = fac.address(SPEED), fac.address(COUNT)
        assert speed.startswith("ns=2;i=") and count.startswith("ns=2;i=")
        items = [
            NodeItem(handle=1, node=speed, opcua_type="Double"),
            NodeItem(handle=2, node=count, opcua_type="UInt32", mode="poll", sampling_ms=100),
        ]
        first = Collected()
        source = source_for(fac.endpoint, items, first, learnt=kept.append)
        asyncio.run(collect(source, lambda: bool(kept) and bool(first.of(1)) and bool(first.of(2)), 30, "paths"))
        assert kept[-1] == {speed: "0:Objects/2:CNC01/2:SpindleSpeed", count: "0:Objects/2:CNC01/2:PartCount"}
        assert not first.problems

        # The download: every tag one number lower, so each old id now names the tag before it (all still
        # exist, some with the same type: only the path tells), and the agent restarts with what it kept.
        fac.stop()
        fac.numeric_ids = 999
        fac.start()
        restarted = fac.written(SPEED)[-1][0]
        assert fac.address(SPEED) != speed
        after = Collected()
        source = source_for(fac.endpoint, items, after, paths=kept[-1], learnt=kept.append)

        def enough() -> bool:
            return len(values_since(after, 1, restarted)) >= 5 and len(values_since(after, 2, restarted)) >= 3

        asyncio.run(collect(source, enough, 30, "values after the renumbering"))
    moved = {p.handle: p for p in after.problems}
    assert {p.kind for p in moved.values()} == {"node-moved"} and set(moved) == {1, 2}, after.problems
    assert "0:Objects/2:CNC01/2:SpindleSpeed" in moved[1].problem and "update the mapping" in moved[1].problem
    written = dict(fac.written(SPEED))
    for t, v in values_since(after, 1, restarted):
        assert written[t] == v, (t, v)  # the spindle speed, not the tag that took its old number
    counts = dict(fac.written(COUNT))
    assert all(counts.get(t, v) == v for t, v in values_since(after, 2, restarted))
    assert all(isinstance(v, int) for _, v in values_since(after, 2, restarted))
    assert source.active == (1, 2)


def test_a_deleted_node_is_reported_before_the_next_publish_is_through() -> None:
    sink = Timeline()
    with FactoryThread(port=free_port(), period=0.1, machines=1, numeric_ids=1000) as fac:
        items = [
            NodeItem(handle=1, node=fac.address(SPEED), opcua_type="Double"),
            NodeItem(handle=2, node=fac.address(STEADY), opcua_type="Double"),
        ]
        # A publishing interval of a gateway's usual order (the factory changes values every 0.1 s, so every
        # publish carries data): the re-check's one Read must fit in it even on a loaded machine.
        source = source_for(fac.endpoint, items, sink, publishing_ms=500)
        removed: list[float] = []

        def removed_and_reported() -> bool:
            if not removed and len(sink.of(1)) >= 2:
                fac.remove(SPEED)
                removed.append(time.monotonic())
            return bool(removed) and any(p.handle == 1 for p in sink.problems)

        asyncio.run(collect(source, removed_and_reported, 30, "the deleted node to be reported"))
        assert source.active == (2,)
    bad = [(t, s) for t, batch in sink.batches for s in batch if s.handle == 1 and s.status]
    assert bad and bad[0][1].status == 0x80340000 and bad[0][1].value is None  # BadNodeIdUnknown, as sent
    reported_at, problem = next((t, p) for t, p in sink.problem_times if p.handle == 1)
    assert problem.kind == "node-problem" and "BadNodeIdUnknown" in problem.problem, problem
    assert "noticed while collecting" in problem.problem
    # One publishing cycle: at most one more publish response was handled between the Bad status and the report.
    between = [t for t, batch in sink.batches if bad[0][0] < t < reported_at]
    assert len(between) <= 1, (len(between), reported_at - bad[0][0])


def test_a_node_renumbered_while_collecting_is_collected_again_from_its_new_id() -> None:
    sink = Timeline()
    kept: list[dict[str, str]] = []
    with FactoryThread(port=free_port(), period=0.1, machines=1, numeric_ids=1000) as fac:
        items = [
            NodeItem(handle=1, node=fac.address(SPEED), opcua_type="Double"),
            NodeItem(handle=2, node=fac.address(STEADY), opcua_type="Double"),
        ]
        source = source_for(fac.endpoint, items, sink, learnt=kept.append)
        moved: list[datetime] = []

        def followed() -> bool:
            if not moved and kept and len(sink.of(1)) >= 2:
                fac.move(SPEED, 7777)
                moved.append(fac.written(STEADY)[-1][0])
            return bool(moved) and len(values_since(sink, 1, moved[0])) >= 3

        asyncio.run(collect(source, followed, 30, "values of the node under its new id"))
        assert fac.address(SPEED) == "ns=2;i=7777"
        assert source.active == (1, 2)
    problems = [p for p in sink.problems if p.handle == 1]
    assert [p.kind for p in problems] == ["node-moved"], problems
    assert "ns=2;i=7777" in problems[0].problem
    written = dict(fac.written(SPEED))
    assert all(written[t] == v for t, v in values_since(sink, 1, moved[0]) if v is not None)


# -- the whole agent: paths kept in the data dir across its own restart; a changed type noticed at run time


def _agent_config(tmp: Path, fac: FactoryThread) -> Path:
    nameplate = "{manufacturer_name: M, product_designation: P, uri_of_product: 'https://x', order_code: O}"
    text = f"""site: {{id: renumber-site}}
agent: {{data_dir: {tmp / "data"}, status_interval_s: 1}}
api: {{enabled: false}}
sources:
  - {{id: plc, endpoint: "{fac.endpoint}", publishing_interval_ms: 100, reconnect_initial_s: 0.2, reconnect_max_s: 1}}
equipment:
  - id: cnc01
    source: plc
    nameplate: {nameplate}
    points:
      - {{node: "{fac.address(SPEED)}", path: SpindleSpeed, type: Double}}
      - {{node: "{fac.address(STEADY)}", path: Steady, type: Double}}
sinks:
  - {{type: file, path: {tmp / "records.jsonl"}, batch: {{max_delay_ms: 100}}}}
"""
    path = tmp / "agent.yaml"
    path.write_text(text)
    return path


def _statuses(path: Path, kind: str, element: str) -> list[str]:
    return [r["message"] for r in file_records(path, "status") if r["kind"] == kind and r.get("path") == element]


def test_the_agent_keeps_learnt_paths_across_its_restart_and_reports_a_changed_type(tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    learnt = tmp_path / "data" / "nodes" / "plc.json"
    with FactoryThread(port=free_port(), period=0.1, machines=1, numeric_ids=1000) as fac:
        config = _agent_config(tmp_path, fac)
        with AgentProcess(config, tmp_path / "agent.log") as agent:
            wait_until("the browse paths learnt and kept", lambda: len(_kept(learnt)) == 2, 60)
            assert agent.stop() == 0
        assert _kept(learnt) == {
            fac.address(SPEED): "0:Objects/2:CNC01/2:SpindleSpeed",
            fac.address(STEADY): "0:Objects/2:CNC01/2:Diagnostics/2:Double",
        }
        fac.stop()
        fac.numeric_ids = 3000  # the download: every old id is gone
        fac.start()
        restarted = fac.written(SPEED)[-1][0].isoformat().replace("+00:00", "Z")

        def speeds() -> list[dict[str, Any]]:
            return file_records(records, "data", lambda r: r["path"] == "SpindleSpeed" and r["sourceTime"] > restarted)

        with AgentProcess(config, tmp_path / "agent2.log"):
            wait_until("spindle speeds after the renumbering", lambda: len(speeds()) >= 3, 60)
            moved = _statuses(records, "node-moved", "SpindleSpeed")
            assert moved and f"as {fac.address(SPEED)}, the mapping says ns=2;i=1009" in moved[0], moved
            assert _statuses(records, "node-moved", "Steady")
            written = {t.isoformat().replace("+00:00", "Z"): v for t, v in fac.written(SPEED)}
            assert all(written[r["sourceTime"]] == r["value"] for r in speeds())

            fac.retype(SPEED)  # now a String on the server: its next value does not fit xs:double
            wait_until(
                "the changed type reported", lambda: bool(_statuses(records, "node-problem", "SpindleSpeed")), 30
            )
    [problem] = _statuses(records, "node-problem", "SpindleSpeed")
    assert "server type is String, the mapping says Double" in problem, problem
    assert "a value of another type arrived" in problem
    assert _statuses(records, "bad-value", "SpindleSpeed"), "the value itself is kept on the status lane"


def _kept(file: Path) -> dict[str, str]:
    try:
        paths: dict[str, str] = orjson.loads(file.read_bytes())["paths"]
    except (OSError, ValueError, KeyError):
        return {}
    return paths
