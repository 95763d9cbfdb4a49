"""The demo: factory simulator -> edge agent -> local receiver (a JSON-lines file), with a live view.

Run `python -m simulators.demo [--seconds N]` (or `./scripts/demo.sh`). It starts the simulator
and `edge-agent run -c configs/demo.yaml` as child processes, follows what the agent delivers,
and stops everything cleanly on Ctrl-C or after N seconds. No broker or cloud is needed.

With `--cloud http` the agent delivers over HTTP instead, to the reference cloud receiver
(`python -m simulators.cloud`, started by the demo, storing into demo-out/cloud.sqlite3, with a
bearer token made for the run in demo-out/cloud-token); the config is configs/demo.yaml with its
sink replaced (demo-out/demo-http.yaml), and the view reads the receiver's query API.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import orjson

from simulators.procs import stop_process

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo.yaml"
OUT = ROOT / "demo-out"
PORT = 48401
CLOUD_PORT = 48480
CLOUD = f"http://127.0.0.1:{CLOUD_PORT}"
TOKEN_FILE = OUT / "cloud-token"
# Straight to 127.0.0.1 whatever http_proxy says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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

    def headline(self) -> str:
        return (
            f"{self.messages} messages, "
            + ", ".join(f"{lane} {n}" for lane, n in sorted(self.lanes.items()))
            + f", duplicates dropped by id: {self.duplicates}"
        )

    def alarms(self) -> str:
        return " | ".join(self.events[-3:]) or "none yet"

    def footer(self) -> list[str]:
        return []

    def render(self, out: TextIO, elapsed: float, clear: bool) -> None:
        lines = [f"edge-agent demo — {elapsed:5.1f} s — {self.headline()}", ""]
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
        lines += ["", "recent alarms: " + self.alarms()]
        if self.gaps:
            lines.append("gaps: " + " | ".join(self.gaps[-3:]))
        if self.problems:
            lines.append("problems: " + " | ".join(self.problems[-3:]))
        lines += self.footer()
        text = "\n".join(line[:200] for line in lines)
        out.write(("\x1b[H\x1b[2J" if clear else "\n") + text + "\n")
        out.flush()


class CloudView(View):
    """What the reference receiver stored, from its query API (GET /v1/assets, /latest, /v1/gaps)."""

    def __init__(self, token: str) -> None:
        super().__init__(OUT / "records.jsonl")
        self.token = token

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(f"{CLOUD}{path}", headers={"Authorization": f"Bearer {self.token}"})
        with _OPENER.open(request, timeout=5) as answer:
            return orjson.loads(answer.read())

    def poll(self) -> None:
        try:
            assets = self._get("/v1/assets")["assets"]
            self.lanes = Counter()
            for a in assets:
                self.lanes.update(a["lanes"])
            for a in assets:
                if a["asset"] is not None and a["lanes"].get("data"):
                    for e in self._get(f"/v1/assets/{a['asset']}/latest")["elements"]:
                        self.latest[(a["asset"], e["path"])] = (e["value"], e.get("unit", ""), e["valueType"])
            self.gaps = [
                f"{g['asset']}: {len(g['record']['elements'])} elements "
                f"{g['record']['start'][11:19]}..{g['record']['end'][11:19]} ({g['record']['reason']})"
                for g in self._get("/v1/gaps")["gaps"]
            ]
        except OSError as e:
            self.problems = [f"cannot query the receiver at {CLOUD}: {e}"]

    def headline(self) -> str:
        stored = ", ".join(f"{lane} {n}" for lane, n in sorted(self.lanes.items()))
        return f"records stored by the receiver (each id once): {stored or 'none yet'}"

    def alarms(self) -> str:
        return f"{self.lanes['event']} alarm events stored"

    def footer(self) -> list[str]:
        return ["", "query it (token in demo-out/cloud-token):", *_queries()]


def _queries() -> list[str]:
    auth = '-H "Authorization: Bearer $(cat demo-out/cloud-token)"'
    return [
        f"  curl -s {auth} {CLOUD}/v1/assets",
        f"  curl -s {auth} {CLOUD}/v1/assets/cnc01/latest",
        f'  curl -s {auth} "{CLOUD}/v1/assets/cnc01/records?element=SpindleSpeed&limit=5"',
        f"  curl -s {auth} {CLOUD}/v1/gaps",
    ]


def _http_config() -> Path:
    """configs/demo.yaml with its sink replaced by the HTTP sink to the demo's receiver."""
    text = CONFIG.read_text(encoding="utf-8")
    head, found, _ = text.partition("\nsinks:\n")
    if not found:
        raise SystemExit(f"{CONFIG} has no sinks block at the end; cannot make the HTTP demo config from it")
    sink = (
        "\nsinks:\n"
        "  # The demo's cloud: the reference receiver (python -m simulators.cloud), started by the demo.\n"
        "  - type: http\n"
        "    id: cloud\n"
        f"    url: {CLOUD}\n"
        f"    token: ${{file:{TOKEN_FILE}}}\n"
        "    batch: {max_records: 1000, max_delay_ms: 500}\n"
    )
    path = OUT / "demo-http.yaml"
    path.write_text(head + sink, encoding="utf-8")
    return path


def _start_cloud(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    token = secrets.token_urlsafe(24)
    fd = os.open(TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    cloud = subprocess.Popen(
        [sys.executable, "-m", "simulators.cloud", "--port", str(CLOUD_PORT), "--db", str(OUT / "cloud.sqlite3"),
         "--token-file", str(TOKEN_FILE)],
        cwd=ROOT, stdout=(OUT / "cloud.log").open("wb"), stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            with _OPENER.open(f"{CLOUD}/v1/health", timeout=1):
                return cloud, token
        except OSError:
            if cloud.poll() is not None or time.monotonic() > deadline:
                cloud.kill()
                raise SystemExit(
                    f"the cloud receiver did not start; is port {CLOUD_PORT} in use? see demo-out/cloud.log"
                ) from None
            time.sleep(0.1)


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
    ap.add_argument(
        "--cloud",
        choices=["file", "http"],
        default="file",
        help="where the agent delivers: a local JSON-lines file (default), or over HTTP to the reference receiver",
    )
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
    cloud: subprocess.Popen[bytes] | None = None
    config = CONFIG
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        _wait_ready(sim, 60)
        view = View(OUT / "records.jsonl")
        if args.cloud == "http":
            cloud, token = _start_cloud(env)
            config = _http_config()
            view = CloudView(token)
        with (OUT / "agent.log").open("wb") as log:
            agent = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "-c", str(config), "--log-format", "json"],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
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
            [sys.executable, "-m", "agent.cli", "export", "-c", str(config), "--format", "aasx", "-o",
             str(OUT / "demo.aasx")],
            cwd=ROOT, check=False, capture_output=True,
        )  # fmt: skip
        level = subprocess.run(
            [sys.executable, "-m", "agent.cli", "level", "-c", str(config), "-o", str(OUT / "level.html")],
            cwd=ROOT, check=False, capture_output=True, text=True,
        )  # fmt: skip
        print("\nlevel evidence from what the agent measured (demo-out/level.html):")
        print("  " + "\n  ".join((level.stdout or level.stderr).strip().splitlines()))
        if args.cloud == "http":
            print(
                f"\nagent stopped (exit {code}). Records: demo-out/cloud.sqlite3 (table records, one row per id), "
                "AAS: demo-out/demo.aasx, logs: demo-out/agent.log, demo-out/cloud.log\n"
                "To query them again, start the receiver on what it stored:\n"
                f"  .venv/bin/python -m simulators.cloud --port {CLOUD_PORT} --db demo-out/cloud.sqlite3 "
                "--token-file demo-out/cloud-token\n"
                "and ask it:\n" + "\n".join(_queries())
            )
        else:
            print(
                f"\nagent stopped (exit {code}). Records: demo-out/records.jsonl, AAS: demo-out/demo.aasx, "
                "logs: demo-out/agent.log"
            )
        return 0 if code == 0 and view.lanes["data"] > 0 else 1
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
        if cloud is not None:
            stop_process(cloud)
        stop_process(sim)


if __name__ == "__main__":
    sys.exit(main())
