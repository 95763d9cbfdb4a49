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


@dataclass(frozen=True, slots=True)
class Rejected:
    """The far end refused a message for good (not authorised, too large, malformed): sending it
    again cannot help. `reason` names what the far end said, for the log and the dead letters."""

    reason: str


@dataclass(frozen=True, slots=True)
class Partial:
    """The far end stored the message except some of its records, which it refused for good.

    `refused` holds (index of the record within the message, reason) pairs, indexes ascending and
    each at most once; every record not named is confirmed. A sink that finds nothing refused
    reports True, and one that finds every record refused for one reason may report Rejected."""

    refused: tuple[tuple[int, str], ...]


Outcome = bool | Rejected | Partial
"""Per message: True, confirmed; Rejected, refused for good; Partial, confirmed except the records
it names, which are refused for good; False, not confirmed (send again later)."""


class Sink(Protocol):
    name: str

    async def run(self) -> None:
        """Connect and stay connected, reconnecting by itself, until cancelled.

        Must not raise because the far end is down (the agent supervises it: a raise is a bug,
        logged and restarted). Cancelling it leaves an open connection open for `stop()`.
        """

    def topic(self, lane: str, key: str) -> str:
        """Where a message of records of `lane` for routing key `key` goes (MQTT topic, URL path, ...)."""

    def announce(self, state: str, down: Sequence[str] = ()) -> None:
        """The agent's health changed: "online", or "degraded" naming the parts that are down.

        A sink with a status channel keeps it there (MQTT: the retained status topic); others ignore it.
        """

    @property
    def connected(self) -> bool:
        """True while the far end is reachable as far as the sink knows."""

    @property
    def max_message_bytes(self) -> int | None:
        """The largest message (topic and payload) the far end takes, as far as it said; None if unknown."""

    async def send(self, messages: Sequence[Message], *, timeout: float) -> list[Outcome]:
        """Write `messages`; element i is True only if the far end confirmed message i within `timeout`,
        Rejected if it refused it for good, Partial if it confirmed it except records it refused for
        good (a far end that answers per record), False otherwise.

        Never raises for an unreachable far end: unconfirmed messages are simply False.
        """

    async def stop(self) -> None:
        """After `run()` ended: flush what is in flight (bounded by a short timeout) and disconnect cleanly."""
