"""Dead letters: records a far end refused for good, kept on disk for a person to look at and replay.

A refusal that sending again cannot fix (the broker's ACL denies the topic, the record is larger
than the broker takes, the receiver rejects its content) must neither loop forever nor vanish:
the forwarder moves such records here, with the reason, before it deletes them from the buffer.
`edge-agent dead-letter list` shows them (it may run beside the agent: this file is not locked
exclusively), `edge-agent dead-letter replay` puts them back into their sink's buffer (with the
agent stopped) once the cause is fixed.

One SQLite file (WAL) in the data directory, shared by all sinks of one agent.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from uploader.buffer import StoredRecord
from uploader.buffer.errors import sqlite_errors

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS dead (id INTEGER PRIMARY KEY, time REAL NOT NULL, sink TEXT NOT NULL, "
    "lane TEXT NOT NULL, key TEXT NOT NULL, record_id TEXT NOT NULL, ts REAL NOT NULL, reason TEXT NOT NULL, "
    "body BLOB NOT NULL)"
)

_INSERT = "INSERT INTO dead (time, sink, lane, key, record_id, ts, reason, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    time: float  # when it was refused (epoch seconds)
    sink: str
    lane: str
    key: str
    record_id: str  # the id it was sent under
    ts: float  # its source time
    reason: str
    body: bytes  # the record body as stored in the buffer (without its id)


class DeadLetters:
    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        with self._errors("open"):
            if readonly:
                self._conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, isolation_level=None)
            else:
                self._conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute(_SCHEMA)
            self._count: int = self._conn.execute("SELECT count(*) FROM dead").fetchone()[0]

    def _errors(self, doing: str) -> AbstractContextManager[None]:
        return sqlite_errors(self.path, f"dead letters: {doing}")

    def add(self, sink: str, origin: str, records: Sequence[StoredRecord], reason: str) -> None:
        """Keep `records` of `sink` with why they were refused. Raises BufferError if the disk refuses."""
        now = time.time()
        rows = [(now, sink, r.lane, r.key, f"{origin}-{r.seq}", r.ts, reason, r.body) for r in records]
        with self._errors("add"):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(_INSERT, rows)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        self._count += len(rows)

    def count(self) -> int:
        return self._count

    def list(self, sink: str | None = None, limit: int | None = None) -> list[DeadLetter]:
        return list(self._select(sink, limit))

    def _select(self, sink: str | None, limit: int | None) -> Iterator[DeadLetter]:
        sql = "SELECT id, time, sink, lane, key, record_id, ts, reason, body FROM dead"
        args: list[object] = []
        if sink is not None:
            sql += " WHERE sink = ?"
            args.append(sink)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._errors("read"):
            for row in self._conn.execute(sql, args):
                yield DeadLetter(*row)

    def remove(self, ids: Sequence[int]) -> None:
        with self._errors("remove"):
            self._conn.executemany("DELETE FROM dead WHERE id = ?", [(i,) for i in ids])
        self._count = self._conn.execute("SELECT count(*) FROM dead").fetchone()[0]

    def close(self) -> None:
        self._conn.close()
