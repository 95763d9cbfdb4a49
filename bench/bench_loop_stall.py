"""How long does the agent's event loop stand still while its buffer writes?

The agent's loop decodes publishes, sends to the far end and answers the local API; every moment
SQLite holds it (a commit, a WAL checkpoint's fsync) all of that waits. This bench commits publishes
of `--rows` data records at `--rate` publishes a second through the agent's Committer, while a
forwarder's part takes batches of 1,000 and ends them, and a ticker asks the loop for a 1 ms timer
over and over: how late the timer fires is how long the loop stood still.

Three ways, the same rows, the same run, on fresh files:
  on loop       every call on the event loop, SQLite's auto-checkpoint (1,000 pages) inside a commit:
                the agent before its buffer had a thread
  all off loop  every call in the buffer's thread (Buffer.in_order with nothing ever called at once)
  checkpoints   calls at once on the loop, checkpoints in the buffer's thread, and a call that comes
                while one runs queued behind it (Buffer.in_order): what the agent does
Printed per way: the timer's lateness p50 / p99 / max in ms, the longest single commit, and CPU per
record (the whole process, both threads, less what the ticker's turns cost on an idle loop); ratios
against "on loop". `--slow-fsync-ms` makes every fsync that much longer (an LD_PRELOAD shim, built with cc
if there is one): how a worn SD card or a busy eMMC behaves, which this machine's disk does not.

Usage: .venv/bin/python bench/bench_loop_stall.py [--seconds 20] [--rate 10] [--rows 5000] [--slow-fsync-ms 150]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.committer import Committer
from uploader.buffer import Buffer, Row

BIG = 1 << 34
TICK = 0.001
SLOW_FSYNC_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
static void slow(void) {
    const char *v = getenv("SLOW_FSYNC_MS");
    long ms = v ? atol(v) : 0;
    if (ms > 0) { struct timespec t = {ms / 1000, (ms % 1000) * 1000000L}; nanosleep(&t, NULL); }
}
int fsync(int fd) { static int (*real)(int); if (!real) real = dlsym(RTLD_NEXT, "fsync"); slow(); return real(fd); }
int fdatasync(int fd) {
    static int (*real)(int); if (!real) real = dlsym(RTLD_NEXT, "fdatasync"); slow(); return real(fd);
}
"""


def with_slow_fsync(ms: int) -> None:
    """Run this bench again with every fsync `ms` longer (never returns)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("--slow-fsync-ms needs a C compiler (cc) to build its LD_PRELOAD shim")
    build = Path(tempfile.mkdtemp(prefix="slow-fsync-"))
    (build / "slow.c").write_text(SLOW_FSYNC_C)
    shim = build / "slow.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(shim), str(build / "slow.c"), "-ldl"], check=True)
    env = dict(os.environ, LD_PRELOAD=str(shim), SLOW_FSYNC_MS=str(ms))
    os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)


def publish(n: int, rows: int) -> list[Row]:
    t = 1.7e9 + n
    return [
        ("data", f"urn:factory:line-1:press-{i % 5:02d}", t, (b'{"path":"Op/Spindle%04d","t":"' % i, b'x":%d}' % n))
        for i in range(rows)
    ]


async def tick_cost(seconds: float = 2.0) -> float:
    """CPU seconds one turn of the ticker costs, on an idle loop: taken off each way's CPU (a loop that stands
    still less turns the ticker more often)."""
    loop = asyncio.get_running_loop()
    cpu0, start, turns = time.process_time(), loop.time(), 0
    while loop.time() - start < seconds:
        await asyncio.sleep(TICK)
        turns += 1
    return (time.process_time() - cpu0) / turns


async def one_way(path: Path, way: str, seconds: float, rate: float, rows: int) -> dict[str, float]:
    buf = Buffer(path, quota_bytes=BIG, chunk_records=500)
    if way == "on loop":  # as before the buffer's thread: SQLite checkpoints inside the commit that fills the WAL
        buf._wrote = lambda pages: None  # type: ignore[method-assign]
        buf._store.conn.execute("PRAGMA wal_autocheckpoint = 1000")
    elif way == "all off loop":
        buf._writes_off_loop = True  # in_order then always uses the thread
    committer = Committer(
        [buf],
        delays=lambda: itertools.repeat(0.05),
        timeout=10.0,
        report_s=60.0,
        quota_report=lambda _: [],
        on_stored=lambda: None,
    )

    def call(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        return buf.in_order(fn, *args)

    loop = asyncio.get_running_loop()
    stop = False
    late: list[float] = []
    commits: list[float] = []

    async def ticker() -> None:
        while not stop:
            t = loop.time()
            await asyncio.sleep(TICK)
            late.append(loop.time() - t - TICK)

    async def forward() -> None:
        while not stop:
            batch = await call(buf.begin, "data", 1000)
            if batch is None:
                await asyncio.sleep(0.005)
                continue
            await call(buf.end, batch, [r.seq for r in batch.items])

    async def add(rows_: list[Row]) -> None:
        t = rows_[0][2]
        # Each element's last stored stamp, as the agent marks them with every publish.
        assert await committer.commit(rows_, {f"last:{i}": (t, 0, 1, float(i)) for i in range(len(rows_))})

    tasks = [asyncio.create_task(ticker()), asyncio.create_task(forward())]
    cpu0, n, start = time.process_time(), 0, loop.time()
    while loop.time() - start < seconds:
        due = start + n / rate
        if loop.time() < due:
            await asyncio.sleep(due - loop.time())
        rows_ = publish(n, rows)
        began = time.perf_counter()
        await add(rows_)
        commits.append(time.perf_counter() - began)
        n += 1
    stop = True
    await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu0
    await committer.close()
    buf.close()
    late.sort()
    return {
        "publishes": n,
        "frames": buf.checkpoint_frames,
        "late_p50": statistics.median(late) * 1e3,
        "late_p99": late[int(len(late) * 0.99)] * 1e3,
        "late_max": late[-1] * 1e3,
        "commit_max": max(commits) * 1e3,
        "us_per_record": (cpu - len(late) * await tick_cost()) / (n * rows) * 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=10.0, help="publishes committed per second")
    ap.add_argument("--rows", type=int, default=5000, help="data records per publish")
    ap.add_argument("--slow-fsync-ms", type=int, default=0, help="make every fsync this much longer")
    args = ap.parse_args()
    if args.slow_fsync_ms and os.environ.get("SLOW_FSYNC_MS") != str(args.slow_fsync_ms):
        with_slow_fsync(args.slow_fsync_ms)
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 20, 20)  # as the agent runs (agent/app.py)
    ways = ("on loop", "all off loop", "checkpoints")
    with tempfile.TemporaryDirectory() as tmp:
        results = {way: asyncio.run(one_way(Path(tmp) / f"{n}.db", way, args.seconds, args.rate, args.rows))
                   for n, way in enumerate(ways)}  # fmt: skip
    print(
        f"{args.rows:,} records per publish, {args.rate:g} publishes/s "
        f"({args.rows * args.rate:,.0f} records/s), {args.seconds:g} s each way; "
        "forwarder part: begin(1000) + end(all)"
        + (f"; every fsync {args.slow_fsync_ms} ms longer" if args.slow_fsync_ms else "")
    )
    base = results["on loop"]
    print(f"{'':32}" + "".join(f"{w:>14}" for w in ways) + "".join(f"{'ratio ' + str(i):>9}" for i in (2, 3)))
    for key, label in (
        ("late_p50", "loop stood still, p50 ms"),
        ("late_p99", "loop stood still, p99 ms"),
        ("late_max", "loop stood still, longest ms"),
        ("commit_max", "longest commit, ms"),
        ("us_per_record", "CPU per record, us (process)"),
    ):
        row = "".join(f"{results[w][key]:>14.2f}" for w in ways)
        ratios = "".join(f"{results[w][key] / base[key]:>8.2f}x" if base[key] else f"{'-':>9}" for w in ways[1:])
        print(f"{label:32}{row}{ratios}")
    print(f"{'publishes committed':32}" + "".join(f"{results[w]['publishes']:>14.0f}" for w in ways))
    print(
        f"{'most pages a checkpoint found':32}{'-':>14}"
        + "".join(f"{results[w]['frames']:>14.0f}" for w in ways[1:])
        + "  (SQLite's own runs, inside a commit, at 2,000)"
    )


if __name__ == "__main__":
    main()
