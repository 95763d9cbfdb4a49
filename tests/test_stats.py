"""The statistics store (agent/stats.py): real SQLite files, hand-computed figures, a full disk, a damaged file."""

from __future__ import annotations

import logging
import math
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from agent.stats import (
    HOUR,
    LAT_BUCKETS,
    ElementInfo,
    Stats,
    StatsError,
    bucket_bounds,
    hist_from_blob,
    histogram,
    percentile,
)
from tests.helpers import fill

T0 = 1_699_999_200.0  # 2023-11-14T22:00:00Z, the start of a UTC hour
DAY = 86400.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def el(handle: int, machine: str = "m1", path: str | None = None, sampling_ms: int | None = 1000) -> ElementInfo:
    return ElementInfo(handle, machine, path or f"E{handle}", sampling_ms, "subscribe")


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def sample_row(path: Path, element: str = "E1", hour: float = T0) -> tuple[Any, ...]:
    """(values, intervals, sum, sum of squares, min, max, first, last) of one element-hour."""
    got = rows(
        path,
        "SELECT n_values, intervals, isum, isumsq, imin, imax, first_t, last_t FROM samples "
        "WHERE path = ? AND hour = ?",
        element,
        int(hour),
    )
    assert len(got) == 1, got
    return got[0]


def mean_std(row: tuple[Any, ...]) -> tuple[float, float]:
    k, s, ss = row[1], row[2], row[3]
    mean = s / k
    return mean, math.sqrt(ss / k - mean * mean)


# -- sampling figures ----------------------------------------------------------------------------


def test_intervals_hand_computed(tmp_path: Path) -> None:
    # source times 0, 1, 2, 4 s -> intervals 1, 1, 2 -> mean 4/3 s, population std sqrt(2/9) = 0.4714 s
    db = tmp_path / "stats.db"
    stats = Stats(db, [el(1)], clock=Clock())
    stats.values(1, [T0, T0 + 1, T0 + 2, T0 + 4])
    stats.flush()
    stats.close()
    row = sample_row(db)
    assert row == (4, 3, 4.0, 6.0, 1.0, 2.0, T0, T0 + 4)
    mean, std = mean_std(row)
    assert mean == pytest.approx(1.3333, abs=1e-4)
    assert std == pytest.approx(0.4714, abs=1e-4)


def test_one_value_at_a_time_equals_one_batch(tmp_path: Path) -> None:
    times = [T0 + t for t in (0.0, 0.25, 0.5, 1.5, 1.75, 3.0)]
    a = Stats(tmp_path / "a.db", [el(1)], clock=Clock())
    a.values(1, times)
    b = Stats(tmp_path / "b.db", [el(1)], clock=Clock())
    for t in times:
        b.values(1, [t])
    c = Stats(tmp_path / "c.db", [el(1)], clock=Clock())
    c.values(1, list(np.array(times)))  # numpy floats
    d = Stats(tmp_path / "d.db", [el(1), el(2)], clock=Clock())  # the pipeline's call, two elements interleaved
    d.values_each([1, 2, 1, 2, 1, 1, 2, 1], [times[0], 0.0, times[1], 1.0, times[2], times[3], math.nan, times[4]])
    d.values_each([1], [times[5]])
    for s in (a, b, c, d):
        s.flush()
        s.close()
    assert sample_row(tmp_path / "a.db") == sample_row(tmp_path / "b.db") == sample_row(tmp_path / "c.db")
    assert sample_row(tmp_path / "d.db") == sample_row(tmp_path / "a.db")
    assert sample_row(tmp_path / "a.db")[:6] == (6, 5, 3.0, 2.75, 0.25, 1.25)


@pytest.mark.parametrize("fold_every", [1, 7, 200_000])
def test_values_each_counts_as_value_by_value_across_hours_steps_back_gaps_and_flushes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fold_every: int
) -> None:
    """The pipeline's call keeps each element's times pending and counts them in bulk (every FOLD_VALUES,
    before a gap and before a flush): the figures are those of counting every value on its own."""
    monkeypatch.setattr("agent.stats.FOLD_VALUES", fold_every)
    rng = np.random.default_rng(11)
    handles = [1, 2, 3]
    t = {h: T0 - 30.0 for h in handles}
    bulk = Stats(tmp_path / "bulk.db", [el(h) for h in handles], clock=Clock())
    single = Stats(tmp_path / "single.db", [el(h) for h in handles], clock=Clock())
    for step in range(400):
        batch_h: list[int] = []
        batch_t: list[float] = []
        for _ in range(int(rng.integers(1, 9))):
            h = int(rng.choice(handles))
            t[h] += float(rng.choice([0.25, 0.5, 3.0, 0.0, -1.0, 61.0]))  # repeats, steps back, hour crossings
            batch_h.append(h)
            batch_t.append(math.nan if rng.random() < 0.02 else t[h])
        bulk.values_each(batch_h, batch_t)
        for h, x in zip(batch_h, batch_t, strict=True):
            single.values(h, [x])
        if step % 97 == 50:
            for s in (bulk, single):
                s.gap("m1", [1, 2], T0 + step, None, "lost")
                s.gap("m1", [1, 2], T0 + step, T0 + step + 5, "lost")
        if step % 131 == 0:
            bulk.flush()
            single.flush()
    assert bulk.counts() == single.counts()
    for s in (bulk, single):
        s.flush()
        s.close()
    query = (
        "SELECT path, hour, n_values, intervals, isum, isumsq, imin, imax, first_t, last_t FROM samples ORDER BY 1, 2"
    )
    got, want = rows(tmp_path / "bulk.db", query), rows(tmp_path / "single.db", query)
    assert len(want) > 6 and [r[:4] for r in got] == [r[:4] for r in want]
    for a, b in zip(got, want, strict=True):
        assert [x is None for x in a] == [x is None for x in b], (a, b)
        figures = [(x, y) for x, y in zip(a[4:], b[4:], strict=True) if y is not None]
        assert [x for x, _ in figures] == pytest.approx([y for _, y in figures], rel=1e-9, abs=1e-6), (a, b)


def test_a_flush_in_the_middle_of_a_stream_loses_no_interval(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    stats = Stats(db, [el(1)], clock=Clock())
    stats.values(1, [T0, T0 + 1])
    stats.flush()
    stats.values(1, [T0 + 2])
    stats.flush()
    stats.flush()  # nothing new: changes nothing
    stats.values(1, [T0 + 4])
    stats.flush()
    stats.close()
    assert sample_row(db) == (4, 3, 4.0, 6.0, 1.0, 2.0, T0, T0 + 4)


def test_two_runs_merge_into_the_same_hour(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    first = Stats(db, [el(1)], clock=Clock())
    first.values(1, [T0, T0 + 1, T0 + 2])
    first.flush()
    first.close()
    # The next run numbers its elements differently: rows and the last source time go by machine and path.
    second = Stats(db, [el(7, path="E1")], clock=Clock(T0 + 5))
    second.values(7, [T0 + 4])
    second.flush()
    second.close()
    assert sample_row(db) == (4, 3, 4.0, 6.0, 1.0, 2.0, T0, T0 + 4)


def test_an_interval_belongs_to_the_hour_of_its_later_value(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    stats = Stats(db, [el(1)], clock=Clock())
    stats.values(1, [T0 + 3598, T0 + 3599, T0 + 3601, T0 + 3602])
    stats.flush()
    stats.close()
    assert sample_row(db, hour=T0)[:6] == (2, 1, 1.0, 1.0, 1.0, 1.0)
    assert sample_row(db, hour=T0 + HOUR)[:6] == (2, 2, 3.0, 5.0, 1.0, 2.0)


def test_repeats_steps_back_and_non_finite_times_count_no_interval(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    stats = Stats(db, [el(1)], clock=Clock())
    # 0->1 counts; 1->1 (a re-reported value) and 1->0.5 (the clock stepped back) do not; 0.5->2.5 counts
    stats.values(1, [T0, T0 + 1, T0 + 1, T0 + 0.5, T0 + 2.5])
    stats.values(1, [math.nan, T0 + 3.5, math.inf])  # not finite: left out, the chain goes on
    stats.values(1, [])
    stats.flush()
    stats.close()
    assert sample_row(db)[:6] == (6, 3, 4.0, 6.0, 1.0, 2.0)


def test_unknown_handles_are_not_stored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "stats.db"
    stats = Stats(db, [el(1)], clock=Clock())
    stats.values(99, [T0, T0 + 1])
    stats.values(1, [T0])
    with caplog.at_level(logging.WARNING, logger="agent.stats"):
        stats.flush()
    stats.close()
    assert "unknown element handles [99]" in caplog.text
    assert rows(db, "SELECT path, n_values FROM samples") == [("E1", 1)]


def test_configured_elements_are_stored_with_when(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    clock = Clock()
    first = Stats(db, [el(1), el(2, sampling_ms=None)], clock=clock)
    clock.t = T0 + 60
    first.flush()
    first.close()
    clock.t = T0 + 3600
    second = Stats(db, [el(1, sampling_ms=500)], clock=clock)  # E1 sampled faster now, E2 removed
    clock.t = T0 + 3660
    second.flush()
    second.close()
    got = rows(db, "SELECT path, sampling_ms, first_configured, last_configured FROM elements ORDER BY path, 3")
    assert got == [
        ("E1", 1000.0, T0, T0 + 60),
        ("E1", 500.0, T0 + 3600, T0 + 3660),
        ("E2", -1.0, T0, T0 + 60),
    ]


# -- gaps, uptime, analysis, control ----------------------------------------------------------------


def test_a_gap_breaks_the_chain_and_is_closed_by_its_start(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    stats = Stats(db, [el(1), el(2)], clock=Clock())
    stats.values(1, [T0, T0 + 1])
    stats.gap("m1", [1, 2], T0 + 1.5, None, "connection lost")
    stats.flush()
    assert rows(db, "SELECT machine, start_t, end_t, reason, elements FROM gaps") == [
        ("m1", T0 + 1.5, None, "connection lost", 2)
    ]
    stats.values(1, [T0 + 10, T0 + 11])  # no 9 s interval across the gap
    stats.gap("m1", [1, 2], T0 + 1.5, T0 + 10, "connection lost")
    stats.values(1, [T0 + 12])  # the closing call did not break the new chain
    stats.flush()
    stats.close()
    assert sample_row(db)[:6] == (5, 3, 3.0, 3.0, 1.0, 1.0)
    assert rows(db, "SELECT machine, start_t, end_t, reason, elements FROM gaps") == [
        ("m1", T0 + 1.5, T0 + 10, "connection lost", 2)
    ]


def test_a_gap_opened_by_one_run_is_closed_by_the_next(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    first = Stats(db, [el(1)], clock=Clock())
    first.values(1, [T0, T0 + 1])
    first.gap("m1", [1], T0 + 1, None, "agent stopped")
    first.flush()
    first.close()
    second = Stats(db, [el(1)], clock=Clock(T0 + 100))
    second.values(1, [T0 + 60, T0 + 61])
    second.gap("m1", [1], T0 + 1, T0 + 60, "agent stopped")
    second.flush()
    second.close()
    assert rows(db, "SELECT start_t, end_t, reason FROM gaps") == [(T0 + 1, T0 + 60, "agent stopped")]
    assert sample_row(db)[:4] == (4, 2, 2.0, 2.0)  # 0->1 and 60->61, nothing across the stop


def test_connected_seconds_per_hour(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    clock = Clock(T0 + HOUR + 600)
    stats = Stats(db, [el(1)], clock=clock)
    stats.source_state("m1", True, T0 + 1800)
    stats.source_state("m1", True, T0 + 1900)  # already connected: changes nothing
    stats.flush()  # still connected: counted up to now
    assert rows(db, "SELECT hour, seconds FROM connected ORDER BY hour") == [(int(T0), 1800.0), (int(T0 + HOUR), 600.0)]
    stats.source_state("m1", False, T0 + HOUR + 900)
    stats.source_state("m1", False, T0 + HOUR + 950)  # already disconnected
    clock.t = T0 + HOUR + 1200
    stats.flush()
    stats.close()
    assert rows(db, "SELECT hour, seconds FROM connected ORDER BY hour") == [(int(T0), 1800.0), (int(T0 + HOUR), 900.0)]


def test_analysis_summaries_and_control_writes_are_stored(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    stats = Stats(db, [el(1)], clock=Clock(T0 + 700))
    summary = {
        "start": "2023-11-14T22:00:00Z",
        "end": T0 + 600,
        "state_seconds": {"running": 500.0, "idle": 100.0},
        "running_s": 500.0,
        "cycles": np.int64(10),
        "oee": np.float64(0.75),
    }
    stats.analysis("m1", summary)
    stats.analysis("m1", {**summary, "cycles": 11})  # the same period again: replaces it
    stats.control_write("m1", "Setpoint", "kim", True, T0 + 30, "set 5.0")
    stats.control_write("m1", "Setpoint", "lee", False, T0 + 40, "BadNotWritable")
    stats.flush()
    stats.close()
    got = rows(db, "SELECT machine, start_t, end_t, summary FROM analysis")
    assert [(m, a, b) for m, a, b, _ in got] == [("m1", T0, T0 + 600)]
    assert orjson.loads(got[0][3])["cycles"] == 11
    assert rows(db, "SELECT at, machine, element, user, ok, detail FROM control_writes ORDER BY at") == [
        (T0 + 30, "m1", "Setpoint", "kim", 1, "set 5.0"),
        (T0 + 40, "m1", "Setpoint", "lee", 0, "BadNotWritable"),
    ]


def test_retention_deletes_old_hours_and_keeps_recent_ones(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    clock = Clock()
    stats = Stats(db, [el(1)], retention_days=35, clock=clock)

    def one_of_each(t: float) -> None:
        stats.values(1, [t, t + 1])
        stats.gap("m1", [1], t + 2, t + 3, "connection lost")
        stats.delivered("mqtt", "m1", "data", 2, [0.1])
        stats.source_state("m1", True, t)
        stats.source_state("m1", False, t + 10)
        stats.analysis("m1", {"start": t, "end": t + 60})
        stats.control_write("m1", "Setpoint", "kim", True, t, "")

    one_of_each(T0)  # will be 40 days old
    clock.t = T0 + 6 * DAY
    one_of_each(clock.t)  # will be 34 days old
    stats.flush()
    clock.t = T0 + 40 * DAY
    one_of_each(clock.t)
    stats.flush()
    stats.close()
    kept = [int(T0 + 6 * DAY), int(T0 + 40 * DAY)]
    for table in ("samples", "delivered", "connected"):
        assert [h for (h,) in rows(db, f"SELECT hour FROM {table} ORDER BY hour")] == kept, table
    assert [int(t) for (t,) in rows(db, "SELECT start_t - 2 FROM gaps ORDER BY 1")] == kept
    assert [int(t) for (t,) in rows(db, "SELECT start_t FROM analysis ORDER BY 1")] == kept
    assert [int(t) for (t,) in rows(db, "SELECT at FROM control_writes ORDER BY 1")] == kept
    covered = rows(db, "SELECT value FROM meta WHERE key = 'covered_from'")[0][0]
    assert float(covered) == T0 + 40 * DAY - 35 * DAY


# -- latency histogram ----------------------------------------------------------------------------


def test_latency_percentiles_within_one_bucket_of_the_exact_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    lat = rng.lognormal(mean=math.log(0.2), sigma=1.0, size=20_000)  # median 200 ms, a long tail
    db = tmp_path / "stats.db"
    clock = Clock()
    stats = Stats(db, [el(1)], clock=clock)
    for i, chunk in enumerate(np.array_split(lat, 40)):
        clock.t = T0 + i * 200  # over several hours and flushes: the histograms must merge
        stats.delivered("mqtt", "m1", "data", len(chunk) * 10, list(chunk))
        if i % 7 == 0:
            stats.flush()
    stats.flush()
    stats.close()
    got = rows(db, "SELECT records, samples, hist FROM delivered")
    assert len(got) > 1
    assert sum(r[0] for r in got) == 200_000
    assert sum(r[1] for r in got) == 20_000
    merged = sum((hist_from_blob(r[2]) for r in got), np.zeros(LAT_BUCKETS, dtype=np.int64))
    for q in (0.50, 0.95, 0.99):
        exact = float(np.quantile(lat, q))
        est = percentile(merged, q)
        assert est is not None
        i = int(np.searchsorted(np.cumsum(histogram(list(lat))), math.ceil(q * len(lat))))
        lo, hi = bucket_bounds(i)
        assert lo <= exact < hi
        assert abs(est - exact) <= hi - lo, (q, est, exact)


def test_latency_histogram_edges() -> None:
    h = histogram([-0.5, 0.0, 0.0009, 0.001, 0.00113, 1.0, 3599.0, 5000.0, math.nan, math.inf])
    assert sum(h) == 8  # what is not finite is left out
    assert h[0] == 3  # below 1 ms (also a negative latency: the source clock is ahead)
    assert h[1] == 1 and h[2] == 1  # [1 ms, 1.122 ms), [1.122 ms, 1.259 ms)
    assert h[-2] == 1  # 3599 s: the last bucket below 3981 s
    assert h[-1] == 1  # >= 3981 s
    assert percentile(np.zeros(LAT_BUCKETS, dtype=np.int64), 0.5) is None


# -- failures ---------------------------------------------------------------------------------------


@contextmanager
def small_disk(directory: Path) -> Iterator[bool]:
    """A 4 MB tmpfs when it can be mounted (yields True), else a plain directory (False)."""
    directory.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(directory)], capture_output=True)
    try:
        yield done.returncode == 0
    finally:
        if done.returncode == 0:
            subprocess.run(["umount", "-l", str(directory)], check=False)


def test_a_full_disk_raises_stats_error_and_loses_nothing(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as tmpfs:
        db = tmp_path / "disk" / "stats.db"
        clock = Clock()
        elements = [el(h, path=f"E{h}") for h in range(200)]
        stats = Stats(db, elements, clock=clock)
        for h in range(200):
            stats.values(h, [T0, T0 + 1])
        stats.flush()
        if tmpfs:
            filler = fill(db.parent)
        else:  # no root: the database's page limit plays the full disk
            assert stats._db is not None
            pages = stats._db.execute("PRAGMA page_count").fetchone()[0]
            stats._db.execute(f"PRAGMA max_page_count = {pages}")
        for hour in range(1, 30):  # many new rows: new pages
            clock.t = T0 + hour * HOUR
            for h in range(200):
                stats.values(h, [clock.t, clock.t + 2])
        stats.delivered("mqtt", "m1", "data", 5, [0.1])
        stats.control_write("m1", "Setpoint", "kim", True, clock.t, "")
        with pytest.raises(StatsError, match="full"):
            stats.flush()
        # the agent keeps going: values still count, a second flush fails the same way
        stats.values(0, [clock.t + 3])
        with pytest.raises(StatsError):
            stats.flush()
        if tmpfs:
            filler.unlink()
        else:
            assert stats._db is not None
            stats._db.execute("PRAGMA max_page_count = 1073741823")
        stats.flush()
        stats.close()
        assert rows(db, "SELECT count(*), sum(n_values), sum(intervals) FROM samples") == [
            (200 * 30, 200 * 60 + 1, 200 * 59 + 1)
        ]
        assert rows(db, "SELECT sum(records) FROM delivered") == [(5,)]
        assert rows(db, "SELECT count(*) FROM control_writes") == [(1,)]


def test_a_damaged_file_is_moved_aside_and_a_new_one_started(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "stats.db"
    garbage = b"this is not an SQLite file\n" * 200
    db.write_bytes(garbage)
    with caplog.at_level(logging.ERROR, logger="agent.stats"):
        stats = Stats(db, [el(1)], clock=Clock())
    aside = list(tmp_path.glob("stats.db.damaged-*"))
    assert [p.name for p in aside] == ["stats.db.damaged-20231114T220000Z"]
    assert aside[0].read_bytes() == garbage
    assert "is damaged" in caplog.text and str(aside[0]) in caplog.text
    stats.values(1, [T0, T0 + 1])
    stats.flush()
    stats.close()
    assert sample_row(db)[:2] == (2, 1)


def test_another_sqlite_database_is_not_taken_for_a_statistics_file(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    other = sqlite3.connect(db)
    other.execute("CREATE TABLE records (x)")
    other.commit()
    other.close()
    Stats(db, [el(1)], clock=Clock()).close()
    assert len(list(tmp_path.glob("stats.db.damaged-*"))) == 1
    assert rows(db, "PRAGMA user_version") == [(1,)]


def test_a_file_that_cannot_be_opened_is_tried_again_at_each_flush(tmp_path: Path) -> None:
    db = tmp_path / "later" / "stats.db"  # the directory does not exist yet
    stats = Stats(db, [el(1)], clock=Clock())
    stats.values(1, [T0, T0 + 1])
    with pytest.raises(StatsError, match="cannot be opened"):
        stats.flush()
    db.parent.mkdir()
    stats.values(1, [T0 + 2])
    stats.flush()
    stats.close()
    assert sample_row(db)[:3] == (3, 2, 2.0)
    with pytest.raises(StatsError, match="closed"):
        stats.flush()


def test_flush_in_another_thread_loses_no_value(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    stats = Stats(db, [el(1)], clock=Clock(T0 + HOUR))
    batches, size = 2000, 10
    done = threading.Event()

    def flusher() -> None:
        while not done.is_set():
            stats.flush()

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        for b in range(batches):
            stats.values(1, [T0 + (b * size + i) * 0.1 for i in range(size)])
    finally:
        done.set()
        thread.join()
    stats.flush()
    stats.close()
    n, k, s = rows(db, "SELECT n_values, intervals, isum FROM samples")[0]
    assert (n, k) == (batches * size, batches * size - 1)
    assert s == pytest.approx((batches * size - 1) * 0.1)
