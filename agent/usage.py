"""The agent's own usage events (사후관리): what a person did with it, recorded once, never invented.

CLI commands run as separate processes and must not open the agent's buffers, so they append one
JSON line per event to a spool file, `{data_dir}/usage/spool.jsonl`; the running agent (or the next
start) ingests it onto the usage lane of every buffer that takes that lane (docs/usage-log.md).

Invariants:
- A writer appends one line with one `write()` under an exclusive `flock`, then fsyncs. Before
  writing it checks that the file it locked is still the one at the spool's path: the agent may
  have taken it away in between, and a line written into a taken file would be lost.
- The agent takes the spool by renaming it (`spool.<ns>.ingest`), then locks the taken file, so
  every writer that got there first has finished; it deletes a taken file only after its records
  are stored. A crash in between leaves the `.ingest` file, read again at the next start: its
  events come twice, with the same event ids, and are counted once by the usage-log sender.
- A line that is not a valid event (torn by a crash, edited by hand, a field over the API's limit)
  is moved to `spool.refused.jsonl` with the reason and logged, never dropped silently.
- No event is synthesised: the agent records only what a person started.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from uploader import wire
from uploader.sflog import UsageEvent

log = logging.getLogger(__name__)

SPOOL_DIR = "usage"
SPOOL = "spool.jsonl"
REFUSED = "spool.refused.jsonl"
CLI_IP = "127.0.0.1"

# The codes the agent uses (docs/usage-log.md, "Which events the agent records").
LOGIN, LOGOUT, READ, CREATE, UPDATE, DELETE = "DO6001", "DO6002", "DO6003", "DO6004", "DO6005", "DO6006"


def os_user() -> str:
    """The operating-system user running this process: the acting user of a CLI command."""
    try:
        return getpass.getuser()[:60] or f"uid{os.getuid()}"
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


def spool_dir(data_dir: Path) -> Path:
    return data_dir / SPOOL_DIR


def record(
    data_dir: Path,
    use: str,
    data_bytes: int,
    action: str,
    *,
    user: str | None = None,
    ip: str = CLI_IP,
    now: datetime | None = None,
) -> UsageEvent:
    """Append one usage event to the spool (durably: fsync'd) and return it.

    Raises ValueError for an event the usage log would refuse, OSError when the spool cannot be
    written; the caller says so to the person (the action itself has happened).
    """
    event = UsageEvent(
        id=str(uuid.uuid4()),
        time=now or datetime.now(UTC),
        use=use,
        user=user or os_user(),
        ip=ip,
        data_bytes=data_bytes,
    )
    line = _line(event, action)
    directory = spool_dir(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / SPOOL
    for _ in range(100):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                continue  # taken by the agent after we opened it: open the new one
            if (current.st_dev, current.st_ino) != (os.fstat(fd).st_dev, os.fstat(fd).st_ino):
                continue
            os.write(fd, line)
            os.fsync(fd)
            return event
        finally:
            os.close(fd)
    raise OSError(f"could not append to {path}: it kept being replaced")


def note(data_dir: Path, use: str, data_bytes: int, action: str) -> str | None:
    """`record` for a CLI command that has done its work: None, or why the event could not be kept
    (for the command to print; the work is not undone)."""
    try:
        record(data_dir, use, min(data_bytes, 10**9 - 1), action)
    except (OSError, ValueError) as e:
        return f"warning: the usage event of {action!r} could not be recorded in {spool_dir(data_dir)}: {e}"
    return None


def _line(event: UsageEvent, action: str) -> bytes:
    doc: dict[str, Any] = {
        "event": event.id,
        "time": event.time.astimezone(UTC),
        "use": event.use,
        "user": event.user,
        "ip": event.ip,
        "bytes": event.data_bytes,
    }
    if action:
        doc["action"] = action
    return wire.dumps(doc) + b"\n"


@dataclass
class Taken:
    """Spool files taken by the agent: their records, to store; then `done()` deletes the files."""

    records: list[tuple[float, bytes]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    refused: int = 0

    def done(self) -> None:
        for f in self.files:
            f.unlink(missing_ok=True)


def take(data_dir: Path) -> Taken:
    """Take the spool (and files a crashed run left taken) and read their events as usage records."""
    directory = spool_dir(data_dir)
    out = Taken()
    if not directory.is_dir():
        return out
    spool = directory / SPOOL
    if spool.exists():
        with contextlib.suppress(FileNotFoundError):
            spool.rename(directory / f"spool.{time.time_ns()}.ingest")
    for path in sorted(directory.glob("spool.*.ingest")):
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # writers that opened it before the rename have finished
            data = b""
            while chunk := os.read(fd, 1 << 20):
                data += chunk
        finally:
            os.close(fd)
        for n, raw in enumerate(data.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                out.records.append(_record_of(raw))
            except ValueError as e:
                out.refused += 1
                _refuse(directory, raw, f"{path.name}:{n}: {e}")
        out.files.append(path)
    return out


def _record_of(raw: bytes) -> tuple[float, bytes]:
    try:
        doc = orjson.loads(raw)
        t = datetime.fromisoformat(doc["time"])
        event = UsageEvent(
            id=str(doc["event"]), time=t, use=doc["use"], user=doc["user"], ip=doc["ip"], data_bytes=doc["bytes"]
        )
        action = str(doc.get("action", ""))
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e})") from None
    except KeyError as e:
        raise ValueError(f"no {e.args[0]!r}") from None
    except TypeError as e:
        raise ValueError(str(e)) from None
    body = wire.usage_body(
        event=event.id,
        time=event.time.astimezone(UTC),
        use=event.use,
        user=event.user,
        ip=event.ip,
        data_bytes=event.data_bytes,
        action=action,
    )
    return event.time.timestamp(), body


def _refuse(directory: Path, raw: bytes, reason: str) -> None:
    log.error("usage spool: line refused and kept in %s: %s", directory / REFUSED, reason)
    line = orjson.dumps({"reason": reason, "line": raw.decode("utf-8", "replace")}) + b"\n"
    fd = os.open(directory / REFUSED, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
