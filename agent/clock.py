"""Whether each source's clock agrees with the agent's, judged from the ages of its values on arrival.

A value's age on arrival (the agent's clock when it takes the value in, minus the value's source time) is
the server's sampling and publishing delay plus how far the source's clock is from ours. The agent stores
source times as the source gives them, so a clock that is off shifts every record, gap and latency figure
of that machine by as much, and nothing else shows it. A PLC set to Korean time but sending it as UTC is
9 hours ahead. Judged once per `status_interval_s`, from the first and last value of each notification
the pipeline stored (repeats of a value already stored are not counted):

- **ahead**: every value of the interval arrived with an age below -`AHEAD_S` (its time is in the agent's
  future). Only a clock does that.
- **behind**: every value of two intervals in a row arrived more than `BEHIND_S` old: a clock behind ours,
  or a server that delivers that late. One interval is not enough: the first values after the first
  subscribe carry the time they last changed, which can be hours ago. An interval without values breaks
  the run.
- **agrees**: otherwise, once an interval had values.

A change is logged (WARNING when a clock is off, INFO when it agrees again) and written as a `source-clock`
status record (docs/operations.md). The offset given is the median age of the interval's values.

The same interval's ages, over all sources, are the `receive_age_ms` figures of the agent-stats record
written at its end (`ages_ms`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Literal

AHEAD_S = 5.0
BEHIND_S = 120.0
KEPT = 1000  # ages kept per source and interval for the median (the min and max see every one)

State = Literal["agrees", "ahead", "behind"]


@dataclass(frozen=True)
class ClockChange:
    source: str
    state: State
    offset_s: float  # the interval's median age: > 0 the source's times are behind ours, < 0 ahead
    values: int  # ages the judgement saw in the interval

    @property
    def message(self) -> str:
        off = abs(self.offset_s)
        if self.state == "agrees":
            return f"source {self.source}: its clock agrees with the agent's again (values {self.offset_s:.1f} s old)"
        if self.state == "ahead":
            text = (
                f"source {self.source}: its values' times are {_span(off)} ahead of the agent's clock; they are "
                "stored as the source gives them, so this machine's records, gaps and latency figures are off by "
                "as much. Set the device's (or the gateway's) clock right, to UTC (NTP)"
            )
        else:
            text = (
                f"source {self.source}: its values arrive {_span(off)} old, in two status intervals in a row: its "
                "clock is behind the agent's, or its server delivers that late; the values are stored with the "
                "source's times. Set the device's (or the gateway's) clock right, to UTC (NTP)"
            )
        if abs(off - 9 * 3600) < 600:
            text += "; 9 hours is Korean time taken for UTC: is the device set to local time?"
        return text


def _span(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _summary(ages: list[float]) -> dict[str, float | int]:
    if not ages:
        return {}
    n = len(ages)
    return {
        "count": n,
        "p50": round(ages[n // 2] * 1000, 1),
        "p95": round(ages[min(n - 1, n * 95 // 100)] * 1000, 1),
        "max": round(ages[-1] * 1000, 1),
    }


class _Interval:
    __slots__ = ("ages", "count", "high", "low")

    def __init__(self) -> None:
        self.ages: list[float] = []
        self.count = 0
        self.low = float("inf")
        self.high = float("-inf")


class ClockWatch:
    """`seen` per notification (the pipeline's `on_received`), `check` once per status interval. Not
    thread-safe: both from the event loop."""

    def __init__(self) -> None:
        self._now: dict[str, _Interval] = {}
        self._state: dict[str, State] = {}
        self._old_runs: dict[str, int] = {}  # intervals in a row whose every value was more than BEHIND_S old
        self._offset: dict[str, float] = {}  # the median age of the last interval with values
        # Milliseconds, over every source: the median, 95th percentile, most and count of the ages of the interval
        # `check` last closed (at most KEPT per source); empty when none arrived.
        self.ages_ms: dict[str, float | int] = {}

    def seen(self, source: str, ages: tuple[float, float]) -> None:
        interval = self._now.get(source)
        if interval is None:
            interval = self._now[source] = _Interval()
        first, last = ages
        interval.count += 2
        interval.low = min(interval.low, first, last)
        interval.high = max(interval.high, first, last)
        if len(interval.ages) < KEPT:
            interval.ages += ages

    def check(self) -> list[ClockChange]:
        """The sources whose clock state changed in the interval since the last call."""
        now, self._now = self._now, {}
        self.ages_ms = _summary(sorted(age for interval in now.values() for age in interval.ages))
        changes = []
        for source in self._state.keys() | now.keys():
            interval = now.get(source)
            if interval is None:
                self._old_runs[source] = 0
                continue
            runs = self._old_runs[source] = self._old_runs.get(source, 0) + 1 if interval.low > BEHIND_S else 0
            if interval.high < -AHEAD_S:
                state: State = "ahead"
            elif runs >= (1 if self._state.get(source) == "behind" else 2):  # once behind, one old interval keeps it
                state = "behind"
            else:
                state = "agrees"
            offset = self._offset[source] = statistics.median(interval.ages)
            if state != self._state.get(source, "agrees"):
                changes.append(ClockChange(source, state, offset, interval.count))
            self._state[source] = state
        return changes

    def states(self) -> dict[str, State]:
        return dict(self._state)

    def view(self, source: str) -> dict[str, object] | None:
        """For the status document: the source's state and the median age of its last interval with values
        (seconds; below zero its clock is ahead); None before its first judged interval."""
        if source not in self._offset:
            return None
        return {"state": self._state[source], "offsetS": round(self._offset[source], 3)}
