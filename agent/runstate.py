"""A heartbeat file, so a restart knows when collection stopped and whether the stop was clean.

Written atomically (temp file + rename) once a second; a SIGKILL leaves the last beat behind,
which is where the gap record for the downtime starts. It also keeps, per OPC UA source, the
start of an interruption whose gap record is not written yet: a restart that is killed before
it reconnects must not move that start forward (the next start would otherwise begin the gap at
the killed restart's heartbeat, and the time between would be covered by nothing).

A heartbeat that cannot be written (disk full, read-only file system) is logged once and
retried at the next beat; it never stops the agent.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Previous:
    last_alive: datetime
    clean: bool
    open_gaps: dict[str, datetime] = field(default_factory=dict)

    def gap_start(self, source: str) -> datetime:
        """Where the downtime gap of `source` starts: its open gap from an earlier run, else the last beat."""
        since = self.open_gaps.get(source)
        return min(since, self.last_alive) if since is not None else self.last_alive


class RunState:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._open_gaps: dict[str, datetime] = {}
        self._failing = False

    def load(self) -> Previous | None:
        try:
            doc = orjson.loads(self.path.read_bytes())
            gaps = {str(k): datetime.fromisoformat(v) for k, v in dict(doc.get("open_gaps", {})).items()}
            return Previous(datetime.fromisoformat(doc["last_alive"]), bool(doc["clean"]), gaps)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def open_gap(self, source: str, since: datetime) -> None:
        """Remember that `source` has an unwritten gap from `since` (kept across restarts until closed)."""
        known = self._open_gaps.get(source)
        self._open_gaps[source] = since if known is None else min(known, since)
        self.beat()

    def close_gap(self, source: str) -> None:
        """The gap of `source` is written (in the buffer): a later restart starts from its own heartbeat."""
        if self._open_gaps.pop(source, None) is not None:
            self.beat()

    def beat(self, *, clean: bool = False) -> bool:
        """Write the heartbeat; False (logged once per episode) when the file system refuses."""
        doc = {
            "last_alive": datetime.now(UTC).isoformat(),
            "clean": clean,
            "pid": os.getpid(),
            "open_gaps": {k: v.isoformat() for k, v in self._open_gaps.items()},
        }
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_bytes(orjson.dumps(doc))
            os.replace(tmp, self.path)
        except OSError as e:
            if not self._failing:
                log.error("cannot write the heartbeat file %s, retrying every beat: %s", self.path, e)
                self._failing = True
            return False
        if self._failing:
            log.info("heartbeat file %s written again", self.path)
            self._failing = False
        return True
