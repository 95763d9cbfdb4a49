"""How fast does a backlog drain over a slow link, with one batch in flight and with a window of them?

A buffer holding --records data records (~200 bytes each, two assets) is drained by a Forwarder
into a private mosquitto at QoS 1 through simulators/netproxy.py, which adds latency in each
direction (no kernel traffic shaping), for each round-trip time and each window size. The
baseline in every row is stop-and-wait (in_flight 1), measured in the same run: what the agent
did before the window existed. Prints records/s per cell and the speed-up over the baseline.

Usage: .venv/bin/python bench/bench_forwarder.py [--records 60000] [--rtt-ms 0,100,300] [--windows 1,4,8]
Needs mosquitto.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agent.backoff import Backoff
from simulators.mosquitto import MosquittoBroker
from simulators.netproxy import TcpProxy
from uploader.buffer import Buffer, Row
from uploader.forwarder import Batching, Forwarder
from uploader.mqtt import MqttSettings, MqttSink


def backlog(n: int) -> list[Row]:
    body = b'{"shell":"urn:aas:m","submodel":"urn:aas:m/sm","path":"Spindle.Speed","valueType":"xs:double",'
    return [("data", f"m{i % 2}", float(i), body + b'"value":%d.5,"status":0}' % i) for i in range(n)]


async def drain(directory: Path, broker_port: int, rtt_ms: float, window: int, rows: list[Row]) -> float:
    """Records/s to drain `rows` through a link with `rtt_ms` added, `window` batches in flight."""
    path = directory / f"b-{rtt_ms}-{window}.db"
    with Buffer(path, quota_bytes=1 << 30) as buf:
        buf.add(rows)
        async with TcpProxy("127.0.0.1", broker_port, delay=rtt_ms / 2000) as link:
            settings = MqttSettings(
                host="127.0.0.1", port=link.port, client_id=f"bench-{rtt_ms}-{window}", topic_prefix="b", site="s"
            )
            sink = MqttSink(settings, delays=Backoff(0.1, 1).delays)
            batching = Batching(max_records=1000, max_delay=0.05, max_message_records=500, in_flight=window)
            fwd = Forwarder(buf, sink, site="s", batching=batching, delays=lambda: itertools.repeat(0.1))
            connection = asyncio.create_task(sink.run())
            await _until(lambda: sink.connected)
            started = time.perf_counter()
            forwarding = asyncio.create_task(fwd.run())
            await _until(lambda: not sum(buf.pending().values()))
            took = time.perf_counter() - started
            for task in (forwarding, connection):
                task.cancel()
            await asyncio.gather(forwarding, connection, return_exceptions=True)
            await sink.stop()
    path.unlink()
    return len(rows) / took


async def _until(check: Callable[[], bool], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the backlog did not drain")
        await asyncio.sleep(0.005)  # polled: the cost is the same for every cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--rtt-ms", default="0,100,300")
    parser.add_argument("--windows", default="1,4,8")
    args = parser.parse_args()
    rtts = [float(x) for x in args.rtt_ms.split(",")]
    windows = [int(x) for x in args.windows.split(",")]
    if 1 not in windows:
        windows.insert(0, 1)
    rows = backlog(args.records)
    with tempfile.TemporaryDirectory(prefix="bench-forwarder-") as tmp, MosquittoBroker(Path(tmp) / "broker") as broker:
        print(f"draining {args.records:,} records (2 assets, 1,000 per batch, 500 per message) into mosquitto, QoS 1")
        print(f"{'added RTT':>10} " + " ".join(f"{f'window {w}':>16}" for w in windows) + "   speed-up of the widest")
        for rtt in rtts:
            rates = {w: asyncio.run(drain(Path(tmp), broker.port, rtt, w, rows)) for w in windows}
            cells = " ".join(f"{rates[w]:>11,.0f} rec/s" for w in windows)
            widest = max(windows)
            print(f"{rtt:>7.0f} ms {cells}   {rates[widest] / rates[1]:.1f}x over stop-and-wait")


if __name__ == "__main__":
    main()
