"""The OPC UA adapter against node-opcua, a second OPC UA stack that honours sampling intervals,
implements absolute and percent deadband and enforces operation limits (asyncua's server does none)."""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from asyncua import Client

from adapters.opcua.pki import OwnCertificate, Pki
from adapters.opcua.source import OpcUaSource
from adapters.opcua.spec import Endpoint, NodeItem
from simulators.nodeopcua.launcher import NodeOpcuaServer, node_opcua_available
from simulators.ports import free_port
from tests.helpers import ROOT, Collected, unavailable

pytestmark = pytest.mark.nodeopcua


@pytest.fixture(autouse=True)
def _needs_node_opcua() -> None:
    reason = node_opcua_available()
    if reason is not None:
        unavailable(reason)


def quick() -> Iterator[float]:
    return itertools.repeat(0.2)


async def collect(
    url: str,
    items: Sequence[NodeItem],
    until: Callable[[Collected], bool],
    timeout: float,
    pki: Pki | None = None,
    own: OwnCertificate | None = None,
    **endpoint: object,
) -> tuple[Collected, OpcUaSource]:
    out = Collected()
    ep = Endpoint(id="node", url=url, timeout_s=20, **endpoint)  # type: ignore[arg-type]
    source = OpcUaSource(
        ep, items, emit=out.emit, emit_events=out.emit_events, interrupted=out.interrupted, problem=out.problem,
        state=out.state, delays=quick, pki=pki, own_certificate=own,
    )  # fmt: skip
    task = asyncio.create_task(source.run())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not until(out):
            assert not task.done(), f"the source stopped: {task.exception()!r}"
            assert loop.time() < deadline, f"timed out after {timeout} s; have {len(out.samples)} samples"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return out, source


def test_per_item_sampling_interval_is_honoured() -> None:
    with NodeOpcuaServer(port=free_port(), vars=10) as server:
        items = [
            NodeItem(handle=1, node=server.fast_id, opcua_type="Double", sampling_ms=100, queue_size=50),
            NodeItem(handle=2, node=server.fast_id, opcua_type="Double", sampling_ms=500, queue_size=50),
        ]

        def enough(c: Collected) -> bool:
            return len(c.of(2)) >= 12

        got, _ = asyncio.run(collect(server.endpoint, items, enough, timeout=60, publishing_interval_ms=200))
    fast, slow = got.of(1), got.of(2)
    span = lambda xs: (xs[-1].source_time - xs[1].source_time).total_seconds()  # noqa: E731
    fast_rate = (len(fast) - 2) / span(fast)
    slow_rate = (len(slow) - 2) / span(slow)
    # Source times are the server's, so a busy client does not change the rates; a busy server slows both
    # alike, so their ratio is held close and each alone loosely.
    assert 4 <= fast_rate <= 14, f"100 ms sampling gave {fast_rate:.1f} values/s"
    assert 0.8 <= slow_rate <= 2.8, f"500 ms sampling gave {slow_rate:.1f} values/s"
    assert 3.5 <= fast_rate / slow_rate <= 7, (fast_rate, slow_rate)


def test_absolute_and_percent_deadband() -> None:
    with NodeOpcuaServer(port=free_port(), vars=10) as server:
        items = [
            NodeItem(handle=1, node=server.ramp_id, opcua_type="Double", sampling_ms=0, queue_size=500),
            NodeItem(handle=2, node=server.ramp_id, opcua_type="Double", sampling_ms=0, queue_size=500,
                 deadband=("absolute", 10.0)),
            NodeItem(handle=3, node=server.ramp_id, opcua_type="Double", sampling_ms=0, queue_size=500,
                 deadband=("percent", 25.0)),
        ]  # fmt: skip

        def enough(c: Collected) -> bool:
            return len(c.of(3)) >= 12

        got, _ = asyncio.run(collect(server.endpoint, items, enough, timeout=90, publishing_interval_ms=100))
    every, absolute, percent = ([s.value for s in got.of(h)] for h in (1, 2, 3))
    assert all(abs(b - a) > 10 for a, b in itertools.pairwise(absolute)), absolute[:20]
    assert all(abs(b - a) > 25 for a, b in itertools.pairwise(percent)), percent[:20]
    assert len(every) > 3 * len(absolute) and len(absolute) > len(percent)


def test_5000_nodes_are_split_by_the_operation_limits() -> None:
    with NodeOpcuaServer(port=free_port(), vars=5000, period_ms=500, max_nodes_per_call=700) as server:
        ids = server.variable_ids()
        items = [NodeItem(handle=i + 1, node=n, opcua_type="Double") for i, n in enumerate(ids)]
        items.append(NodeItem(handle=9999, node=server.node_id("NoSuchNode"), opcua_type="Double"))

        def all_seen(c: Collected) -> bool:
            # The unknown node is alone in the last chunk checked, so its report may follow the last value.
            return len({s.handle for s in c.samples}) >= 5000 and bool(c.problems)

        got, source = asyncio.run(collect(server.endpoint, items, all_seen, timeout=120, publishing_interval_ms=250))
    assert len(source.active) == 5000
    assert [p.handle for p in got.problems] == [9999]
    assert "unknown on the server" in got.problems[0].problem
    assert {s.handle for s in got.samples} == set(range(1, 5001))
    assert all(s.status == 0 and s.source_time is not None for s in got.samples)


DOOMED_SOURCE = """
import asyncio, itertools, sys
from adapters.opcua.pki import OwnCertificate, Pki
from adapters.opcua.source import OpcUaSource
from adapters.opcua.spec import Endpoint, NodeItem
from tests.helpers import Collected

async def main() -> None:
    c = Collected()
    source = OpcUaSource(
        Endpoint(id="doomed", url=sys.argv[1], session_timeout_s=3),
        [NodeItem(handle=1, node=sys.argv[2], opcua_type="Double")],
        emit=c.emit, emit_events=c.emit_events, interrupted=c.interrupted, problem=c.problem, state=c.state,
        delays=lambda: itertools.repeat(0.2),
    )
    task = asyncio.create_task(source.run())
    while not c.samples:
        await asyncio.sleep(0.05)
    print("collecting", flush=True)
    await task

asyncio.run(main())
"""


def test_a_full_server_is_its_own_state_and_a_dead_session_frees_its_slot_after_our_timeout() -> None:
    """A PLC with one session slot. Held by another client: BadTooManySessions, said plainly, retried.
    Then our own session dies unclosed (the agent killed): the slot is free again after the session
    timeout we asked for (3 s here, 30 s by default), not the 120 s it once took."""

    async def scenario(server: NodeOpcuaServer) -> None:
        holder = Client(server.endpoint)
        holder.session_timeout = 3000
        await holder.connect()
        items = [NodeItem(handle=1, node=server.fast_id, opcua_type="Double")]

        async def release() -> None:
            await asyncio.sleep(2)
            await holder.disconnect()

        releasing = asyncio.create_task(release())
        got, _ = await collect(server.endpoint, items, lambda c: len(c.samples) > 3, 30, session_timeout_s=3)
        await releasing
        refused = [s for s in got.states if s.state == "disconnected"]
        assert refused and "BadTooManySessions" in refused[0].detail, got.states
        # The source was cancelled and closed its session. Now a source in another process is killed
        # while connected, as an agent is by SIGKILL: its session stays until its own timeout.
        doomed = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            DOOMED_SOURCE,
            server.endpoint,
            server.fast_id,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        assert doomed.stdout is not None
        assert await asyncio.wait_for(doomed.stdout.readline(), 30) == b"collecting\n"
        doomed.kill()
        await doomed.wait()
        started = asyncio.get_running_loop().time()
        again, _ = await collect(server.endpoint, items, lambda c: len(c.samples) > 0, 40, session_timeout_s=3)
        waited = asyncio.get_running_loop().time() - started
        assert any("BadTooManySessions" in s.detail for s in again.states), "the dead session held the slot"
        assert waited < 30, f"the dead session held the slot for {waited:.0f} s"

    with NodeOpcuaServer(port=free_port(), vars=10, max_sessions=1) as server:
        asyncio.run(scenario(server))


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
def test_a_second_stack_secured_trusted_once_then_collected_from(tmp_path: Path, mode: str) -> None:
    """node-opcua offers only signed endpoints: its certificate is refused (and kept) until trusted."""
    pki = Pki(tmp_path / "pki")
    own = pki.ensure_own("urn:edge-agent:test:host")
    with NodeOpcuaServer(port=free_port(), vars=10, secure=True) as server:
        items = [NodeItem(handle=1, node=server.fast_id, opcua_type="Double")]
        secure = {
            "security_policy": "Aes256_Sha256_RsaPss",
            "security_mode": mode,
            "application_uri": own.application_uri,
        }

        async def scenario() -> tuple[Collected, Collected]:
            refused, _ = await collect(server.endpoint, items, lambda c: bool(c.states), 20, pki=pki, own=own, **secure)
            rejected = sorted(pki.rejected.glob("*.der"))
            assert len(rejected) == 1
            pki.trust(rejected[0].stem)
            got, _ = await collect(server.endpoint, items, lambda c: len(c.samples) > 3, 30, pki=pki, own=own, **secure)
            return refused, got

        refused, got = asyncio.run(scenario())
    assert "not trusted" in refused.states[0].detail
    assert len(got.samples) > 3
