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
(psutil: user + system, all threads; not the server, not the broker) per 10,000 values, and the
age of values on arrival (receive time - sourceTime). For the agent also the backlog it still held
when the window closed (what it delivered while draining on SIGTERM, plus what it logged as left
buffered), which says whether it kept up. Prints a table and `ratio agent/bare CPU per value`.

Usage: .venv/bin/python bench/bench_pipeline.py [--vars 5000] [--period-ms 100] [--seconds 20]
       [--profile-agent /tmp/agent.prof]   # run the agent under cProfile and print its top functions
Needs Node.js with node-opcua (`npm ci --prefix simulators/nodeopcua`) and mosquitto.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

ROOT = Path(__file__).resolve().parents[1]
# The broker helper lives in tests/, which is not an installed package: run from a checkout.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simulators.nodeopcua.launcher import NodeOpcuaServer, node_opcua_available  # noqa: E402
from tests.mqtt_broker import MosquittoBroker, free_port  # noqa: E402

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


# -- measurement helpers (parent) ----------------------------------------------------------------


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


@dataclass
class Window:
    """One client's figures over the measured window."""

    name: str
    seconds: float = 0.0
    values: int = 0
    cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    ages_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.values / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_10k(self) -> float:
        return self.cpu_s / self.values * 10_000 if self.values else float("nan")

    @property
    def cpu_percent(self) -> float:
        return self.cpu_s / self.seconds * 100 if self.seconds else 0.0

    @property
    def server_cpu_percent(self) -> float:
        return self.server_cpu_s / self.seconds * 100 if self.seconds else 0.0


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


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, wait, then SIGKILL: every child we started goes away, whatever state it is in."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RecordCounter:
    """A paho subscriber that counts the records in the agent's data messages, on paho's thread.

    Every payload is parsed (orjson, about 5 % of a core at 50,000 records/s) so the count is the
    number of records that reached mosquitto, not an estimate; the age on arrival is taken from the
    first and last record of each message only, to keep this process light next to the agent.
    """

    def __init__(self, port: int, topic: str) -> None:
        self.topic = topic
        self._lock = threading.Lock()
        self.records = 0
        self.messages = 0
        self.not_good = 0
        self.overflow = 0
        self.ages_ms: list[float] = []
        self._subscribed = threading.Event()
        self._client = MqttClient(CallbackAPIVersion.VERSION2, client_id="bench-pipeline-counter", clean_session=True)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise TimeoutError(f"could not subscribe to {topic!r} on port {port}")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def snapshot(self, *, reset_ages: bool = False) -> tuple[int, list[float]]:
        with self._lock:
            ages = self.ages_ms
            if reset_ages:
                self.ages_ms = []
            return self.records, ages

    def _on_connect(
        self, client: MqttClient, userdata: Any, flags: ConnectFlags, reason: ReasonCode, props: Properties | None
    ) -> None:
        if not reason.is_failure:
            # QoS 1, so a slow moment here cannot make mosquitto drop what the agent delivered.
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(
        self, client: MqttClient, userdata: Any, mid: int, reasons: list[ReasonCode], props: Properties | None
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: MqttClient, userdata: Any, msg: MQTTMessage) -> None:
        now = time.time()
        records: list[dict[str, Any]] = orjson.loads(msg.payload)["records"]
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


# -- the two runs ----------------------------------------------------------------------------------


def measure_bare(server: NodeOpcuaServer, args: argparse.Namespace, server_proc: psutil.Process) -> Window:
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
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
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
        cpu0, server0, t0 = cpu_seconds(proc), cpu_seconds(server_proc), time.monotonic()
        start = mark()
        time.sleep(args.seconds)
        end = mark()
        cpu1, server1, t1 = cpu_seconds(proc), cpu_seconds(server_proc), time.monotonic()
        window.seconds, window.cpu_s, window.server_cpu_s = t1 - t0, cpu1 - cpu0, server1 - server0
        window.values = int(end["values"]) - int(start["values"])
        window.ages_ms = list(end["ages_ms"])
        child.stdin.close()  # EOF: the child disconnects and exits
        child.wait(STOP_TIMEOUT)
        return window
    finally:
        stop_process(child)


def agent_config(server: NodeOpcuaServer, broker_port: int, data_dir: Path, args: argparse.Namespace) -> str:
    lines = [
        "version: 1",
        "site:",
        f"  id: {SITE}",
        "agent:",
        f"  data_dir: {data_dir}",
        "  log_level: info",
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
        "    batch: {max_records: 2000, max_delay_ms: 200, max_message_records: 500}",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class AgentExtras:
    drained: int = 0  # records delivered after the window closed, while the agent drained on SIGTERM
    left_buffered: str = ""  # the agent's own "records stay buffered" log line, if any
    not_good: int = 0
    overflow: int = 0
    messages: int = 0
    age_halves_ms: tuple[float, float] = (float("nan"), float("nan"))
    log_path: Path = Path()
    exit_code: int | None = None


def measure_agent(
    server: NodeOpcuaServer,
    broker: MosquittoBroker,
    workdir: Path,
    args: argparse.Namespace,
    server_proc: psutil.Process,
) -> tuple[Window, AgentExtras]:
    extras = AgentExtras(log_path=workdir / "agent.log")
    config = workdir / "agent.yaml"
    config.write_text(agent_config(server, broker.port, workdir / "agent-data", args))
    counter = RecordCounter(broker.port, f"{TOPIC_PREFIX}/{SITE}/+/data")
    profile = ["-m", "cProfile", "-o", str(args.profile_agent)] if args.profile_agent else []
    command = [sys.executable, *profile, "-m", "agent.cli", "run", "-c", str(config), "--log-format", "json"]
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
        time.sleep(args.warmup)

        window = Window("edge-agent")
        cpu0, server0, t0 = cpu_seconds(proc), cpu_seconds(server_proc), time.monotonic()
        start, _ = counter.snapshot(reset_ages=True)
        time.sleep(args.seconds / 2)
        _, first_half = counter.snapshot(reset_ages=True)
        time.sleep(args.seconds / 2)
        end, second_half = counter.snapshot(reset_ages=True)
        cpu1, server1, t1 = cpu_seconds(proc), cpu_seconds(server_proc), time.monotonic()
        window.seconds, window.cpu_s, window.server_cpu_s = t1 - t0, cpu1 - cpu0, server1 - server0
        window.values = end - start
        window.ages_ms = first_half + second_half
        extras.age_halves_ms = (
            statistics.median(first_half or [float("nan")]),
            statistics.median(second_half or [float("nan")]),
        )

        # What still arrives after SIGTERM is what the agent had not delivered when the window
        # closed (collection stops first, then it drains for up to 5 s): its backlog.
        stop_process(agent)
        extras.exit_code = agent.returncode
        time.sleep(DRAIN_GRACE)
        extras.drained = counter.snapshot()[0] - end
        extras.not_good, extras.overflow, extras.messages = counter.not_good, counter.overflow, counter.messages
        for line in extras.log_path.read_text(errors="replace").splitlines():
            if "stay buffered" in line:
                with contextlib.suppress(orjson.JSONDecodeError):
                    line = str(orjson.loads(line).get("message", line))
                extras.left_buffered = line
        return window, extras
    finally:
        if agent is not None:
            stop_process(agent)
        counter.close()


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


# -- report -----------------------------------------------------------------------------------------


def report(args: argparse.Namespace, bare: Window, agent: Window, extras: AgentExtras, took: float) -> None:
    offered = args.vars * 1000 / args.period_ms
    print(
        f"node-opcua server: {args.vars:,} Double variables changed every {args.period_ms} ms "
        f"= {offered:,.0f} values/s offered; publishing interval {args.publishing_ms} ms, queue {QUEUE_SIZE}"
    )
    print(f"each client measured for {args.seconds:.0f} s after a {args.warmup:.0f} s warm-up, one after the other")
    if args.profile_agent:
        print(f"NOTE: the agent ran under cProfile ({args.profile_agent}): its CPU figures include the profiler's cost")
    print()
    print(f"{'':28}{'bare asyncua':>14}{'edge-agent':>14}{'agent/bare':>12}")
    rows: list[tuple[str, float, float, str]] = [
        ("values/s", bare.rate, agent.rate, ",.0f"),
        ("share of offered values", bare.rate / offered * 100, agent.rate / offered * 100, ".1f"),
        ("CPU % of one core", bare.cpu_percent, agent.cpu_percent, ".0f"),
        ("CPU s per 10,000 values", bare.cpu_per_10k, agent.cpu_per_10k, ".3f"),
        (
            "age on arrival median ms",
            statistics.median(bare.ages_ms or [float("nan")]),
            statistics.median(agent.ages_ms or [float("nan")]),
            ",.0f",
        ),
        ("age on arrival p95 ms", percentile(bare.ages_ms, 0.95), percentile(agent.ages_ms, 0.95), ",.0f"),
        ("server CPU % (node)", bare.server_cpu_percent, agent.server_cpu_percent, ".0f"),
    ]
    for name, b, a, fmt in rows:
        ratio = f"{a / b:11.2f}x" if b and b == b and a == a else f"{'-':>12}"
        print(f"{name:28}{b:>14{fmt}}{a:>14{fmt}}{ratio}")
    print()
    print(
        "bare = values in DataChangeNotifications counted in the client; agent = records that reached "
        f"mosquitto (QoS 1, {extras.messages:,} messages in the whole run), counted by a subscriber"
    )
    print("age on arrival = receive time - sourceTime (bare: in the client; agent: at the MQTT subscriber)")

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
    if extras.not_good:
        print(
            f"agent records with a non-good status: {extras.not_good:,} ({extras.overflow:,} with the overflow bit: "
            "the server's queue discarded older values because the agent asked for them too slowly)"
        )
    behind = []
    if agent.rate < 0.95 * offered:
        behind.append(f"delivered {agent.rate / offered:.0%} of the offered values")
    if second > first + 500:
        behind.append("the age of values grew during the window")
    if backlog_s > 1.0:
        behind.append(f"it held {backlog_s:.1f} s of values at the end")
    if extras.overflow:
        behind.append("the server discarded values for it")
    print("verdict: the agent " + ("fell behind: " + "; ".join(behind) if behind else "kept up with the offered load"))
    if bare.rate > 1.2 * agent.rate:
        print(
            f"note: the bare subscriber got {bare.rate / agent.rate:.1f}x the agent's values/s, so compare CPU per "
            "value, not throughput; the agent's ratio is measured at a lower rate than the bare one"
        )
    if extras.exit_code not in (0, None):
        print(f"note: the agent exited with code {extras.exit_code}; log: {extras.log_path}")
    print(f"took {took:.0f} s")
    cpu_ratio = agent.cpu_per_10k / bare.cpu_per_10k
    print(f"ratio agent/bare CPU per value: {cpu_ratio:.2f}x (goal <= 2x, project goal 1.5x)")


def print_profile(path: Path, top: int = 25) -> None:
    stats = pstats.Stats(str(path))
    for key in ("cumulative", "tottime"):
        print(f"\n--- agent profile, top {top} by {key} ({path}) ---")
        stats.sort_stats(key).print_stats(top)


# -- entry point ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--vars", type=int, default=5000, help="Double variables on the server, all subscribed")
    p.add_argument("--period-ms", type=int, default=100, help="the server changes every variable this often")
    p.add_argument("--seconds", type=float, default=20.0, help="measured window per client")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds after values first flow before measuring")
    p.add_argument("--publishing-ms", type=float, default=100.0, help="subscription publishing interval, both clients")
    p.add_argument("--profile-agent", type=Path, default=None, help="run the agent under cProfile, write stats here")
    # Internal: this file re-run as the bare subscriber child process.
    p.add_argument("--bare-child", metavar="ENDPOINT", default=None, help=argparse.SUPPRESS)
    p.add_argument("--namespace", type=int, default=1, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare_child is not None:
        ids = [f"ns={args.namespace};s=Var{i:05d}" for i in range(args.vars)]
        asyncio.run(run_bare(args.bare_child, ids, args.publishing_ms))
        return 0

    missing = node_opcua_available()
    if missing is None and not (shutil.which("mosquitto") or os.access("/usr/sbin/mosquitto", os.X_OK)):
        missing = "mosquitto not found: install it with apt-get install -y mosquitto"
    if missing is not None:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 2

    started = time.monotonic()
    # Every value the server can queue for a client fits one publish: the cap must not be what limits.
    cap = max(10_000, args.vars * QUEUE_SIZE)
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
        server_proc = psutil.Process(server.process.pid)
        bare = measure_bare(server, args, server_proc)
        agent, extras = measure_agent(server, broker, workdir, args, server_proc)
    report(args, bare, agent, extras, time.monotonic() - started)
    if args.profile_agent:
        print_profile(args.profile_agent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
