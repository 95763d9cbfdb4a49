"""The usage-log sender: takes usage events in, sends one call per closed 10-minute window, paced and budgeted.

Contract:
- `take(events)` returns once the events are durably stored (windows.py); a redelivered event
  id is counted once. It never waits for the network.
- `run()` sends until cancelled, and raises only for a failing store (the agent restarts it).
  Cancellation propagates at once; a call in flight when it is cancelled stays pending and is
  sent again by the next run (the API answers AP1029 if the first one was stored less than
  10 minutes before, so only a crash during a call's round trip followed by a longer outage can
  store one window twice).
- Pacing: a call goes only `spacing` (10 min and a margin, at least 10 min) after the last call
  the API stored or acknowledged, so at most one stored call per 10 minutes; windows queue in
  order meanwhile. Rejections do not hold the next call back.
- Budget: every POST counts, before it leaves, against `max_calls_per_day` (default 1,000, at
  most 5,000: the API's own limit) of the current KST day; spent, it waits for the next KST day.
- Answers: stored and acknowledged windows are done; rejected ones are kept with the reason and
  never sent again; AP1030 stops sending (persisted) until `resume()`; AP1031-33 pause until the
  next KST midnight (persisted); anything else is retried with `delays` (capped backoff).
- Logging: one line per change of state (sending, retrying, stopped, daily-limit, budget-spent),
  one per rejected window and one per batch of windows that went stale; never one per call, never
  the crtfcKey (the sender never sees it).
- Time: `clock` (an aware datetime) and `sleep` are injectable; the sender sleeps at most
  `_IDLE` seconds at a time, so a stepped wall clock or a resume made by another process (on the
  store's file) is noticed within it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Final, Protocol

from uploader.sflog.client import Outcome, Verdict
from uploader.sflog.events import LogCall, UsageEvent, kst, kst_day, kst_now, next_midnight
from uploader.sflog.windows import WINDOW, Call, WindowStore

log = logging.getLogger(__name__)

HARD_MAX_CALLS_PER_DAY: Final = 5000  # the API's limit (AP1031 beyond it)
MIN_SPACING: Final = timedelta(minutes=10)  # AP1029 within it
_IDLE: Final = 60.0  # the longest sleep, in seconds
_MIN_SLEEP: Final = 0.01


class LogApi(Protocol):
    async def send(self, call: LogCall) -> Outcome:
        """One call; never raises for the far end (client.py)."""


class State(StrEnum):
    SENDING = "sending"
    RETRYING = "retrying"
    STOPPED = "stopped"
    DAILY_LIMIT = "daily-limit"
    BUDGET_SPENT = "budget-spent"


@dataclass(frozen=True, slots=True)
class SfLogStats:
    """For the agent's status records. Totals are over the store's life; `*_today` over the KST day."""

    state: str
    calls_today: int
    budget: int
    stored_today: int
    stored: int
    acknowledged: int
    rejected: int
    stale_windows: int
    stale_events: int
    pending_windows: int
    last_code: str
    last_error: str
    stopped_reason: str
    paused_until: datetime | None


def _seconds(d: timedelta) -> float:
    return max(_MIN_SLEEP, d.total_seconds())


class SfLogSender:
    def __init__(
        self,
        directory: Path,
        api: LogApi,
        *,
        delays: Callable[[], Iterator[float]],
        clock: Callable[[], datetime] = kst_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_calls_per_day: int = 1000,
        spacing: timedelta = timedelta(minutes=10, seconds=3),
        settle: timedelta = timedelta(minutes=1),
        keep_days: int = 7,
    ) -> None:
        if not 1 <= max_calls_per_day <= HARD_MAX_CALLS_PER_DAY:
            raise ValueError(
                f"max_calls_per_day: {max_calls_per_day}, allowed 1..{HARD_MAX_CALLS_PER_DAY} (the API's daily limit)"
            )
        if spacing < MIN_SPACING:
            raise ValueError(f"spacing: {spacing}, at least {MIN_SPACING} (the API stores one call per 10 minutes)")
        if not timedelta(0) <= settle <= WINDOW:
            raise ValueError(f"settle: {settle}, allowed 0..{WINDOW}")
        if keep_days < 1:
            raise ValueError(f"keep_days: {keep_days}, at least 1")
        self.store = WindowStore(directory)
        self._ledger = self.store.ledger
        self.max_calls_per_day = max_calls_per_day
        self._api = api
        self._delays = delays
        self._clock = clock
        self._sleep = sleep
        self._spacing = spacing
        self._settle = settle
        self._keep_days = keep_days
        self._wake = asyncio.Event()
        self._state: State | None = None
        self._failing = False
        self._backoff: Iterator[float] | None = None
        self._retry_at: datetime | None = None
        self._pruned: date | None = None
        self._last_code = ""
        self._last_error = ""

    def close(self) -> None:
        """After `run()` ended."""
        self.store.close()

    # -- the caller's side -----------------------------------------------------------------------

    async def take(self, events: Iterable[UsageEvent]) -> int:
        """Store `events` durably (returns when they are on disk); how many were new."""
        n = self.store.add(events)
        if n:
            self._wake.set()
        return n

    def resume(self) -> bool:
        """Clear a stop (AP1030) so sending starts again; True if sending was stopped."""
        was = self._ledger.resume()
        self._wake.set()
        return was

    @property
    def stats(self) -> SfLogStats:
        now = self._now()
        t = self._ledger.totals(kst_day(now))
        return SfLogStats(
            state=self._gate(now)[0].value,
            calls_today=t.calls_today,
            budget=self.max_calls_per_day,
            stored_today=t.stored_today,
            stored=t.stored,
            acknowledged=t.acknowledged,
            rejected=t.rejected,
            stale_windows=t.stale_windows,
            stale_events=t.stale_events,
            pending_windows=self.store.pending_windows(),
            last_code=self._last_code,
            last_error=self._last_error,
            stopped_reason=self._ledger.stopped or "",
            paused_until=self._ledger.paused_until,
        )

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Send until cancelled."""
        while True:
            self._wake.clear()  # before looking: a take() from here on is not lost
            now = self._now()
            self._housekeep(now)
            state, wait = self._gate(now)
            self._enter(state, now)
            if wait is None:
                call = self.store.next_call(now, self._settle)
                if call is not None:
                    await self._deliver(call, now)
                    continue
                due = self.store.next_due(self._settle)
                wait = _IDLE if due is None else _seconds(due - now)
            await self._idle(min(wait, _IDLE))

    def _now(self) -> datetime:
        return kst(self._clock())

    def _housekeep(self, now: datetime) -> None:
        today = kst_day(now)
        windows, events = self.store.expire(today)
        if windows:
            log.info(
                "usage log: %d window(s) of earlier days (%d events) kept locally as stale: "
                "the API takes same-day events only",
                windows,
                events,
            )
        if self._pruned != today:
            self.store.prune(today, self._keep_days)
            self._pruned = today

    def _gate(self, now: datetime) -> tuple[State, float | None]:
        """The state, and how long to wait before a call may leave (None: now)."""
        if self._ledger.stopped is not None:
            return State.STOPPED, _IDLE
        paused = self._ledger.paused_until
        if paused is not None and paused > now:
            return State.DAILY_LIMIT, _seconds(paused - now)
        if self._ledger.calls_on(kst_day(now)) >= self.max_calls_per_day:
            return State.BUDGET_SPENT, _seconds(next_midnight(now) - now)
        waits = [timedelta(0)]
        if self._retry_at is not None:
            waits.append(self._retry_at - now)
        last = self._ledger.last_sent_at
        if last is not None:  # capped: a clock stepped back must not hold sending for as long as the step
            waits.append(min(last + self._spacing - now, self._spacing))
        wait = max(waits)
        return (State.RETRYING if self._failing else State.SENDING), (_seconds(wait) if wait > timedelta(0) else None)

    def _enter(self, state: State, now: datetime) -> None:
        """Log a change of state, once."""
        old, self._state = self._state, state
        if state is old:
            return
        if state is State.SENDING:
            log.info("usage log: sending%s", f" again (was {old})" if old else "")
        elif state is State.RETRYING:
            log.warning("usage log: cannot deliver (%s); retrying with backoff, events are kept", self._last_error)
        elif state is State.STOPPED:
            log.error(
                "usage log: sending stopped, the API does not collect for this key (%s); events are kept. "
                "Confirm the project and its collection period, then run `edge-agent usage resume`",
                self._ledger.stopped,
            )
        elif state is State.DAILY_LIMIT:
            log.warning("usage log: the API's daily limit is reached; paused until %s", self._ledger.paused_until)
        else:
            log.warning(
                "usage log: %d calls today reach max_calls_per_day=%d; paused until %s",
                self._ledger.calls_on(kst_day(now)),
                self.max_calls_per_day,
                next_midnight(now),
            )

    async def _deliver(self, call: Call, now: datetime) -> None:
        self._ledger.count_call(kst_day(now))
        try:
            outcome = await self._api.send(call.fields)
        except Exception as e:  # a client bug must not lose the window: it stays pending
            outcome = Outcome(Verdict.RETRY, "", f"{type(e).__name__}: {e}")
        at = self._now()
        self._last_code = outcome.code
        if outcome.verdict is Verdict.RETRY:
            self._last_error = outcome.detail
            self._failing = True
            self._backoff = self._backoff or self._delays()
            self._retry_at = at + timedelta(seconds=next(self._backoff))
            return
        self._failing, self._backoff, self._retry_at = False, None, None
        if outcome.verdict in (Verdict.STORED, Verdict.ACKNOWLEDGED):
            self.store.sent(call, outcome.code, at, stored=outcome.verdict is Verdict.STORED)
        elif outcome.verdict is Verdict.REJECTED:
            self.store.rejected(call, outcome.code, outcome.detail, at)
            log.error(
                "usage log: window %s (%d events; %s at %s) rejected with %s: %s; kept as rejected, not sent again",
                call.window,
                call.events,
                call.event.use,
                call.event.log_dt,
                outcome.code,
                outcome.detail,
            )
        elif outcome.verdict is Verdict.STOP:
            self._ledger.stop(f"{outcome.code} {outcome.detail}".strip())
        else:
            self._ledger.pause(next_midnight(at))

    async def _idle(self, seconds: float) -> None:
        """Sleep `seconds`, or less if woken by take() or resume()."""
        if self._wake.is_set():
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
            if sleeper.done():
                sleeper.result()  # a failing sleep is a bug: let it out
        finally:
            for t in (sleeper, waker):
                t.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)
