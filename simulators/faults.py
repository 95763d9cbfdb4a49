"""Fault runs: the agent as a process between the factory simulator and a private mosquitto, broken on
purpose, and the receiver's accounting afterwards. The tests run them small; bench/fault_*.py and
bench/soak.py run them long and print what they found.

    with Bed(tmp_path, clock_offset=-3.0, via_proxy=True) as bed:
        agent = bed.start_agent()
        ...
        report = bed.account(until=...)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from simulators.accounting import Ledger, ts
from simulators.agentproc import AgentProcess
from simulators.factory import FactoryThread, SignalInfo, catalogue
from simulators.factory.agentconfig import factory_config
from simulators.mosquitto import MosquittoBroker, Subscriber
from simulators.netproxy import ProxyThread
from simulators.ports import free_port

TOPIC = "kamp/v1/test-site/#"


def machine_signals(s: SignalInfo) -> bool:
    """CNC01's machine signals (not its type diagnostics): enough to prove delivery, quick to check."""
    return s.machine == "CNC01" and not s.name.startswith("Diagnostics")


@dataclass
class Report:
    values: int  # values the server produced in the checked window (from each node's first delivered value)
    delivered: int  # of those, the ones that arrived
    gaps: int  # gap records
    missing: list[tuple[str, datetime]] = field(default_factory=list)  # neither arrived nor in a gap
    reissued: int = 0  # values that arrived under more than one id
    duplicates: int = 0  # records that arrived more than once (same id): what was in flight
    invented: int = 0  # values that arrived with a source time the server never wrote to that node

    def __str__(self) -> str:
        return (
            f"{self.values:,} values produced, {self.delivered:,} delivered, {len(self.missing)} unaccounted, "
            f"{self.invented} never produced, {self.reissued} under a second id, "
            f"{self.duplicates} duplicate records (same id), {self.gaps} gap records"
        )


class Bed:
    """Factory simulator + mosquitto + subscriber, and the agent's config; the agent is started on demand."""

    def __init__(
        self,
        workdir: Path,
        *,
        period: float = 0.05,
        machines: int = 1,
        clock_offset: float = 0.0,
        via_proxy: bool = False,
        only: Callable[[SignalInfo], bool] = machine_signals,
        mqtt: str = "",
        broker_conf: Sequence[str] = (),
        broker_up: bool = True,
        data_dir: Path | None = None,
        **config: Any,
    ) -> None:
        self.workdir = workdir
        self.only = only
        self.machines = machines
        # Every write is kept (the recorder's default keeps the last 1,000 per node: at 20 rounds a
        # second a minute's run would be checked only over its last 50 s).
        self.factory = FactoryThread(
            port=free_port(), period=period, machines=machines, clock_offset=clock_offset, history=10**7
        )
        self.broker = MosquittoBroker(workdir / "broker", extra_conf=broker_conf)
        self._broker_up = broker_up
        self.proxy: ProxyThread | None = None
        self._via_proxy = via_proxy
        self._mqtt = mqtt
        self._config = config
        self.subscriber: Subscriber | None = None
        self.config = workdir / "agent.yaml"
        self.data_dir = data_dir or workdir / "data"
        self.runs = 0

    def __enter__(self) -> Self:
        self.broker.start()
        self.factory.start()
        opc_port = self.factory.port
        if self._via_proxy:
            self.proxy = ProxyThread("127.0.0.1", self.factory.port).start()
            opc_port = self.proxy.port
        # A persistent session (mosquitto keeps it across its restarts), so whatever the agent publishes
        # after a restart of the broker reaches the subscriber even before it has reconnected.
        self.subscriber = Subscriber(port=self.broker.port, topic=TOPIC, timeout=30).__enter__()
        if not self._broker_up:
            self.broker.stop()
        sink = (
            f"- type: mqtt\n  host: 127.0.0.1\n  port: {self.broker.port}\n  client_id: agent-under-test\n"
            f"  batch: {{max_records: 500, max_delay_ms: 100}}\n{self._mqtt}"
        )
        self.config.write_text(
            factory_config(
                opc_port=opc_port,
                data_dir=self.data_dir,
                sinks=sink,
                machines=self.machines,
                only=self.only,
                events=False,
                **self._config,
            )
        )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.subscriber is not None:
            self.subscriber.__exit__()
        if self.proxy is not None:
            self.proxy.stop()
        self.factory.stop()
        self.broker.stop()

    def start_agent(self) -> AgentProcess:
        self.runs += 1
        return AgentProcess(self.config, self.workdir / f"agent-{self.runs}.log").start()

    def ledger(self, *, validate: bool = False) -> Ledger:
        assert self.subscriber is not None
        return Ledger.of(self.subscriber.messages(), validate=validate)

    def factory_offset(self) -> timedelta:
        """The device clock minus the true time."""
        return timedelta(seconds=self.factory.clock_offset)

    def nodes(self) -> list[str]:
        return [s.node_id for s in catalogue(self.machines) if self.only(s)]

    def data_after(self, when: datetime) -> bool:
        """A value produced after `when` (the device's clock) has arrived."""
        return any(r["sourceTime"] and ts(r["sourceTime"]) > when for r in self.ledger().records("data"))

    def account(self, *, until: datetime | None = None) -> Report:
        ledger = self.ledger(validate=True)
        written = {n: [t for t, _ in self.factory.written(n)] for n in self.nodes()}
        data = ledger.records("data")
        first: dict[str, datetime] = {}
        for r in data:
            if r["sourceTime"]:
                t = ts(r["sourceTime"])
                first[r["node"]] = min(t, first.get(r["node"], t))
        last = until or max((ts(r["sourceTime"]) for r in data if r["sourceTime"]), default=None)

        def counted(node: str, t: datetime) -> bool:
            return node in first and first[node] <= t and (last is None or t <= last)

        produced = sum(1 for n, times in written.items() for t in times if counted(n, t))
        delivered = {(r["node"], ts(r["sourceTime"])) for r in data if r["sourceTime"] and r["node"] in written}
        delivered = {(n, t) for n, t in delivered if counted(n, t)}
        produced_pairs = {(n, t) for n, times in written.items() for t in times}
        ids = [r["id"] for r in data]
        return Report(
            values=produced,
            delivered=len(delivered),
            gaps=len(ledger.unique("gap")),
            missing=ledger.unaccounted(written, until=until),
            reissued=len(ledger.reissued()),
            duplicates=len(ids) - len(set(ids)),
            invented=len(delivered - produced_pairs),
        )


def wait_for(what: str, check: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def finish(bed: Bed, agent: AgentProcess, after: datetime, what: str = "values after the fault") -> Report:
    """Wait for a value produced after `after` (the device's clock), let the gap records follow, stop the
    agent cleanly and account for every value up to the stop."""
    wait_for(what, lambda: bed.data_after(after), 90)
    time.sleep(1.0)  # the reconnect's gap records follow its first values
    stopped_at = datetime.now(UTC) + bed.factory_offset()
    code = agent.stop()
    if code != 0:
        raise RuntimeError(f"the agent exited with {code}:\n{agent.log()[-3000:]}")
    time.sleep(1.0)  # the last PUBACKed messages reach the subscriber
    return bed.account(until=stopped_at)


def kills(bed: Bed, count: int, rng: random.Random, log: Callable[[str], None] = lambda _: None) -> Report:
    """SIGKILL the agent `count` times at random moments (every third one before it can have
    connected), then run it once more, stop it cleanly and account for every value."""
    agent = bed.start_agent()
    wait_for("the first values", lambda: bed.ledger().records("data"), 60)
    for n in range(count):
        early = n % 3 == 1
        time.sleep(rng.uniform(0.0, 0.2) if early else rng.uniform(0.3, 3.0))
        agent.kill()
        log(f"kill {n + 1}/{count} {'right after the start' if early else 'while collecting'}")
        agent = bed.start_agent()
    return finish(bed, agent, datetime.now(UTC) + bed.factory_offset(), "values after the last kill")


def link_drops(bed: Bed, every_s: float, duration_s: float, log: Callable[[str], None] = lambda _: None) -> Report:
    """Reset the agent's OPC UA connection every `every_s` for `duration_s` (a flaky link), then account."""
    assert bed.proxy is not None, "the bed needs via_proxy=True"
    agent = bed.start_agent()
    wait_for("the first values", lambda: bed.ledger().records("data"), 60)
    started = time.monotonic()
    drops = 0
    while time.monotonic() - started < duration_s:
        time.sleep(every_s)
        bed.proxy.reset()
        drops += 1
        log(f"connection dropped ({drops})")
    return finish(bed, agent, datetime.now(UTC) + bed.factory_offset(), "values after the last drop")
