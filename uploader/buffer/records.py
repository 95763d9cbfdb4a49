"""The values the buffer takes and gives, and how records are packed into chunk rows and back.

Records arrive and leave in batches, so they are stored in chunks: one row holds up to
`chunk_records` records of one lane and key from one `add()`. (SQLite's cost per row was a large
part of what a record cost while every record had a row of its own; bench/bench_buffer.py.)
A chunk row is `(seq, key, n, ts_min, ts_max, ts, bodies)`: `seq` is its first record's seq, its
`n` records have the seqs `seq .. seq + n - 1` in the order they were given to `add()`; `ts` is the
n source times (float64, little-endian); `bodies` the n bodies joined with b"\\n" (a body that
contains b"\\n" is refused, so splitting gives the bodies back exactly).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Final, NamedTuple, cast

LANES: Final = ("status", "gap", "event", "usage", "analysis", "data")
"""Priority order for sending."""
PROTECTED: Final = frozenset({"gap", "usage", "status", "analysis"})
"""Never dropped by the quota. `event` is dropped only when no `data` is left to drop."""

Row = tuple[str, str, float, bytes]
"""(lane, key, ts, body): lane name, routing key (asset id), source time as epoch seconds, and the
record body, one JSON object as bytes without an "id" field and without a newline."""

NEWLINE: Final = b"\n"
_SWAP_TS: Final = sys.byteorder == "big"

# (seq, key, n, ts_min, ts_max, ts, bodies): a chunk row as add() writes it.
ChunkRow = tuple[int, str, int, float, float, bytes, bytes]


class StoredRecord(NamedTuple):
    """One stored record as `begin()` hands it out.

    A named tuple, not a dataclass: `begin()` makes one per record, and this is the cheapest
    value with attributes to make.
    """

    seq: int
    lane: str
    key: str
    ts: float
    body: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    """Records of one lane, oldest first, in flight until passed to `end()`."""

    lane: str
    items: tuple[StoredRecord, ...]


@dataclass(frozen=True, slots=True)
class Dropped:
    """What one `add()` dropped to stay within the quota; the caller reports it as a gap.

    `by_key` maps each routing key to (count, earliest ts, latest ts) of its dropped records.
    """

    count: int
    by_key: dict[str, tuple[int, float, float]]


@dataclass(frozen=True, slots=True)
class BufferStats:
    """Counters per lane since open, and the size of the database."""

    added: dict[str, int]
    delivered: dict[str, int]
    rejected: dict[str, int]
    dropped: dict[str, int]
    pending: dict[str, int]
    db_bytes: int
    """page_count * page_size: the size of the database file once the WAL is checkpointed."""
    used_bytes: int
    """db_bytes minus free pages: what the quota is measured against."""
    wal_bytes: int
    quota_bytes: int
    over_quota: bool
    """The last add() could not get under the quota: only protected records, or records in open
    batches, were left to drop. The rows were stored anyway."""


def group(rows: Sequence[Row]) -> dict[tuple[str, str], list[Row]]:
    """Rows by (lane, key), in the order each first appears; per key the rows keep their order."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        lane_key = row[:2]
        found = groups.get(lane_key)
        if found is None:
            if row[0] not in LANES:
                raise ValueError(f"unknown lane {row[0]!r}; lanes are {', '.join(LANES)}")
            found = groups[lane_key] = []
        found.append(row)
    return groups


def pack(seq: int, lane: str, key: str, part: Sequence[Row]) -> ChunkRow:
    """The chunk row holding `part` (rows of one lane and key) whose first record gets `seq`."""
    _, _, stamps, bodies = zip(*part, strict=True)
    # bytes.find is memchr; `in` on bytes first tries the needle as an int, which costs more.
    if max(map(bytes.find, bodies, repeat(NEWLINE))) >= 0:
        raise ValueError(
            f"add: a body for lane {lane!r}, key {key!r} contains a newline (b'\\n'); "
            "a record body must be one line of JSON"
        )
    ts = array("d", stamps)
    ts_min, ts_max = min(ts), max(ts)
    if _SWAP_TS:
        ts.byteswap()
    return (seq, key, len(part), ts_min, ts_max, ts.tobytes(), NEWLINE.join(bodies))


def stamps(blob: bytes) -> array[float]:
    """The source times of a chunk row's `ts` column."""
    ts = array("d")
    ts.frombytes(blob)
    if _SWAP_TS:
        ts.byteswap()
    return ts


def unpack(seq: int, lane: str, key: str, ts: array[float], bodies: list[bytes]) -> list[StoredRecord]:
    """The records of one chunk row, seqs from `seq`."""
    # tuple.__new__ skips the NamedTuple's own __new__, a Python function: half the cost per record.
    made = map(
        tuple.__new__, repeat(StoredRecord), zip(range(seq, seq + len(ts)), repeat(lane), repeat(key), ts, bodies)
    )
    return cast(list[StoredRecord], list(made))
