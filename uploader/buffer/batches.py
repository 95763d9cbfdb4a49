"""Handing records out (`begin`) and taking them back (`end`): the sending side of the buffer.

Invariants (4 of the buffer's): open batches live in memory only, and so does the position
reached inside a chunk. A record is in at most one open batch; `begin()` hands out the oldest
records of a lane that are in none, and may hand out part of a chunk. `end()` makes the accepted
and rejected records done in one transaction (the chunk row is deleted with its last record, a
done mask records the rest) and gives every other record of the batch back to the front of its
lane, in seq order. After a crash or restart every record not done is pending again, so delivery
is at-least-once with duplicates bounded by what was in flight.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import chain, compress, islice
from operator import itemgetter, not_

from uploader.buffer.errors import MOVE_ASIDE, BufferCorruptError
from uploader.buffer.lanes import Chunk, Lane, Run, run_chunk_id
from uploader.buffer.quota import estimate
from uploader.buffer.records import NEWLINE, Batch, StoredRecord, stamps, unpack
from uploader.buffer.store import Store

_seq = itemgetter(0)


class Batches:
    """The open batches of one buffer, and the moves between a lane's queues that they cause."""

    def __init__(self, store: Store, lanes: dict[str, Lane]) -> None:
        self._store = store
        self._lanes = lanes
        self._open: dict[int, tuple[Batch, list[Run]]] = {}  # id(batch) -> (batch, its records by chunk)
        self.heads_apart = False  # hand out stored bodies (a tagged one refers to its head) instead of whole ones

    def set_heads_apart(self, on: bool) -> None:
        """From now on hand out bodies as stored (`on`) or whole. Open batches are given back first, and records
        already read are made whole when turning it off, so every body handed out after is of the new kind."""
        self.release()
        if self.heads_apart and not on:
            expand = self._store.heads.expand
            for lane in self._lanes.values():
                for queue in (lane.ahead, lane.returned):
                    for i, (chunk, items) in enumerate(queue):
                        bodies = expand([item[4] for item in items])
                        queue[i] = (chunk, [item._replace(body=b) for item, b in zip(items, bodies, strict=True)])
        self.heads_apart = on

    def begin(self, lane: Lane, max_records: int, max_bytes: int | None) -> Batch | None:
        if not lane.waiting():
            return None
        runs: list[Run] = []
        want, budget = _take(lane.returned, runs, max_records, max_bytes)
        if want:
            want, budget = _take(lane.ahead, runs, want, budget)
        if want and lane.unread:
            self._read(lane, want)
            _take(lane.ahead, runs, want, budget)
        if not runs:
            return None
        batch = Batch(lane.name, tuple(chain.from_iterable(items for _, items in runs)))
        self._open[id(batch)] = (batch, runs)
        lane.held += len(batch.items)
        return batch

    def _read(self, lane: Lane, want: int) -> None:
        """Read chunks after the cursor into `ahead` until they hold `want` records or none are left."""
        store = self._store
        with store.errors("begin"):
            rows = store.read_after(lane.name, lane.cursor)
            try:
                for chunk_id, key, n, ts_blob, blob in rows:
                    ts = stamps(ts_blob)
                    bodies = blob.split(NEWLINE)
                    mask = lane.done_at_open.get(chunk_id)
                    if len(ts) != n or len(bodies) != n or (mask is not None and len(mask) != n):
                        raise BufferCorruptError(
                            store.path,
                            f"chunk {chunk_id} of lane {lane.name!r} is damaged ({n} records, {len(ts)} times, "
                            f"{len(bodies)} bodies). {MOVE_ASIDE}",
                        )
                    try:
                        if self.heads_apart:
                            store.heads.check(bodies)
                        else:
                            bodies = store.heads.expand(bodies)
                    except KeyError as exc:
                        raise BufferCorruptError(
                            store.path,
                            f"chunk {chunk_id} of lane {lane.name!r} refers to a record head the file does not have "
                            f"({exc}). {MOVE_ASIDE}",
                        ) from None
                    items = unpack(chunk_id, lane.name, key, ts, bodies)
                    if mask is not None:
                        items = list(compress(items, map(not_, mask)))
                        del lane.done_at_open[chunk_id]
                    size = estimate(len(key) + len(ts_blob) + len(blob), store.page_size)
                    chunk = Chunk(chunk_id, key, n, len(items), size, None if mask is None else bytearray(mask))
                    lane.cursor = chunk_id
                    lane.unread -= chunk.live
                    if items:
                        lane.ahead.append((chunk, items))
                        want -= len(items)
                    if want <= 0:
                        break
            finally:
                rows.close()

    def end(self, batch: Batch, accepted: Iterable[int], rejected: Iterable[int]) -> tuple[int, int]:
        """Close `batch`; returns how many records were accepted and rejected (now done)."""
        opened, runs = self._open.get(id(batch), (None, []))
        if opened is not batch:
            raise ValueError("end(): this batch is not open (ended already, or begun on another Buffer)")
        lane = self._lanes[batch.lane]
        acc, rej = set(accepted), set(rejected)
        done = acc | rej if rej else acc
        if done:
            in_batch = set(map(_seq, batch.items))
            if not done <= in_batch:
                raise ValueError(f"end(): seqs {sorted(done - in_batch)[:10]} are not in this batch")
            if acc & rej:
                raise ValueError(f"end(): seqs {sorted(acc & rej)[:10]} are both accepted and rejected")
        finished, marked, rest = _sort_out(runs, done, everything=len(done) == len(batch.items))
        if done:
            self._commit(lane, len(done), finished, marked)
        del self._open[id(batch)]
        lane.held -= len(batch.items)
        if rest:
            _give_back(lane, rest)
        return len(acc), len(rej)

    def _commit(self, lane: Lane, count: int, finished: list[Chunk], marked: list[tuple[Chunk, bytearray]]) -> None:
        """Make `count` records done on disk, then in memory; on a BufferError nothing changed."""
        pending = [other.pending - (count if other is lane else 0) for other in self._lanes.values()]
        store = self._store
        with store.transaction("end") as conn:
            store.delete(conn, lane.name, [(chunk.id, chunk.mask is not None) for chunk in finished])
            store.write_done(conn, lane.name, [(chunk.id, mask) for chunk, mask in marked])
            store.write_state(conn, store.last_seq, pending)
        lane.pending -= count
        lane.bytes -= sum(chunk.size for chunk in finished)
        for chunk, mask in marked:
            chunk.live = chunk.n - mask.count(1)
            chunk.mask = mask

    def release(self) -> int:
        """Give every open batch back to its lane, as if ended with nothing done; returns the records."""
        count = 0
        for batch, runs in self._open.values():
            lane = self._lanes[batch.lane]
            lane.held -= len(batch.items)
            count += len(batch.items)
            _give_back(lane, runs)
        self._open.clear()
        return count

    def forget(self) -> None:
        """Every open batch is gone (the buffer closes); their records are pending at the next open."""
        self._open.clear()


def _take(source: deque[Run], runs: list[Run], want: int, budget: int | None) -> tuple[int, int | None]:
    """Move up to `want` records (within `budget` bytes of bodies) from the front of `source` to `runs`.

    Returns what is still wanted (0 once the budget is spent) and the budget left.
    """
    while want and source:
        chunk, items = source[0]
        count = min(want, len(items))
        if budget is not None:
            fit = 0
            for item in islice(items, count):
                size = len(item[4])
                if size > budget and (fit or runs):
                    break
                budget -= size
                fit += 1
            if fit < count:
                want = 0
            count = fit
        if count == len(items):
            source.popleft()
        elif count:
            source[0] = (chunk, items[count:])
            items = items[:count]
        else:
            break
        if runs and runs[-1][0] is chunk:
            runs[-1] = (chunk, runs[-1][1] + items)
        else:
            runs.append((chunk, items))
        if want:
            want -= count
    return want, budget


def _sort_out(
    runs: list[Run], done: set[int], *, everything: bool
) -> tuple[list[Chunk], list[tuple[Chunk, bytearray]], list[Run]]:
    """Of a batch's runs: chunks now wholly done, chunks partly done (with their new mask), records to give back."""
    finished: list[Chunk] = []
    marked: list[tuple[Chunk, bytearray]] = []
    rest: list[Run] = []
    for chunk, items in runs:
        if everything:
            gone = items
        else:
            gone = [item for item in items if item[0] in done]
            if len(gone) < len(items):
                rest.append((chunk, [item for item in items if item[0] not in done]))
            if not gone:
                continue
        if len(gone) == chunk.live:
            finished.append(chunk)
        else:
            marked.append((chunk, chunk.marked(gone)))
    return finished, marked, rest


def _give_back(lane: Lane, rest: list[Run]) -> None:
    merged: dict[Chunk, list[StoredRecord]] = {}
    for chunk, items in chain(lane.returned, rest):
        merged[chunk] = sorted(merged[chunk] + items, key=_seq) if chunk in merged else items
    lane.returned = deque(sorted(merged.items(), key=run_chunk_id))
