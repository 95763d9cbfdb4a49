"""Control writes (agent/control.py, adapters/opcua/write.py) against the real factory simulator: the
guard refuses before connecting, the server's answer is the result, every attempt that reached the
server is in the usage spool (DO6005 and a control record), and a running agent turns it into a
usage record and a `control-write` status record. All on 127.0.0.1."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.opcua.pki import Pki
from adapters.opcua.spec import Endpoint
from adapters.opcua.write import Unreachable, write_value
from agent import control, usage
from agent.config import Config, ConfigError, parse, secrets
from simulators.agentproc import ROOT, AgentProcess
from simulators.factory import FactoryThread, catalogue
from simulators.factory.agentconfig import factory_config
from simulators.factory.server import server_certificate
from simulators.ports import free_port
from tests.helpers import file_records, wait_until

FEED = "ns=2;s=CNC01.Control.FeedOverride"
PROGRAM = "ns=2;s=CNC01.Control.ProgramSelect"
STATE = "ns=2;s=CNC01.State"
CONTROL_POINTS = f"""\
      - node: "{FEED}"
        path: Control.FeedOverride
        type: Double
      - node: "{PROGRAM}"
        path: Control.ProgramSelect
        type: String
"""
ALLOW = """\
  allow:
    - {machine: cnc01, element: Control.FeedOverride, min: 0, max: 150}
    - {machine: cnc01, element: Control.ProgramSelect, values: ["P100", "P200"]}
    - {machine: cnc01, element: State}
"""
ENABLED = "control:\n  enabled: true\n" + ALLOW


def config_text(
    tmp_path: Path, port: int, control_block: str = ENABLED, sinks: str | None = None, source: str = ""
) -> str:
    out = tmp_path / "records.jsonl"
    text = factory_config(
        opc_port=port,
        data_dir=tmp_path / "data",
        sinks=sinks or f"- type: file\n  path: {out}\n  batch: {{max_delay_ms: 50}}",
        machines=1,
        extra_points=CONTROL_POINTS,
        only=lambda s: s.name in ("State", "FeedRate"),
        events=False,
        source=source,
    )
    return text + control_block


def make_config(tmp_path: Path, port: int, control_block: str = ENABLED, **kw: Any) -> Config:
    return parse(config_text(tmp_path, port, control_block, **kw))


def do_write(cfg: Config, machine: str, element: str, value: str) -> control.ControlResult:
    return asyncio.run(control.write(cfg, machine, element, value, user="kim", ip="10.0.0.7"))


def spool(data_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """What the agent would take from the spool: (lane, record), the files left in place."""
    return [(lane, orjson.loads(body)) for lane, _, body in usage.take(data_dir).records]


@pytest.fixture(scope="module")
def factory() -> Iterator[FactoryThread]:
    with FactoryThread(port=free_port(), period=0.1, machines=1) as f:
        yield f


# -- the simulator's control nodes -------------------------------------------------------------------


def test_the_simulator_has_writable_control_nodes_outside_the_catalogue(factory: FactoryThread) -> None:
    assert not any("Control" in s.node_id for s in catalogue(3)), "control nodes are not signals"
    assert factory.read(PROGRAM) == ""
    assert isinstance(factory.read(FEED), float)
    ep = Endpoint(id="factory", url=factory.endpoint, timeout_s=5)
    # The feed override scales the CNC's cutting feed: 50 % keeps every cutting feed under 1000 mm/min.
    result = asyncio.run(write_value(ep, FEED, "Double", 50.0, pki=None, own_certificate=None))
    assert result.ok and result.read_back == 50.0, result
    machine = factory.plant.machine("CNC01")
    wait_until("the model to take the override", lambda: machine.feed_override == 50.0, 10)
    since = datetime.now(UTC)

    def cutting() -> list[float]:
        return [float(v) for t, v in factory.written("ns=2;s=CNC01.FeedRate") if t > since and 0 < float(v) < 30000]

    feeds = wait_until("cutting feeds after the override", lambda: len(cutting()) >= 5 and cutting(), 30)
    assert max(feeds) < 1000, feeds
    # A value of the wrong type: the server's own check answers, as a failed result.
    wrong = asyncio.run(write_value(ep, FEED, "String", "fast", pki=None, own_certificate=None))
    assert not wrong.ok and wrong.status == "BadTypeMismatch" and wrong.old == 50.0 and wrong.read_back is None
    asyncio.run(write_value(ep, FEED, "Double", 100.0, pki=None, own_certificate=None))


def test_an_unreachable_server_is_a_clear_exception() -> None:
    port = free_port()
    ep = Endpoint(id="plc", url=f"opc.tcp://127.0.0.1:{port}/", timeout_s=2)
    with pytest.raises(
        Unreachable, match=rf"plc: cannot connect to opc.tcp://127.0.0.1:{port}/: .*nothing was written"
    ):
        asyncio.run(write_value(ep, FEED, "Double", 1.0, pki=None, own_certificate=None))
    with pytest.raises(ValueError, match="cannot be sent as Int16"):
        asyncio.run(write_value(ep, FEED, "Int16", 70000, pki=None, own_certificate=None))


# -- the guard ---------------------------------------------------------------------------------------


def test_an_allowed_write_reaches_the_node_and_is_logged(tmp_path: Path, factory: FactoryThread) -> None:
    cfg = make_config(tmp_path, factory.port)
    before = factory.read(FEED)
    result = do_write(cfg, "cnc01", "Control.FeedOverride", "120.5")
    assert result.outcome == "written" and result.ok and result.logged, result
    assert result.write is not None
    assert (result.write.old, result.write.new, result.write.read_back) == (before, 120.5, 120.5)
    assert result.write.status == "Good" and result.write.total_s >= result.write.write_s > 0
    assert "-> 120.5 (read back 120.5): written (Good)" in result.message
    assert factory.read(FEED) == 120.5
    program = do_write(cfg, "cnc01", "Control.ProgramSelect", "P200")
    assert program.ok and factory.read(PROGRAM) == "P200", program

    taken = spool(cfg.agent.data_dir)
    used = [r for lane, r in taken if lane == "usage"]
    status = [r for lane, r in taken if lane == "status"]
    assert [u["use"] for u in used] == ["DO6005", "DO6005"]
    assert used[0]["user"] == "kim" and used[0]["ip"] == "10.0.0.7" and used[0]["bytes"] == len("120.5")
    assert used[0]["action"] == "edge-agent write cnc01 Control.FeedOverride"
    assert status[0]["kind"] == "control-write" and status[0]["event"] == used[0]["event"]
    assert {k: status[0][k] for k in ("machine", "element", "node", "old", "new", "readBack", "result", "status")} == {
        "machine": "cnc01", "element": "Control.FeedOverride", "node": FEED, "old": before, "new": 120.5,
        "readBack": 120.5, "result": "written", "status": "Good",
    }  # fmt: skip
    assert "by kim from 10.0.0.7" in status[0]["message"]
    assert status[1]["new"] == "P200" and status[1]["result"] == "written"
    do_write(cfg, "cnc01", "Control.FeedOverride", "100")


FEED_LIMITS = "cnc01 Control.FeedOverride (Double) allows 0 to 150"
REFUSALS = [
    ("cnc01", "Control.FeedOverride", "151", f"151 is outside the limits; {FEED_LIMITS}"),
    ("cnc01", "Control.FeedOverride", "-0.5", "-0.5 is outside the limits"),
    ("cnc01", "Control.FeedOverride", "fast", f"'fast' is not a number (Double); {FEED_LIMITS}"),
    ("cnc01", "Control.FeedOverride", "nan", "'nan' is not a finite Double"),
    ("cnc01", "Control.ProgramSelect", "P300",
     "P300 is not allowed; cnc01 Control.ProgramSelect (String) allows one of P100, P200"),
    ("cnc01", "FeedRate", "100", "cnc01 FeedRate is not allow-listed in control.allow; allowed: "
     "cnc01 Control.FeedOverride; cnc01 Control.ProgramSelect; cnc01 State"),
    ("cnc02", "Control.FeedOverride", "100", "cnc02 Control.FeedOverride is not allow-listed"),
]  # fmt: skip


@pytest.mark.parametrize(("machine", "element", "value", "message"), REFUSALS)
def test_the_guard_refuses_before_connecting(
    tmp_path: Path, machine: str, element: str, value: str, message: str
) -> None:
    """The source points at a port where nothing listens: a refusal that names the allowed values, and no
    connection error, shows that the guard said no before anything was connected."""
    cfg = make_config(tmp_path, free_port())
    result = do_write(cfg, machine, element, value)
    assert result.outcome == "not-allowed" and not result.ok and result.write is None
    assert message in result.message, result.message
    assert "connect" not in result.message
    assert not (cfg.agent.data_dir / "pki").exists(), "not even the certificate was needed"
    assert not usage.spool_dir(cfg.agent.data_dir).exists(), "nothing reached a server: nothing logged"


def test_disabled_refuses_everything_and_an_allowed_value_would_have_connected(tmp_path: Path) -> None:
    port = free_port()
    off = make_config(tmp_path, port, "control:\n  enabled: false\n" + ALLOW)
    result = do_write(off, "cnc01", "Control.FeedOverride", "100")
    assert result.outcome == "not-allowed"
    assert result.message == "control writes are disabled (control.enabled is false in the config): nothing is written"
    assert make_config(tmp_path, port, "").control.enabled is False, "off by default"
    # The same write with control on does try the server: the refusals above were not connection errors.
    on = do_write(make_config(tmp_path, port), "cnc01", "Control.FeedOverride", "100")
    assert on.outcome == "unreachable" and f"cannot connect to opc.tcp://127.0.0.1:{port}/" in on.message
    assert not usage.spool_dir(tmp_path / "data").exists(), "nothing written, nothing logged"


def test_a_read_only_node_is_refused_by_the_server_and_still_logged(tmp_path: Path, factory: FactoryThread) -> None:
    cfg = make_config(tmp_path, factory.port)
    result = do_write(cfg, "cnc01", "State", "IDLE")
    assert result.outcome == "refused" and not result.ok and result.logged, result
    assert result.write is not None and result.write.status == "BadUserAccessDenied"
    assert result.write.old in ("RUN", "IDLE", "ALARM") and result.write.read_back is None
    assert "the server refused the write of 'IDLE': BadUserAccessDenied" in result.message
    taken = spool(cfg.agent.data_dir)
    assert [(lane, r.get("use") or r["kind"]) for lane, r in taken] == [
        ("usage", "DO6005"),
        ("status", "control-write"),
    ]
    assert taken[1][1]["result"] == "refused" and taken[1][1]["status"] == "BadUserAccessDenied"
    assert taken[1][1]["readBack"] is None and taken[1][1]["new"] == "IDLE"


# -- the config --------------------------------------------------------------------------------------


E = "    - {machine: cnc01, element: "  # an allow entry of cnc01, up to its element


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("    - {machine: cnc1, element: State}", "allow cnc1 State: no equipment 'cnc1' (did you mean 'cnc01'?)"),
        (E + "Control.FeedOveride, min: 0, max: 1}",
         "cnc01 has no point with path 'Control.FeedOveride' (did you mean 'Control.FeedOverride'?)"),
        (E + "Control.ProgramSelect, min: 0, max: 1}", "min/max apply to numbers"),
        (E + "Control.FeedOverride, max: 150}", "needs both min and max, or a values list"),
        (E + "Control.FeedOverride, values: [50, fast]}", "in values: 'fast' is not a number"),
        (E + "Control.FeedOverride, min: 0, max: 1, values: [1]}", "not both"),
        (E + "Control.FeedOverride, min: 10, max: 1}", "min (10) is above max (1)"),
        (E + "State}\n" + E + "State}", "cnc01 State is listed twice"),
        (E + "State, colour: red}", "colour"),
    ],
)  # fmt: skip
def test_allow_entries_are_checked_against_the_equipment(tmp_path: Path, block: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, 4840, "control:\n  enabled: true\n  allow:\n" + block + "\n")
    assert message in str(err.value), str(err.value)
    assert "Traceback" not in str(err.value)


def test_the_token_is_a_secret(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, 4840, 'control:\n  token: "wr1te-T0ken-77"\n')
    assert "wr1te-T0ken-77" in secrets(cfg) and "wr1te-T0ken-77" not in repr(cfg)
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, 4840, "control:\n  token: 123456789\n")
    assert "token must be text, not a YAML int" in str(err.value) and "123456789" not in str(err.value)


def test_a_browse_path_point_cannot_be_written(tmp_path: Path) -> None:
    allow = "control:\n  allow:\n" + E + "Spindle.Feed, min: 0, max: 1}\n"
    point = '      - {browse_path: "0:Objects/2:CNC01/2:FeedRate", path: Spindle.Feed, type: Double}\n'
    text = config_text(tmp_path, 4840, allow).replace("sinks:", point + "sinks:", 1)
    with pytest.raises(ConfigError, match="addressed by browse_path; a write needs its node id"):
        parse(text)


# -- the CLI and the running agent -------------------------------------------------------------------


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "write", "-c", str(config), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.timeout(180)
def test_the_cli_writes_and_a_running_agent_carries_the_records(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    with FactoryThread(port=free_port(), period=0.1, machines=1) as factory:
        config = tmp_path / "agent.yaml"
        config.write_text(config_text(tmp_path, factory.port))
        with AgentProcess(config, tmp_path / "agent.log") as agent:
            wait_until("data in the file sink", lambda: file_records(out, "data"), 60)
            done = cli(config, "cnc01", "Control.FeedOverride", "75")
            assert done.returncode == 0, done.stdout + done.stderr
            assert "100.0 -> 75.0 (read back 75.0): written (Good)" in done.stdout and "took " in done.stdout
            assert factory.read(FEED) == 75.0

            def writes() -> list[dict[str, Any]]:
                return file_records(out, "status", lambda r: r["kind"] == "control-write")

            [status] = wait_until("the control-write status record", writes, 30)
            assert (status["old"], status["new"], status["readBack"]) == (100.0, 75.0, 75.0)
            assert status["result"] == "written" and status["node"] == FEED
            [used] = wait_until("the usage record", lambda: file_records(out, "usage"), 30)
            assert used["use"] == "DO6005" and used["event"] == status["event"] and used["bytes"] == 2
            assert used["user"] == usage.os_user() and used["ip"] == "127.0.0.1"
            # The collected value shows the write too: the agent subscribes to the control node.
            wait_until("75.0 collected", lambda: file_records(out, "data", lambda r: r.get("value") == 75.0), 30)

            refused = cli(config, "cnc01", "State", "IDLE")
            assert refused.returncode == 1 and "BadUserAccessDenied" in refused.stderr, refused.stderr
            guard = cli(config, "cnc01", "Control.FeedOverride", "-5")  # a negative number is a value, not an option
            assert guard.returncode == 2 and "refused: -5 is outside the limits" in guard.stderr, guard.stderr
            assert len(wait_until("the refusal's record", lambda: writes()[1:], 30)) == 1
            assert writes()[1]["result"] == "refused"
            assert agent.stop() == 0, agent.log()[-3000:]
    assert [r["use"] for r in file_records(out, "usage")] == ["DO6005", "DO6005"], "the guard's refusal is not logged"
    assert [p.name for p in usage.spool_dir(tmp_path / "data").iterdir()] == [usage.CONFIG_SEEN]
    bad = tmp_path / "bad.yaml"
    bad.write_text(config_text(tmp_path, 4840, "control:\n  allow:\n    - {machine: cnc9, element: State}\n"))
    wrong = cli(bad, "cnc9", "State", "x")
    assert wrong.returncode == 2 and "configuration error" in wrong.stderr and "no equipment 'cnc9'" in wrong.stderr


# -- secured -----------------------------------------------------------------------------------------


def test_a_write_to_a_secured_server_uses_the_sources_security(tmp_path: Path) -> None:
    certs = tmp_path / "server-pki"
    asyncio.run(server_certificate(certs, "127.0.0.1"))
    offered = ("Basic256Sha256_SignAndEncrypt",)
    secure = "    security: {policy: Basic256Sha256, mode: SignAndEncrypt}"
    with FactoryThread(port=free_port(), period=0.1, machines=1, security=offered, certificate_dir=certs) as factory:
        cfg = make_config(tmp_path, factory.port, source=secure)
        first = do_write(cfg, "cnc01", "Control.FeedOverride", "90")
        assert first.outcome == "unreachable" and "its certificate is not trusted" in first.message, first.message
        Pki(cfg.agent.data_dir / "pki").trust(str(certs / "cert.der"))  # as `edge-agent trust` does
        result = do_write(cfg, "cnc01", "Control.FeedOverride", "90")
        assert result.ok, result.message
        assert factory.read(FEED) == 90.0
    [(_, record), (_, status)] = spool(cfg.agent.data_dir)
    assert record["use"] == "DO6005" and status["result"] == "written"


def test_a_spool_line_with_a_broken_control_record_is_refused_whole(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="control: no readBack, status"):
        usage.record(tmp_path, "DO6005", 1, "x", control={"machine": "m", "element": "e", "node": "n", "old": 1,
                                                          "new": 2, "result": "written"})  # fmt: skip
    good = {"machine": "m", "element": "e", "node": "ns=2;s=N", "old": 1, "new": 2, "readBack": 2, "result": "written",
            "status": "Good"}  # fmt: skip
    usage.record(tmp_path, "DO6005", 1, "x", control=good)
    with (usage.spool_dir(tmp_path) / usage.SPOOL).open("ab") as f:
        f.write(b'{"event": "e2", "time": "2026-11-30T00:00:00Z", "use": "DO6005", "user": "kim", "ip": "127.0.0.1",')
        f.write(b' "bytes": 1, "control": {"machine": "m"}}\n')
    taken = usage.take(tmp_path)
    assert [lane for lane, _, _ in taken.records] == ["usage", "status"] and taken.refused == 1
    refused = orjson.loads((usage.spool_dir(tmp_path) / usage.REFUSED).read_bytes())
    assert "control: no element" in refused["reason"]
