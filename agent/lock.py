"""One agent per data directory: a lock file held for as long as the agent runs.

Two agents writing one data directory would share buffers, heartbeat and dead letters; the second
is refused at start with the pid of the first. Commands that only read (dead-letter list) do not
take the lock; commands that write (dead-letter replay) take it, so they run only while no agent
does. The lock is an advisory flock(2): the kernel drops it when the process dies, SIGKILL included,
so a crashed agent never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_FILE = "agent.lock"


class DataDirBusy(Exception):
    """Another process holds the data directory."""


class DataDirLock:
    def __init__(self, data_dir: Path, purpose: str = "agent") -> None:
        self.path = data_dir / LOCK_FILE
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirBusy(
                f"data directory {self.path.parent} is in use by another process ({holder}); "
                "only one agent may use a data directory: stop the other one, or give this one its own agent.data_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.purpose} pid {os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
