"""How fast is the buffer compared with the least SQLite can do with the same rows?

Measures, best of three runs each:
  add        records/s through Buffer.add() in batches of 500 (~300-byte bodies), and the worst
             single add() (auto-checkpoints land in some of them);
  add@quota  the same with a quota a quarter of the data, so every add() also drops old records;
  cycle      records/s through begin(1000) + end(all accepted) until the lane is empty;
  disk       bytes of database pages per stored record.
Baseline, same rows, same run: one table in a WAL database (synchronous=NORMAL), a transaction
per batch with a bare executemany INSERT; for cycle, SELECT ... LIMIT 1000 plus one range DELETE.
ratio = ours / baseline (for records/s higher is better, for bytes lower is better).

Usage: .venv/bin/python bench/bench_buffer.py
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from uploader.buffer import Buffer, Row

RECORDS = 100_000
ADD_BATCH = 500
CYCLE_BATCH = 1000
RUNS = 3
KEYS = tuple(f"urn:factory:line-1:press-{n:02d}" for n in range(8))


def make_batches() -> list[list[Row]]:
    rows: list[Row] = []
    for n in range(RECORDS):
        head = b'{"shell":"urn:factory:press","path":"Operational/Spindle/Speed","n":%d,"v":"' % n
        body = head + b"x" * (298 - len(head)) + b'"}'
        rows.append(("data", KEYS[n % len(KEYS)], 1.7e9 + n / 1000, body))
    return [rows[i : i + ADD_BATCH] for i in range(0, RECORDS, ADD_BATCH)]


class Result:
    def __init__(self) -> None:
        self.add_rate = 0.0
        self.worst_add_ms = float("inf")
        self.cycle_rate = 0.0
        self.bytes_per_record = 0.0

    def keep_best(self, add_s: float, worst_add_s: float, cycle_s: float, stored: int, used_bytes: int) -> None:
        self.add_rate = max(self.add_rate, RECORDS / add_s)
        self.worst_add_ms = min(self.worst_add_ms, worst_add_s * 1000)
        self.cycle_rate = max(self.cycle_rate, stored / cycle_s)
        self.bytes_per_record = used_bytes / stored


def timed_adds(batches: list[list[Row]], add: Callable[[list[Row]], object]) -> tuple[float, float]:
    worst = 0.0
    start = time.perf_counter()
    for batch in batches:
        t = time.perf_counter()
        add(batch)
        worst = max(worst, time.perf_counter() - t)
    return time.perf_counter() - start, worst


def run_ours(directory: Path, batches: list[list[Row]], result: Result, quota: int) -> None:
    with Buffer(directory / "ours.db", quota_bytes=quota) as buf:
        add_s, worst_s = timed_adds(batches, buf.add)
        stats = buf.stats()
        start = time.perf_counter()
        while (batch := buf.begin("data", CYCLE_BATCH)) is not None:
            buf.end(batch, [item.seq for item in batch.items])
        cycle_s = time.perf_counter() - start
    result.keep_best(add_s, worst_s, cycle_s, stats.pending["data"], stats.used_bytes)


def run_baseline(directory: Path, batches: list[list[Row]], result: Result) -> None:
    conn = sqlite3.connect(directory / "baseline.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, lane TEXT, key TEXT, ts REAL, body BLOB)")

    def add(batch: list[Row]) -> None:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t (lane, key, ts, body) VALUES (?, ?, ?, ?)", batch)
        conn.execute("COMMIT")

    add_s, worst_s = timed_adds(batches, add)
    pages, free, page_size = conn.execute(
        "SELECT * FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()"
    ).fetchone()
    start = time.perf_counter()
    select = "SELECT seq, lane, key, ts, body FROM t ORDER BY seq LIMIT ?"
    while rows := conn.execute(select, (CYCLE_BATCH,)).fetchall():
        conn.execute("BEGIN")
        conn.execute("DELETE FROM t WHERE seq <= ?", (rows[-1][0],))
        conn.execute("COMMIT")
    cycle_s = time.perf_counter() - start
    conn.close()
    result.keep_best(add_s, worst_s, cycle_s, RECORDS, (pages - free) * page_size)


def main() -> None:
    batches = make_batches()
    payload = sum(len(key) + len(body) for batch in batches for _, key, _, body in batch) / RECORDS
    ours, at_quota, baseline = Result(), Result(), Result()
    started = time.perf_counter()
    for _ in range(RUNS):
        for target in ("baseline", "ours", "at_quota"):
            with tempfile.TemporaryDirectory(prefix="bench-buffer-") as tmp:
                if target == "baseline":
                    run_baseline(Path(tmp), batches, baseline)
                elif target == "ours":
                    run_ours(Path(tmp), batches, ours, quota=1 << 40)
                else:
                    run_ours(Path(tmp), batches, at_quota, quota=RECORDS * 360 // 4)

    print(f"{RECORDS} records, key + body {payload:.0f} bytes, add batches of {ADD_BATCH}, best of {RUNS} runs")
    print(f"{'':18}{'ours':>12}{'baseline':>12}{'ratio':>8}")
    rows = [
        ("add  records/s", ours.add_rate, baseline.add_rate),
        ("add@quota rec/s", at_quota.add_rate, baseline.add_rate),
        ("worst add ms", ours.worst_add_ms, baseline.worst_add_ms),
        ("cycle records/s", ours.cycle_rate, baseline.cycle_rate),
        ("cycle@quota rec/s", at_quota.cycle_rate, baseline.cycle_rate),
        ("disk bytes/record", ours.bytes_per_record, baseline.bytes_per_record),
    ]
    for name, mine, base in rows:
        print(f"{name:18}{mine:12,.1f}{base:12,.1f}{mine / base:8.2f}")
    print(f"ours stores {ours.bytes_per_record - payload:.0f} bytes per record beyond key + body")
    print("cycle includes giving freed pages back to the file system (incremental vacuum); the baseline does not")
    print(f"took {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
