"""The durable store-and-forward buffer (SQLite, WAL): `add(rows) → dropped`, `begin(lane) → batch`, `end(batch, …)`.

buffer.py is the entry point and states the delivery invariants; the other modules each keep
their own: store.py the file, records.py the chunk format, lanes.py the in-memory queues,
batches.py begin/end, quota.py what the disk quota may drop.
"""

from uploader.buffer.buffer import Buffer
from uploader.buffer.errors import (
    BufferCeilingError,
    BufferCorruptError,
    BufferError,
    BufferFormatError,
    BufferFullError,
    BufferIOError,
    BufferLockedError,
)
from uploader.buffer.records import Batch, BufferStats, Dropped, Mark, Row, StoredRecord
from uploader.buffer.store import APPLICATION_ID, SCHEMA_VERSION

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "Batch",
    "Buffer",
    "BufferCeilingError",
    "BufferCorruptError",
    "BufferError",
    "BufferFormatError",
    "BufferFullError",
    "BufferIOError",
    "BufferLockedError",
    "BufferStats",
    "Dropped",
    "Mark",
    "Row",
    "StoredRecord",
]
