"""A damaged buffer file: move it aside, start a fresh one, and keep every record that still reads.

A file that is not a database, is truncated, or fails SQLite's integrity check at open would
otherwise stop the agent at every restart until someone came. Instead the file (with its -wal
and -shm) is renamed to `<name>.damaged-<UTC time>`, kept for analysis, a new empty buffer takes
its place, and the chunks of the old file that still read cleanly are copied into it, lane by
lane in their order, minus the records already done. The new buffer has a new origin, so the
copied records get new ids; what could not be read is counted, for the report.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import compress
from operator import not_
from pathlib import Path
from typing import Any

from uploader.buffer.buffer import Buffer
from uploader.buffer.errors import BufferCorruptError
from uploader.buffer.records import LANES, NEWLINE, Heads, Row, stamps

log = logging.getLogger("uploader.buffer")

_PROBES = 48  # attempts to step over an unreadable stretch of a lane before giving the rest up


@dataclass(frozen=True, slots=True)
class Recovery:
    damaged: Path  # where the damaged file was moved
    problem: str
    recovered: int  # records copied into the new buffer
    unreadable: int  # chunk rows (of up to chunk_records records each) that could not be read
    lanes_cut: tuple[str, ...]  # lanes whose end could not be reached


def open_buffer(path: str | Path, **kwargs: Any) -> tuple[Buffer, Recovery | None]:
    """`Buffer(path, **kwargs)`, or, for a damaged file, a fresh buffer with what could be saved."""
    path = Path(path)
    try:
        return Buffer(path, **kwargs), None
    except BufferCorruptError as e:
        problem = str(e)
    aside = path.with_name(f"{path.name}.damaged-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            src.rename(f"{aside}{suffix}")
    log.error("buffer %s is damaged (%s); moved it to %s and started a new one", path, problem, aside)
    buf = Buffer(path, **kwargs)
    recovered, unreadable, cut = _salvage(aside, buf)
    if recovered or unreadable:
        log.error(
            "buffer %s: %d records of the damaged file copied into the new one; %d chunks could not be read%s",
            path,
            recovered,
            unreadable,
            f" and lanes {', '.join(cut)} were cut short" if cut else "",
        )
    return buf, Recovery(aside, problem, recovered, unreadable, tuple(cut))


def _salvage(damaged: Path, into: Buffer) -> tuple[int, int, list[str]]:
    try:
        conn = sqlite3.connect(f"{damaged.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0, 0, list(LANES)
    recovered = unreadable = 0
    cut: list[str] = []
    try:
        masks = _masks(conn)
        heads = _heads(conn)
        for lane in LANES:
            rows, bad, complete = _read_lane(conn, lane, masks.get(lane, {}), heads)
            unreadable += bad
            if not complete:
                cut.append(lane)
            for start in range(0, len(rows), 5000):
                into.add(rows[start : start + 5000])
            recovered += len(rows)
    finally:
        conn.close()
    return recovered, unreadable, cut


def _masks(conn: sqlite3.Connection) -> dict[str, dict[int, bytes]]:
    out: dict[str, dict[int, bytes]] = {}
    try:
        for lane, chunk, mask in conn.execute("SELECT lane, chunk, mask FROM done"):
            out.setdefault(lane, {})[chunk] = mask
    except sqlite3.Error:
        pass  # without the masks, records already sent may be sent again: duplicates, not losses
    return out


def _heads(conn: sqlite3.Connection) -> Heads:
    try:
        return Heads(conn.execute("SELECT id, head FROM heads").fetchall())
    except sqlite3.Error:
        return Heads()  # a file older than the heads, or its table unreadable: chunks that need one are unreadable


def _read_lane(
    conn: sqlite3.Connection, lane: str, masks: dict[int, bytes], heads: Heads
) -> tuple[list[Row], int, bool]:
    """The records of one lane that read cleanly, the chunks that did not, and whether its end was reached."""
    rows: list[Row] = []
    bad = 0
    after = 0
    probes = 0
    sql = f"SELECT seq, key, n, ts, bodies FROM lane_{lane} WHERE seq > ? ORDER BY seq LIMIT 1"
    while True:
        try:
            found = conn.execute(sql, (after,)).fetchone()
        except sqlite3.Error:
            # Step over the damage: try further and further ahead, a bounded number of times.
            probes += 1
            if probes > _PROBES:
                return rows, bad + 1, False
            bad += 1
            after += 2**probes
            continue
        if found is None:
            return rows, bad, True
        seq, key, n, ts_blob, blob = found
        after = seq
        try:
            ts = stamps(ts_blob)
            bodies = blob.split(NEWLINE)
            if len(ts) != n or len(bodies) != n:
                raise ValueError("counts do not match")
            bodies = heads.expand(bodies)
        except (ValueError, TypeError, KeyError):
            bad += 1
            continue
        keep = list(map(not_, masks[seq])) if seq in masks and len(masks[seq]) == n else [True] * n
        rows += [(lane, key, t, body) for t, body in compress(zip(ts, bodies, strict=True), keep)]
