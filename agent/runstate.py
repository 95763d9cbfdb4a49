"""A heartbeat file, so a restart knows when collection stopped and whether the stop was clean.

Written atomically (temp file + rename) once a second; a SIGKILL leaves the last beat behind,
which is where the gap record for the downtime starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson


@dataclass(frozen=True, slots=True)
class Previous:
    last_alive: datetime
    clean: bool


class RunState:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Previous | None:
        try:
            doc = orjson.loads(self.path.read_bytes())
            return Previous(datetime.fromisoformat(doc["last_alive"]), bool(doc["clean"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def beat(self, *, clean: bool = False) -> None:
        doc = {"last_alive": datetime.now(UTC).isoformat(), "clean": clean, "pid": os.getpid()}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(doc))
        os.replace(tmp, self.path)
