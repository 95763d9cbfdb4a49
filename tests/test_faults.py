"""The delivery promise under faults, end to end: the agent as a process between the factory simulator
and mosquitto, broken on purpose, and every value the server produced accounted for at the receiver
(delivered, or inside a gap of its element). bench/fault_*.py run the same faults longer."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from simulators import faults
from simulators.agentproc import ROOT
from simulators.factory import SignalInfo
from simulators.faults import Bed
from simulators.mosquitto import mosquitto_binary
from tests.helpers import fill, small_disk, unavailable

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
    assert not report.missing, f"{report}: {report.missing[:5]}"
    assert report.reissued == 0, f"{report}: a value was stored twice under different ids"
    assert report.gaps >= 1


@pytest.mark.parametrize("offset", [-3.0, 3.0])
def test_a_device_clock_off_by_3_s_and_a_link_dropped_every_3_s_leave_nothing_unaccounted(
    tmp_path: Path, offset: float
) -> None:
    with Bed(tmp_path, clock_offset=offset, via_proxy=True) as bed:
        report = faults.link_drops(bed, every_s=3.0, duration_s=10.0)
    assert report.values > 200
    assert not report.missing, f"{report}: {report.missing[:5]}"
    assert report.gaps >= 3, f"{report}: every drop is a gap"


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
        time.sleep(8)  # collecting on a full disk
        assert agent.alive(), agent.log()[-3000:]
        filler.unlink()
        bed.broker.start()
        restored = datetime.now(UTC)
        faults.wait_for("values after the recovery", lambda: bed.data_after(restored), 90)
        time.sleep(2)
        stopped_at = datetime.now(UTC)
        assert agent.stop() == 0
        time.sleep(1)
        report = bed.account(until=stopped_at)
        log = agent.log()
    assert not report.missing, f"{report}: {report.missing[:5]}"
    assert report.gaps >= 1, "the full disk lost values: that must be a gap"
    assert "component-failed" not in log and "Traceback" not in log, log[-3000:]
    assert "disk is full" in log or "dropped" in log, "the full disk was not reported"


def test_a_damaged_buffer_with_a_backlog_is_set_aside_and_collection_goes_on(tmp_path: Path) -> None:
    with Bed(tmp_path, broker_up=False) as bed:
        agent = bed.start_agent()
        buffer = bed.data_dir / "buffer-mqtt.db"
        faults.wait_for("a backlog", lambda: buffer.exists() and buffer.stat().st_size > 300_000, 60)
        agent.stop()
        size = buffer.stat().st_size
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
        faults.wait_for(
            "the replayed records",
            lambda: any(t.startswith("kamp/v1/test-site/imm01/") for t, _ in bed.subscriber.messages()),
            60,  # type: ignore[union-attr]
        )
        assert agent.stop() == 0


def test_mqtt_3_1_1_warns_at_start_that_it_cannot_see_refusals(tmp_path: Path) -> None:
    with Bed(tmp_path, mqtt="  protocol: '3.1.1'\n") as bed:
        agent = bed.start_agent()
        faults.wait_for("values", lambda: bed.ledger().records("data"), 60)
        assert agent.stop() == 0
    assert "uses MQTT 3.1.1, which cannot tell a refused publish from a delivered one" in agent.log()


def test_sigterm_during_a_backlog_flushes_within_its_deadline_and_keeps_the_rest(tmp_path: Path) -> None:
    with Bed(tmp_path, broker_up=False, period=0.02) as bed:
        agent = bed.start_agent()
        buffer = bed.data_dir / "buffer-mqtt.db"
        faults.wait_for("a backlog", lambda: buffer.exists() and buffer.stat().st_size > 1_000_000, 90)
        bed.broker.start()
        started = time.monotonic()
        code = agent.stop(timeout=60)
        took = time.monotonic() - started
        assert code == 0 and took < 30, (code, took)
        restarted = datetime.now(UTC)
        agent = bed.start_agent()
        faults.wait_for("values after the restart", lambda: bed.data_after(restarted), 60)
        time.sleep(3)
        stopped_at = datetime.now(UTC)
        assert agent.stop() == 0
        time.sleep(1)
        report = bed.account(until=stopped_at)
    assert not report.missing, f"{report}: {report.missing[:5]}"
