"""Start-up: from `edge-agent run` to the first value in the buffer, with a large config.

A node-opcua server with N Double variables (default 10,000, changed every second) is started and
left to settle; then the agent is started as a child process with one point per variable and a file
sink, and the bench reads the agent's JSON log for the moment each phase ended:

    process start -> config read, parts built (the agent-started status record)
                  -> first value in the buffer (the first data record the file sink wrote)
                  -> every item subscribed (its log line "N items subscribed")

The first-value time is taken from the file sink's output (a record reaches it only after it was in
the buffer), so it is an upper bound. Issue "Cheaper than the library": <= 3 s for 10,000 points
against a server that answers at once. Prints and exits 0.

    .venv/bin/python bench/bench_startup.py                 # ~1 min (the server's own start-up included)
    .venv/bin/python bench/bench_startup.py --points 5000 --runs 3
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from simulators.nodeopcua.launcher import NodeOpcuaServer, node_opcua_available
from simulators.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
STARTED = "agent-started (config read, parts built)"
SUBSCRIBED = "every item subscribed"


def config(server: NodeOpcuaServer, tmp: Path) -> str:
    lines = [
        "site: {id: startup-bench}",
        f"agent: {{data_dir: {tmp / 'data'}}}",
        "api: {enabled: false}",
        "sources:",
        f"  - {{id: load, endpoint: '{server.endpoint}', publishing_interval_ms: 200}}",
        "equipment:",
        "  - id: load01",
        "    source: load",
        "    nameplate: {manufacturer_name: B, product_designation: P, uri_of_product: 'https://x', order_code: O}",
        "    points:",
    ]
    lines += [
        f'      - {{node: "{nid}", path: Var_{i:05d}, type: Double}}' for i, nid in enumerate(server.variable_ids())
    ]
    lines += ["sinks:", f"  - {{type: file, path: {tmp / 'out.jsonl'}, batch: {{max_delay_ms: 50}}}}"]
    return "\n".join(lines) + "\n"


def one_run(server: NodeOpcuaServer, tmp: Path) -> dict[str, float]:
    cfg = tmp / "agent.yaml"
    cfg.write_text(config(server, tmp))
    out, log = tmp / "out.jsonl", tmp / "agent.log"
    for leftover in (out, log):
        leftover.unlink(missing_ok=True)
    t0 = time.time()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "-c", str(cfg), "--log-format", "json"],
            stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    first_value = None
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if first_value is None and out.exists() and b'"lane":"data"' in out.read_bytes():
                first_value = time.time()
            if first_value is not None and b"items subscribed" in log.read_bytes():
                break
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    phases = {"first value in the buffer": (first_value or float("nan")) - t0}
    for line in out.read_bytes().splitlines():
        message = orjson.loads(line)
        for r in message["records"]:
            if message["lane"] == "status" and r["kind"] == "agent-started":
                phases[STARTED] = _epoch(r["time"]) - t0
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and "items subscribed" in (doc := orjson.loads(line)).get("msg", ""):
            phases.setdefault(SUBSCRIBED, _epoch(doc["time"]) - t0)
    return phases


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="copy the last run's config, log and output here")
    args = ap.parse_args()
    if (missing := node_opcua_available()) is not None:
        print(f"node-opcua is not available: {missing}")
        return
    results: list[dict[str, float]] = []
    with NodeOpcuaServer(port=free_port(), vars=args.points, period_ms=1000) as server:
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                results.append(one_run(server, Path(tmp)))
                if args.keep:
                    import shutil

                    shutil.copytree(tmp, args.keep, dirs_exist_ok=True)
    print(f"start-up with {args.points:,} points, seconds from process start (median of {args.runs} runs)")
    for phase in (STARTED, "first value in the buffer", SUBSCRIBED):
        values = [r.get(phase, float("nan")) for r in results]
        print(f"  {phase:45} {statistics.median(values):6.2f}   runs: {', '.join(f'{v:.2f}' for v in values)}")
    print("target (issue 'Cheaper than the library'): first value <= 3 s at 10,000 points")


if __name__ == "__main__":
    main()
