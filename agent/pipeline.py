"""From samples to records: bind each OPC UA item to its AAS element, encode, and commit to the buffers.

Everything here is per batch: one pass over the samples, one `add` per buffer. The constant
part of every record (shell, submodel, idShort path, semanticId, valueType, unit, node) is
encoded once per element at start-up; per value only the value, the two timestamps and the
status are encoded. The common batch (finite Doubles, Good, each element once, no repeat, no open
gap: what a busy server sends all day) takes a column-wise path, `_plain`: a few C-level passes
over the batch's columns instead of a dozen Python steps per value, about half the CPU; any other
batch takes the value-by-value loop, `_each`, whole. tests/test_pipeline_plain.py holds the two to
the same results.

Nothing is dropped silently: a value that does not fit its type goes to the status lane, a Bad
sample travels with `value: null`, the server's queue overflow and batches the disk refused
become gaps (gaps.py), and so do the records the disk quota dropped.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from math import isfinite
from operator import eq, itemgetter
from typing import TYPE_CHECKING, Any, Final

import orjson

from aas_models.live import LiveValues
from adapters.sample import (
    TICKS_AT_UNIX_EPOCH,
    Event,
    Interruption,
    NodeProblem,
    Sample,
    SourceState,
    stamp_datetime,
    stamp_seconds,
)
from agent.committer import AGENT_KEY, Committer
from agent.gaps import AGENT, SERVER, SOURCE, GapBook, Member
from uploader import wire
from uploader.buffer import Buffer, Mark, Row

if TYPE_CHECKING:
    from agent.measure import Measure

log = logging.getLogger(__name__)

# StatusCode InfoBits: InfoType "DataValue" (0x400) with the Overflow bit (0x80): the server's
# queue for this item overflowed and it discarded values (OPC UA Part 4, 7.39.1).
OVERFLOW: Final = 0x480
_BAD_SHOWN = 200  # characters of a value that did not fit, in the status record

# One element's last stored value: (time, status, clock, encoded value or None), the tuple its buffer mark
# is made of (`_mark`). After a restart the value itself may not be known (`_UNKNOWN`), only its digest
# (crc32 of its JSON form, kept apart in `Pipeline._digests`).
_Last = tuple[float, int, str, Any]
_UNKNOWN: Final = object()
_NO_STAMP: Final[_Last] = (float("nan"), -1, "", None)  # `_plain`'s stamp before an element's first value
_time_of = itemgetter(0)
_FLOAT: Final = {float}
_INT: Final = {int}
_TICKS_OR_NONE: Final = frozenset({int, type(None)})


@dataclass(frozen=True, slots=True)
class Binding:
    """One collected item and the AAS element it feeds."""

    handle: int
    source: str
    equipment: str
    shell_id: str
    submodel_id: str
    path: str
    value_type: str
    node: str
    prefix: bytes  # the constant part of every data record of this element
    encode: wire.ValueEncoder
    mark: str  # key of this element's last-stored mark in the buffer
    live_key: tuple[str, str]  # (shell id, path): its key in the live values


@dataclass(frozen=True, slots=True)
class EventBinding:
    handle: int
    source: str
    equipment: str
    shell_id: str
    submodel_id: str
    name: str
    node: str


def make_binding(handle: int, source: str, equipment: str, element: wire.Element) -> Binding:
    return Binding(
        handle,
        source,
        equipment,
        element.shell,
        element.submodel,
        element.path,
        element.value_type,
        element.node,
        prefix=wire.data_prefix(element),
        encode=wire.value_encoder(element.value_type, is_array=element.is_array),
        mark=f"last:{equipment}/{element.path}",
        live_key=(element.shell, element.path),
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _digest(value: Any) -> int:
    return zlib.crc32(orjson.dumps(value))


_MARK_VALUE_BYTES: Final = 160  # a longer mark keeps a digest of the value instead of the value


_SHORT: Final = frozenset({float, int, bool, type(None)})  # encoded values whose mark is always short
_SHORT_TEXT: Final = 24  # characters of a string value that keep its mark short even fully escaped


def _mark(t: float, status: int, clock: str, value: Any) -> Mark:
    """An element's last stored stamp as its buffer mark: `[time, status, clock, value]`, or with a longer
    value `[time, status, clock, null, digest]` (read back by `restore_marks`). A short one is the tuple
    itself: the buffer writes it as JSON with all the others of the add, in one call. (The pipeline keeps
    a value of a `_SHORT` class as the tuple without calling this.)"""
    if value.__class__ is str and len(value) <= _SHORT_TEXT:
        return (t, status, clock, value)
    text = orjson.dumps((t, status, clock, value))
    if len(text) <= _MARK_VALUE_BYTES:
        return text.decode()
    return orjson.dumps((t, status, clock, None, _digest(value))).decode()


def _restored(mark: str) -> tuple[_Last, int | None]:
    """A stamp from its mark, and the digest of its value where the mark keeps only that (a long value, or a
    mark of an earlier version: `time|status|clock|digest`)."""
    if mark.startswith("["):
        t, status, clock, value, *digest = orjson.loads(mark)
        if digest:
            return (float(t), int(status), str(clock), _UNKNOWN), int(digest[0])
        return (float(t), int(status), str(clock), value), None
    t, status, clock, old_digest = mark.split("|")
    return (float(t), int(status), clock, _UNKNOWN), int(old_digest)


def _bad_row(b: Binding, message: str, **extra: Any) -> Row:
    now = _utcnow()
    body = wire.status_body(now, "bad-value", message, shell=b.shell_id, path=b.path, node=b.node, **extra)
    return ("status", b.equipment, now.timestamp(), body)


class Pipeline:
    """Turns adapter callbacks into records in every sink's buffer. Never drops a record silently."""

    def __init__(
        self,
        bindings: Sequence[Binding],
        events: Sequence[EventBinding],
        buffers: Sequence[Buffer],
        live: LiveValues,
        *,
        delays: Callable[[], Iterator[float]],
        store_timeout: float = 10.0,
        gap_wait_s: float = 10.0,
        flush_s: float = 60.0,
        on_stored: Callable[[], None] = lambda: None,
        lanes: Sequence[frozenset[str] | None] = (),
        measure: Measure | None = None,
        on_received: Callable[[str, tuple[float, float]], None] | None = None,
    ) -> None:
        self.measure = measure
        # (source, ages of a notification's first and last stored value on arrival, in seconds): one call per
        # batch, so how late values reach the agent (the server's sampling and publishing, and its clock) shows.
        self.on_received = on_received
        self._watch = measure.watch if measure is not None else {}
        self._interrupted: dict[str, tuple[datetime, str]] = {}  # source -> start and reason of its open interruption
        self.buffers = tuple(buffers)
        self.live = live
        self._flush_s = flush_s
        self.gaps = GapBook({}, wait_s=gap_wait_s)
        self._bind(bindings, events)
        self.committer = Committer(
            self.buffers,
            delays=delays,
            timeout=store_timeout,
            report_s=flush_s,
            quota_report=self._quota_rows,
            on_stored=on_stored,
            lanes=lanes,
        )
        self._last_flush = 0.0
        # A resubscribe or restart re-reports each current value with its old source time: that is
        # a repeat, not a new value, when time, status and value are the same.
        self.last: dict[int, _Last] = {}
        self._digests: dict[int, int] = {}  # handle -> digest of its last value, where `last` has `_UNKNOWN`
        self._bad: dict[int, list[Any]] = {}  # handle -> [values not fitting since the last report, first time]
        self.on_mismatch: Callable[[str, int], None] | None = None  # (source, handle): a value did not fit
        self.repeats = 0
        self.values_in = 0
        self.bad_values = 0
        self.not_stored = 0  # values of batches no buffer took (each reported in a gap record)
        self.problems: dict[int, tuple[NodeProblem, datetime]] = {}  # handle -> the last problem reported, when
        self.null_values = 0

    def _bind(self, bindings: Sequence[Binding], events: Sequence[EventBinding]) -> None:
        self.bindings: dict[int, Binding] = {b.handle: b for b in bindings}
        self.events: dict[int, EventBinding] = {e.handle: e for e in events}
        # Each shell's recent records (Time Series Data, aas_models/timeseries.py): handle -> its shell's ring,
        # for the elements the records carry. Per stored value one append of plain values, no SDK work.
        self._ring_of = {
            b.handle: ring
            for b in bindings
            if (ring := self.live.series.get(b.shell_id)) is not None and b.path in ring.variables
        }
        self._series = {h: ring.values.append for h, ring in self._ring_of.items()}
        # The elements of plain Doubles (`_plain`): handle -> each of what their records and stamps need.
        floats = [b for b in bindings if b.encode is wire.encode_float]
        self._equipment_of = {b.handle: b.equipment for b in floats}
        self._prefix_of = {b.handle: b.prefix for b in floats}
        self._mark_of = {b.handle: b.mark for b in floats}
        self._live_of = {b.handle: b.live_key for b in floats}
        self._rings = tuple({id(ring): ring for ring in self._ring_of.values()}.values())
        # Each ring's elements, for `_plain`: a batch of one ring's elements goes in with one C-level extend.
        self._ring_path = {h: self.bindings[h].path for h in self._ring_of}
        self._ring_members = [
            (ring.values.extend, frozenset(h for h, r in self._ring_of.items() if r is ring)) for ring in self._rings
        ]
        members = {
            b.handle: Member(b.source, b.equipment, b.shell_id, b.submodel_id, b.path, f"open:{b.equipment}/{b.path}")
            for b in bindings
        }
        members |= {
            e.handle: Member(
                e.source, e.equipment, e.shell_id, e.submodel_id, e.name, f"open:{e.equipment}!{e.name}", True
            )
            for e in events
        }
        # Members of removed elements stay: their accumulated losses are still written with their names.
        self.gaps.members = {**self.gaps.members, **members}

    async def reconfigure(
        self,
        bindings: Sequence[Binding],
        events: Sequence[EventBinding],
        buffers: Sequence[Buffer],
        lanes: Sequence[frozenset[str] | None],
        reason: str,
    ) -> list[int]:
        """A reload: collect into `bindings` and `events` from now on, storing to `buffers`. Every element no
        longer configured ends with a final `element-removed` status record (its open gap, if any, is written
        first, ending now); returns their handles. Everything else keeps its last value, marks and gaps."""
        kept = {b.handle for b in bindings} | {e.handle for e in events}
        removed = [h for h in [*self.bindings, *self.events] if h not in kept]
        now = _utcnow()
        rows: list[Row] = []
        for h in removed:
            if h in self._bad:
                self._settle_bad(self.bindings[h], rows)
            b = self.bindings.get(h)
            last = self.last.get(h)
            where: dict[str, Any]
            if b is not None:
                where = {"shell": b.shell_id, "path": b.path, "node": b.node}
                key = b.equipment
            else:
                ev = self.events[h]
                where = {"shell": ev.shell_id, "eventSource": ev.name, "node": ev.node}
                key = ev.equipment
            if last is not None:
                where["lastValueTime"] = datetime.fromtimestamp(last[0], UTC)
            body = wire.status_body(now, "element-removed", f"no longer collected: {reason}", **where)
            rows.append(("status", key, now.timestamp(), body))
            self.last.pop(h, None)
            self._digests.pop(h, None)
            self.problems.pop(h, None)
        records = self.gaps.close(removed, now)
        if records:
            self.committer.hold_gaps(records)
        self._bind(bindings, events)  # from here on, a late value of a removed element is not stored
        if self.measure is not None:
            self._watch = self.measure.watch
        await self.store(rows)  # into the sinks that carried these elements, not into new ones
        self.buffers = tuple(buffers)
        await self.committer.reconfigure(self.buffers, lanes)
        return removed

    # -- adapter callbacks ----------------------------------------------------------------------

    async def on_samples(self, samples: Sequence[Sample]) -> None:
        now = _utcnow().timestamp()
        plain = self._plain(samples)
        before: Sequence[_Last | None]
        if plain is not None:
            rows, marks, before, seen_h, seen_t = plain
            closing = False
        else:
            rows, marks, before, seen_h, seen_t, closing = self._each(samples, now)
        if seen_h:
            for ring in self._rings:
                ring.touch(now)
            if self.measure is not None:
                self.measure.stats.values_each(seen_h, seen_t)
            if self.on_received is not None:
                self.on_received(self.bindings[seen_h[0]].source, (now - seen_t[0], now - seen_t[-1]))
        self.values_in += len(samples)
        if not await self.store(rows, marks):
            # Each element's stamp before its first value of this batch (reversed: the first one wins).
            firsts = (None if p is _NO_STAMP else p for p in reversed(before))
            self._not_stored(samples, dict(zip(reversed(seen_h), firsts, strict=True)))
        if closing:
            await self.flush()

    def _plain(
        self, samples: Sequence[Sample]
    ) -> tuple[list[Row], dict[str, Mark], Sequence[_Last | None], Sequence[int], list[float]] | None:
        """The common batch, in a few C-level passes over its columns instead of a step per value: every value a
        finite Double of a Double element, Good, with source ticks (server ticks or none), each element once,
        none with a gap open or a value reported unfit, and no element's last stamp at the same source time
        (so nothing in it is a repeat). Gives what `_each` gives for it (its rows, marks, the stamps before
        them with `_NO_STAMP` for none, handles and times), having done what `_each` does; None for any other
        batch, untouched, for `_each`. tests/test_pipeline_plain.py holds the two to the same results."""
        n = len(samples)
        if not n:
            return None
        handles, values, sources, servers, statuses = zip(*samples, strict=True)
        if (
            any(statuses)
            or set(map(type, values)) != _FLOAT
            or not isfinite(sum(values))  # an inf or NaN makes the sum one (and an overflow: then `_each`)
            or set(map(type, sources)) != _INT
            or not _TICKS_OR_NONE.issuperset(map(type, servers))
        ):
            return None
        unique = set(handles)
        if (
            len(unique) != n
            or not self._mark_of.keys() >= unique
            or (self._bad and not self._bad.keys().isdisjoint(unique))
            or (self.gaps.open and not self.gaps.open.keys().isdisjoint(unique))
        ):
            return None
        # As `_each` converts, once per distinct time (a server stamping a scan with one: few; when every value has
        # its own, this costs what C-level passes over the numbers cost, 144 against 149 ns per value).
        seconds = {t: (t - TICKS_AT_UNIX_EPOCH) // 10 / 1e6 for t in set(sources)}
        times = list(map(seconds.__getitem__, sources))
        last = self.last
        before: list[_Last] = list(map(last.get, handles, repeat(_NO_STAMP)))
        if any(map(eq, times, map(_time_of, before))):
            return None  # maybe a repeat: `_each` decides
        stamps: list[_Last] = list(zip(times, repeat(0), repeat(SOURCE), values, strict=False))
        last.update(zip(handles, stamps, strict=True))
        marks: dict[str, Mark] = dict(zip(map(self._mark_of.__getitem__, handles), stamps, strict=True))
        tails = wire.float_tails(values, sources, servers)
        equipment = map(self._equipment_of.__getitem__, handles)
        bodies = zip(map(self._prefix_of.__getitem__, handles), tails, strict=True)
        rows: list[Row] = list(zip(repeat("data"), equipment, times, bodies, strict=False))
        self.live.store_many(zip(map(self._live_of.__getitem__, handles), values, strict=True))
        series = self._series
        if series:
            for extend, members in self._ring_members:
                if members >= unique:  # the whole batch is this ring's
                    extend(zip(times, map(self._ring_path.__getitem__, handles), values, strict=True))
                    break
            else:
                for h, t, v in zip(handles, times, values, strict=True):
                    add = series.get(h)
                    if add is not None:
                        add((t, self._ring_path[h], v))
        watch = self._watch
        if watch and not watch.keys().isdisjoint(unique):
            for h, t, v in zip(handles, times, values, strict=True):
                if h in watch:
                    for analyzer, role in watch[h]:
                        analyzer.observe(role, v, t)
        return rows, marks, before, handles, times

    def _each(
        self, samples: Sequence[Sample], now: float
    ) -> tuple[list[Row], dict[str, Mark], list[_Last | None], list[int], list[float], bool]:
        """Any batch, value by value: its rows and marks, each stored value's element's stamp before it, the
        handles and times of the stored values, and whether a value of an element with an open gap came."""
        rows: list[Row] = []
        append = rows.append
        bindings = self.bindings
        update = self.live.store
        bad = self._bad
        series = self._series.get
        data_tail = wire.data_tail
        last = self.last
        opened = self.gaps.open
        closing = False  # a value of an element with an open gap arrived
        before: list[_Last | None] = []  # each stored value's element's stamp before it, in the order of seen_h
        keep_before = before.append
        marks: dict[str, Mark] = {}  # each stored element's stamp, as its buffer mark
        mark = _mark
        repeats = 0
        watch = self._watch
        seen_h: list[int] = []
        seen_t: list[float] = []
        seen_handle, seen_time = seen_h.append, seen_t.append
        encode_float = wire.encode_float
        short = _SHORT
        unix_ticks = TICKS_AT_UNIX_EPOCH
        for s in samples:
            h, v, st, server_time, status = s  # a tuple's fields: cheaper than its attributes
            b = bindings.get(h)
            if b is None:
                continue
            if st is not None:
                when, clock = st, SOURCE
            elif server_time is not None:
                when, clock = server_time, SERVER
            else:
                when, clock = None, AGENT
            # Raw OPC UA ticks (adapters/sample.py: Stamp) or a datetime: `stamp_seconds` without the call.
            if when.__class__ is int:
                t = (when - unix_ticks) // 10 / 1e6
            else:
                t = now if when is None else when.timestamp()  # type: ignore[union-attr]
            if v is None:
                value = None
                self.null_values += 1
            elif v.__class__ is float and v - v == 0.0 and b.encode is encode_float:
                value = v  # a finite Double: what encode_float gives, without the call
            else:
                try:
                    value = b.encode(v)
                except (wire.WireValueError, TypeError, ValueError) as exc:
                    self._bad_value(b, s, exc, rows)
                    continue
            if bad and h in bad:
                self._settle_bad(b, rows)
            prev = last.get(h)
            if opened and h in opened:
                self.gaps.seen(h, (t, clock))
                closing = True
            if prev is not None and clock == SOURCE and prev[0] == t and prev[1] == status:
                if prev[3] is _UNKNOWN:
                    if self._digests.get(h) == _digest(value):
                        repeats += 1
                        continue
                elif prev[3] == value:
                    repeats += 1
                    continue
            if status & OVERFLOW == OVERFLOW:
                self._series_gap((h,), "the server's queue overflowed: it discarded values")
                start = prev[0] if prev is not None and prev[2] == clock else None
                self.gaps.accumulate(
                    "overflow", "the server's queue overflowed: it discarded values", h, start, t, clock
                )
            keep_before(prev)
            last[h] = stamp = (t, status, clock, value)
            marks[b.mark] = stamp if value.__class__ in short else mark(t, status, clock, value)
            append(("data", b.equipment, t, (b.prefix, data_tail(value, st, server_time, status))))
            update(b.live_key, v)
            add = series(h)
            if add is not None:
                add((t, b.path, v))
            seen_handle(h)
            seen_time(t)
            if h in watch:
                for analyzer, role in watch[h]:
                    analyzer.observe(role, v, t)
        self.repeats += repeats
        return rows, marks, before, seen_h, seen_t, closing

    def _not_stored(self, samples: Sequence[Sample], before: dict[int, _Last | None]) -> None:
        """A batch no buffer took: its values are lost; each element's range becomes a gap."""
        log.error("%d values could not be stored (the disk refuses); they are reported as a gap", len(samples))
        self.not_stored += len(samples)
        for h, prev in before.items():  # what was not stored is not the last stored value
            if prev is None:
                self.last.pop(h, None)
            else:
                self.last[h] = prev
        now = _utcnow().timestamp()
        reason = f"values could not be stored: {self.committer.last_error}"
        for s in samples:
            if s.handle not in self.bindings:
                continue
            when = stamp_seconds(s.source_time if s.source_time is not None else s.server_time)
            t, clock = (when, SOURCE if s.source_time is not None else SERVER) if when is not None else (now, AGENT)
            prev = self.last.get(s.handle)
            start = prev[0] if prev is not None and prev[2] == clock else None
            self.gaps.accumulate("not-stored", reason, s.handle, start, t, clock, lost=1)

    async def on_events(self, events: Sequence[Event]) -> None:
        rows: list[Row] = []
        for ev in events:
            b = self.events.get(ev.handle)
            if b is None:
                continue
            body = wire.event_body(shell=b.shell_id, source=b.name, node=b.node, time=ev.time, fields=ev.fields)
            rows.append(("event", b.equipment, ev.time.timestamp(), body))
        if not await self.store(rows):
            for ev in events:
                t = ev.time.timestamp()
                self.gaps.accumulate(
                    "not-stored", "events could not be stored: the disk refused", ev.handle, t, t, SOURCE, lost=1
                )

    async def on_interruption(self, i: Interruption) -> None:
        """Begin (`end` None): open the elements' gaps, durably. End: their gap records follow their first values."""
        if i.end is None:
            marks = self.gaps.begin(i.handles, i.start, i.reason, {h: (v[0], v[2]) for h, v in self.last.items()})
            self._series_gap(i.handles, i.reason)
            await self.store([], marks)
            if self.measure is not None and i.source not in self._interrupted:
                self._interrupted[i.source] = (i.start, i.reason)
                self.measure.interrupted(i.source, i.start, None, i.reason)
        else:
            self.gaps.end(i.source, i.end)
            await self.flush()
            if self.measure is not None and (began := self._interrupted.pop(i.source, None)) is not None:
                self.measure.interrupted(i.source, began[0], i.end, began[1])

    def _series_gap(self, handles: Iterable[int], reason: str) -> None:
        """Values of these elements are missing: their shells' recent records start a new segment, so the gap
        shows there too (and no value is invented across it)."""
        now = _utcnow().timestamp()
        for ring in {id(r): r for h in handles if (r := self._ring_of.get(h)) is not None}.values():
            ring.gap(now, reason)

    async def on_problem(self, p: NodeProblem) -> None:
        self.problems[p.handle] = (p, _utcnow())
        b = self.bindings.get(p.handle)
        where = {"shell": b.shell_id, "path": b.path} if b is not None else {}
        body = wire.status_body(_utcnow(), p.kind, p.problem, node=p.node, **where)
        await self.store([("status", b.equipment if b is not None else AGENT_KEY, _utcnow().timestamp(), body)])

    async def on_state(self, s: SourceState) -> None:
        if self.measure is not None:
            self.measure.connection(s.source, s.state == "connected", s.time)
        await self.status(f"source-{s.state}", f"{s.source}: {s.detail}")

    async def status(self, kind: str, message: str, **extra: Any) -> None:
        body = wire.status_body(_utcnow(), kind, message, **extra)
        await self.store([("status", AGENT_KEY, _utcnow().timestamp(), body)])

    async def usage(self, records: Sequence[tuple[str, float, bytes]]) -> bool:
        """Records of the usage spool (agent/usage.py): rows (lane, time, body), lane "usage" or "status"
        (a control write's outcome); False if a buffer could not store them."""
        return await self.store([(lane, AGENT_KEY, ts, body) for lane, ts, body in records])

    def latest(self, handle: int) -> tuple[float, int, Any, bool] | None:
        """An element's last stored value: (time, status, value in its JSON form, known); after a restart
        only the value's digest survives until the next one arrives, and `known` is False."""
        last = self.last.get(handle)
        if last is None:
            return None
        t, status, _, value = last
        return (t, status, None, False) if value is _UNKNOWN else (t, status, value, True)

    def restore_marks(self) -> None:
        """After a restart: each element's last stored stamp, and the gaps an earlier run left open."""
        if not self.buffers:
            return
        marks = self.buffers[0].marks()
        by_mark = {b.mark: h for h, b in self.bindings.items()}
        for key, value in marks.items():
            h = by_mark.get(key)
            if h is None:
                continue
            try:
                self.last[h], digest = _restored(value)
            except (ValueError, TypeError):
                continue
            if digest is not None:
                self._digests[h] = digest
        self.gaps.restore(marks)

    async def stopping(self, handles_by_source: dict[str, tuple[int, ...]], reason: str) -> None:
        """Collection stops (a clean stop): every element's gap opens from its last stored value and is
        written now with `end: null`, so the stream says what will be missing until the next start."""
        now = _utcnow()
        for source, handles in handles_by_source.items():
            await self.on_interruption(Interruption(source, handles, now, None, reason))
        records = self.gaps.provisional(now)
        if records:
            self.committer.hold_gaps(records)
            await self.store([])

    # -- periodic -------------------------------------------------------------------------------

    async def flush(self, *, everything: bool = False) -> None:
        """Write gap records that are due, and (every `flush_s`, or when `everything`) accumulated ones."""
        now = _utcnow().timestamp()
        records = self.gaps.due(now, everything=everything)
        if everything or now - self._last_flush >= self._flush_s:
            self._last_flush = now
            records += self.gaps.accumulated()
            rows: list[Row] = []
            for h, b in list(self.bindings.items()):
                if h in self._bad and self._bad[h][0]:
                    self._settle_bad(b, rows)
            if rows:
                await self.store(rows)
        if records:
            self.committer.hold_gaps(records)
            await self.store([])

    # -- records --------------------------------------------------------------------------------

    def _bad_value(self, b: Binding, s: Sample, exc: Exception, rows: list[Row]) -> None:
        """The first value of an element that does not fit is reported at once; later ones are counted."""
        self.bad_values += 1
        entry = self._bad.get(b.handle)
        if entry is not None:
            entry[0] += 1
            entry[2] = s.value
            return
        self._bad[b.handle] = [0, stamp_datetime(s.source_time), s.value]
        # The value is kept (as text) on the status lane: a wrong type is reported, not lost.
        shown = repr(s.value)[:_BAD_SHOWN]
        log.warning(
            "%s %s: value %s does not fit %s: %s", b.equipment, b.path, shown, b.value_type, exc,
            extra={"source": b.source, "machine": b.equipment, "path": b.path, "node": b.node},
        )  # fmt: skip
        source_time = stamp_datetime(s.source_time)
        rows.append(_bad_row(b, f"value {shown} does not fit {b.value_type}: {exc}", sourceTime=source_time))
        if self.on_mismatch is not None:
            self.on_mismatch(b.source, b.handle)  # the node may have changed type on the server

    def _settle_bad(self, b: Binding, rows: list[Row]) -> None:
        count, since, latest = self._bad.pop(b.handle)
        if count:
            latest_shown = repr(latest)[:_BAD_SHOWN]
            message = f"{count} more values did not fit {b.value_type} since {since}; latest {latest_shown}"
            rows.append(_bad_row(b, message, count=count))

    def _quota_rows(self, drops: dict[str, tuple[int, float, float]]) -> list[Row]:
        rows: list[Row] = []
        for key, (count, first, last) in drops.items():
            members = [b for b in self.bindings.values() if b.equipment == key]
            start, end = datetime.fromtimestamp(first, UTC), datetime.fromtimestamp(last, UTC)
            if not members:
                continue
            elements = [wire.GapElement(b.path, start, end, "records") for b in members]
            reason = f"disk quota reached: {count} oldest records dropped"
            body = wire.gap_body(
                shell=members[0].shell_id, submodel=members[0].submodel_id, start=start, end=end, reason=reason,
                elements=elements, lost=count,
            )  # fmt: skip
            rows.append(("gap", key, first, body))
            log.warning("buffer quota: dropped %d oldest records of %s (%s .. %s)", count, key, start, end)
        return rows

    # -- storing --------------------------------------------------------------------------------

    async def store(self, rows: list[Row], marks: Mapping[str, Mark] | None = None) -> bool:
        """Commit rows (and marks) to every buffer (committer.py); False if data or event rows were lost."""
        return await self.committer.commit(rows, marks)
