"""What the buffer keeps in memory per lane: where reading has got to, and the records not in flight.

Invariant (5 of the buffer's): within a lane, chunks are read in seq order and each is read once. A
record not done is in an open batch (`held`), given back by `end()` (`returned`, in seq order,
handed out again before anything newer), read but not yet handed out (`ahead`, the rest of the
chunks read last), or in a chunk not read yet (`seq > cursor`, counted in `unread`). So
`pending = held + returned + ahead + unread`, and `begin()` never needs to skip over records
already in flight.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from uploader.buffer.records import StoredRecord


@dataclass(slots=True, eq=False)
class Chunk:
    """A chunk row read by `begin()`; in memory until its last record is done."""

    id: int  # the row's seq: records are id .. id + n - 1
    key: str
    n: int
    live: int  # records not done
    size: int  # estimated bytes of the row on disk
    mask: bytearray | None  # the done row (a byte per record, 1 = done), None while there is none

    def marked(self, items: Iterable[StoredRecord]) -> bytearray:
        """The done mask with `items` marked too."""
        mask = bytearray(self.n) if self.mask is None else bytearray(self.mask)
        first = self.id
        for item in items:
            mask[item[0] - first] = 1
        return mask


# Records of one chunk, in seq order. Lists in runs are never changed in place: they are shared.
Run = tuple[Chunk, list[StoredRecord]]


@dataclass(slots=True)
class Lane:
    name: str
    pending: int  # records stored and not done, in open batches included (as in the state row)
    unread: int  # of pending: in chunks after the cursor
    held: int = 0  # of pending: in open batches
    cursor: int = 0  # id of the last chunk read
    returned: deque[Run] = field(default_factory=deque)
    ahead: deque[Run] = field(default_factory=deque)
    # Done rows found at open, for chunks not read since: chunk id -> mask.
    done_at_open: dict[int, bytes] = field(default_factory=dict)
    bytes: int = 0  # estimated bytes of its chunk rows on disk
    # Counters since open.
    added: int = 0
    delivered: int = 0
    rejected: int = 0
    dropped: int = 0

    def waiting(self) -> bool:
        """Records that are in no open batch."""
        return self.pending != self.held


def chunk_id(chunk: Chunk) -> int:
    return chunk.id


def run_chunk_id(run: Run) -> int:
    return run[0].id
