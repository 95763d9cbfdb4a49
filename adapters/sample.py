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
from datetime import datetime
from typing import Any, NamedTuple


class Sample(NamedTuple):
    """One value change. `handle` is the index the agent gave the item when it configured the adapter.

    `value` is a plain Python value: bool, int, float, str, bytes, datetime (UTC, aware),
    dict {"language", "text"} for localized text, or a list of those for arrays.
    """

    handle: int
    value: Any
    source_time: datetime | None
    server_time: datetime | None
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
