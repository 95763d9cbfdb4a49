"""A broker outage while collection goes on: how soon the agent is back, and how fast it drains its backlog.

node-opcua serves `--vars` Double variables changed every `--period-ms` (default 5,000 every 500 ms:
10,000 values/s); the agent collects them into a private mosquitto at QoS 1 (bench_pipeline.py's
config and counting subscriber). After a warm-up the broker is stopped for `--outage` seconds (the
agent keeps collecting into its buffer), then started again on the same port. The bench prints:

- reconnect: seconds from the broker's return to the first record from the agent (issue "Cheaper than
  the library": within 15 s);
- drain rate: records received per second from that first record until the agent's buffer was empty
  again (its own agent-stats backlog), next to the collection rate (target: at least 5x), and how long
  the drain took;
- whether every record the agent took in arrived: values in (agent-stats) against records counted.

Prints and exits 0. Needs Node.js + node-opcua and mosquitto.

    .venv/bin/python bench/bench_outage.py                 # ~2.5 min
    .venv/bin/python bench/bench_outage.py --outage 30
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from simulators.mosquitto import MosquittoBroker
from simulators.nodeopcua.launcher import NodeOpcuaServer, node_opcua_available
from simulators.ports import free_port

ROOT = Path(__file__).resolve().parents[1]


def _bench_pipeline() -> Any:
    """bench_pipeline.py next to this file (the benches are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_pipeline", Path(__file__).with_name("bench_pipeline.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_pipeline"] = module
    spec.loader.exec_module(module)
    return module


_bp = _bench_pipeline()
EQUIPMENT, SITE, TOPIC_PREFIX = _bp.EQUIPMENT, _bp.SITE, _bp.TOPIC_PREFIX
RecordCounter, agent_config = _bp.RecordCounter, _bp.agent_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vars", type=int, default=5000)
    ap.add_argument("--period-ms", type=int, default=500)
    ap.add_argument("--publishing-ms", type=float, default=500)
    ap.add_argument("--outage", type=float, default=60.0, help="seconds the broker is away")
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--batch-records", type=int, default=2000)
    args = ap.parse_args()
    args.profile_agent = None
    if (missing := node_opcua_available()) is not None:
        print(f"node-opcua is not available: {missing}")
        return
    offered = args.vars * 1000 / args.period_ms
    with (
        tempfile.TemporaryDirectory() as tmp,
        NodeOpcuaServer(port=free_port(), vars=args.vars, period_ms=args.period_ms) as server,
        MosquittoBroker(Path(tmp) / "broker") as broker,
    ):
        work = Path(tmp)
        config = work / "agent.yaml"
        config.write_text(agent_config(server, broker.port, work / "agent-data", args))
        counter = RecordCounter(broker.port, f"{TOPIC_PREFIX}/{SITE}/+/data", f"{TOPIC_PREFIX}/{SITE}/_agent/status")
        with (work / "agent.log").open("wb") as log:
            agent = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "-c", str(config), "--log-format", "json"],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        try:
            _until("the first records", lambda: counter.snapshot()[0] > 0, 120)
            time.sleep(args.warmup)
            before, _ = counter.snapshot()
            t0 = time.time()
            time.sleep(5)
            collection_rate = (counter.snapshot()[0] - before) / (time.time() - t0)
            broker.stop()
            down = time.time()
            time.sleep(args.outage)
            broker.start()
            back = time.time()
            at_return, _ = counter.snapshot()
            _until("the agent's first record after the outage", lambda: counter.snapshot()[0] > at_return, 120)
            first = time.time()
            start_count, _ = counter.snapshot()
            stats_after = lambda: [s for s in counter.stats_between(first, time.time() + 60) if s.pending_data <= 2000]  # noqa: E731
            _until("the backlog drained", lambda: bool(stats_after()), 600)
            drained_at = stats_after()[0].time
            drained_count, _ = counter.snapshot()
            time.sleep(3)
        finally:
            agent.terminate()
            agent.wait(60)
        counter.close()
        final = counter.snapshot()[0]
        stats = counter.stats_between(0, time.time() + 60)
    drain_s = max(drained_at - first, 1e-9)
    drain_rate = (drained_count - start_count) / drain_s
    print(
        f"{args.vars:,} variables x {1000 / args.period_ms:g}/s = {offered:,.0f} values/s offered; QoS 1 to mosquitto"
    )
    print(f"collection rate before the outage           {collection_rate:10,.0f} records/s")
    print(f"broker away                                 {back - down:10.1f} s")
    print(f"reconnect: broker back -> first record      {first - back:10.1f} s   (target <= 15 s)")
    print(f"drain: records/s until the backlog was gone {drain_rate:10,.0f}   = {drain_rate / collection_rate:.1f}x "
          f"collection (target >= 5x), {drain_s:.1f} s")  # fmt: skip
    if stats:
        print(
            f"agent took in {stats[-1].values_in:,} values by its last stats record; {final:,} records arrived in all"
        )
    print(f"(equipment {EQUIPMENT}; agent log and config were in {tmp}, removed)")


def _until(what: str, check: object, timeout: float) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


if __name__ == "__main__":
    main()
