"""One OPC UA server: connect, check, subscribe, poll, and start over by itself when the server goes away.

asyncua's own reconnect has no jitter and recreates every monitored item in one call, its per-value
handler spends most of its time creating a Task per value, and its publish loop keeps one request at
the server and decodes each response with its generic decoder. So this module owns the supervisor,
and its subscription is served by the agent's own publish loop (publish.py: several requests at the
server, responses decoded by fastdecode.py straight into samples). Each publish becomes one batch, and
`emit` is awaited before the notification is acknowledged, so whatever reached the buffer is what the
server forgets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime

from asyncua import Client, ua

from adapters.opcua import conformance, fastdecode, inspect, lowlevel, paths, publish, requests, security
from adapters.opcua.browse import Limits
from adapters.opcua.fastdecode import DataChange, Publish
from adapters.opcua.pki import OwnCertificate, Pki
from adapters.opcua.requests import chunks
from adapters.opcua.spec import Endpoint, EventItem, NodeItem
from adapters.opcua.values import no_time, plain
from adapters.sample import (
    EmitEvents,
    EmitSamples,
    Event,
    Interruption,
    NodeProblem,
    ReportInterruption,
    ReportProblem,
    ReportState,
    Sample,
    SourceState,
)

log = logging.getLogger(__name__)


class ConnectionLost(Exception):
    pass


# A value with one of these statuses says the node itself may be gone or changed: check it again at once.
_RECHECK = frozenset(
    {
        ua.StatusCodes.BadNodeIdUnknown,
        ua.StatusCodes.BadNodeIdInvalid,
        ua.StatusCodes.BadTypeMismatch,
        ua.StatusCodes.BadDataTypeIdUnknown,
        ua.StatusCodes.BadNotReadable,
        ua.StatusCodes.BadAttributeIdInvalid,
    }
)
_BAD = 0x80000000


def _now() -> datetime:
    return datetime.now(UTC)


_FIRST_CHUNK = 100  # items checked and monitored before the rest at a connect


class OpcUaSource:
    """Collects `items` and `events` from one endpoint until cancelled. Never raises for a server fault."""

    def __init__(
        self,
        endpoint: Endpoint,
        items: Sequence[NodeItem],
        events: Sequence[EventItem] = (),
        *,
        emit: EmitSamples,
        emit_events: EmitEvents,
        interrupted: ReportInterruption,
        problem: ReportProblem,
        state: ReportState,
        delays: Callable[[], Iterator[float]],
        pki: Pki | None = None,
        own_certificate: OwnCertificate | None = None,
        paths: Mapping[str, str] | None = None,
        learnt: Callable[[dict[str, str]], None] | None = None,
        raw_times: bool = False,
    ) -> None:
        """`paths`: the browse path learnt earlier for each item configured by node id (node id → path);
        `learnt(paths)` is called with all of them whenever new ones were learnt, to be kept. With `raw_times`
        subscribed values may carry their timestamps as ticks (adapters/sample.py: Stamp)."""
        self.endpoint = endpoint
        self._raw_times = raw_times
        self._pki = pki
        self._own = own_certificate
        self._refusal = ""  # the last SecurityRefused message logged
        self._fields = {"source": endpoint.id}  # the log's own fields (agent/logs.py)
        self.items = tuple(items)
        self.events = tuple(events)
        self._emit = emit
        self._emit_events = emit_events
        self._interrupted = interrupted
        self._problem = problem
        self._state = state
        self._delays = delays
        self._by_handle = {i.handle: i for i in self.items}
        self._event_handles = {e.handle: e for e in self.events}
        self._reported: dict[int, str] = {}
        self._lost: asyncio.Event = asyncio.Event()
        self._lost_reason = ""
        self._last_publish = 0.0
        self._handling = False  # a publish callback is running
        self._last_data: datetime | None = None
        self.active: tuple[int, ...] = ()
        self.connected = False
        self.since = _now()  # when `connected` last changed (or the source started)
        self.reconnects = 0  # sessions set up again after one was lost or refused
        self.last_problem = ""  # why the last connection was lost or refused
        self._sessions_full = False
        self._paths: dict[str, str] = dict(paths or {})
        self._learnt = learnt
        # The session's state, for re-checks while it runs (reset at every connect):
        self._session: Client | None = None
        self._nodes: dict[int, ua.NodeId] = {}  # handle -> node id in use
        self._sub_id: int | None = None
        self._monitored: dict[int, int] = {}  # handle -> the server's monitored item id
        self._gone: set[int] = set()  # polled items found gone or changed: not read until the next connect
        self._suspects: dict[int, str] = {}  # handle -> why it is to be checked again
        self._side: set[asyncio.Task[None]] = set()  # learning paths, re-checks: end with the session
        self._pollers: list[asyncio.Task[None]] = []  # the session's polling tasks
        self.publisher: publish.Publisher | None = None  # the session's publish loop (None: asyncua's own)
        self._setting_up = asyncio.Lock()  # held while a session is set up, and while a reload is applied

    # -- supervision ----------------------------------------------------------------------------

    async def run(self) -> None:
        down_since: datetime | None = None
        down_reason = ""
        delays = self._delays()
        failures = 0
        while True:
            client = self._client()
            try:
                await security.connect(client, self.endpoint, self._pki, self._own)
                async with self._setting_up:  # a reload (update) waits for the session's set-up
                    self._pollers = await self._setup(client)
                self.connected = True
                now = self.since = _now()
                if down_since is not None:
                    self.reconnects += 1
                    await self._interrupted(
                        Interruption(self.endpoint.id, self._handles(), down_since, now, down_reason)
                    )
                    log.info("reconnected to %s after %d attempt(s)", self.endpoint.url, failures, extra=self._fields)
                await self._state(SourceState(self.endpoint.id, "connected", now, self.endpoint.url))
                down_since, failures, delays = None, 0, self._delays()
                self._sessions_full, self._refusal = False, ""
                try:
                    await self._watch()
                finally:
                    ending = [*self._pollers, *self._side]
                    self._pollers = []
                    for p in ending:
                        p.cancel()
                    await asyncio.gather(*ending, return_exceptions=True)
                    self._side.clear()
                    self._session = None
            except asyncio.CancelledError:
                await self._close(client)
                raise
            except Exception as exc:  # any server or network fault: start over
                reason = self._lost_reason or f"{type(exc).__name__}: {exc}".rstrip(": ")
                if isinstance(exc, ua.uaerrors.BadTooManySessions):
                    reason = self._too_many_sessions(reason)
                if isinstance(exc, security.SecurityRefused):
                    reason = f"refused to connect: {exc}"
                    if str(exc) != self._refusal:
                        self._refusal = str(exc)
                        log.error("%s: %s: %s", self.endpoint.id, self.endpoint.url, reason, extra=self._fields)
                if down_since is None:
                    down_since = self._last_data or _now()
                    down_reason = reason
                    if self.connected:
                        log.warning("lost %s: %s", self.endpoint.url, reason, extra=self._fields)
                    else:
                        log.warning("cannot connect to %s: %s", self.endpoint.url, reason, extra=self._fields)
                    self.connected, self.since, self.last_problem = False, _now(), reason
                    await self._interrupted(Interruption(self.endpoint.id, self._handles(), down_since, None, reason))
                    await self._state(SourceState(self.endpoint.id, "disconnected", _now(), reason))
                failures += 1
                self.connected = False
            await self._close(client)
            await asyncio.sleep(next(delays))

    def _too_many_sessions(self, reason: str) -> str:
        """BadTooManySessions is its own state: nothing is wrong with us or the network, the server is full."""
        if not self._sessions_full:
            self._sessions_full = True
            log.warning(
                "%s: %s has no session left for us (BadTooManySessions). PLCs allow few sessions, and the "
                "session of a client that died without closing it stays until it times out (ours request %g s); "
                "retrying in the background",
                self.endpoint.id,
                self.endpoint.url,
                self.endpoint.session_timeout_s,
                extra=self._fields,
            )
        return "the server has no session left (BadTooManySessions)"

    def _handles(self) -> tuple[int, ...]:
        """Everything this source collects: its items and its event sources."""
        return tuple(i.handle for i in self.items) + tuple(self._event_handles)

    def _client(self) -> Client:
        client = security.new_client(self.endpoint)
        self._lost = asyncio.Event()
        self._lost_reason = ""

        async def lost(exc: Exception) -> None:
            self._mark_lost(f"connection lost: {type(exc).__name__} {exc}".strip())

        client.connection_lost_callback = lost
        return client

    def _mark_lost(self, reason: str) -> None:
        if not self._lost.is_set():
            self._lost_reason = reason
            self._lost.set()

    async def _close(self, client: Client) -> None:
        try:
            async with asyncio.timeout(2.0):
                await client.disconnect()
        except Exception:  # the connection is being discarded anyway; a cancellation is not swallowed
            log.debug("disconnect from %s failed", self.endpoint.url, exc_info=True, extra=self._fields)
        # A cancel that reached us inside the disconnect may have been swallowed there (asyncua catches
        # broadly while closing; wait_for, used here before, returns a result that completes together with
        # a cancel): it still ends the source, instead of the backoff sleep that would follow.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError

    async def _watch(self) -> None:
        """Return (by raising) when the session is gone: supervisor signal, silent subscription or poller failure."""
        silence = (self.endpoint.publishing_interval_ms / 1000) * requests.KEEPALIVE_COUNT * 2 + self.endpoint.timeout_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=1.0)
            if self._lost.is_set():
                raise ConnectionLost(self._lost_reason)
            for p in self._pollers:
                if p.done():
                    raise ConnectionLost(f"poller stopped: {p.exception()!r}")
            # A callback still storing (a full disk: the pipeline retries, the server holds its queue)
            # is not a silent server: cancelling it would lose the batch it is trying to keep.
            subscribed = self._sub_id is not None
            if subscribed and not self._handling and time.monotonic() - self._last_publish > silence:
                raise ConnectionLost(f"no publish response for {silence:.0f} s")

    # -- setup ------------------------------------------------------------------------------------

    async def _limit(self, client: Client, kind: str) -> int:
        configured = self.endpoint.max_items_per_call
        try:
            value = await client.get_node(requests.LIMIT_NODES[kind]).read_value()
            server = int(value) if value else 0
        except (ua.UaError, TimeoutError, ValueError, TypeError):
            server = 0
        sizes = [s for s in (configured, server) if s]
        return min(sizes) if sizes else requests.DEFAULT_CHUNK

    async def _setup(self, client: Client) -> list[asyncio.Task[None]]:
        self._session, self._sub_id = None, None
        self._monitored, self._gone, self._suspects = {}, set(), {}
        read_chunk = await self._limit(client, "read")
        nodes = await conformance.resolve(
            client, self.items, self._paths, await self._limit(client, "translate"), self._report, self._moved
        )
        self._nodes = nodes
        self.active = ()
        chunk = await self._limit(client, "monitored")
        self._last_publish = time.monotonic()
        if self.events or any(self._by_handle[h].mode == "subscribe" for h in nodes):
            await self._open_subscription(client)
        # A chunk at a time, checked then monitored: the first chunk's values flow while the rest is checked,
        # and the first chunk is small, so the first values come after one short round trip of each
        # (bench/bench_startup.py).
        handles = list(nodes)
        first = min(read_chunk, _FIRST_CHUNK)
        for part in [handles[:first], *chunks(handles[first:], read_chunk)] if handles else []:
            ok = await conformance.check_types(
                client, self._by_handle, {h: nodes[h] for h in part}, read_chunk, self._report
            )
            for h in ok:
                if not self._reported.get(h, "").startswith("renumbered"):
                    self._reported.pop(h, None)  # fixed on the server: report it again if it breaks again
            self.active = tuple(sorted({*self.active, *ok}))
            wanted = [self._by_handle[h] for h in ok if self._by_handle[h].mode == "subscribe"]
            await self._monitor_all(client, [requests.item_request(i, nodes[i.handle]) for i in wanted], chunk)
        await self._monitor_all(client, [requests.event_request(e) for e in self.events], chunk)
        subscribe = [self._by_handle[h] for h in self.active if self._by_handle[h].mode == "subscribe"]
        poll = [self._by_handle[h] for h in self.active if self._by_handle[h].mode == "poll"]
        self._session = client
        unknown = {h: nodes[h] for h in self.active if not self._by_handle[h].by_path}
        unknown = {h: n for h, n in unknown.items() if self._by_handle[h].node not in self._paths}
        if unknown and self._learnt is not None:
            self._side_task(self._learn(client, unknown, await self._limit(client, "browse")), "learn-paths")
        log.info(
            "%s: connected to %s; %d items subscribed, %d polled, %d event sources, %d skipped",
            self.endpoint.id,
            self.endpoint.url,
            len(subscribe),
            len(poll),
            len(self.events),
            len(self.items) - len(self.active),
            extra=self._fields,
        )
        return self._start_pollers(client, poll, nodes, read_chunk)

    async def _report(self, item_handle: int, node: str, problem: str) -> None:
        if self._reported.get(item_handle) == problem:
            return
        self._reported[item_handle] = problem
        log.error(
            "%s: node %s: %s; skipped, the rest keeps collecting",
            self.endpoint.id, node, problem, extra={**self._fields, "node": node},
        )  # fmt: skip
        await self._problem(NodeProblem(self.endpoint.id, item_handle, node, problem))

    async def _moved(self, item_handle: int, node: str, message: str) -> None:
        if self._reported.get(item_handle) == message:
            return
        self._reported[item_handle] = message
        log.warning("%s: node %s: %s", self.endpoint.id, node, message, extra={**self._fields, "node": node})
        await self._problem(NodeProblem(self.endpoint.id, item_handle, node, message, kind="node-moved"))

    def _side_task(self, work: Awaitable[None], name: str) -> asyncio.Future[None]:
        task = asyncio.ensure_future(work)
        task.set_name(f"{self.endpoint.id}-{name}")
        self._side.add(task)
        task.add_done_callback(self._side.discard)
        return task

    async def _learn(self, client: Client, nodes: dict[int, ua.NodeId], chunk: int) -> None:
        """The browse paths of items configured by node id, learnt in the background and kept (paths.py)."""
        try:
            found = await paths.learn(client, nodes, chunk)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the session may be going; learning is tried again at the next connect
            log.info(
                "%s: learning the browse paths of %d nodes failed: %s",
                self.endpoint.id,
                len(nodes),
                exc,
                extra=self._fields,
            )
            return
        if not found or self._learnt is None:
            return
        for h, path in found.items():
            self._paths[self._by_handle[h].node] = path
        log.info(
            "%s: learnt the browse paths of %d nodes configured by node id",
            self.endpoint.id,
            len(found),
            extra=self._fields,
        )
        try:
            self._learnt(dict(self._paths))
        except OSError as exc:
            log.warning("%s: the learnt browse paths could not be kept: %s", self.endpoint.id, exc, extra=self._fields)

    # -- reload -----------------------------------------------------------------------------------

    async def update(self, items: Sequence[NodeItem], events: Sequence[EventItem] = ()) -> None:
        """Collect `items` and `events` from now on (a reload). In a running session only what changed is
        touched: the monitored items of removed or changed items are deleted, those of new or changed ones
        created; every other monitored item goes on as it was, so none of its values is missed. Polled items
        get new pollers. Without a session the next connect sets up the new set; if applying it fails, the
        session is started over with it."""
        async with self._setting_up:
            new_items = {i.handle: i for i in items}
            new_events = {e.handle: e for e in events}
            gone = [h for h, i in self._by_handle.items() if new_items.get(h) != i]
            gone += [h for h, e in self._event_handles.items() if new_events.get(h) != e]
            added = [i for h, i in new_items.items() if self._by_handle.get(h) != i]
            added_events = [e for h, e in new_events.items() if self._event_handles.get(h) != e]
            repoll = any(self._by_handle[h].mode == "poll" for h in gone if h in self._by_handle)
            repoll = repoll or any(i.mode == "poll" for i in added)
            self.items, self.events = tuple(items), tuple(events)
            self._by_handle, self._event_handles = new_items, new_events
            for h in gone:
                self._reported.pop(h, None)
            client = self._session
            if client is None or not (gone or added or added_events):
                return
            try:
                await self._change(client, gone, added, added_events, repoll)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the session is likely going; the next one is set up from the new set
                log.warning(
                    "%s: applying the new configuration to the session failed (%s); starting the session over",
                    self.endpoint.id, exc, extra=self._fields,
                )  # fmt: skip
                self._mark_lost(f"reload: {type(exc).__name__}: {exc}")

    async def _change(
        self, client: Client, gone: list[int], added: list[NodeItem], added_events: list[EventItem], repoll: bool
    ) -> None:
        ids = [m for h in gone if (m := self._monitored.pop(h, None)) is not None]
        stopped = set(gone)
        self.active = tuple(h for h in self.active if h not in stopped)
        for h in gone:
            self._nodes.pop(h, None)
            self._gone.discard(h)
            self._suspects.pop(h, None)
        if ids and self._sub_id is not None:
            for part in chunks(ids, await self._limit(client, "monitored")):
                await lowlevel.delete_monitored_items(client, self._sub_id, part)
        nodes: dict[int, ua.NodeId] = {}
        if added:
            read_chunk = await self._limit(client, "read")
            nodes = await conformance.resolve(
                client, added, self._paths, await self._limit(client, "translate"), self._report, self._moved
            )
            ok = await conformance.check_types(client, self._by_handle, nodes, read_chunk, self._report)
            self._nodes.update({h: nodes[h] for h in ok})
            self.active = tuple(sorted({*self.active, *ok}))
            added = [i for i in added if i.handle in ok]
        subscribe = [i for i in added if i.mode == "subscribe"]
        chunk = await self._limit(client, "monitored")
        if self._sub_id is None and (subscribe or self.events):
            await self._subscribe(client, subscribe, nodes, chunk)  # events: all of them, with the subscription
        elif subscribe or added_events:
            wanted = [requests.item_request(i, nodes[i.handle]) for i in subscribe]
            await self._monitor_all(client, wanted + [requests.event_request(e) for e in added_events], chunk)
        if repoll:
            old, self._pollers = self._pollers, []
            for p in old:
                p.cancel()
            await asyncio.gather(*old, return_exceptions=True)
            poll = [self._by_handle[h] for h in self.active if self._by_handle[h].mode == "poll"]
            self._pollers = self._start_pollers(client, poll, self._nodes, await self._limit(client, "read"))
        unknown = {i.handle: nodes[i.handle] for i in added if not i.by_path and i.node not in self._paths}
        if unknown and self._learnt is not None:
            self._side_task(self._learn(client, unknown, await self._limit(client, "browse")), "learn-paths")
        log.info(
            "%s: configuration reloaded: %d items and event sources stopped, %d started",
            self.endpoint.id, len(gone), len(added) + len(added_events), extra=self._fields,
        )  # fmt: skip

    # -- checks while collecting ------------------------------------------------------------------

    def recheck(self, handles: Sequence[int], why: str) -> None:
        """Check these items' nodes again now (a Bad status that says the node may be gone, or a value of
        another type): a removed or changed node is reported, a renumbered one followed by its browse path."""
        for h in handles:
            if h in self._by_handle and h in self.active:
                self._suspects.setdefault(h, why)
        client = self._session
        if self._suspects and client is not None and not any(t.get_name().endswith("-recheck") for t in self._side):
            self._side_task(self._recheck(client), "recheck")

    async def _recheck(self, client: Client) -> None:
        while self._suspects:
            suspects, self._suspects = self._suspects, {}
            nodes = {h: self._nodes[h] for h in suspects if h in self._nodes}
            try:
                found = await conformance.problems(client, self._by_handle, nodes, requests.DEFAULT_CHUNK)
                for h, (problem, gone) in found.items():
                    item = self._by_handle[h]
                    path = item.node if item.by_path else self._paths.get(item.node)
                    if gone and path is not None and await self._follow(client, item, path):
                        continue
                    await self._stop_item(client, h)
                    await self._report(h, item.node, f"{problem}, noticed while collecting ({suspects[h]})")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the session is likely going: the next connect checks everything
                log.info(
                    "%s: checking %d nodes again failed: %s", self.endpoint.id, len(nodes), exc, extra=self._fields
                )
                return

    async def _follow(self, client: Client, item: NodeItem, path: str) -> bool:
        """A node gone from its id, looked for by its browse path; True if found with the right type and
        collected from there."""
        [new] = await inspect.resolve(client, [(path, True)], Limits())
        if not isinstance(new, ua.NodeId) or new == self._nodes.get(item.handle):
            return False
        if await conformance.problems(client, self._by_handle, {item.handle: new}, 1):
            return False
        await self._stop_item(client, item.handle)
        self._nodes[item.handle] = new
        self._gone.discard(item.handle)
        if item.mode == "subscribe" and self._sub_id is not None:
            await self._monitor(client, [requests.item_request(item, new)])
        self.active = tuple(sorted({*self.active, item.handle}))
        await self._moved(
            item.handle,
            item.node,
            f"renumbered on the server while collecting: found by its browse path {path} as {new.to_string()}; "
            "collected from there — update the mapping",
        )
        return True

    async def _stop_item(self, client: Client, h: int) -> None:
        """No more values of this item until the next connect: its monitored item deleted, its polling stopped."""
        self.active = tuple(x for x in self.active if x != h)
        self._gone.add(h)
        mon = self._monitored.pop(h, None)
        if mon is not None and self._sub_id is not None:
            await lowlevel.delete_monitored_items(client, self._sub_id, [mon])

    async def _subscribe(self, client: Client, items: list[NodeItem], nodes: dict[int, ua.NodeId], chunk: int) -> None:
        """A subscription with these items and every event source."""
        await self._open_subscription(client)
        wanted = [requests.item_request(i, nodes[i.handle]) for i in items]
        await self._monitor_all(client, wanted + [requests.event_request(e) for e in self.events], chunk)

    async def _open_subscription(self, client: Client) -> None:
        lost = self._lost

        def ended(reason: str) -> None:  # a loop that outlived its session must not end the next one
            if self._lost is lost:
                self._mark_lost(reason)

        sub_id, publisher = await publish.subscribe(
            client,
            requests.subscription(self.endpoint),
            self._on_publish,
            ended=ended,
            requests=self.endpoint.publish_requests,
            name=self.endpoint.id,
            raw_times=self._raw_times,
        )
        self._sub_id = sub_id
        self.publisher = publisher  # None: asyncua's own publish loop serves the subscription
        if publisher is not None:
            loop = self._side_task(publisher.run(), "publish")

            def failed(task: asyncio.Future[None]) -> None:  # a bug in the loop: start the session over now
                if not task.cancelled() and (exc := task.exception()) is not None:
                    log.error("%s: the publish loop failed", self.endpoint.id, exc_info=exc, extra=self._fields)
                    ended(f"publish loop failed: {type(exc).__name__}: {exc}")

            loop.add_done_callback(failed)

    async def _monitor_all(self, client: Client, wanted: list[ua.MonitoredItemCreateRequest], chunk: int) -> None:
        for part in chunks(wanted, chunk):
            await self._monitor(client, part)

    async def _monitor(self, client: Client, part: Sequence[ua.MonitoredItemCreateRequest]) -> None:
        assert self._sub_id is not None
        create = ua.CreateMonitoredItemsParameters(
            SubscriptionId=self._sub_id, TimestampsToReturn=ua.TimestampsToReturn.Both, ItemsToCreate=list(part)
        )
        results = await lowlevel.create_monitored_items(client, create)
        for req, res in zip(part, results, strict=True):
            h = req.RequestedParameters.ClientHandle
            if res.StatusCode.is_good():
                self._monitored[h] = res.MonitoredItemId
                continue
            what = self._by_handle[h].node if h in self._by_handle else self._event_handles[h].node
            await self._report(h, what, f"cannot be monitored ({res.StatusCode.name})")
            self.active = tuple(x for x in self.active if x != h)

    # -- the hot path -----------------------------------------------------------------------------

    async def _on_publish(self, result: Publish | ua.PublishResult) -> None:
        """A publish response: from our own loop as fastdecode made it, on the stock path as asyncua did."""
        self._last_publish = time.monotonic()
        data = result.data if isinstance(result, Publish) else fastdecode.from_result(result).data
        if not data:
            return
        self._handling = True
        try:
            for notif in data:
                if type(notif) is DataChange:
                    await self._data(notif.samples)
                elif type(notif) is ua.EventNotificationList:
                    await self._events(notif.Events)
                elif type(notif) is ua.StatusChangeNotification and not notif.Status.is_good():
                    self._mark_lost(f"subscription status {notif.Status.name}")
        finally:
            self._handling = False
            self._last_publish = time.monotonic()

    async def _data(self, samples: list[Sample]) -> None:
        suspects = [s.handle for s in samples if s.status >= _BAD and s.status & 0xFFFF0000 in _RECHECK]
        await self._deliver(samples)
        if suspects:
            self.recheck(suspects, "the server sent a Bad status that says so")

    async def _deliver(self, samples: list[Sample]) -> None:
        try:
            await self._emit(samples)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The server considers the batch delivered once we return; accounting for what emit
            # could not take is emit's job (adapters/sample.py). A raise here is a bug to log.
            log.exception(
                "%s: handling a batch of %d values failed", self.endpoint.id, len(samples), extra=self._fields
            )
        else:
            if samples:
                self._last_data = _now()

    async def _events(self, events: list[ua.EventFieldList]) -> None:
        out: list[Event] = []
        for ev in events:
            spec = self._event_handles.get(ev.ClientHandle)
            if spec is None:
                continue
            fields = {name: plain(v.Value) for name, v in zip(spec.fields, ev.EventFields, strict=False)}
            when = fields.get("Time")
            out.append(Event(spec.handle, when if isinstance(when, datetime) else _now(), fields))
        if out:
            try:
                await self._emit_events(out)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: handling %d events failed", self.endpoint.id, len(out), extra=self._fields)

    # -- polling ----------------------------------------------------------------------------------

    def _start_pollers(
        self, client: Client, items: list[NodeItem], nodes: dict[int, ua.NodeId], chunk: int
    ) -> list[asyncio.Task[None]]:
        groups: dict[float, list[NodeItem]] = {}
        for item in items:
            groups.setdefault(item.sampling_ms or self.endpoint.poll_interval_ms, []).append(item)
        return [
            asyncio.create_task(self._poll(client, interval / 1000, group, nodes, chunk), name=f"poll-{interval}")
            for interval, group in groups.items()
        ]

    async def _poll(
        self, client: Client, period: float, items: list[NodeItem], nodes: dict[int, ua.NodeId], chunk: int
    ) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            for part in chunks([i for i in items if i.handle not in self._gone], chunk):
                values = await lowlevel.read(client, requests.read_values([nodes[i.handle] for i in part]))
                samples = []
                suspects: list[int] = []
                for item, dv in zip(part, values, strict=True):
                    v = dv.Value.Value if dv.Value is not None else None
                    sc = dv.StatusCode
                    code = sc.value if sc else 0
                    if code >= _BAD and code & 0xFFFF0000 in _RECHECK:
                        suspects.append(item.handle)
                    st, svt = no_time(dv.SourceTimestamp), no_time(dv.ServerTimestamp)
                    samples.append(Sample(item.handle, plain(v), st, svt, code))
                await self._deliver(samples)
                if suspects:
                    self.recheck(suspects, "a read gave a Bad status that says so")
            next_at += period
            now = loop.time()
            if next_at < now:  # fell behind: skip missed rounds instead of bursting
                next_at = now + period
            await asyncio.sleep(next_at - now)
