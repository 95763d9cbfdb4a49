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
import math
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
import unicodedata
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from simulators.procs import stop_process
from uploader import wire

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo.yaml"
OUT = ROOT / "demo-out"
PORT = 48401
CLOUD_PORT = 48480
CLOUD = f"http://127.0.0.1:{CLOUD_PORT}"
TOKEN_FILE = OUT / "cloud-token"
# Straight to 127.0.0.1 whatever http_proxy says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
WIDTH = 80  # the view and every line the demo prints fit a terminal this wide
_LABEL = 7  # the row label column ("cnc01  ", "types  ")
_TEXT_MAX = 16  # a text value is shown up to this many columns


# -- formatting for the view: every value rounded, every line cut to the width ----------------------


def text_width(s: str) -> int:
    """Terminal columns `s` takes: East Asian wide characters (Korean) take two, combining marks none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def clip(s: str, width: int) -> str:
    """`s` cut to `width` columns, ending in `…` when something was cut."""
    if text_width(s) <= width:
        return s
    out, used = [], 0
    for c in s:
        w = text_width(c)
        if used + w > width - 1:
            break
        out.append(c)
        used += w
    return "".join(out) + "…"


def _sci(v: float) -> str:
    mantissa, _, exponent = f"{v:.2e}".partition("e")
    return f"{mantissa}e{int(exponent)}"


def fmt_number(v: float) -> str:
    """A number rounded for the view: 3 to 4 significant digits, scientific beyond 1e6 or below 1e-3."""
    if isinstance(v, int) and not isinstance(v, bool):
        if abs(v) < 1_000_000:
            return str(v)
        try:
            return _sci(float(v))
        except OverflowError:  # beyond any float: the leading digits and the exponent
            digits = str(abs(v))
            return f"{'-' if v < 0 else ''}{digits[0]}.{digits[1:3]}e{len(digits) - 1}"
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "INF" if v > 0 else "-INF"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e6 or a < 1e-3:
        return _sci(v)
    return f"{v:.{min(3, max(0, 2 - math.floor(math.log10(a))))}f}"


def fmt_value(v: Any) -> str:
    """One value as the view shows it: numbers rounded, arrays as their length, texts cut."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return fmt_number(v)
    if isinstance(v, list):
        if v and isinstance(v[0], dict):  # a multi-language text: the first language's
            return clip(repr(v[0].get("text", "")), _TEXT_MAX)
        return f"[{len(v)}]"
    return clip(str(v), _TEXT_MAX)


def pack(label: str, items: Sequence[str], width: int = WIDTH, max_lines: int = 2) -> list[str]:
    """`items` after a row label, two spaces apart, wrapped onto at most `max_lines` lines of `width`
    columns (continuations indented under the first item); what does not fit is counted as `+N more`."""
    indent = " " * _LABEL
    room = width - _LABEL
    lines: list[list[str]] = [[]]
    used = 0
    for n, raw in enumerate(items):
        item = clip(raw, room)
        w = text_width(item)
        if lines[-1] and used + 2 + w > room:
            if len(lines) == max_lines:
                rest = len(items) - n
                while lines[-1] and used + 2 + len(f"+{rest} more") > room:
                    used -= text_width(lines[-1].pop()) + (2 if lines[-1] else 0)
                    rest += 1
                lines[-1].append(f"+{rest} more")
                break
            lines.append([])
            used = 0
        used += w + (2 if lines[-1] else 0)
        lines[-1].append(item)
    lab = clip(label, _LABEL - 1)
    first = lab + " " * (_LABEL - text_width(lab))
    return [(first if i == 0 else indent) + "  ".join(parts) for i, parts in enumerate(lines)]


def _element(path: str, value: Any, unit: str) -> str:
    shown = fmt_value(value)
    return f"{path}={shown} {unit}" if unit else f"{path}={shown}"


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
        doc, _ = wire.expand(doc)  # a file sink may write version 3 (wire_version: 3)
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

    def headline(self) -> list[str]:
        lanes = [f"{lane} {n}" for lane, n in sorted(self.lanes.items())]
        return [
            *pack("got", [f"{self.messages} messages;", "records by lane:", *(lanes or ["none yet"])]),
            clip(f"       (each record once: {self.duplicates} duplicates dropped by their record id)", WIDTH),
        ]

    def alarms(self) -> list[str]:
        return [clip(f"       {e}", WIDTH) for e in self.events[-3:]] or ["       none yet"]

    def footer(self) -> list[str]:
        return []

    def lines(self, elapsed: float) -> list[str]:
        """The view: a title, what arrived, the latest values, alarms, gaps, problems; each line fits WIDTH."""
        lines = [clip(f"edge-agent demo  {elapsed:.0f} s  (Ctrl-C stops it; logs in demo-out/)", WIDTH)]
        lines += self.headline()
        lines += ["", "latest value per machine (first elements; unit after the value):"]
        rows = [(a, p, v) for (a, p), v in sorted(self.latest.items()) if "." not in p]
        assets = sorted({a for a, _, _ in rows})
        for asset in assets:
            lines += pack(asset, [_element(p, v[0], v[1]) for a, p, v in rows if a == asset])
        if not assets:
            lines.append("       waiting for the first values...")
        diag = [(p, v) for (a, p), v in sorted(self.latest.items()) if p.startswith("Diagnostics.")]
        if diag:
            lines += ["", "every OPC UA type through the agent, edge values included ([n]: n values):"]
            lines += pack("types", [_element(p.split(".", 1)[1], v[0], "") for p, v in diag], max_lines=3)
        lines += ["", "recent alarms (alarm events from the machines):", *self.alarms()]
        if self.gaps:
            lines.append("gaps (collection interrupted: machine, elements, from..to, why):")
            lines += [clip(f"       {g}", WIDTH) for g in self.gaps[-3:]]
        if self.problems:
            lines.append("problems (a node the agent could not collect, and why):")
            lines += [clip(f"       {p}", WIDTH) for p in self.problems[-3:]]
        return [clip(line, WIDTH) for line in lines + self.footer()]

    def render(self, out: TextIO, elapsed: float, clear: bool) -> None:
        out.write(("\x1b[H\x1b[2J" if clear else "\n") + "\n".join(self.lines(elapsed)) + "\n")
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

    def headline(self) -> list[str]:
        stored = [f"{lane} {n}" for lane, n in sorted(self.lanes.items())]
        return pack("stored", ["by the receiver, each record id once:", *(stored or ["none yet"])])

    def alarms(self) -> list[str]:
        return [f"       {self.lanes['event']} alarm events stored"]

    def footer(self) -> list[str]:
        return ["", "query the receiver:", *_queries()]


def _queries() -> list[str]:
    return [
        f"  c={CLOUD}",
        '  a="Authorization: Bearer $(cat demo-out/cloud-token)"',
        '  curl -sH "$a" $c/v1/assets',
        '  curl -sH "$a" $c/v1/assets/cnc01/latest',
        '  curl -sH "$a" "$c/v1/assets/cnc01/records?element=SpindleSpeed&limit=5"',
        '  curl -sH "$a" $c/v1/gaps',
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


class _Stop:
    """Ctrl-C (SIGINT) or SIGTERM: the first asks the demo to stop cleanly, a second to skip what is left."""

    def __init__(self) -> None:
        self.requested = 0

    def __call__(self, signum: int, frame: object) -> None:
        self.requested += 1

    def __bool__(self) -> bool:
        return self.requested > 0


def _start_cloud(env: dict[str, str], stop: _Stop) -> tuple[subprocess.Popen[bytes], str] | None:
    """The reference receiver, once it answers; None when the demo was stopped while it started."""
    token = secrets.token_urlsafe(24)
    fd = os.open(TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    cloud = subprocess.Popen(
        [sys.executable, "-m", "simulators.cloud", "--port", str(CLOUD_PORT), "--db", str(OUT / "cloud.sqlite3"),
         "--token-file", str(TOKEN_FILE)],
        cwd=ROOT, stdout=(OUT / "cloud.log").open("wb"), stderr=subprocess.STDOUT, env=env, process_group=0,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not stop:
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
    stop_process(cloud)
    return None


def _wait_ready(proc: subprocess.Popen[bytes], timeout: float, stop: _Stop) -> bool:
    """Waits for the simulator's READY line; False when the demo was stopped first."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while not stop:
        if time.monotonic() > deadline:
            raise SystemExit("the simulator did not become ready in time; see demo-out/simulator.log")
        if select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 4096)
            seen += chunk
            if seen.startswith(b"READY") or b"\nREADY" in seen:
                return True
            if not chunk:
                proc.wait(5)
                raise SystemExit(
                    f"the simulator exited early (code {proc.returncode}); is port {PORT} in use? "
                    "see demo-out/simulator.log"
                )
    return False


def _run_unless_hurried(args: list[str], stop: _Stop) -> subprocess.CompletedProcess[str] | None:
    """Runs a short command to its end, unless a second Ctrl-C asks to skip it (then None)."""
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, process_group=0
    )
    while True:
        try:
            out, _ = proc.communicate(timeout=0.2)
            return subprocess.CompletedProcess(args, proc.returncode, out, "")
        except subprocess.TimeoutExpired:
            if stop.requested > 1:
                stop_process(proc)
                return None


def _say(*lines: str) -> None:
    for line in lines:
        print(clip(line, WIDTH), flush=True)


def main(argv: list[str] | None = None) -> int:
    stop = _Stop()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    # The children get no Ctrl-C of their own (process_group=0): the demo stops them, in order.
    _say(f"starting the OPC UA factory simulator (3 machines, opc.tcp://127.0.0.1:{PORT}/)")
    sim = subprocess.Popen(
        [sys.executable, "-m", "simulators.factory", "--port", str(PORT), "--machines", "3", "--period", "0.5",
         "--alarm-every", "6"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=(OUT / "simulator.log").open("w"), env=env, process_group=0,
    )  # fmt: skip
    agent: subprocess.Popen[bytes] | None = None
    cloud: subprocess.Popen[bytes] | None = None
    config = CONFIG
    try:
        view = View(OUT / "records.jsonl")
        if _wait_ready(sim, 60, stop) and args.cloud == "http":
            _say(f"starting the reference cloud receiver ({CLOUD}, storing into demo-out/cloud.sqlite3)")
            started = _start_cloud(env, stop)
            if started is not None:
                cloud, token = started
                config = _http_config()
                view = CloudView(token)
        if stop:
            _say("stopped (Ctrl-C) before the agent started: nothing was collected.")
            return 0
        _say(f"starting the edge agent (-c {config.relative_to(ROOT)}); the live view follows")
        with (OUT / "agent.log").open("wb") as log:
            agent = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "-c", str(config), "--log-format", "json"],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, process_group=0,
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
        by_signal = bool(stop)
        _say("", "stopping the agent (Ctrl-C again skips the reports at the end)")
        agent.send_signal(signal.SIGTERM)
        try:
            code = agent.wait(60)
        except subprocess.TimeoutExpired:
            agent.kill()
            code = agent.wait()
        if by_signal and code == -signal.SIGTERM:
            code = 0  # stopped before it had set up its own handling of SIGTERM: nothing was lost
        view.poll()
        view.render(sys.stdout, time.monotonic() - start, clear=False)
        if view.lanes["data"] == 0:
            if by_signal:
                _say("", f"agent stopped (exit {code}) before it delivered a value; logs: demo-out/agent.log")
                return 0 if code == 0 else 1
            _say("", f"no value was delivered; agent exit {code}; see demo-out/agent.log")
            return 1
        _run_unless_hurried(
            [sys.executable, "-m", "agent.cli", "export", "-c", str(config), "--format", "aasx", "-o",
             str(OUT / "demo.aasx")], stop,
        )  # fmt: skip
        level = _run_unless_hurried(
            [sys.executable, "-m", "agent.cli", "level", "-c", str(config), "-o", str(OUT / "level.html")], stop
        )
        if level is not None:
            _say("", "level evidence from what the agent measured (demo-out/level.html):")
            _say(*("  " + line for line in level.stdout.strip().splitlines()))
        _say("", f"agent stopped (exit {code}). What the demo left in demo-out/:")
        if args.cloud == "http":
            _say(
                "  cloud.sqlite3  the records (table records, one row per id)",
                "  demo.aasx      the Asset Administration Shells",
                "  level.html     the level evidence report",
                "  agent.log, cloud.log",
                "To query them again, start the receiver on what it stored:",
                f"  .venv/bin/python -m simulators.cloud --port {CLOUD_PORT} \\",
                "      --db demo-out/cloud.sqlite3 --token-file demo-out/cloud-token",
                "and ask it:",
                *_queries(),
            )
        else:
            _say(
                "  records.jsonl  the records as delivered (one message per line)",
                "  demo.aasx      the Asset Administration Shells",
                "  level.html     the level evidence report",
                "  agent.log      the agent's log",
            )
        return 0 if code == 0 else 1
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
        if cloud is not None:
            stop_process(cloud)
        stop_process(sim)


if __name__ == "__main__":
    sys.exit(main())
