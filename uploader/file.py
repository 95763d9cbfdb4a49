"""A sink that appends every message as one JSON line to a local file.

The demo's local receiver, and an export for air-gapped sites. A message counts as delivered
once it is written and flushed to the operating system (fsync'd when `fsync` is set).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from uploader.sink import Message


class FileSink:
    def __init__(self, path: str | Path, *, name: str = "file", fsync: bool = False) -> None:
        self.path = Path(path)
        self.name = name
        self.fsync = fsync
        self._fd: int | None = None

    async def run(self) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        await asyncio.Future()  # nothing to keep up: a local file stays open until stop()

    def topic(self, lane: str, key: str) -> str:
        return f"{key}/{lane}"  # one file holds every lane; the payload header says which

    @property
    def connected(self) -> bool:
        return self._fd is not None

    async def send(self, messages: Sequence[Message], *, timeout: float) -> list[bool]:
        if self._fd is None:
            return [False] * len(messages)
        data = b"".join(m.payload + b"\n" for m in messages)
        try:
            await asyncio.wait_for(asyncio.to_thread(self._write, data), timeout)
        except (OSError, TimeoutError):
            return [False] * len(messages)
        return [True] * len(messages)

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(self._fd)

    async def stop(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
