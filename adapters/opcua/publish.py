"""The agent's own publish loop: several PublishRequests at the server, one response handled at a time.

asyncua keeps one PublishRequest outstanding, so while a response is decoded and stored the server
has nothing to answer with and, at high rates, its queue overflows (shared/reference/testbed.md).
This loop keeps `requests` of them there (3 unless the source asks otherwise) and decodes with
fastdecode instead of asyncua's generic decoder.

What it guarantees:
  - responses are handled strictly one at a time, in the order they arrive, each awaited to the end;
  - a notification is acknowledged only after `handle` returned for it (the source's handler awaits
    the durable buffer): its SubscriptionAcknowledgement then rides on the next PublishRequest sent.
    One new request goes out per response handled, so the server holds `requests` of them while we
    are idle, and at most `requests` responses wait here, unacknowledged, while `handle` is slow;
  - it never decides about the session: when the session or the subscription is gone it ends and
    says why (`ended`); the source's supervisor starts over. Cancelling it is how it is stopped.

The requests are sent through lowlevel.py (the one module that touches asyncua's internals).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from asyncua import Client, ua

from adapters.opcua import fastdecode, lowlevel
from adapters.opcua.fastdecode import Publish

log = logging.getLogger(__name__)

REQUESTS = 3
"""PublishRequests kept at the server by default."""

Handle = Callable[[Publish | ua.PublishResult], Awaitable[None]]
"""Takes what the Publisher decoded, or on the stock path (see `subscribe`) what asyncua decoded."""

# The session, its channel or our subscription is gone: nothing sent on this session will be answered
# with data again. Any other fault is the server's trouble with one request: send another, after a pause.
_GONE = frozenset(
    {
        ua.StatusCodes.BadSessionClosed,
        ua.StatusCodes.BadSessionIdInvalid,
        ua.StatusCodes.BadSessionNotActivated,
        ua.StatusCodes.BadSecureChannelClosed,
        ua.StatusCodes.BadSecureChannelIdInvalid,
        ua.StatusCodes.BadSecureChannelTokenUnknown,
        ua.StatusCodes.BadTcpSecureChannelUnknown,
        ua.StatusCodes.BadConnectionClosed,
        ua.StatusCodes.BadServerHalted,
        ua.StatusCodes.BadShutdown,
        ua.StatusCodes.BadCommunicationError,
        ua.StatusCodes.BadNotConnected,
        ua.StatusCodes.BadDisconnect,
        ua.StatusCodes.BadNoSubscription,
    }
)
_AGAIN = frozenset({ua.StatusCodes.BadTimeout, ua.StatusCodes.BadRequestTimeout})


class _Ended(Exception):
    """The loop ends: the session or the subscription is gone."""


class Publisher:
    """The publish loop of one subscription on one session; `run` until cancelled or `ended` is called.

    The counters are for tests and status: `sent` requests, `received` responses or faults (handled or still
    waiting), `handled` publishes, `acknowledged` notifications (acknowledgements sent), `refused` requests the
    server turned down for having too many (`requests` is then lowered to what it keeps)."""

    def __init__(
        self,
        client: Client,
        subscription_id: int,
        handle: Handle,
        *,
        ended: Callable[[str], None],
        requests: int = REQUESTS,
        retry_delay: float = 1.0,
        name: str = "",
        raw_times: bool = False,
    ) -> None:
        self._client = client
        self.subscription_id = subscription_id
        self._handle = handle
        self._ended = ended
        self.requests = max(1, requests)
        self._retry_delay = retry_delay
        self._name = name or str(subscription_id)
        self._raw_times = raw_times  # fastdecode.decode's: timestamps as ticks (adapters/sample.py: Stamp)
        self._acks: list[ua.SubscriptionAcknowledgement] = []
        self._inflight: dict[asyncio.Task[bytes], list[ua.SubscriptionAcknowledgement]] = {}
        self._arrived: asyncio.Queue[asyncio.Task[bytes]] = asyncio.Queue()
        self._running = False
        self._logged: set[str] = set()
        self.sent = self.received = self.handled = self.acknowledged = self.refused = 0

    async def run(self) -> None:
        self._running = True
        try:
            while True:
                while len(self._inflight) < self.requests:
                    self._send()
                task = await self._arrived.get()
                acks = self._inflight.pop(task)
                try:
                    body = task.result()
                except Exception as exc:
                    await self._failed(exc, acks)
                    continue
                await self._publish(body)
        except _Ended as end:
            self._ended(str(end))
        finally:
            # Requests still at the server are not cancelled: their answers (or the connection's end) complete
            # them when the session closes, instead of arriving for futures asyncua would find cancelled.
            self._running = False
            while not self._arrived.empty():
                self._retrieve(self._arrived.get_nowait())

    def _send(self) -> None:
        acks, self._acks = self._acks, []
        task = asyncio.ensure_future(lowlevel.publish(self._client, acks))
        self._inflight[task] = acks
        self.sent += 1
        self.acknowledged += len(acks)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[bytes]) -> None:
        """Responses complete their tasks in the order they arrived, and this runs in that order."""
        if self._running:
            self.received += 1
            self._arrived.put_nowait(task)
        else:
            self._retrieve(task)

    @staticmethod
    def _retrieve(task: asyncio.Task[bytes]) -> None:
        """An answer after the loop ended is nobody's error (and asyncio logs one nobody looked at)."""
        if not task.cancelled():
            task.exception()

    async def _publish(self, body: bytes) -> None:
        try:
            publish = fastdecode.decode(body, raw_times=self._raw_times)
        except Exception as exc:
            # asyncua skips a response it cannot parse (its notifications stay unacknowledged); so do we.
            self._once("parse", logging.ERROR, "cannot parse a publish response (%s); skipped", exc, exc_info=True)
            return
        if publish.subscription_id == 0:  # Part 4 §5.13.5: the session has no subscription
            raise _Ended("the server has no subscription for this session")
        if publish.subscription_id != self.subscription_id:
            self._once(
                "unknown", logging.WARNING, "a publish response for unknown subscription %s", publish.subscription_id
            )
        else:
            try:
                await self._handle(publish)
            except Exception:  # a bug in the handler; asyncua logs it and acknowledges, so do we
                log.exception("%s: handling publish response %d failed", self._name, publish.sequence_number)
        self.handled += 1
        if publish.data:
            self._acks.append(ua.SubscriptionAcknowledgement(publish.subscription_id, publish.sequence_number))

    async def _failed(self, exc: Exception, acks: list[ua.SubscriptionAcknowledgement]) -> None:
        """A request came back with a fault, or never will."""
        code = exc.code if isinstance(exc, ua.UaStatusCodeError) else None
        if code is None:
            if isinstance(exc, OSError):  # ConnectionError among them: the socket is gone
                raise _Ended(f"connection lost: {type(exc).__name__} {exc}".strip())
        elif code in _GONE:
            raise _Ended(f"publish: {ua.StatusCode(code).name}")
        self._acks[:0] = acks  # they may not have reached the server: a second acknowledgement is harmless
        if code in _AGAIN:
            return
        if code == ua.StatusCodes.BadTooManyPublishRequests:
            self.refused += 1
            keep = max(1, len(self._inflight))
            if keep < self.requests:
                self._once(
                    "too-many",
                    logging.INFO,
                    "the server takes at most %d outstanding publish requests of ours (BadTooManyPublishRequests)",
                    keep,
                )
                self.requests = keep
                return
        else:  # a pause, so a server that fails every request at once is not asked again and again
            self._once(
                "fault",
                logging.WARNING,
                "a publish request failed (%r); sending another in %g s",
                exc,
                self._retry_delay,
            )
        await asyncio.sleep(self._retry_delay)

    def _once(self, key: str, level: int, message: str, *args: object, exc_info: bool = False) -> None:
        """The first time at `level`, later ones at DEBUG: a fault that repeats every publish fills no log."""
        first = key not in self._logged
        self._logged.add(key)
        log.log(level if first else logging.DEBUG, "%s: " + message, self._name, *args, exc_info=exc_info and first)


async def subscribe(
    client: Client,
    params: ua.CreateSubscriptionParameters,
    handle: Handle,
    *,
    ended: Callable[[str], None],
    requests: int = REQUESTS,
    name: str = "",
    raw_times: bool = False,
) -> tuple[int, Publisher | None]:
    """Create a subscription whose publish responses go to `handle`; returns its id and the Publisher to run.

    The Publisher is None when this asyncua lacks what the own loop needs (lowlevel says why, once): then
    asyncua's own loop serves the subscription and hands `handle` its decoded PublishResult instead."""
    if not lowlevel.own_publish_loop(client):
        return await lowlevel.create_subscription(client, params, handle), None
    sub_id = await lowlevel.create_bare_subscription(client, params)
    return sub_id, Publisher(client, sub_id, handle, ended=ended, requests=requests, name=name, raw_times=raw_times)
