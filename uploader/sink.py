"""The contract between the forwarding runner and a northbound sink.

A sink only writes and reports what the far end confirmed. It owns no retry, no backoff and
no batching: the runner does (uploader/runner.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """One northbound message: a topic (or path) and a complete payload."""

    topic: str
    payload: bytes


class Sink(Protocol):
    name: str

    async def start(self) -> None:
        """Begin connecting in the background. Must not raise because the far end is down."""

    @property
    def connected(self) -> bool:
        """True while the far end is reachable as far as the sink knows."""

    async def send(self, messages: Sequence[Message], *, timeout: float) -> list[bool]:
        """Write `messages`; element i is True only if the far end confirmed message i within `timeout`.

        Never raises for an unreachable far end: unconfirmed messages are simply False.
        """

    async def stop(self) -> None:
        """Flush what is in flight (bounded by a short timeout) and disconnect cleanly."""
