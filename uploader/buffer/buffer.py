"""Durable store-and-forward buffer: records wait here, on disk, until the far end confirmed them.

One SQLite database in WAL mode (store.py), one table per lane, records packed into chunk rows
(records.py). The forwarder takes a batch with `begin()`, a sink writes it, and `end()` deletes
what the far end accepted (or rejected for good); the rest of the batch goes back to the front of
its lane (batches.py). When an `add()` would pass the quota, the oldest droppable records make
room (quota.py). "Done" below means accepted or rejected by `end()`, or dropped by the quota.

Invariants (each file states the ones it keeps: 4 in batches.py, 5 in lanes.py, 6 in quota.py,
7 in store.py)
1. A record is stored, pending in its lane, from the `add()` that returned until it is done.
   Only two things make it done: `end()` (the far end accepted or rejected it) and the quota (the
   record is counted in the `Dropped` that `add()` returns, and in `stats()`). Nothing else does.
   A done record is never handed out again, in this process or after a restart: its chunk row is
   deleted or its byte in the chunk's done row is set, in the same transaction.
2. `add()` is one transaction: the chunks, the records the quota dropped for them, the sequence
   high-water mark and the per-lane counters commit together or not at all. When it returns the
   commit is in the WAL; when it raises, nothing of it was written and it may simply be retried.
3. `seq` is assigned in `add()` order, grouped by lane and key (all rows of the first (lane, key)
   that appears in the call, then the next...); per key the order of the rows is kept. It is
   strictly increasing and never reused: the high-water mark is persisted in the same
   transaction as the chunks, so deleting every record and restarting does not bring a number
   back. A receiver dedupes by `(origin, seq)`.

Every call blocks for one transaction, typically well under a few milliseconds.

Threads and the disk's slow moments: the buffer has a thread of its own for what waits on the disk.
Checkpoints (copying the WAL into the database, with its fsync: 155–319 ms seen at 50,000 values/s,
seconds on a worn SD card) run there, not inside a caller's transaction: once the writes since the last
one made about `CHECKPOINT_PAGES` pages (estimated from what they wrote, scaled by what the last
checkpoint found), one is queued. `in_order(call, ...)` is how an event loop calls the
buffer: at once while that thread is idle, else queued behind what it has, awaited, the loop going
on meanwhile; with `synchronous="full"` (an fsync per commit) every call goes there. Calls given to
`in_order` run in the order given. Every call that touches the file or the queues holds the
buffer's lock, so the loop and the thread never interleave; `pending()`, `waiting()`, `drops()`,
`head()` and `whole()` read memory only and do not wait for it (a count may be a transaction old).
Called without a running event loop (tools, tests), the buffer checkpoints in place, as SQLite would.
bench/bench_loop_stall.py measures why only this goes to the thread: whole `add()`s there cost 20–40 %
more CPU (the GIL passed back and forth) and shortened the loop's standstills by a few milliseconds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal, ParamSpec, TypeVar

from uploader.buffer import quota
from uploader.buffer.batches import Batches
from uploader.buffer.errors import BufferCeilingError, BufferError, BufferFullError
from uploader.buffer.lanes import Lane
from uploader.buffer.records import (
    LANES,
    PROTECTED,
    Batch,
    BufferStats,
    ChunkRow,
    Dropped,
    Mark,
    Row,
    group,
    pack,
)
from uploader.buffer.safety import HighWater, Reserve, free_bytes
from uploader.buffer.store import Store

log = logging.getLogger("uploader.buffer")

_DROP = "drop:"  # marks the buffer keeps itself: the quota's drops not yet reported

CHECKPOINT_PAGES = 1000
"""Pages written since the last checkpoint, as estimated, after which one is queued in the buffer's thread: SQLite's
own default. Its auto-checkpoint, inside a commit, stays on at twice that (store.py) as the backstop."""
_MARK_BYTES = 100  # what a mark may take in the log row, and again when the log is folded into the marks table
_END_PAGES = 4  # what deleting a batch's chunk rows writes: their leaf pages, the free list

_P = ParamSpec("_P")
_R = TypeVar("_R")


class Buffer:
    """The durable queue between the pipeline and the sinks. See the module docstring for the rules."""

    LANES: ClassVar[tuple[str, ...]] = LANES
    """Priority order for sending."""
    PROTECTED: ClassVar[frozenset[str]] = PROTECTED
    """Never dropped by the quota. `event` is dropped only when no `data` is left to drop."""

    origin: str
    """Random id (12 hex characters) created with the database file and kept in it."""

    def __init__(
        self,
        path: str | Path,
        *,
        quota_bytes: int,
        synchronous: Literal["normal", "full"] = "normal",
        busy_timeout: float = 5.0,
        chunk_records: int = 500,
        min_free_bytes: int = 32 * 1024 * 1024,
        reserve_bytes: int = 16 * 1024 * 1024,
        protected_ceiling: int | None = None,
    ) -> None:
        """Open the buffer at `path`, creating it if the file is absent or empty.

        `busy_timeout` is how long to wait for another process holding the file before failing
        with `BufferLockedError`. `chunk_records` is the most records stored in one row; the
        forwarder's records per message is a good value. The file does not grow into the last
        `min_free_bytes` of its disk (older data is dropped instead, as for the quota), and
        `reserve_bytes` are kept aside for a full disk (safety.py). Gap, usage, status and analysis records
        are never dropped; once they alone take `protected_ceiling` bytes (default: a tenth of
        the quota), `add()` refuses rows of other lanes (`BufferCeilingError`) until they are
        delivered, rather than let them grow without bound.

        Raises `BufferCorruptError` for a file that is not a database or fails its integrity
        check (recover.py opens a fresh one and keeps what reads cleanly), `BufferFormatError` for
        another application's database, an older or a newer schema.
        """
        if quota_bytes <= 0:
            raise ValueError(f"quota_bytes must be positive, got {quota_bytes}")
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        if chunk_records < 1:
            raise ValueError(f"chunk_records must be at least 1, got {chunk_records}")
        self.path = Path(path)
        self._lock = threading.RLock()
        # Started when first needed; one worker, so what is given to it runs in that order.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"buffer-{self.path.stem}")
        self._queued = 0  # calls given to the thread and not finished (counted on the event loop)
        self._checkpointing = False  # one is queued or running
        self._written = 0.0  # pages written since the last checkpoint, as estimated and scaled
        self._scale = 1.0  # pages a checkpoint found per page estimated
        self.checkpoint_frames = 0
        """The most pages a checkpoint of this buffer found in the WAL (SQLite's backstop runs at 2,000)."""
        self._writes_off_loop = synchronous == "full"
        self.quota_bytes = quota_bytes
        self.chunk_records = chunk_records
        self._closed = False
        self._over_quota = False
        self.min_free_bytes = min_free_bytes
        self.protected_ceiling = protected_ceiling if protected_ceiling is not None else quota_bytes // 10
        self._ceiling_hit = False
        self._store = Store(self.path, synchronous=synchronous, busy_timeout=busy_timeout)
        self.origin = self._store.origin
        self._high_water = HighWater(self.path.with_name(self.path.name + ".hwm"), self.origin)
        self._reserve = Reserve(self.path.with_name(self.path.name + ".reserve"), reserve_bytes)
        self.rolled_back: tuple[int, int] | None = None
        """(seq in the file, high-water mark) when the file was behind the seqs already handed out."""
        self.replaced: tuple[str, int] | None = None
        """(origin, seqs handed out) of an earlier file at this path that is gone: its undelivered records with it."""
        self.rolled_back, self.replaced = self._high_water.check(self._store.last_seq, new_file=self._store.created)
        if self.rolled_back is not None:
            self._store.last_seq = self.rolled_back[1]
        # Nothing is read yet: every pending record is in a chunk after the cursor.
        self._lanes = {
            name: Lane(name, pending=count, unread=count, done_at_open=self._store.done[name])
            for name, count in self._store.pending.items()
        }
        for name, (payload, n) in self._store.lane_sizes().items():
            self._lanes[name].bytes = payload + n * quota.CHUNK_OVERHEAD
        self._batches = Batches(self._store, self._lanes)
        self._pages = self._store.pages(self._store.conn)  # the file's pages and free pages, as stats() last saw them
        marks = self._store.marks()
        self._drops: dict[str, tuple[int, float, float]] = {}
        for k, v in marks.items():
            if k.startswith(_DROP):
                count, first, last = v.split("|")
                self._drops[k.removeprefix(_DROP)] = (int(count), float(first), float(last))

    def marks(self) -> dict[str, str]:
        """Every mark saved by `add()`, latest value per key (the buffer's own drop accounts excluded)."""
        with self._lock:
            marks = self._store.marks()
        return {k: v for k, v in marks.items() if not k.startswith(_DROP)}

    def drops(self) -> dict[str, tuple[int, float, float]]:
        """Records the quota dropped and nobody reported yet: per key (count, earliest ts, latest ts).

        Kept in the file, in the transaction that dropped them, so a crash cannot make a drop silent;
        `add(..., settle=keys)` clears them in the transaction that stores their report.
        """
        return dict(self._drops)

    async def in_order(self, call: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """`call(*args, **kwargs)`, one of this buffer's methods, from an event loop that must not wait for the
        disk: called at once while the buffer's thread is idle, else run there behind what it has (a
        checkpoint; with `synchronous="full"`, every call) and awaited. Calls run in the order given.
        Cancelling the wait does not stop a call already given to the thread: an `add()` is then still
        stored (or fails) in full, a `begin()`'s batch stays open until `release()` (which waits for it)."""
        if not self._queued and not self._writes_off_loop:
            return call(*args, **kwargs)
        # Shielded: a cancelled wait neither takes the call back from the thread's queue nor stops counting it.
        return await asyncio.shield(self._in_thread(functools.partial(call, *args, **kwargs)))

    def _in_thread(self, job: Callable[[], _R]) -> asyncio.Future[_R]:
        self._queued += 1
        done = asyncio.get_running_loop().run_in_executor(self._thread, job)
        done.add_done_callback(self._finished)
        return done

    def _finished(self, done: asyncio.Future[Any]) -> None:
        self._queued -= 1

    def _wrote(self, pages: int) -> None:
        """After a write transaction of about `pages` pages: once `CHECKPOINT_PAGES` are written, a checkpoint, in
        the buffer's thread when there is an event loop to spare the wait (here otherwise: in that thread, or in
        a tool)."""
        self._written += pages * self._scale
        if self._checkpointing or self._written < CHECKPOINT_PAGES:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._checkpoint()
            return
        self._checkpointing = True
        self._in_thread(self._checkpoint)

    def _checkpoint(self) -> None:
        with self._lock:
            try:
                estimated, self._written = self._written / self._scale, 0.0
                frames = self._store.checkpoint()
                if estimated >= 50:  # too few pages say little about the next thousand
                    self._scale = min(4.0, max(0.5, frames / estimated))
                self.checkpoint_frames = max(self.checkpoint_frames, frames)
            except BufferError as exc:
                log.warning("buffer %s: checkpoint failed, will retry after the next write: %s", self.path, exc)
            except Exception:  # nobody awaits it: say it here
                log.exception("buffer %s: checkpoint failed, will retry after the next write", self.path)
            finally:
                self._checkpointing = False

    @property
    def last_seq(self) -> int:
        """The highest seq ever assigned in this file (0 for a new file)."""
        return self._store.last_seq

    # -- adding -----------------------------------------------------------------------------------

    def add(
        self,
        rows: Sequence[Row],
        marks: Iterable[tuple[str, Mark]] = (),
        *,
        unmark: Iterable[str] = (),
        settle: Iterable[str] = (),
    ) -> Dropped:
        """Store `rows` in one transaction; durable (committed) when it returns.

        Seqs are assigned grouped by (lane, key), in the order each first appears in `rows`; per
        key the rows keep their order. `marks` (key, value: text, or a sequence of JSON values kept as its
        JSON text) are saved in the same transaction and
        read back with `marks()`: the caller's own progress notes (the agent keeps each element's
        last source time there, so a restart does not store a value it already had under a
        second id); `unmark` deletes marks; `settle` clears the drop accounts of these keys (see
        `drops()`). Any of them alone is a transaction of its own.

        If the rows would take the database over the quota, the oldest droppable records are
        deleted in the same transaction and returned as `Dropped`. Raises `ValueError` for an
        unknown lane or a body containing b"\\n", `TypeError` for a wrongly typed row,
        `BufferError` for storage failures; after any of those nothing was written.
        """
        with self._lock:
            return self._add_rows(rows, list(marks), list(unmark), settle)

    def _add_rows(
        self, rows: Sequence[Row], marks: list[tuple[str, Mark]], unmark: list[str], settle: Iterable[str]
    ) -> Dropped:
        settle = [k for k in settle if k in self._drops]
        if not rows and not marks and not unmark and not settle:
            return Dropped(0, {})
        heads: dict[int, bytes] = {}  # heads this add() numbers
        try:
            chunks, incoming, seq = self._chunks(rows, heads)
        except TypeError as exc:
            raise TypeError(
                f"add: every row must be (lane: str, key: str, ts: float, body: bytes or (head, tail) bytes) ({exc})"
            ) from exc
        self._check_ceiling(chunks)
        try:
            return self._add(chunks, incoming, seq, marks, unmark, settle, heads)
        except BufferFullError:
            if not self._reserve.release():
                raise
            return self._add(chunks, incoming, seq, marks, unmark, settle, heads)

    def _add(
        self,
        chunks: dict[str, list[ChunkRow]],
        incoming: int,
        seq: int,
        marks: list[tuple[str, Mark]],
        unmark: list[str],
        settle: list[str],
        heads: dict[int, bytes],
    ) -> Dropped:
        added = {lane: sum(chunk[2] for chunk in lane_chunks) for lane, lane_chunks in chunks.items()}
        pending = {name: lane.pending for name, lane in self._lanes.items()}
        store = self._store
        drops = {k: v for k, v in self._drops.items() if k not in settle}
        disk_room = None
        if chunks:
            free = free_bytes(self.path.parent)
            disk_room = free - self.min_free_bytes
            self._reserve.take(free - self.min_free_bytes)
        with store.transaction("add") as conn:
            room = (
                quota.make_room(store, conn, self._lanes, incoming, self.quota_bytes, pending, disk_room)
                if chunks
                else None
            )
            if heads:
                store.insert_heads(conn, heads)
            for lane, lane_chunks in chunks.items():
                store.insert(conn, lane, lane_chunks)
            for lane, count in added.items():
                pending[lane] += count
            store.write_state(conn, seq, pending.values())
            changed: dict[str, Mark | None] = dict(marks)
            changed |= dict.fromkeys(unmark)
            changed |= dict.fromkeys(_DROP + k for k in settle)
            if room is not None and room.by_key:
                for key, (n, first, last) in room.by_key.items():
                    was = drops.get(key)
                    drops[key] = (
                        (int(n), first, last)
                        if was is None
                        else (was[0] + int(n), min(was[1], first), max(was[2], last))
                    )
                changed |= {_DROP + k: f"{c}|{f!r}|{la!r}" for k, (c, f, la) in drops.items()}
            store.write_marks(conn, changed)
        self._drops = drops
        if heads:
            store.heads.learn(heads)
        if seq != store.last_seq:
            self._high_water.write(seq)
        store.last_seq = seq
        written = incoming + (len(marks) + len(unmark) + len(settle)) * _MARK_BYTES + sum(map(len, heads.values()))
        self._wrote(2 + written // store.page_size + (_END_PAGES if room is not None and room.deleted else 0))
        for name, count in pending.items():
            self._lanes[name].pending = count
        for name, count in added.items():
            self._lanes[name].added += count
            self._lanes[name].unread += count
        for name, lane_chunks in chunks.items():
            self._lanes[name].bytes += sum(
                quota.estimate(len(c[1]) + len(c[5]) + len(c[6]), store.page_size) for c in lane_chunks
            )
        if room is None:
            return Dropped(0, {})
        quota.apply(room, self._lanes)
        self._note_quota(room.short)
        return Dropped(
            sum(room.deleted.values()),
            {key: (int(n), first, last) for key, (n, first, last) in room.by_key.items()},
        )

    def _check_ceiling(self, chunks: dict[str, list[ChunkRow]]) -> None:
        held = sum(self._lanes[name].bytes for name in PROTECTED)
        if held <= self.protected_ceiling or all(lane in PROTECTED for lane in chunks):
            if self._ceiling_hit and held <= self.protected_ceiling:
                log.info("buffer %s: gap/usage/status/analysis records are below their ceiling again", self.path)
                self._ceiling_hit = False
            return
        if not self._ceiling_hit:
            log.error(
                "buffer %s: gap, usage, status and analysis records waiting to be sent take %d bytes, over their "
                "ceiling of %d; new values are refused (and reported as a gap) until they are delivered",
                self.path,
                held,
                self.protected_ceiling,
            )
            self._ceiling_hit = True
        raise BufferCeilingError(
            self.path,
            f"gap, usage, status and analysis records take {held} bytes (ceiling {self.protected_ceiling}); they are "
            "never dropped, so new values are refused until the far end takes them",
        )

    def _chunks(self, rows: Sequence[Row], heads: dict[int, bytes]) -> tuple[dict[str, list[ChunkRow]], int, int]:
        """The rows as chunk rows per lane, the bytes they will take, and the last seq they use; the heads
        they number anew go into `heads`."""
        chunks: dict[str, list[ChunkRow]] = {}
        seq = self._store.last_seq
        incoming = 0
        size = self.chunk_records
        page_size = self._store.page_size
        for (lane, key), rows_of_key in group(rows).items():
            lane_chunks = chunks.setdefault(lane, [])
            for start in range(0, len(rows_of_key), size):
                part = rows_of_key[start : start + size] if len(rows_of_key) > size else rows_of_key
                row = pack(seq + 1, lane, key, part, self._store.heads, heads)
                lane_chunks.append(row)
                seq += len(part)
                incoming += quota.estimate(len(key) + 9 * len(part) + len(row[6]), page_size)
        return chunks, incoming, seq

    def _note_quota(self, short: bool) -> None:
        if short and not self._over_quota:
            log.warning(
                "buffer %s: over its quota of %d bytes with nothing left to drop (only gap/usage/status/analysis "
                "records and records being sent remain); storing new records anyway",
                self.path,
                self.quota_bytes,
            )
        elif self._over_quota and not short:
            log.info("buffer %s: back within its quota of %d bytes", self.path, self.quota_bytes)
        self._over_quota = short

    # -- sending ----------------------------------------------------------------------------------

    def begin(self, lane: str, max_records: int, max_bytes: int | None = None) -> Batch | None:
        """Hand out up to `max_records` of `lane`'s oldest records that are in no open batch.

        `max_bytes` caps the sum of body lengths, except that a batch always holds at least one
        record (so one oversized record cannot block the lane). Returns None if nothing is waiting.
        The batch stays open, in memory only, until passed to `end()`.
        """
        state = self._lane(lane)
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records}")
        with self._lock:
            return self._batches.begin(state, max_records, max_bytes)

    def end(self, batch: Batch, accepted: Iterable[int], rejected: Iterable[int] = ()) -> None:
        """Close `batch`: delete the `accepted` and `rejected` seqs, give the rest back to its lane.

        The rest is handed out again, in seq order, before anything newer. Raises `ValueError`
        for a batch that is not open or seqs that are not in it. If the delete fails
        (`BufferError`), the batch stays open and `end()` may be called again.
        """
        with self._lock:
            try:
                n_accepted, n_rejected = self._batches.end(batch, accepted, rejected)
            except BufferFullError:
                if not self._reserve.release():
                    raise
                n_accepted, n_rejected = self._batches.end(batch, accepted, rejected)
            lane = self._lanes[batch.lane]
            lane.delivered += n_accepted
            lane.rejected += n_rejected
            if n_accepted or n_rejected:
                self._wrote(_END_PAGES + self._store.give_space_back())

    @property
    def heads_apart(self) -> bool:
        """Whether `begin()` hands out bodies as stored: a body given to `add()` as (head, tail) then comes as
        its head's tag (`head_tag`, `TAG_BYTES` long) + tail, and `head(tag)` gives the head; a body given whole
        comes whole. Off (every body whole) unless the sender turns it on; set it while no batch is open (the
        open ones are given back)."""
        return self._batches.heads_apart

    @heads_apart.setter
    def heads_apart(self, on: bool) -> None:
        with self._lock:
            self._batches.set_heads_apart(on)

    def head(self, tag: bytes) -> bytes:
        """The head a stored body's tag (its first `TAG_BYTES`) stands for; KeyError if the file has none."""
        return self._store.heads.by_tag[tag]

    def whole(self, bodies: list[bytes]) -> list[bytes]:
        """Bodies as handed out with `heads_apart`, made whole (head + tail)."""
        return self._store.heads.expand(bodies)

    def release(self) -> int:
        """End every open batch with nothing done (no disk write): for a sender that died mid-batch.

        Its records go back to the front of their lanes; returns how many. Given to `in_order`, it comes after
        a `begin()` given there before it whose caller was cancelled, and releases that batch too.
        """
        with self._lock:
            return self._batches.release()

    # -- reporting and lifetime ---------------------------------------------------------------------

    def pending(self) -> dict[str, int]:
        """Records stored per lane, in priority order, including those in open batches."""
        return {name: lane.pending for name, lane in self._lanes.items()}

    def waiting(self) -> dict[str, int]:
        """Records stored per lane that are in no open batch: what `begin()` can hand out."""
        return {name: lane.pending - lane.held for name, lane in self._lanes.items()}

    def stats(self) -> BufferStats:
        """Counters since open and the current size of the database (while the buffer's thread has the file, as
        of the last look: a status page or a metrics scrape does not wait for a checkpoint)."""
        store = self._store
        if self._lock.acquire(blocking=False):
            try:
                with store.errors("stats"):
                    self._pages = store.pages(store.conn)
            finally:
                self._lock.release()
        pages, free = self._pages
        lanes = self._lanes.values()
        return BufferStats(
            added={lane.name: lane.added for lane in lanes},
            delivered={lane.name: lane.delivered for lane in lanes},
            rejected={lane.name: lane.rejected for lane in lanes},
            dropped={lane.name: lane.dropped for lane in lanes},
            pending=self.pending(),
            db_bytes=pages * store.page_size,
            used_bytes=(pages - free) * store.page_size,
            wal_bytes=store.wal_bytes(),
            quota_bytes=self.quota_bytes,
            over_quota=self._over_quota,
        )

    def close(self) -> None:
        """Checkpoint and close. Open batches are forgotten: their records are pending at next open."""
        if self._closed:
            return
        self._closed = True
        self._thread.shutdown(wait=True)  # a call still running there (its caller cancelled) ends first
        with self._lock:
            self._batches.forget()
            self._high_water.close()
            self._store.close()

    def __enter__(self) -> Buffer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _lane(self, name: str) -> Lane:
        try:
            return self._lanes[name]
        except KeyError:
            raise ValueError(f"unknown lane {name!r}; lanes are {', '.join(LANES)}") from None
