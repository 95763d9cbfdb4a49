"""What does the full agent cost per value, next to the least an asyncua client can do with the same load?

One node-opcua server (--vars Double variables, all changed every --period-ms, its per-publish
notification cap raised so it never binds) serves two clients in turn, so both see the same
offered load:

  bare   a child process with an asyncua client whose raw publish callback only counts
         `len(MonitoredItems)` per DataChangeNotification (testbed.md's "minimal raw callback"),
         subscribed with the agent's own subscription and monitored-item parameters;
  agent  `edge-agent run` as a child process, mapping every variable to one equipment, with its
         MQTT sink publishing at QoS 1 to a private mosquitto. Its values are counted where they
         arrive: a paho subscriber in this process on `<prefix>/<site>/+/data`.

For each, over a fixed window after a warm-up: values/s, CPU-seconds of that process alone
(psutil: user + system, all threads; not the server, not the broker) per 10,000 values, time it
waited for a CPU, and the age of values on arrival (receive time - sourceTime). For the agent also
whether it kept up: its own agent-stats records (values taken in, data records pending in its
buffer), what it still delivered while draining on SIGTERM, and values the server discarded for
it (overflow bit). Prints a table, a verdict and `ratio agent/bare CPU per value`; see README.md.

Usage: .venv/bin/python bench/bench_pipeline.py [--vars 5000] [--period-ms 100] [--seconds 20] [--pairs 1]
       [--profile-agent /tmp/agent.prof]   # cProfile the agent over the window, print where its time went
Needs Node.js with node-opcua (`npm ci --prefix simulators/nodeopcua`) and mosquitto.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import pstats
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
import psutil
from asyncua import Client, ua
from paho.mqtt.client import Client as MqttClient
from paho.mqtt.client import ConnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from simulators.mosquitto import MosquittoBroker
from simulators.nodeopcua.launcher import NodeOpcuaServer, node_opcua_available
from simulators.ports import free_port
from simulators.procs import stop_process

ROOT = Path(__file__).resolve().parents[1]

SITE = "bench-site"
EQUIPMENT = "load01"
TOPIC_PREFIX = "kamp/v1"  # the mqtt sink's default topic_prefix
# The agent's defaults for a point without sampling_ms/queue_size/deadband/trigger; the bare
# client asks for exactly the same, so both get the same notifications.
QUEUE_SIZE = 10
KEEPALIVE_COUNT = 10
MAX_NODES_PER_CALL = 1000
START_TIMEOUT = 120.0  # node-opcua with 5,000 variables, the agent building 5,000 AAS elements
STOP_TIMEOUT = 30.0
DRAIN_GRACE = 1.5  # seconds to let the last PUBACKed messages reach our subscriber
STATUS_INTERVAL_S = 2  # the agent's agent-stats records: values in and buffer backlog, seen from outside
OVERFLOW_BIT = 0x80  # StatusCode InfoBits "Overflow": the server's queue discarded older values


# -- the bare subscriber (child process) ---------------------------------------------------------


@dataclass
class BareCounts:
    values: int = 0
    publishes: int = 0
    ages_ms: list[float] = field(default_factory=list)


def _age_ms(t: datetime | None, now: float) -> float | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (now - t.timestamp()) * 1000


async def run_bare(endpoint: str, node_ids: Sequence[str], publishing_ms: float) -> None:
    """Subscribe like the agent does, count values, and answer `mark` lines on stdin with counts."""
    counts = BareCounts()

    def on_publish(result: Any) -> None:
        # The whole job of the baseline: count. Two clock reads per notification message (about
        # ten a second) give the age of values on arrival; that is noise next to decoding 5,000 values.
        for notif in result.NotificationMessage.NotificationData:
            if type(notif) is ua.DataChangeNotification:
                items = notif.MonitoredItems
                counts.values += len(items)
                counts.publishes += 1
                if items:
                    now = time.time()
                    for n in (items[0], items[-1]):
                        age = _age_ms(n.Value.SourceTimestamp, now)
                        if age is not None:
                            counts.ages_ms.append(age)

    # asyncua warns that the server granted another session timeout: noise in the bench's output.
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    client = Client(endpoint, timeout=10)
    await client.connect()
    try:
        limit_node = client.get_node(
            ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall)
        )
        chunk = int(await limit_node.read_value() or MAX_NODES_PER_CALL)
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=publishing_ms,
            RequestedLifetimeCount=KEEPALIVE_COUNT * 3,
            RequestedMaxKeepAliveCount=KEEPALIVE_COUNT,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        sub = await client.uaclient.create_subscription(params, on_publish)
        requests = [
            ua.MonitoredItemCreateRequest(
                ItemToMonitor=ua.ReadValueId(NodeId=ua.NodeId.from_string(nid), AttributeId=ua.AttributeIds.Value),
                MonitoringMode=ua.MonitoringMode.Reporting,
                RequestedParameters=ua.MonitoringParameters(
                    ClientHandle=handle, SamplingInterval=-1.0, Filter=None, QueueSize=QUEUE_SIZE, DiscardOldest=True
                ),
            )
            for handle, nid in enumerate(node_ids, start=1)
        ]
        for start in range(0, len(requests), chunk):
            create = ua.CreateMonitoredItemsParameters(
                SubscriptionId=sub.SubscriptionId,
                TimestampsToReturn=ua.TimestampsToReturn.Both,
                ItemsToCreate=requests[start : start + chunk],
            )
            results = await client.uaclient.create_monitored_items(create)
            bad = [r.StatusCode.name for r in results if not r.StatusCode.is_good()]
            if bad:
                raise RuntimeError(f"{len(bad)} monitored items refused, e.g. {bad[0]}")
        print(f"ready {len(requests)}", flush=True)

        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        # The parent writes `mark` to read the counters; EOF on stdin means stop.
        while line := await reader.readline():
            if line.strip() == b"mark":
                ages, counts.ages_ms = counts.ages_ms, []
                report = {"values": counts.values, "publishes": counts.publishes, "ages_ms": ages}
                sys.stdout.buffer.write(orjson.dumps(report) + b"\n")
                sys.stdout.flush()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), 5)


def run_profiled_agent(config_path: Path, out: Path) -> None:
    """`edge-agent run`, with cProfile switched on by SIGUSR1 and off (stats written) by SIGUSR2.

    The same Agent that `agent.cli run` starts; the profiler covers only the measured window, so
    start-up (YAML, AAS build, type checks) and shutdown do not dilute the picture.
    """
    import cProfile

    from agent import config as config_mod
    from agent import logs
    from agent.app import Agent
    from agent.config import secrets

    cfg = config_mod.load(config_path)
    logs.setup(cfg.agent.log_level, "json", secrets(cfg))
    profiler = cProfile.Profile()

    def dump() -> None:
        profiler.disable()
        profiler.dump_stats(str(out))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # Handlers run on the loop's thread, the one cProfile must watch.
        loop.add_signal_handler(signal.SIGUSR1, profiler.enable)
        loop.add_signal_handler(signal.SIGUSR2, dump)
        await Agent(cfg).run(stop)

    asyncio.run(main())


# -- measurement helpers (parent) ----------------------------------------------------------------


def cpu_seconds(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    t = proc.cpu_times()
    return float(t.user + t.system)


def run_queue_seconds(proc: psutil.Process) -> float:
    """Seconds the process's threads were runnable but waited for a CPU (Linux schedstat; 0 elsewhere).

    A client that falls behind at well under 100 % of a core is either waiting for the network
    or for a CPU: this tells the two apart on a 2-core machine shared with the server and broker.
    """
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def machine_busy_seconds() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


@dataclass(frozen=True)
class Neighbours:
    """The processes around the measured client, reported for context only."""

    server: psutil.Process
    broker: psutil.Process | None
    bench: psutil.Process


@dataclass
class Window:
    """One client's figures over the measured window."""

    name: str
    seconds: float = 0.0
    values: int = 0
    publishes: int = 0  # data notifications (bare only: the agent's are not visible from outside)
    cpu_s: float = 0.0
    run_queue_s: float = 0.0
    server_cpu_s: float = 0.0
    broker_cpu_s: float = 0.0
    bench_cpu_s: float = 0.0
    machine_busy_s: float = 0.0
    rss_mb: float = float("nan")  # the client's resident memory when the window closed
    ages_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.values / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_10k(self) -> float:
        return self.cpu_s / self.values * 10_000 if self.values else float("nan")

    @property
    def others_s(self) -> float:
        """CPU used by processes that are not part of this bench: another workload skews the figures."""
        ours = self.cpu_s + self.server_cpu_s + self.broker_cpu_s + self.bench_cpu_s
        return max(0.0, self.machine_busy_s - ours)

    def percent(self, cpu_s: float) -> float:
        """CPU-seconds over the window as % of one core."""
        return cpu_s / self.seconds * 100 if self.seconds else 0.0


class Meter:
    """Counters of the client and its neighbours at the start of a window; `stop` fills the Window."""

    def __init__(self, client: psutil.Process, around: Neighbours) -> None:
        self.client = client
        self.around = around
        self._start = self._read()

    def _read(self) -> tuple[float, ...]:
        return (
            time.monotonic(),
            cpu_seconds(self.client),
            run_queue_seconds(self.client),
            cpu_seconds(self.around.server),
            cpu_seconds(self.around.broker),
            cpu_seconds(self.around.bench),
            machine_busy_seconds(),
        )

    def stop(self, window: Window) -> None:
        d = [b - a for a, b in zip(self._start, self._read(), strict=True)]
        (
            window.seconds,
            window.cpu_s,
            window.run_queue_s,
            window.server_cpu_s,
            window.broker_cpu_s,
            window.bench_cpu_s,
            window.machine_busy_s,
        ) = d
        with contextlib.suppress(psutil.Error):
            window.rss_mb = self.client.memory_info().rss / 2**20


def percentile(data: Sequence[float], q: float) -> float:
    if not data:
        return float("nan")
    ordered = sorted(data)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def read_line(stream: IO[bytes], timeout: float) -> bytes:
    """One line from a child's stdout, or TimeoutError: a hung child must not hang the bench."""
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no answer from child within {timeout:.0f} s")
    return stream.readline()


@dataclass(frozen=True)
class AgentStats:
    """One of the agent's own `agent-stats` status records (sent every STATUS_INTERVAL_S)."""

    time: float  # epoch seconds, the agent's clock
    values_in: int  # values taken from OPC UA since start
    pending_data: int  # data records in its buffer, not yet confirmed by the broker
    receive_p50_ms: float | None = None  # the ages of values as the agent took them in since the last record
    receive_p95_ms: float | None = None


class RecordCounter:
    """A paho subscriber on the agent's data topics and its status topic, on paho's thread.

    Every data payload is parsed (orjson, a few % of a core at 50,000 records/s) so the count is
    the number of records that reached mosquitto, not an estimate; the age on arrival is taken from
    the first and last record of each message only, to keep this process light next to the agent.
    From the status topic it keeps the agent's own counters: values in, and the buffer backlog.
    """

    def __init__(self, port: int, data_topic: str, status_topic: str) -> None:
        self.topics = (data_topic, status_topic)
        self.status_topic = status_topic
        self._lock = threading.Lock()
        self.records = 0
        self.messages = 0
        self.not_good = 0
        self.overflow = 0
        self.ages_ms: list[float] = []
        self.stats: list[AgentStats] = []
        self._subscribed = threading.Event()
        self._client = MqttClient(CallbackAPIVersion.VERSION2, client_id="bench-pipeline-counter", clean_session=True)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise TimeoutError(f"could not subscribe to {self.topics} on port {port}")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def snapshot(self, *, reset_ages: bool = False) -> tuple[int, list[float]]:
        with self._lock:
            ages = self.ages_ms
            if reset_ages:
                self.ages_ms = []
            return self.records, ages

    def stats_between(self, start: float, end: float) -> list[AgentStats]:
        with self._lock:
            return [s for s in self.stats if start <= s.time <= end]

    def _on_connect(
        self, client: MqttClient, userdata: Any, flags: ConnectFlags, reason: ReasonCode, props: Properties | None
    ) -> None:
        if not reason.is_failure:
            # QoS 1, so a slow moment here cannot make mosquitto drop what the agent delivered.
            client.subscribe([(topic, 1) for topic in self.topics])

    def _on_subscribe(
        self, client: MqttClient, userdata: Any, mid: int, reasons: list[ReasonCode], props: Properties | None
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: MqttClient, userdata: Any, msg: MQTTMessage) -> None:
        now = time.time()
        records: list[dict[str, Any]] = orjson.loads(msg.payload)["records"]
        if msg.topic == self.status_topic:
            self._on_status(records)
            return
        not_good = overflow = 0
        for r in records:
            status = r.get("status") or 0
            if status:
                not_good += 1
                if status & OVERFLOW_BIT:
                    overflow += 1
        ages = []
        if records:
            for r in (records[0], records[-1]):
                t = r.get("sourceTime")
                if isinstance(t, str):
                    ages.append((now - datetime.fromisoformat(t).timestamp()) * 1000)
        with self._lock:
            self.records += len(records)
            self.messages += 1
            self.not_good += not_good
            self.overflow += overflow
            self.ages_ms.extend(ages)

    def _on_status(self, records: list[dict[str, Any]]) -> None:
        found = []
        for r in records:
            if r.get("kind") != "agent-stats":
                continue
            pending = sum(int(b.get("pending", {}).get("data", 0)) for b in r.get("buffers", {}).values())
            ages = r.get("receive_age_ms") or {}
            found.append(
                AgentStats(
                    datetime.fromisoformat(r["time"]).timestamp(),
                    int(r["values_in"]),
                    pending,
                    ages.get("p50"),
                    ages.get("p95"),
                )
            )
        with self._lock:
            self.stats.extend(found)


# -- the two runs ----------------------------------------------------------------------------------


def measure_bare(server: NodeOpcuaServer, args: argparse.Namespace, around: Neighbours) -> Window:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--bare-child",
        server.endpoint,
        "--vars",
        str(args.vars),
        "--publishing-ms",
        str(args.publishing_ms),
        "--namespace",
        str(server.namespace_index),
    ]
    # Unbuffered: read_line() selects on the pipe, so no line may sit unseen in a Python buffer.
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, bufsize=0)
    assert child.stdin is not None and child.stdout is not None
    try:
        line = read_line(child.stdout, START_TIMEOUT)
        if not line.startswith(b"ready"):
            raise RuntimeError(f"bare subscriber failed to start (exit {child.wait(10)}): {line!r}")
        proc = psutil.Process(child.pid)

        def mark() -> dict[str, Any]:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(b"mark\n")
            child.stdin.flush()
            report: dict[str, Any] = orjson.loads(read_line(child.stdout, 30))
            return report

        deadline = time.monotonic() + START_TIMEOUT
        while mark()["values"] == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("bare subscriber received no values")
            time.sleep(0.2)
        time.sleep(args.warmup)

        window = Window("bare asyncua")
        meter = Meter(proc, around)
        start = mark()
        time.sleep(args.seconds)
        end = mark()
        meter.stop(window)
        window.values = int(end["values"]) - int(start["values"])
        window.publishes = int(end["publishes"]) - int(start["publishes"])
        window.ages_ms = list(end["ages_ms"])
        child.stdin.close()  # EOF: the child disconnects and exits; if it does not, finally kills it
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(10)
        return window
    finally:
        stop_process(child, STOP_TIMEOUT)


def agent_config(server: NodeOpcuaServer, broker_port: int, data_dir: Path, args: argparse.Namespace) -> str:
    lines = [
        "version: 1",
        "site:",
        f"  id: {SITE}",
        "agent:",
        f"  data_dir: {data_dir}",
        "  log_level: info",
        f"  status_interval_s: {STATUS_INTERVAL_S}",
        "api:",
        f"  port: {free_port()}",
        "sources:",
        "  - id: loadserver",
        f"    endpoint: {server.endpoint}",
        f"    publishing_interval_ms: {args.publishing_ms}",
        "equipment:",
        f"  - id: {EQUIPMENT}",
        "    source: loadserver",
        "    nameplate:",
        "      manufacturer_name: Bench Co.",
        "      product_designation: node-opcua load server",
        "      uri_of_product: https://example.com/products/load01",
        "      order_code: LOAD-01",
        "    points:",
    ]
    lines += [
        f'      - {{node: "{nid}", path: Var_{i:05d}, type: Double}}' for i, nid in enumerate(server.variable_ids())
    ]
    lines += [
        "sinks:",
        "  - type: mqtt",
        "    id: broker",
        "    host: 127.0.0.1",
        f"    port: {broker_port}",
        f"    batch: {{max_records: {args.batch_records}, max_delay_ms: 200, max_message_records: 500}}",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class AgentExtras:
    drained: int = 0  # records delivered after the window closed, while the agent drained on SIGTERM
    left_buffered: str = ""  # the agent's own "records stay buffered for the next start" line, if any
    warnings: list[str] = field(default_factory=list)  # its warning and error log lines, whole run
    not_good: int = 0
    overflow: int = 0
    messages: int = 0
    age_halves_ms: tuple[float, float] = (float("nan"), float("nan"))
    log_path: Path = Path()
    exit_code: int | None = None
    stats: list[AgentStats] = field(default_factory=list)  # the agent's own counters during the window

    @property
    def values_in_rate(self) -> float:
        """Values/s the agent took from OPC UA (its own counter), over the window."""
        if len(self.stats) < 2 or self.stats[-1].time <= self.stats[0].time:
            return float("nan")
        first, last = self.stats[0], self.stats[-1]
        return (last.values_in - first.values_in) / (last.time - first.time)


def measure_agent(
    server: NodeOpcuaServer,
    broker: MosquittoBroker,
    workdir: Path,
    args: argparse.Namespace,
    around: Neighbours,
) -> tuple[Window, AgentExtras]:
    extras = AgentExtras(log_path=workdir / "agent.log")
    config = workdir / "agent.yaml"
    data_dir = workdir / "agent-data"
    for n in itertools.count(2):  # a fresh data directory for every run: no backlog of an earlier one
        if not data_dir.exists():
            break
        data_dir = workdir / f"agent-data-{n}"
    config.write_text(agent_config(server, broker.port, data_dir, args))
    counter = RecordCounter(broker.port, f"{TOPIC_PREFIX}/{SITE}/+/data", f"{TOPIC_PREFIX}/{SITE}/_agent/status")
    command = [sys.executable, "-m", "agent.cli", "run", "-c", str(config), "--log-format", "json"]
    if args.profile_agent:
        args.profile_agent.unlink(missing_ok=True)
        command = [sys.executable, str(Path(__file__).resolve()), "--agent-child", str(config)]
        command += ["--profile-out", str(args.profile_agent)]
    agent: subprocess.Popen[bytes] | None = None
    try:
        with extras.log_path.open("wb") as log:
            agent = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )
        proc = psutil.Process(agent.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while counter.snapshot()[0] == 0:
            if agent.poll() is not None:
                raise RuntimeError(f"agent exited with {agent.returncode}:\n{_tail(extras.log_path)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no data from the agent within {START_TIMEOUT:.0f} s:\n{_tail(extras.log_path)}")
            time.sleep(0.2)
        # The AAS model is built in a thread once collection runs (10,000 elements: several seconds of the GIL);
        # its API starts when it is done. The window measures the agent after that, as it runs all day.
        while b"local API on" not in extras.log_path.read_bytes():
            if agent.poll() is not None:
                raise RuntimeError(f"agent exited with {agent.returncode}:\n{_tail(extras.log_path)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the agent's API did not start within {START_TIMEOUT:.0f} s")
            time.sleep(0.2)
        time.sleep(args.warmup)

        window = Window("edge-agent")
        if args.profile_agent:
            agent.send_signal(signal.SIGUSR1)
        meter = Meter(proc, around)
        wall0 = time.time()
        start, _ = counter.snapshot(reset_ages=True)
        time.sleep(args.seconds / 2)
        _, first_half = counter.snapshot(reset_ages=True)
        time.sleep(args.seconds / 2)
        end, second_half = counter.snapshot(reset_ages=True)
        meter.stop(window)
        wall1 = time.time()
        if args.profile_agent:
            agent.send_signal(signal.SIGUSR2)
            deadline = time.monotonic() + STOP_TIMEOUT
            while not args.profile_agent.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)  # dump_stats may still be writing
        window.values = end - start
        window.ages_ms = first_half + second_half
        extras.age_halves_ms = (
            statistics.median(first_half or [float("nan")]),
            statistics.median(second_half or [float("nan")]),
        )

        # What still arrives after SIGTERM is what the agent had not delivered when the window
        # closed (collection stops first, then it drains for up to 5 s): its backlog.
        stop_process(agent, STOP_TIMEOUT)
        extras.exit_code = agent.returncode
        time.sleep(DRAIN_GRACE)
        extras.drained = counter.snapshot()[0] - end
        extras.not_good, extras.overflow, extras.messages = counter.not_good, counter.overflow, counter.messages
        extras.stats = counter.stats_between(wall0, wall1)
        for line in extras.log_path.read_text(errors="replace").splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # not one of the agent's JSON log lines (e.g. a traceback from a crash)
            if not isinstance(entry, dict) or entry.get("level") not in ("warning", "error", "critical"):
                continue
            msg = str(entry.get("msg", ""))
            extras.warnings.append(f"{entry.get('time', '')} {entry.get('level')} {entry.get('logger', '')}: {msg}")
            if "for the next start" in msg:
                extras.left_buffered = msg
        return window, extras
    finally:
        if agent is not None:
            stop_process(agent, STOP_TIMEOUT)
        counter.close()


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


# -- report -----------------------------------------------------------------------------------------


# What each client's process imports, as its child does: the fixed part of its RSS, whatever the nodes.
_IMPORTS = {
    "bare": "import sys; sys.path.insert(0, 'bench'); import bench_pipeline",
    "agent": "import agent.cli, agent.app, agent.api.server",  # the bench's agent serves the local API
}
_RSS = "; import os; print(int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20)"


def import_rss() -> dict[str, float]:
    """MB of RSS of a fresh process that only imports what the bare client or the agent imports: subtracted from
    the RSS at the window's end, what is left is the client's state for the nodes it follows."""
    out = {}
    for name, code in _IMPORTS.items():
        done = subprocess.run(
            [sys.executable, "-c", code + _RSS], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
        )
        out[name] = float(done.stdout.split()[-1])
    return out


def report(args: argparse.Namespace, bare: Window, agent: Window, extras: AgentExtras, took: float) -> None:
    offered = args.vars * 1000 / args.period_ms
    ncpu = psutil.cpu_count() or 1
    print(
        f"node-opcua server: {args.vars:,} Double variables changed every {args.period_ms} ms "
        f"= {offered:,.0f} values/s offered; publishing interval {args.publishing_ms:g} ms, queue {QUEUE_SIZE}, "
        f"max {args.publish_cap:,} notifications per publish"
    )
    print(f"each client measured for {args.seconds:.0f} s after a {args.warmup:.0f} s warm-up, one after the other")
    if args.profile_agent:
        print(
            f"NOTE: the agent ran under cProfile during the window ({args.profile_agent}): its CPU and throughput "
            "figures include the profiler's cost; use a run without --profile-agent for the ratio"
        )
    print()
    print(f"{'':28}{'bare asyncua':>14}{'edge-agent':>14}{'agent/bare':>12}")
    # The ratio column only where a ratio means something: throughput, the client's own cost, age.
    compared = {"values/s", "CPU % of one core", "CPU s per 10,000 values", "age on arrival median ms"}
    imports = import_rss()
    rows: list[tuple[str, float, float, str]] = [
        ("values/s", bare.rate, agent.rate, ",.0f"),
        ("share of offered values", bare.rate / offered * 100, agent.rate / offered * 100, ".1f"),
        ("CPU % of one core", bare.percent(bare.cpu_s), agent.percent(agent.cpu_s), ".0f"),
        ("waiting for a CPU, % of time", bare.percent(bare.run_queue_s), agent.percent(agent.run_queue_s), ".0f"),
        ("CPU s per 10,000 values", bare.cpu_per_10k, agent.cpu_per_10k, ".3f"),
        (
            "age on arrival median ms",
            statistics.median(bare.ages_ms or [float("nan")]),
            statistics.median(agent.ages_ms or [float("nan")]),
            ",.0f",
        ),
        ("age on arrival p95 ms", percentile(bare.ages_ms, 0.95), percentile(agent.ages_ms, 0.95), ",.0f"),
        ("age on arrival p99 ms", percentile(bare.ages_ms, 0.99), percentile(agent.ages_ms, 0.99), ",.0f"),
        ("RSS at the window's end, MB", bare.rss_mb, agent.rss_mb, ",.0f"),
        ("  of it the imports alone, MB", imports["bare"], imports["agent"], ",.0f"),
        (
            "  the rest per node, KB",
            (bare.rss_mb - imports["bare"]) * 1024 / args.vars,
            (agent.rss_mb - imports["agent"]) * 1024 / args.vars,
            ",.1f",
        ),
        ("server CPU % (node)", bare.percent(bare.server_cpu_s), agent.percent(agent.server_cpu_s), ".0f"),
        ("mosquitto CPU %", bare.percent(bare.broker_cpu_s), agent.percent(agent.broker_cpu_s), ".0f"),
        ("this bench process CPU %", bare.percent(bare.bench_cpu_s), agent.percent(agent.bench_cpu_s), ".0f"),
        ("other processes CPU %", bare.percent(bare.others_s), agent.percent(agent.others_s), ".0f"),
        (
            f"machine busy, % of {ncpu} cores",
            bare.percent(bare.machine_busy_s) / ncpu,
            agent.percent(agent.machine_busy_s) / ncpu,
            ".0f",
        ),
    ]
    for name, b, a, fmt in rows:
        ratio = f"{a / b:11.2f}x" if name in compared and b and b == b and a == a else ""
        print(f"{name:28}{b:>14{fmt}}{a:>14{fmt}}{ratio}")
    print()
    print(
        "bare = values in DataChangeNotifications counted in the client; agent = records that reached "
        f"mosquitto (QoS 1, {extras.messages:,} messages in the whole run), counted by a subscriber"
    )
    print("age on arrival = receive time - sourceTime (bare: in the client; agent: at the MQTT subscriber)")

    for w in (bare, agent):
        if w.percent(w.others_s) > 20:
            print(
                f"WARNING: other processes used {w.percent(w.others_s):.0f} % of a core during the {w.name} window "
                "(another workload on this machine): its figures are skewed; rerun on a quiet machine"
            )

    # Did the agent keep up? A growing age, a backlog at the end, or values the server's queues
    # discarded (overflow bit) each say it did not.
    first, second = extras.age_halves_ms
    backlog_s = extras.drained / agent.rate if agent.rate else float("inf")
    print(
        f"agent backlog when the window closed: {extras.drained:,} records delivered while it drained on SIGTERM "
        f"(≈ {backlog_s:.1f} s of its throughput)"
        + (f"; it logged: {extras.left_buffered}" if extras.left_buffered else "; nothing left buffered")
    )
    print(f"agent age median, first half of the window {first:,.0f} ms, second half {second:,.0f} ms")
    pending_growth = 0
    if extras.stats:
        pending = [s.pending_data for s in extras.stats]
        pending_growth = pending[-1] - pending[0]
        print(
            f"agent's own counters ({len(extras.stats)} agent-stats records in the window): took in "
            f"{extras.values_in_rate:,.0f} values/s from OPC UA; data records pending in its buffer "
            f"{pending[0]:,} -> {pending[-1]:,} (max {max(pending):,})"
        )
        received = [(s.receive_p50_ms, s.receive_p95_ms) for s in extras.stats if s.receive_p50_ms is not None]
        if received:
            # The server's part of the age (its sampling and publishing, whose phase against its own change
            # timer differs from one subscription to the next) apart from the agent's own.
            r50 = statistics.median(p50 for p50, _ in received)
            r95 = statistics.median(p95 for _, p95 in received if p95 is not None)
            a50, a95 = statistics.median(agent.ages_ms or [float("nan")]), percentile(agent.ages_ms, 0.95)
            print(
                f"agent's ages of values as it took them in from OPC UA (its agent-stats): median {r50:,.0f} ms, "
                f"p95 {r95:,.0f} ms; so the agent itself added ≈ {a50 - r50:,.0f} ms at the median, "
                f"≈ {a95 - r95:,.0f} ms at p95 (the rest is the server's sampling and publishing)"
            )
        per_in = agent.cpu_s / (extras.values_in_rate * agent.seconds) * 10_000 if extras.values_in_rate else 0.0
        if per_in and abs(extras.values_in_rate - agent.rate) > 0.05 * agent.rate:
            # In a backlog the two counts part: CPU per delivered value overstates the steady-state
            # cost (values collected but not yet sent were paid for), per value taken in understates it.
            print(
                f"agent CPU s per 10,000 values taken in: {per_in:.3f} ({per_in / bare.cpu_per_10k:.2f}x bare); "
                "in and out differ, so the true per-value cost lies between this and the table's; "
                "use a load it keeps up with (e.g. --period-ms 200) for a clean ratio"
            )
    else:
        print("agent's own counters: no agent-stats record arrived during the window (its loop was too busy?)")
    if bare.publishes:
        print(
            f"bare: {bare.publishes:,} data notifications in the window, "
            f"{bare.values / bare.publishes:,.0f} values each on average"
        )
    if extras.not_good:
        print(
            f"agent records with a non-good status: {extras.not_good:,} ({extras.overflow:,} with the overflow bit: "
            "the server's queue discarded older values because the agent asked for them too slowly)"
        )
    behind = []
    server_busy = agent.percent(agent.server_cpu_s)  # node-opcua runs on one core
    short_of_offered = agent.rate < 0.95 * offered
    if short_of_offered and (server_busy < 90 or extras.overflow):
        behind.append(f"delivered {agent.rate / offered:.0%} of the offered values")
    elif short_of_offered:
        # The server's one core was full: it sent fewer values than it was set to, to either client, and its
        # queues discarded none for the agent (no overflow bit).
        print(
            f"the server could not offer the load: node-opcua at {server_busy:.0f} % of its one core sent "
            f"{agent.rate / offered:.0%} of it to the agent ({bare.rate / offered:.0%} to the bare client), "
            "with no value discarded for the agent"
        )
    if second > first + 500:
        behind.append("the age of values grew during the window")
    if backlog_s > 1.0:
        behind.append(f"it held {backlog_s:.1f} s of values at the end")
    if agent.rate and pending_growth > agent.rate:
        behind.append(f"its buffer backlog grew by {pending_growth:,} records")
    if extras.overflow:
        behind.append("the server discarded values for it")
    kept = "kept up with what the server sent" if short_of_offered else "kept up with the offered load"
    print("verdict: the agent " + ("fell behind: " + "; ".join(behind) if behind else kept))
    if bare.rate > 1.2 * agent.rate:
        print(
            f"note: the bare subscriber got {bare.rate / agent.rate:.1f}x the agent's values/s, so compare CPU per "
            "value, not throughput; the agent's ratio is measured at a lower rate than the bare one"
        )
    if extras.warnings:
        print(f"agent log: {len(extras.warnings)} warnings/errors in the whole run, e.g.:")
        for line in dict.fromkeys(extras.warnings[:5]):
            print(f"  {line}")
    if extras.exit_code not in (0, None):
        print(f"note: the agent exited with code {extras.exit_code}; log: {extras.log_path}")
    print(f"took {took:.0f} s")
    cpu_ratio = agent.cpu_per_10k / bare.cpu_per_10k
    print(f"ratio agent/bare CPU per value: {cpu_ratio:.2f}x (goal <= 2x, project goal 1.5x)")


# Where a function's own time goes, by the file it lives in. C functions and generated code
# (struct.unpack, dataclass __init__, ...) have no file of their own: they count for the area of
# the caller that spent the most time in them.
_AREAS: tuple[tuple[str, str], ...] = (
    ("/asyncua/ua/", "asyncua: decoding (ua_binary, uatypes)"),
    ("/asyncua/common/utils.py", "asyncua: decoding (ua_binary, uatypes)"),
    ("/enum.py", "asyncua: decoding, Enum lookups (VariantType(...) per value)"),
    ("/asyncua/", "asyncua: session, transport"),
    ("/adapters/", "adapters/opcua: publish result -> samples"),
    ("/agent/pipeline.py", "agent/pipeline.py: samples -> records"),
    ("/aas_models/", "aas_models: live values"),
    ("sqlite3", "sqlite3 (C): buffer transactions"),
    ("/uploader/buffer/", "uploader/buffer: buffer (Python side)"),
    ("/uploader/forwarder.py", "uploader/forwarder.py: forwarder, messages"),
    ("/uploader/wire.py", "uploader/wire.py: encoding, payloads"),
    ("/uploader/mqtt/", "uploader/mqtt + paho-mqtt: MQTT"),
    ("/paho/", "uploader/mqtt + paho-mqtt: MQTT"),
    ("'poll' of 'select", "event loop: waiting in epoll (idle)"),
    ("/asyncio/", "asyncio: event loop, tasks"),
    ("/selectors.py", "asyncio: event loop, tasks"),
    ("/agent/", "agent: other"),
)

_Key = tuple[str, int, str]


def profile_areas(stats: pstats.Stats) -> list[tuple[str, float]]:
    raw: dict[_Key, tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]

    def area_of(key: _Key, depth: int = 0) -> str:
        file, _line, name = key
        where = f"{file}:{name}"
        found = next((label for pattern, label in _AREAS if pattern in where), None)
        if found is not None:
            return found
        callers: dict[_Key, tuple[Any, ...]] = raw[key][4] if key in raw else {}
        if depth >= 4 or not callers:
            return "other"
        return area_of(max(callers.items(), key=lambda kv: kv[1][3])[0], depth + 1)

    totals: dict[str, float] = {}
    for key, (_cc, _nc, tottime, _ct, _callers) in raw.items():
        area = area_of(key)
        totals[area] = totals.get(area, 0.0) + tottime
    return sorted(totals.items(), key=lambda kv: -kv[1])


def print_profile(path: Path, top: int = 25) -> None:
    if not path.exists():
        print(f"no profile written to {path}")
        return
    stats = pstats.Stats(str(path))
    total: float = stats.total_tt  # type: ignore[attr-defined]
    print(f"\n--- agent profile over the window: own time by area ({path}, {total:.1f} s profiled) ---")
    for area, seconds in profile_areas(stats):
        print(f"{seconds:8.2f} s {seconds / total * 100:5.1f} %  {area}")
    for key in ("cumulative", "tottime"):
        print(f"\n--- agent profile over the window, top {top} by {key} ---")
        stats.sort_stats(key).print_stats(top)


# -- entry point ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--vars", type=int, default=5000, help="Double variables on the server, all subscribed")
    p.add_argument("--period-ms", type=int, default=100, help="the server changes every variable this often")
    p.add_argument("--seconds", type=float, default=20.0, help="measured window per client")
    p.add_argument(
        "--warmup",
        type=float,
        default=5.0,
        help="seconds after values first flow (the agent: and its AAS model is built) before measuring",
    )
    p.add_argument("--publishing-ms", type=float, default=100.0, help="subscription publishing interval, both clients")
    p.add_argument(
        "--publish-cap",
        type=int,
        default=None,
        help="server's max notifications per publish (default: vars x queue size, so it never binds)",
    )
    p.add_argument("--batch-records", type=int, default=2000, help="the agent's mqtt sink batch.max_records")
    p.add_argument(
        "--pairs",
        type=int,
        default=1,
        help="measure bare and agent this many times (the order alternating) and print every ratio and the median",
    )
    p.add_argument(
        "--profile-agent",
        type=Path,
        default=None,
        help="cProfile the agent over the window only, write the stats here and print a summary",
    )
    # Internal: this file re-run as the bare subscriber child process.
    p.add_argument("--bare-child", metavar="ENDPOINT", default=None, help=argparse.SUPPRESS)
    p.add_argument("--namespace", type=int, default=1, help=argparse.SUPPRESS)
    # Internal: this file re-run as the agent under a window-switched profiler.
    p.add_argument("--agent-child", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--profile-out", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare_child is not None:
        ids = [f"ns={args.namespace};s=Var{i:05d}" for i in range(args.vars)]
        asyncio.run(run_bare(args.bare_child, ids, args.publishing_ms))
        return 0
    if args.agent_child is not None:
        run_profiled_agent(args.agent_child, args.profile_out)
        return 0

    missing = node_opcua_available()
    if missing is None and not (shutil.which("mosquitto") or os.access("/usr/sbin/mosquitto", os.X_OK)):
        missing = "mosquitto not found: install it with apt-get install -y mosquitto"
    if missing is not None:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 2

    started = time.monotonic()
    # Every value the server can queue for a client fits one publish: the cap must not be what limits.
    cap = args.publish_cap or max(10_000, args.vars * QUEUE_SIZE)
    args.publish_cap = cap
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pipeline-")))
        broker = stack.enter_context(MosquittoBroker(workdir / "broker", persistence=False))
        server = stack.enter_context(
            NodeOpcuaServer(
                free_port(),
                vars=args.vars,
                period_ms=args.period_ms,
                max_nodes_per_call=MAX_NODES_PER_CALL,
                max_notifications_per_publish=cap,
                start_timeout=START_TIMEOUT,
            )
        )
        assert server.process is not None
        me = psutil.Process()
        # MosquittoBroker keeps its process private; it is our only child called mosquitto.
        mosquitto = next((c for c in me.children() if c.name().startswith("mosquitto")), None)
        around = Neighbours(server=psutil.Process(server.process.pid), broker=mosquitto, bench=me)
        ratios: list[float] = []
        for n in range(max(1, args.pairs)):
            if n % 2 == 0:
                bare = measure_bare(server, args, around)
                agent, extras = measure_agent(server, broker, workdir, args, around)
            else:  # the other order: a drift of the machine over the run weighs on both alike
                agent, extras = measure_agent(server, broker, workdir, args, around)
                bare = measure_bare(server, args, around)
            if args.pairs > 1:
                print(f"== pair {n + 1} of {args.pairs} ({'bare first' if n % 2 == 0 else 'agent first'})")
            report(args, bare, agent, extras, time.monotonic() - started)
            ratios.append(agent.cpu_per_10k / bare.cpu_per_10k)
    if len(ratios) > 1:
        shown = ", ".join(f"{r:.2f}x" for r in ratios)
        median = statistics.median(ratios)
        print(f"ratio agent/bare CPU per value over {len(ratios)} pairs: {shown}; median {median:.2f}x")
    if args.profile_agent:
        print_profile(args.profile_agent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
