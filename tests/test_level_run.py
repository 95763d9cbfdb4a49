"""`edge-agent level` after a real run: two machines on the factory simulator, one of them cut off
mid-run, a control write, edge analysis every 2 s; the report names what was measured, and the
usage log holds the write and the report's own reading. Real processes, files and SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent import usage
from simulators.agentproc import ROOT, AgentProcess
from simulators.factory import FactoryThread
from simulators.netproxy import ProxyThread
from simulators.ports import free_port
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(240)


def _points(machine: str) -> str:
    m = machine.upper()
    rows = [
        f'      - {{node: "ns=2;s={m}.State", path: State, type: String}}',
        f'      - {{node: "ns=2;s={m}.AlarmCode", path: AlarmCode, type: Int32}}',
        f'      - {{node: "ns=2;s={m}.PartCount", path: PartCount, type: UInt32}}',
        f'      - {{node: "ns=2;s={m}.CycleTime", path: CycleTime, type: Double}}',
        f'      - {{node: "ns=2;s={m}.Control.FeedOverride", path: Control.FeedOverride, type: Double}}',
    ]
    return "\n".join(rows)


def _config(tmp: Path, direct: int, proxied: int, api_port: int) -> Path:
    nameplate = "nameplate: {manufacturer_name: M, product_designation: P, uri_of_product: 'https://x', order_code: O}"
    analysis = "analysis: {state: State, running: [RUN], alarm: AlarmCode, part_count: PartCount, interval_s: 2"
    text = f"""site: {{id: level-site}}
agent: {{data_dir: {tmp / "data"}, status_interval_s: 1}}
sources:
  - {{id: line-a, endpoint: "opc.tcp://127.0.0.1:{direct}/", publishing_interval_ms: 100, reconnect_max_s: 1}}
  - {{id: line-b, endpoint: "opc.tcp://127.0.0.1:{proxied}/", publishing_interval_ms: 100, reconnect_max_s: 1}}
equipment:
  - id: cnc01
    source: line-a
    {nameplate}
    {analysis}, ideal_cycle_s: 6.5}}
    points:
{_points("cnc01")}
  - id: imm01
    source: line-b
    {nameplate}
    {analysis}, ideal_cycle_s: 3.2}}
    points:
{_points("imm01")}
sinks:
  - {{type: file, path: {tmp / "records.jsonl"}, batch: {{max_delay_ms: 100}}}}
api: {{port: {api_port}}}
control:
  enabled: true
  allow:
    - {{machine: cnc01, element: Control.FeedOverride, min: 0, max: 150}}
"""
    path = tmp / "agent.yaml"
    path.write_text(text)
    return path


def _records(path: Path, lane: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_bytes().splitlines():
        msg = orjson.loads(line)
        if msg["lane"] == lane:
            out += [{**r, "asset": msg.get("asset")} for r in msg["records"]]
    return out


def _machines(path: Path, lane: str) -> set[str]:
    return {r["machine"] if lane == "analysis" else r["asset"] for r in _records(path, lane)}


def _disconnected(path: Path) -> str:
    return " ".join(r["message"] for r in _records(path, "status") if r["kind"] == "source-disconnected")


def _periods(path: Path, machine: str) -> int:
    return sum(1 for r in _records(path, "analysis") if r["machine"] == machine)


def _served(config: Path, port: int, machine: str) -> dict[str, Any] | None:
    """The EdgeAnalysis collection's values from the agent's local API, None until it has them."""
    import base64
    import urllib.error
    import urllib.request

    from agent.config import load
    from agent.shells import build_shells

    cfg = load(config)
    [e] = [e for e in cfg.equipment if e.id == machine]
    sm = build_shells(cfg).submodel_id(cfg.aas_id(e))
    b64 = base64.urlsafe_b64encode(sm.encode()).decode().rstrip("=")
    url = f"http://127.0.0.1:{port}/submodels/{b64}/submodel-elements/EdgeAnalysis/$value"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            found: dict[str, Any] = orjson.loads(r.read())["EdgeAnalysis"]
    except (urllib.error.URLError, OSError, KeyError):
        return None
    return found if "Availability" in found else None


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args[:1], "-c", str(config), *args[1:]],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_level_report_names_what_a_run_measured(tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    with (
        FactoryThread(port=free_port(), period=0.1, machines=2) as factory,
        ProxyThread("127.0.0.1", factory.port) as link,
    ):
        api_port = free_port()
        config = _config(tmp_path, factory.port, link.port, api_port)
        with AgentProcess(config, tmp_path / "agent.log") as agent:
            wait_until(
                "both machines' data", lambda: {r["asset"] for r in _records(records, "data")} >= {"cnc01", "imm01"}, 60
            )
            wrote = _cli(config, "write", "cnc01", "Control.FeedOverride", "80")
            assert wrote.returncode == 0, wrote.stdout + wrote.stderr
            assert factory.read("ns=2;s=CNC01.Control.FeedOverride") == 80.0
            wait_until("analysis of both machines", lambda: _machines(records, "analysis") >= {"cnc01", "imm01"}, 30)
            # The last period's figures are in the machine's shell, served live by the local API.
            served = wait_until("cnc01's analysis in its shell", lambda: _served(config, api_port, "cnc01"), 30)
            end = datetime.fromisoformat(served["PeriodEnd"])
            assert 0 <= served["Availability"] <= 1 and abs((datetime.now(UTC) - end).total_seconds()) < 60
            link.stop()  # imm01 is cut off: its connections dropped, new ones refused
            wait_until("line-b disconnected", lambda: "line-b" in _disconnected(records), 30)
            cut = _periods(records, "cnc01")
            wait_until("three more analysis periods", lambda: _periods(records, "cnc01") >= cut + 3, 30)
            assert agent.stop() == 0, agent.log()[-3000:]

    # The run's records: the control write on the status and usage lanes, analysis per machine.
    [control] = [r for r in _records(records, "status") if r["kind"] == "control-write"]
    assert control["machine"] == "cnc01" and control["result"] == "written" and control["new"] == 80.0
    written = [r for r in _records(records, "usage") if r["use"] == "DO6005"]
    assert len(written) == 1 and written[0]["user"] == usage.os_user() and written[0]["event"] == control["event"]
    imm = [r for r in _records(records, "analysis") if r["machine"] == "imm01"]
    assert imm and all(0 <= (r["availability"] or 0) <= 1 for r in imm)
    assert any(r["state_s"].get("unknown", 0) > 0 for r in imm), "imm01's time cut off is unknown, not its last state"

    out = tmp_path / "report.json"
    done = _cli(config, "level", "-o", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    levels = {lv["level"]: lv for lv in report["levels"]}
    assert levels["basic"]["supported"], levels["basic"]
    assert levels["intermediate1"]["supported"], levels["intermediate1"]["missing"]
    assert levels["intermediate2"]["supported"], levels["intermediate2"]["missing"]
    assert "기초 (Basic): supported" in done.stdout and "중간2 (Intermediate 2): supported" in done.stdout
    text = json.dumps(report, ensure_ascii=False)
    for must in ("cnc01", "imm01", "PartCount"):
        assert must in text
    [cut_off] = [g for g in report["gaps"]["list"] if g["machine"] == "imm01"]
    assert cut_off["reason"].startswith("connection lost") and cut_off["seconds_in_period"] > 0
    uptime = {u["machine"]: u for u in report["uptime"]}
    assert uptime["imm01"]["uptime_pct"] < uptime["cnc01"]["uptime_pct"] - 20, uptime
    assert report["control"]["ok"] == 1 and report["control"]["list"][0]["user"] == usage.os_user()
    assert report["coverage"]["machines_delivering"] == 2 and report["coverage"]["elements_delivering"] == 10
    html = tmp_path / "report.html"
    assert _cli(config, "level", "-o", str(html)).returncode == 0
    page = html.read_text()
    assert "중간2" in page and "imm01" in page
    # Reading the report is a use of the agent's data: the spool holds it for the next start.
    taken = usage.take(tmp_path / "data")
    reads = [orjson.loads(b) for lane, _, b in taken.records if lane == "usage"]
    assert [r["action"] for r in reads] == ["edge-agent level", "edge-agent level"]
    assert reads[0]["use"] == "DO6003" and reads[0]["bytes"] == out.stat().st_size


def test_the_statistics_name_each_element_by_the_handle_the_pipeline_gives_it() -> None:
    from agent.config import load
    from agent.measure import elements
    from agent.shells import build_shells
    from agent.wiring import plan

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load(path)
        bindings = plan(cfg, build_shells(cfg).shells).bindings
        assert [(i.handle, i.machine, i.path) for i in elements(cfg)] == [
            (b.handle, b.equipment, b.path) for b in bindings
        ], path
