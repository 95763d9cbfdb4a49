"""The OPC UA adapter against the factory simulator: polling, browse paths, type checks, events."""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections.abc import Callable, Iterator

from adapters.opcua.source import OpcUaSource
from adapters.opcua.spec import Endpoint, EventItem, NodeItem
from simulators.factory import FactoryThread
from simulators.ports import free_port
from tests.helpers import Collected


def quick() -> Iterator[float]:
    return itertools.repeat(0.2)


async def run_until(source: OpcUaSource, done: Callable[[], bool], timeout: float, sink: Collected) -> None:
    task = asyncio.create_task(source.run())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while not done():
            counts = {h: len(sink.of(h)) for h in (1, 2, 5)}
            assert loop.time() < deadline, f"timed out: {counts}, {len(sink.events)} events, {sink.problems}"
            assert not task.done(), repr(task.exception())
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_polling_browse_paths_events_and_problems() -> None:
    port = free_port()
    sink = Collected()
    items = [
        NodeItem(handle=1, node="ns=2;s=CNC01.SpindleSpeed", opcua_type="Double", mode="poll", sampling_ms=200),
        NodeItem(handle=2, node="0:Objects/2:PRS01/2:Tonnage", opcua_type="Double", by_path=True),
        NodeItem(handle=3, node="0:Objects/2:PRS01/2:NoSuchThing", opcua_type="Double", by_path=True),
        NodeItem(handle=4, node="ns=2;s=CNC01.Diagnostics.DoubleArray", opcua_type="Double", is_array=False),
        NodeItem(handle=5, node="ns=2;s=CNC01.Diagnostics.Byte", opcua_type="Byte", mode="poll", sampling_ms=300),
        NodeItem(handle=6, node="not a node id", opcua_type="Double"),
    ]
    events = [EventItem(handle=10, node="ns=2;s=PRS01")]
    with FactoryThread(port=port, period=0.1, machines=3, alarm_every=2) as fac:
        endpoint = Endpoint(id="factory", url=fac.endpoint, publishing_interval_ms=100, timeout_s=5)
        source = OpcUaSource(
            endpoint, items, events, emit=sink.emit, emit_events=sink.emit_events, interrupted=sink.interrupted,
            problem=sink.problem, state=sink.state, delays=quick,
        )  # fmt: skip

        def done() -> bool:
            return len(sink.of(1)) >= 10 and len(sink.of(5)) >= 5 and bool(sink.of(2)) and bool(sink.events)

        asyncio.run(run_until(source, done, timeout=60, sink=sink))
    polled = sink.of(1)
    gaps = [(b.server_time - a.server_time).total_seconds() for a, b in itertools.pairwise(polled)]  # type: ignore[operator]
    # Polled every 200 ms: about that apart, and never a burst (a late round is skipped, not caught up).
    # A busy machine may delay a round, so only the median is held close; and a read the server answered
    # late stands closer to the next one, on time, than 200 ms: what a burst shows is more reads than rounds.
    assert 0.15 <= statistics.median(gaps[1:]) <= 0.4, gaps
    span = sum(gaps[1:])
    assert len(gaps[1:]) <= span / 0.2 + 2, f"{len(gaps[1:])} reads in {span:.2f} s: late rounds were caught up"
    assert all(isinstance(s.value, int) and 0 <= s.value <= 255 for s in sink.of(5))
    assert all(isinstance(s.value, float) for s in sink.of(2))
    problems = {p.handle: p.problem for p in sink.problems}
    assert set(problems) == {3, 4, 6}
    assert "browse path not found" in problems[3]
    assert "array" in problems[4]
    assert "not a valid node id" in problems[6]
    assert source.active == (1, 2, 5)
    assert sink.states[0].state == "connected"
    ev = sink.events[0]
    assert ev.handle == 10 and "PRS01" in str(ev.fields["SourceName"])
