"""The forwarder between one buffer and one sink: batching, lanes, a window of sends, retry with backoff.

It takes batches from the highest-priority lane with waiting records (status, gap, event, usage,
data), turns each into messages (one per asset, split by count and size and by the largest
message the far end takes), and keeps up to `Batching.in_flight` batches in flight at once, so a
long round trip does not cap throughput (stop-and-wait moved ~3,300 records/s at 300 ms). Each
batch is ended with exactly the records the far end confirmed (deleted), the ones it refused for
good, as whole messages or one by one (moved to the dead letters first, grouped by reason, then
deleted), and the rest given back to the front of its lane. After a failed send it lets the
window empty and waits (capped backoff with jitter) before trying again, so a dead endpoint is
not hammered.

Order: within a lane and asset, records leave in the order they entered the buffer, and the
sink keeps that order on one connection. A record that was not confirmed is sent again later,
possibly after newer ones; receivers order by `sourceTime` and drop duplicates by `id`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from uploader import wire
from uploader.buffer import Batch, Buffer, BufferCorruptError, StoredRecord
from uploader.buffer.records import TAG_BYTES
from uploader.deadletter import DeadLetters
from uploader.sink import Message, Outcome, Partial, Rejected, Sink

# A stored record's fields by position: C calls, where the named tuple's attributes are Python properties.
_seq, _key, _body = itemgetter(0), itemgetter(2), itemgetter(4)

log = logging.getLogger(__name__)

# Bytes a message's header and topic add to its records (origin, site, asset, lane, time; an MQTT
# PUBLISH's fixed header, topic length and packet id): a safe bound, so a message never exceeds
# the far end's limit because of them.
_MESSAGE_OVERHEAD = 512
_RECORD_OVERHEAD = 40  # the id spliced in, and the comma


@dataclass(frozen=True, slots=True)
class Batching:
    max_records: int = 1000  # records taken from the buffer per batch
    max_delay: float = 1.0  # seconds a data record may wait for a fuller message (whole messages go at once)
    max_message_records: int = 500
    max_message_bytes: int = 256 * 1024
    send_timeout: float = 10.0
    in_flight: int = 4  # batches sent and not yet confirmed, at most
    wire_version: int = wire.WIRE_VERSION  # 3: each record head once per message (wire.payload_v3)


@dataclass(slots=True)
class ForwarderStats:
    sent_records: int = 0
    sent_messages: int = 0
    failed_sends: int = 0
    rejected_records: int = 0
    max_window: int = 0  # most batches in flight at once
    last_success: datetime | None = None
    last_error: str = ""


class Forwarder:
    def __init__(
        self,
        buffer: Buffer,
        sink: Sink,
        *,
        site: str,
        batching: Batching,
        delays: Callable[[], Iterator[float]],
        dead_letters: DeadLetters | None = None,
        on_delivered: Delivered | None = None,
        on_round_trip: Callable[[float], None] | None = None,
    ) -> None:
        self._fields = {"sink": sink.name}  # the log's own fields
        self.buffer = buffer
        self.on_delivered = on_delivered
        self.on_round_trip = on_round_trip  # seconds from handing a batch's messages to the sink to its answer
        self.sink = sink
        self.site = site
        self.batching = batching
        self.dead_letters = dead_letters
        self._delays = delays
        self._wake = asyncio.Event()
        self._data_since: float | None = None  # when data began waiting for a fuller message
        self._refusals: dict[tuple[str, str], list[float]] = {}  # (topic, reason) -> [last logged, not logged]
        self.stats = ForwarderStats()
        if batching.wire_version not in wire.WIRE_VERSIONS:
            raise ValueError(f"wire_version must be one of {wire.WIRE_VERSIONS}, got {batching.wire_version!r}")
        self._heads_apart = batching.wire_version == wire.HEADS_VERSION
        self._head_objects: dict[bytes, bytes | None] = {}  # a head's tag -> its JSON object (None: sent whole)
        self._odd_heads = False  # some head is no JSON object's start
        if buffer.heads_apart != self._heads_apart:
            buffer.heads_apart = self._heads_apart

    def wake(self) -> None:
        """New records are in the buffer (called by whoever adds them)."""
        self._wake.set()

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Forward until cancelled. Raises only for a buffer that fails (the agent restarts it)."""
        # A previous run that died left its batches open (maybe one still being taken): their records are pending again.
        await self.buffer.in_order(self.buffer.release)
        window: set[asyncio.Task[bool]] = set()
        delays: Iterator[float] | None = None
        failing = False
        try:
            while True:
                if not self.sink.connected:
                    if window:
                        await asyncio.wait(window)
                    else:
                        await asyncio.sleep(0.1)  # the sink logs its own outage; nothing to try
                else:
                    self._wake.clear()  # before looking: a wake from here on is not lost
                    if len(window) < self.batching.in_flight:
                        batch = await self._take()
                        if batch is not None:
                            window.add(asyncio.create_task(self._send(batch)))
                            self.stats.max_window = max(self.stats.max_window, len(window))
                            continue
                    await self._wait(window)
                finished = {t for t in window if t.done()}
                window -= finished
                if all(t.result() for t in finished):  # a buffer error raises here
                    if failing and finished:
                        log.info("%s: delivering again", self.sink.name, extra=self._fields)
                        failing, delays = False, None
                    continue
                # Something was not confirmed: let the rest of the window settle, then back off.
                if window:
                    await asyncio.wait(window)
                    for t in window:
                        t.result()
                    window.clear()
                if not failing:
                    log.warning(
                        "%s: delivery failed (%s); records stay buffered",
                        self.sink.name,
                        self.stats.last_error,
                        extra=self._fields,
                    )
                failing = True
                delays = delays or self._delays()
                await self._pause(next(delays))
        finally:
            for t in window:
                t.cancel()
            await asyncio.gather(*window, return_exceptions=True)

    async def _take(self) -> Batch | None:
        """The next batch worth sending now: any urgent lane, or data that is plenty or waited long enough.

        Taken, as it is ended, with `Buffer.in_order`: while the buffer's thread checkpoints, this waits and the
        loop goes on."""
        buffer = self.buffer
        waiting = buffer.waiting()
        for lane in Buffer.LANES:
            if lane != "data" and waiting[lane]:
                return await buffer.in_order(buffer.begin, lane, self.batching.max_records)
        if not waiting["data"]:
            self._data_since = None
            return None
        now = asyncio.get_running_loop().time()
        if self._data_since is None:
            self._data_since = now
        take = self.batching.max_records
        if waiting["data"] < take and now - self._data_since < self.batching.max_delay:
            # Waiting is for fuller messages: as many records as fill whole messages go now, and only the rest
            # waits (a notification of 5,000 values in 2,000-record batches: its last 1,000 need not wait).
            per_message = self.batching.max_message_records
            take = waiting["data"] // per_message * per_message
            if not take:
                return None
        batch = await buffer.in_order(buffer.begin, "data", take)
        if not buffer.waiting()["data"]:
            self._data_since = None
        return batch

    async def _wait(self, window: set[asyncio.Task[bool]]) -> None:
        """Until a send finishes, new records arrive, or waiting data is due."""
        due = None
        if self._data_since is not None:
            due = max(0.0, self._data_since + self.batching.max_delay - asyncio.get_running_loop().time())
        woken = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait({*window, woken}, timeout=due, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()

    async def _pause(self, delay: float) -> None:
        """Back off, but retry at once when the sink reports that it has (re)connected."""
        was_connected = self.sink.connected
        loop = asyncio.get_running_loop()
        until = loop.time() + delay
        while loop.time() < until:
            await asyncio.sleep(min(0.25, until - loop.time()))
            if self.sink.connected and not was_connected:
                return
            was_connected = self.sink.connected

    # -- one batch -------------------------------------------------------------------------------

    async def flush_once(self) -> bool:
        """Send one batch of the most urgent lane. False if anything was left unconfirmed."""
        for lane in Buffer.LANES:
            batch = await self.buffer.in_order(self.buffer.begin, lane, self.batching.max_records)
            if batch is None:
                continue
            return await self._send(batch)
        return True

    async def drain(self, timeout: float) -> bool:
        """Send what is buffered until empty or `timeout` passes (used on shutdown, after run() ended).

        A sink that is not connected (still reconnecting: its run() goes on while the agent drains) gets the
        rest of the time to come back; a send that fails while it is connected ends the drain at once."""
        await self.buffer.in_order(self.buffer.release)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while sum(self.buffer.pending().values()) and loop.time() < deadline:
            if not self.sink.connected:
                await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
                continue
            try:
                ok = await asyncio.wait_for(self.flush_once(), max(0.1, deadline - loop.time()))
            except TimeoutError:
                return False
            if not ok and self.sink.connected:
                return False
        return not sum(self.buffer.pending().values())

    def messages(self, batch: Batch) -> tuple[list[Message], list[list[StoredRecord]], list[StoredRecord]]:
        """The batch as messages (with the records each carries), and the records too large for any message."""
        by_key: Mapping[str, Sequence[StoredRecord]]
        if len(keys := set(map(_key, batch.items))) == 1:
            by_key = {keys.pop(): batch.items}  # the common case: one machine
        else:
            grouped: dict[str, list[StoredRecord]] = {}
            for item in batch.items:
                grouped.setdefault(item.key, []).append(item)
            by_key = grouped
        messages: list[Message] = []
        parts: list[list[StoredRecord]] = []
        too_large: list[StoredRecord] = []
        origin = self.buffer.origin
        sent = datetime.now(UTC)
        b = self.batching
        limit = b.max_message_bytes
        far_end = self.sink.max_message_bytes
        if far_end is not None:
            limit = min(limit, far_end - _MESSAGE_OVERHEAD)
        for key, records in by_key.items():
            header = {"origin": origin, "site": self.site, "asset": key, "lane": batch.lane, "sent": sent}
            topic = self.sink.topic(batch.lane, key)
            if self._heads_apart:
                for part, payload in self._messages_apart(header, records, limit, too_large, far_end is not None):
                    messages.append(Message(topic, payload))
                    parts.append(list(part))
                continue
            for part in _split(records, b.max_message_records, limit):
                if far_end is not None and len(part) == 1 and len(part[0].body) + _RECORD_OVERHEAD > limit:
                    too_large.append(part[0])
                    continue
                payload = wire.payload_of(header, origin, list(map(_seq, part)), list(map(_body, part)))
                messages.append(Message(topic, payload))
                parts.append(list(part))
        return messages, parts, too_large

    # -- version 3: each head once per message -----------------------------------------------------

    def _messages_apart(
        self,
        header: dict[str, Any],
        records: Sequence[StoredRecord],
        limit: int,
        too_large: list[StoredRecord],
        strict: bool,
    ) -> Iterator[tuple[Sequence[StoredRecord], bytes]]:
        """Version-3 messages of one key's records (bodies as stored): split by count, then, only where a
        message would pass `limit` bytes, by size with each head counted once per message. With `strict` (the
        far end has a limit) a record too large on its own goes to `too_large`."""
        most = self.batching.max_message_records
        for start in range(0, len(records), most):
            chunk = records[start : start + most]
            payload = self._payload_apart(header, chunk, limit)
            if payload is not None:
                yield chunk, payload
                continue
            for part in _split_apart(chunk, most, limit, self._head_size):
                payload = self._payload_apart(header, part, limit if strict and len(part) == 1 else None)
                if payload is None:
                    too_large.append(part[0])
                else:
                    yield part, payload

    def _head_objects_of(self, tags: Iterable[bytes]) -> dict[bytes, bytes | None]:
        """The JSON objects of the heads `tags` stand for, kept per tag (None: that head's records go whole); the
        first bytes of a whole body, also among `tags`, are not looked up."""
        objects = self._head_objects
        for tag in set(tags) - objects.keys():
            if tag[:1] != b"#":
                continue
            try:
                found = objects[tag] = wire.head_object(self.buffer.head(tag))
            except KeyError:
                raise BufferCorruptError(
                    self.buffer.path, f"a record refers to a head the file does not have ({tag!r})"
                ) from None
            if found is None:
                self._odd_heads = True
        return objects

    def _head_size(self, tag: bytes) -> int:
        found = self._head_objects_of((tag,))[tag]
        return len(found) if found is not None else len(self.buffer.head(tag))

    def _payload_apart(self, header: dict[str, Any], part: Sequence[StoredRecord], limit: int | None) -> bytes | None:
        """A version-3 message of `part`; None if it would pass `limit` bytes (counted as `_split` counts)."""
        bodies = list(map(_body, part))
        tags = [b[:TAG_BYTES] for b in bodies]
        distinct = dict.fromkeys(tags)
        objects = self._head_objects_of(distinct)
        get = objects.get
        listed = [t for t in distinct if get(t)]  # heads with an object: not whole bodies' first bytes
        heads: list[bytes] = list(map(objects.__getitem__, listed))  # type: ignore[arg-type]  # not None: listed
        if limit is not None and sum(map(len, bodies)) + len(bodies) * _RECORD_OVERHEAD + sum(map(len, heads)) > limit:
            return None
        index = dict(zip(listed, range(len(listed)), strict=True))
        refs = [index.get(t, -1) for t in tags]
        if self._odd_heads:  # a head that is no JSON object's start: its records go whole
            whole = self.buffer.whole
            bodies = [b if r >= 0 or b[:1] != b"#" else whole([b])[0] for b, r in zip(bodies, refs, strict=True)]
        tails = [b[TAG_BYTES:] if r >= 0 else b for b, r in zip(bodies, refs, strict=True)]
        return wire.payload_v3(header, self.buffer.origin, heads, list(map(_seq, part)), tails, refs)

    async def _send(self, batch: Batch) -> bool:
        """Send one batch and end it; True if every record was confirmed or moved to the dead letters."""
        messages, parts, too_large = self.messages(batch)
        began = time.monotonic()
        try:
            results: list[Outcome] = await self.sink.send(messages, timeout=self.batching.send_timeout)
            if self.on_round_trip is not None and messages:
                self.on_round_trip(time.monotonic() - began)
        except asyncio.CancelledError:
            self.buffer.end(batch, ())
            raise
        except Exception as exc:  # a sink bug must not lose records: they stay for the next round
            log.exception("%s: send failed", self.sink.name, extra=self._fields)
            results = [False] * len(messages)
            self.stats.last_error = repr(exc)
        accepted: list[int] = []
        refused: list[tuple[list[StoredRecord], str]] = []
        n_ok = unconfirmed = 0
        confirmed: list[list[StoredRecord]] = []
        for r, part in zip(results, parts, strict=True):
            if r is True:
                accepted += map(_seq, part)
                confirmed.append(part)
                n_ok += 1
            elif isinstance(r, Rejected):
                refused.append((part, r.reason))
            elif isinstance(r, Partial) and (split := _partial(r, part)) is not None:
                accepted += split[0]
                refused += split[1]
                n_ok += 1
            else:
                if r is not False:  # a Partial naming records the message does not have: a sink bug
                    log.error(
                        "%s: %r does not fit a message of %d records; kept",
                        self.sink.name,
                        r,
                        len(part),
                        extra=self._fields,
                    )
                unconfirmed += 1
        if too_large:
            limit = self.sink.max_message_bytes
            refused.append((too_large, f"record larger than the far end takes ({limit} bytes per message)"))
        rejected = self._dead_letter(batch.lane, refused)
        await self.buffer.in_order(self.buffer.end, batch, accepted, rejected)
        if self.on_delivered is not None and confirmed:
            self._report_delivered(batch.lane, confirmed)
        self.stats.sent_messages += n_ok
        self.stats.sent_records += len(accepted)
        self.stats.rejected_records += len(rejected)
        if unconfirmed == 0 and len(rejected) == sum(len(part) for part, _ in refused):
            self.stats.last_success = datetime.now(UTC)
            return True
        self.stats.failed_sends += 1
        if not self.stats.last_error or n_ok:
            self.stats.last_error = f"{unconfirmed} of {len(messages)} messages unconfirmed"
        return False

    def _report_delivered(self, lane: str, parts: list[list[StoredRecord]]) -> None:
        """Per confirmed message: its lane, routing key, size, and the time from its records' own time
        (a value's source time) to now for a sample of them (at most `_LATENCY_SAMPLE` per message)."""
        assert self.on_delivered is not None
        now = time.time()
        for part in parts:
            step = max(1, len(part) // _LATENCY_SAMPLE)
            try:
                self.on_delivered(lane, part[0].key, len(part), [now - i.ts for i in part[::step]])
            except Exception:  # statistics must never stop delivery
                log.exception("%s: recording a delivery failed", self.sink.name, extra=self._fields)

    def _log_refusal(self, topic: str, reason: str, count: int) -> None:
        now = asyncio.get_running_loop().time()
        seen = self._refusals.get((topic, reason))
        if seen is not None and now - seen[0] < _REFUSAL_LOG_S:
            seen[1] += count
            return
        since = f" (and {seen[1]} more since the last report)" if seen is not None and seen[1] else ""
        log.error(
            "%s: %d records refused for good on %s: %s%s; moved to the dead letters "
            "(edge-agent dead-letter list), not sent again",
            self.sink.name,
            count,
            topic,
            reason,
            since,
            extra=self._fields,
        )
        self._refusals[(topic, reason)] = [now, 0]

    def _dead_letter(self, lane: str, refused: list[tuple[list[StoredRecord], str]]) -> list[int]:
        """Move refused records to the dead letters; returns the seqs that may now leave the buffer."""
        done: list[int] = []
        for records, reason in refused:
            topic = self.sink.topic(lane, records[0].key)
            if self.dead_letters is None:
                log.error(
                    "%s: %d records refused for good on %s (%s) and no dead-letter store: they stay buffered",
                    self.sink.name,
                    len(records),
                    topic,
                    reason,
                    extra=self._fields,
                )
                continue
            if self._heads_apart:  # dead letters keep whole records
                bodies = self.buffer.whole([r.body for r in records])
                records = [r._replace(body=b) for r, b in zip(records, bodies, strict=True)]
            try:
                self.dead_letters.add(self.sink.name, self.buffer.origin, records, reason)
            except Exception as e:  # the disk refuses: keep them buffered rather than lose them
                log.error(
                    "%s: cannot keep %d refused records as dead letters: %s",
                    self.sink.name,
                    len(records),
                    e,
                    extra=self._fields,
                )
                continue
            self._log_refusal(topic, reason, len(records))
            done += [r.seq for r in records]
        return done


_LATENCY_SAMPLE = 16
Delivered = Callable[[str, str, int, list[float]], None]
"""(lane, routing key, records confirmed, latencies in seconds of a sample of them)."""

_REFUSAL_LOG_S = 60.0  # a refusal that keeps happening is logged once a minute, with a count


def _partial(r: Partial, part: list[StoredRecord]) -> tuple[list[int], list[tuple[list[StoredRecord], str]]] | None:
    """The seqs a Partial confirms, and its refused records grouped by reason; None if it names a record
    the message does not have (or one twice)."""
    reasons = dict(r.refused)
    if len(reasons) != len(r.refused) or not all(0 <= n < len(part) for n in reasons):
        return None
    by_reason: dict[str, list[StoredRecord]] = {}
    for n, reason in r.refused:
        by_reason.setdefault(reason, []).append(part[n])
    confirmed = [item.seq for n, item in enumerate(part) if n not in reasons]
    return confirmed, [(records, reason) for reason, records in by_reason.items()]


def _split_apart(
    items: Sequence[StoredRecord], max_records: int, max_bytes: int, head_size: Callable[[bytes], int]
) -> list[Sequence[StoredRecord]]:
    """`_split` for version-3 messages, counted record by record (the caller found the whole too large): each
    message also carries the heads its records refer to, once."""
    out: list[Sequence[StoredRecord]] = []
    start, size = 0, 0
    seen: set[bytes] = set()
    for i, item in enumerate(items):
        body = item.body
        tag = body[:TAG_BYTES] if body[:1] == b"#" else None
        n = len(body) + _RECORD_OVERHEAD + (head_size(tag) if tag is not None and tag not in seen else 0)
        if i > start and (i - start >= max_records or size + n > max_bytes):
            out.append(items[start:i])
            start, size, seen = i, 0, set()
            n = len(body) + _RECORD_OVERHEAD + (head_size(tag) if tag is not None else 0)
        if tag is not None:
            seen.add(tag)
        size += n
    if start < len(items):
        out.append(items[start:])
    return out


def _split(items: Sequence[StoredRecord], max_records: int, max_bytes: int) -> Iterator[Sequence[StoredRecord]]:
    """Messages of at most `max_records` records and `max_bytes` bytes (a record over `max_bytes` alone in its
    own), in order, each as full as the limits let it be. A window of `max_records` that fits in bytes is
    taken whole after one sum (the common case); only a window over the bytes is walked record by record."""
    total = len(items)
    sizes = [n + _RECORD_OVERHEAD for n in map(len, map(_body, items))]
    start = 0
    while start < total:
        end = min(start + max_records, total)
        if sum(sizes[start:end]) > max_bytes:
            size, end = 0, start
            while end < total and end - start < max_records and (end == start or size + sizes[end] <= max_bytes):
                size += sizes[end]
                end += 1
        yield items[start:end] if start or end < total else items
        start = end
