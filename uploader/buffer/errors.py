"""What the buffer raises: storage errors that name the file and say what to do."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class BufferError(builtins.BufferError):
    """Base of every storage error the buffer raises; `path` is the database file.

    It subclasses the built-in of the same name, so `except BufferError` also catches it in a
    module that forgot the import.
    """

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"buffer {path}: {message}")
        self.path = path


class BufferFullError(BufferError):
    """The disk (or the database's page limit) is full. Nothing was written; retry after freeing space."""


class BufferCeilingError(BufferFullError):
    """Records that are never dropped (gap, usage, status, analysis) fill their share of the quota: other
    records are refused until those are delivered."""


class BufferIOError(BufferError):
    """The file could not be opened, read or written."""


class BufferCorruptError(BufferError):
    """The file is not an SQLite database, or it is damaged."""


class BufferFormatError(BufferError):
    """The file is an SQLite database, but not a buffer this version can use."""


class BufferLockedError(BufferError):
    """Another connection (another agent process) has the file open."""


MOVE_ASIDE = "Stop the agent, move the file aside (keep it for analysis) and start again with a new, empty buffer."


@contextmanager
def sqlite_errors(path: Path, doing: str) -> Iterator[None]:
    """Turn SQLite's errors into ones that name the file and say what to do."""
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            raise
        raise _translate(path, code & 0xFF, exc, doing) from exc


def _translate(path: Path, code: int, exc: sqlite3.Error, doing: str) -> Exception:
    if code == sqlite3.SQLITE_FULL:
        return BufferFullError(
            path,
            f"{doing} failed, the disk or the database's size limit is full ({exc}). Nothing was "
            "written. Free space on that file system (or set quota_bytes well below the free space), "
            "then retry.",
        )
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return BufferCorruptError(
            path, f"{doing} failed, the file is not a buffer database or is damaged ({exc}). {MOVE_ASIDE}"
        )
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return BufferLockedError(
            path,
            f"{doing} failed, the file is in use by another process ({exc}). Only one agent may use "
            "a buffer file: stop the other one, or give this one its own buffer path.",
        )
    if code == sqlite3.SQLITE_CONSTRAINT:
        return TypeError(f"{doing}: every row must be (lane: str, key: str, ts: float, body: bytes) ({exc})")
    if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY):
        return BufferIOError(
            path,
            f"{doing} failed ({exc}). Check that the directory exists and that the agent's user may "
            "create and write files in it.",
        )
    return BufferIOError(
        path,
        f"{doing} failed ({exc}); nothing was written. Check the disk (kernel log), free space and "
        "file-size limits, then retry.",
    )
