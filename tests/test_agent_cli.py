"""The agent process with no server to talk to: it starts, waits, stops cleanly; a second agent on
the same buffer is refused with a clear message."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from simulators.agentproc import ROOT, AgentProcess
from simulators.factory import FactoryThread
from simulators.factory.agentconfig import factory_config
from simulators.ports import free_port
from tests.helpers import wait_until


def test_second_agent_on_the_same_buffer_is_refused_and_the_first_stops_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        factory_config(
            opc_port=free_port(),  # nothing listens there: the agent keeps retrying, quietly
            data_dir=tmp_path / "data",
            sinks=f"- type: file\n  path: {out}\n  batch: {{max_delay_ms: 50}}",
            machines=1,
        )
    )
    with AgentProcess(cfg, tmp_path / "agent.log") as agent:
        wait_until("the agent-started status record", lambda: out.exists() and b"agent-started" in out.read_bytes(), 30)
        second = subprocess.run(
            [sys.executable, "-m", "agent.cli", "run", "-c", str(cfg)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert second.returncode == 2
        assert "cannot start" in second.stderr and "Traceback" not in second.stderr
        assert f"data directory {tmp_path / 'data'} is in use by another process (agent pid {agent.proc.pid})" in (
            second.stderr
        ), second.stderr
        assert agent.stop() == 0
    log = agent.log()
    assert "cannot connect to opc.tcp://127.0.0.1" in log and "stopped cleanly" in log
    assert "Traceback" not in log
    assert b"source-disconnected" in out.read_bytes()


def test_the_running_agent_does_not_load_what_only_exports_and_api_reads_use() -> None:
    """basyx's serializers (with lxml and the AASX packager, ~5 MB), numpy and aiohttp (~12 MB: the local API, the
    http and usage-log sinks) are imported by the commands, API answers and sinks that use them, not by `run`:
    every gateway pays for what it loads, all the months it runs."""
    probe = (
        "import sys, agent.app, agent.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'lxml', 'numpy', 'pyecma376_2', 'aiohttp'}"
        " or m.startswith('basyx.aas.adapter')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("api", [True, False])
def test_the_aas_model_is_built_at_the_first_aas_read_and_only_for_the_local_api(tmp_path: Path, api: bool) -> None:
    """Only the local API reads the AAS model (about 4 KB per element) and the recent records: the model is built
    at the first AAS read, not at start, with the values collected before it; with `api.enabled: false` the
    agent collects and delivers as ever, and keeps neither."""
    out = tmp_path / "records.jsonl"
    cfg = tmp_path / "agent.yaml"
    port = free_port()
    feed = "ns=2;s=CNC01.Control.FeedOverride"  # changes only when written: its one value comes at the subscribe
    with FactoryThread(port=free_port(), period=0.1, machines=1) as factory:
        text = factory_config(
            opc_port=factory.port,
            data_dir=tmp_path / "data",
            sinks=f"- type: file\n  path: {out}\n  batch: {{max_delay_ms: 50}}",
            machines=1,
            extra_points=f'      - node: "{feed}"\n        path: Control.FeedOverride\n        type: Double\n',
        )
        cfg.write_text(text + (f"api: {{port: {port}}}\n" if api else "api: {enabled: false}\n"))
        with AgentProcess(cfg, tmp_path / "agent.log") as agent:
            wait_until("data records", lambda: out.exists() and b'"Control.FeedOverride"' in out.read_bytes(), 60)
            assert agent.proc is not None
            loaded = Path(f"/proc/{agent.proc.pid}/maps").read_text()
            assert ("/aiohttp/" in loaded) is api  # without the API (and http sinks) aiohttp is not even loaded
            if api:
                wait_until("the API", lambda: "local API on" in agent.log(), 60)
                assert _get(port, "/description")["profiles"]
                assert "AAS model built" not in agent.log()  # collecting and serving /description built nothing
                shell = _get(port, "/shells")["result"][0]
                assert "AAS model built" in agent.log()
                sm = base64.urlsafe_b64encode(f"{shell['id']}/sm/OperationalData".encode()).decode().rstrip("=")
                value = _get(port, f"/submodels/{sm}/submodel-elements/Control.FeedOverride/$value")
                assert value == {"FeedOverride": factory.read(feed)}, value  # collected before the model was built
            assert agent.stop() == 0
    log = agent.log()
    assert log.count("AAS model built") == int(api), log[-2000:]
    assert ("no AAS model is kept in memory" in log) is not api, log[-2000:]
    assert ("local API on" in log) is api
    assert "ahead of the agent's clock" not in log and "clock is behind" not in log  # the simulator's agrees


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
        return json.loads(r.read())
