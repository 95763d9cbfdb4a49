"""How fast is the buffer compared with the least SQLite can do with one row per record?

Cases: adds of 500 or 5,000 rows, 1 or 3 keys (interleaved row by row), ~430 bytes of key + body
per record; begin(1000) + end(all accepted), 1,000 being the forwarder's default batch (with 3
keys, chunks are not multiples of it, so batches also take parts of chunks). Best of three runs.
  steady   each add() is followed by begin + end while 1,000 or more records wait: the agent
           with an uplink that keeps up. add and begin+end are timed separately.
  backlog  every add() first, then begin + end until the lane is empty: the agent after an
           outage. begin+end here includes giving the freed pages back (incremental vacuum).
  @quota   backlog with a quota a quarter of the data, so every add() also drops old chunks.
  us/rec   add + begin + end per record, in microseconds: the figure with a target.
Baseline, same rows, same run: one table in a WAL database (synchronous=NORMAL, secure_delete=
FAST as in the buffer), one row per record, a transaction per add with a bare executemany
INSERT; begin+end is SELECT ... LIMIT 1000 plus one range DELETE. ratio = ours / baseline: for
rec/s higher is better, for us/rec, ms and bytes lower is better.

Usage: .venv/bin/python bench/bench_buffer.py
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from uploader.buffer import Buffer, Row

RECORDS = 100_000
CASES = ((500, 1), (500, 3), (5000, 1), (5000, 3))  # (rows per add, keys)
QUOTA_CASE = (500, 3)
CYCLE_BATCH = 1000
RUNS = 3
TARGET_US = 1.5


def make_batches(rows_per_add: int, keys: int) -> list[list[Row]]:
    names = [f"urn:factory:line-1:press-{n:02d}" for n in range(keys)]
    rows: list[Row] = []
    for n in range(RECORDS):
        head = b'{"shell":"urn:factory:press","path":"Operational/Spindle/Speed","n":%d,"v":"' % n
        body = head + b"x" * (398 - len(head)) + b'"}'
        rows.append(("data", names[n % keys], 1.7e9 + n / 1000, body))
    return [rows[i : i + rows_per_add] for i in range(0, RECORDS, rows_per_add)]


class Store:
    """What a run does to a store: add a batch, send (take and delete) up to CYCLE_BATCH records."""

    def add(self, batch: list[Row]) -> None:
        raise NotImplementedError

    def send(self) -> int:
        """Records taken and deleted; 0 when empty."""
        raise NotImplementedError

    def waiting(self) -> int:
        raise NotImplementedError

    def used_bytes(self) -> int:
        raise NotImplementedError


class Ours(Store):
    def __init__(self, path: Path, quota: int) -> None:
        self.buf = Buffer(path, quota_bytes=quota)

    def add(self, batch: list[Row]) -> None:
        self.buf.add(batch)

    def send(self) -> int:
        batch = self.buf.begin("data", CYCLE_BATCH)
        if batch is None:
            return 0
        self.buf.end(batch, [item.seq for item in batch.items])
        return len(batch.items)

    def waiting(self) -> int:
        return self.buf.pending()["data"]

    def used_bytes(self) -> int:
        return self.buf.stats().used_bytes


class Baseline(Store):
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        # As the buffer does: without it, builds that default to secure_delete = ON (Debian's)
        # write every deleted row again as zeros, and the baseline would mostly measure that.
        self.conn.execute("PRAGMA secure_delete = FAST")
        self.conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, lane TEXT, key TEXT, ts REAL, body BLOB)")
        self.count = 0

    def add(self, batch: list[Row]) -> None:
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT INTO t (lane, key, ts, body) VALUES (?, ?, ?, ?)", batch)
        self.conn.execute("COMMIT")
        self.count += len(batch)

    def send(self) -> int:
        rows = self.conn.execute("SELECT seq, lane, key, ts, body FROM t ORDER BY seq LIMIT ?", (CYCLE_BATCH,))
        taken = rows.fetchall()
        if not taken:
            return 0
        self.conn.execute("BEGIN")
        self.conn.execute("DELETE FROM t WHERE seq <= ?", (taken[-1][0],))
        self.conn.execute("COMMIT")
        self.count -= len(taken)
        return len(taken)

    def waiting(self) -> int:
        return self.count

    def used_bytes(self) -> int:
        pages, free, size = self.conn.execute(
            "SELECT * FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()"
        ).fetchone()
        return int((pages - free) * size)


@dataclass
class Result:
    add_rates: list[float] = field(default_factory=list)
    send_rates: list[float] = field(default_factory=list)  # records sent (all but those the quota dropped) / s
    worst_add_ms: list[float] = field(default_factory=list)
    bytes_per_record: float = 0.0

    @property
    def add_rate(self) -> float:
        return max(self.add_rates)

    @property
    def send_rate(self) -> float:
        return max(self.send_rates)

    @property
    def us_per_record(self) -> float:
        return 1e6 / self.add_rate + 1e6 / self.send_rate

    @property
    def worst_ms(self) -> float:
        return min(self.worst_add_ms)


def run(store: Store, batches: list[list[Row]], steady: bool, result: Result) -> None:
    add_s = send_s = worst = 0.0
    sent = 0
    for batch in batches:
        start = time.perf_counter()
        store.add(batch)
        took = time.perf_counter() - start
        add_s += took
        worst = max(worst, took)
        if steady:
            while store.waiting() >= CYCLE_BATCH:
                start = time.perf_counter()
                sent += store.send()
                send_s += time.perf_counter() - start
    if not steady:
        result.bytes_per_record = store.used_bytes() / RECORDS
    start = time.perf_counter()
    while n := store.send():
        sent += n
    send_s += time.perf_counter() - start
    result.add_rates.append(RECORDS / add_s)
    result.send_rates.append(sent / send_s)
    result.worst_add_ms.append(worst * 1000)


def measure(batches: list[list[Row]], steady: bool, quota: int) -> tuple[Result, Result]:
    ours, baseline = Result(), Result()
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory(prefix="bench-buffer-") as tmp:
            base = Baseline(Path(tmp) / "baseline.db")
            run(base, batches, steady, baseline)
            base.conn.close()
        with tempfile.TemporaryDirectory(prefix="bench-buffer-") as tmp:
            mine = Ours(Path(tmp) / "ours.db", quota)
            run(mine, batches, steady, ours)
            mine.buf.close()
    return ours, baseline


def cell(a: float, b: float, fmt: str) -> str:
    return f"{f'{a:{fmt}} / {b:{fmt}} ({a / b:.2f})':>27}"


def main() -> None:
    started = time.perf_counter()
    payload = 0.0
    steady: list[tuple[str, Result, Result]] = []
    backlog: list[tuple[str, Result, Result]] = []
    for rows_per_add, keys in (*CASES, QUOTA_CASE):
        at_quota = len(backlog) == len(CASES)
        batches = make_batches(rows_per_add, keys)
        payload = sum(len(key) + len(body) for batch in batches for _, key, _, body in batch) / RECORDS
        name = f"{rows_per_add} rows, {keys} key{'s' if keys > 1 else ''}"
        if at_quota:
            backlog.append((f"{name} @quota", *measure(batches, steady=False, quota=RECORDS * 450 // 4)))
            continue
        steady.append((name, *measure(batches, steady=True, quota=1 << 40)))
        backlog.append((name, *measure(batches, steady=False, quota=1 << 40)))

    print(
        f"{RECORDS} records per case, key + body {payload:.0f} bytes, begin({CYCLE_BATCH}) + end(all), "
        f"best of {RUNS} runs; each cell: ours / baseline (ratio)"
    )
    for title, results, last in (
        ("steady", steady, ("worst add ms", lambda r: r.worst_ms, ".1f")),
        ("backlog", backlog, ("disk B/record", lambda r: r.bytes_per_record, ".0f")),
    ):
        heads = ("add rec/s", "begin+end rec/s", "us/record", last[0])
        print(f"\n{title:22}" + "".join(f"{h:>27}" for h in heads))
        for name, ours, base in results:
            line = (
                cell(ours.add_rate, base.add_rate, ",.0f")
                + cell(ours.send_rate, base.send_rate, ",.0f")
                + cell(ours.us_per_record, base.us_per_record, ".2f")
                + cell(last[1](ours), last[1](base), last[2])
            )
            print(f"{name:22}{line}")
    worst = max(ours.us_per_record for _, ours, _ in steady)
    verdict = "met" if worst <= TARGET_US else "NOT met"
    print(f"\nsteady add + begin + end: at most {worst:.2f} us per record (target <= {TARGET_US}: {verdict})")
    print(f"took {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
