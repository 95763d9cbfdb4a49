"""The usage log's durable store: events in, one call per closed 10-minute KST window out.

File: `{directory}/sflog.db`, SQLite in WAL mode with `synchronous=FULL`, so an `add()` that
returned survives a crash and a power loss. It holds no secret: the crtfcKey is never written.

Tables
------
- `events`: one row per event id (`INSERT OR IGNORE`: a redelivered event is counted once), with
  its KST day and window (`slot` 0..143) and, once summarised, the call it belongs to.
- `calls`: one row per call: the window, its state, the representative event, the window's
  byte sum and event counts, and the answer. States: `pending` (formed, not answered yet),
  `sent` (answer code kept: AP1001/AP1002/AP1028 stored, AP1029 acknowledged), `rejected` (code
  and reason kept; never sent again), `stale` (of an earlier KST day: summarised here only).
- `days` and `flags`: the sender's bookkeeping (ledger.py), on the same connection, so an
  answer, its counter and the pacing mark are committed together.

Invariants
----------
- A call represents the events of one window that were taken in before it was formed. Its event
  is the window's most significant one (events.py), unchanged; `usage` is the sum of the window's
  bytes, capped at 999,999,999 (the API refuses 10^9 and more; the true sum is kept as
  `total_bytes`). An event taken in after its window's call was formed forms a further call of
  the same window: nothing is added to a call after it was formed, nothing is re-dated.
- Events of a KST day earlier than "today" are never sent (the API takes same-day logDt only):
  their windows, and pending calls of such days, become `stale` (`expire`).
- A window's call is formed only once the window ended and `settle` passed, so events still in
  flight from the agent's usage lane are in it.
- Rows of finished calls and their events are pruned `keep_days` after their day; an event id
  redelivered after that is taken as new, and is stale by then.

Several connections may open the file (the agent, and a CLI that resumes): SQLite's locks
serialise them, with a busy timeout.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import orjson

from uploader.sflog.events import (
    KST,
    USAGE_LIMIT,
    LogCall,
    UsageEvent,
    kst,
    kst_day,
    kst_midnight,
    representative,
)
from uploader.sflog.ledger import TABLES as LEDGER_TABLES
from uploader.sflog.ledger import Ledger, transaction

DB_FILE: Final = "sflog.db"
WINDOW: Final = timedelta(minutes=10)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SCHEMA: Final = 1
_APPLICATION_ID: Final = 0x5346_4C47  # "SFLG"

_TABLES = """
CREATE TABLE IF NOT EXISTS events(
    id TEXT PRIMARY KEY, t_us INTEGER NOT NULL, day TEXT NOT NULL, slot INTEGER NOT NULL,
    use TEXT NOT NULL, user TEXT NOT NULL, ip TEXT NOT NULL, bytes INTEGER NOT NULL, call INTEGER);
CREATE INDEX IF NOT EXISTS events_open ON events(day, slot) WHERE call IS NULL;
CREATE INDEX IF NOT EXISTS events_call ON events(call);
CREATE TABLE IF NOT EXISTS calls(
    id INTEGER PRIMARY KEY, day TEXT NOT NULL, slot INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'rejected', 'stale')),
    event TEXT, total_bytes INTEGER NOT NULL, events INTEGER NOT NULL, by_use TEXT NOT NULL,
    code TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '', answered_at TEXT);
"""


class SfLogStoreError(Exception):
    """The store's file is not ours or is of a newer schema."""


def window_of(t: datetime) -> tuple[date, int]:
    """The KST day and 10-minute slot (0..143) `t` falls in."""
    k = kst(t)
    return k.date(), (k.hour * 60 + k.minute) // 10


def window_start(day: date, slot: int) -> datetime:
    return kst_midnight(day) + slot * WINDOW


def _us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _event(row: Sequence[Any]) -> UsageEvent:
    """An event as `add()` stored it: (id, t_us, use, user, ip, bytes)."""
    event_id, t_us, use, user, ip, size = row
    return UsageEvent(event_id, (_EPOCH + timedelta(microseconds=t_us)).astimezone(KST), use, user, ip, size)


@dataclass(frozen=True, slots=True)
class Call:
    """One call to make: `event` represents the window and carries `usage` bytes."""

    id: int
    day: date
    slot: int
    event: UsageEvent
    total_bytes: int  # the window's sum, uncapped
    events: int  # how many events the call summarises
    by_use: tuple[tuple[str, int], ...]  # (useSe, count), by code

    @property
    def usage(self) -> int:
        return min(self.total_bytes, USAGE_LIMIT - 1)

    @property
    def fields(self) -> LogCall:
        return LogCall.of(self.event, self.usage)

    @property
    def window(self) -> str:
        return f"{window_start(self.day, self.slot):%Y-%m-%d %H:%M} KST"


@dataclass(frozen=True, slots=True)
class WindowRecord:
    """What became of one call (for status, tests and a future `edge-agent usage list`)."""

    day: date
    slot: int
    state: str
    event: str | None
    total_bytes: int
    events: int
    code: str
    reason: str


class WindowStore:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / DB_FILE
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise
        self.ledger = Ledger(self._db)

    def _open(self) -> None:
        db = self._db
        app = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if (app, version) not in ((0, 0), (_APPLICATION_ID, _SCHEMA)):
            raise SfLogStoreError(f"{self.path}: not a usage-log store of schema {_SCHEMA}; move it aside")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        with transaction(db):
            for statement in (_TABLES + LEDGER_TABLES).split(";"):
                db.execute(statement)
            db.execute(f"PRAGMA application_id={_APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={_SCHEMA}")

    def close(self) -> None:
        self._db.close()

    # -- events in -------------------------------------------------------------------------------

    def add(self, events: Iterable[UsageEvent]) -> int:
        """Store `events` durably; returns how many were new (an id seen before is ignored)."""
        rows = []
        for e in events:
            day, slot = window_of(e.time)
            rows.append((e.id, _us(e.time), day.isoformat(), slot, e.use, e.user, e.ip, e.data_bytes))
        with transaction(self._db) as db:
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)", rows)
            return db.total_changes - before

    # -- calls out -------------------------------------------------------------------------------

    def expire(self, today: date) -> tuple[int, int]:
        """Make windows and pending calls of days before `today` stale; returns (windows, events)."""
        windows = events = 0
        t = today.isoformat()
        with transaction(self._db) as db:
            for call_id, day, n in db.execute(
                "SELECT id, day, events FROM calls WHERE state='pending' AND day<?", (t,)
            ).fetchall():
                db.execute("UPDATE calls SET state='stale' WHERE id=?", (call_id,))
                self.ledger.count(date.fromisoformat(day), stale_windows=1, stale_events=n)
                windows, events = windows + 1, events + n
            for day, slot in db.execute(
                "SELECT DISTINCT day, slot FROM events WHERE call IS NULL AND day<?", (t,)
            ).fetchall():
                n = self._form(day, slot, "stale")[1]
                self.ledger.count(date.fromisoformat(day), stale_windows=1, stale_events=n)
                windows, events = windows + 1, events + n
        return windows, events

    def next_call(self, now: datetime, settle: timedelta) -> Call | None:
        """The call to send next: a pending one, else one formed from the oldest window that ended
        `settle` before `now`; None if there is none. Call `expire` first."""
        with transaction(self._db) as db:
            row = db.execute("SELECT id FROM calls WHERE state='pending' ORDER BY day, slot, id LIMIT 1").fetchone()
            if row is None:
                due = self._oldest_open()
                if due is None or window_start(*due) + WINDOW + settle > now:
                    return None
                row = (self._form(due[0].isoformat(), due[1], "pending")[0],)
            return self._call(row[0])

    def next_due(self, settle: timedelta) -> datetime | None:
        """When the oldest window with events not yet in a call may form its call."""
        due = self._oldest_open()
        return None if due is None else window_start(*due) + WINDOW + settle

    def _oldest_open(self) -> tuple[date, int] | None:
        row = self._db.execute("SELECT day, slot FROM events WHERE call IS NULL ORDER BY day, slot LIMIT 1").fetchone()
        return None if row is None else (date.fromisoformat(row[0]), row[1])

    def _form(self, day: str, slot: int, state: str) -> tuple[int, int]:
        """A call of the window's unsummarised events (inside a transaction); returns (call id, events)."""
        db = self._db
        events = [
            _event(row)
            for row in db.execute(
                "SELECT id, t_us, use, user, ip, bytes FROM events WHERE call IS NULL AND day=? AND slot=? "
                "ORDER BY rowid",
                (day, slot),
            )
        ]
        rep, total, by_use = (
            representative(events).id,
            sum(e.data_bytes for e in events),
            Counter(e.use for e in events),
        )
        cur = db.execute(
            "INSERT INTO calls(day, slot, state, event, total_bytes, events, by_use) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (day, slot, state, rep, total, len(events), orjson.dumps(dict(sorted(by_use.items())))),
        )
        call_id = int(cur.lastrowid or 0)
        db.execute("UPDATE events SET call=? WHERE call IS NULL AND day=? AND slot=?", (call_id, day, slot))
        return call_id, len(events)

    def _call(self, call_id: int) -> Call:
        db = self._db
        day, slot, total, n, by_use, *e = db.execute(
            "SELECT c.day, c.slot, c.total_bytes, c.events, c.by_use, e.id, e.t_us, e.use, e.user, e.ip, e.bytes "
            "FROM calls c JOIN events e ON e.id = c.event WHERE c.id=?",
            (call_id,),
        ).fetchone()
        counts = tuple(sorted(orjson.loads(by_use).items()))
        return Call(call_id, date.fromisoformat(day), slot, _event(e), total, n, counts)

    # -- answers ---------------------------------------------------------------------------------

    def sent(self, call: Call, code: str, at: datetime, *, stored: bool) -> None:
        """The API took the call: stored (AP1001/1002/1028) or acknowledged without storing (AP1029)."""
        with transaction(self._db) as db:
            db.execute(
                "UPDATE calls SET state='sent', code=?, answered_at=? WHERE id=?", (code, at.isoformat(), call.id)
            )
            self.ledger.count(kst_day(at), **({"stored": 1} if stored else {"acknowledged": 1}))
            self.ledger.set_last_sent(at)

    def rejected(self, call: Call, code: str, reason: str, at: datetime) -> None:
        """The API refused the call for good: it is never sent again."""
        with transaction(self._db) as db:
            db.execute(
                "UPDATE calls SET state='rejected', code=?, reason=?, answered_at=? WHERE id=?",
                (code, reason, at.isoformat(), call.id),
            )
            self.ledger.count(kst_day(at), rejected=1)

    # -- reading and pruning ---------------------------------------------------------------------

    def pending_windows(self) -> int:
        """Calls formed and not answered, and windows with events not yet in a call."""
        row = self._db.execute(
            "SELECT (SELECT COUNT(*) FROM calls WHERE state='pending') + "
            "(SELECT COUNT(*) FROM (SELECT DISTINCT day, slot FROM events WHERE call IS NULL))"
        ).fetchone()
        return int(row[0])

    def history(self, day: date) -> list[WindowRecord]:
        """The calls of windows of `day`, in window order."""
        rows = self._db.execute(
            "SELECT day, slot, state, event, total_bytes, events, code, reason FROM calls WHERE day=? "
            "ORDER BY slot, id",
            (day.isoformat(),),
        ).fetchall()
        return [WindowRecord(date.fromisoformat(r[0]), *r[1:]) for r in rows]

    def prune(self, today: date, keep_days: int) -> None:
        """Forget finished calls, and their events, of days more than `keep_days` before `today`."""
        before = (today - timedelta(days=keep_days)).isoformat()
        with transaction(self._db) as db:
            db.execute(
                "DELETE FROM events WHERE call IN (SELECT id FROM calls WHERE day<? AND state!='pending')", (before,)
            )
            db.execute("DELETE FROM calls WHERE day<? AND state!='pending'", (before,))
