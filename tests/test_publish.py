"""The agent's own publish loop against real servers: used when it can be, asyncua's when not, the same
values either way, several requests outstanding, and a notification acknowledged only once handled."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.client.ua_session import UaSession

from adapters.opcua import lowlevel, publish, requests, security
from adapters.opcua.fastdecode import DataChange, Publish
from adapters.opcua.publish import Publisher
from adapters.opcua.source import OpcUaSource
from adapters.opcua.spec import Endpoint, NodeItem
from adapters.sample import Sample, stamp_datetime
from simulators.factory import FactoryThread
from simulators.factory.catalogue import catalogue
from simulators.nodeopcua.launcher import NodeOpcuaServer, node_opcua_available
from simulators.ports import free_port
from tests.helpers import Collected, unavailable, until
from tests.test_fastdecode import same

DIAGNOSTICS = [s for s in catalogue(1) if ".Diagnostics." in s.node_id]
ITEMS = [
    NodeItem(handle=i, node=s.node_id, opcua_type=s.opcua_type, is_array=s.is_array) for i, s in enumerate(DIAGNOSTICS)
]


def quick() -> Iterator[float]:
    return itertools.repeat(0.2)


def source(
    url: str, items: Sequence[NodeItem], sink: Collected, requests: int = 3, raw_times: bool = False
) -> OpcUaSource:
    endpoint = Endpoint(id="factory", url=url, publishing_interval_ms=100, timeout_s=5, publish_requests=requests)
    return OpcUaSource(
        endpoint, items, emit=sink.emit, emit_events=sink.emit_events, interrupted=sink.interrupted,
        problem=sink.problem, state=sink.state, delays=quick, raw_times=raw_times,
    )  # fmt: skip


def asyncua_session(s: OpcUaSource) -> UaSession:
    assert s._session is not None
    session: UaSession = s._session.uaclient.session
    return session


def by_time(samples: Sequence[Sample]) -> dict[tuple[int, Any], tuple[Any, ...]]:
    """Samples by (handle, source time); raw ticks (the agent's raw_times) as the datetimes they stand for."""
    made = (
        x._replace(source_time=stamp_datetime(x.source_time), server_time=stamp_datetime(x.server_time))
        for x in samples
    )
    return {(x.handle, x.source_time): tuple(x) for x in made}


def test_every_builtin_type_arrives_the_same_through_the_own_loop_as_through_asyncuas(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Three sources on one server at once: one on asyncua's loop (the shape check made to say no), one on ours,
    and one on ours with raw times (as the agent runs it: timestamps as ticks)."""
    stock_sink, fast_sink, raw_sink = Collected(), Collected(), Collected()

    async def run(url: str) -> tuple[OpcUaSource, OpcUaSource]:
        stock, fast = source(url, ITEMS, stock_sink), source(url, ITEMS, fast_sink, requests=2)
        raw = source(url, ITEMS, raw_sink, raw_times=True)
        tasks = []
        try:
            with monkeypatch.context() as m, caplog.at_level(logging.WARNING, logger=lowlevel.__name__):
                m.setattr(lowlevel, "_MISSING", "the test says no")
                m.setattr(lowlevel, "_warned", False)
                tasks.append(asyncio.create_task(stock.run()))
                await until(lambda: stock.connected, 30, "the stock source to subscribe")
            tasks.append(asyncio.create_task(fast.run()))
            tasks.append(asyncio.create_task(raw.run()))
            await until(lambda: fast.connected and raw.connected, 30, "the fast sources to subscribe")

            def enough() -> bool:
                common = by_time(stock_sink.samples).keys() & by_time(fast_sink.samples).keys()
                common &= by_time(raw_sink.samples).keys()
                return all(sum(h == i.handle for h, _ in common) >= 16 for i in ITEMS)

            await until(enough, 60, "16 values of every type through both paths")
            assert stock.publisher is None and asyncua_session(stock)._publish_task is not None
            assert fast.publisher is not None and fast.publisher.handled > 0
            assert fast.publisher.requests == 2  # the source's publish_requests reached its loop
            assert asyncua_session(fast)._publish_task is None and not asyncua_session(fast)._subscription_callbacks
            return stock, fast
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    with FactoryThread(port=free_port(), period=0.1, machines=1) as fac:
        asyncio.run(run(fac.endpoint))
    stock_values, fast_values = by_time(stock_sink.samples), by_time(fast_sink.samples)
    raw_values = by_time(raw_sink.samples)
    common = stock_values.keys() & fast_values.keys() & raw_values.keys()
    for key in common:
        assert same(fast_values[key], stock_values[key]), (fast_values[key], stock_values[key])
        assert same(raw_values[key], stock_values[key]), (raw_values[key], stock_values[key])
    # Values of a fixed size (a Double) come with ticks; of a variable size (a String) with datetimes.
    double, string = (
        next(i.handle for i in ITEMS if i.opcua_type == t and not i.is_array) for t in ("Double", "String")
    )
    assert {type(x.source_time) for x in raw_sink.samples if x.handle == double} == {int}
    assert {type(x.source_time) for x in raw_sink.samples if x.handle == string} == {datetime}
    assert {type(x.source_time) for x in fast_sink.samples} == {datetime}
    assert {h for h, _ in common} == {i.handle for i in ITEMS}
    assert not fast_sink.problems and not stock_sink.problems
    warnings = [r.getMessage() for r in caplog.records if r.name == lowlevel.__name__]
    assert len(warnings) == 1 and "the test says no" in warnings[0] and "asyncua's own publish loop" in warnings[0]


def test_the_shape_check_says_no_when_send_request_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert lowlevel._own_loop_missing() is None

    async def changed(self: UaSession, request: Any, *, deadline: float) -> Any: ...

    monkeypatch.setattr(UaSession, "_send_request", changed)
    assert "(self, request, deadline)" in str(lowlevel._own_loop_missing())
    monkeypatch.delattr(UaSession, "_send_request")
    assert "gone" in str(lowlevel._own_loop_missing())


SIGNALS = ["ns=2;s=CNC01.Power", "ns=2;s=CNC01.CycleTime", "ns=2;s=CNC01.Diagnostics.Double"]


class Recorder:
    """A handler that records every publish, notes whether it was ever entered twice at once, and can hold."""

    def __init__(self) -> None:
        self.seen: list[Publish] = []
        self.inside = 0
        self.overlapped = False
        self.hold: asyncio.Event | None = None  # set: the next publish with data waits for it
        self.held: Publish | None = None

    async def __call__(self, p: Publish | ua.PublishResult) -> None:
        assert isinstance(p, Publish)
        self.inside += 1
        self.overlapped |= self.inside > 1
        try:
            self.seen.append(p)
            if self.hold is not None and p.data and self.held is None:
                self.held = p
                await self.hold.wait()
        finally:
            self.inside -= 1

    def data(self) -> list[Publish]:
        return [p for p in self.seen if p.data]


async def started(url: str, handle: Recorder, n: int, ended: list[str] | None = None) -> tuple[Client, Publisher]:
    """A client on `url` with a subscription to SIGNALS served by a Publisher keeping `n` requests out (not run)."""
    ep = Endpoint(id="t", url=url, publishing_interval_ms=100)
    client = security.new_client(ep)
    await client.connect()
    reasons = [] if ended is None else ended
    sub_id, publisher = await publish.subscribe(
        client, requests.subscription(ep), handle, ended=reasons.append, requests=n, name="test"
    )
    assert publisher is not None
    items = [
        requests.item_request(NodeItem(handle=i, node=node, opcua_type="Double"), ua.NodeId.from_string(node))
        for i, node in enumerate(SIGNALS)
    ]
    await lowlevel.create_monitored_items(
        client,
        ua.CreateMonitoredItemsParameters(
            SubscriptionId=sub_id, TimestampsToReturn=ua.TimestampsToReturn.Both, ItemsToCreate=items
        ),
    )
    return client, publisher


def test_several_requests_outstanding_and_a_notification_acknowledged_only_after_it_was_handled() -> None:
    """While the handler holds one notification the others still come in, and the server keeps the held one
    (its sequence number stays in AvailableSequenceNumbers) until the handler returned; then it forgets it."""
    handle = Recorder()

    async def run(url: str) -> None:
        client, publisher = await started(url, handle, 3)
        task = asyncio.create_task(publisher.run())
        try:
            handle.hold = asyncio.Event()
            await until(lambda: handle.held is not None, 20, "a publish with data")
            held = handle.held
            assert held is not None
            # The two other requests get answered while the handler holds: nothing more was sent for them.
            await until(lambda: publisher.received == publisher.handled + 3, 20, "the other two responses")
            assert publisher.sent == publisher.handled + 3
            acks_before = publisher.acknowledged
            assert acks_before == len(handle.data()) - 1  # every earlier one, not the held one
            waiting = publisher.received
            handle.hold.set()
            await until(lambda: publisher.handled >= waiting + 3, 20, "more publishes after the release")
            assert publisher.acknowledged >= acks_before + 1
            after = handle.seen[handle.seen.index(held) + 1 :]
            arrived_while_held = after[:2]
            assert all(held.sequence_number in p.available for p in arrived_while_held if p.data)
            await until(
                lambda: any(held.sequence_number not in p.available for p in handle.seen[-3:]),
                20,
                "the server to forget the acknowledged notification",
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.disconnect()

    with FactoryThread(port=free_port(), period=0.1, machines=1) as fac:
        asyncio.run(run(fac.endpoint))
    assert not handle.overlapped
    sequence = [p.sequence_number for p in handle.data()]
    assert sequence == list(range(sequence[0], sequence[0] + len(sequence)))  # in order, none skipped
    assert all(type(d) is DataChange for p in handle.data() for d in p.data)


def test_too_many_requests_lowers_the_count_without_spinning(caplog: pytest.LogCaptureFixture) -> None:
    """asyncua's server keeps 10 publish requests more than it has subscriptions and refuses the oldest beyond."""
    handle = Recorder()

    async def run(url: str) -> Publisher:
        client, publisher = await started(url, handle, 16)
        task = asyncio.create_task(publisher.run())
        try:
            await until(lambda: len(handle.data()) >= 10, 20, "ten publishes with data")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.disconnect()
        return publisher

    with caplog.at_level(logging.INFO, logger=publish.__name__), FactoryThread(port=free_port(), period=0.1) as fac:
        publisher = asyncio.run(run(fac.endpoint))
    assert publisher.requests <= 11
    assert 16 - 11 - 1 <= publisher.refused <= 16  # those beyond its limit, give or take one answered at once
    notes = [r for r in caplog.records if r.name == publish.__name__]
    assert [r.levelno for r in notes] == [logging.INFO]
    assert "at most" in notes[0].getMessage()


def test_a_closed_session_ends_the_loop_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    handle = Recorder()

    ended: list[str] = []

    async def run(url: str) -> asyncio.Task[None]:
        client, publisher = await started(url, handle, 3, ended)
        task = asyncio.create_task(publisher.run())
        await until(lambda: handle.data(), 20, "a publish with data")
        await client.disconnect()
        await asyncio.wait_for(task, 10)
        return task

    with caplog.at_level(logging.WARNING), FactoryThread(port=free_port(), period=0.1, machines=1) as fac:
        task = asyncio.run(run(fac.endpoint))
    assert task.done() and task.exception() is None
    [reason] = ended
    assert "connection lost" in reason or "BadSessionClosed" in reason
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "asyncua.server" not in r.name]


def test_closing_a_source_on_node_opcua_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """node-opcua answers every outstanding PublishRequest with BadSessionClosed when the session closes."""
    reason = node_opcua_available()
    if reason is not None:
        unavailable(reason)
    sink = Collected()

    async def run(server: NodeOpcuaServer) -> OpcUaSource:
        items = [NodeItem(handle=i, node=n, opcua_type="Double") for i, n in enumerate(server.variable_ids())]
        s = source(server.endpoint, items, sink)
        task = asyncio.create_task(s.run())
        await until(lambda: len(sink.samples) >= 500, 60, "500 values")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return s

    with caplog.at_level(logging.INFO), NodeOpcuaServer(port=free_port(), vars=50) as server:
        s = asyncio.run(run(server))
    assert s.publisher is not None and s.publisher.requests == publish.REQUESTS
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # node-opcua sends source picoseconds with every value: the server time still arrives (asyncua's decoder
    # would have read it from the picoseconds' bytes and made it "no time").
    assert all(x.server_time is not None and x.source_time is not None for x in sink.samples)


def test_a_publish_loop_that_fails_starts_the_session_over_at_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the loop (here: its first decode raises) must not leave the subscription silent until the
    watchdog's time-out: the session starts over, and values flow again."""
    sink = Collected()
    real = Publisher._publish
    broken = {"left": 1}

    async def once_broken(self: Publisher, body: bytes) -> None:
        if broken["left"]:
            broken["left"] -= 1
            raise RuntimeError("a bug in the loop")
        await real(self, body)

    monkeypatch.setattr(Publisher, "_publish", once_broken)

    async def run(url: str) -> OpcUaSource:
        src = source(url, ITEMS[:3], sink)
        task = asyncio.create_task(src.run())
        try:
            await until(lambda: src.reconnects >= 1, 30, "the session started over")
            seen = len(sink.samples)
            await until(lambda: len(sink.samples) > seen, 30, "values after the new session")
            return src
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    with FactoryThread(port=free_port(), period=0.1, machines=1) as fac, caplog.at_level(logging.ERROR):
        src = asyncio.run(run(fac.endpoint))
    assert "publish loop failed: RuntimeError: a bug in the loop" in src.last_problem
    assert any("the publish loop failed" in r.getMessage() for r in caplog.records)
