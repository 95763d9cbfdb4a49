"""From samples to records: bind each OPC UA item to its AAS element, encode, and commit to the buffers.

Everything here is per batch: one pass over the samples, one `add` per buffer. The constant
part of every record (shell, submodel, idShort path, semanticId, valueType, unit, node) is
encoded once per element at start-up; per value only the value, the two timestamps and the
status are encoded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aas_models.live import LiveValues
from adapters.sample import Event, Interruption, NodeProblem, Sample, SourceState
from uploader import wire
from uploader.buffer import Buffer, BufferError, Dropped, Row

log = logging.getLogger(__name__)

AGENT_KEY = "_agent"


@dataclass(frozen=True, slots=True)
class Binding:
    """One collected item and the AAS element it feeds."""

    handle: int
    equipment: str
    shell_id: str
    submodel_id: str
    path: str
    value_type: str
    node: str
    prefix: bytes  # the constant part of every data record of this element
    encode: wire.ValueEncoder
    mark: str  # key of this element's last-source-time mark in the buffer


@dataclass(frozen=True, slots=True)
class EventBinding:
    handle: int
    equipment: str
    shell_id: str
    name: str
    node: str


def make_binding(
    handle: int,
    equipment: str,
    element: wire.Element,
) -> Binding:
    return Binding(
        handle,
        equipment,
        element.shell,
        element.submodel,
        element.path,
        element.value_type,
        element.node,
        prefix=wire.data_prefix(element),
        encode=wire.value_encoder(element.value_type, is_array=element.is_array),
        mark=f"last:{equipment}/{element.path}",
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _epoch(t: datetime | None) -> float:
    return t.timestamp() if t is not None else _utcnow().timestamp()


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
        store_timeout: float = 30.0,
        on_stored: Callable[[], None] = lambda: None,
    ) -> None:
        self.bindings: dict[int, Binding] = {b.handle: b for b in bindings}
        self.events: dict[int, EventBinding] = {e.handle: e for e in events}
        self.buffers = tuple(buffers)
        self.live = live
        self._delays = delays
        self._store_timeout = store_timeout
        self._on_stored = on_stored
        self._held: list[list[Row]] = [[] for _ in self.buffers]  # per buffer: protected rows not stored yet
        # (source time as epoch seconds, status) last stored per handle: a resubscribe or restart
        # re-reports the current value with its old source time, which is a repeat, not a new value.
        self.last: dict[int, tuple[float, int]] = {}
        self.repeats = 0
        self.values_in = 0
        self.bad_values = 0

    # -- adapter callbacks ----------------------------------------------------------------------

    async def on_samples(self, samples: Sequence[Sample]) -> None:
        rows: list[Row] = []
        append = rows.append
        bindings = self.bindings
        update = self.live.update
        data_body = wire.data_body
        bad: list[Row] = []
        last = self.last
        marks: dict[str, tuple[float, int]] = {}
        repeats = 0
        now = _utcnow().timestamp()
        for s in samples:
            b = bindings.get(s.handle)
            if b is None:
                continue
            st = s.source_time
            if st is not None:
                t = st.timestamp()
                stamp = (t, s.status)
                if last.get(s.handle) == stamp:
                    repeats += 1
                    continue
                last[s.handle] = marks[b.mark] = stamp
            else:
                t = s.server_time.timestamp() if s.server_time is not None else now
            try:
                value = b.encode(s.value)
            except (wire.WireValueError, TypeError, ValueError) as exc:
                bad.append(self._bad_value_row(b, s, exc))
                continue
            append(("data", b.equipment, t, data_body(b.prefix, value, st, s.server_time, s.status)))
            update(b.shell_id, b.path, s.value)
        if bad:
            self.bad_values += len(bad)
            rows.extend(bad)
        self.values_in += len(samples)
        self.repeats += repeats
        await self.store(rows, {k: f"{t!r}|{status}" for k, (t, status) in marks.items()})

    async def on_events(self, events: Sequence[Event]) -> None:
        rows: list[Row] = []
        for ev in events:
            b = self.events.get(ev.handle)
            if b is None:
                continue
            body = wire.event_body(shell=b.shell_id, source=b.name, node=b.node, time=ev.time, fields=ev.fields)
            rows.append(("event", b.equipment, ev.time.timestamp(), body))
        await self.store(rows)

    async def on_interruption(self, i: Interruption) -> None:
        await self.store(self.gap_rows(i.handles, i.start, i.end, i.reason))

    async def on_problem(self, p: NodeProblem) -> None:
        b = self.bindings.get(p.handle)
        where = {"shell": b.shell_id, "path": b.path} if b is not None else {}
        body = wire.status_body(_utcnow(), "node-problem", p.problem, node=p.node, **where)
        await self.store([("status", b.equipment if b is not None else AGENT_KEY, _utcnow().timestamp(), body)])

    async def on_state(self, s: SourceState) -> None:
        await self.status(f"source-{s.state}", f"{s.source}: {s.detail}")

    async def status(self, kind: str, message: str, **extra: Any) -> None:
        body = wire.status_body(_utcnow(), kind, message, **extra)
        await self.store([("status", AGENT_KEY, _utcnow().timestamp(), body)])

    def restore_marks(self) -> None:
        """Load each element's last stored (source time, status) from the buffer, after a restart."""
        if not self.buffers:
            return
        by_mark = {b.mark: h for h, b in self.bindings.items()}
        for key, value in self.buffers[0].marks().items():
            h = by_mark.get(key)
            if h is None:
                continue
            try:
                t, status = value.rsplit("|", 1)
                self.last[h] = (float(t), int(status))
            except ValueError:
                continue

    # -- records --------------------------------------------------------------------------------

    def gap_rows(
        self, handles: Sequence[int], start: datetime, end: datetime, reason: str, *, dropped: int | None = None
    ) -> list[Row]:
        by_element: dict[tuple[str, str, str], list[str]] = {}
        for h in handles:
            b = self.bindings.get(h)
            if b is not None:
                by_element.setdefault((b.equipment, b.shell_id, b.submodel_id), []).append(b.path)
        return [
            (
                "gap",
                equipment,
                start.timestamp(),
                wire.gap_body(
                    shell=shell, submodel=submodel, paths=paths, start=start, end=end, reason=reason, dropped=dropped
                ),
            )
            for (equipment, shell, submodel), paths in by_element.items()
        ]

    def _bad_value_row(self, b: Binding, s: Sample, exc: Exception) -> Row:
        # The value is kept (as text) on the status lane: a wrong type is reported, not lost.
        log.warning("%s %s: value %r does not fit %s: %s", b.equipment, b.path, s.value, b.value_type, exc)
        body = wire.status_body(
            _utcnow(),
            "bad-value",
            f"value {s.value!r} does not fit {b.value_type}: {exc}",
            shell=b.shell_id,
            path=b.path,
            node=b.node,
            sourceTime=s.source_time,
        )
        return ("status", b.equipment, _epoch(s.source_time), body)

    def _dropped_rows(self, dropped: Dropped) -> list[Row]:
        rows: list[Row] = []
        for key, (count, first, last) in dropped.by_key.items():
            handles = [b.handle for b in self.bindings.values() if b.equipment == key]
            start = datetime.fromtimestamp(first, UTC)
            end = datetime.fromtimestamp(last, UTC)
            reason = f"disk quota reached: {count} oldest records dropped"
            rows += self.gap_rows(handles, start, end, reason, dropped=count)
            log.warning("buffer quota: dropped %d oldest records of %s (%s .. %s)", count, key, start, end)
        return rows

    async def store(self, rows: list[Row], marks: dict[str, str] | None = None) -> None:
        """Commit rows to every buffer; retry with backoff while a disk refuses, then raise.

        Raising makes the adapter report an interruption. Protected records (gaps, status) that a
        buffer could not take are held in memory and written first once it takes them again.
        """
        failure: BufferError | None = None
        for i, buf in enumerate(self.buffers):
            try:
                await self._store_one(i, buf, rows, marks or {})
            except BufferError as exc:
                failure = exc
        self._on_stored()
        if failure is not None:
            raise failure

    async def _store_one(self, i: int, buf: Buffer, rows: list[Row], marks: dict[str, str]) -> None:
        batch = self._held[i] + rows if self._held[i] else rows
        delays = self._delays()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._store_timeout
        while batch:
            try:
                dropped = buf.add(batch, marks.items())
            except BufferError as exc:
                if loop.time() >= deadline:
                    self._held[i] = [r for r in batch if r[0] != "data"][-10000:]
                    raise
                log.error("cannot store %d records, retrying: %s", len(batch), exc)
                await asyncio.sleep(min(next(delays), max(0.0, deadline - loop.time())))
                continue
            # What the quota dropped becomes a gap record in the same buffer (gaps are never dropped).
            batch = self._dropped_rows(dropped) if dropped.count else []
            marks = {}
        self._held[i] = []
