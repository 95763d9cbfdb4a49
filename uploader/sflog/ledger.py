"""The sender's durable bookkeeping, kept in the store's SQLite file (windows.py owns the connection).

- `days`: per KST day, the calls made (every POST, counted before it leaves, so a crash cannot
  hide one from the daily budget) and what came of them: stored, acknowledged, rejected, and the
  windows and events that went stale. These counters outlive the pruning of calls and events.
- `flags`: what must outlive a restart: `stopped` (the AP1030 answer, until resumed),
  `paused_until` (AP1031-33: the next KST midnight) and `last_sent_at` (the last stored or
  acknowledged call, which paces the next one).

Methods that write and are named for an action (`count_call`, `stop`, `resume`, `pause`) commit
on their own; `count` and `set_last_sent` write inside the caller's transaction, so a call's
answer, its counter and the pacing mark are committed together.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

TABLES: Final = """
CREATE TABLE IF NOT EXISTS days(
    day TEXT PRIMARY KEY, calls INTEGER NOT NULL DEFAULT 0, stored INTEGER NOT NULL DEFAULT 0,
    acknowledged INTEGER NOT NULL DEFAULT 0, rejected INTEGER NOT NULL DEFAULT 0,
    stale_windows INTEGER NOT NULL DEFAULT 0, stale_events INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS flags(name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
COUNTERS: Final = frozenset({"calls", "stored", "acknowledged", "rejected", "stale_windows", "stale_events"})


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction (the connection is in autocommit mode: isolation_level=None)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@dataclass(frozen=True, slots=True)
class Totals:
    calls_today: int
    stored_today: int
    stored: int
    acknowledged: int
    rejected: int
    stale_windows: int
    stale_events: int


class Ledger:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    # -- counters --------------------------------------------------------------------------------

    def count(self, day: date, **deltas: int) -> None:
        """Add `deltas` to `day`'s counters, inside the caller's transaction."""
        unknown = set(deltas) - COUNTERS
        if unknown:
            raise ValueError(f"no such counter: {sorted(unknown)}")
        self._db.execute("INSERT OR IGNORE INTO days(day) VALUES (?)", (day.isoformat(),))
        sets = ", ".join(f"{k} = {k} + ?" for k in deltas)  # names checked above
        self._db.execute(f"UPDATE days SET {sets} WHERE day=?", (*deltas.values(), day.isoformat()))

    def count_call(self, day: date) -> int:
        """One more call made on `day`; returns the day's count."""
        with transaction(self._db):
            self.count(day, calls=1)
        return self.calls_on(day)

    def calls_on(self, day: date) -> int:
        row = self._db.execute("SELECT calls FROM days WHERE day=?", (day.isoformat(),)).fetchone()
        return int(row[0]) if row else 0

    def totals(self, today: date) -> Totals:
        """Today's calls and stored calls, and every outcome over the store's life."""
        life = self._db.execute(
            "SELECT TOTAL(stored), TOTAL(acknowledged), TOTAL(rejected), TOTAL(stale_windows), TOTAL(stale_events) "
            "FROM days"
        ).fetchone()
        row = self._db.execute("SELECT calls, stored FROM days WHERE day=?", (today.isoformat(),)).fetchone()
        calls_today, stored_today = row or (0, 0)
        stored, acknowledged, rejected, stale_windows, stale_events = (int(v) for v in life)
        return Totals(calls_today, stored_today, stored, acknowledged, rejected, stale_windows, stale_events)

    # -- flags -----------------------------------------------------------------------------------

    def _get(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM flags WHERE name=?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def _time(self, name: str) -> datetime | None:
        value = self._get(name)
        return None if value is None else datetime.fromisoformat(value)

    def _set(self, name: str, value: str | None) -> None:
        if value is None:
            self._db.execute("DELETE FROM flags WHERE name=?", (name,))
        else:
            self._db.execute("INSERT OR REPLACE INTO flags VALUES (?, ?)", (name, value))

    @property
    def stopped(self) -> str | None:
        """Why sending stopped (the AP1030 answer), or None."""
        return self._get("stopped")

    def stop(self, reason: str) -> None:
        with transaction(self._db):
            self._set("stopped", reason)

    def resume(self) -> bool:
        """Clear a stop; True if there was one. Safe from another process (a CLI) while the agent runs."""
        with transaction(self._db):
            was = self._get("stopped") is not None
            self._set("stopped", None)
        return was

    @property
    def paused_until(self) -> datetime | None:
        return self._time("paused_until")

    def pause(self, until: datetime) -> None:
        with transaction(self._db):
            self._set("paused_until", until.isoformat())

    @property
    def last_sent_at(self) -> datetime | None:
        return self._time("last_sent_at")

    def set_last_sent(self, at: datetime) -> None:
        """Inside the caller's transaction."""
        self._set("last_sent_at", at.isoformat())
