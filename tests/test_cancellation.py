"""Cancellation propagates out of every long-running task, whatever it is doing, within a bound.

A task that swallows CancelledError keeps an agent from stopping on SIGTERM (a service manager
then kills it, and the buffers are not flushed); each case below cancels a task in one of the
states it spends its life in and checks that it ends as cancelled, promptly.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from adapters.opcua.source import OpcUaSource
from adapters.opcua.spec import Endpoint, NodeItem
from agent.backoff import Backoff
from agent.supervisor import Supervisor
from simulators.factory import FactoryThread
from simulators.mosquitto import MosquittoBroker
from simulators.netproxy import ProxyThread
from simulators.ports import free_port
from tests import mqtt_broker
from tests.helpers import Collected
from uploader.buffer import Buffer
from uploader.file import FileSink
from uploader.forwarder import Batching, Forwarder
from uploader.mqtt import MqttSettings, MqttSink

BOUND = 5.0  # seconds a cancelled task may take to end (the OPC UA close is bounded by 2 s)


async def cancels_promptly(task: asyncio.Task[None], ready: Callable[[], bool], timeout: float = 30) -> None:
    """Wait until `ready()`, cancel, and require the task to end as cancelled within BOUND."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not ready():
        assert not task.done(), f"the task ended by itself: {task.exception()!r}"
        assert loop.time() < deadline, "never reached the state to cancel in"
        await asyncio.sleep(0.02)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=BOUND)
    assert done, f"still running {BOUND} s after cancel(): CancelledError was swallowed somewhere"
    assert task.cancelled(), f"ended, but not as cancelled: {task.exception()!r}"


def source_for(
    url: str, collected: Collected, delays: Callable[[], Iterator[float]], timeout_s: float = 8
) -> OpcUaSource:
    items = [NodeItem(handle=1, node="ns=2;s=CNC01.SpindleSpeed", opcua_type="Double")]
    return OpcUaSource(
        Endpoint(id="plc", url=url, publishing_interval_ms=100, timeout_s=timeout_s),
        items,
        emit=collected.emit,
        emit_events=collected.emit_events,
        interrupted=collected.interrupted,
        problem=collected.problem,
        state=collected.state,
        delays=delays,
    )


def test_an_opcua_source_while_collecting() -> None:
    collected = Collected()
    with FactoryThread(port=free_port(), period=0.1, machines=1) as fac:

        async def scenario() -> None:
            source = source_for(fac.endpoint, collected, Backoff(0.2, 1).delays)
            await cancels_promptly(asyncio.create_task(source.run()), lambda: len(collected.samples) > 3)

        asyncio.run(scenario())


def test_an_opcua_source_closing_a_dead_session() -> None:
    """The link goes silent: the source gives the session up and closes it, which hangs until its
    time-out. A cancellation that arrives then must not be swallowed (it once was: the agent then
    slept out its backoff and reconnected after SIGTERM)."""
    collected = Collected()
    with FactoryThread(port=free_port(), period=0.1, machines=1) as fac, ProxyThread("127.0.0.1", fac.port) as link:

        async def scenario() -> None:
            url = f"opc.tcp://127.0.0.1:{link.port}/"
            source = source_for(url, collected, lambda: itertools.repeat(60.0), timeout_s=2)
            task = asyncio.create_task(source.run())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while len(collected.samples) < 3:
                assert loop.time() < deadline and not task.done()
                await asyncio.sleep(0.02)
            link.set_blackhole(True)
            await cancels_promptly(task, lambda: any(s.state == "disconnected" for s in collected.states))

        asyncio.run(scenario())


def test_an_opcua_source_in_a_connect_that_hangs_and_in_its_backoff() -> None:
    """A server that accepts TCP and never answers: cancel during the connect, and during the wait after it."""

    async def scenario(wait_in_backoff: bool) -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        collected = Collected()
        source = source_for(f"opc.tcp://127.0.0.1:{port}/", collected, lambda: itertools.repeat(60.0))
        task = asyncio.create_task(source.run())
        if wait_in_backoff:
            await cancels_promptly(task, lambda: bool(collected.states), timeout=30)
        else:
            await asyncio.sleep(0.5)
            await cancels_promptly(task, lambda: True)
        server.close()

    asyncio.run(scenario(wait_in_backoff=False))
    asyncio.run(scenario(wait_in_backoff=True))


def forwarder(tmp_path: Path, sink: FileSink | MqttSink) -> Forwarder:
    buf = Buffer(tmp_path / "buffer.db", quota_bytes=1 << 30)
    return Forwarder(buf, sink, site="s", batching=Batching(max_delay=0.05), delays=Backoff(30, 60).delays)


def test_a_forwarder_waiting_for_records_and_waiting_for_its_sink(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = FileSink(tmp_path / "out.jsonl")
        fwd = forwarder(tmp_path, sink)
        await cancels_promptly(asyncio.create_task(fwd.run()), lambda: True)  # sink not connected: waits for it
        sink_task = asyncio.create_task(sink.run())
        await cancels_promptly(asyncio.create_task(fwd.run()), lambda: sink.connected)  # connected, nothing to send
        await cancels_promptly(sink_task, lambda: True)
        await sink.stop()
        fwd.buffer.close()

    asyncio.run(scenario())


def test_an_mqtt_sink_connecting_connected_and_in_its_backoff(tmp_path: Path) -> None:
    broker: MosquittoBroker = mqtt_broker.MosquittoBroker(tmp_path / "broker")

    def sink() -> MqttSink:
        s = MqttSettings(host="127.0.0.1", port=broker.port, client_id="cancel-test")
        return MqttSink(s, delays=lambda: itertools.repeat(60.0))

    async def scenario() -> None:
        down = sink()
        await cancels_promptly(asyncio.create_task(down.run()), lambda: True)  # refused, then a 60 s backoff
        await down.stop()
        with broker:
            up = sink()
            await cancels_promptly(asyncio.create_task(up.run()), lambda: up.connected)
            await up.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("state", ["running", "waiting to restart"])
def test_a_supervised_component(state: str) -> None:
    started = asyncio.Event()

    async def component() -> None:
        started.set()
        if state == "waiting to restart":
            raise RuntimeError("fails, so the supervisor sleeps before the restart")
        await asyncio.Event().wait()

    async def report(name: str, kind: str, message: str) -> None:
        return

    async def scenario() -> None:
        sup = Supervisor(delays=lambda: itertools.repeat(60.0), max_failures=5, window_s=60, report=report)
        sup.start("c", component)
        await asyncio.wait_for(started.wait(), BOUND)
        stopping: Awaitable[None] = sup.stop()
        await asyncio.wait_for(stopping, BOUND)

    asyncio.run(scenario())
