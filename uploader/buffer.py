"""Durable store-and-forward buffer: records wait here, on disk, until the far end confirmed them.

One SQLite database in WAL mode, one table per lane. The runner takes a batch with `begin()`,
a sink writes it, and `end()` deletes what the far end accepted (or rejected for good); the rest
of the batch goes back to the front of its lane.

Invariants
----------
1. A record is stored, pending in its lane, from the `add()` that returned until it is deleted.
   Only two things delete it: `end()` (the far end accepted or rejected it) and the quota (the
   record is counted in the `Dropped` that `add()` returns, and in `stats()`). Nothing else does.
2. `add()` is one transaction: the rows, the records the quota dropped for them, the sequence
   high-water mark and the per-lane counters commit together or not at all. When it returns the
   commit is in the WAL; when it raises, nothing of it was written and it may simply be retried.
3. `seq` is assigned in `add()` order across all lanes, strictly increasing, and never reused:
   the high-water mark is persisted in the same transaction as the rows, so deleting every record
   and restarting does not bring a number back. A receiver dedupes by `(origin, seq)`.
4. Open batches live in memory only. A record is in at most one open batch; `begin()` hands out
   the oldest records of a lane that are in none. After a crash or restart every stored record is
   pending again, so delivery is at-least-once with duplicates bounded by what was in flight.
5. Within a lane, a record is either in an open batch, given back by `end()` (`_returned`, kept
   in seq order, handed out again before anything newer), or newer than every record handed out
   so far (`seq > _cursor`). So `pending = held + returned + fresh`, and `begin()` never needs
   to skip over records already in flight.
6. The quota drops only `data`, then `event`, records, oldest first; never a protected lane
   (gap, usage, status), never a record in an open batch, never the rows being added. If that is
   not enough the rows are stored anyway, over quota, and `stats().over_quota` says so.
7. One `Buffer` per file: the connection holds SQLite's exclusive lock for as long as it is open,
   so a second agent pointed at the same file fails at open instead of sending duplicates.

Durability: `synchronous="normal"` (the default) makes every returned `add()` survive a crash or
SIGKILL of the process: the commit is written to the WAL before `add()` returns, but not fsynced,
so a power loss or kernel panic may lose the last commits (the database stays consistent).
`"full"` fsyncs the WAL on every commit and survives power loss too, at the cost of one fsync per
`add()`/`end()` (milliseconds on eMMC/SD, which caps the add rate). Checkpoints are SQLite's own
passive auto-checkpoints; with no other readers they always complete, and they are the only fsync
under "normal".

Size: `quota_bytes` bounds the pages holding records (page_count - freelist_count, both read
from the database header, so checking costs microseconds per `add()`). New rows are estimated at
payload + `_ROW_OVERHEAD` bytes, so the file may pass the quota by a fraction of one `add()`
before the next `add()` corrects it. The WAL comes on top, up to about `_JOURNAL_SIZE_LIMIT`.
Pages freed by `end()` are given back to the file system with incremental vacuum, a bounded
number per call.

Threads: the connection keeps sqlite3's `check_same_thread`, so a `Buffer` must be used from the
thread that opened it (the agent's asyncio thread). Every call blocks for one transaction,
typically well under a few milliseconds; an auto-checkpoint adds one fsync of the database.
"""

from __future__ import annotations

import builtins
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Final, Literal

__all__ = [
    "Batch",
    "Buffer",
    "BufferCorruptError",
    "BufferError",
    "BufferFormatError",
    "BufferFullError",
    "BufferIOError",
    "BufferLockedError",
    "BufferStats",
    "Dropped",
    "Item",
    "Row",
]

log = logging.getLogger(__name__)

Row = tuple[str, str, float, bytes]
"""(lane, key, ts, body): lane name, routing key (asset id), source time as epoch seconds, and the
record body, one JSON object as bytes without an "id" field."""

SCHEMA_VERSION: Final = 1
_SQL_MARKS_TABLE: Final = "CREATE TABLE IF NOT EXISTS marks (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID"
_SQL_MARK: Final = "INSERT INTO marks (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
# Marks the file as ours, so another application's SQLite database is refused, not written into.
APPLICATION_ID: Final = 0x45414246

_LANES: Final = ("status", "gap", "event", "usage", "data")
_PROTECTED: Final = frozenset({"gap", "usage", "status"})
_DROP_ORDER: Final = ("data", "event")

# Bytes a record takes on disk beyond len(key) + len(body): rowid, ts, record header, cell pointer
# and page slack; 30-50 for ~300-byte bodies (bench/bench_buffer.py prints it). Only an estimate:
# add() reads the real page count every time, so an error here shifts one add()'s overshoot.
_ROW_OVERHEAD: Final = 40
_DROP_CHUNK: Final = 256
# Give space back only when a good part of the file is free, and a bounded amount per end(),
# so draining a backlog does not turn into one long vacuum.
_VACUUM_MIN_FREE_PAGES: Final = 256
_VACUUM_STEP_PAGES: Final = 1024
_WAL_AUTOCHECKPOINT_PAGES: Final = 1000
_JOURNAL_SIZE_LIMIT: Final = 8 * 1024 * 1024

_FOREIGN: Final = (
    "an SQLite database that is not an edge-agent buffer. Point the buffer path at a new file, or move this one aside."
)
_SQL_PAGES: Final = "SELECT * FROM pragma_page_count(), pragma_freelist_count()"
_by_seq = attrgetter("seq")


class BufferError(builtins.BufferError):
    """Base of every storage error the buffer raises; `path` is the database file.

    It subclasses the built-in of the same name, so `except BufferError` also catches it in a
    module that forgot the import.
    """

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"buffer {path}: {message}")
        self.path = path


class BufferFullError(BufferError):
    """The disk (or the database's page limit) is full. Nothing was written; retry after freeing space."""


class BufferIOError(BufferError):
    """The file could not be opened, read or written."""


class BufferCorruptError(BufferError):
    """The file is not an SQLite database, or it is damaged."""


class BufferFormatError(BufferError):
    """The file is an SQLite database, but not a buffer this version can use."""


class BufferLockedError(BufferError):
    """Another connection (another agent process) has the file open."""


@dataclass(frozen=True, slots=True)
class Item:
    """One stored record as `begin()` hands it out."""

    seq: int
    lane: str
    key: str
    ts: float
    body: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    """Records of one lane, oldest first, in flight until passed to `end()`."""

    lane: str
    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True)
class Dropped:
    """What one `add()` dropped to stay within the quota; the caller reports it as a gap.

    `by_key` maps each routing key to (count, earliest ts, latest ts) of its dropped records.
    """

    count: int
    by_key: dict[str, tuple[int, float, float]]


@dataclass(frozen=True, slots=True)
class BufferStats:
    """Counters per lane since open, and the size of the database."""

    added: dict[str, int]
    delivered: dict[str, int]
    rejected: dict[str, int]
    dropped: dict[str, int]
    pending: dict[str, int]
    db_bytes: int
    """page_count * page_size: the size of the database file once the WAL is checkpointed."""
    used_bytes: int
    """db_bytes minus free pages: what the quota is measured against."""
    wal_bytes: int
    quota_bytes: int
    over_quota: bool
    """The last add() could not get under the quota: only protected records, or records in open
    batches, were left to drop. The rows were stored anyway."""


@dataclass(slots=True)
class _Room:
    """Records the quota drops inside one add() transaction; applied to memory after the commit."""

    from_returned: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    # key -> [count, earliest ts, latest ts], mutable so each dropped record costs no allocation
    by_key: dict[str, list[float]] = field(default_factory=dict)
    short: bool = False

    def note(self, key: str, ts: float) -> None:
        entry = self.by_key.get(key)
        if entry is None:
            self.by_key[key] = [1, ts, ts]
        else:
            entry[0] += 1
            if ts < entry[1]:
                entry[1] = ts
            if ts > entry[2]:
                entry[2] = ts


class Buffer:
    """The durable queue between the pipeline and the sinks. See the module docstring for the rules."""

    LANES: ClassVar[tuple[str, ...]] = _LANES
    """Priority order for sending."""
    PROTECTED: ClassVar[frozenset[str]] = _PROTECTED
    """Never dropped by the quota. `event` is dropped only when no `data` is left to drop."""

    origin: str
    """Random id (12 hex characters) created with the database file and kept in it."""

    def __init__(
        self,
        path: str | Path,
        *,
        quota_bytes: int,
        synchronous: Literal["normal", "full"] = "normal",
        busy_timeout: float = 5.0,
    ) -> None:
        """Open the buffer at `path`, creating it if the file is absent or empty.

        `busy_timeout` is how long to wait for another process holding the file before failing
        with `BufferLockedError`. Raises `BufferCorruptError` for a file that is not a database,
        `BufferFormatError` for another application's database or a newer schema.
        """
        if quota_bytes <= 0:
            raise ValueError(f"quota_bytes must be positive, got {quota_bytes}")
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        self.path = Path(path)
        self.quota_bytes = quota_bytes
        self._closed = False
        self._over_quota = False
        # id(batch) -> (batch, whether it is one unbroken run of its lane's table)
        self._open: dict[int, tuple[Batch, bool]] = {}
        self._held = dict.fromkeys(_LANES, 0)
        self._cursor = dict.fromkeys(_LANES, 0)
        self._returned: dict[str, list[Item]] = {lane: [] for lane in _LANES}
        self._added = dict.fromkeys(_LANES, 0)
        self._delivered = dict.fromkeys(_LANES, 0)
        self._rejected = dict.fromkeys(_LANES, 0)
        self._dropped = dict.fromkeys(_LANES, 0)

        table = {lane: f"lane_{lane}" for lane in _LANES}
        self._sql_insert = {k: f"INSERT INTO {t} (seq, key, ts, body) VALUES (?, ?, ?, ?)" for k, t in table.items()}
        self._sql_next = {
            k: f"SELECT seq, key, ts, body FROM {t} WHERE seq > ? ORDER BY seq LIMIT ?" for k, t in table.items()
        }
        self._sql_sizes = {
            k: f"SELECT seq, key, ts, length(key) + length(body) FROM {t} WHERE seq > ? ORDER BY seq LIMIT ?"
            for k, t in table.items()
        }
        self._sql_delete = {k: f"DELETE FROM {t} WHERE seq = ?" for k, t in table.items()}
        self._sql_delete_range = {k: f"DELETE FROM {t} WHERE seq > ? AND seq <= ?" for k, t in table.items()}
        self._sql_state = (
            f"UPDATE state SET last_seq = ?, {', '.join(f'pending_{lane} = ?' for lane in _LANES)} WHERE id = 1"
        )

        with self._errors("open"):
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        try:
            with self._errors("open"):
                self._open_database(synchronous, table)
        except BaseException:
            self._conn.close()
            raise

    def _open_database(self, synchronous: str, table: dict[str, str]) -> None:
        conn = self._conn
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        # The first read takes the lock and fails on a file that is not a database.
        app_id, version = conn.execute("SELECT * FROM pragma_application_id(), pragma_user_version()").fetchone()
        if app_id == 0 and version == 0:
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise BufferFormatError(self.path, _FOREIGN)
            self._create(table)
        elif app_id != APPLICATION_ID:
            raise BufferFormatError(self.path, _FOREIGN)
        elif version > SCHEMA_VERSION:
            raise BufferFormatError(
                self.path,
                f"written by a newer agent (buffer schema {version}; this agent knows up to {SCHEMA_VERSION}). "
                "Run the newer agent until the buffer is drained, or move the file aside.",
            )
        elif version != SCHEMA_VERSION:
            raise BufferFormatError(
                self.path, f"unknown buffer schema {version} (this agent knows {SCHEMA_VERSION}); move the file aside."
            )
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise BufferIOError(self.path, f"cannot switch to WAL mode (journal_mode is {mode!r})")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
        self._page_size: int = conn.execute("PRAGMA page_size").fetchone()[0]
        state = conn.execute(
            f"SELECT origin, last_seq, {', '.join(f'pending_{lane}' for lane in _LANES)} FROM state WHERE id = 1"
        ).fetchone()
        if state is None:
            raise BufferCorruptError(self.path, "the state row is missing; move the file aside.")
        self.origin = state[0]
        self._last_seq: int = state[1]
        self._pending = dict(zip(_LANES, state[2:], strict=True))

    def _create(self, table: dict[str, str]) -> None:
        conn = self._conn
        # auto_vacuum only takes effect if set before the first table exists.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        pending_columns = ", ".join(f"pending_{lane} INTEGER NOT NULL DEFAULT 0" for lane in _LANES)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE state (id INTEGER PRIMARY KEY CHECK (id = 1), origin TEXT NOT NULL, "
                f"created REAL NOT NULL, last_seq INTEGER NOT NULL, {pending_columns})"
            )
            for name in table.values():
                # CHECK keeps a wrongly typed row out (a str body would come back as str, not bytes).
                conn.execute(
                    f"CREATE TABLE {name} (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, ts REAL NOT NULL, "
                    "body BLOB NOT NULL, "
                    "CHECK (typeof(key) = 'text' AND typeof(ts) = 'real' AND typeof(body) = 'blob'))"
                )
            conn.execute(_SQL_MARKS_TABLE)
            conn.execute(
                "INSERT INTO state (id, origin, created, last_seq) VALUES (1, ?, ?, 0)",
                (secrets.token_hex(6), time.time()),
            )
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def marks(self) -> dict[str, str]:
        """Every mark saved by `add()`, latest value per key."""
        with self._errors("read marks"):
            return dict(self._conn.execute("SELECT k, v FROM marks").fetchall())

    @property
    def last_seq(self) -> int:
        """The highest seq ever assigned in this file (0 for a new file)."""
        return self._last_seq

    def add(self, rows: Sequence[Row], marks: Iterable[tuple[str, str]] = ()) -> Dropped:
        """Store `rows` in one transaction; durable (committed) when it returns.

        `marks` (key, value) are saved in the same transaction and read back with `marks()`: the
        caller's own progress notes (the agent keeps each element's last source time there, so
        a restart does not store a value it already had under a second id).

        If the rows would take the database over the quota, the oldest droppable records are
        deleted in the same transaction and returned as `Dropped`. Raises `ValueError` for an
        unknown lane, `TypeError` for a wrongly typed row, `BufferError` for storage failures;
        after any of those nothing was written.
        """
        if not rows:
            return Dropped(0, {})
        seq = self._last_seq
        by_lane: dict[str, list[tuple[int, str, float, bytes]]] = {}
        incoming = _ROW_OVERHEAD * len(rows)
        for lane, key, ts, body in rows:
            seq += 1
            group = by_lane.get(lane)
            if group is None:
                self._check_lane(lane)
                group = by_lane[lane] = []
            group.append((seq, key, ts, body))
            incoming += len(key) + len(body)
        pending = dict(self._pending)
        with self._transaction("add") as conn:
            room = self._make_room(conn, incoming)
            for lane, count in room.deleted.items():
                pending[lane] -= count
            for lane, group in by_lane.items():
                conn.executemany(self._sql_insert[lane], group)
                pending[lane] += len(group)
            conn.execute(self._sql_state, (seq, *pending.values()))
            conn.executemany(_SQL_MARK, marks)
        self._last_seq = seq
        self._pending = pending
        for lane, group in by_lane.items():
            self._added[lane] += len(group)
        for lane, count in room.from_returned.items():
            del self._returned[lane][:count]
        for lane, count in room.deleted.items():
            self._dropped[lane] += count
        self._note_quota(room.short)
        return Dropped(
            sum(room.deleted.values()),
            {key: (int(n), first, last) for key, (n, first, last) in room.by_key.items()},
        )

    def _make_room(self, conn: sqlite3.Connection, incoming: int) -> _Room:
        room = _Room()
        pages, free = conn.execute(_SQL_PAGES).fetchone()
        excess = (pages - free) * self._page_size + incoming - self.quota_bytes
        if excess <= 0:
            return room
        for lane in _DROP_ORDER:
            returned = self._returned[lane]
            gone: list[tuple[int]] = []
            while excess > 0 and len(gone) < len(returned):
                item = returned[len(gone)]
                gone.append((item.seq,))
                room.note(item.key, item.ts)
                excess -= len(item.key) + len(item.body) + _ROW_OVERHEAD
            deleted = 0
            if gone:
                deleted += conn.executemany(self._sql_delete[lane], gone).rowcount
                room.from_returned[lane] = len(gone)
            cursor = last = self._cursor[lane]
            while excess > 0:
                chunk = conn.execute(self._sql_sizes[lane], (last, _DROP_CHUNK)).fetchall()
                if not chunk:
                    break
                for seq, key, ts, size in chunk:
                    room.note(key, ts)
                    excess -= size + _ROW_OVERHEAD
                    last = seq
                    if excess <= 0:
                        break
            if last > cursor:
                deleted += conn.execute(self._sql_delete_range[lane], (cursor, last)).rowcount
            if deleted:
                room.deleted[lane] = deleted
            if excess <= 0:
                return room
        room.short = True
        return room

    def _note_quota(self, short: bool) -> None:
        if short and not self._over_quota:
            log.warning(
                "buffer %s: over its quota of %d bytes with nothing left to drop (only gap/usage/status "
                "records and records being sent remain); storing new records anyway",
                self.path,
                self.quota_bytes,
            )
        elif self._over_quota and not short:
            log.info("buffer %s: back within its quota of %d bytes", self.path, self.quota_bytes)
        self._over_quota = short

    def begin(self, lane: str, max_records: int, max_bytes: int | None = None) -> Batch | None:
        """Hand out up to `max_records` of `lane`'s oldest records that are in no open batch.

        `max_bytes` caps the sum of body lengths, except that a batch always holds at least one
        record (so one oversized record cannot block the lane). Returns None if nothing is waiting.
        The batch stays open, in memory only, until passed to `end()`.
        """
        self._check_lane(lane)
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records}")
        if self._pending[lane] == self._held[lane]:
            return None
        returned = self._returned[lane]
        items = returned[:max_records]
        from_returned = len(items)
        fresh = self._pending[lane] - self._held[lane] - len(returned)
        if len(items) < max_records and fresh:
            with self._errors("begin"):
                rows = self._conn.execute(self._sql_next[lane], (self._cursor[lane], max_records - len(items)))
                items.extend(Item(seq, lane, key, ts, body) for seq, key, ts, body in rows)
        if max_bytes is not None:
            items = _first_within(items, max_bytes)
        reused = min(from_returned, len(items))
        del returned[:reused]
        if len(items) > reused:
            self._cursor[lane] = items[-1].seq
        batch = Batch(lane, tuple(items))
        # Fresh records are every row after the cursor, so a batch of only fresh ones is a range.
        self._open[id(batch)] = (batch, reused == 0)
        self._held[lane] += len(items)
        return batch

    def end(self, batch: Batch, accepted: Iterable[int], rejected: Iterable[int] = ()) -> None:
        """Close `batch`: delete the `accepted` and `rejected` seqs, give the rest back to its lane.

        The rest is handed out again, in seq order, before anything newer. Raises `ValueError`
        for a batch that is not open or seqs that are not in it. If the delete fails
        (`BufferError`), the batch stays open and `end()` may be called again.
        """
        opened, unbroken = self._open.get(id(batch), (None, False))
        if opened is not batch:
            raise ValueError("end(): this batch is not open (ended already, or begun on another Buffer)")
        lane = batch.lane
        in_batch = {item.seq for item in batch.items}
        acc = set(accepted)
        rej = set(rejected)
        done = acc | rej
        if not done <= in_batch:
            raise ValueError(f"end(): seqs {sorted(done - in_batch)[:10]} are not in this batch")
        if acc & rej:
            raise ValueError(f"end(): seqs {sorted(acc & rej)[:10]} are both accepted and rejected")
        if done:
            pending = dict(self._pending)
            with self._transaction("end") as conn:
                if unbroken and len(done) == len(batch.items):
                    span = (batch.items[0].seq - 1, batch.items[-1].seq)
                    pending[lane] -= conn.execute(self._sql_delete_range[lane], span).rowcount
                else:
                    pending[lane] -= conn.executemany(self._sql_delete[lane], [(seq,) for seq in sorted(done)]).rowcount
                conn.execute(self._sql_state, (self._last_seq, *pending.values()))
            self._pending = pending
        del self._open[id(batch)]
        self._held[lane] -= len(batch.items)
        self._delivered[lane] += len(acc)
        self._rejected[lane] += len(rej)
        if len(done) < len(batch.items):
            returned = self._returned[lane]
            returned.extend(item for item in batch.items if item.seq not in done)
            returned.sort(key=_by_seq)
        if done:
            self._give_space_back()

    def _give_space_back(self) -> None:
        try:
            pages, free = self._conn.execute(_SQL_PAGES).fetchone()
            if free > max(_VACUUM_MIN_FREE_PAGES, pages // 4):
                # executescript steps the pragma to completion; execute() would free a single page.
                self._conn.executescript(f"PRAGMA incremental_vacuum({_VACUUM_STEP_PAGES})")
        except sqlite3.Error as exc:
            log.warning("buffer %s: could not give free pages back to the file system, will retry: %s", self.path, exc)

    def pending(self) -> dict[str, int]:
        """Records stored per lane, in priority order, including those in open batches."""
        return dict(self._pending)

    def stats(self) -> BufferStats:
        """Counters since open and the current size of the database."""
        with self._errors("stats"):
            pages, free = self._conn.execute(_SQL_PAGES).fetchone()
        try:
            wal_bytes = os.stat(f"{self.path}-wal").st_size
        except FileNotFoundError:
            wal_bytes = 0
        return BufferStats(
            added=dict(self._added),
            delivered=dict(self._delivered),
            rejected=dict(self._rejected),
            dropped=dict(self._dropped),
            pending=dict(self._pending),
            db_bytes=pages * self._page_size,
            used_bytes=(pages - free) * self._page_size,
            wal_bytes=wal_bytes,
            quota_bytes=self.quota_bytes,
            over_quota=self._over_quota,
        )

    def close(self) -> None:
        """Checkpoint and close. Open batches are forgotten: their records are pending at next open."""
        if self._closed:
            return
        self._closed = True
        with self._errors("close"):
            self._conn.close()

    def __enter__(self) -> Buffer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_lane(self, lane: str) -> None:
        if lane not in self._held:
            raise ValueError(f"unknown lane {lane!r}; lanes are {', '.join(_LANES)}")

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        with self._errors(doing):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    # The original error is what the caller needs; a failed rollback adds nothing.
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn SQLite's errors into ones that name the file and say what to do."""
        try:
            yield
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if code is None:
                raise
            raise self._translate(code & 0xFF, exc, doing) from exc

    def _translate(self, code: int, exc: sqlite3.Error, doing: str) -> Exception:
        path = self.path
        if code == sqlite3.SQLITE_FULL:
            return BufferFullError(
                path,
                f"{doing} failed, the disk or the database's size limit is full ({exc}). Nothing was "
                "written. Free space on that file system (or set quota_bytes well below the free space), "
                "then retry.",
            )
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return BufferCorruptError(
                path,
                f"{doing} failed, the file is not a buffer database or is damaged ({exc}). Stop the agent, "
                "move the file aside (keep it for analysis) and start again with a new, empty buffer.",
            )
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return BufferLockedError(
                path,
                f"{doing} failed, the file is in use by another process ({exc}). Only one agent may use "
                "a buffer file: stop the other one, or give this one its own buffer path.",
            )
        if code == sqlite3.SQLITE_CONSTRAINT:
            return TypeError(f"{doing}: every row must be (lane: str, key: str, ts: float, body: bytes) ({exc})")
        if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY):
            return BufferIOError(
                path,
                f"{doing} failed ({exc}). Check that the directory exists and that the agent's user may "
                "create and write files in it.",
            )
        return BufferIOError(
            path,
            f"{doing} failed ({exc}); nothing was written. Check the disk (kernel log), free space and "
            "file-size limits, then retry.",
        )


def _first_within(items: list[Item], max_bytes: int) -> list[Item]:
    size = 0
    for n, item in enumerate(items):
        size += len(item.body)
        if size > max_bytes and n:
            return items[:n]
    return items
