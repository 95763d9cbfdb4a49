"""The agent's own statistics store: what it measured, kept after the records have left the buffer.

Delivered records leave the buffer, so the figures a level-evidence report (agent/level.py,
docs/level-evidence.md) needs are accumulated here as they happen and merged into a small SQLite
file (WAL) about once a minute. The hot-path calls (`values`, `delivered`, ...) only add to
dictionaries in memory; SQL runs only in `flush`.

What is kept, per UTC hour where it says so (`hour` columns hold the epoch second the hour starts):

- `samples`, per element (machine, idShort path) and hour of the value's source time: the number
  of values stored and the intervals between consecutive source times of that element (count,
  sum, sum of squares, min, max; the interval belongs to the hour of its later value). Count, sum
  and sum of squares add up over any range of hours, so the mean period and its jitter
  (population standard deviation) can be computed for any period. An interval is counted only
  when it is > 0 (a re-reported value or a clock stepping back starts the chain again at that
  value without counting). The last source time of each element is kept in memory and in the
  file (`last_value`), so the interval across a flush, or across a restart, is not lost. An
  interruption is not a sampling interval: a `gap` call that opens a gap (or reports one that
  starts at or after an element's last value) breaks the chain of those elements, and the first
  value after it starts a new one. A gap reported only after values came back cannot take back
  the interval already counted across it.
- `gaps`, per machine: start, end (NULL while open), reason, how many elements; keyed by
  (machine, start), so a later call with the same start closes an open gap.
- `delivered`, per sink, machine ('' when none was named), lane and hour of the confirmation:
  the records confirmed by the far end, and a latency histogram of the sample of them given
  (seconds from source time to confirmation) in fixed log-spaced buckets: one below 1 ms, 20 per
  decade from 1 ms to 3981 s (>= 1 h), one above. Histograms add up; `percentile` reads one.
- `connected`, per machine and hour: seconds the source was connected (from `source_state`).
- `analysis`, per machine and period start: the edge analysis' period summary, as JSON.
- `control_writes`: every control write to equipment (time, machine, element, user, ok, detail).
- `elements`: the configured elements (machine, path, mode, sampling; -1 = none configured) with
  the first and last time a running agent had that configuration.
- `meta`: `first_open` (when the file was started), `last_flush`, `covered_from` (the later of
  first_open and the retention cutoff: the report's default start).

`flush` writes everything in one transaction (a crash leaves the file as it was before or after
it) and adds to the rows of the same hour already in the file, also those of a previous run. Rows
older than `retention_days` are deleted in the same transaction. When the write fails (disk
full, I/O error) nothing is lost from memory: the figures are put back and written at the next
flush, and `flush` raises one `StatsError` saying what happened. A file that is damaged (not an
SQLite database, fails the integrity check, or has an unknown layout) is moved aside to
`<name>.damaged-<UTC time>` with its -wal and -shm, logged, and a new file is started, at open
and when a flush finds the damage. A file that cannot be opened for another reason (a full or
read-only disk) is logged at open and tried again at each flush.

All methods may be called from one thread while `flush` runs in another (a lock guards the
in-memory state; the SQL work happens outside it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import struct
import threading
import time
from array import array
from bisect import bisect_left
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate, chain, islice
from operator import mul, sub
from pathlib import Path
from typing import Any, Final

import orjson

log = logging.getLogger(__name__)

HOUR: Final = 3600
FOLD_VALUES: Final = 200_000  # pending values counted at once (about 1.6 MB of times)
SCHEMA_VERSION: Final = 1
NO_SAMPLING: Final = -1.0  # `elements.sampling_ms` when none is configured

# Latency histogram: bucket 0 is < 1 ms (also negative latencies: a source clock ahead of the
# agent's), bucket i (1..LAT_TOP) is [EDGES[i-1], EDGES[i]), bucket LAT_TOP + 1 is >= EDGES[-1].
LAT_LOW: Final = 1e-3
LAT_PER_DECADE: Final = 20
LAT_TOP: Final = math.ceil(math.log10(HOUR / LAT_LOW) * LAT_PER_DECADE)  # 132: up to 3981 s
LAT_BUCKETS: Final = LAT_TOP + 2
LAT_EDGES: Final = tuple(LAT_LOW * 10.0 ** (i / LAT_PER_DECADE) for i in range(LAT_TOP + 1))
_HIST_BLOB: Final = struct.Struct(f"<{LAT_BUCKETS}q")  # a histogram as stored: little-endian int64 counts

Hist = list[int]
"""A latency histogram: LAT_BUCKETS counts. Plain ints: at most 16 latencies come per message
(uploader/forwarder.py), too few for an array library to pay off, so the agent needs none."""

_SCHEMA: Final = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE elements (
    machine TEXT NOT NULL, path TEXT NOT NULL, mode TEXT NOT NULL, sampling_ms REAL NOT NULL,
    first_configured REAL NOT NULL, last_configured REAL NOT NULL,
    PRIMARY KEY (machine, path, mode, sampling_ms)
);
CREATE TABLE samples (
    machine TEXT NOT NULL, path TEXT NOT NULL, hour INTEGER NOT NULL,
    n_values INTEGER NOT NULL, intervals INTEGER NOT NULL, isum REAL NOT NULL, isumsq REAL NOT NULL,
    imin REAL, imax REAL, first_t REAL NOT NULL, last_t REAL NOT NULL,
    PRIMARY KEY (machine, path, hour)
) WITHOUT ROWID;
CREATE INDEX samples_hour ON samples (hour);
CREATE TABLE last_value (machine TEXT NOT NULL, path TEXT NOT NULL, t REAL NOT NULL, PRIMARY KEY (machine, path));
CREATE TABLE gaps (
    machine TEXT NOT NULL, start_t REAL NOT NULL, end_t REAL, reason TEXT NOT NULL, elements INTEGER NOT NULL,
    PRIMARY KEY (machine, start_t)
);
CREATE TABLE delivered (
    sink TEXT NOT NULL, machine TEXT NOT NULL, lane TEXT NOT NULL, hour INTEGER NOT NULL,
    records INTEGER NOT NULL, samples INTEGER NOT NULL, hist BLOB NOT NULL,
    PRIMARY KEY (sink, machine, lane, hour)
);
CREATE TABLE connected (
    machine TEXT NOT NULL, hour INTEGER NOT NULL, seconds REAL NOT NULL, PRIMARY KEY (machine, hour)
);
CREATE TABLE analysis (
    machine TEXT NOT NULL, start_t REAL NOT NULL, end_t REAL NOT NULL, summary TEXT NOT NULL,
    PRIMARY KEY (machine, start_t)
);
CREATE TABLE control_writes (
    at REAL NOT NULL, machine TEXT NOT NULL, element TEXT NOT NULL, user TEXT NOT NULL,
    ok INTEGER NOT NULL, detail TEXT NOT NULL
);
CREATE INDEX control_writes_at ON control_writes (at);
"""

_UPSERT_SAMPLES: Final = """
INSERT INTO samples (machine, path, hour, n_values, intervals, isum, isumsq, imin, imax, first_t, last_t)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (machine, path, hour) DO UPDATE SET
    n_values = n_values + excluded.n_values,
    intervals = intervals + excluded.intervals,
    isum = isum + excluded.isum,
    isumsq = isumsq + excluded.isumsq,
    imin = min(coalesce(imin, excluded.imin), coalesce(excluded.imin, imin)),
    imax = max(coalesce(imax, excluded.imax), coalesce(excluded.imax, imax)),
    first_t = min(first_t, excluded.first_t),
    last_t = max(last_t, excluded.last_t)
"""


class StatsError(Exception):
    """The statistics file could not be opened or written; the figures stay in memory for the next flush."""


class _Damaged(Exception):
    """The file is not a statistics file this version can use (garbage, damaged, unknown layout)."""


@dataclass(frozen=True, slots=True)
class ElementInfo:
    """One configured element: `handle` is the number the running agent gives it (values() uses it)."""

    handle: int
    machine: str
    path: str
    sampling_ms: int | None
    mode: str  # "subscribe" | "poll"


# One element-hour accumulator: [values, intervals, sum, sum of squares, min, max, first t, last t].
_N, _K, _S, _SS, _MIN, _MAX, _FIRST, _LAST = range(8)


# Consumes an iterator, keeping nothing.
_drain: Final[Callable[[Iterable[object]], None]] = deque[object](maxlen=0).extend


def _times() -> array[float]:
    return array("d")


def _new_acc() -> list[float]:
    return [0, 0, 0.0, 0.0, math.inf, -math.inf, math.inf, -math.inf]


def _merge_acc(into: list[float], other: list[float]) -> None:
    into[_N] += other[_N]
    into[_K] += other[_K]
    into[_S] += other[_S]
    into[_SS] += other[_SS]
    into[_MIN] = min(into[_MIN], other[_MIN])
    into[_MAX] = max(into[_MAX], other[_MAX])
    into[_FIRST] = min(into[_FIRST], other[_FIRST])
    into[_LAST] = max(into[_LAST], other[_LAST])


def new_hist() -> Hist:
    return [0] * LAT_BUCKETS


def histogram(latencies: Sequence[float]) -> Hist:
    """Latencies (seconds) counted into the fixed buckets; values that are not finite are left out."""
    hist = new_hist()
    for x in latencies:
        lat = float(x)
        if not math.isfinite(lat):
            continue
        if lat < LAT_LOW:
            hist[0] += 1
        else:
            hist[min(math.floor(math.log10(lat / LAT_LOW) * LAT_PER_DECADE) + 1, LAT_TOP + 1)] += 1
    return hist


def add_hist(into: Hist, other: Sequence[int]) -> None:
    """Adds `other`'s counts to `into`, in place."""
    for i, n in enumerate(other):
        into[i] += int(n)


def hist_from_blob(blob: bytes) -> Hist:
    return list(_HIST_BLOB.unpack(blob))


def hist_to_blob(hist: Sequence[int]) -> bytes:
    return _HIST_BLOB.pack(*hist)


def bucket_bounds(i: int) -> tuple[float, float]:
    """The range of bucket `i` in seconds (the top bucket's upper bound is infinite)."""
    if i <= 0:
        return 0.0, LAT_LOW
    if i > LAT_TOP:
        return float(LAT_EDGES[-1]), math.inf
    return float(LAT_EDGES[i - 1]), float(LAT_EDGES[i])


def percentile(hist: Sequence[int], q: float) -> float | None:
    """The `q` quantile (0..1) in seconds read from a merged histogram; None when it is empty.

    The bucket holding the value of rank ceil(q * n) is found; inside it the value is interpolated
    (geometrically; linearly in the bucket below 1 ms), so the result is within that bucket. In the
    top bucket (>= 3981 s) its lower bound is returned.
    """
    cum = list(accumulate(int(n) for n in hist))
    total = cum[-1] if cum else 0
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    i = bisect_left(cum, rank)
    before = int(cum[i - 1]) if i > 0 else 0
    frac = (rank - before - 0.5) / int(hist[i])
    lo, hi = bucket_bounds(i)
    if i == 0:
        return lo + (hi - lo) * frac
    if math.isinf(hi):
        return lo
    return float(lo * (hi / lo) ** frac)


def to_epoch(v: Any) -> float | None:
    """Epoch seconds from a number, a datetime (naive = UTC) or an ISO 8601 string; None otherwise."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp()
    if isinstance(v, str):
        try:
            return to_epoch(datetime.fromisoformat(v.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def _json_default(v: Any) -> Any:
    return str(v)


@dataclass
class _Snapshot:
    """What one flush writes, taken out of memory under the lock (and put back if the write fails)."""

    acc: dict[tuple[int, int], list[float]]
    last: dict[int, float | None]  # handle -> last source time, None: delete (chain broken by a gap)
    cut: set[int]
    gaps: dict[tuple[str, float], tuple[float | None, str, int]]
    deliv: dict[tuple[str, str, str, int], list[Any]]  # -> [records, samples, hist]
    conn: dict[tuple[str, int], float]
    analysis: list[tuple[str, float, float, str]]
    control: list[tuple[float, str, str, str, int, str]]
    now: float = 0.0
    elements: list[tuple[str, str, str, float]] = field(default_factory=list)


class Stats:
    """Accumulates the agent's measured figures in memory and merges them into an SQLite file on `flush`."""

    def __init__(
        self,
        path: Path,
        elements: Sequence[ElementInfo],
        *,
        retention_days: int = 35,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.retention_days = retention_days
        self._clock = clock
        self._started = clock()
        self._where: dict[int, tuple[str, str]] = {}  # handle -> (machine, path), every handle ever configured
        self._config: list[tuple[str, str, str, float]] = []
        self._configured_at: dict[tuple[str, str, str, float], float] = {}  # added by a reload: since then
        self._lock = threading.Lock()  # the in-memory state
        self.configure(elements)
        self._io = threading.Lock()  # the connection (flush, close)
        self._db: sqlite3.Connection | None = None
        self._closed = False
        self._unknown: set[int] = set()
        # in memory until the next flush
        self._acc: dict[tuple[int, int], list[float]] = {}  # (handle, hour number) -> accumulator
        self._counted: dict[int, int] = {}  # handle -> values counted since start and taken to be flushed
        self._last: dict[int, float] = {}  # handle -> last source time (kept across flushes)
        self._pending: defaultdict[int, array[float]] = defaultdict(_times)  # handle -> times not counted yet
        self._pending_n = 0
        self._cut: set[int] = set()  # handles whose chain a gap broke since the last flush
        self._gaps: dict[tuple[str, float], tuple[float | None, str, int]] = {}
        self._open_gaps: set[tuple[str, float]] = set()
        self._deliv: dict[tuple[str, str, str, int], list[Any]] = {}
        self._conn: dict[tuple[str, int], float] = {}
        self._since: dict[str, float] = {}  # machine -> connected since
        self._analysis: list[tuple[str, float, float, str]] = []
        self._control: list[tuple[float, str, str, str, int, str]] = []
        try:
            self._open()
        except StatsError as e:
            log.error("%s; collecting in memory, opening it again at the next flush", e)

    def configure(self, elements: Sequence[ElementInfo]) -> None:
        """The configured elements (at start, and again at a reload: new ones count as configured from now;
        values of removed ones counted before are still written)."""
        config = sorted(
            {
                (e.machine, e.path, e.mode, NO_SAMPLING if e.sampling_ms is None else float(e.sampling_ms))
                for e in elements
            }
        )
        with self._lock:
            if self._config:
                now = self._clock()
                for c in set(config) - set(self._config):
                    self._configured_at.setdefault(c, now)
            self._where |= {e.handle: (e.machine, e.path) for e in elements}
            self._config = config

    # -- hot path --------------------------------------------------------------------------------

    def values(self, handle: int, source_times: Sequence[float]) -> None:
        """Values stored for one element: count them and the intervals between their source times."""
        with self._lock:
            self._fold()
            self._values(handle, source_times)

    def _values(self, handle: int, source_times: Sequence[float]) -> None:
        n = len(source_times)
        if n:
            prev = self._last.get(handle)
            first = source_times[0]
            last = source_times[-1]
            if prev is None:
                d = list(map(sub, islice(source_times, 1, None), source_times))
            else:
                d = list(map(sub, source_times, chain((prev,), source_times)))
            # Fast path: ascending, finite, and all in one hour (then every interval is that hour's).
            s = sum(d)
            if (
                math.isfinite(first)
                and math.isfinite(s)
                and (not d or min(d) > 0)
                and (hour := int(first // HOUR)) == last // HOUR
            ):
                acc = self._acc.get((handle, hour))
                if acc is None:
                    acc = self._acc[(handle, hour)] = _new_acc()
                acc[_N] += n
                if d:
                    acc[_K] += len(d)
                    acc[_S] += s
                    acc[_SS] += sum(map(mul, d, d))
                    lo = min(d)
                    hi = max(d)
                    if lo < acc[_MIN]:
                        acc[_MIN] = lo
                    if hi > acc[_MAX]:
                        acc[_MAX] = hi
                if first < acc[_FIRST]:
                    acc[_FIRST] = first
                if last > acc[_LAST]:
                    acc[_LAST] = last
                self._last[handle] = last
                return
            self._each([handle] * n, [float(v) for v in source_times])

    def counts(self) -> dict[int, int]:
        """Values counted per handle since start (flushed or not): for the agent's metrics."""
        with self._lock:
            self._fold()
            out = dict(self._counted)
            for (h, _), acc in self._acc.items():
                out[h] = out.get(h, 0) + int(acc[_N])
        return out

    def values_each(self, handles: Sequence[int], source_times: Sequence[float]) -> None:
        """One value per (handle, source time) pair, in arrival order: the pipeline's call, once per publish.
        Per value only an append to its element's pending times; every `FOLD_VALUES` values (and before
        anything reads or cuts the figures) each element's pending times are counted at once, with C-level
        loops (`_values`), instead of value by value."""
        if len(handles) != len(source_times):
            raise ValueError(f"values_each: {len(handles)} handles but {len(source_times)} source times")
        with self._lock:
            # Each time onto its element's pending array, the loop in C (map, drained by a zero-length deque).
            _drain(map(array.append, map(self._pending.__getitem__, handles), source_times))
            self._pending_n += len(handles)
            if self._pending_n >= FOLD_VALUES:
                self._fold()

    def _fold(self) -> None:
        """The pending times into the accumulators (under the lock)."""
        if self._pending_n:
            pending, self._pending = self._pending, defaultdict(_times)
            self._pending_n = 0
            for h, times in pending.items():
                self._values(h, times)

    def _each(self, handles: Sequence[int], source_times: Sequence[float]) -> None:
        """Value by value, under the lock: any order, any hour, non-finite times skipped."""
        accs, last_of, new_acc = self._acc, self._last, _new_acc
        for handle, t in zip(handles, source_times, strict=True):
            if not math.isfinite(t):
                continue
            key = (handle, int(t // HOUR))
            acc = accs.get(key)
            if acc is None:
                acc = accs[key] = new_acc()
            acc[_N] += 1
            if t < acc[_FIRST]:
                acc[_FIRST] = t
            if t > acc[_LAST]:
                acc[_LAST] = t
            prev = last_of.get(handle)
            if prev is not None and (dt := t - prev) > 0:
                acc[_K] += 1
                acc[_S] += dt
                acc[_SS] += dt * dt
                if dt < acc[_MIN]:
                    acc[_MIN] = dt
                if dt > acc[_MAX]:
                    acc[_MAX] = dt
            last_of[handle] = t

    def gap(self, machine: str, handles: Sequence[int], start: float, end: float | None, reason: str) -> None:
        """Collection interrupted; `end` None while open (a later call with the same machine and start closes it)."""
        key = (machine, float(start))
        with self._lock:
            self._fold()  # the values before the gap are counted before it cuts their chains
            opens = end is None and key not in self._open_gaps
            for h in handles:
                last = self._last.get(h)
                if last is not None and (opens or last <= start):
                    del self._last[h]
                    self._cut.add(h)
            if end is None:
                self._open_gaps.add(key)
            else:
                self._open_gaps.discard(key)
            elements = len(handles)
            pending = self._gaps.get(key)
            if pending is not None:
                elements = max(elements, pending[2])
                if end is None:
                    end = pending[0]
            self._gaps[key] = (None if end is None else float(end), reason, elements)

    def delivered(self, sink: str, machine: str | None, lane: str, count: int, latencies: Sequence[float]) -> None:
        """Records confirmed by the far end; `latencies`: seconds from source time to confirmation, for a sample."""
        hist = histogram(latencies) if len(latencies) else None
        hour = int(self._clock() // HOUR)
        key = (sink, machine or "", lane, hour)
        with self._lock:
            acc = self._deliv.get(key)
            if acc is None:
                acc = self._deliv[key] = [0, 0, new_hist()]
            acc[0] += count
            if hist is not None:
                acc[1] += sum(hist)
                add_hist(acc[2], hist)

    def source_state(self, machine: str, connected: bool, at: float) -> None:
        """The source of `machine` connected or disconnected at `at` (agent time): connected seconds per hour."""
        with self._lock:
            since = self._since.get(machine)
            if connected:
                if since is None:
                    self._since[machine] = at
            elif since is not None:
                self._add_connected(machine, since, at)
                del self._since[machine]

    def _add_connected(self, machine: str, a: float, b: float) -> None:
        a = max(a, b - self.retention_days * 86400.0)
        while a < b:
            hour = int(a // HOUR)
            upto = min(b, (hour + 1) * HOUR)
            self._conn[(machine, hour)] = self._conn.get((machine, hour), 0.0) + (upto - a)
            a = upto

    def analysis(self, machine: str, summary: dict[str, Any]) -> None:
        """A period summary of the edge analysis, stored as JSON per machine and period (start)."""
        now = self._clock()
        start = to_epoch(summary.get("start"))
        end = to_epoch(summary.get("end"))
        try:
            text = orjson.dumps(
                summary, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
            ).decode()
        except orjson.JSONEncodeError as e:
            log.warning("analysis summary of %s not stored, it does not convert to JSON: %s", machine, e)
            return
        start = now if start is None else start
        with self._lock:
            self._analysis.append((machine, start, max(start, now if end is None else end), text))

    def control_write(self, machine: str, element: str, user: str, ok: bool, at: float, detail: str) -> None:
        """A control write to equipment, successful or not."""
        with self._lock:
            self._control.append((at, machine, element, user, int(ok), detail))

    # -- storage ---------------------------------------------------------------------------------

    def flush(self) -> None:
        """Merge what is in memory into the file in one transaction; `StatsError` (figures kept) if it fails."""
        with self._io:
            if self._closed:
                raise StatsError(f"statistics file {self.path}: closed")
            now = self._clock()
            snap = self._take(now)
            try:
                if self._db is None:
                    self._open()
                try:
                    self._write(snap)
                except sqlite3.DatabaseError as e:
                    if _code(e) not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                        raise
                    self._move_aside(f"found damaged while writing: {e}")
                    self._open()
                    self._write(snap)
            except Exception as e:  # whatever it was, the agent keeps running and the figures are kept
                self._give_back(snap)
                if isinstance(e, StatsError):
                    raise
                raise StatsError(_describe(self.path, e)) from e

    def close(self) -> None:
        """Close the file. It does not flush: call `flush` first."""
        with self._io:
            self._closed = True
            if self._db is not None:
                try:
                    self._db.close()
                except sqlite3.Error as e:
                    log.warning("closing statistics file %s: %s", self.path, e)
                self._db = None

    def _take(self, now: float) -> _Snapshot:
        with self._lock:
            self._fold()
            for machine, since in self._since.items():
                if now > since:
                    self._add_connected(machine, since, now)
                    self._since[machine] = now
            dirty = {h for h, _ in self._acc} | self._cut
            counted = self._counted
            for (h, _), acc in self._acc.items():
                counted[h] = counted.get(h, 0) + int(acc[_N])
            snap = _Snapshot(
                acc=self._acc,
                last={h: self._last.get(h) for h in dirty},
                cut=self._cut,
                gaps=self._gaps,
                deliv=self._deliv,
                conn=self._conn,
                analysis=self._analysis,
                control=self._control,
                now=now,
                elements=self._config,
            )
            self._acc, self._cut, self._gaps, self._deliv, self._conn = {}, set(), {}, {}, {}
            self._analysis, self._control = [], []
            return snap

    def _give_back(self, snap: _Snapshot) -> None:
        """A failed flush: merge its snapshot into what arrived since, for the next flush."""
        with self._lock:
            for key, acc in snap.acc.items():
                self._counted[key[0]] -= int(acc[_N])
                cur = self._acc.get(key)
                if cur is None:
                    self._acc[key] = acc
                else:
                    _merge_acc(cur, acc)
            self._cut |= snap.cut
            for gkey, (end, reason, elements) in snap.gaps.items():
                newer = self._gaps.get(gkey)
                if newer is None:
                    self._gaps[gkey] = (end, reason, elements)
                else:
                    self._gaps[gkey] = (newer[0] if newer[0] is not None else end, newer[1], max(elements, newer[2]))
            for dkey, d in snap.deliv.items():
                cur_d = self._deliv.get(dkey)
                if cur_d is None:
                    self._deliv[dkey] = d
                else:
                    cur_d[0] += d[0]
                    cur_d[1] += d[1]
                    add_hist(cur_d[2], d[2])
            for ckey, seconds in snap.conn.items():
                self._conn[ckey] = self._conn.get(ckey, 0.0) + seconds
            self._analysis[:0] = snap.analysis
            self._control[:0] = snap.control

    def _open(self) -> None:
        """Open (or create) the file; a damaged one is moved aside and a new one started."""
        try:
            self._db = self._connect()
        except _Damaged as e:
            self._move_aside(str(e))
            try:
                self._db = self._connect()
            except _Damaged as again:
                raise StatsError(f"statistics file {self.path}: a new file cannot be started: {again}") from again
        self._load()

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        except sqlite3.Error as e:
            raise StatsError(_describe(self.path, e)) from e
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise _Damaged(f"the integrity check failed: {check}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise _Damaged("it is an SQLite database, but not a statistics file")
                db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
            elif version != SCHEMA_VERSION:
                raise _Damaged(f"its format version is {version}, this agent reads version {SCHEMA_VERSION}")
            return db
        except sqlite3.DatabaseError as e:
            db.close()
            if _code(e) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                raise _Damaged(str(e)) from e
            raise StatsError(_describe(self.path, e)) from e
        except BaseException:
            db.close()
            raise

    def _load(self) -> None:
        """The last source time per element and the open gaps, from the file (what memory does not have yet)."""
        assert self._db is not None
        handles: dict[tuple[str, str], list[int]] = {}
        for h, where in self._where.items():
            handles.setdefault(where, []).append(h)
        try:
            rows = self._db.execute("SELECT machine, path, t FROM last_value").fetchall()
            gaps = self._db.execute("SELECT machine, start_t FROM gaps WHERE end_t IS NULL").fetchall()
        except sqlite3.Error as e:
            raise StatsError(_describe(self.path, e)) from e
        with self._lock:
            for machine, path, t in rows:
                for h in handles.get((machine, path), ()):
                    if h not in self._last and h not in self._cut:
                        self._last[h] = t
            for machine, start in gaps:
                if (machine, start) not in self._gaps:
                    self._open_gaps.add((machine, start))

    def _move_aside(self, problem: str) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        stamp = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
        try:
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    src.rename(f"{aside}{suffix}")
        except OSError as e:
            raise StatsError(
                f"statistics file {self.path} is damaged ({problem}) and cannot be moved aside: {e}"
            ) from e
        log.error(
            "statistics file %s is damaged (%s); moved it to %s and started a new one "
            "(the level-evidence report starts again from now)",
            self.path,
            problem,
            aside,
        )

    def _write(self, snap: _Snapshot) -> None:
        db = self._db
        assert db is not None
        now = snap.now
        cutoff = (int(now // HOUR) * HOUR) - self.retention_days * 86400
        unknown = {h for h, _ in snap.acc if h not in self._where} - self._unknown
        if unknown:
            self._unknown |= unknown
            log.warning("statistics: values for unknown element handles %s are not stored", sorted(unknown))
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('first_open', ?)", (repr(self._started),))
            db.executemany(
                "INSERT INTO elements VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (machine, path, mode, sampling_ms) "
                "DO UPDATE SET last_configured = max(last_configured, excluded.last_configured)",
                [(*c, self._configured_at.get(c, self._started), now) for c in snap.elements],
            )
            db.executemany(
                _UPSERT_SAMPLES,
                [
                    (
                        *self._where[h],
                        hour * HOUR,
                        int(a[_N]),
                        int(a[_K]),
                        a[_S],
                        a[_SS],
                        a[_MIN] if a[_K] else None,
                        a[_MAX] if a[_K] else None,
                        a[_FIRST],
                        a[_LAST],
                    )
                    for (h, hour), a in snap.acc.items()
                    if h in self._where
                ],
            )
            db.executemany(
                "INSERT INTO last_value VALUES (?, ?, ?) ON CONFLICT (machine, path) DO UPDATE SET t = excluded.t",
                [(*self._where[h], t) for h, t in snap.last.items() if t is not None and h in self._where],
            )
            db.executemany(
                "DELETE FROM last_value WHERE machine = ? AND path = ?",
                [self._where[h] for h, t in snap.last.items() if t is None and h in self._where],
            )
            db.executemany(
                "INSERT INTO gaps VALUES (?, ?, ?, ?, ?) ON CONFLICT (machine, start_t) DO UPDATE SET "
                "end_t = coalesce(excluded.end_t, end_t), reason = excluded.reason, "
                "elements = max(elements, excluded.elements)",
                [(m, start, end, reason, k) for (m, start), (end, reason, k) in snap.gaps.items()],
            )
            for (sink, machine, lane, hour), (records, samples, snap_hist) in snap.deliv.items():
                hist = snap_hist
                row = db.execute(
                    "SELECT records, samples, hist FROM delivered "
                    "WHERE sink = ? AND machine = ? AND lane = ? AND hour = ?",
                    (sink, machine, lane, hour * HOUR),
                ).fetchone()
                if row is not None:
                    records += row[0]
                    samples += row[1]
                    hist = hist_from_blob(row[2])  # a new list: the snapshot's stays as it is
                    add_hist(hist, snap_hist)
                db.execute(
                    "INSERT OR REPLACE INTO delivered VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (sink, machine, lane, hour * HOUR, records, samples, hist_to_blob(hist)),
                )
            db.executemany(
                "INSERT INTO connected VALUES (?, ?, ?) "
                "ON CONFLICT (machine, hour) DO UPDATE SET seconds = seconds + excluded.seconds",
                [(m, hour * HOUR, s) for (m, hour), s in snap.conn.items()],
            )
            db.executemany(
                "INSERT INTO analysis VALUES (?, ?, ?, ?) ON CONFLICT (machine, start_t) DO UPDATE SET "
                "end_t = excluded.end_t, summary = excluded.summary",
                snap.analysis,
            )
            db.executemany("INSERT INTO control_writes VALUES (?, ?, ?, ?, ?, ?)", snap.control)
            # retention
            for table in ("samples", "delivered", "connected"):
                db.execute(f"DELETE FROM {table} WHERE hour < ?", (cutoff,))
            db.execute("DELETE FROM gaps WHERE end_t IS NOT NULL AND end_t < ?", (cutoff,))
            db.execute("DELETE FROM analysis WHERE end_t < ?", (cutoff,))
            db.execute("DELETE FROM control_writes WHERE at < ?", (cutoff,))
            db.execute("DELETE FROM elements WHERE last_configured < ?", (cutoff,))
            db.execute("DELETE FROM last_value WHERE t < ?", (cutoff,))
            first_open = float(db.execute("SELECT value FROM meta WHERE key = 'first_open'").fetchone()[0])
            db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("last_flush", repr(now)), ("covered_from", repr(max(first_open, float(cutoff))))],
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise


def _code(e: sqlite3.Error) -> int | None:
    code = getattr(e, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def _describe(path: Path, e: BaseException) -> str:
    code = _code(e) if isinstance(e, sqlite3.Error) else None
    if code == sqlite3.SQLITE_FULL:
        what = "the disk (or the file's size limit) is full"
    elif code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        what = "the file is in use by another process"
    elif code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY):
        what = "the file cannot be opened or written (check the directory and its permissions)"
    elif isinstance(e, sqlite3.Error | OSError):
        what = "an I/O error"
    else:
        what = f"an unexpected error, {type(e).__name__}"
    return (
        f"statistics file {path}: {what} ({e}); nothing was written, the figures stay in memory "
        "and are written at the next flush"
    )
