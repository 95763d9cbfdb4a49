"""Simulator -> agent (a real process) -> real mosquitto -> a subscriber in the test.

These prove the delivery promise: every value, every type, both timestamps and the status
arrive; a SIGKILL, a broker outage and a server restart lose nothing, and every interruption
is covered by a gap record.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from asyncua import ua

from simulators.accounting import Ledger, ts
from simulators.agentproc import AgentProcess
from simulators.factory import FactoryThread, SignalInfo, catalogue
from simulators.factory.agentconfig import factory_config
from simulators.factory.catalogue import DIAGNOSTIC_TYPES
from simulators.ports import free_port
from tests.helpers import EXPECTED_XS, wait_until
from tests.mqtt_broker import MosquittoBroker, Subscriber
from uploader import wire

VALIDATOR = jsonschema.Draft202012Validator(wire.schema())


def received(sub: Subscriber, *, validate: bool = False) -> Ledger:
    """What the subscriber got; validated against the wire schema only when asked (once, at the end)."""
    return Ledger.of(sub.messages(), validate=validate)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def expected(v: Any) -> Any:
    """What the simulator wrote (asyncua types) in the plain form a record decodes to."""
    if isinstance(v, list):
        return [expected(x) for x in v]
    if isinstance(v, ua.LocalizedText):
        return {"language": v.Locale, "text": v.Text}
    if isinstance(v, ua.StatusCode):
        return v.value
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, ua.NodeId):
        return v.to_string()
    if isinstance(v, datetime) and v.tzinfo is None:
        return v.replace(tzinfo=UTC)
    return v


def decoded(r: dict[str, Any]) -> Any:
    return wire.decode_value(r["valueType"], r["value"], is_array=r.get("array", False))


MQTT_SINK = """\
- type: mqtt
  host: 127.0.0.1
  port: {port}
  client_id: agent-under-test
  batch: {{max_records: 500, max_delay_ms: 100}}
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path / "broker", persistence=True) as b:
        yield b


@pytest.fixture
def subscriber(broker: MosquittoBroker) -> Iterator[Subscriber]:
    with Subscriber(port=broker.port, topic="kamp/v1/test-site/#", client_id="test-subscriber") as s:
        yield s


def start_agent(tmp_path: Path, opc_port: int, mqtt_port: int, *, mqtt: str = "", **kw: Any) -> AgentProcess:
    """The agent on the factory simulator, publishing to mosquitto; `mqtt`: more lines for its MQTT sink."""
    cfg = tmp_path / "agent.yaml"
    sinks = MQTT_SINK.format(port=mqtt_port) + mqtt
    cfg.write_text(factory_config(opc_port=opc_port, data_dir=tmp_path / "data", sinks=sinks, **kw))
    return AgentProcess(cfg, tmp_path / "agent.log").start()


SECRET = "pl4nt-S3cret!"
# A node the server does not have, and a node mapped with the wrong type: both are reported
# and skipped while everything else keeps flowing.
BAD_POINTS = """\
      - {node: "ns=2;s=CNC01.NoSuchSignal", path: Missing, type: Double}
      - {node: "ns=2;s=CNC01.SpindleSpeed", path: SpeedAsInt, type: Int32}
"""


def diag(name: str) -> str:
    return f"ns=2;s=CNC01.Diagnostics.{name}"


@pytest.mark.parametrize("version", [2, 3])
def test_every_type_arrives_exactly(
    tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber, version: int
) -> None:
    """Also with `wire_version: 3` (each record head once per message): the messages are version 3, and
    expanded (the Ledger does it) they say exactly what version 2 says."""
    opc_port = free_port()
    with FactoryThread(port=opc_port, period=0.1, machines=3, alarm_every=3) as fac:
        agent = start_agent(
            tmp_path,
            opc_port,
            broker.port,
            extra_points=BAD_POINTS,
            password=SECRET,
            mqtt=f"  wire_version: {version}\n",
        )
        try:

            def specials_seen() -> bool:
                vals = [decoded(r) for r in received(subscriber).records("data") if r["node"] == diag("Double")]
                return any(math.isnan(v) for v in vals) and math.inf in vals and -math.inf in vals

            wait_until("NaN, INF and -INF of the Double to arrive", specials_seen, timeout=60)
            wait_until("an alarm event", lambda: received(subscriber).records("event"), timeout=60)
            wait_until(
                "the periodic counters",
                lambda: [r for r in received(subscriber).records("status") if r["kind"] == "agent-stats"],
                timeout=30,
            )
        finally:
            assert agent.stop() == 0, agent.log()[-3000:]
        got = received(subscriber, validate=True)
        log = agent.log()

    assert "Traceback" not in log
    versions = {orjson.loads(p)["v"] for t, p in subscriber.messages() if t.endswith("/data")}
    assert versions == {version}
    assert all(b'"h":' in p for t, p in subscriber.messages() if t.endswith("/data")) == (version == 3)
    assert "sending the password for 'operator' unencrypted (allow_plaintext_password is set)" in log
    assert SECRET not in log and all(SECRET.encode() not in p for _, p in subscriber.messages())
    problems = {r["path"]: r for r in got.records("status") if r["kind"] == "node-problem"}
    assert "unknown on the server" in problems["Missing"]["message"]
    assert problems["Missing"]["node"] == "ns=2;s=CNC01.NoSuchSignal"
    assert "server type is Double, the mapping says Int32" in problems["SpeedAsInt"]["message"]
    assert "ns=2;s=CNC01.NoSuchSignal" in log and "skipped" in log
    stats = [r for r in got.records("status") if r["kind"] == "agent-stats"][-1]
    assert stats["values_in"] > 0 and stats["sources"]["factory"]["connected"] is True

    data = got.unique("data")
    nodes = {r["node"] for r in data}
    for t in DIAGNOSTIC_TYPES:
        assert diag(t) in nodes, f"no value of {t} arrived"
    assert diag("DoubleArray") in nodes and diag("Int32Array") in nodes
    checked = 0
    for r in data:
        assert r["status"] == 0 and r["sourceTime"] and r["serverTime"]
        name = r["node"].rsplit(".", 1)[-1]
        if r["node"].startswith("ns=2;s=CNC01.Diagnostics."):
            base = name.removesuffix("Array")
            assert r["valueType"] == EXPECTED_XS[base], r
            assert r.get("array", False) == name.endswith("Array")
        written = dict(fac.written(r["node"]))
        source_time = ts(r["sourceTime"])
        assert source_time in written, f"{r['node']} @ {r['sourceTime']} was never written by the simulator"
        assert same(decoded(r), expected(written[source_time])), (r, written[source_time])
        checked += 1
    assert checked > 200
    big = [decoded(r) for r in data if r["node"] == diag("UInt64")]
    assert max(big) > 2**53 and any(isinstance(r["value"], str) for r in data if r["node"] == diag("UInt64"))
    events = got.unique("event")
    assert events, "no alarm event arrived"
    for e in events:
        assert e["eventType"] == "ns=2;s=MachineAlarmEventType"
        assert e["message"] and isinstance(e["severity"], int)
        assert e["fields"]["SourceName"].lower() == e["shell"].rsplit(":", 1)[-1]


def only(s: SignalInfo) -> bool:
    """The machine signals of CNC01 (not its type diagnostics): enough to prove delivery, quick to check."""
    return s.machine == "CNC01" and not s.name.startswith("Diagnostics")


ONLY = [s for s in catalogue(1) if only(s)]


@pytest.mark.parametrize("synchronous", ["normal", "full"])  # full: every write waits in the buffer's thread
def test_sigkill_loses_nothing_and_gap_covers_downtime(
    tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber, synchronous: str
) -> None:
    opc_port = free_port()
    buffer = f"  synchronous: {synchronous}"
    with FactoryThread(port=opc_port, period=0.05, machines=1) as fac:
        agent = start_agent(tmp_path, opc_port, broker.port, only=only, events=False, buffer=buffer)
        wait_until("data to flow", lambda: len(received(subscriber).records("data")) > 600, timeout=60)
        agent.kill()
        killed_at = datetime.now().astimezone()
        agent = start_agent(tmp_path, opc_port, broker.port, only=only, events=False, buffer=buffer)
        try:
            wait_until(
                "data after the restart",
                lambda: any(ts(r["sourceTime"]) > killed_at for r in received(subscriber).records("data")),
                timeout=60,
            )
            restarted_at = datetime.now().astimezone()
            wait_until("the gap record", lambda: received(subscriber).records("gap"), timeout=30)
        finally:
            assert agent.stop() == 0
        got = received(subscriber, validate=True)
        gaps = [g for g in got.unique("gap") if "unexpectedly" in g["reason"]]
        assert gaps, "the kill left no gap record"
        assert len({e["path"] for g in gaps for e in g["elements"]}) == len(ONLY)
        assert all(ts(g["start"]) <= killed_at for g in gaps)
        twice = got.reissued()
        assert not twice, f"{len(twice)} values arrived twice under different ids: {list(twice.items())[:3]}"
        written = {s.node_id: [t for t, _ in fac.written(s.node_id)] for s in ONLY}
        missing = got.unaccounted(written, until=restarted_at)
        assert not missing, (
            f"{len(missing)} values neither arrived nor are covered by a gap: {missing[:3]}; "
            f"killed {killed_at}, restarted {restarted_at}, gaps {gaps}"
        )


def test_a_broker_outage_loses_nothing_and_is_no_gap(
    tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber
) -> None:
    opc_port = free_port()
    with FactoryThread(port=opc_port, period=0.1, machines=1) as fac:
        # Retries at most a second apart: the broker is used again within a second of its return.
        retries = "  reconnect_initial_s: 0.2\n  reconnect_max_s: 1\n"
        agent = start_agent(tmp_path, opc_port, broker.port, mqtt=retries, only=only, events=False)
        try:
            wait_until("data to flow", lambda: received(subscriber).records("data"), timeout=60)
            broker.stop()
            outage_start = datetime.now().astimezone()
            time.sleep(4)  # the outage itself is the behaviour under test, not a wait for a condition
            broker.start()
            outage_end = datetime.now().astimezone()
            wait_until(
                "values produced after the outage",
                lambda: any(ts(r["sourceTime"]) > outage_end for r in received(subscriber).records("data")),
                timeout=90,
            )
        finally:
            assert agent.stop() == 0
        got = received(subscriber, validate=True)
    arrived = {(r["node"], ts(r["sourceTime"])) for r in got.records("data")}
    during = [(s.node_id, t) for s in ONLY for t, _ in fac.written(s.node_id) if outage_start <= t <= outage_end]
    assert len(during) > 100
    missing = [d for d in during if d not in arrived]
    assert not missing, f"{len(missing)} of {len(during)} values produced during the outage never arrived"
    gaps = [g for g in got.unique("gap") if g["reason"] != "agent was stopped"]
    assert not gaps, "a broker outage is not a collection gap"


def test_server_restart_resubscribes_with_a_gap(
    tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber
) -> None:
    opc_port = free_port()
    with FactoryThread(port=opc_port, period=0.1, machines=1) as fac:
        agent = start_agent(tmp_path, opc_port, broker.port, only=only, events=False)
        try:
            wait_until("data to flow", lambda: received(subscriber).records("data"), timeout=60)
            fac.stop()
            stopped_at = datetime.now().astimezone()
            fac.start()
            wait_until(
                "data from the restarted server",
                lambda: any(ts(r["sourceTime"]) > stopped_at for r in received(subscriber).records("data")),
                timeout=60,
            )
            wait_until("a gap record", lambda: received(subscriber).records("gap"), timeout=30)
            assert agent.alive(), "the agent must recover without a restart of its own"
        finally:
            assert agent.stop() == 0
        got = received(subscriber, validate=True)
        written = {s.node_id: [t for t, _ in fac.written(s.node_id)] for s in ONLY}
    gaps = [g for g in got.unique("gap") if g["reason"] != "agent was stopped"]
    assert len({e["path"] for g in gaps for e in g["elements"]}) == len(ONLY)
    assert all(ts(g["start"]) <= stopped_at <= ts(g["end"]) for g in gaps)
    missing = got.unaccounted(written)
    assert not missing, f"{len(missing)} values neither arrived nor are covered by their element's gap: {missing[:3]}"
    states = [r["kind"] for r in got.records("status")]
    assert "source-disconnected" in states and states.count("source-connected") >= 2
    # The operator's log: the loss once, the recovery once, no library tracebacks or per-retry lines.
    messages = [r["msg"] for r in agent.log_records()]
    assert sum(m.startswith("lost opc.tcp://") for m in messages) == 1, messages
    assert sum(m.startswith("reconnected to opc.tcp://") for m in messages) == 1, messages
    assert not [m for m in messages if "Publish iteration crashed" in m or "was called but connection is closed" in m]
    assert "Traceback" not in agent.log()
