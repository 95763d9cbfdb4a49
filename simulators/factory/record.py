"""What the simulator wrote: a bounded in-memory history per node and an optional JSON-lines file.

File format, one line per value written:
    {"node": "ns=2;s=CNC01.SpindleSpeed", "source_time": "2025-01-01T00:00:00.123456Z",
     "type": "Double", "value": 8001.3}
`value` is the JSON-safe typed form of `json_value`.
"""

from __future__ import annotations

import base64
import math
import threading
import uuid
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import orjson
from asyncua import ua

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]

# JSON numbers lose precision past 2**53 in most consumers, so 64-bit integers travel as strings.
_STRING_INTEGER_TYPES = frozenset({"Int64", "UInt64"})


def iso_z(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a Z suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_value(opcua_type: str, value: object) -> JsonValue:
    """JSON-safe typed form of a value of OPC UA type `opcua_type` (lists element-wise)."""
    if isinstance(value, list):
        return [json_value(opcua_type, item) for item in value]
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "INF" if value > 0 else "-INF"
        return value
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int):
        return str(value) if opcua_type in _STRING_INTEGER_TYPES else value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return iso_z(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, ua.LocalizedText):
        return {"language": value.Locale, "text": value.Text}
    if isinstance(value, ua.StatusCode):
        return int(value.value)
    if isinstance(value, ua.NodeId):
        return str(value.to_string())
    raise TypeError(f"no JSON form for {opcua_type} value {value!r}")


class ValueRecorder:
    """Thread-safe record of written values; the simulator's loop writes, tests read."""

    def __init__(self, history: int = 1000, path: str | Path | None = None) -> None:
        self._history = history
        self._lock = threading.Lock()
        self._values: dict[str, deque[tuple[datetime, object]]] = {}
        self._path = Path(path) if path is not None else None
        self._file: IO[bytes] | None = None

    def open(self) -> None:
        if self._path is not None and self._file is None:
            self._file = self._path.open("ab")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def add(self, source_time: datetime, values: Iterable[tuple[str, str, object]]) -> None:
        """Record one round: (node id, OPC UA type, value) written with `source_time`."""
        lines: list[bytes] = []
        stamp = iso_z(source_time)
        with self._lock:
            for node, opcua_type, value in values:
                history = self._values.get(node)
                if history is None:
                    history = self._values[node] = deque(maxlen=self._history)
                history.append((source_time, value))
                if self._file is not None:
                    record: dict[str, JsonValue] = {
                        "node": node,
                        "source_time": stamp,
                        "type": opcua_type,
                        "value": json_value(opcua_type, value),
                    }
                    lines.append(orjson.dumps(record))
        if self._file is not None and lines:
            # One write and flush per round keeps the file readable while the server runs.
            self._file.write(b"\n".join(lines) + b"\n")
            self._file.flush()

    def written(self, node: str) -> list[tuple[datetime, object]]:
        """(source time, value) pairs written to `node`, oldest first, at most `history` of them."""
        with self._lock:
            return list(self._values.get(node, ()))
