"""The forwarder between one buffer and one sink: batching, lanes, retry with backoff.

Per round it takes a batch from the highest-priority lane with records (status, gap, event,
usage, data), turns it into messages (one per asset, split by count and size), sends them and
ends the transaction with exactly the records the far end confirmed; the rest stays in the
buffer. After a failed send it waits (capped backoff with jitter) before trying again, so a
dead endpoint is not hammered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from uploader import wire
from uploader.buffer import Batch, Buffer, StoredRecord
from uploader.sink import Message, Sink

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Batching:
    max_records: int = 1000  # records taken from the buffer per round
    max_delay: float = 1.0  # seconds a record may wait for a fuller batch
    max_message_records: int = 500
    max_message_bytes: int = 256 * 1024
    send_timeout: float = 10.0


@dataclass(slots=True)
class ForwarderStats:
    sent_records: int = 0
    sent_messages: int = 0
    failed_sends: int = 0
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
    ) -> None:
        self.buffer = buffer
        self.sink = sink
        self.site = site
        self.batching = batching
        self._delays = delays
        self._wake = asyncio.Event()
        self.stats = ForwarderStats()

    def wake(self) -> None:
        """New records are in the buffer (called by whoever adds them)."""
        self._wake.set()

    async def run(self) -> None:
        delays: Iterator[float] | None = None
        failing = False
        while True:
            if not await self._ready():
                continue
            ok = await self.flush_once()
            if ok:
                if failing:
                    log.info("%s: delivering again", self.sink.name)
                failing, delays = False, None
                continue
            if not failing:
                log.warning("%s: delivery failed (%s); records stay buffered", self.sink.name, self.stats.last_error)
            failing = True
            delays = delays or self._delays()
            await self._pause(next(delays))

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

    async def _ready(self) -> bool:
        """Wait until a batch is worth sending: enough records, or the oldest waited max_delay.

        While the sink is not connected there is nothing to try: wait for it quietly (the sink
        logs its own outage), so a start-up or an outage is not counted as failed sends.
        """
        if not self.sink.connected:
            await asyncio.sleep(0.1)
            return False
        pending = self.buffer.pending()
        total = sum(pending.values())
        if total == 0:
            self._wake.clear()
            await self._wake.wait()
            return False
        if pending.get("data", 0) >= self.batching.max_records or total > pending.get("data", 0):
            return True  # a full batch, or records of an urgent lane
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._full(), self.batching.max_delay)
        return True

    async def _full(self) -> None:
        while self.buffer.pending().get("data", 0) < self.batching.max_records:
            self._wake.clear()
            await self._wake.wait()

    async def flush_once(self) -> bool:
        """Send one batch of the most urgent lane. False if anything was left unconfirmed."""
        for lane in Buffer.LANES:
            batch = self.buffer.begin(lane, self.batching.max_records)
            if batch is None:
                continue
            return await self._send(batch)
        return True

    async def drain(self, timeout: float) -> bool:
        """Send what is buffered until empty or `timeout` passes (used on shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while sum(self.buffer.pending().values()) and loop.time() < deadline:
            try:
                ok = await asyncio.wait_for(self.flush_once(), max(0.1, deadline - loop.time()))
            except TimeoutError:
                return False
            if not ok:
                return False
        return not sum(self.buffer.pending().values())

    def messages(self, batch: Batch) -> tuple[list[Message], list[list[int]]]:
        by_key: dict[str, list[StoredRecord]] = {}
        for item in batch.items:
            by_key.setdefault(item.key, []).append(item)
        messages: list[Message] = []
        seqs: list[list[int]] = []
        origin = self.buffer.origin
        sent = datetime.now(UTC)
        b = self.batching
        for key, items in by_key.items():
            header = {"origin": origin, "site": self.site, "asset": key, "lane": batch.lane, "sent": sent}
            topic = self.sink.topic(batch.lane, key)
            for part in _split(items, b.max_message_records, b.max_message_bytes):
                ids = [wire.record_id(origin, i.seq) for i in part]
                messages.append(Message(topic, wire.payload(header, ids, [i.body for i in part])))
                seqs.append([i.seq for i in part])
        return messages, seqs

    async def _send(self, batch: Batch) -> bool:
        messages, seqs = self.messages(batch)
        try:
            results = await self.sink.send(messages, timeout=self.batching.send_timeout)
        except asyncio.CancelledError:
            self.buffer.end(batch, ())
            raise
        except Exception as exc:  # a sink bug must not lose records: they stay for the next round
            log.exception("%s: send failed", self.sink.name)
            results = [False] * len(messages)
            self.stats.last_error = repr(exc)
        accepted = [s for ok, group in zip(results, seqs, strict=True) if ok for s in group]
        self.buffer.end(batch, accepted)
        n_ok = sum(results)
        self.stats.sent_messages += n_ok
        self.stats.sent_records += len(accepted)
        if n_ok == len(messages):
            self.stats.last_success = datetime.now(UTC)
            return True
        self.stats.failed_sends += 1
        if not self.stats.last_error or n_ok:
            self.stats.last_error = f"{len(messages) - n_ok} of {len(messages)} messages unconfirmed"
        return False


def _split(items: Sequence[StoredRecord], max_records: int, max_bytes: int) -> Iterator[Sequence[StoredRecord]]:
    start, size = 0, 0
    for i, item in enumerate(items):
        n = len(item.body) + 40
        if i > start and (i - start >= max_records or size + n > max_bytes):
            yield items[start:i]
            start, size = i, 0
        size += n
    if start < len(items):
        yield items[start:]
