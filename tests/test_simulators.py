"""The simulators against a real asyncua client on 127.0.0.1: the factory (asyncua server) and the
node-opcua load server."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from asyncua import Client, ua

from simulators.factory import (
    EVENT_TYPE_NODE_ID,
    NAMESPACE_INDEX,
    NAMESPACE_URI,
    FactoryThread,
    catalogue,
    json_value,
)
from simulators.factory.catalogue import DIAGNOSTIC_TYPES
from simulators.factory.record import iso_z
from simulators.nodeopcua import NAMESPACE_URI as NODEOPCUA_NAMESPACE_URI
from simulators.nodeopcua import NodeOpcuaServer, node_opcua_available
from simulators.ports import free_port
from tests.helpers import unavailable

ROOT = Path(__file__).resolve().parents[1]
PERIOD = 0.1


async def eventually(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll `check` (sync or async) until it returns something truthy and return that; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def diag(name: str) -> str:
    return f"ns={NAMESPACE_INDEX};s=CNC01.Diagnostics.{name}"


@dataclass
class Change:
    node: str
    value: Any
    source_time: datetime


class Collector:
    """asyncua subscription handler that keeps every data change and event."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.events: list[Any] = []

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        source_time = data.monitored_item.Value.SourceTimestamp
        self.changes.append(Change(node.nodeid.to_string(), val, source_time))

    def event_notification(self, event: Any) -> None:
        self.events.append(event)

    def values(self, node: str) -> list[Any]:
        return [c.value for c in self.changes if c.node == node]

    def times(self, node: str) -> list[datetime]:
        return [c.source_time for c in self.changes if c.node == node]


@pytest.fixture(scope="module")
def factory() -> Iterator[FactoryThread]:
    # alarm_every=1: every machine raises an alarm after each cycle, so alarms come within seconds.
    with FactoryThread(port=free_port(), period=PERIOD, alarm_every=1) as fac:
        yield fac


def test_factory_serves_every_builtin_type_with_its_datatype(factory: FactoryThread) -> None:
    signals = catalogue(3)
    diagnostics = {s.name.removeprefix("Diagnostics."): s for s in signals if s.name.startswith("Diagnostics.")}
    assert set(DIAGNOSTIC_TYPES) | {"DoubleArray", "Int32Array"} == set(diagnostics)

    async def check() -> None:
        async with Client(factory.endpoint, timeout=10) as client:
            assert (await client.get_namespace_array())[NAMESPACE_INDEX] == NAMESPACE_URI
            nodes = [client.get_node(s.node_id) for s in signals]
            values = await client.read_attributes(nodes, ua.AttributeIds.Value)
            datatypes = await client.read_attributes(nodes, ua.AttributeIds.DataType)
            ranks = await client.read_attributes(nodes, ua.AttributeIds.ValueRank)
            for s, value, datatype, rank in zip(signals, values, datatypes, ranks, strict=True):
                assert value.StatusCode.is_good(), s.node_id
                variant_type = ua.VariantType[s.opcua_type]
                assert datatype.Value.Value == ua.NodeId(variant_type.value, 0), s.node_id
                assert value.Value.VariantType == variant_type, s.node_id
                assert value.SourceTimestamp is not None and value.ServerTimestamp is not None, s.node_id
                if s.is_array:
                    assert rank.Value.Value == ua.ValueRank.OneDimension and isinstance(value.Value.Value, list)
                else:
                    assert rank.Value.Value == ua.ValueRank.Scalar, s.node_id

            by_path = await client.nodes.root.get_child(["0:Objects", "2:CNC01", "2:SpindleSpeed"])
            assert by_path.nodeid == ua.NodeId("CNC01.SpindleSpeed", NAMESPACE_INDEX)
            by_path = await client.nodes.objects.get_child(["2:CNC01", "2:Diagnostics", "2:Byte"])
            assert by_path.nodeid.to_string() == diag("Byte")
            units = await client.get_node("ns=2;s=CNC01.SpindleSpeed.EngineeringUnits").read_value()
            assert units.UnitId == 5394509 and units.DisplayName.Text == "rpm"  # UN/CEFACT "RPM"
            for machine in ("CNC01", "IMM01", "PRS01"):
                notifier = await client.get_node(f"ns=2;s={machine}").read_event_notifier()
                assert ua.EventNotifier.SubscribeToEvents in notifier

    asyncio.run(check())


def test_factory_values_change_and_sweep_edge_cases(factory: FactoryThread) -> None:
    watched = [s.node_id for s in catalogue(3) if s.machine == "CNC01"]
    collector = Collector()

    def seen(name: str, predicate: Callable[[Any], bool]) -> bool:
        return any(predicate(v) for v in collector.values(diag(name)))

    edge_cases: dict[str, Callable[[], bool]] = {
        "Double NaN": lambda: seen("Double", lambda v: math.isnan(v)),
        "Double +INF": lambda: seen("Double", lambda v: v == math.inf),
        "Double -INF": lambda: seen("Double", lambda v: v == -math.inf),
        "Float NaN": lambda: seen("Float", lambda v: math.isnan(v)),
        "Float +INF": lambda: seen("Float", lambda v: v == math.inf),
        "Float -INF": lambda: seen("Float", lambda v: v == -math.inf),
        "Byte 255": lambda: seen("Byte", lambda v: v == 255),
        "SByte < 0": lambda: seen("SByte", lambda v: v < 0),
        "UInt64 max": lambda: seen("UInt64", lambda v: v == 2**64 - 1),
        "Int64 min": lambda: seen("Int64", lambda v: v == -(2**63)),
        "Int64 > 2**53": lambda: seen("Int64", lambda v: v > 2**53),
        "empty String": lambda: seen("String", lambda v: v == ""),
        "Korean String": lambda: seen("String", lambda v: "가" in v or "정상" in v),
        "ko-KR text": lambda: seen("LocalizedText", lambda v: v.Locale == "ko-KR"),
        "en-US text": lambda: seen("LocalizedText", lambda v: v.Locale == "en-US"),
        "empty Int32Array": lambda: seen("Int32Array", lambda v: v == []),
        "NaN inside DoubleArray": lambda: seen("DoubleArray", lambda v: any(map(math.isnan, v))),
    }

    async def check() -> None:
        async with Client(factory.endpoint, timeout=10) as client:
            subscription = await client.create_subscription(50, collector)
            await subscription.subscribe_data_change([client.get_node(n) for n in watched], queuesize=50)
            try:
                await eventually("every edge case", lambda: all(f() for f in edge_cases.values()), timeout=20)
            except AssertionError:
                pytest.fail(f"edge cases never seen: {[name for name, f in edge_cases.items() if not f()]}")
            await eventually("a completed part", lambda: len(set(collector.values("ns=2;s=CNC01.PartCount"))) > 1, 20)
            assert len({tuple(v) for v in collector.values(diag("DoubleArray"))}) > 3
            # What a client receives is exactly what the simulator says it wrote, at that source time.
            for change in collector.changes:
                written = dict(factory.written(change.node))
                assert change.source_time in written, change
                assert json_value("", change.value) == json_value("", written[change.source_time]), change

    asyncio.run(check())
    counts = collector.values("ns=2;s=CNC01.PartCount")
    assert counts == sorted(counts), "PartCount never goes backwards"


def test_factory_alarm_event_and_reset_method(factory: FactoryThread) -> None:
    on_machine = Collector()
    on_server = Collector()

    async def check() -> None:
        async with Client(factory.endpoint, timeout=10) as client:
            machine = client.get_node("ns=2;s=CNC01")
            event_type = client.get_node(EVENT_TYPE_NODE_ID)
            assert (await event_type.read_browse_name()).Name == "MachineAlarmEventType"
            machine_sub = await client.create_subscription(50, on_machine)
            await machine_sub.subscribe_events(machine, event_type)
            server_sub = await client.create_subscription(50, on_server)
            await server_sub.subscribe_events(client.nodes.server, event_type)

            def alarms() -> list[Any]:
                return [e for e in on_machine.events if e.MachineState == "ALARM"]

            alarm = (await eventually("an alarm event from CNC01", alarms, timeout=20))[0]
            assert alarm.SourceName == "CNC01" and alarm.SourceNode == machine.nodeid
            assert alarm.AlarmCode in {1001, 1002, 1003, 1004} and alarm.Severity >= 400
            assert str(alarm.AlarmCode) in alarm.Message.Text and alarm.Message.Locale == "en-US"
            assert abs((datetime.now(UTC) - alarm.Time).total_seconds()) < 10
            assert await client.get_node("ns=2;s=CNC01.AlarmCode").read_value() in {0, alarm.AlarmCode}
            # The same event, not a copy, also reaches subscribers of the Server object.
            await eventually(
                "the alarm on the Server object", lambda: any(e.EventId == alarm.EventId for e in on_server.events), 10
            )

            # Called until it finds the machine in ALARM (it answers False otherwise).
            await eventually(
                "ResetAlarm to reset an active alarm",
                lambda: machine.call_method(f"{NAMESPACE_INDEX}:ResetAlarm"),
                timeout=20,
            )
            assert await client.get_node("ns=2;s=CNC01.State").read_value() == "IDLE"
            assert await client.get_node("ns=2;s=CNC01.StateCode").read_value() == 0
            reset = await eventually(
                "the reset event",
                lambda: [e for e in on_machine.events if "reset by operator" in e.Message.Text],
                timeout=10,
            )
            assert reset[0].MachineState == "IDLE"

    asyncio.run(check())


async def _read(endpoint: str, node: str) -> Any:
    async with Client(endpoint, timeout=5) as client:
        return await client.get_node(node).read_value()


def test_factory_stops_and_restarts_on_the_same_port() -> None:
    part_count = "ns=2;s=PRS01.PartCount"
    with FactoryThread(port=free_port(), period=PERIOD) as fac:
        before = asyncio.run(_read(fac.endpoint, part_count))
        for _ in range(2):
            fac.stop()
            assert not fac.running
            with pytest.raises(OSError):
                asyncio.run(_read(fac.endpoint, part_count))
            fac.start()
            # A fresh client on the same port sees the same plant carrying on, not a new one.
            after = asyncio.run(_read(fac.endpoint, part_count))
            assert after >= before
            before = after
        last = asyncio.run(
            eventually("parts produced after restarts", lambda: _bigger(fac.endpoint, part_count, before), 10)
        )
        assert last > before


async def _bigger(endpoint: str, node: str, than: int) -> int | None:
    value = await _read(endpoint, node)
    return value if value > than else None


def test_factory_cli_record_matches_what_a_client_reads(tmp_path: Path) -> None:
    port = free_port()
    record = tmp_path / "record.jsonl"
    stdout = tmp_path / "stdout.txt"
    signals = catalogue(3)
    command = [sys.executable, "-m", "simulators.factory", f"--port={port}", f"--period={PERIOD}"]
    command += [f"--record={record}", "--alarm-every=2", "--seconds=60"]
    with stdout.open("wb") as out, (tmp_path / "stderr.txt").open("wb") as err:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
    try:

        async def read_all() -> list[ua.DataValue]:
            await eventually("READY", lambda: "READY" in stdout.read_text(), timeout=30)
            assert stdout.read_text() == f"READY opc.tcp://127.0.0.1:{port}/\n"
            # -INF is the last of the Double edge cases to come round (round 5).
            await eventually("-INF in the record", lambda: record.exists() and b'"-INF"' in record.read_bytes(), 10)
            async with Client(f"opc.tcp://127.0.0.1:{port}/", timeout=10) as client:
                nodes = [client.get_node(s.node_id) for s in signals]
                return list(await client.read_attributes(nodes, ua.AttributeIds.Value))

        read = asyncio.run(read_all())
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0, (tmp_path / "stderr.txt").read_text()[-3000:]

    lines = [orjson.loads(line) for line in record.read_bytes().splitlines()]
    recorded = {(r["node"], r["source_time"]): r for r in lines}
    assert len(recorded) == len(lines), "one line per value written"
    for s, data_value in zip(signals, read, strict=True):
        entry = recorded[(s.node_id, iso_z(data_value.SourceTimestamp))]
        assert entry["type"] == s.opcua_type
        assert entry["value"] == json_value(s.opcua_type, data_value.Value.Value), s.node_id
    by_type: dict[str, list[Any]] = {}
    for r in lines:
        by_type.setdefault(r["type"], []).append(r["value"])
    assert {"NaN", "INF", "-INF"} <= {v for v in by_type["Double"] if isinstance(v, str)}
    assert "18446744073709551615" in by_type["UInt64"] and all(isinstance(v, str) for v in by_type["Int64"])
    assert all(r["source_time"].endswith("Z") and len(r["source_time"]) == 27 for r in lines)
    texts = [r["value"] for r in lines if r["type"] == "LocalizedText"]
    assert {"language", "text"} == set(texts[0]) and {t["language"] for t in texts} >= {"ko-KR", "en-US"}


def test_factory_cli_exits_by_itself_after_seconds(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "simulators.factory", f"--port={port}", "--seconds=0.5"]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.decode() == f"READY opc.tcp://127.0.0.1:{port}/\n"


@pytest.fixture(scope="module")
def load_server() -> Iterator[NodeOpcuaServer]:
    reason = node_opcua_available()
    if reason is not None:
        unavailable(reason)
    with NodeOpcuaServer(port=free_port(), vars=5000, period_ms=100, max_nodes_per_call=1000) as server:
        yield server


@pytest.mark.nodeopcua
def test_nodeopcua_serves_5000_variables_within_its_operation_limits(load_server: NodeOpcuaServer) -> None:
    assert load_server.namespace_index == 1
    ids = load_server.variable_ids()
    assert len(ids) == 5000

    async def check() -> None:
        async with Client(load_server.endpoint, timeout=10) as client:
            namespaces = await client.get_namespace_array()
            assert namespaces[load_server.namespace_index] == NODEOPCUA_NAMESPACE_URI
            limit = client.get_node(ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead))
            assert await limit.read_value() == 1000
            nodes = [client.get_node(i) for i in ids]
            with pytest.raises(ua.UaStatusCodeError) as too_many:
                await client.read_values(nodes[:1001])
            assert too_many.value.code == ua.StatusCodes.BadTooManyOperations
            first: list[float] = []
            for start in range(0, len(nodes), 1000):
                first += await client.read_values(nodes[start : start + 1000])
            assert len(first) == 5000 and all(isinstance(v, float) for v in first)
            # Var i holds i + round: every variable moves on each round.
            await eventually("the next update round", lambda: _changed(client, nodes[-1000:], first[-1000:]), timeout=5)

    asyncio.run(check())


async def _changed(client: Client, nodes: list[Any], before: list[float]) -> bool:
    now = await client.read_values(nodes)
    return all(a != b for a, b in zip(now, before, strict=True))


@pytest.mark.nodeopcua
def test_nodeopcua_honours_sampling_interval_and_percent_deadband(load_server: NodeOpcuaServer) -> None:
    seconds = 3.0  # long enough for a few 500 ms samples; the checks below do not count per window
    fast_100, fast_500, ramp_all, ramp_10pct = Collector(), Collector(), Collector(), Collector()

    async def check() -> None:
        async with Client(load_server.endpoint, timeout=10) as client:
            fast = client.get_node(load_server.fast_id)
            ramp = client.get_node(load_server.ramp_id)
            for collector, interval in ((fast_100, 100), (fast_500, 500)):
                subscription = await client.create_subscription(50, collector)
                await subscription.subscribe_data_change(fast, sampling_interval=interval, queuesize=100)
            subscription = await client.create_subscription(50, ramp_all)
            await subscription.subscribe_data_change(ramp, sampling_interval=0, queuesize=100)
            subscription = await client.create_subscription(50, ramp_10pct)
            await subscription.deadband_monitor(ramp, 10.0, ua.DeadbandType.Percent, queuesize=100)
            await asyncio.sleep(seconds)  # counting notifications over a fixed window is the measurement

    asyncio.run(check())
    # Measured on the server's side, so a busy client does not change it: Fast counts up every 10 ms,
    # a sample every 100 ms sees it advance by about 10 and one every 500 ms by about 50, and the
    # samples' source times are about 100 and 500 ms apart. A busy server slows both alike, so the
    # ratio of the two is what must hold tightly; each alone gets a wide margin.
    steps = {}
    spacing = {}
    for collector, interval in ((fast_100, 100), (fast_500, 500)):
        steps[interval] = statistics.median(b - a for a, b in itertools.pairwise(collector.values(load_server.fast_id)))
        spacing[interval] = statistics.median(
            (b - a).total_seconds() * 1000 for a, b in itertools.pairwise(collector.times(load_server.fast_id))
        )
        assert 0.3 * interval / 10 <= steps[interval] <= 1.5 * interval / 10, (interval, steps)
        assert 0.8 * interval <= spacing[interval] <= 3 * interval, (interval, spacing)
    assert 3.5 <= steps[500] / steps[100] <= 7, steps
    assert 3.5 <= spacing[500] / spacing[100] <= 7, spacing
    reported = ramp_10pct.values(load_server.ramp_id)
    # Percent deadband: 10 % of EURange 0..100, so successive values differ by more than 10.
    assert all(abs(b - a) > 10 for a, b in itertools.pairwise(reported)), reported
    assert len(reported) >= 5 and len(ramp_all.changes) > 2 * len(reported)
