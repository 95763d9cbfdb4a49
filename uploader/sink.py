"""The contract between the forwarder and a northbound sink.

A sink only writes and reports what the far end confirmed. It owns no retry and no batching:
the forwarder does (uploader/forwarder.py). It owns its addressing (`topic`), because the layout
of topics or paths is part of its protocol.
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

    async def run(self) -> None:
        """Connect and stay connected, reconnecting by itself, until cancelled.

        Must not raise because the far end is down (the agent supervises it: a raise is a bug,
        logged and restarted). Cancelling it leaves an open connection open for `stop()`.
        """

    def topic(self, lane: str, key: str) -> str:
        """Where a message of records of `lane` for routing key `key` goes (MQTT topic, URL path, ...)."""

    @property
    def connected(self) -> bool:
        """True while the far end is reachable as far as the sink knows."""

    async def send(self, messages: Sequence[Message], *, timeout: float) -> list[bool]:
        """Write `messages`; element i is True only if the far end confirmed message i within `timeout`.

        Never raises for an unreachable far end: unconfirmed messages are simply False.
        """

    async def stop(self) -> None:
        """After `run()` ended: flush what is in flight (bounded by a short timeout) and disconnect cleanly."""
