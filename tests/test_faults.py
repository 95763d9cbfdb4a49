"""The delivery promise under faults, end to end: the agent as a process between the factory simulator
and mosquitto, broken on purpose, and every value the server produced accounted for at the receiver
(delivered, or inside a gap of its element). bench/fault_*.py run the same faults longer."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from simulators import faults
from simulators.accounting import Ledger, ts
from simulators.agentproc import ROOT, AgentProcess
from simulators.factory import SignalInfo
from simulators.faults import Bed
from simulators.mosquitto import Subscriber, mosquitto_binary
from simulators.nodeopcua.launcher import NodeOpcuaServer, node_opcua_available
from simulators.ports import free_port
from tests.helpers import fill, small_disk, unavailable
from tests.mqtt_broker import MosquittoBroker

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(300)]


@pytest.fixture(autouse=True)
def _needs_mosquitto() -> None:
    try:
        mosquitto_binary()
    except RuntimeError as e:
        unavailable(str(e))


def test_five_kills_at_random_moments_some_before_the_restart_connects_leave_nothing_unaccounted(
    tmp_path: Path,
) -> None:
    with Bed(tmp_path) as bed:
        report = faults.kills(bed, 5, random.Random(7))
    assert report.values > 200
    assert not report.missing and not report.invented, f"{report}: {report.missing[:5]}"
    assert report.reissued == 0, f"{report}: a value was stored twice under different ids"
    assert report.gaps >= 1


@pytest.mark.parametrize("offset", [-3.0, 3.0])
def test_a_device_clock_off_by_3_s_and_a_link_dropped_every_3_s_leave_nothing_unaccounted(
    tmp_path: Path, offset: float
) -> None:
    with Bed(tmp_path, clock_offset=offset, via_proxy=True) as bed:
        report = faults.link_drops(bed, every_s=3.0, duration_s=9.0)  # drops at 3, 6 and 9 s
    assert report.values > 200
    assert not report.missing and not report.invented, f"{report}: {report.missing[:5]}"
    drops = [g for g in bed.ledger().unique("gap") if g["reason"] != "agent was stopped"]
    assert len(drops) >= 3, f"{report}: every drop is a gap"


def records_of(bed: Bed, lane: str, kind: str) -> list[dict[str, object]]:
    return [r for r in bed.ledger().records(lane) if r.get("kind") == kind]


def test_a_full_disk_with_the_broker_down_recovers_by_itself_and_loses_nothing_unsaid(tmp_path: Path) -> None:
    """The data directory on a small file system; the broker down; then the disk fills up completely.
    No part of the agent dies, what it could not keep is a gap, and once there is space and a broker
    again everything it kept arrives, with nobody having done anything to the agent."""
    with (
        small_disk(tmp_path / "disk", 48) as disk,
        Bed(tmp_path, broker_up=False, data_dir=disk / "data", buffer="  min_free_mb: 2\n  reserve_mb: 4") as bed,
    ):
        agent = bed.start_agent()
        faults.wait_for("a backlog", lambda: (disk / "data" / "buffer-mqtt.db").exists(), 30)
        time.sleep(3)
        filler = fill(disk)
        # Collecting on the full disk until what it could not keep is dropped and reported (the quota's
        # report comes once a drop episode is over, or after a minute of one).
        faults.wait_for("the full disk's losses reported", lambda: "dropped" in agent.log(), 90)
        assert agent.alive(), agent.log()[-3000:]
        filler.unlink()
        bed.broker.start()
        report = faults.finish(bed, agent, datetime.now(UTC), "values after the recovery")
        log = agent.log()
    assert not report.missing and not report.invented, f"{report}: {report.missing[:5]}"
    lost = [g for g in bed.ledger().unique("gap") if "dropped" in g["reason"]]
    assert lost, f"the full disk lost values: that must be a gap ({report})"
    assert "component-failed" not in log and "Traceback" not in log, log[-3000:]
    assert "disk is full" in log or "dropped" in log, "the full disk was not reported"


def on_disk(buffer: Path) -> int:
    """The buffer's file and its WAL: the file alone grows only at a checkpoint (after some 4 MB of WAL)."""
    return sum(p.stat().st_size for p in (buffer, Path(f"{buffer}-wal")) if p.exists())


def _two_machines(s: SignalInfo) -> bool:
    """CNC01's and IMM01's machine signals: twice the values per round, for a backlog that grows quickly."""
    return s.machine in ("CNC01", "IMM01") and not s.name.startswith("Diagnostics")


def test_a_damaged_buffer_with_a_backlog_is_set_aside_and_collection_goes_on(tmp_path: Path) -> None:
    with Bed(tmp_path, broker_up=False, period=0.02, machines=2, only=_two_machines) as bed:
        agent = bed.start_agent()
        buffer = bed.data_dir / "buffer-mqtt.db"
        faults.wait_for("a backlog", lambda: on_disk(buffer) > 1_000_000, 60)
        agent.stop()
        size = buffer.stat().st_size  # the WAL is in the file now
        assert size > 300_000, f"a backlog of {size} bytes is too small to damage in the middle"
        with buffer.open("r+b") as raw:  # a run of bad sectors in the middle of the backlog
            raw.seek(size // 2 // 4096 * 4096)
            raw.write(b"\xa5" * 3 * 4096)
        bed.broker.start()
        restarted = datetime.now(UTC)
        agent = bed.start_agent()
        faults.wait_for("values after the restart", lambda: bed.data_after(restarted), 60)
        faults.wait_for("the report", lambda: records_of(bed, "status", "buffer-damaged"), 30)
        assert agent.stop() == 0
    report = records_of(bed, "status", "buffer-damaged")[0]
    assert int(str(report["recovered"])) > 0 and "moved to" in str(report["message"])
    assert list(bed.data_dir.glob("buffer-mqtt.db.damaged-*")), "the damaged file is kept for analysis"
    ledger = bed.ledger(validate=True)
    by_id: dict[str, set[tuple[str, str]]] = {}
    for r in ledger.records("data"):
        by_id.setdefault(r["id"], set()).add((r["node"], r["sourceTime"]))
    assert all(len(v) == 1 for v in by_id.values()), "an id was given to two different values"


def test_a_lost_wal_is_reported_and_no_id_is_given_twice(tmp_path: Path) -> None:
    with Bed(tmp_path, broker_up=False) as bed:
        agent = bed.start_agent()
        buffer = bed.data_dir / "buffer-mqtt.db"
        faults.wait_for("a backlog in the WAL", lambda: Path(f"{buffer}-wal").exists(), 60)
        time.sleep(2)
        agent.kill()
        Path(f"{buffer}-wal").unlink()
        bed.broker.start()
        restarted = datetime.now(UTC)
        agent = bed.start_agent()
        faults.wait_for("values after the restart", lambda: bed.data_after(restarted), 60)
        faults.wait_for("the report", lambda: records_of(bed, "status", "buffer-rolled-back"), 30)
        assert agent.stop() == 0
    ledger = bed.ledger(validate=True)
    by_id: dict[str, set[tuple[str, str]]] = {}
    for r in ledger.records("data"):
        by_id.setdefault(r["id"], set()).add((r["node"], r["sourceTime"]))
    assert all(len(v) == 1 for v in by_id.values()), "an id was given to two different values"


def _two_machines_and_a_long_string(s: SignalInfo) -> bool:
    """CNC01's and IMM01's machine signals, and CNC01's 3 KB string (larger than the broker takes)."""
    return s.machine in ("CNC01", "IMM01") and (not s.name.startswith("Diagnostics") or s.name == "Diagnostics.String")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_a_refusing_broker_is_named_and_refused_records_are_dead_lettered_then_replayed(tmp_path: Path) -> None:
    """MQTT 5: the ACL denies one machine's topics and one record is larger than the broker takes.
    Nothing is deleted that was not delivered or kept as a dead letter; the refusal is named; the
    dead letters can be listed while the agent runs, and replayed once the ACL is fixed."""
    acl = tmp_path / "acl"
    acl.write_text(
        "topic read kamp/v1/#\ntopic write kamp/v1/test-site/cnc01/#\ntopic write kamp/v1/test-site/_agent/#\n"
    )
    conf = [f"acl_file {acl}", "max_packet_size 3000"]
    with Bed(tmp_path, machines=2, only=_two_machines_and_a_long_string, broker_conf=conf) as bed:
        agent = bed.start_agent()
        refused = "refused for good on kamp/v1/test-site/imm01"
        faults.wait_for("the broker's refusal", lambda: refused in agent.log(), 60)
        faults.wait_for("the oversized record", lambda: "larger than the far end takes" in agent.log(), 60)
        listed = _cli("dead-letter", "list", "-c", str(bed.config), "--json", "--limit", "5000")
        replay_while_running = _cli("dead-letter", "replay", "-c", str(bed.config))
        assert agent.stop() == 0
        log = agent.log()
        letters = [orjson.loads(line) for line in listed.stdout.splitlines()]
        assert listed.returncode == 0 and letters, listed.stderr
        assert {d["asset"] for d in letters} >= {"imm01"}
        assert any("Not authorized" in d["reason"] for d in letters)
        assert any("larger than the far end takes" in d["reason"] and d["asset"] == "cnc01" for d in letters)
        assert replay_while_running.returncode == 2 and "agent runs" in replay_while_running.stderr
        assert "refused for good on kamp/v1/test-site/imm01/data" in log
        assert log.count("refused for good on kamp/v1/test-site/cnc01/data") == 1, "once a minute, not per record"
        delivered = {r["id"] for r in bed.ledger().records("data")}
        assert not delivered & {d["recordId"] for d in letters}, "a dead letter was also delivered"
        assert not any(t.startswith("kamp/v1/test-site/imm01/") for t, _ in bed.subscriber.messages())  # type: ignore[union-attr]

        acl.write_text("topic readwrite kamp/v1/#\n")
        bed.broker.stop()
        bed.broker.start()
        replayed = _cli("dead-letter", "replay", "-c", str(bed.config), "--sink", "mqtt")
        assert replayed.returncode == 0, replayed.stderr
        agent = bed.start_agent()
        subscriber = bed.subscriber
        assert subscriber is not None
        faults.wait_for(
            "the replayed records",
            lambda: any(t.startswith("kamp/v1/test-site/imm01/") for t, _ in subscriber.messages()),
            60,
        )
        assert agent.stop() == 0


def test_mqtt_3_1_1_warns_at_start_that_it_cannot_see_refusals(tmp_path: Path) -> None:
    with Bed(tmp_path, mqtt="  protocol: '3.1.1'\n") as bed:
        agent = bed.start_agent()
        faults.wait_for("values", lambda: bed.ledger().records("data"), 60)
        assert agent.stop() == 0
    assert "uses MQTT 3.1.1, which cannot tell a refused publish from a delivered one" in agent.log()


def test_sigterm_during_a_backlog_flushes_within_its_deadline_and_keeps_the_rest(tmp_path: Path) -> None:
    with Bed(tmp_path, broker_up=False, period=0.02, machines=2, only=_two_machines) as bed:
        agent = bed.start_agent()
        buffer = bed.data_dir / "buffer-mqtt.db"
        # Some 6,000 records: as many as a backlog of CNC01's alone had when its file first passed 1 MB.
        faults.wait_for("a backlog", lambda: on_disk(buffer) > 2_500_000, 90)
        bed.broker.start()
        started = time.monotonic()
        code = agent.stop(timeout=60)
        took = time.monotonic() - started
        assert code == 0 and took < 30, (code, took)
        restarted = datetime.now(UTC)
        agent = bed.start_agent()
        report = faults.finish(bed, agent, restarted, "values after the restart")
    assert not report.missing and not report.invented, f"{report}: {report.missing[:5]}"


def test_a_black_holed_link_is_noticed_within_a_bound_and_the_silence_is_a_gap(tmp_path: Path) -> None:
    """The cable pulled behind a switch: the connection stays open and nothing comes. The agent must
    notice (its publish watchdog) rather than wait forever, and cover the silence with a gap."""
    with Bed(tmp_path, via_proxy=True) as bed:
        assert bed.proxy is not None
        agent = bed.start_agent()
        faults.wait_for("the first values", lambda: bed.ledger().records("data"), 60)
        bed.proxy.set_blackhole(True)
        holed = time.monotonic()
        faults.wait_for("the agent to notice", lambda: "lost opc.tcp" in agent.log(), 30)
        noticed = time.monotonic() - holed
        bed.proxy.set_blackhole(False)
        report = faults.finish(bed, agent, datetime.now(UTC), "values after the link came back")
    assert noticed < 15, f"noticed after {noticed:.0f} s (publishing 100 ms x 10 keep-alives x 2 + 4 s time-out)"
    assert not report.missing and not report.invented, f"{report}: {report.missing[:5]}"
    gaps = [g for g in bed.ledger().unique("gap") if g["reason"] != "agent was stopped"]
    assert gaps, "the silence was not a gap"


def test_ten_server_restarts_in_a_minute_are_ten_gaps_and_nothing_unaccounted(tmp_path: Path) -> None:
    with Bed(tmp_path) as bed:
        agent = bed.start_agent()
        faults.wait_for("the first values", lambda: bed.ledger().records("data"), 60)
        for _ in range(10):
            bed.factory.stop()
            bed.factory.start()
            time.sleep(1.5)
        report = faults.finish(bed, agent, datetime.now(UTC), "values after the last restart")
        log = agent.log()
    assert not report.missing and not report.invented, f"{report}: {report.missing[:5]}"
    gaps = [g for g in bed.ledger().unique("gap") if g["reason"] != "agent was stopped"]
    assert len(gaps) >= 8, f"{len(gaps)} gap records for 10 restarts"  # a restart inside a backoff merges into one
    assert "Traceback" not in log and "component-failed" not in log


def test_the_servers_queue_overflow_is_a_gap_of_each_element_it_hit(tmp_path: Path) -> None:
    """node-opcua sets the overflow bit when an item's queue drops values (asyncua's server does not).
    Sampled every 10 ms, queue 2 (with 1 a queue never overflows: it only keeps the newest), values every
    20 ms, a publish every 500 ms: most values are discarded by the server, and wherever it says so (the
    overflow bit on the value after the loss), the loss must lie inside an overflow gap of that element.
    (Values lost to sampling carry no such bit: OPC UA does not tell a client about them.)"""
    reason = node_opcua_available()
    if reason is not None:
        unavailable(reason)
    with (
        NodeOpcuaServer(port=free_port(), vars=5, period_ms=20) as server,
        MosquittoBroker(tmp_path / "broker") as broker,
        Subscriber(port=broker.port, topic="kamp/v1/#") as sub,
    ):
        points = "\n".join(
            f"      - {{node: '{node}', path: Var_{i}, type: Double, sampling_ms: 10, queue_size: 2}}"
            for i, node in enumerate(server.variable_ids())
        )
        config = tmp_path / "agent.yaml"
        config.write_text(
            f"site: {{id: s}}\nagent: {{data_dir: {tmp_path / 'data'}, status_interval_s: 1}}\n"
            f"sources:\n  - {{id: n, endpoint: '{server.endpoint}', publishing_interval_ms: 500}}\n"
            "equipment:\n  - id: load\n    source: n\n"
            "    nameplate: {manufacturer_name: M, product_designation: P, uri_of_product: 'https://x', "
            "order_code: O}\n"
            f"    points:\n{points}\n"
            f"sinks:\n  - {{type: mqtt, host: 127.0.0.1, port: {broker.port}, batch: {{max_delay_ms: 100}}}}\n"
        )
        agent = AgentProcess(config, tmp_path / "agent.log").start()
        faults.wait_for("values", lambda: len(Ledger.of(sub.messages(), validate=False).records("data")) > 40, 60)
        time.sleep(2)
        assert agent.stop() == 0
        ledger = Ledger.of(sub.messages())
    data = ledger.records("data")
    assert any(r["status"] & 0x480 == 0x480 for r in data), "no overflow bit: the scenario did not happen"
    spans: dict[str, list[tuple[datetime, datetime]]] = {}
    for g in ledger.unique("gap"):
        if "overflowed" in g["reason"]:
            for e in g["elements"]:
                # No start: the element's first value already had the bit (values were discarded before it).
                start = ts(e["start"]) if e["start"] is not None else datetime.min.replace(tzinfo=UTC)
                spans.setdefault(e["path"], []).append((start, ts(e["end"])))
    flagged = 0
    for path in {r["path"] for r in data}:
        values = sorted((ts(r["sourceTime"]), r["status"]) for r in data if r["path"] == path)
        for (t1, _), (t2, status) in itertools.pairwise(values):
            if status & 0x480 == 0x480:  # the server discarded values between these two
                flagged += 1
                assert any(s <= t1 and t2 <= e for s, e in spans.get(path, [])), (
                    f"{path}: {t1.time()} .. {t2.time()} outside {[(s.time(), e.time()) for s, e in spans[path]]}"
                )
    assert flagged > 10


def test_sessions_the_server_invalidates_are_noticed_and_replaced_within_a_bound(tmp_path: Path) -> None:
    """The server forgets every session (a PLC's purge) while the TCP connections stay up."""
    with Bed(tmp_path) as bed:
        agent = bed.start_agent()
        faults.wait_for("the first values", lambda: bed.ledger().records("data"), 60)
        assert bed.factory.invalidate_sessions() >= 1
        purged = time.monotonic()
        faults.wait_for("the agent to notice", lambda: "lost opc.tcp" in agent.log(), 30)
        noticed = time.monotonic() - purged
        report = faults.finish(bed, agent, datetime.now(UTC), "values in a new session")
    assert noticed < 15, f"noticed after {noticed:.0f} s"
    assert not report.missing and not report.invented, f"{report}: {report.missing[:5]}"
