"""The buffer's SQLite file: schema, settings, statements and transactions. No queue logic here.

Tables
------
- `lane_<lane>`: one row per chunk (records.py says what a chunk row holds). A chunk row is
  written once, by `add()`, and never changed afterwards.
- `done`: one small row per chunk of which some records are done and others not (part of the
  chunk was handed out, the far end confirmed only part of a batch, the quota dropped the part
  not in flight): a byte per record, 1 = done. It is written in the transaction that made the
  records done; the chunk row and its done row are deleted together, in the transaction that
  makes the last record done.
- `state`: origin, the seq high-water mark, and the number of records pending per lane.
- `heads`: the shared heads of records given as (head, tail) (records.py), numbered. A head is added
  in the transaction of the first `add()` that uses it and never changed; at open, a buffer with no
  pending record forgets them all (nothing refers to them any more).
- `marks` and `mark_log`: the caller's progress notes, saved with `add()`. Each `add()` appends its
  marks as one row of `mark_log` (a JSON object; null deletes a key); every `_MARK_LOG_ROWS` rows
  they are folded into `marks`, one row per key, and the log is emptied, in the same transaction.
  An agent marks every element it stored a value of, at every publish: one row per add instead of
  one upsert per element is most of what the marks cost (bench/bench_stages.py).

Invariants
----------
- One `Store` per file: the connection holds SQLite's exclusive lock for as long as it is open,
  so a second agent pointed at the same file fails at open instead of sending duplicates.
- The file is ours or refused: `application_id` marks it, `user_version` is the schema.

Durability: `synchronous="normal"` (the default) makes every commit survive a crash or SIGKILL of
the process: it is written to the WAL before the call returns, but not fsynced, so a power loss or
kernel panic may lose the last commits (the database stays consistent). `"full"` fsyncs the WAL on
every commit and survives power loss too, at the cost of one fsync per `add()`/`end()`
(milliseconds on eMMC/SD, which caps the add rate). Checkpoints (`checkpoint()`, passive) are run by
the Buffer after about 1,000 pages were written (buffer.py); SQLite's own auto-checkpoint, at 2,000
pages, is a backstop. With no other readers they always complete, and they are the only fsync under
"normal". The WAL file is not truncated by them: it keeps its blocks, so a disk that fills while it
is empty cannot keep the next commit out of it.

Space: pages freed by deletes are given back to the file system with incremental vacuum, a
bounded number per call, once more than `_VACUUM_MIN_FREE_BYTES` and a quarter of the file are
free; less free space than that is reused by the next `add()`s. The WAL stays below about
`_JOURNAL_SIZE_LIMIT` after each checkpoint.

Threads: the connection may be used from any thread (`check_same_thread=False`), one at a time: the
`Buffer` above holds its lock around every use, and checkpoints in a thread of its own (buffer.py).
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Final, Literal

import orjson

from uploader.buffer.errors import (
    MOVE_ASIDE,
    BufferCorruptError,
    BufferFormatError,
    BufferIOError,
    sqlite_errors,
)
from uploader.buffer.records import LANES, ChunkRow, Heads, Mark

log = logging.getLogger("uploader.buffer")

SCHEMA_VERSION: Final = 5
# Version 3 added the `analysis` lane (a table and a pending column), version 4 the `mark_log` table,
# version 5 the `heads` table; older files are upgraded at open.
_UPGRADABLE: Final = {2, 3, 4}
# Marks the file as ours, so another application's SQLite database is refused, not written into.
APPLICATION_ID: Final = 0x45414246

_SQL_MARKS_TABLE: Final = "CREATE TABLE IF NOT EXISTS marks (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID"
_SQL_MARK_LOG_TABLE: Final = "CREATE TABLE IF NOT EXISTS mark_log (id INTEGER PRIMARY KEY, marks BLOB NOT NULL)"
_SQL_HEADS_TABLE: Final = "CREATE TABLE IF NOT EXISTS heads (id INTEGER PRIMARY KEY, head BLOB NOT NULL)"
_SQL_HEAD: Final = "INSERT INTO heads (id, head) VALUES (?, ?)"
_SQL_LOG_MARKS: Final = "INSERT INTO mark_log (marks) VALUES (?)"
_MARK_LOG_ROWS: Final = 64  # log rows folded into `marks` at once
_SQL_MARK: Final = "INSERT INTO marks (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
_SQL_UNMARK: Final = "DELETE FROM marks WHERE k = ?"
_SQL_DONE_TABLE: Final = (
    "CREATE TABLE done (lane TEXT NOT NULL, chunk INTEGER NOT NULL, mask BLOB NOT NULL, "
    "PRIMARY KEY (lane, chunk)) WITHOUT ROWID"
)
_SQL_DONE: Final = (
    "INSERT INTO done (lane, chunk, mask) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET mask = excluded.mask"
)
_SQL_UNDONE: Final = "DELETE FROM done WHERE lane = ? AND chunk = ?"
_SQL_UNDONE_RANGE: Final = "DELETE FROM done WHERE lane = ? AND chunk > ? AND chunk <= ?"
_SQL_PAGES: Final = "SELECT * FROM pragma_page_count(), pragma_freelist_count()"

# Give space back only when a good part of the file is free, and a bounded amount per end(),
# so draining a backlog does not turn into one long vacuum. Below the floor, free pages are left
# for the next add() to reuse: a vacuum moves the live pages at the end of the file forward,
# and in steady running those are records about to be sent and deleted anyway.
_VACUUM_MIN_FREE_BYTES: Final = 8 * 1024 * 1024
_VACUUM_STEP_PAGES: Final = 1024
# The Buffer checkpoints itself well before this (in its own thread when it runs under an event loop):
# SQLite's own, inside a commit, is the backstop for a write the Buffer's estimate undercounts.
_WAL_AUTOCHECKPOINT_PAGES: Final = 2000
_JOURNAL_SIZE_LIMIT: Final = 8 * 1024 * 1024

_FOREIGN: Final = (
    "an SQLite database that is not an edge-agent buffer. Point the buffer path at a new file, or move this one aside."
)


_Sizes = tuple[int, str, int, float, float, int]


def _lane_table(name: str) -> str:
    # Small columns first: reading n or the sizes does not touch the bodies' pages.
    # CHECK keeps a wrongly typed row out (a non-str key would come back as something else).
    return (
        f"CREATE TABLE {name} (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, n INTEGER NOT NULL, "
        "ts_min REAL NOT NULL, ts_max REAL NOT NULL, ts BLOB NOT NULL, bodies BLOB NOT NULL, "
        "CHECK (typeof(key) = 'text' AND n >= 1 AND length(ts) = 8 * n AND typeof(bodies) = 'blob'))"
    )


class Store:
    """The open database. Read at open: `origin`, `last_seq`, `pending` per lane, `done` rows per lane."""

    def __init__(self, path: Path, *, synchronous: Literal["normal", "full"], busy_timeout: float) -> None:
        self.path = path
        table = {lane: f"lane_{lane}" for lane in LANES}
        self._table = table
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
            f"UPDATE state SET last_seq = ?, {', '.join(f'pending_{lane} = ?' for lane in LANES)} WHERE id = 1"
        )
        with self.errors("open"):
            self.conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            with self.errors("open"):
                self._open(synchronous)
        except BaseException:
            self.conn.close()
            raise

    def _open(self, synchronous: str) -> None:
        conn = self.conn
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        # The first read takes the lock and fails on a file that is not a database.
        app_id, version = conn.execute("SELECT * FROM pragma_application_id(), pragma_user_version()").fetchone()
        self.created = False  # this open made the file a new, empty buffer
        if app_id == 0 and version == 0:
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise BufferFormatError(self.path, _FOREIGN)
            self._create()
            self.created = True
        elif app_id != APPLICATION_ID:
            raise BufferFormatError(self.path, _FOREIGN)
        elif version > SCHEMA_VERSION:
            raise BufferFormatError(
                self.path,
                f"written by a newer agent (buffer schema {version}; this agent knows up to {SCHEMA_VERSION}). "
                "Run the newer agent until the buffer is drained, or move the file aside.",
            )
        elif version in _UPGRADABLE:
            self._upgrade(version)
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
        self.page_size: int = conn.execute("PRAGMA page_size").fetchone()[0]
        # A damaged page found now costs a restart with a fresh file (recover.py); found later, in
        # the middle of a begin(), it would stop delivery until someone came.
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise BufferCorruptError(self.path, f"the integrity check failed: {'; '.join(problems)}. {MOVE_ASIDE}")
        state = conn.execute(
            f"SELECT origin, last_seq, {', '.join(f'pending_{lane}' for lane in LANES)} FROM state WHERE id = 1"
        ).fetchone()
        if state is None:
            raise BufferCorruptError(self.path, "the state row is missing; move the file aside.")
        self.origin: str = state[0]
        self.last_seq: int = state[1]
        self.pending: dict[str, int] = dict(zip(LANES, state[2:], strict=True))
        # The mark log: its rows, and the marks in them folded (None: a deleted key), as committed.
        self._log_rows: int = 0
        self._unfolded: dict[str, Mark | None] = {}
        self._next_log: tuple[int, dict[str, Mark | None]] | None = None  # what the open transaction makes them
        for (blob,) in conn.execute("SELECT marks FROM mark_log ORDER BY id"):
            self._log_rows += 1
            self._unfolded.update(orjson.loads(blob))
        self.done: dict[str, dict[int, bytes]] = {lane: {} for lane in LANES}
        for lane, chunk, mask in conn.execute("SELECT lane, chunk, mask FROM done"):
            if lane in self.done:
                self.done[lane][chunk] = mask
        if not any(self.pending.values()) and conn.execute("SELECT 1 FROM heads LIMIT 1").fetchone():
            try:
                conn.execute("DELETE FROM heads")
            except sqlite3.Error as exc:  # e.g. a full disk: the heads stay, which costs only their bytes
                log.warning("buffer %s: could not forget the heads no record refers to: %s", self.path, exc)
        self.heads = Heads(conn.execute("SELECT id, head FROM heads"))

    def _create(self) -> None:
        conn = self.conn
        # auto_vacuum only takes effect if set before the first table exists.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        pending_columns = ", ".join(f"pending_{lane} INTEGER NOT NULL DEFAULT 0" for lane in LANES)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE state (id INTEGER PRIMARY KEY CHECK (id = 1), origin TEXT NOT NULL, "
                f"created REAL NOT NULL, last_seq INTEGER NOT NULL, {pending_columns})"
            )
            for name in self._table.values():
                conn.execute(_lane_table(name))
            conn.execute(_SQL_DONE_TABLE)
            conn.execute(_SQL_MARKS_TABLE)
            conn.execute(_SQL_MARK_LOG_TABLE)
            conn.execute(_SQL_HEADS_TABLE)
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

    def _upgrade(self, version: int) -> None:
        """A buffer of schema 2 (no analysis lane), 3 (no mark log) or 4 (no heads) becomes schema 5, in one
        transaction; its records and marks stay."""
        conn = self.conn
        with self.errors("upgrade"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                columns = {row[1] for row in conn.execute("PRAGMA table_info(state)")}
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                for lane, name in self._table.items():
                    if name not in tables:
                        conn.execute(_lane_table(name))
                    if f"pending_{lane}" not in columns:
                        conn.execute(f"ALTER TABLE state ADD COLUMN pending_{lane} INTEGER NOT NULL DEFAULT 0")
                conn.execute(_SQL_MARK_LOG_TABLE)
                conn.execute(_SQL_HEADS_TABLE)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        log.info("buffer %s: upgraded from schema %d to %d", self.path, version, SCHEMA_VERSION)

    # -- transactions -----------------------------------------------------------------------------

    def errors(self, doing: str) -> AbstractContextManager[None]:
        """SQLite's errors as BufferErrors that name the file and say what to do."""
        return sqlite_errors(self.path, doing)

    @contextmanager
    def transaction(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back (and nothing written) if it raises."""
        conn = self.conn
        with self.errors(doing):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
                if self._next_log is not None:
                    self._log_rows, self._unfolded = self._next_log
            except BaseException:
                if conn.in_transaction:
                    # The original error is what the caller needs; a failed rollback adds nothing.
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            finally:
                self._next_log = None

    # -- statements (inside a transaction unless said otherwise) ----------------------------------

    def pages(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """(page_count, freelist_count), read from the database header: microseconds."""
        pages, free = conn.execute(_SQL_PAGES).fetchone()
        return pages, free

    def insert(self, conn: sqlite3.Connection, lane: str, rows: list[ChunkRow]) -> None:
        conn.executemany(self._sql_insert[lane], rows)

    def insert_heads(self, conn: sqlite3.Connection, heads: dict[int, bytes]) -> None:
        """New heads; the caller `learn`s them (`Heads`) once its transaction committed."""
        conn.executemany(_SQL_HEAD, heads.items())

    def write_state(self, conn: sqlite3.Connection, last_seq: int, pending: Iterable[int]) -> None:
        conn.execute(self._sql_state, (last_seq, *pending))

    def write_marks(self, conn: sqlite3.Connection, marks: dict[str, Mark | None]) -> None:
        """Save marks (None: delete the key) as one log row; every `_MARK_LOG_ROWS` rows the log is folded
        into the `marks` table. What is in the log is known in memory once the transaction commits. A mark
        given as a tuple is kept as its JSON text (one orjson call for the whole row, none per mark)."""
        if not marks:
            return
        conn.execute(_SQL_LOG_MARKS, (orjson.dumps(marks),))
        rows, unfolded = self._next_log if self._next_log is not None else (self._log_rows, self._unfolded)
        unfolded = {**unfolded, **marks}
        if rows + 1 >= _MARK_LOG_ROWS:
            conn.executemany(_SQL_MARK, [(k, _text(v)) for k, v in unfolded.items() if v is not None])
            conn.executemany(_SQL_UNMARK, [(k,) for k, v in unfolded.items() if v is None])
            conn.execute("DELETE FROM mark_log")
            self._next_log = (0, {})
        else:
            self._next_log = (rows + 1, unfolded)

    def write_done(self, conn: sqlite3.Connection, lane: str, masks: Iterable[tuple[int, bytearray]]) -> None:
        conn.executemany(_SQL_DONE, [(lane, chunk, mask) for chunk, mask in masks])

    def delete(self, conn: sqlite3.Connection, lane: str, chunks: Iterable[tuple[int, bool]]) -> None:
        """Delete chunk rows by id, with their done rows where they have one (the bool)."""
        chunks = list(chunks)
        conn.executemany(self._sql_delete[lane], [(chunk,) for chunk, _ in chunks])
        conn.executemany(_SQL_UNDONE, [(lane, chunk) for chunk, has_mask in chunks if has_mask])

    def delete_range(self, conn: sqlite3.Connection, lane: str, after: int, upto: int) -> None:
        """Delete the chunk rows with after < seq <= upto, and their done rows."""
        conn.execute(self._sql_delete_range[lane], (after, upto))
        conn.execute(_SQL_UNDONE_RANGE, (lane, after, upto))

    def sizes(
        self, conn: sqlite3.Connection, lane: str, after: int, limit: int
    ) -> list[tuple[int, str, int, float, float, int]]:
        """(seq, key, n, ts_min, ts_max, payload bytes) of up to `limit` chunks after `after`, oldest first."""
        rows: list[tuple[int, str, int, float, float, int]] = conn.execute(
            self._sql_sizes[lane], (after, limit)
        ).fetchall()
        return rows

    def ts_blob(self, conn: sqlite3.Connection, lane: str, chunk: int) -> bytes:
        blob: bytes = conn.execute(self._sql_ts[lane], (chunk,)).fetchone()[0]
        return blob

    def lane_sizes(self) -> dict[str, tuple[int, int]]:
        """Per lane (bytes of keys, times and bodies, chunk rows): read at open for the size accounts."""
        out = {}
        with self.errors("open"):
            for lane, name in self._table.items():
                payload, n = self.conn.execute(
                    f"SELECT coalesce(sum(length(key) + length(ts) + length(bodies)), 0), count(*) FROM {name}"
                ).fetchone()
                out[lane] = (int(payload), int(n))
        return out

    def read_after(self, lane: str, cursor: int) -> sqlite3.Cursor:
        """(seq, key, n, ts, bodies) of the chunks after `cursor`, oldest first; close it when done."""
        return self.conn.execute(self._sql_next[lane], (cursor,))

    # -- outside transactions ---------------------------------------------------------------------

    def give_space_back(self) -> int:
        """Pages given back (at most `_VACUUM_STEP_PAGES`, each written to the WAL on the way), or 0."""
        try:
            pages, free = self.pages(self.conn)
            if free > max(_VACUUM_MIN_FREE_BYTES // self.page_size, pages // 4):
                # executescript steps the pragma to completion; execute() would free a single page.
                self.conn.executescript(f"PRAGMA incremental_vacuum({_VACUUM_STEP_PAGES})")
                return min(free, _VACUUM_STEP_PAGES)
        except sqlite3.Error as exc:
            log.warning("buffer %s: could not give free pages back to the file system, will retry: %s", self.path, exc)
        return 0

    def checkpoint(self) -> int:
        """Copy the WAL into the database (the next write starts it over); returns the pages it held."""
        with self.errors("checkpoint"):
            _, frames, _ = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames)

    def wal_bytes(self) -> int:
        try:
            return os.stat(f"{self.path}-wal").st_size
        except FileNotFoundError:
            return 0

    def marks(self) -> dict[str, str]:
        """Every mark: the table with the log's rows applied over it, in order."""
        with self.errors("read marks"):
            out: dict[str, str] = dict(self.conn.execute("SELECT k, v FROM marks").fetchall())
        for k, v in self._unfolded.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = _text(v)
        return out

    def close(self) -> None:
        with self.errors("close"):
            self.conn.close()


def _text(mark: Mark) -> str:
    """A mark as the text `marks()` gives: a sequence as its JSON."""
    return mark if isinstance(mark, str) else orjson.dumps(mark).decode()
