"""Gaps: where collection was interrupted, per element, in that element's own clock.

The invariant (docs/operations.md): for every element, every value the server produced is either
delivered or inside a gap record for that element. Devices and servers keep their own clocks, so
the bounds of an element's gap are taken from that element's own timestamps: from its last stored
value to its first value after the interruption, each by `sourceTime`, else `serverTime`, else the
agent's receive time; the gap says which clock it used.

How an interruption becomes a gap record, durably:
1. `begin` (the connection was lost, or the agent starts after a stop or crash): every element
   of the source is *opened*: its start is its last stored stamp (or, if it never had a value,
   the agent time the interruption began). The open starts are saved as buffer marks
   (`open:<equipment>/<path>`) before anything else is stored, so a crash from here on still
   knows where each element's gap starts; an element already open keeps its earlier start.
2. values keep arriving, or start arriving again: the first one of each open element gives that
   element's end (a re-reported repeat counts: nothing between was missed).
3. `end` (reconnected): a pending gap for the open elements; when every element has its first
   value, or `wait_s` has passed, one record per machine is written, and in the same buffer
   transaction the open marks are cleared. An element with no value by then has `end: null`:
   "until its next value".

Runs of the same kind of loss that happen value by value (the server's queue overflowed, the disk
quota dropped records, the disk refused a batch) are *accumulated* per machine and element
instead (one growing record per episode, not one per publish) and written when the episode ends,
at least every `flush_s`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import orjson

from uploader import wire

SOURCE: Final = "source"
SERVER: Final = "server"
AGENT: Final = "agent"

Stamp = tuple[float, str]
"""(epoch seconds, clock) of one value."""


def _dt(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


@dataclass(frozen=True, slots=True)
class Member:
    """What the gap book needs to know of a mapped element or an event source."""

    source: str  # the adapter source it is collected from
    equipment: str
    shell: str
    submodel: str
    path: str  # idShort path, or the event source's name
    mark: str  # buffer mark key of its open start
    is_event: bool = False


@dataclass(slots=True)
class _Pending:
    end: datetime
    due: float  # time.time() after which it is written with whatever ends it has
    handles: set[int]


@dataclass(frozen=True, slots=True)
class _Open:
    """Where an open element's gap starts (its own clock), and when and why it began (the agent's)."""

    t: float
    clock: str
    since: float
    reason: str


@dataclass(slots=True)
class _Accumulated:
    """Merged element ranges of one kind of loss on one machine."""

    reason: str
    start: float
    end: float
    elements: dict[int, list[float | str | None]] = field(default_factory=dict)  # handle -> [start, end, clock]
    lost: int = 0


@dataclass(slots=True)
class GapRecord:
    equipment: str
    ts: float
    body: bytes
    clears: list[str]  # open marks to clear in the same transaction


class GapBook:
    def __init__(self, members: dict[int, Member], *, wait_s: float = 10.0) -> None:
        self.members = members
        self.wait_s = wait_s
        self.open: dict[int, _Open] = {}  # handle -> where its gap starts
        self.first: dict[int, Stamp] = {}  # handle -> its first value since it was opened
        self._pending: list[_Pending] = []
        self._acc: dict[tuple[str, str], _Accumulated] = {}

    # -- interruptions ---------------------------------------------------------------------------

    def begin(self, handles: Iterable[int], since: datetime, reason: str, last: dict[int, Stamp]) -> dict[str, str]:
        """Open these elements; returns the marks to save (before any later value is stored).

        An element already open keeps its earlier start and reason.
        """
        marks: dict[str, str] = {}
        for h in handles:
            m = self.members.get(h)
            if m is None or h in self.open:
                continue
            stamp = last.get(h) if not m.is_event else None
            t, clock = stamp if stamp is not None else (since.timestamp(), AGENT)
            self.open[h] = o = _Open(t, clock, since.timestamp(), reason)
            self.first.pop(h, None)
            marks[m.mark] = orjson.dumps([o.t, o.clock, o.since, o.reason]).decode()
        return marks

    def restore(self, marks: dict[str, str]) -> None:
        """After a restart: the open starts saved by an earlier run."""
        by_mark = {m.mark: h for h, m in self.members.items()}
        for key, value in marks.items():
            h = by_mark.get(key)
            if h is None or not value:
                continue
            try:
                t, clock, since, reason = orjson.loads(value)
                self.open[h] = _Open(float(t), str(clock), float(since), str(reason))
            except (ValueError, TypeError):
                continue

    def seen(self, h: int, stamp: Stamp) -> None:
        """A value of an open element arrived (stored or a repeat)."""
        if h not in self.first:
            self.first[h] = stamp

    def end(self, source: str, end: datetime) -> None:
        """The interruption of `source` is over: the gap of each of its open elements is written once
        that element's first value arrived (an element no longer collected, e.g. removed from the
        server, gets `end: null` after `wait_s`)."""
        waiting = {h for p in self._pending for h in p.handles}
        chosen = {h for h in self.open if self.members[h].source == source and h not in waiting}
        if chosen:
            self._pending.append(_Pending(end, time.time() + self.wait_s, chosen))

    def due(self, now: float, *, everything: bool = False) -> list[GapRecord]:
        """Records for pending gaps that are complete or timed out (all of them if `everything`)."""
        out: list[GapRecord] = []
        keep: list[_Pending] = []
        for p in self._pending:
            live = {h for h in p.handles if h in self.open}
            if not live:
                continue
            complete = all(h in self.first or self.members[h].is_event for h in live)
            if not (complete or everything or now >= p.due):
                keep.append(p)
                continue
            out += self._records(p, live, clear=True)
            for h in live:
                del self.open[h]
                self.first.pop(h, None)
        self._pending = keep
        return out

    def _records(self, p: _Pending, handles: set[int], *, clear: bool) -> list[GapRecord]:
        by_machine: dict[str, list[int]] = {}
        for h in sorted(handles):
            by_machine.setdefault(self.members[h].equipment, []).append(h)
        out = []
        for equipment, hs in by_machine.items():
            elements, events = [], []
            for h in hs:
                m = self.members[h]
                if m.is_event:
                    events.append(m.path)
                    continue
                o = self.open[h]
                t1 = self.first.get(h)
                end_clock = t1[1] if t1 is not None and t1[1] != o.clock else None
                elements.append(wire.GapElement(m.path, _dt(o.t), _dt(t1[0]) if t1 else None, o.clock, end_clock))
            first = min((self.open[h] for h in hs), key=lambda o: o.since)
            m0 = self.members[hs[0]]
            start = datetime.fromtimestamp(first.since, UTC)
            body = wire.gap_body(
                shell=m0.shell, submodel=m0.submodel, start=start, end=p.end, reason=first.reason,
                elements=elements, events=events,
            )  # fmt: skip
            clears = [self.members[h].mark for h in hs] if clear else []
            out.append(GapRecord(equipment, first.since, body, clears))
        return out

    def close(self, handles: Iterable[int], end: datetime) -> list[GapRecord]:
        """Elements no longer collected (a reload removed them): the open gap of each is written now, ending
        at `end` (its element's end stays null: no value of it will come)."""
        chosen = {h for h in handles if h in self.open}
        if not chosen:
            return []
        out = self._records(_Pending(end, 0.0, chosen), chosen, clear=True)
        for h in chosen:
            del self.open[h]
            self.first.pop(h, None)
        return out

    def provisional(self, end: datetime) -> list[GapRecord]:
        """Records for every element still open, as they stand (`end: null` where no value came yet),
        without closing them: for a clean stop, so a receiver knows before the next start what it
        will not get. The next start writes the final record of the same gap."""
        chosen = set(self.open)
        return self._records(_Pending(end, 0.0, chosen), chosen, clear=False) if chosen else []

    # -- losses value by value --------------------------------------------------------------------

    def accumulate(
        self, kind: str, reason: str, h: int, start: float | None, end: float, clock: str, *, lost: int = 0
    ) -> None:
        """Element `h` lost values between `start` (None: unknown) and `end`, in `clock`; `lost` counts known ones."""
        m = self.members.get(h)
        if m is None:
            return
        acc = self._acc.get((kind, m.equipment))
        low = end if start is None else start
        if acc is None:
            acc = self._acc[(kind, m.equipment)] = _Accumulated(reason, low, end)
        acc.start, acc.end, acc.lost = min(acc.start, low), max(acc.end, end), acc.lost + lost
        el = acc.elements.get(h)
        if el is None:
            acc.elements[h] = [start, end, clock]
        else:
            s0 = el[0]
            el[0] = None if s0 is None or start is None else min(float(s0), start)
            el[1] = max(float(el[1] or end), end)

    def accumulated(self, kinds: Sequence[str] | None = None) -> list[GapRecord]:
        """Records for everything accumulated (of `kinds`), emptying it."""
        out: list[GapRecord] = []
        for key in [k for k in self._acc if kinds is None or k[0] in kinds]:
            acc = self._acc.pop(key)
            first = self.members[next(iter(acc.elements))]
            elements = [
                wire.GapElement(
                    self.members[h].path, _dt(float(s) if s is not None else None), _dt(float(e or 0)), str(c)
                )
                for h, (s, e, c) in sorted(acc.elements.items())
            ]
            start, end = _dt(acc.start), _dt(acc.end)
            assert start is not None and end is not None
            body = wire.gap_body(
                shell=first.shell, submodel=first.submodel, start=start, end=end, reason=acc.reason,
                elements=elements, lost=acc.lost or None,
            )  # fmt: skip
            out.append(GapRecord(first.equipment, acc.start, body, []))
        return out

    def accumulating(self) -> set[str]:
        """Kinds with something accumulated."""
        return {kind for kind, _ in self._acc}
