"""The receiver's store in PostgreSQL: `--db postgresql://user@host:5432/dbname`, for several receiver
processes on several machines in front of one database.

The same `Store` protocol and invariants as `SQLiteStore` (store.py): a record id is stored at most
once (`id` is a unique key and inserts say ON CONFLICT DO NOTHING), `ingest` is one transaction
with its idempotency answer, times are integer microseconds. Tables are created if absent, in the
first schema of the connection's search_path.

psycopg 3 is used synchronously: the `Store` protocol is synchronous (SQLite's driver is), and the
app already calls it from one worker thread, so an async driver would buy nothing. One connection
per store, reopened on the next call after it was lost.

Concurrency (READ COMMITTED, PostgreSQL's default):
- Records: the unique key makes a concurrent insert of the same id wait for the first transaction;
  if that one commits, the insert does nothing and the record counts as a duplicate; if it rolls
  back, the insert goes ahead. Any number of receivers store each record exactly once.
- Idempotency: `ingest` first claims its key, `INSERT ... ON CONFLICT (key) DO NOTHING`, in the same
  transaction as the record inserts and the answer. A second request with the same key, at another
  receiver at the same moment, waits on that insert until the first transaction ends, then finds
  the committed row with its complete answer (or, if the first rolled back, claims the key itself).
  No answer can be seen half-written, and the loser never touches the records. (A SERIALIZABLE
  transaction would give the same result by failing and retrying the loser; an advisory lock
  would serialize on a hash of the key; the claim does it with the table's own primary key.)
- Two requests inserting overlapping ids in opposite orders can deadlock; PostgreSQL aborts one
  and `ingest` runs it again from the start. Rows are inserted in request order, so records with
  equal times keep the order they had in the request, as in SQLite.
- A lock held longer than 10 s (lock_timeout), or a lost connection, is `StoreBusy` (the app
  answers 503 with Retry-After); commits are `synchronous_commit = on`: a 200 means it is on disk.

A DSN may hold a password; every message and log line names the DSN without it (`redact`), and
`CloudReceiver` hands a password to its process as PGPASSWORD, not on the command line.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlencode

import orjson
import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict

from simulators.cloud.store import (
    _BUSY_TIMEOUT_S,
    _COLUMNS,
    _IDEMPOTENCY_TTL_S,
    Answer,
    AssetCounts,
    IdempotencyConflict,
    Ingested,
    Rejection,
    Row,
    StoreBusy,
    Stored,
    StoreError,
    _now_us,
)

log = logging.getLogger("simulators.cloud")

_CONNECT_TIMEOUT_S = 10
_ATTEMPTS = 5  # of an ingest transaction that PostgreSQL aborted for a deadlock or a serialization failure
_APPLICATION = "simulators.cloud"
_SCHEMA_LOCK = 0x636C6F7564  # pg_advisory_xact_lock key: one schema creation at a time

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    origin TEXT COLLATE "C" NOT NULL,
    site TEXT COLLATE "C" NOT NULL,
    asset TEXT COLLATE "C",
    lane TEXT COLLATE "C" NOT NULL,
    submodel TEXT COLLATE "C",
    path TEXT COLLATE "C",
    time_us BIGINT,
    received_us BIGINT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_element ON records (asset, lane, path, time_us);
CREATE INDEX IF NOT EXISTS records_by_lane ON records (lane, asset, time_us);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT COLLATE "C" PRIMARY KEY,
    digest TEXT NOT NULL,
    answer TEXT,
    created_us BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created_us);
"""

# One statement for the whole request, rows in request order (WITH ORDINALITY), so `seq` follows it.
_INSERT = (
    "INSERT INTO records (id, origin, site, asset, lane, submodel, path, time_us, received_us, record)"
    " SELECT id, origin, site, asset, lane, submodel, path, time_us, %s, record"
    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
    " %s::bigint[], %s::text[]) WITH ORDINALITY AS r(id, origin, site, asset, lane, submodel, path, time_us, record, n)"
    " ORDER BY n"
    " ON CONFLICT (id) DO NOTHING"
)


class _Retry(Exception):
    """The ingest transaction has to run again (a key claimed by a transaction that then vanished)."""


_INVALID = "(a PostgreSQL DSN that is not valid, not shown: it may hold a password)"
_DSN_FORM = (
    "write it as postgresql://user@host:5432/dbname?param=value, special characters percent-encoded "
    "(or leave the password out and set PGPASSWORD or ~/.pgpass)"
)


def redact(dsn: str) -> str:
    """`dsn` as a `postgresql://` URL without its password (nor sslpassword), to show in messages and logs.

    A DSN libpq cannot parse is not shown at all: its error message would quote the password.
    """
    try:
        url, _ = without_password(dsn)
    except StoreError:
        return _INVALID
    if "sslpassword" not in url:
        return url
    params = {k: str(v) for k, v in conninfo_to_dict(url).items() if k != "sslpassword"}
    return _url(params)


def without_password(dsn: str) -> tuple[str, str | None]:
    """(the DSN as a `postgresql://` URL without its password, the password or None).

    Raises StoreError, not quoting the DSN, if libpq cannot parse it.
    """
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    except psycopg.Error:
        raise StoreError(f"{_INVALID}: {_DSN_FORM}") from None
    password = params.pop("password", None)
    return _url(params), password


def _url(params: dict[str, str]) -> str:
    """Connection parameters as a URL libpq reads back to the same parameters."""
    params = dict(params)
    user, host, port, dbname = (params.pop(k, None) for k in ("user", "host", "port", "dbname"))
    netloc = f"{quote(user, safe='')}@" if user else ""
    if host and not any(c in host for c in "/,"):  # one host name or address
        netloc += f"[{host}]" if ":" in host else quote(host, safe="")
        if port:
            netloc += f":{port}"
    else:  # a socket directory or several hosts: as query parameters
        params.update({k: v for k, v in (("host", host), ("port", port)) if v})
    path = f"/{quote(dbname, safe='')}" if dbname else "/"
    query = f"?{urlencode(params, quote_via=quote)}" if params else ""
    return f"postgresql://{netloc}{path}{query}"


class PostgresStore:
    """A PostgreSQL database (a DSN); any number of receiver processes, on any machines, may share it."""

    def __init__(self, dsn: str, *, idempotency_ttl_s: float = _IDEMPOTENCY_TTL_S) -> None:
        self._dsn = dsn
        without_password(dsn)  # StoreError, not quoting it, if the DSN is not valid
        self.where = redact(dsn)  # the DSN as it may be shown
        self._ttl_us = int(idempotency_ttl_s * 1e6)
        try:
            self._conn: psycopg.Connection[tuple[Any, ...]] | None = self._connect()
            with self._conn.transaction():
                # Two receivers starting at once would race in CREATE ... IF NOT EXISTS.
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                self._conn.execute(_SCHEMA)
        except psycopg.Error as e:
            raise StoreError(f"cannot open the PostgreSQL store {self.where}: {_text(e)}") from e

    # -- the connection

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = psycopg.connect(
            self._dsn,
            autocommit=True,  # transactions are explicit (conn.transaction())
            connect_timeout=_CONNECT_TIMEOUT_S,
            fallback_application_name=_APPLICATION,  # the DSN may name each receiver (application_name=...)
            client_encoding="UTF8",
        )
        try:
            encoding = conn.execute("SHOW server_encoding").fetchone()
            if encoding is None or encoding[0] != "UTF8":
                raise StoreError(
                    f"the database {self.where} uses the encoding {encoding and encoding[0]}; records are UTF-8 "
                    "text: create it with ENCODING 'UTF8'"
                )
            # A 200 answer promises the records are stored: commit to the disk, whatever the server's default.
            conn.execute("SET synchronous_commit = on")
            conn.execute(f"SET lock_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The open connection, reconnecting if it was lost (StoreBusy if that fails)."""
        if self._conn is None or self._conn.closed:
            self._conn = None
            try:
                self._conn = self._connect()
            except psycopg.Error as e:
                raise StoreBusy(f"cannot reach the PostgreSQL store {self.where}: {_text(e)}") from e
        return self._conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """psycopg's errors as StoreBusy (try again later) or StoreError, naming the DSN without its password."""
        try:
            yield
        except errors.LockNotAvailable as e:
            raise StoreBusy(
                f"the PostgreSQL store {self.where} stayed locked by another writer for {_BUSY_TIMEOUT_S:.0f} s"
            ) from e
        except (errors.DeadlockDetected, errors.SerializationFailure, _Retry) as e:
            why = _text(e) or "its Idempotency-Key was claimed, then gone"
            raise StoreBusy(f"the PostgreSQL store {self.where} aborted the ingest {_ATTEMPTS} times: {why}") from e
        except psycopg.OperationalError as e:
            if self._conn is None or self._conn.closed:
                raise StoreBusy(f"lost the connection to the PostgreSQL store {self.where}: {_text(e)}") from e
            raise StoreError(f"the PostgreSQL store {self.where} failed: {_text(e)}") from e
        except psycopg.Error as e:
            raise StoreError(f"the PostgreSQL store {self.where} failed: {_text(e)}") from e

    # -- ingest

    def ingest(self, key: str, body_digest: str, rows: Sequence[Row], rejected: Sequence[Rejection]) -> Ingested:
        with self._errors():
            conn = self._connection()
            now = _now_us()
            # Outside the ingest transaction, so it holds no lock while waiting on others; SKIP LOCKED:
            # rows another receiver is purging are left to it.
            conn.execute(
                "DELETE FROM idempotency WHERE key IN"
                " (SELECT key FROM idempotency WHERE created_us < %s FOR UPDATE SKIP LOCKED)",
                (now - self._ttl_us,),
            )
            attempt = 1
            while True:
                try:
                    return self._ingest(conn, now, key, body_digest, rows, rejected)
                except (errors.DeadlockDetected, errors.SerializationFailure, _Retry) as e:
                    if attempt == _ATTEMPTS:
                        raise
                    why = _text(e) or "its Idempotency-Key was claimed, then gone"
                    log.info(
                        "ingest %s: PostgreSQL aborted it (%s); running it again (%d of %d)",
                        key,
                        why,
                        attempt,
                        _ATTEMPTS,
                    )
                # Apart, so the two aborted transactions do not meet again at once.
                time.sleep(random.uniform(0.0, 0.05 * attempt))
                attempt += 1

    def _ingest(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        now: int,
        key: str,
        body_digest: str,
        rows: Sequence[Row],
        rejected: Sequence[Rejection],
    ) -> Ingested:
        with conn.transaction():
            # The claim: waits for a concurrent transaction holding the same key, then inserts or does nothing.
            claimed = conn.execute(
                "INSERT INTO idempotency (key, digest, answer, created_us) VALUES (%s, %s, NULL, %s)"
                " ON CONFLICT (key) DO NOTHING",
                (key, body_digest, now),
            ).rowcount
            if not claimed:
                # READ COMMITTED: this statement sees the row the claim waited for, committed with its answer.
                found = conn.execute("SELECT digest, answer FROM idempotency WHERE key = %s", (key,)).fetchone()
                if found is None or found[1] is None:
                    raise _Retry  # purged as expired in between (its answer is always written before commit)
                if found[0] != body_digest:
                    raise IdempotencyConflict(f"Idempotency-Key {key!r} already answered a request with another body")
                return Ingested(Answer.from_json(found[1]), replayed=True)
            new = 0
            if rows:
                columns = (
                    [r.id for r in rows],
                    [r.origin for r in rows],
                    [r.site for r in rows],
                    [r.asset for r in rows],
                    [r.lane for r in rows],
                    [r.submodel for r in rows],
                    [r.path for r in rows],
                    [r.time_us for r in rows],
                    [r.record.decode() for r in rows],
                )
                new = conn.execute(_INSERT, (now, *columns)).rowcount
            answer = Answer(new, len(rows) - new, tuple(rejected))
            conn.execute("UPDATE idempotency SET answer = %s WHERE key = %s", (answer.to_json().decode(), key))
        return Ingested(answer, replayed=False)

    # -- the query side

    def assets(self) -> list[AssetCounts]:
        found = self._rows(
            "SELECT site, asset, json_object_agg(lane, n ORDER BY lane), MAX(last) FROM ("
            "  SELECT site, asset, lane, COUNT(*) AS n, MAX(received_us) AS last FROM records"
            "  GROUP BY site, asset, lane"
            ") AS per_lane GROUP BY site, asset ORDER BY site, asset IS NOT NULL, asset",
            (),
        )
        return [AssetCounts(site, asset, dict(lanes), last) for site, asset, lanes, last in found]

    def latest(self, asset: str) -> list[Stored]:
        return self._stored(
            f"SELECT {_COLUMNS} FROM ("
            f"  SELECT {_COLUMNS}, submodel, path, ROW_NUMBER() OVER ("
            "    PARTITION BY submodel, path ORDER BY time_us IS NULL, time_us DESC, seq DESC) AS n"
            "  FROM records WHERE asset = %s AND lane = 'data'"
            ") AS newest WHERE n = 1 ORDER BY submodel NULLS FIRST, path NULLS FIRST",
            (asset,),
        )

    def records(
        self, asset: str, path: str, *, submodel: str | None, start_us: int | None, end_us: int | None, limit: int
    ) -> list[Stored]:
        where = ["asset = %s", "lane = 'data'", "path = %s"]
        args: list[Any] = [asset, path]
        for clause, value in (("submodel = %s", submodel), ("time_us >= %s", start_us), ("time_us < %s", end_us)):
            if value is not None:
                where.append(clause)
                args.append(value)
        return self._stored(
            f"SELECT {_COLUMNS} FROM records WHERE {' AND '.join(where)}"
            " ORDER BY time_us IS NULL, time_us, seq LIMIT %s",
            [*args, limit],
        )

    def lane(self, lane: str, *, asset: str | None, limit: int) -> list[Stored]:
        where, args = ("lane = %s", [lane]) if asset is None else ("lane = %s AND asset = %s", [lane, asset])
        return self._stored(
            f"SELECT {_COLUMNS} FROM records WHERE {where} ORDER BY time_us IS NULL, time_us, seq LIMIT %s",
            [*args, limit],
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _rows(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._errors():
            return self._connection().execute(sql, args).fetchall()

    def _stored(self, sql: str, args: Sequence[Any]) -> list[Stored]:
        return [
            Stored(origin, site, asset, lane, received, orjson.loads(record))
            for origin, site, asset, lane, received, record in self._rows(sql, args)
        ]


def _text(e: BaseException) -> str:
    """An error's message on one line (libpq's span several)."""
    return " ".join(str(e).split())
