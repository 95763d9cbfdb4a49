"""A heartbeat file, so a restart knows when collection stopped and whether the stop was clean.

Written atomically (temp file + rename) once a second; a SIGKILL leaves the last beat behind:
the agent's own view of when the downtime began (each element's gap starts at its last stored
value, kept in the buffer: agent/gaps.py).

A heartbeat that cannot be written (disk full, read-only file system) is logged once and
retried at the next beat; it never stops the agent.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Previous:
    last_alive: datetime
    clean: bool


class RunState:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._failing = False

    def load(self) -> Previous | None:
        try:
            doc = orjson.loads(self.path.read_bytes())
            return Previous(datetime.fromisoformat(doc["last_alive"]), bool(doc["clean"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def beat(self, *, clean: bool = False) -> bool:
        """Write the heartbeat; False (logged once per episode) when the file system refuses."""
        doc = {"last_alive": datetime.now(UTC).isoformat(), "clean": clean, "pid": os.getpid()}
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
