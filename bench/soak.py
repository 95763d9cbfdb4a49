"""Does the agent's memory stay flat for hours? A soak at accelerated load, with faults now and then.

A node-opcua server changes --vars Double variables every --period-ms (20,000 values/s by default:
days of a small factory in an hour); the agent delivers them to a private mosquitto at QoS 1. Every
--fault-every seconds something breaks, in turn: the broker restarts, the OPC UA link drops (the
TCP proxy resets it), the broker is down for --outage-s seconds (a backlog builds and drains). The
agent's RSS is sampled every 10 s. The warm-up is one round of the three faults and a minute more
(--warmup overrides it): the first backlog drain sets a high-water mark of the allocator and SQLite's
caches that later rounds reuse; a leak keeps growing after that. After the warm-up RSS must stay
within 10 % of its level at the end of the warm-up. The growth since the fifth minute (before any
fault) is printed too.

Usage: .venv/bin/python bench/soak.py [--minutes 30] [--vars 2000] [--period-ms 100] [--fault-every 300]
       [--outage-s 20] [--warmup SECONDS]
Needs Node.js with node-opcua and mosquitto. Prints an RSS table, the faults, and a verdict.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psutil

from simulators.agentproc import AgentProcess
from simulators.mosquitto import MosquittoBroker
from simulators.netproxy import ProxyThread
from simulators.nodeopcua.launcher import NodeOpcuaServer, node_opcua_available
from simulators.ports import free_port

MIB = 1024 * 1024


def config(tmp: Path, endpoint: str, node_ids: list[str], broker_port: int) -> Path:
    points = "\n".join(f"      - {{node: '{n}', path: Var_{i:05d}, type: Double}}" for i, n in enumerate(node_ids))
    path = tmp / "agent.yaml"
    path.write_text(
        f"site: {{id: soak}}\nagent: {{data_dir: {tmp / 'data'}, status_interval_s: 10, log_level: warning}}\n"
        f"sources:\n  - {{id: load, endpoint: '{endpoint}', publishing_interval_ms: 200, reconnect_max_s: 5}}\n"
        "equipment:\n  - id: load01\n    source: load\n"
        "    nameplate: {manufacturer_name: M, product_designation: P, uri_of_product: 'https://x', order_code: O}\n"
        f"    points:\n{points}\n"
        f"sinks:\n  - {{type: mqtt, host: 127.0.0.1, port: {broker_port}, reconnect_max_s: 5,\n"
        "      batch: {max_records: 2000, max_delay_ms: 200}}\n"
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--vars", type=int, default=2000)
    parser.add_argument("--period-ms", type=int, default=100)
    parser.add_argument("--fault-every", type=float, default=300.0)
    parser.add_argument("--outage-s", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=None, help="default: 3 x --fault-every + 60 s")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = 3 * args.fault_every + 60
    reason = node_opcua_available()
    if reason is not None:
        print(f"cannot run: {reason}")
        return 2
    offered = args.vars * 1000 / args.period_ms
    print(f"soak: {args.vars:,} variables every {args.period_ms} ms = {offered:,.0f} values/s for {args.minutes:g} min")
    with (
        tempfile.TemporaryDirectory(prefix="soak-") as tmp_name,
        NodeOpcuaServer(
            port=free_port(), vars=args.vars, period_ms=args.period_ms, max_notifications_per_publish=50_000
        ) as server,
        MosquittoBroker(Path(tmp_name) / "broker", persistence=False) as broker,
        ProxyThread("127.0.0.1", server.port) as link,
    ):
        tmp = Path(tmp_name)
        endpoint = f"opc.tcp://127.0.0.1:{link.port}/"
        agent = AgentProcess(config(tmp, endpoint, server.variable_ids(), broker.port), tmp / "agent.log").start()
        assert agent.proc is not None
        proc = psutil.Process(agent.proc.pid)
        started = time.monotonic()
        end = started + args.minutes * 60
        next_sample, next_fault, fault_no = started, started + args.fault_every, 0
        samples: list[tuple[float, float]] = []
        faults: list[str] = []
        print(f"{'minute':>7} {'RSS MiB':>8} {'CPU %':>6}  event")
        proc.cpu_percent()
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_fault:
                kind = ("broker restart", "OPC UA link dropped", f"broker down {args.outage_s:g} s")[fault_no % 3]
                fault_no += 1
                next_fault += args.fault_every
                if kind == "broker restart":
                    broker.stop()
                    broker.start()
                elif kind == "OPC UA link dropped":
                    link.reset()
                else:
                    broker.stop()
                    time.sleep(args.outage_s)
                    broker.start()
                faults.append(f"{(now - started) / 60:5.1f} min: {kind}")
                print(f"{(now - started) / 60:7.1f} {'':>8} {'':>6}  {kind}", flush=True)
            if now >= next_sample:
                rss = proc.memory_info().rss / MIB
                samples.append((now - started, rss))
                print(f"{(now - started) / 60:7.1f} {rss:8.1f} {proc.cpu_percent():6.0f}", flush=True)
                next_sample += 10
            if not agent.alive():
                print("the agent died:\n" + agent.log()[-3000:])
                return 1
            time.sleep(0.5)
        code = agent.stop(timeout=60)
        stats = [orjson.loads(line) for line in agent.log().splitlines() if line.startswith("{")]
        errors = [s["msg"] for s in stats if s.get("level") in ("error", "critical")]
    after = [rss for t, rss in samples if t >= args.warmup]
    if not after:
        print("too short: no samples after the warm-up")
        return 2
    base = (
        statistics.median(rss for t, rss in samples if args.warmup - 60 <= t <= args.warmup)
        if any(args.warmup - 60 <= t <= args.warmup for t, _ in samples)
        else after[0]
    )
    high = max(after)
    drift = (high - base) / base * 100
    last = statistics.median(after[-6:])
    early = [rss for t, rss in samples if 240 <= t <= 300]
    print(f"faults: {len(faults)}; agent exit code {code}; error lines in its log: {len(errors)}")
    for e in sorted(set(errors))[:10]:
        print(f"  {e[:160]}")
    print(
        f"RSS at the end of the warm-up {base:.1f} MiB, highest after it {high:.1f} MiB ({drift:+.1f} %), "
        f"last minute {last:.1f} MiB"
    )
    if early:
        first = statistics.median(early)
        print(
            f"RSS in the fifth minute {first:.1f} MiB; highest since {high:.1f} MiB "
            f"({(high - first) / first * 100:+.1f} %)"
        )
    flat = drift <= 10
    print("verdict:", "memory flat within 10 % after the warm-up" if flat else "MEMORY GREW more than 10 %")
    return 0 if flat and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
