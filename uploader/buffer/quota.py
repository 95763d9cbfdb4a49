"""The disk quota: which records `add()` drops to make room, inside its own transaction.

Invariant (6 of the buffer's): the quota drops only `data`, then `event`, records, oldest chunk
first; never a protected lane (gap, usage, status, analysis), never a record in an open batch, never the
rows being added. Of a chunk read already it drops every record not in an open batch; a chunk
not read yet goes whole. If that is not enough the rows are stored anyway, over quota, and
`stats().over_quota` says so. Every dropped record is counted in the `Dropped` that `add()`
returns, per key with its time range, so the caller can report it as a gap.

Disk: the file may also not grow into the disk's last `min_free_bytes` (free space is read with
statvfs at every `add()`): a disk shared with other files, or smaller than the quota, fills up
before the quota does, and the same drops then keep the buffer going.

Size: `quota_bytes` bounds the pages holding records (page_count - freelist_count, both read
from the database header, so checking costs microseconds per `add()`). New chunks are estimated
at their payload plus `CHUNK_OVERHEAD` (and half a page when they overflow a page), so the file
may pass the quota by a fraction of one `add()` before the next `add()` corrects it. A chunk's
space comes back only when its last record is done: records the quota drops from a chunk that
still has records in flight are counted as freed at once, so the quota may drop up to about one
chunk more than needed while that batch is open. The WAL comes on top.

Nothing here touches memory before the transaction commits: `make_room` returns a `Room`, and
`apply` brings the lanes in line with it after the commit.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from dataclasses import dataclass, field
from itertools import chain, compress
from operator import not_
from typing import Final

from uploader.buffer.lanes import Chunk, Lane, chunk_id
from uploader.buffer.records import StoredRecord, stamps
from uploader.buffer.store import Store

DROP_ORDER: Final = ("data", "event")

# Bytes a chunk takes on disk beyond len(key) + its ts and bodies blobs: rowid, n, ts_min, ts_max,
# record header, cell pointer and leaf-page slack. A chunk that overflows its leaf page also leaves
# on average half of its last overflow page empty, counted on top (bench/bench_buffer.py prints
# the real bytes per record). Only an estimate: add() reads the real page count every time.
CHUNK_OVERHEAD: Final = 64
RECORD_OVERHEAD: Final = 9  # its source time and the newline between bodies
_DROP_CHUNKS: Final = 64


def estimate(payload: int, page_size: int) -> int:
    """Bytes on disk of a chunk row whose key, ts and bodies take `payload` bytes."""
    size = payload + CHUNK_OVERHEAD
    return size + page_size // 2 if size > page_size else size


@dataclass(slots=True)
class Room:
    """Records the quota drops inside one add() transaction; applied to memory after the commit."""

    deleted: dict[str, int] = field(default_factory=dict)
    # of deleted: records in chunks not read yet, and the last such chunk
    unread: dict[str, tuple[int, int]] = field(default_factory=dict)
    gone: set[Chunk] = field(default_factory=set)  # read chunks whose records not in flight were dropped
    marked: list[tuple[Chunk, bytearray]] = field(default_factory=list)
    # key -> [count, earliest ts, latest ts], mutable so each dropped chunk costs no allocation
    by_key: dict[str, list[float]] = field(default_factory=dict)
    freed: dict[str, int] = field(default_factory=dict)  # estimated bytes of chunk rows deleted, per lane
    short: bool = False

    def note(self, key: str, count: int, first: float, last: float) -> None:
        entry = self.by_key.get(key)
        if entry is None:
            self.by_key[key] = [count, first, last]
        else:
            entry[0] += count
            if first < entry[1]:
                entry[1] = first
            if last > entry[2]:
                entry[2] = last


def make_room(
    store: Store,
    conn: sqlite3.Connection,
    lanes: dict[str, Lane],
    incoming: int,
    quota: int,
    pending: dict[str, int],
    disk_room: int | None = None,
) -> Room:
    """Drop what must go for `incoming` more bytes to fit `quota`, and, if `disk_room` (bytes the
    file may still grow on its disk) is given, to fit the disk; lowers `pending` by what it dropped."""
    room = Room()
    pages, free = store.pages(conn)
    excess = (pages - free) * store.page_size + incoming - quota
    if disk_room is not None:
        # Freed pages are reused before the file grows: only growth needs the disk.
        excess = max(excess, incoming - free * store.page_size - disk_room)
    if excess <= 0:
        return room
    for lane in DROP_ORDER:
        excess = _drop_read(store, conn, lanes[lane], excess, room)
        if excess > 0:
            excess = _drop_unread(store, conn, lanes[lane], excess, room)
        pending[lane] -= room.deleted.get(lane, 0)
        if excess <= 0:
            return room
    room.short = True
    return room


def _drop_read(store: Store, conn: sqlite3.Connection, lane: Lane, excess: int, room: Room) -> int:
    """Drop the records of chunks read already that are in no open batch, oldest chunk first."""
    spare: dict[Chunk, list[StoredRecord]] = {}
    # Per chunk, records given back are older than those read ahead.
    for chunk, items in chain(lane.returned, lane.ahead):
        spare[chunk] = spare[chunk] + items if chunk in spare else items
    finished: list[Chunk] = []
    marked: list[tuple[Chunk, bytearray]] = []
    count = 0
    for chunk in sorted(spare, key=chunk_id):
        if excess <= 0:
            break
        items = spare[chunk]
        times = [item[3] for item in items]
        room.note(chunk.key, len(items), min(times), max(times))
        count += len(items)
        room.gone.add(chunk)
        if len(items) == chunk.live:
            finished.append(chunk)
            excess -= chunk.size
            room.freed[lane.name] = room.freed.get(lane.name, 0) + chunk.size
        else:
            marked.append((chunk, chunk.marked(items)))
            excess -= sum(len(item[4]) + RECORD_OVERHEAD for item in items)
    store.delete(conn, lane.name, [(chunk.id, chunk.mask is not None) for chunk in finished])
    store.write_done(conn, lane.name, [(chunk.id, mask) for chunk, mask in marked])
    room.marked += marked
    if count:
        room.deleted[lane.name] = count
    return excess


def _drop_unread(store: Store, conn: sqlite3.Connection, lane: Lane, excess: int, room: Room) -> int:
    """Drop whole chunks not read yet, oldest first."""
    cursor = last = lane.cursor
    count = 0
    while excess > 0:
        rows = store.sizes(conn, lane.name, last, _DROP_CHUNKS)
        if not rows:
            break
        for chunk, key, n, first, latest, payload in rows:
            mask = lane.done_at_open.get(chunk)
            if mask is None:
                room.note(key, n, first, latest)
                count += n
            else:
                # Part of it was done before the restart: count and time only the rest.
                times = list(compress(stamps(store.ts_blob(conn, lane.name, chunk)), map(not_, mask)))
                if times:
                    room.note(key, len(times), min(times), max(times))
                    count += len(times)
            size = estimate(payload + n, store.page_size)
            excess -= size
            room.freed[lane.name] = room.freed.get(lane.name, 0) + size
            last = chunk
            if excess <= 0:
                break
    if last > cursor:
        store.delete_range(conn, lane.name, cursor, last)
        room.unread[lane.name] = (count, last)
        room.deleted[lane.name] = room.deleted.get(lane.name, 0) + count
    return excess


def apply(room: Room, lanes: dict[str, Lane]) -> None:
    """Bring memory in line with what the committed add() dropped."""
    if room.gone:
        for name in DROP_ORDER:
            lane = lanes[name]
            lane.returned = deque(run for run in lane.returned if run[0] not in room.gone)
            lane.ahead = deque(run for run in lane.ahead if run[0] not in room.gone)
    for chunk, mask in room.marked:
        chunk.live = chunk.n - mask.count(1)
        chunk.mask = mask
    for name, (count, last) in room.unread.items():
        lane = lanes[name]
        lane.unread -= count
        for done_id in [done_id for done_id in lane.done_at_open if done_id <= last]:
            del lane.done_at_open[done_id]
    for name, count in room.deleted.items():
        lanes[name].dropped += count
    for name, size in room.freed.items():
        lanes[name].bytes -= size
