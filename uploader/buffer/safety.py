"""Two files beside the database that keep it honest when the disk is not.

- `<file>.hwm`, the high-water mark: the highest seq the buffer has handed out, written after
  every `add()`. A database that lost committed records (its `-wal` deleted after a kill, an old
  copy restored) would otherwise hand the same seqs out again, and receivers would drop the new
  records as duplicates of old ones. At open, a database behind its high-water mark continues
  numbering after the mark, and says so.
- `<file>.reserve`, disk space kept back: SQLite needs free space even to delete (its WAL grows),
  so on a full disk the buffer could not even let go of delivered records. The reserve is
  released when a write fails for lack of space, which lets that write (and the deletes after
  it) succeed, and is taken again once the disk has room.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("uploader.buffer")

_HWM_LEN = 48  # "<origin> <seq, 20 digits>\n", padded: one fixed-size pwrite


class HighWater:
    def __init__(self, path: Path, origin: str) -> None:
        self.path = path
        self.origin = origin
        self._fd: int | None = None
        self._failing = False

    def read(self) -> tuple[str, int] | None:
        """(origin, seq) of the mark, None if there is none."""
        try:
            text = self.path.read_text(encoding="ascii", errors="replace").split()
        except OSError:
            return None
        if len(text) != 2 or not text[1].isdigit():
            return None
        return text[0], int(text[1])

    def check(self, last_seq: int, *, new_file: bool) -> tuple[tuple[int, int] | None, tuple[str, int] | None]:
        """At open: ((file's seq, mark) if the file is behind its mark, (origin, mark) of a lost earlier file)."""
        found = self.read()
        if found is None:
            return None, None
        origin, mark = found
        if origin != self.origin:
            if new_file and mark > 0:
                log.error(
                    "buffer %s is new, but a buffer with origin %s had handed out seqs up to %d here: that file "
                    "was lost (deleted, or its -wal lost before its first checkpoint), and its undelivered records "
                    "with it",
                    self.path.with_suffix(""),
                    origin,
                    mark,
                )
                return None, (origin, mark)
            return None, None
        if mark <= last_seq:
            return None, None
        log.error(
            "buffer %s: its records end at seq %d but seqs up to %d were handed out: the file lost committed "
            "records (a lost -wal, a restored copy, or a write that failed at the very end). Numbering continues "
            "after %d, so no id is given twice.",
            self.path.with_suffix(""),
            last_seq,
            mark,
            mark,
        )
        return (last_seq, mark), None

    def write(self, seq: int) -> None:
        """Record `seq` as handed out; a failure is logged once (numbering itself goes on)."""
        line = f"{self.origin} {seq:020d}".ljust(_HWM_LEN - 1).encode("ascii") + b"\n"
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            os.pwrite(self._fd, line, 0)
        except OSError as e:
            if not self._failing:
                log.warning("buffer: cannot write the high-water mark %s: %s", self.path, e)
                self._failing = True
            return
        self._failing = False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Reserve:
    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    @property
    def held(self) -> bool:
        return self.path.exists()

    def take(self, free: int) -> None:
        """Allocate the reserve if it is missing and `free` bytes leave room for it twice over."""
        if self.size <= 0 or self.held or free < 2 * self.size:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
        except OSError as e:
            log.warning("buffer: cannot keep %d bytes in reserve at %s: %s", self.size, self.path, e)
            self.path.unlink(missing_ok=True)

    def release(self) -> bool:
        """Give the reserved space back to the file system; False if there was none."""
        if not self.held:
            return False
        self.path.unlink(missing_ok=True)
        log.error(
            "buffer: the disk is full; released the %d MiB kept in reserve (%s) so records can still be "
            "stored and deleted. Free space on %s.",
            self.size // (1024 * 1024),
            self.path,
            self.path.parent,
        )
        return True


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize
