"""The demo: factory simulator -> edge agent -> local receiver (a JSON-lines file), with a live view.

Run `python -m simulators.demo [--seconds N]` (or `./scripts/demo.sh`). It starts the simulator
and `edge-agent run -c configs/demo.yaml` as child processes, follows what the agent delivers,
and stops everything cleanly on Ctrl-C or after N seconds. No broker or cloud is needed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import orjson

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo.yaml"
OUT = ROOT / "demo-out"
PORT = 48401


class View:
    """Follows the receiver file and keeps the latest value per element plus counters."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.latest: dict[tuple[str, str], tuple[Any, str, str]] = {}
        self.lanes: Counter[str] = Counter()
        self.ids: set[str] = set()
        self.duplicates = 0
        self.messages = 0
        self.events: list[str] = []
        self.gaps: list[str] = []
        self.problems: list[str] = []

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        for line in chunk[:end].splitlines():
            self._message(orjson.loads(line))

    def _message(self, doc: dict[str, Any]) -> None:
        self.messages += 1
        lane = doc["lane"]
        for r in doc["records"]:
            if r["id"] in self.ids:
                self.duplicates += 1
                continue
            self.ids.add(r["id"])
            self.lanes[lane] += 1
            if lane == "data":
                self.latest[(doc["asset"], r["path"])] = (r["value"], r.get("unit", ""), r["valueType"])
            elif lane == "event":
                self.events.append(f"{r['time'][11:19]} {doc['asset']}: {r.get('message', '')}")
            elif lane == "gap":
                span = f"{r['start'][11:19]}..{r['end'][11:19]}"
                self.gaps.append(f"{doc['asset']}: {len(r['elements'])} elements {span} ({r['reason']})")
            elif lane == "status" and r.get("kind") in ("node-problem", "bad-value"):
                self.problems.append(f"{r.get('path', '')}: {r.get('message', '')}")

    def render(self, out: TextIO, elapsed: float, clear: bool) -> None:
        lines = [
            f"edge-agent demo — {elapsed:5.1f} s — {self.messages} messages, "
            + ", ".join(f"{lane} {n}" for lane, n in sorted(self.lanes.items()))
            + f", duplicates dropped by id: {self.duplicates}",
            "",
        ]
        assets = sorted({a for a, _ in self.latest})
        for asset in assets:
            items = [(p, v) for (a, p), v in sorted(self.latest.items()) if a == asset and "." not in p]
            shown = "  ".join(f"{p}={_fmt(v[0])}{v[1]}" for p, v in items[:9])
            lines.append(f"{asset:6s} {shown}")
        diag = [(p, v) for (a, p), v in sorted(self.latest.items()) if p.startswith("Diagnostics.")]
        if diag:
            lines.append("")
            lines.append("types  " + "  ".join(f"{p.split('.', 1)[1]}={_fmt(v[0])}" for p, v in diag[:10]))
            lines.append("       " + "  ".join(f"{p.split('.', 1)[1]}={_fmt(v[0])}" for p, v in diag[10:]))
        lines += ["", "recent alarms: " + (" | ".join(self.events[-3:]) or "none yet")]
        if self.gaps:
            lines.append("gaps: " + " | ".join(self.gaps[-3:]))
        if self.problems:
            lines.append("problems: " + " | ".join(self.problems[-3:]))
        text = "\n".join(line[:200] for line in lines)
        out.write(("\x1b[H\x1b[2J" if clear else "\n") + text + "\n")
        out.flush()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, list):
        if v and isinstance(v[0], dict):
            return repr(v[0].get("text", ""))
        return f"[{len(v)}]"
    s = str(v)
    return s if len(s) <= 16 else s[:15] + "…"


def _wait_ready(proc: subprocess.Popen[str], timeout: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY"):
            return
        if not line and proc.poll() is not None:
            raise SystemExit(f"the simulator exited early (code {proc.returncode}); is port {PORT} in use?")
    raise SystemExit("the simulator did not become ready in time")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=None, help="stop after N seconds (default: until Ctrl-C)")
    ap.add_argument("--keep", action="store_true", help="keep demo-out/ from an earlier run (buffer, records)")
    args = ap.parse_args(argv)
    if OUT.exists() and not args.keep:
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sim = subprocess.Popen(
        [sys.executable, "-m", "simulators.factory", "--port", str(PORT), "--machines", "3", "--period", "0.5",
         "--alarm-every", "6"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=(OUT / "simulator.log").open("w"), text=True, env=env,
    )  # fmt: skip
    agent: subprocess.Popen[bytes] | None = None
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        _wait_ready(sim, 60)
        with (OUT / "agent.log").open("wb") as log:
            agent = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "-c", str(CONFIG), "--log-format", "json"],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        view = View(OUT / "records.jsonl")
        start = time.monotonic()
        tty = sys.stdout.isatty()
        last_render = 0.0
        while not stop:
            elapsed = time.monotonic() - start
            if args.seconds is not None and elapsed >= args.seconds:
                break
            if agent.poll() is not None:
                print(f"the agent exited with code {agent.returncode}; see demo-out/agent.log", file=sys.stderr)
                return 1
            view.poll()
            if elapsed - last_render >= (1.0 if tty else 5.0):
                view.render(sys.stdout, elapsed, clear=tty)
                last_render = elapsed
            time.sleep(0.2)
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(60)
        view.poll()
        view.render(sys.stdout, time.monotonic() - start, clear=False)
        subprocess.run(
            [sys.executable, "-m", "agent.cli", "export", "-c", str(CONFIG), "--format", "aasx", "-o",
             str(OUT / "demo.aasx")],
            cwd=ROOT, check=False, capture_output=True,
        )  # fmt: skip
        print(
            f"\nagent stopped (exit {code}). Records: demo-out/records.jsonl, AAS: demo-out/demo.aasx, "
            "logs: demo-out/agent.log"
        )
        return 0 if code == 0 and view.lanes["data"] > 0 else 1
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()


if __name__ == "__main__":
    sys.exit(main())
