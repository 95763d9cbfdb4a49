"""Where the receiver keeps what it accepted: one row per record id, and the answer given per
Idempotency-Key.

Invariants, for every implementation:
- A record id is stored at most once (a unique key, inserts that ignore a conflict), so several
  receiver processes on one database turn at-least-once delivery into exactly-once storage.
- `ingest` is one transaction: the idempotency look-up, the inserts and the stored answer commit
  together, so a repeated key sees either nothing or the complete first answer.
- Times are integers, microseconds since the Unix epoch (`micros`), so ranges compare numerically
  whatever number of fraction digits a sender wrote.

SQLite (one file, WAL, a busy timeout) is the implementation here, for one machine; a
`postgresql://` DSN opens the PostgreSQL one (pgstore.py), the way past one machine.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson

from uploader import wire

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_WIRE_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?Z")
_BUSY_TIMEOUT_S = 10.0
_IDEMPOTENCY_TTL_S = 24 * 3600.0


class StoreError(RuntimeError):
    """The store cannot be opened or used as configured."""


class StoreBusy(StoreError):
    """The database stayed locked by another writer for longer than the busy timeout; try again later."""


class IdempotencyConflict(StoreError):
    """An Idempotency-Key already answered a request with a different body."""


def micros(text: str) -> int:
    """A wire time (`2026-11-26T13:25:12.223360Z`, any number of fraction digits) in µs since the epoch.

    Raises ValueError naming what was expected.
    """
    m = _WIRE_TIME.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not a UTC time like 2026-11-26T13:25:12.223360Z")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        whole = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as e:
        raise ValueError(f"{text!r} is not a valid date and time: {e}") from None
    fraction = (m[7] or "")[:6].ljust(6, "0")
    return (whole - _EPOCH) // _MICROSECOND + int(fraction)


def iso(us: int) -> str:
    """µs since the epoch as a wire time."""
    return wire.encode_datetime(_EPOCH + us * _MICROSECOND)


def digest(body: bytes) -> str:
    """What identifies a request body for the idempotency check."""
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True, slots=True)
class Row:
    """One record as it is stored."""

    id: str
    origin: str
    site: str
    asset: str | None  # None: an agent-wide record (no routing key)
    lane: str
    submodel: str | None
    path: str | None  # the element's idShort path, for records about one element
    time_us: int | None  # the record's own time (see docs/cloud-api.md), None when it has none
    record: bytes  # the record as received (JSON, id included)


@dataclass(frozen=True, slots=True)
class Rejection:
    id: str | None  # None when the record carried no usable id
    reason: str


@dataclass(frozen=True, slots=True)
class Answer:
    """What one ingest request was answered: new records, records already stored, records refused."""

    accepted: int
    duplicates: int
    rejected: tuple[Rejection, ...]

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "accepted": self.accepted,
                "duplicates": self.duplicates,
                "rejected": [{"id": r.id, "reason": r.reason} for r in self.rejected],
            }
        )

    @classmethod
    def from_json(cls, text: bytes | str) -> Answer:
        doc = orjson.loads(text)
        rejected = tuple(Rejection(r["id"], r["reason"]) for r in doc["rejected"])
        return cls(doc["accepted"], doc["duplicates"], rejected)


@dataclass(frozen=True, slots=True)
class Ingested:
    answer: Answer
    replayed: bool  # True: the key had been answered before; nothing was stored this time


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored record with where it came from, as the query side hands it out."""

    origin: str
    site: str
    asset: str | None
    lane: str
    received_us: int
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AssetCounts:
    site: str
    asset: str | None
    lanes: dict[str, int]
    last_received_us: int


class Store(Protocol):
    """The receiver's storage. Calls block; the app makes them from one worker thread."""

    def ingest(self, key: str, body_digest: str, rows: Sequence[Row], rejected: Sequence[Rejection]) -> Ingested:
        """Store `rows` (ignoring ids already stored) and remember the answer under `key`, in one transaction.

        If `key` was answered before for the same `body_digest`, store nothing and return that answer
        (replayed). Raises IdempotencyConflict if it was answered for another body, StoreBusy if the
        database stayed locked.
        """

    def assets(self) -> list[AssetCounts]:
        """Every (site, asset) with records, and its record count per lane."""

    def latest(self, asset: str) -> list[Stored]:
        """Per element (submodel, path) of `asset`, its data record with the latest time; by submodel, path."""

    def records(
        self, asset: str, path: str, *, submodel: str | None, start_us: int | None, end_us: int | None, limit: int
    ) -> list[Stored]:
        """Data records of one element, start_us <= time < end_us, ordered by time (untimed last), at most `limit`."""

    def lane(self, lane: str, *, asset: str | None, limit: int) -> list[Stored]:
        """Records of one lane (of one asset, if given), ordered by time, at most `limit`."""

    def close(self) -> None: ...


POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")


def open_store(location: str | Path) -> Store:
    """The store a `--db` value names: a PostgreSQL DSN (postgresql://...) or an SQLite file path."""
    text = str(location)
    if text.startswith(POSTGRESQL_SCHEMES):
        from simulators.cloud.pgstore import PostgresStore  # only deployments that use it load psycopg

        return PostgresStore(text)
    return SQLiteStore(Path(text))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL,
    site TEXT NOT NULL,
    asset TEXT,
    lane TEXT NOT NULL,
    submodel TEXT,
    path TEXT,
    time_us INTEGER,
    received_us INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_element ON records (asset, lane, path, time_us);
CREATE INDEX IF NOT EXISTS records_by_lane ON records (lane, asset, time_us);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    answer TEXT NOT NULL,
    created_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created_us);
"""

_INSERT = (
    "INSERT OR IGNORE INTO records (id, origin, site, asset, lane, submodel, path, time_us, received_us, record)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLUMNS = "origin, site, asset, lane, received_us, record"


def _busy(e: sqlite3.OperationalError) -> Exception:
    """StoreBusy for a lock that outlasted the busy timeout; any other failure stays what it is."""
    if e.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreBusy(f"the store stayed locked by another writer for {_BUSY_TIMEOUT_S:.0f} s")
    return e


def _now_us() -> int:
    return time.time_ns() // 1000


class SQLiteStore:
    """One SQLite file in WAL mode; any number of receiver processes may open the same file."""

    def __init__(self, path: Path, *, idempotency_ttl_s: float = _IDEMPOTENCY_TTL_S) -> None:
        self.path = path
        self._ttl_us = int(idempotency_ttl_s * 1e6)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are explicit, and ingest takes the write lock at BEGIN, so
            # a concurrent writer waits in the busy handler instead of failing on a lock upgrade.
            self._db = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # A 200 answer promises the records are stored: commit to the disk, not to the page cache.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the SQLite store {path}: {e}") from e

    def ingest(self, key: str, body_digest: str, rows: Sequence[Row], rejected: Sequence[Rejection]) -> Ingested:
        now = _now_us()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise _busy(e) from e
        try:
            found = self._db.execute("SELECT digest, answer FROM idempotency WHERE key = ?", (key,)).fetchone()
            if found is not None:
                self._db.execute("ROLLBACK")
                if found[0] != body_digest:
                    raise IdempotencyConflict(f"Idempotency-Key {key!r} already answered a request with another body")
                return Ingested(Answer.from_json(found[1]), replayed=True)
            new = 0
            for r in rows:
                cur = self._db.execute(
                    _INSERT, (r.id, r.origin, r.site, r.asset, r.lane, r.submodel, r.path, r.time_us, now, r.record)
                )
                new += cur.rowcount
            answer = Answer(new, len(rows) - new, tuple(rejected))
            self._db.execute("DELETE FROM idempotency WHERE created_us < ?", (now - self._ttl_us,))
            self._db.execute(
                "INSERT INTO idempotency (key, digest, answer, created_us) VALUES (?, ?, ?, ?)",
                (key, body_digest, answer.to_json().decode(), now),
            )
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as e:
            self._rollback()
            raise _busy(e) from e
        except BaseException:
            self._rollback()
            raise
        return Ingested(answer, replayed=False)

    def assets(self) -> list[AssetCounts]:
        lanes: dict[tuple[str, str | None], dict[str, int]] = {}
        last: dict[tuple[str, str | None], int] = {}
        for site, asset, lane, count, received in self._db.execute(
            "SELECT site, asset, lane, COUNT(*), MAX(received_us) FROM records"
            " GROUP BY site, asset, lane ORDER BY site, asset IS NOT NULL, asset, lane"
        ):
            lanes.setdefault((site, asset), {})[lane] = count
            last[(site, asset)] = max(last.get((site, asset), received), received)
        return [AssetCounts(site, asset, counts, last[(site, asset)]) for (site, asset), counts in lanes.items()]

    def latest(self, asset: str) -> list[Stored]:
        return self._stored(
            f"SELECT {_COLUMNS} FROM ("
            f"  SELECT {_COLUMNS}, submodel, path, ROW_NUMBER() OVER ("
            "    PARTITION BY submodel, path ORDER BY time_us IS NULL, time_us DESC, seq DESC) AS n"
            "  FROM records WHERE asset = ? AND lane = 'data'"
            ") WHERE n = 1 ORDER BY submodel, path",
            (asset,),
        )

    def records(
        self, asset: str, path: str, *, submodel: str | None, start_us: int | None, end_us: int | None, limit: int
    ) -> list[Stored]:
        where = ["asset = ?", "lane = 'data'", "path = ?"]
        args: list[Any] = [asset, path]
        for clause, value in (("submodel = ?", submodel), ("time_us >= ?", start_us), ("time_us < ?", end_us)):
            if value is not None:
                where.append(clause)
                args.append(value)
        return self._stored(
            f"SELECT {_COLUMNS} FROM records WHERE {' AND '.join(where)}"
            " ORDER BY time_us IS NULL, time_us, seq LIMIT ?",
            [*args, limit],
        )

    def lane(self, lane: str, *, asset: str | None, limit: int) -> list[Stored]:
        where, args = ("lane = ?", [lane]) if asset is None else ("lane = ? AND asset = ?", [lane, asset])
        return self._stored(
            f"SELECT {_COLUMNS} FROM records WHERE {where} ORDER BY time_us IS NULL, time_us, seq LIMIT ?",
            [*args, limit],
        )

    def close(self) -> None:
        self._db.close()

    def _stored(self, sql: str, args: Sequence[Any]) -> list[Stored]:
        return [
            Stored(origin, site, asset, lane, received, orjson.loads(record))
            for origin, site, asset, lane, received, record in self._db.execute(sql, args)
        ]

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
