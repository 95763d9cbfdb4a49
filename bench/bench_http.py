"""How fast does a backlog drain over HTTP, through a slow link, with one batch in flight and with a window?

A buffer holding --records data records (~330 bytes each, valid wire records of two assets) is
drained by a Forwarder through the HTTP sink (gzip on, one POST per batch of 1,000 records) into a
receiver in another process, through simulators/netproxy.py, which adds latency in each direction,
for each round-trip time and each window size. Every cell is measured in the same run, so read the
ratios: per window, the slow link against 0 ms; per link, the widest window against stop-and-wait.
Afterwards it checks that the receiver holds every record of every cell exactly once.

Two receivers (--receiver):
- `minimal` (default): this file re-run as a small aiohttp server that keeps the ingest contract's
  answer (bearer token, gzip, every id stored once in memory, `accepted`/`duplicates`/`rejected`)
  and nothing else: it measures the agent's side.
- `reference`: `python -m simulators.cloud`, which validates every record against the JSON Schema
  (~0.2 ms a record) and commits to SQLite with synchronous=FULL; on a 2-core machine it, not the
  agent, sets the pace (about 5,000 records/s).

Usage: .venv/bin/python bench/bench_http.py [--records 100000] [--rtt-ms 0,100] [--windows 1,4,8]
                                            [--receiver minimal|reference]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiohttp import web

from agent.backoff import Backoff
from simulators.cloud import CloudReceiver
from simulators.netproxy import TcpProxy
from simulators.ports import free_port
from uploader import wire
from uploader.buffer import Buffer, Row
from uploader.forwarder import Batching, Forwarder
from uploader.http import HttpSettings, HttpSink

TOKEN = "bench-token"
FLOOR = 10_000  # records/s at 100 ms round trip (the floor)
ROOT = Path(__file__).resolve().parents[1]


def backlog(n: int) -> list[Row]:
    element = wire.Element(
        shell="urn:aas:m", submodel="urn:aas:m/op", path="Spindle.Speed", value_type="xs:double", node="ns=2;s=S"
    )
    prefix = wire.data_prefix(element)
    t0 = datetime(2026, 11, 26, 13, 0, tzinfo=UTC)
    return [
        ("data", f"m{i % 2}", float(i), wire.data_body(prefix, i + 0.5, t0 + timedelta(milliseconds=i), t0, 0))
        for i in range(n)
    ]


# -- the receivers ----------------------------------------------------------------------------------


def serve_minimal(port: int) -> None:
    """The minimal receiver (runs in its own process): the contract's answer, ids kept in memory."""
    ids: dict[str, set[str]] = {}

    async def ingest(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response(
                {"error": "unauthorized", "reason": "the bearer token is not accepted"}, status=401
            )
        accepted = duplicates = 0
        for message in orjson.loads(await request.read()):  # aiohttp undoes Content-Encoding: gzip
            seen = ids.setdefault(message["origin"], set())
            for record in message["records"]:
                if record["id"] in seen:
                    duplicates += 1
                else:
                    seen.add(record["id"])
                    accepted += 1
        return web.Response(body=orjson.dumps({"accepted": accepted, "duplicates": duplicates, "rejected": []}))

    async def counts(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({origin: len(s) for origin, s in ids.items()}))

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post("/v1/ingest", ingest)
    app.router.add_get("/counts", counts)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


@contextlib.contextmanager
def minimal_receiver() -> Iterator[int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, "--serve-minimal", str(port)], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 15
        while not _answers(f"http://127.0.0.1:{port}/counts"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the minimal receiver did not start")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            body: bytes = answer.read()
            return body
    except OSError:
        return None


def stored_once(counts: Callable[[str], tuple[int, int]], origins: list[str], expected: int) -> bool:
    """Whether every origin has `expected` records, each once; `counts(origin)` is (rows, distinct ids)."""
    ok = True
    for origin in origins:
        rows, distinct = counts(origin)
        if rows != expected or distinct != expected:
            print(f"origin {origin}: {rows} rows, {distinct} ids, expected {expected}")
            ok = False
    return ok


# -- the agent's side ---------------------------------------------------------------------------------


async def drain(directory: Path, port: int, rtt_ms: float, window: int, rows: list[Row]) -> tuple[float, str]:
    """(records/s, buffer origin) to drain `rows` through a link with `rtt_ms` added, `window` batches in flight."""
    path = directory / f"b-{rtt_ms}-{window}.db"  # left for the temporary directory to remove
    with Buffer(path, quota_bytes=1 << 30) as buf:
        buf.add(rows)
        origin = buf.origin
        async with TcpProxy("127.0.0.1", port, delay=rtt_ms / 2000) as link:
            settings = HttpSettings(url=f"http://127.0.0.1:{link.port}", token=TOKEN)
            sink = HttpSink(settings, delays=Backoff(0.1, 1).delays)
            batching = Batching(max_records=1000, max_delay=0.05, max_message_records=500, in_flight=window)
            fwd = Forwarder(buf, sink, site="s", batching=batching, delays=lambda: itertools.repeat(0.1))
            connection = asyncio.create_task(sink.run())
            await _until(lambda: sink.connected)
            started = time.perf_counter()
            forwarding = asyncio.create_task(fwd.run())
            await _until(lambda: not sum(buf.pending().values()))
            took = time.perf_counter() - started
            for task in (forwarding, connection):
                task.cancel()
            await asyncio.gather(forwarding, connection, return_exceptions=True)
            await sink.stop()
            failed = fwd.stats.failed_sends
            if failed:
                print(f"  (rtt {rtt_ms:g} ms, window {window}: {failed} failed sends: {fwd.stats.last_error})")
    return len(rows) / took, origin


async def _until(check: Callable[[], bool], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the backlog did not drain")
        await asyncio.sleep(0.005)  # polled: the cost is the same for every cell


def measure(port: int, tmp: Path, rtts: list[float], windows: list[int], rows: list[Row]) -> tuple[list[str], str]:
    """Print the table; returns the origins drained and the verdict line."""
    print(f"{'added RTT':>10} " + " ".join(f"{f'window {w}':>16}" for w in windows) + "   widest vs stop-and-wait")
    rates: dict[tuple[float, int], float] = {}
    origins: list[str] = []
    for rtt in rtts:
        for w in windows:
            rates[rtt, w], origin = asyncio.run(drain(tmp, port, rtt, w, rows))
            origins.append(origin)
        cells = " ".join(f"{rates[rtt, w]:>11,.0f} rec/s" for w in windows)
        print(f"{rtt:>7.0f} ms {cells}   {rates[rtt, max(windows)] / rates[rtt, 1]:.1f}x")
    for rtt in rtts[1:]:
        ratios = "  ".join(f"window {w}: {rates[rtt, w] / rates[0.0, w]:.2f}" for w in windows)
        print(f"{rtt:.0f} ms against 0 ms, same window: {ratios}")
    verdict = ""
    if 100.0 in rtts:
        best = max(rates[100.0, w] for w in windows)
        verdict = (
            f"best at 100 ms: {best:,.0f} records/s, {'meets' if best >= FLOOR else 'MISSES'} the floor of {FLOOR:,}"
        )
    return origins, verdict


def main() -> None:
    if sys.argv[1:2] == ["--serve-minimal"]:
        serve_minimal(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rtt-ms", default="0,100")
    parser.add_argument("--windows", default="1,4,8")
    parser.add_argument("--receiver", choices=["minimal", "reference"], default="minimal")
    args = parser.parse_args()
    rtts = sorted({0.0, *(float(x) for x in args.rtt_ms.split(","))})
    windows = sorted({1, *(int(x) for x in args.windows.split(","))})
    rows = backlog(args.records)
    where = {
        "minimal": "a minimal receiver (contract answers, no validation)",
        "reference": "python -m simulators.cloud",
    }
    print(f"draining {args.records:,} records (2 assets, 1,000 per POST, gzip) into {where[args.receiver]}")
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        if args.receiver == "minimal":
            with minimal_receiver() as port:
                origins, verdict = measure(port, Path(tmp), rtts, windows, rows)
                counts = orjson.loads(_answers(f"http://127.0.0.1:{port}/counts") or b"{}")
                once = stored_once(lambda o: (counts.get(o, 0), counts.get(o, 0)), origins, args.records)
        else:
            with CloudReceiver(Path(tmp) / "cloud", tokens=[TOKEN]) as cloud:
                origins, verdict = measure(cloud.port, Path(tmp), rtts, windows, rows)

                def from_db(origin: str) -> tuple[int, int]:
                    with contextlib.closing(sqlite3.connect(cloud.db)) as c:
                        sql = "SELECT count(*), count(DISTINCT id) FROM records WHERE origin = ?"
                        rows_, distinct = c.execute(sql, (origin,)).fetchone()
                    return int(rows_), int(distinct)

                once = stored_once(from_db, origins, args.records)
    if verdict:
        print(verdict)
    print("every record of every cell stored exactly once" if once else "NOT every record stored exactly once")


if __name__ == "__main__":
    main()
