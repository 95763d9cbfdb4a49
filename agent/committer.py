"""Committing records to every sink's buffer, and what to do while a buffer refuses (a full disk).

Each `commit` writes the same rows (and marks) to every buffer, one transaction each; a buffer
given a set of lanes takes only rows of those lanes (the usage-log sink's takes `usage`), and
every mark. A buffer that
refuses is retried with backoff for up to `timeout` seconds; meanwhile the caller (an OPC UA
callback) waits, so the server holds its queue: backpressure. After that:
- data and event rows are lost: `commit` returns False and the caller reports them as a gap;
- gap records are held in memory and written first the next time, with the marks they clear;
- status rows are held too, the newest `HELD_STATUS` of them; how many were given up is itself
  reported once the buffer takes records again;
- marks that say where an open gap starts (`open:`) are held and written first, before any later
  value can move the start.
What the disk quota dropped is reported by the buffer's own accounts (`Buffer.drops()`), once the
episode is over or every `report_s`, as one growing record per machine.

The writes go through `Buffer.in_order`: while a buffer's thread checkpoints (the WAL copied into the
file, with its fsync), a commit waits there and the event loop goes on sending, answering and taking in
the next publish. Commits still run one at a time, in the order asked (seqs follow that order, and
what a buffer holds back goes with the next), and a caller that is cancelled does not cut one short:
it finishes, held records settled, and `close()` waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agent.gaps import GapRecord
from uploader import wire
from uploader.buffer import Buffer, BufferError, Mark, Row

log = logging.getLogger("agent.pipeline")

AGENT_KEY = "_agent"
HELD_STATUS = 1000

QuotaReport = Callable[[dict[str, tuple[int, float, float]]], list[Row]]


@dataclass
class _Held:
    """What one buffer could not take yet."""

    gaps: list[GapRecord] = field(default_factory=list)
    status: list[Row] = field(default_factory=list)
    status_lost: int = 0
    marks: dict[str, Mark] = field(default_factory=dict)
    failing: bool = False
    drops_reported: float = 0.0  # loop time of the last quota report


class Committer:
    def __init__(
        self,
        buffers: Sequence[Buffer],
        *,
        delays: Callable[[], Iterator[float]],
        timeout: float,
        report_s: float,
        quota_report: QuotaReport,
        on_stored: Callable[[], None],
        lanes: Sequence[frozenset[str] | None] = (),
    ) -> None:
        self.buffers = tuple(buffers)
        self._lanes = tuple(lanes) or (None,) * len(self.buffers)
        self._delays = delays
        self._timeout = timeout
        self._report_s = report_s
        self._quota_report = quota_report
        self._on_stored = on_stored
        self._held = [_Held() for _ in self.buffers]
        self.last_error = ""  # why the last commit failed, for the gap it becomes
        self._turn = asyncio.Lock()  # one commit at a time, in the order asked (first come, first served)
        self._running: set[asyncio.Future[bool]] = set()

    async def reconfigure(self, buffers: Sequence[Buffer], lanes: Sequence[frozenset[str] | None]) -> None:
        """A reload: commit to `buffers` from now on (after the commit under way); a buffer kept keeps what it
        still holds back."""
        async with self._turn:
            held = {id(b): h for b, h in zip(self.buffers, self._held, strict=True)}
            self.buffers = tuple(buffers)
            self._lanes = tuple(lanes) or (None,) * len(self.buffers)
            self._held = [held.get(id(b)) or _Held() for b in self.buffers]

    async def close(self) -> None:
        """Wait for the commits under way (their callers may be gone): then the buffers may be closed."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def hold_gaps(self, records: Sequence[GapRecord]) -> None:
        """Gap records for every buffer, written with the next commit (and kept until they are)."""
        for held in self._held:
            held.gaps += records

    async def commit(self, rows: list[Row], marks: Mapping[str, Mark] | None = None) -> bool:
        """Commit rows and marks to every buffer; False if one refused data or event rows for good."""
        done = asyncio.ensure_future(self._commit(rows, marks or {}))
        self._running.add(done)
        done.add_done_callback(self._running.discard)
        return await asyncio.shield(done)

    async def _commit(self, rows: list[Row], marks: Mapping[str, Mark]) -> bool:
        async with self._turn:
            ok = True
            for buf, held, lanes in zip(self.buffers, self._held, self._lanes, strict=True):
                mine = rows if lanes is None else [r for r in rows if r[0] in lanes]
                ok = await self._commit_one(buf, held, mine, marks, lanes) and ok
            self._on_stored()
            return ok

    async def _commit_one(
        self, buf: Buffer, held: _Held, rows: list[Row], marks: Mapping[str, Mark], lanes: frozenset[str] | None
    ) -> bool:
        gaps = len(held.gaps)  # gap records held from here on (hold_gaps, during an await below) wait for the next
        all_rows = [("gap", r.equipment, r.ts, r.body) for r in held.gaps] + held.status + rows
        if lanes is not None:
            all_rows = [r for r in all_rows if r[0] in lanes]
        if held.status_lost:
            lost = f"{held.status_lost} status records could not be stored (disk full)"
            now = datetime.now(UTC)
            all_rows.insert(0, ("status", AGENT_KEY, now.timestamp(), wire.status_body(now, "status-lost", lost)))
        unmark = [m for r in held.gaps[:gaps] for m in r.clears]
        if held.marks:
            marks = {**held.marks, **marks}
        delays = self._delays()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while True:
            try:
                dropped = await buf.in_order(buf.add, all_rows, list(marks.items()), unmark=unmark)
                break
            except BufferError as exc:
                if not held.failing:
                    log.error("cannot store %d records, retrying for %g s: %s", len(all_rows), self._timeout, exc)
                    held.failing = True
                if loop.time() >= deadline:
                    self._give_up(held, rows, marks, exc)
                    return not any(r[0] not in ("status", "gap") for r in rows)
                await asyncio.sleep(min(next(delays), max(0.0, deadline - loop.time())))
        if held.failing:
            log.info("storing records again")
        del held.gaps[:gaps]
        held.status, held.status_lost, held.marks, held.failing = [], 0, {}, False
        drops = buf.drops()
        if drops and (not dropped.count or loop.time() - held.drops_reported >= self._report_s):
            try:
                await buf.in_order(buf.add, self._quota_report(drops), settle=list(drops))
                held.drops_reported = loop.time()
            except BufferError as exc:
                log.error("cannot store the report of the quota's drops yet (kept in the buffer): %s", exc)
        return True

    def _give_up(self, held: _Held, rows: list[Row], marks: Mapping[str, Mark], exc: BufferError) -> None:
        self.last_error = str(exc).split(": ", 1)[-1]
        held.marks = {k: v for k, v in marks.items() if k.startswith("open:")}
        status = held.status + [r for r in rows if r[0] == "status"]
        held.status_lost += max(0, len(status) - HELD_STATUS)
        held.status = status[-HELD_STATUS:]
