"""The agent's own usage events (사후관리): what a person did with it, recorded once, never invented.

CLI commands run as separate processes and must not open the agent's buffers, so they append one
JSON line per event to a spool file, `{data_dir}/usage/spool.jsonl`; the running agent (or the next
start) ingests it onto the usage lane of every buffer that takes that lane (docs/usage-log.md).
A control write (agent/control.py) carries its outcome in the same line, a `control` object
(machine, element, node, old, new, readBack, result, status): besides the usage record, that line
becomes a `control-write` status record on the status lane (docs/control.md), from the same
line and with the same time, so the two are kept or refused together; it carries the event's id
(`event`), so that a line read twice (see below) is counted once there too.

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
import hashlib
import logging
import os
import pwd
import time
import uuid
from collections.abc import Mapping
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

# The fields of a control write's outcome in a spool line, and the status record's kind.
CONTROL_FIELDS = ("machine", "element", "node", "old", "new", "readBack", "result", "status")
CONTROL_TEXT = ("machine", "element", "node", "result", "status")
CONTROL_KIND = "control-write"

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
    control: Mapping[str, Any] | None = None,
) -> UsageEvent:
    """Append one usage event to the spool (durably: fsync'd) and return it; `control`, the outcome
    of a control write (CONTROL_FIELDS), goes in the same line.

    Raises ValueError for an event the usage log would refuse (or a `control` without its fields),
    OSError when the spool cannot be written; the caller says so to the person (the action itself
    has happened).
    """
    event = UsageEvent(
        id=str(uuid.uuid4()),
        time=now or datetime.now(UTC),
        use=use,
        user=user or os_user(),
        ip=ip,
        data_bytes=data_bytes,
    )
    line = _line(event, action, None if control is None else _control(control))
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


def usage_row(
    use: str, user: str, ip: str, data_bytes: int, action: str, *, now: datetime | None = None
) -> tuple[str, float, bytes]:
    """One usage event made inside the running agent (the local API, agent/api/), as a row (lane, time,
    body) for `Pipeline.usage`: no spool, the agent stores it itself. Checked as every event is
    (`UsageEvent`: ValueError naming the field); bytes over the API's limit are sent as its maximum."""
    event = UsageEvent(
        id=str(uuid.uuid4()),
        time=now or datetime.now(UTC),
        use=use,
        user=user,
        ip=ip,
        data_bytes=min(data_bytes, 10**9 - 1),
    )
    return _usage_row(event, action)


def _usage_row(event: UsageEvent, action: str) -> tuple[str, float, bytes]:
    """The usage-lane row of an event."""
    when = event.time.astimezone(UTC)
    body = wire.usage_body(
        event=event.id,
        time=when,
        use=event.use,
        user=event.user,
        ip=event.ip,
        data_bytes=event.data_bytes,
        action=action,
    )
    return ("usage", when.timestamp(), body)


def note(data_dir: Path, use: str, data_bytes: int, action: str) -> str | None:
    """`record` for a CLI command that has done its work: None, or why the event could not be kept
    (for the command to print; the work is not undone)."""
    try:
        record(data_dir, use, min(data_bytes, 10**9 - 1), action)
    except (OSError, ValueError) as e:
        return f"warning: the usage event of {action!r} could not be recorded in {spool_dir(data_dir)}: {e}"
    return None


CONFIG_SEEN = "config.sha256"


def config_applied(data_dir: Path, config: Path) -> UsageEvent | None:
    """At the agent's start: a configuration that differs from the one the previous start ran with
    was changed by someone, and is now applied — a DO6005 (update) event with the bytes of the
    file, acted by the file's owner (who wrote it; the agent runs as a service user). The first
    start records nothing: no change was seen. Raises OSError when the data dir cannot be written."""
    data = config.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    seen = spool_dir(data_dir) / CONFIG_SEEN
    before = seen.read_text().strip() if seen.exists() else None
    if before == digest:
        return None
    event = None
    if before is not None:
        try:
            owner = pwd.getpwuid(config.stat().st_uid).pw_name
        except KeyError:
            owner = f"uid{config.stat().st_uid}"
        event = record(data_dir, UPDATE, len(data), f"configuration {config.name} changed and applied", user=owner)
    spool_dir(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = seen.with_suffix(".tmp")
    tmp.write_text(digest + "\n")
    os.replace(tmp, seen)  # after the event is in the spool: a crash in between records it again, never not
    return event


def _line(event: UsageEvent, action: str, control: dict[str, Any] | None = None) -> bytes:
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
    if control is not None:
        doc["control"] = wire.jsonable(control)
    return wire.dumps(doc) + b"\n"


def _control(control: Any) -> dict[str, Any]:
    """A control write's outcome as a spool line carries it; ValueError if a field is missing or wrong."""
    if not isinstance(control, Mapping):
        raise ValueError(f"control: not an object but {type(control).__name__}")
    missing = [k for k in CONTROL_FIELDS if k not in control]
    if missing:
        raise ValueError(f"control: no {', '.join(missing)}")
    extra = sorted(set(control) - set(CONTROL_FIELDS))
    if extra:
        raise ValueError(f"control: unknown {', '.join(map(str, extra))}")
    for k in CONTROL_TEXT:
        if not isinstance(control[k], str) or not control[k]:
            raise ValueError(f"control: {k} must be text")
    return {k: control[k] for k in CONTROL_FIELDS}


def _shown(v: Any) -> str:
    return wire.dumps(wire.jsonable(v)).decode()


def control_message(control: Mapping[str, Any], user: str, ip: str) -> str:
    """The status record's message: what was written where, what the server said, and who did it."""
    return (
        f"{control['machine']} {control['element']} ({control['node']}): {_shown(control['old'])} -> "
        f"{_shown(control['new'])}, read back {_shown(control['readBack'])}: {control['result']} "
        f"({control['status']}), by {user} from {ip}"
    )


@dataclass
class Taken:
    """Spool files taken by the agent: their records, to store; then `done()` deletes the files.

    A record is a row (lane, time, body): lane "usage" for every event, "status" for the
    `control-write` record of a control write's line.
    """

    records: list[tuple[str, float, bytes]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    refused: int = 0

    def done(self) -> None:
        for f in self.files:
            f.unlink(missing_ok=True)


def take(data_dir: Path) -> Taken:
    """Take the spool (and files a crashed run left taken) and read their events as usage records
    (and control writes' outcomes as status records)."""
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
                out.records += _records_of(raw)
            except ValueError as e:
                out.refused += 1
                _refuse(directory, raw, f"{path.name}:{n}: {e}")
        out.files.append(path)
    return out


def _records_of(raw: bytes) -> list[tuple[str, float, bytes]]:
    try:
        doc = orjson.loads(raw)
        t = datetime.fromisoformat(doc["time"])
        event = UsageEvent(
            id=str(doc["event"]), time=t, use=doc["use"], user=doc["user"], ip=doc["ip"], data_bytes=doc["bytes"]
        )
        action = str(doc.get("action", ""))
        control = _control(doc["control"]) if "control" in doc else None
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e})") from None
    except KeyError as e:
        raise ValueError(f"no {e.args[0]!r}") from None
    except TypeError as e:
        raise ValueError(str(e)) from None
    when = event.time.astimezone(UTC)
    rows = [_usage_row(event, action)]
    if control is not None:
        message = control_message(control, event.user, event.ip)
        rows.append(
            (
                "status",
                event.time.timestamp(),
                wire.status_body(when, CONTROL_KIND, message, event=event.id, user=event.user, **control),
            )
        )
    return rows


def _refuse(directory: Path, raw: bytes, reason: str) -> None:
    log.error("usage spool: line refused and kept in %s: %s", directory / REFUSED, reason)
    line = orjson.dumps({"reason": reason, "line": raw.decode("utf-8", "replace")}) + b"\n"
    fd = os.open(directory / REFUSED, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
