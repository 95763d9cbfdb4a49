"""The usage lane's sink: its far end is the sender's own durable store.

A message of usage records is confirmed once its events are in `sflog.db` (`SfLogSender.take`
returns after the commit); the sender then delivers them to the log API on its own schedule, one
call per 10-minute KST window, so the forwarder's retry and batching never meet the API's pacing.

Contract, beyond the `Sink` protocol:
- Only `usage` messages: anything else is refused for good (the agent gives this sink a buffer
  that takes the usage lane only, so that would be a wiring bug, and it is not lost: it goes to
  the dead letters with the reason).
- A record that is not a valid usage event (a field over the API's limit, an unknown code, DO6007)
  is refused for good with the reason; the rest of its message is confirmed.
- An event id already taken is counted once (the store's rule): a redelivery adds nothing.
- `run()` is the sender's loop; it raises only for a failing store, which the agent restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from uploader.sflog.client import SfLogClient
from uploader.sflog.events import UsageEvent
from uploader.sflog.sender import SfLogSender
from uploader.sink import Message, Outcome, Partial, Rejected

log = logging.getLogger(__name__)


def usage_event(rec: dict[str, Any]) -> UsageEvent:
    """The usage event a wire record carries; ValueError naming the field that does not fit."""
    try:
        time = datetime.fromisoformat(rec["time"])
        return UsageEvent(
            id=str(rec["event"]),
            time=time,
            use=str(rec["use"]),
            user=str(rec["user"]),
            ip=str(rec["ip"]),
            data_bytes=rec["bytes"],
        )
    except KeyError as e:
        raise ValueError(f"usage record without {e.args[0]!r}") from None
    except TypeError as e:
        raise ValueError(f"usage record: {e}") from None


class SfLogSink:
    def __init__(self, sender: SfLogSender, client: SfLogClient, *, name: str = "sflog") -> None:
        self.sender = sender
        self.client = client
        self.name = name

    async def run(self) -> None:
        await self.sender.run()

    def topic(self, lane: str, key: str) -> str:
        return f"{lane}/{key}"

    def announce(self, state: str, down: Sequence[str] = ()) -> None:
        return None

    @property
    def connected(self) -> bool:
        return True  # the far end of this sink is a local file

    @property
    def max_message_bytes(self) -> int | None:
        return None

    async def send(self, messages: Sequence[Message], *, timeout: float) -> list[Outcome]:
        out: list[Outcome] = []
        for m in messages:
            try:
                doc = orjson.loads(m.payload)
                lane, records = doc["lane"], doc["records"]
            except (orjson.JSONDecodeError, KeyError, TypeError) as e:
                out.append(Rejected(f"not a wire message: {e}"))
                continue
            if lane != "usage":
                out.append(Rejected(f"the usage-log sink takes usage records only, not {lane!r} ones"))
                continue
            events: list[UsageEvent] = []
            refused: list[tuple[int, str]] = []
            for i, rec in enumerate(records):
                try:
                    events.append(usage_event(rec))
                except ValueError as e:
                    refused.append((i, str(e)))
            await self.sender.take(events)  # raises for a failing store: nothing is confirmed then
            if not refused:
                out.append(True)
            elif not events:
                out.append(Rejected("; ".join(sorted({r for _, r in refused}))))
            else:
                out.append(Partial(tuple(refused)))
        return out

    async def stop(self) -> None:
        await self.client.close()
        self.sender.close()
