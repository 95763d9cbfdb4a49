"""What every adapter hands to the agent: batches of samples, interruptions and node problems.

The caller guarantees nothing beyond the types; the adapter guarantees that it awaits
`emit` for every batch before it acknowledges that batch to the server, so whatever `emit`
has committed when it returns is safe. `emit` must account for what it could not take itself
(the agent reports it as a gap): the server considers a batch delivered once the callback
returns, whatever happened, so an exception from `emit` is only logged.

Interruptions come in two reports: when collection stops (`end` is None: the connection was
lost) and when it resumes (`end` set). The first comes before the adapter tries anything else,
so the agent can note, before any later value arrives, where each element's gap starts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

Stamp = datetime | int | None
"""A sample's timestamp: a datetime (UTC, aware), None when the source gave none, or, only from an adapter
asked for raw times (the agent's OPC UA collector), the OPC UA DateTime as it came: an int of 100 ns ticks
since 1601-01-01 UTC, within the years 1602-9999 (`stamp_datetime` and `stamp_seconds` convert it; making a
datetime per value was most of what a value cost)."""

TICKS_AT_UNIX_EPOCH = 116444736000000000
"""1970-01-01T00:00:00Z in 100 ns ticks since 1601-01-01."""
_UNIX = datetime(1970, 1, 1, tzinfo=UTC)


def stamp_datetime(stamp: Stamp) -> datetime | None:
    """A stamp as a datetime: ticks become the datetime asyncua makes of them (whole µs, rounded down)."""
    if isinstance(stamp, int):
        return _UNIX + timedelta(0, 0, (stamp - TICKS_AT_UNIX_EPOCH) // 10)
    return stamp


def stamp_seconds(stamp: Stamp) -> float | None:
    """A stamp as POSIX seconds, exactly what `stamp_datetime(stamp).timestamp()` gives."""
    if stamp is None:
        return None
    if isinstance(stamp, int):
        return (stamp - TICKS_AT_UNIX_EPOCH) // 10 / 1_000_000
    return stamp.timestamp()


class Sample(NamedTuple):
    """One value change. `handle` is the index the agent gave the item when it configured the adapter.

    `value` is a plain Python value: bool, int, float, str, bytes, datetime (UTC, aware),
    dict {"language", "text"} for localized text, or a list of those for arrays. The times are `Stamp`s.
    """

    handle: int
    value: Any
    source_time: Stamp
    server_time: Stamp
    status: int


class Event(NamedTuple):
    """One event notification (an alarm, a state change) from an event source the agent configured."""

    handle: int
    time: datetime
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Interruption:
    """Collection for `handles` (items and event sources) stopped at `start` and, once `end` is set,
    resumed at `end` (both UTC, aware, the agent's clock)."""

    source: str
    handles: tuple[int, ...]
    start: datetime
    end: datetime | None
    reason: str


@dataclass(frozen=True, slots=True)
class NodeProblem:
    """An item that cannot be collected: unknown node, wrong type, access denied. It is skipped.

    kind "node-moved": not a problem but a change — the node was found again by its browse path under
    another node id (a PLC program download renumbered it) and is collected from there."""

    source: str
    handle: int
    node: str
    problem: str
    kind: str = "node-problem"


EmitSamples = Callable[[Sequence[Sample]], Awaitable[None]]
EmitEvents = Callable[[Sequence[Event]], Awaitable[None]]
ReportInterruption = Callable[[Interruption], Awaitable[None]]
ReportProblem = Callable[[NodeProblem], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SourceState:
    """The connection state of a source changed: "connected", "disconnected" or "failed"."""

    source: str
    state: str
    time: datetime
    detail: str


ReportState = Callable[[SourceState], Awaitable[None]]
