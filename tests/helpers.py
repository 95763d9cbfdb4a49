"""Shared test helpers: condition waits with deadlines, what an adapter emitted, skips that fail under CI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import orjson
import pytest

from adapters.sample import Event, Interruption, NodeProblem, Sample, SourceState

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")

# OPC UA built-in type -> xs: value type, written out by hand from the mapping table in
# shared/reference/aas-notes.md, so a wrong row in aas_models/types.py fails a test.
EXPECTED_XS: dict[str, str] = {
    "Boolean": "xs:boolean", "SByte": "xs:byte", "Byte": "xs:unsignedByte", "Int16": "xs:short",
    "UInt16": "xs:unsignedShort", "Int32": "xs:int", "UInt32": "xs:unsignedInt", "Int64": "xs:long",
    "UInt64": "xs:unsignedLong", "Float": "xs:float", "Double": "xs:double", "String": "xs:string",
    "DateTime": "xs:dateTime", "UtcTime": "xs:dateTime", "ByteString": "xs:base64Binary",
    "LocalizedText": "langString", "StatusCode": "xs:unsignedInt", "Guid": "xs:string", "NodeId": "xs:string",
}  # fmt: skip


def file_records(
    path: Path, lane: str, keep: Callable[[dict[str, Any]], bool] = lambda r: True
) -> list[dict[str, Any]]:
    """The records of `lane` a file sink wrote to `path` (none while it has written nothing), those `keep` takes."""
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_bytes().splitlines():
        msg = orjson.loads(line)
        if msg["lane"] == lane:
            out += [r for r in msg["records"] if keep(r)]
    return out


def unavailable(reason: str) -> NoReturn:
    """A test that cannot run: skipped with `reason` on a developer's machine, failed under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"cannot run under CI=true: {reason}")
    pytest.skip(reason)


def wait_until(what: str, check: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


async def until(check: Callable[[], object], timeout: float, what: str = "the condition") -> None:
    """In a coroutine: wait until `check()` is truthy (for states that offer nothing to await); fail after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


class Collected:
    """What an adapter under test emitted, by kind."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.events: list[Event] = []
        self.problems: list[NodeProblem] = []
        self.states: list[SourceState] = []
        self.interruptions: list[Interruption] = []

    async def emit(self, samples: Sequence[Sample]) -> None:
        self.samples.extend(samples)

    async def emit_events(self, events: Sequence[Event]) -> None:
        self.events.extend(events)

    async def interrupted(self, i: Interruption) -> None:
        self.interruptions.append(i)

    async def problem(self, p: NodeProblem) -> None:
        self.problems.append(p)

    async def state(self, s: SourceState) -> None:
        self.states.append(s)

    def of(self, handle: int) -> list[Sample]:
        return [s for s in self.samples if s.handle == handle]


@contextmanager
def small_disk(directory: Path, size_mb: int) -> Iterator[Path]:
    """A real file system of `size_mb` (tmpfs), so a full disk is a real ENOSPC."""
    directory.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(directory)], capture_output=True
    )
    if done.returncode != 0:
        unavailable(f"mounting a tmpfs needs root: {done.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path) -> Path:
    """Take every free byte of the file system with a filler file (unbuffered: nothing left to flush)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = b"\0" * 65536
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError:
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]
    finally:
        os.close(fd)
    return filler
