"""The agent's own usage events (agent/usage.py) and the usage-log sink (uploader/sflog/sink.py):
CLI commands append to a spool, the running agent takes it onto the usage lane, the sflog sink's
buffer takes that lane only, and the sender calls the (fake) log API. Real processes, files and
SQLite; the fake API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent import usage
from simulators.agentproc import ROOT, AgentProcess
from simulators.factory import FactoryThread
from simulators.factory.agentconfig import factory_config
from simulators.ports import free_port
from tests.helpers import wait_until
from uploader.sflog import KST, WindowStore
from uploader.sflog.sink import SfLogSink

KEY = "usage-Key-5a8e2c"


def test_a_cli_event_travels_through_the_spool_as_written(tmp_path: Path) -> None:
    at = datetime(2026, 11, 30, 3, 4, 5, 678000, tzinfo=UTC)
    event = usage.record(tmp_path, "DO6004", 12345, "edge-agent export --format aasx", user="kim", now=at)
    taken = usage.take(tmp_path)
    assert taken.refused == 0 and len(taken.records) == 1
    lane, ts, body = taken.records[0]
    assert lane == "usage" and ts == at.timestamp()
    assert orjson.loads(body) == {
        "event": event.id,
        "time": "2026-11-30T03:04:05.678000Z",
        "use": "DO6004",
        "user": "kim",
        "ip": "127.0.0.1",
        "bytes": 12345,
        "action": "edge-agent export --format aasx",
    }
    # Taken, not yet stored: the file stays until done(), and a second take (a crash in between) sees it again.
    again = usage.take(tmp_path)
    assert [orjson.loads(b)["event"] for _, _, b in again.records] == [event.id]
    again.done()
    assert usage.take(tmp_path).records == []
    assert list(usage.spool_dir(tmp_path).iterdir()) == []


def test_the_os_user_acts_for_the_cli(tmp_path: Path) -> None:
    event = usage.record(tmp_path, "DO6003", 0, "edge-agent dead-letter list")
    assert event.user == usage.os_user() and event.user
    assert event.ip == "127.0.0.1"


def test_an_event_the_api_would_refuse_is_refused_at_the_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="DO6007"):
        usage.record(tmp_path, "DO6007", 0, "badge")
    with pytest.raises(ValueError, match="sysUser"):
        usage.record(tmp_path, "DO6004", 0, "x", user="u" * 61)
    assert not (usage.spool_dir(tmp_path) / usage.SPOOL).exists()
    (tmp_path / "file-not-dir").write_text("")  # now the spool directory cannot be made
    problem = usage.note(tmp_path / "file-not-dir", "DO6004", 1, "edge-agent export")
    assert problem is not None and "could not be recorded" in problem and "edge-agent export" in problem


def test_bad_lines_are_kept_aside_with_their_reason_and_the_rest_taken(tmp_path: Path) -> None:
    good = usage.record(tmp_path, "DO6005", 7, "edge-agent dead-letter replay", user="lee")
    spool = usage.spool_dir(tmp_path) / usage.SPOOL
    with spool.open("ab") as f:
        f.write(b'{"event": "e2", "time": "2026-11-30T00:00:00Z", "use": "DO6004", "user": "' + b"u" * 70 + b'",')
        f.write(b' "ip": "127.0.0.1", "bytes": 1}\n')
        f.write(b'{"event": "torn", "time": "2026-11-3')  # a crash in the middle of a line
    taken = usage.take(tmp_path)
    assert [orjson.loads(b)["event"] for _, _, b in taken.records] == [good.id]
    assert taken.refused == 2
    refused = [orjson.loads(line) for line in (usage.spool_dir(tmp_path) / usage.REFUSED).read_bytes().splitlines()]
    assert refused[0]["reason"].split(": ", 1)[1].startswith("sysUser: 70 characters")
    assert "not JSON" in refused[1]["reason"] and refused[1]["line"].startswith('{"event": "torn"')


def _writer(data_dir: str, n: int, who: str) -> None:
    for i in range(n):
        usage.record(Path(data_dir), "DO6003", i, f"reader {who}", user=who)


def test_writers_racing_the_agent_lose_no_event_and_repeat_none(tmp_path: Path) -> None:
    """Four processes append while the spool is taken over and over: every event once."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 150, f"w{k}")) for k in range(4)]
    for p in procs:
        p.start()
    seen: list[str] = []
    deadline = datetime.now(UTC) + timedelta(seconds=120)
    while any(p.is_alive() for p in procs) and datetime.now(UTC) < deadline:
        taken = usage.take(tmp_path)
        seen += [orjson.loads(b)["event"] for _, _, b in taken.records]
        taken.done()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    taken = usage.take(tmp_path)
    seen += [orjson.loads(b)["event"] for _, _, b in taken.records]
    taken.done()
    assert len(seen) == 600 and len(set(seen)) == 600


# -- the sink -----------------------------------------------------------------------------------


def _payload(lane: str, records: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"v": 2, "origin": "0123456789ab", "site": "s", "lane": lane, "records": records})


def test_the_sink_confirms_once_the_events_are_on_disk_and_refuses_what_does_not_fit(tmp_path: Path) -> None:
    asyncio.run(_sink_confirms(tmp_path))


async def _sink_confirms(tmp_path: Path) -> None:
    from agent.backoff import Backoff
    from uploader.sflog import SfLogClient, SfLogSender
    from uploader.sink import Message, Partial, Rejected

    client = SfLogClient("http://127.0.0.1:9", KEY)
    sender = SfLogSender(tmp_path / "sflog", client, delays=Backoff(initial=1, maximum=2).delays)
    sink = SfLogSink(sender, client)
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    ok = {"id": "o-1", "event": "ev-1", "time": now, "use": "DO6004", "user": "kim", "ip": "127.0.0.1", "bytes": 5}
    bad = {**ok, "id": "o-2", "event": "ev-2", "use": "DO6007"}
    out = await sink.send(
        [
            Message("usage/_agent", _payload("usage", [ok, bad])),
            Message("data/m", _payload("data", [ok])),
            Message("usage/_agent", _payload("usage", [ok])),  # the same event again
        ],
        timeout=5,
    )
    assert isinstance(out[0], Partial) and out[0].refused[0][0] == 1 and "DO6007" in out[0].refused[0][1]
    assert isinstance(out[1], Rejected) and "usage records only" in out[1].reason
    assert out[2] is True
    await sink.stop()
    store = WindowStore(tmp_path / "sflog")
    try:
        assert store.pending_windows() == 1  # one event, counted once, in its window
    finally:
        store.close()


# -- in the running agent -----------------------------------------------------------------------


@pytest.fixture
def log_api(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.sflogapi", "--port", str(port), "--key", KEY],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "sflogapi.log").open("wb"),
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"READY http://127.0.0.1:{port}"
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(10)


def _calls(port: int) -> list[dict[str, Any]]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_calls", timeout=5) as r:
        result: list[dict[str, Any]] = orjson.loads(r.read())
        return result


def _records(path: Path, lane: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        msg = orjson.loads(line)
        if msg["lane"] == lane:
            out += msg["records"]
    return out


@pytest.mark.timeout(240)
def test_cli_use_reaches_the_usage_lane_and_the_log_api(
    tmp_path: Path, log_api: tuple[int, subprocess.Popen[str]]
) -> None:
    port, _ = log_api
    data_dir = tmp_path / "data"
    records = tmp_path / "records.jsonl"
    sinks = f"""- type: file
  path: {records}
  batch: {{max_delay_ms: 100}}
- type: sflog
  url: http://127.0.0.1:{port}
  crtfc_key: ${{SFLOG_KEY}}
  settle_s: 0
  batch: {{max_delay_ms: 100}}
"""
    with FactoryThread(port=free_port(), period=0.1, machines=1) as factory:
        config = tmp_path / "agent.yaml"
        config.write_text(
            factory_config(opc_port=factory.port, data_dir=data_dir, sinks=sinks, machines=1, events=False)
        )
        env = {**os.environ, "SFLOG_KEY": KEY}
        os.environ["SFLOG_KEY"] = KEY
        try:
            agent = AgentProcess(config, tmp_path / "agent.log").start()
            try:
                wait_until("data in the file sink", lambda: _records(records, "data"), 60)
                out = tmp_path / "shells.json"
                done = subprocess.run(
                    [sys.executable, "-m", "agent.cli", "export", "-c", str(config), "-o", str(out)],
                    cwd=ROOT, env=env, capture_output=True, timeout=120,
                )  # fmt: skip
                assert done.returncode == 0, done.stderr
                used = wait_until("the export on the usage lane", lambda: _records(records, "usage"), 30)
                assert len(used) == 1
                assert used[0]["use"] == "DO6004" and used[0]["bytes"] == out.stat().st_size
                assert used[0]["user"] == usage.os_user() and used[0]["ip"] == "127.0.0.1"
                assert used[0]["action"] == "edge-agent export --format json"
                # A command run 11 minutes ago (its window has closed): the sender calls the API with it.
                earlier = datetime.now(UTC) - timedelta(minutes=11)
                past = usage.record(data_dir, "DO6005", 321, "edge-agent dead-letter replay", now=earlier)
                same_day = earlier.astimezone(KST).date() == datetime.now(KST).date()
                if same_day:
                    calls = wait_until("a call to the log API", lambda: _calls(port), 30)
                    assert len(calls) == 1 and calls[0]["key"] == "known" and calls[0]["code"] == "AP1002"
                    fields = calls[0]["fields"]
                    assert fields["useSe"] == "DO6005" and fields["dataUsgqty"] == 321
                    assert fields["logDt"] == earlier.astimezone(KST).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
                    assert fields["sysUser"] == usage.os_user() and fields["conectIp"] == "127.0.0.1"
                else:  # within the first minutes of a KST day: the event's day is over, it goes stale
                    show = subprocess.run(
                        [sys.executable, "-m", "agent.cli", "usage", "show", "-c", str(config)],
                        cwd=ROOT, env=env, capture_output=True, timeout=60, text=True,
                    )  # fmt: skip
                    assert show.returncode == 0, show.stderr
                assert past.id in {r["event"] for r in wait_until("both", lambda: _records(records, "usage")[1:], 30)}
            finally:
                assert agent.stop() == 0, agent.log()[-3000:]
        finally:
            os.environ.pop("SFLOG_KEY", None)
    # The usage-log sink's buffer took the usage lane only: nothing it refused, nothing left.
    assert not (data_dir / "dead-letters.db").exists() or _dead_letters(config, env) == 0
    assert [p.name for p in usage.spool_dir(data_dir).iterdir()] == [usage.CONFIG_SEEN]  # no spool file left
    assert KEY not in agent.log()
    show = subprocess.run(
        [sys.executable, "-m", "agent.cli", "usage", "show", "-c", str(config)],
        cwd=ROOT, env=env, capture_output=True, timeout=60, text=True,
    )  # fmt: skip
    assert show.returncode == 0 and "sflog: sending" in show.stdout, show.stdout + show.stderr
    assert KEY not in show.stdout + show.stderr


def _dead_letters(config: Path, env: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "dead-letter", "list", "-c", str(config)],
        cwd=ROOT, env=env, capture_output=True, timeout=60, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1].split(" of ")[1].split()[0])


def test_usage_resume_clears_a_stop_the_api_asked_for(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config = tmp_path / "agent.yaml"
    config.write_text(
        factory_config(
            opc_port=4840,
            data_dir=data_dir,
            sinks=f"- type: sflog\n  url: https://log.example.kr/apisvc\n  crtfc_key: {KEY}\n",
            machines=1,
            events=False,
        )
    )
    config.chmod(0o600)
    store = WindowStore(data_dir / "sflog")
    store.ledger.stop("AP1030 수집 대상이 아닙니다")
    store.close()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent.cli", *args, "-c", str(config)],
            cwd=ROOT, capture_output=True, timeout=60, text=True,
        )  # fmt: skip

    shown = cli("usage", "show")
    assert shown.returncode == 0 and "STOPPED (AP1030" in shown.stdout
    resumed = cli("usage", "resume")
    assert resumed.returncode == 0 and "resumed: sending again" in resumed.stdout
    assert "sflog: sending" in cli("usage", "show").stdout
    assert "was not stopped" in cli("usage", "resume").stdout
    for out in (shown, resumed):
        assert KEY not in out.stdout + out.stderr


def test_the_reference_receiver_stores_usage_records_and_refuses_ones_the_api_would(tmp_path: Path) -> None:
    import aiohttp

    from tests.test_cloud_receiver import ORIGIN, header, post, run, stored_ids
    from uploader import wire

    when = datetime(2026, 11, 30, 3, 4, 5, tzinfo=UTC)
    good = wire.usage_body(
        event="ev-1", time=when, use="DO6004", user="kim", ip="127.0.0.1", data_bytes=9, action="edge-agent export"
    )
    in_out = wire.usage_body(event="ev-2", time=when, use="DO6007", user="kim", ip="127.0.0.1", data_bytes=0)
    body = b"[" + wire.payload(header("usage", asset="_agent"), [f"{ORIGIN}-1", f"{ORIGIN}-2"], [good, in_out]) + b"]"

    async def scenario(s: aiohttp.ClientSession) -> None:
        answer = await post(s, body, key="usage-1")
        assert answer.status == 200 and answer.json["accepted"] == 1, answer.json
        [rejected] = answer.json["rejected"]
        assert rejected["id"] == f"{ORIGIN}-2" and "use: 'DO6007' is not one of" in rejected["reason"]

    db = tmp_path / "cloud.sqlite3"
    run(db, scenario)
    assert stored_ids(db) == [f"{ORIGIN}-1"]


def test_a_changed_configuration_is_recorded_once_when_it_is_applied(tmp_path: Path) -> None:
    import pwd

    config = tmp_path / "agent.yaml"
    config.write_text("site: {id: a}\n")
    data_dir = tmp_path / "data"
    assert usage.config_applied(data_dir, config) is None  # the first start saw no change
    assert usage.config_applied(data_dir, config) is None
    config.write_text("site: {id: b}  # 설비 추가\n")
    event = usage.config_applied(data_dir, config)
    assert event is not None and event.use == "DO6005" and event.data_bytes == len(config.read_bytes())
    assert event.user == pwd.getpwuid(config.stat().st_uid).pw_name and event.ip == "127.0.0.1"
    assert usage.config_applied(data_dir, config) is None  # applied once, recorded once
    [row] = usage.take(data_dir).records
    assert orjson.loads(row[2])["action"] == "configuration agent.yaml changed and applied"
