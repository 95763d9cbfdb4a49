"""The values the buffer takes and gives, and how records are packed into chunk rows and back.

Records arrive and leave in batches, so they are stored in chunks: one row holds up to
`chunk_records` records of one lane and key from one `add()`. (SQLite's cost per row was a large
part of what a record cost while every record had a row of its own; bench/bench_buffer.py.)
A chunk row is `(seq, key, n, ts_min, ts_max, ts, bodies)`: `seq` is its first record's seq, its
`n` records have the seqs `seq .. seq + n - 1` in the order they were given to `add()`; `ts` is the
n source times (float64, little-endian); `bodies` the n bodies joined with b"\\n" (a body that
contains b"\\n" is refused, so splitting gives the bodies back exactly).

A body given to `add()` as `(head, tail)` is stored as `#<id>:<tail>`, where `id` (six hex digits)
numbers `head` in the file's `heads` table (store.py): the part of a record that is the same in every
record of one element (its shell, submodel, path, node...) is kept once per file instead of once per
record, which is most of a data record's bytes. `begin()` gives `head + tail` back. A body given whole
is stored as it is (a JSON body starts with "{", never with "#").
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Final, NamedTuple, TypeVar, cast

LANES: Final = ("status", "gap", "event", "usage", "analysis", "data")
"""Priority order for sending."""
PROTECTED: Final = frozenset({"gap", "usage", "status", "analysis"})
"""Never dropped by the quota. `event` is dropped only when no `data` is left to drop."""

Body = bytes | tuple[bytes, bytes]
Row = tuple[str, str, float, Body]
"""(lane, key, ts, body): lane name, routing key (asset id), source time as epoch seconds, and the
record body, one JSON object as bytes without an "id" field and without a newline, either whole or
as (head, tail) whose concatenation is the body, with a head that many records share (see above)."""

Mark = str | tuple[Any, ...] | list[Any]
"""A mark's value as `add()` takes it: text, or a sequence of JSON values that is kept as its JSON text
(`marks()` gives it back as that text)."""

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


R = TypeVar("R", bound=Row)


def group(rows: Sequence[R]) -> dict[tuple[str, str], list[R]]:
    """Rows by (lane, key), in the order each first appears; per key the rows keep their order."""
    groups: dict[tuple[str, str], list[R]] = {}
    for row in rows:
        lane_key = row[:2]
        found = groups.get(lane_key)
        if found is None:
            if row[0] not in LANES:
                raise ValueError(f"unknown lane {row[0]!r}; lanes are {', '.join(LANES)}")
            found = groups[lane_key] = []
        found.append(row)
    return groups


def pack(seq: int, lane: str, key: str, part: Sequence[Row], heads: Heads, new: dict[int, bytes]) -> ChunkRow:
    """The chunk row holding `part` (rows of one lane and key) whose first record gets `seq`; heads not yet
    numbered are numbered in `new` (`Heads.stored`)."""
    _, _, stamps, given = zip(*part, strict=True)
    bodies = heads.stored(lane, key, given, new)
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


TAG_BYTES: Final = 8
MAX_HEAD: Final = 0xFFFFFF  # a head numbered beyond this is not kept apart: its records are stored whole


def head_tag(number: int) -> bytes:
    """What a stored body that refers to head `number` starts with: b"#" + six hex digits + b":"."""
    return b"#%06x:" % number


class Heads:
    """A file's heads in memory: the tag to store for each head, the head to give back for each tag."""

    def __init__(self, numbered: Iterable[tuple[int, bytes]] = ()) -> None:
        self.tags: dict[bytes, bytes] = {head: head_tag(number) for number, head in numbered}
        self.by_tag: dict[bytes, bytes] = {tag: head for head, tag in self.tags.items()}
        self.last = max((int(tag[1:7], 16) for tag in self.by_tag), default=0)

    def stored(self, lane: str, key: str, bodies: Sequence[Body], new: dict[int, bytes]) -> list[bytes]:
        """`bodies` as stored; a head not yet numbered gets the next number, in `new` (the caller stores the
        new heads with the rows, and `learn`s them once that committed)."""
        tags = self.tags
        try:
            return [tags[h] + t for h, t in bodies]  # type: ignore[index,operator]  # every body (head, tail), heads known
        except (KeyError, ValueError, TypeError):
            pass
        fresh = {head: head_tag(number) for number, head in new.items()}
        out: list[bytes] = []
        for body in bodies:
            if body.__class__ is not tuple:
                if body[:1] == b"#":
                    raise ValueError(
                        f"add: a body for lane {lane!r}, key {key!r} starts with '#', which marks a stored body "
                        "that refers to a head; a record body is a JSON object"
                    )
                out.append(body)  # type: ignore[arg-type]  # bytes, or refused by pack() for what it is
                continue
            head, tail = body
            if head.__class__ is not bytes or tail.__class__ is not bytes:
                raise TypeError(f"a (head, tail) body is two bytes, not {type(head).__name__}, {type(tail).__name__}")
            tag = tags.get(head) or fresh.get(head)
            if tag is None:
                if NEWLINE in head or head[:1] == b"#":
                    raise ValueError(
                        f"add: a body head for lane {lane!r}, key {key!r} contains a newline (b'\\n') or starts "
                        "with '#'; a record body is one line of JSON"
                    )
                number = self.last + len(new) + 1
                if number > MAX_HEAD:
                    out.append(head + tail)
                    continue
                new[number] = head
                tag = fresh[head] = head_tag(number)
            out.append(tag + tail)
        return out

    def learn(self, new: dict[int, bytes]) -> None:
        for number, head in new.items():
            tag = head_tag(number)
            self.tags[head] = tag
            self.by_tag[tag] = head
            self.last = max(self.last, number)

    def check(self, bodies: list[bytes]) -> None:
        """Raises KeyError for a tagged body whose tag this file has no head for."""
        by_tag = self.by_tag
        for tag in {b[:TAG_BYTES] for b in bodies if b[:1] == b"#"}:
            by_tag[tag]

    def expand(self, bodies: list[bytes]) -> list[bytes]:
        """Stored bodies as they were given: a tagged body becomes its head + tail. Raises KeyError for a tag
        this file has no head for."""
        by_tag = self.by_tag
        try:
            return [by_tag[b[:TAG_BYTES]] + b[TAG_BYTES:] for b in bodies]
        except KeyError:
            pass
        return [b if b[:1] != b"#" else by_tag[b[:TAG_BYTES]] + b[TAG_BYTES:] for b in bodies]
