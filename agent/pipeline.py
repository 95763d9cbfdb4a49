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
    is_array: bool
    node: str
    prefix: bytes
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
    *,
    handle: int,
    equipment: str,
    shell_id: str,
    submodel_id: str,
    path: str,
    value_type: str,
    is_array: bool,
    node: str,
    semantic_id: str | None,
    unit: str | None,
) -> Binding:
    fixed: dict[str, Any] = {"shell": shell_id, "submodel": submodel_id, "path": path}
    if semantic_id:
        fixed["semanticId"] = semantic_id
    fixed["valueType"] = value_type
    if is_array:
        fixed["array"] = True
    if unit:
        fixed["unit"] = unit
    fixed["node"] = node
    return Binding(
        handle=handle,
        equipment=equipment,
        shell_id=shell_id,
        submodel_id=submodel_id,
        path=path,
        value_type=value_type,
        is_array=is_array,
        node=node,
        prefix=wire.record_prefix(fixed),
        encode=wire.value_encoder(value_type, is_array=is_array),
        mark=f"last:{equipment}/{path}",
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _epoch(t: datetime | None) -> float:
    return t.timestamp() if t is not None else _utcnow().timestamp()


def jsonable(v: Any) -> Any:
    """Event fields and status details: any plain value into something orjson writes faithfully."""
    if isinstance(v, float):
        return wire.encode_float(v)
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > wire.MAX_SAFE_INT:
        return str(v)
    if isinstance(v, bytes):
        return wire.value_encoder("xs:base64Binary")(v)
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    return v


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
        dumps = wire.dumps
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
            varying = {"value": value, "sourceTime": st, "serverTime": s.server_time, "status": s.status}
            append(("data", b.equipment, t, b.prefix + dumps(varying)[1:]))
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
            f = ev.fields
            rec: dict[str, Any] = {
                "shell": b.shell_id,
                "source": b.name,
                "node": b.node,
                "time": ev.time,
                "eventType": str(f.get("EventType", "")),
                "fields": jsonable(f),
            }
            if isinstance(f.get("Severity"), int):
                rec["severity"] = f["Severity"]
            msg = f.get("Message")
            if isinstance(msg, dict):
                rec["message"] = msg.get("text", "")
            elif msg is not None:
                rec["message"] = str(msg)
            rows.append(("event", b.equipment, ev.time.timestamp(), wire.dumps(rec)))
        await self.store(rows)

    async def on_interruption(self, i: Interruption) -> None:
        await self.store(self.gap_rows(i.handles, i.start, i.end, i.reason))

    async def on_problem(self, p: NodeProblem) -> None:
        b = self.bindings.get(p.handle)
        rec: dict[str, Any] = {"time": _utcnow(), "kind": "node-problem", "node": p.node, "message": p.problem}
        key = AGENT_KEY
        if b is not None:
            rec.update(shell=b.shell_id, path=b.path)
            key = b.equipment
        await self.store([("status", key, _utcnow().timestamp(), wire.dumps(rec))])

    async def on_state(self, s: SourceState) -> None:
        await self.status(f"source-{s.state}", f"{s.source}: {s.detail}")

    async def status(self, kind: str, message: str, **extra: Any) -> None:
        rec = {"time": _utcnow(), "kind": kind, "message": message, **jsonable(extra)}
        await self.store([("status", AGENT_KEY, _utcnow().timestamp(), wire.dumps(rec))])

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

    def gap_rows(self, handles: Sequence[int], start: datetime, end: datetime, reason: str) -> list[Row]:
        by_element: dict[tuple[str, str, str], list[str]] = {}
        for h in handles:
            b = self.bindings.get(h)
            if b is not None:
                by_element.setdefault((b.equipment, b.shell_id, b.submodel_id), []).append(b.path)
        rows: list[Row] = []
        for (equipment, shell, submodel), paths in by_element.items():
            rec = {
                "shell": shell,
                "submodel": submodel,
                "paths": sorted(paths),
                "start": start,
                "end": end,
                "reason": reason,
            }
            rows.append(("gap", equipment, start.timestamp(), wire.dumps(rec)))
        return rows

    def _bad_value_row(self, b: Binding, s: Sample, exc: Exception) -> Row:
        # The value is kept (as text) on the status lane: a wrong type is reported, not lost.
        log.warning("%s %s: value %r does not fit %s: %s", b.equipment, b.path, s.value, b.value_type, exc)
        rec = {
            "time": _utcnow(),
            "kind": "bad-value",
            "shell": b.shell_id,
            "path": b.path,
            "node": b.node,
            "message": f"value {s.value!r} does not fit {b.value_type}: {exc}",
            "sourceTime": s.source_time,
        }
        return ("status", b.equipment, _epoch(s.source_time), wire.dumps(rec))

    def _dropped_rows(self, dropped: Dropped) -> list[Row]:
        rows: list[Row] = []
        for key, (count, first, last) in dropped.by_key.items():
            handles = [b.handle for b in self.bindings.values() if b.equipment == key]
            start = datetime.fromtimestamp(first, UTC)
            end = datetime.fromtimestamp(last, UTC)
            for row in self.gap_rows(handles, start, end, f"disk quota reached: {count} oldest records dropped"):
                lane, k, ts, body = row
                rows.append((lane, k, ts, body[:-1] + b',"dropped":' + str(count).encode() + b"}"))
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
