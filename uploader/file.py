"""A sink that appends every message as one JSON line to a local file.

The demo's local receiver, and an export for air-gapped sites. A message counts as delivered
once it is written and flushed to the operating system (fsync'd when `fsync` is set).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from uploader.sink import Message, Outcome

log = logging.getLogger(__name__)


class FileSink:
    def __init__(self, path: str | Path, *, name: str = "file", fsync: bool = False) -> None:
        self.path = Path(path)
        self.name = name
        self.fsync = fsync
        self._fd: int | None = None
        self._lock = asyncio.Lock()
        self._failing = False

    async def run(self) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        await asyncio.Future()  # nothing to keep up: a local file stays open until stop()

    def topic(self, lane: str, key: str) -> str:
        return f"{key}/{lane}"  # one file holds every lane; the payload header says which

    def announce(self, state: str, down: Sequence[str] = ()) -> None:
        return  # the file gets the status records; it has no channel of its own for the state

    @property
    def max_message_bytes(self) -> int | None:
        return None

    @property
    def connected(self) -> bool:
        return self._fd is not None

    async def send(self, messages: Sequence[Message], *, timeout: float) -> list[Outcome]:
        """Append the messages, one line each. A local write is not abandoned at `timeout` (a write
        still running in its thread would interleave with the resend); writes are serialised."""
        if self._fd is None:
            return [False] * len(messages)
        data = b"".join(m.payload + b"\n" for m in messages)
        async with self._lock:
            try:
                await asyncio.to_thread(self._write, self._fd, data)
            except OSError as e:
                if not self._failing:
                    log.error("file sink %r: cannot write %s: %s; the records stay buffered", self.name, self.path, e)
                self._failing = True
                return [False] * len(messages)
        if self._failing:
            log.info("file sink %r: writing %s again", self.name, self.path)
            self._failing = False
        return [True] * len(messages)

    def _write(self, fd: int, data: bytes) -> None:
        """All of `data` or nothing: a failed write is cut off again, so no partial line is left."""
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self.fsync:
                os.fsync(fd)
        except OSError:
            os.ftruncate(fd, start)
            raise

    async def stop(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
