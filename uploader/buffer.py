"""Durable store-and-forward buffer: records wait here, on disk, until the far end confirmed them.

One SQLite database in WAL mode, one table per lane. The runner takes a batch with `begin()`,
a sink writes it, and `end()` deletes what the far end accepted (or rejected for good); the rest
of the batch goes back to the front of its lane.

Records arrive and leave in batches, so they are stored in chunks: one row holds up to
`chunk_records` records of one lane and key from one `add()`. (SQLite's cost per row was a large
part of what a record cost while every record had a row of its own; bench/bench_buffer.py.)

Storage
-------
- `lane_<lane>`: one row per chunk. `seq` is the seq of the chunk's first record; its `n` records
  have the seqs `seq .. seq + n - 1`, in the order they were given to `add()`. `key`; `ts_min` and
  `ts_max`; `ts`, the n source times (float64, little-endian); `bodies`, the n bodies joined with
  b"\\n" (a body that contains b"\\n" is refused, so splitting gives the bodies back exactly).
  A chunk row is written once, by `add()`, and never changed afterwards.
- `done`: one small row per chunk of which some records are done and others not (part of the
  chunk was handed out, the far end confirmed only part of a batch, the quota dropped the part
  not in flight): a byte per record, 1 = done. It is written in the transaction that made the
  records done; the chunk row and its done row are deleted together, in the transaction that
  makes the last record done.
- `state`: origin, the seq high-water mark, and the number of records pending per lane.
- `marks`: the caller's progress notes, saved with `add()`.
"Done" below means accepted or rejected by `end()`, or dropped by the quota.

Invariants
----------
1. A record is stored, pending in its lane, from the `add()` that returned until it is done.
   Only two things make it done: `end()` (the far end accepted or rejected it) and the quota (the
   record is counted in the `Dropped` that `add()` returns, and in `stats()`). Nothing else does.
   A done record is never handed out again, in this process or after a restart: its chunk row is
   deleted or its byte in the chunk's done row is set, in the same transaction.
2. `add()` is one transaction: the chunks, the records the quota dropped for them, the sequence
   high-water mark and the per-lane counters commit together or not at all. When it returns the
   commit is in the WAL; when it raises, nothing of it was written and it may simply be retried.
3. `seq` is assigned in `add()` order, grouped by lane and key (all rows of the first (lane, key)
   that appears in the call, then the next...); per key the order of the rows is kept. It is
   strictly increasing and never reused: the high-water mark is persisted in the same
   transaction as the chunks, so deleting every record and restarting does not bring a number
   back. A receiver dedupes by `(origin, seq)`.
4. Open batches live in memory only, and so does the position reached inside a chunk. A record
   is in at most one open batch; `begin()` hands out the oldest records of a lane that are in
   none, and may hand out part of a chunk. After a crash or restart every record not done is
   pending again, so delivery is at-least-once with duplicates bounded by what was in flight.
5. Within a lane, chunks are read in seq order and each is read once: a record not done is in an
   open batch, given back by `end()` (`_returned`, in seq order, handed out again before anything
   newer), read but not yet handed out (`_ahead`, the rest of the chunks read last), or in a
   chunk not read yet (`seq > _cursor`). So `pending = held + returned + ahead + unread`, and
   `begin()` never needs to skip over records already in flight.
6. The quota drops only `data`, then `event`, records, oldest chunk first; never a protected lane
   (gap, usage, status), never a record in an open batch, never the rows being added. Of a chunk
   read already it drops every record not in an open batch; a chunk not read yet goes whole. If
   that is not enough the rows are stored anyway, over quota, and `stats().over_quota` says so.
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
from the database header, so checking costs microseconds per `add()`). New chunks are estimated
at their payload plus `_CHUNK_OVERHEAD` (and half a page when they overflow a page), so the file
may pass the quota by a fraction of one `add()` before the next `add()` corrects it. A chunk's
space comes back only when its last record is done: records the quota drops from a chunk that
still has records in flight are counted as freed at once, so the quota may drop up to about one
chunk more than needed while that batch is open. The WAL comes on top, up to about
`_JOURNAL_SIZE_LIMIT`. Pages freed by `end()` are given back to the file system with incremental
vacuum, a bounded number per call, once more than `_VACUUM_MIN_FREE_BYTES` and a quarter of the
file are free; less free space than that is reused by the next `add()`s.

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
import sys
import time
from array import array
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import chain, compress, islice, repeat
from operator import itemgetter, not_
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Final, Literal, NamedTuple, cast

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
record body, one JSON object as bytes without an "id" field and without a newline."""

SCHEMA_VERSION: Final = 2
_SQL_MARKS_TABLE: Final = "CREATE TABLE IF NOT EXISTS marks (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID"
_SQL_MARK: Final = "INSERT INTO marks (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
_SQL_DONE_TABLE: Final = (
    "CREATE TABLE done (lane TEXT NOT NULL, chunk INTEGER NOT NULL, mask BLOB NOT NULL, "
    "PRIMARY KEY (lane, chunk)) WITHOUT ROWID"
)
_SQL_DONE: Final = (
    "INSERT INTO done (lane, chunk, mask) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET mask = excluded.mask"
)
_SQL_UNDONE: Final = "DELETE FROM done WHERE lane = ? AND chunk = ?"
_SQL_UNDONE_RANGE: Final = "DELETE FROM done WHERE lane = ? AND chunk > ? AND chunk <= ?"
# Marks the file as ours, so another application's SQLite database is refused, not written into.
APPLICATION_ID: Final = 0x45414246

_LANES: Final = ("status", "gap", "event", "usage", "data")
_PROTECTED: Final = frozenset({"gap", "usage", "status"})
_DROP_ORDER: Final = ("data", "event")

_NEWLINE: Final = b"\n"
_SWAP_TS: Final = sys.byteorder == "big"
# Bytes a chunk takes on disk beyond len(key) + its ts and bodies blobs: rowid, n, ts_min, ts_max,
# record header, cell pointer and leaf-page slack. A chunk that overflows its leaf page also leaves
# on average half of its last overflow page empty, counted on top (bench/bench_buffer.py prints
# the real bytes per record). Only an estimate: add() reads the real page count every time.
_CHUNK_OVERHEAD: Final = 64
_RECORD_OVERHEAD: Final = 9  # its source time and the newline between bodies
_DROP_CHUNKS: Final = 64
# Give space back only when a good part of the file is free, and a bounded amount per end(),
# so draining a backlog does not turn into one long vacuum. Below the floor, free pages are left
# for the next add() to reuse: a vacuum moves the live pages at the end of the file forward,
# and in steady running those are records about to be sent and deleted anyway.
_VACUUM_MIN_FREE_BYTES: Final = 8 * 1024 * 1024
_VACUUM_STEP_PAGES: Final = 1024
_WAL_AUTOCHECKPOINT_PAGES: Final = 1000
_JOURNAL_SIZE_LIMIT: Final = 8 * 1024 * 1024

_FOREIGN: Final = (
    "an SQLite database that is not an edge-agent buffer. Point the buffer path at a new file, or move this one aside."
)
_SQL_PAGES: Final = "SELECT * FROM pragma_page_count(), pragma_freelist_count()"
_seq = itemgetter(0)


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


class Item(NamedTuple):
    """One stored record as `begin()` hands it out.

    A named tuple, not a dataclass: `begin()` makes one per record, and this is the cheapest
    value with attributes to make.
    """

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


@dataclass(slots=True, eq=False)
class _Chunk:
    """A chunk row read by `begin()`; in memory until its last record is done."""

    id: int  # the row's seq: records are id .. id + n - 1
    key: str
    n: int
    live: int  # records not done
    size: int  # estimated bytes of the row on disk
    mask: bytearray | None  # the done row (a byte per record, 1 = done), None while there is none

    def marked(self, items: Iterable[Item]) -> bytearray:
        """The done mask with `items` marked too."""
        mask = bytearray(self.n) if self.mask is None else bytearray(self.mask)
        first = self.id
        for item in items:
            mask[item[0] - first] = 1
        return mask


# (seq, key, n, ts_min, ts_max, ts, bodies): a chunk row as add() writes it.
_ChunkRow = tuple[int, str, int, float, float, bytes, bytes]
# Records of one chunk, in seq order. Lists in runs are never changed in place: they are shared.
_Run = tuple[_Chunk, list[Item]]


@dataclass(slots=True)
class _Room:
    """Records the quota drops inside one add() transaction; applied to memory after the commit."""

    deleted: dict[str, int] = field(default_factory=dict)
    # of deleted: records in chunks not read yet, and the last such chunk
    unread: dict[str, tuple[int, int]] = field(default_factory=dict)
    gone: set[_Chunk] = field(default_factory=set)  # read chunks whose records not in flight were dropped
    marked: list[tuple[_Chunk, bytearray]] = field(default_factory=list)
    # key -> [count, earliest ts, latest ts], mutable so each dropped chunk costs no allocation
    by_key: dict[str, list[float]] = field(default_factory=dict)
    short: bool = False

    def note(self, key: str, count: int, first: float, last: float) -> None:
        entry = self.by_key.get(key)
        if entry is None:
            self.by_key[key] = [count, first, last]
        else:
            entry[0] += count
            if first < entry[1]:
                entry[1] = first
            if last > entry[2]:
                entry[2] = last


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
        chunk_records: int = 500,
    ) -> None:
        """Open the buffer at `path`, creating it if the file is absent or empty.

        `busy_timeout` is how long to wait for another process holding the file before failing
        with `BufferLockedError`. `chunk_records` is the most records stored in one row; the
        forwarder's records per message is a good value. Raises `BufferCorruptError` for a file
        that is not a database, `BufferFormatError` for another application's database, an
        older or a newer schema.
        """
        if quota_bytes <= 0:
            raise ValueError(f"quota_bytes must be positive, got {quota_bytes}")
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        if chunk_records < 1:
            raise ValueError(f"chunk_records must be at least 1, got {chunk_records}")
        self.path = Path(path)
        self.quota_bytes = quota_bytes
        self.chunk_records = chunk_records
        self._closed = False
        self._over_quota = False
        # id(batch) -> (batch, its records by chunk)
        self._open: dict[int, tuple[Batch, list[_Run]]] = {}
        self._held = dict.fromkeys(_LANES, 0)
        self._returned: dict[str, deque[_Run]] = {lane: deque() for lane in _LANES}
        self._ahead: dict[str, deque[_Run]] = {lane: deque() for lane in _LANES}
        self._cursor = dict.fromkeys(_LANES, 0)
        # Done rows found at open, for chunks not read since: chunk id -> mask.
        self._done_at_open: dict[str, dict[int, bytes]] = {lane: {} for lane in _LANES}
        self._added = dict.fromkeys(_LANES, 0)
        self._delivered = dict.fromkeys(_LANES, 0)
        self._rejected = dict.fromkeys(_LANES, 0)
        self._dropped = dict.fromkeys(_LANES, 0)

        table = {lane: f"lane_{lane}" for lane in _LANES}
        self._sql_insert = {
            k: f"INSERT INTO {t} (seq, key, n, ts_min, ts_max, ts, bodies) VALUES (?, ?, ?, ?, ?, ?, ?)"
            for k, t in table.items()
        }
        self._sql_next = {
            k: f"SELECT seq, key, n, ts, bodies FROM {t} WHERE seq > ? ORDER BY seq" for k, t in table.items()
        }
        # length() of a blob reads only the record header, not the blob.
        self._sql_sizes = {
            k: f"SELECT seq, key, n, ts_min, ts_max, length(key) + length(ts) + length(bodies) FROM {t} "
            "WHERE seq > ? ORDER BY seq LIMIT ?"
            for k, t in table.items()
        }
        self._sql_ts = {k: f"SELECT ts FROM {t} WHERE seq = ?" for k, t in table.items()}
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
        # Some builds (Debian's among them) default to secure_delete = ON, which overwrites every
        # deleted chunk with zeros: as much I/O again as writing it, WAL and checkpoint included.
        # FAST still clears deleted records on b-tree pages that are written anyway.
        conn.execute("PRAGMA secure_delete = FAST")
        self._page_size: int = conn.execute("PRAGMA page_size").fetchone()[0]
        state = conn.execute(
            f"SELECT origin, last_seq, {', '.join(f'pending_{lane}' for lane in _LANES)} FROM state WHERE id = 1"
        ).fetchone()
        if state is None:
            raise BufferCorruptError(self.path, "the state row is missing; move the file aside.")
        self.origin = state[0]
        self._last_seq: int = state[1]
        self._pending = dict(zip(_LANES, state[2:], strict=True))
        # Nothing is read yet: every pending record is in a chunk after the cursor.
        self._unread = dict(self._pending)
        for lane, chunk, mask in conn.execute("SELECT lane, chunk, mask FROM done"):
            if lane in self._done_at_open:
                self._done_at_open[lane][chunk] = mask

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
                # Small columns first: reading n or the sizes does not touch the bodies' pages.
                # CHECK keeps a wrongly typed row out (a non-str key would come back as something else).
                conn.execute(
                    f"CREATE TABLE {name} (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, n INTEGER NOT NULL, "
                    "ts_min REAL NOT NULL, ts_max REAL NOT NULL, ts BLOB NOT NULL, bodies BLOB NOT NULL, "
                    "CHECK (typeof(key) = 'text' AND n >= 1 AND length(ts) = 8 * n AND typeof(bodies) = 'blob'))"
                )
            conn.execute(_SQL_DONE_TABLE)
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

    # -- adding -----------------------------------------------------------------------------------

    def add(self, rows: Sequence[Row], marks: Iterable[tuple[str, str]] = ()) -> Dropped:
        """Store `rows` in one transaction; durable (committed) when it returns.

        Seqs are assigned grouped by (lane, key), in the order each first appears in `rows`; per
        key the rows keep their order. `marks` (key, value) are saved in the same transaction and
        read back with `marks()`: the caller's own progress notes (the agent keeps each element's
        last source time there, so a restart does not store a value it already had under a
        second id).

        If the rows would take the database over the quota, the oldest droppable records are
        deleted in the same transaction and returned as `Dropped`. Raises `ValueError` for an
        unknown lane or a body containing b"\\n", `TypeError` for a wrongly typed row,
        `BufferError` for storage failures; after any of those nothing was written.
        """
        if not rows:
            return Dropped(0, {})
        try:
            chunks, incoming, seq = self._chunks(rows)
        except TypeError as exc:
            raise TypeError(f"add: every row must be (lane: str, key: str, ts: float, body: bytes) ({exc})") from exc
        added = {lane: sum(chunk[2] for chunk in lane_chunks) for lane, lane_chunks in chunks.items()}
        pending = dict(self._pending)
        with self._transaction("add") as conn:
            room = self._make_room(conn, incoming, pending)
            for lane, lane_chunks in chunks.items():
                conn.executemany(self._sql_insert[lane], lane_chunks)
            for lane, count in added.items():
                pending[lane] += count
            conn.execute(self._sql_state, (seq, *pending.values()))
            conn.executemany(_SQL_MARK, marks)
        self._last_seq = seq
        self._pending = pending
        for lane, count in added.items():
            self._added[lane] += count
            self._unread[lane] += count
        self._apply(room)
        self._note_quota(room.short)
        return Dropped(
            sum(room.deleted.values()),
            {key: (int(n), first, last) for key, (n, first, last) in room.by_key.items()},
        )

    def _chunks(self, rows: Sequence[Row]) -> tuple[dict[str, list[_ChunkRow]], int, int]:
        """The rows as chunk rows per lane, the bytes they will take, and the last seq they use."""
        groups: dict[tuple[str, str], list[Row]] = {}
        for row in rows:
            lane_key = row[:2]
            group = groups.get(lane_key)
            if group is None:
                self._check_lane(row[0])
                group = groups[lane_key] = []
            group.append(row)
        chunks: dict[str, list[_ChunkRow]] = {}
        seq = self._last_seq
        incoming = 0
        size = self.chunk_records
        for (lane, key), group in groups.items():
            lane_chunks = chunks.setdefault(lane, [])
            for start in range(0, len(group), size):
                part = group[start : start + size] if len(group) > size else group
                _, _, stamps, bodies = zip(*part, strict=True)
                # bytes.find is memchr; `in` on bytes first tries the needle as an int, which costs more.
                if max(map(bytes.find, bodies, repeat(_NEWLINE))) >= 0:
                    raise ValueError(
                        f"add: a body for lane {lane!r}, key {key!r} contains a newline (b'\\n'); "
                        "a record body must be one line of JSON"
                    )
                ts = array("d", stamps)
                ts_min, ts_max = min(ts), max(ts)
                if _SWAP_TS:
                    ts.byteswap()
                blob = _NEWLINE.join(bodies)
                lane_chunks.append((seq + 1, key, len(part), ts_min, ts_max, ts.tobytes(), blob))
                seq += len(part)
                incoming += self._chunk_size(len(key) + 9 * len(part) + len(blob))
        return chunks, incoming, seq

    def _chunk_size(self, payload: int) -> int:
        size = payload + _CHUNK_OVERHEAD
        return size + self._page_size // 2 if size > self._page_size else size

    def _make_room(self, conn: sqlite3.Connection, incoming: int, pending: dict[str, int]) -> _Room:
        room = _Room()
        pages, free = conn.execute(_SQL_PAGES).fetchone()
        excess = (pages - free) * self._page_size + incoming - self.quota_bytes
        if excess <= 0:
            return room
        for lane in _DROP_ORDER:
            excess = self._drop_read(conn, lane, excess, room)
            if excess > 0:
                excess = self._drop_unread(conn, lane, excess, room)
            dropped = room.deleted.get(lane, 0)
            pending[lane] -= dropped
            if excess <= 0:
                return room
        room.short = True
        return room

    def _drop_read(self, conn: sqlite3.Connection, lane: str, excess: int, room: _Room) -> int:
        """Drop the records of chunks read already that are in no open batch, oldest chunk first."""
        spare: dict[_Chunk, list[Item]] = {}
        # Per chunk, records given back are older than those read ahead.
        for chunk, items in chain(self._returned[lane], self._ahead[lane]):
            spare[chunk] = spare[chunk] + items if chunk in spare else items
        finished: list[_Chunk] = []
        marked: list[tuple[_Chunk, bytearray]] = []
        count = 0
        for chunk in sorted(spare, key=_chunk_id):
            if excess <= 0:
                break
            items = spare[chunk]
            stamps = [item[3] for item in items]
            room.note(chunk.key, len(items), min(stamps), max(stamps))
            count += len(items)
            room.gone.add(chunk)
            if len(items) == chunk.live:
                finished.append(chunk)
                excess -= chunk.size
            else:
                marked.append((chunk, chunk.marked(items)))
                excess -= sum(len(item[4]) + _RECORD_OVERHEAD for item in items)
        self._forget(conn, lane, finished)
        conn.executemany(_SQL_DONE, [(lane, chunk.id, mask) for chunk, mask in marked])
        room.marked += marked
        if count:
            room.deleted[lane] = count
        return excess

    def _drop_unread(self, conn: sqlite3.Connection, lane: str, excess: int, room: _Room) -> int:
        """Drop whole chunks not read yet, oldest first."""
        cursor = last = self._cursor[lane]
        done_at_open = self._done_at_open[lane]
        count = 0
        while excess > 0:
            rows = conn.execute(self._sql_sizes[lane], (last, _DROP_CHUNKS)).fetchall()
            if not rows:
                break
            for chunk_id, key, n, first, latest, payload in rows:
                mask = done_at_open.get(chunk_id)
                if mask is None:
                    room.note(key, n, first, latest)
                    count += n
                else:
                    # Part of it was done before the restart: count and time only the rest.
                    stamps = list(compress(self._stamps(conn, lane, chunk_id), map(not_, mask)))
                    if stamps:
                        room.note(key, len(stamps), min(stamps), max(stamps))
                        count += len(stamps)
                excess -= self._chunk_size(payload + n)
                last = chunk_id
                if excess <= 0:
                    break
        if last > cursor:
            conn.execute(self._sql_delete_range[lane], (cursor, last))
            conn.execute(_SQL_UNDONE_RANGE, (lane, cursor, last))
            room.unread[lane] = (count, last)
            room.deleted[lane] = room.deleted.get(lane, 0) + count
        return excess

    def _stamps(self, conn: sqlite3.Connection, lane: str, chunk_id: int) -> array[float]:
        ts = array("d")
        ts.frombytes(conn.execute(self._sql_ts[lane], (chunk_id,)).fetchone()[0])
        if _SWAP_TS:
            ts.byteswap()
        return ts

    def _apply(self, room: _Room) -> None:
        """Bring memory in line with what the committed add() dropped."""
        if room.gone:
            for lane in _DROP_ORDER:
                for runs in (self._returned, self._ahead):
                    runs[lane] = deque(run for run in runs[lane] if run[0] not in room.gone)
        for chunk, mask in room.marked:
            chunk.live = chunk.n - mask.count(1)
            chunk.mask = mask
        for lane, (count, last) in room.unread.items():
            self._unread[lane] -= count
            done_at_open = self._done_at_open[lane]
            for chunk_id in [chunk_id for chunk_id in done_at_open if chunk_id <= last]:
                del done_at_open[chunk_id]
        for lane, count in room.deleted.items():
            self._dropped[lane] += count

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

    # -- sending ----------------------------------------------------------------------------------

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
        runs: list[_Run] = []
        want, budget = self._take(self._returned[lane], runs, max_records, max_bytes)
        if want:
            want, budget = self._take(self._ahead[lane], runs, want, budget)
        if want and self._unread[lane]:
            self._read(lane, want)
            self._take(self._ahead[lane], runs, want, budget)
        if not runs:
            return None
        batch = Batch(lane, tuple(chain.from_iterable(items for _, items in runs)))
        self._open[id(batch)] = (batch, runs)
        self._held[lane] += len(batch.items)
        return batch

    @staticmethod
    def _take(source: deque[_Run], runs: list[_Run], want: int, budget: int | None) -> tuple[int, int | None]:
        """Move up to `want` records (within `budget` bytes of bodies) from the front of `source` to `runs`.

        Returns what is still wanted (0 once the budget is spent) and the budget left.
        """
        while want and source:
            chunk, items = source[0]
            count = min(want, len(items))
            if budget is not None:
                fit = 0
                for item in islice(items, count):
                    size = len(item[4])
                    if size > budget and (fit or runs):
                        break
                    budget -= size
                    fit += 1
                if fit < count:
                    want = 0
                count = fit
            if count == len(items):
                source.popleft()
            elif count:
                source[0] = (chunk, items[count:])
                items = items[:count]
            else:
                break
            if runs and runs[-1][0] is chunk:
                runs[-1] = (chunk, runs[-1][1] + items)
            else:
                runs.append((chunk, items))
            if want:
                want -= count
        return want, budget

    def _read(self, lane: str, want: int) -> None:
        """Read chunks after the cursor into `_ahead` until they hold `want` records or none are left."""
        ahead = self._ahead[lane]
        done_at_open = self._done_at_open[lane]
        with self._errors("begin"):
            rows = self._conn.execute(self._sql_next[lane], (self._cursor[lane],))
            try:
                for chunk_id, key, n, ts_blob, blob in rows:
                    ts = array("d")
                    ts.frombytes(ts_blob)
                    if _SWAP_TS:
                        ts.byteswap()
                    bodies = blob.split(_NEWLINE)
                    mask = done_at_open.get(chunk_id)
                    if len(ts) != n or len(bodies) != n or (mask is not None and len(mask) != n):
                        raise BufferCorruptError(
                            self.path,
                            f"chunk {chunk_id} of lane {lane!r} is damaged ({n} records, {len(ts)} times, "
                            f"{len(bodies)} bodies). Stop the agent, move the file aside (keep it for analysis) "
                            "and start again with a new, empty buffer.",
                        )
                    items = _items(range(chunk_id, chunk_id + n), lane, key, ts, bodies)
                    if mask is not None:
                        items = list(compress(items, map(not_, mask)))
                        del done_at_open[chunk_id]
                    chunk = _Chunk(
                        chunk_id,
                        key,
                        n,
                        len(items),
                        self._chunk_size(len(key) + len(ts_blob) + len(blob)),
                        None if mask is None else bytearray(mask),
                    )
                    self._cursor[lane] = chunk_id
                    self._unread[lane] -= chunk.live
                    if items:
                        ahead.append((chunk, items))
                        want -= len(items)
                    if want <= 0:
                        break
            finally:
                rows.close()

    def end(self, batch: Batch, accepted: Iterable[int], rejected: Iterable[int] = ()) -> None:
        """Close `batch`: delete the `accepted` and `rejected` seqs, give the rest back to its lane.

        The rest is handed out again, in seq order, before anything newer. Raises `ValueError`
        for a batch that is not open or seqs that are not in it. If the delete fails
        (`BufferError`), the batch stays open and `end()` may be called again.
        """
        opened, runs = self._open.get(id(batch), (None, []))
        if opened is not batch:
            raise ValueError("end(): this batch is not open (ended already, or begun on another Buffer)")
        lane = batch.lane
        acc = set(accepted)
        rej = set(rejected)
        done = acc | rej if rej else acc
        if done:
            in_batch = set(map(_seq, batch.items))
            if not done <= in_batch:
                raise ValueError(f"end(): seqs {sorted(done - in_batch)[:10]} are not in this batch")
            if acc & rej:
                raise ValueError(f"end(): seqs {sorted(acc & rej)[:10]} are both accepted and rejected")
        everything = len(done) == len(batch.items)
        finished: list[_Chunk] = []
        marked: list[tuple[_Chunk, bytearray]] = []
        rest: list[_Run] = []
        for chunk, items in runs:
            if everything:
                gone = items
            else:
                gone = [item for item in items if item[0] in done]
                if len(gone) < len(items):
                    rest.append((chunk, [item for item in items if item[0] not in done]))
                if not gone:
                    continue
            if len(gone) == chunk.live:
                finished.append(chunk)
            else:
                marked.append((chunk, chunk.marked(gone)))
        if done:
            pending = dict(self._pending)
            pending[lane] -= len(done)
            with self._transaction("end") as conn:
                self._forget(conn, lane, finished)
                conn.executemany(_SQL_DONE, [(lane, chunk.id, mask) for chunk, mask in marked])
                conn.execute(self._sql_state, (self._last_seq, *pending.values()))
            self._pending = pending
            for chunk, mask in marked:
                chunk.live = chunk.n - mask.count(1)
                chunk.mask = mask
        del self._open[id(batch)]
        self._held[lane] -= len(batch.items)
        self._delivered[lane] += len(acc)
        self._rejected[lane] += len(rej)
        if rest:
            self._give_back(lane, rest)
        if done:
            self._give_space_back()

    def _forget(self, conn: sqlite3.Connection, lane: str, chunks: list[_Chunk]) -> None:
        """Delete chunks whose every record is done, with their done rows."""
        conn.executemany(self._sql_delete[lane], [(chunk.id,) for chunk in chunks])
        conn.executemany(_SQL_UNDONE, [(lane, chunk.id) for chunk in chunks if chunk.mask is not None])

    def _give_back(self, lane: str, rest: list[_Run]) -> None:
        merged: dict[_Chunk, list[Item]] = {}
        for chunk, items in chain(self._returned[lane], rest):
            merged[chunk] = sorted(merged[chunk] + items, key=_seq) if chunk in merged else items
        self._returned[lane] = deque(sorted(merged.items(), key=_run_chunk_id))

    def _give_space_back(self) -> None:
        try:
            pages, free = self._conn.execute(_SQL_PAGES).fetchone()
            if free > max(_VACUUM_MIN_FREE_BYTES // self._page_size, pages // 4):
                # executescript steps the pragma to completion; execute() would free a single page.
                self._conn.executescript(f"PRAGMA incremental_vacuum({_VACUUM_STEP_PAGES})")
        except sqlite3.Error as exc:
            log.warning("buffer %s: could not give free pages back to the file system, will retry: %s", self.path, exc)

    # -- reporting and lifetime ---------------------------------------------------------------------

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


def _items(seqs: range, lane: str, key: str, ts: array[float], bodies: list[bytes]) -> list[Item]:
    # tuple.__new__ skips the NamedTuple's own __new__, a Python function: half the cost per record.
    return cast(list[Item], list(map(tuple.__new__, repeat(Item), zip(seqs, repeat(lane), repeat(key), ts, bodies))))


def _chunk_id(chunk: _Chunk) -> int:
    return chunk.id


def _run_chunk_id(run: _Run) -> int:
    return run[0].id
