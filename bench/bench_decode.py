"""What decoding a publish response costs per value: asyncua's decoder plus the source's conversion to
Samples (the stock path, and the fallback), next to adapters/opcua/fastdecode.py on the same bytes, in
the same run. No network: the bodies are made with asyncua's own encoder, as a server would send them.

Two publishes of 5,000 values each: all Double (the benchmark load of testbed.md: source and server
timestamps, Good), and a mix of the scalar types a PLC sends (Boolean, integers, Float, Double, short
Strings, DateTime), some with a Bad or Uncertain status, one in a hundred an Int32 array (which fastdecode
hands to asyncua item by item). Prints µs per value for both and their ratio; asserts nothing.

    .venv/bin/python bench/bench_decode.py      # ~10 s
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

import adapters.opcua.lowlevel  # noqa: F401  (asyncua's decoder with the agent's speed-up, as it runs)
from adapters.opcua import fastdecode
from adapters.opcua.fastdecode import Publish

VALUES = 5000
ROUNDS = 15
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
VT = ua.VariantType


def body(values: list[ua.DataValue]) -> bytes:
    r = ua.PublishResponse()
    r.Parameters.SubscriptionId = 1
    r.Parameters.NotificationMessage.SequenceNumber = 1
    r.Parameters.NotificationMessage.NotificationData = [
        ua.DataChangeNotification(
            MonitoredItems=[ua.MonitoredItemNotification(ClientHandle=h, Value=dv) for h, dv in enumerate(values)]
        )
    ]
    return struct_to_binary(r)


def doubles() -> bytes:
    # Each variable its own source time within the 100 ms round, one server time for the publish.
    return body(
        [
            ua.DataValue(
                ua.Variant(i * 0.25, VT.Double), SourceTimestamp=T0 + timedelta(microseconds=20 * i), ServerTimestamp=T0
            )
            for i in range(VALUES)
        ]
    )


def mixed() -> bytes:
    kinds: list[Callable[[int], ua.Variant]] = [
        lambda i: ua.Variant(i % 2 == 0, VT.Boolean),
        lambda i: ua.Variant(i, VT.Int32),
        lambda i: ua.Variant(i % 65536, VT.UInt16),
        lambda i: ua.Variant(i * 1_000_003, VT.Int64),
        lambda i: ua.Variant(i / 3, VT.Float),
        lambda i: ua.Variant(i / 7, VT.Double),
        lambda i: ua.Variant(("RUN", "IDLE", "ALARM")[i % 3], VT.String),
        lambda i: ua.Variant(T0 + timedelta(seconds=i), VT.DateTime),
    ]
    values = []
    for i in range(VALUES):
        v = ua.Variant([i, i + 1, i + 2], VT.Int32) if i % 100 == 99 else kinds[i % len(kinds)](i)
        status = ua.StatusCode(ua.UInt32([0, 0, 0, 0, 0, 0, 0, 0x80000000, 0x40000000][i % 9]))
        source = T0 + timedelta(microseconds=20 * i)
        values.append(ua.DataValue(v, status, SourceTimestamp=source, ServerTimestamp=T0))
    return body(values)


def stock(data: bytes) -> Publish:
    return fastdecode.from_result(struct_from_binary(ua.PublishResponse, Buffer(data)).Parameters)


def per_value(decode: Callable[[bytes], Publish], data: bytes) -> float:
    """Median µs per value over ROUNDS decodes (process time: this process's CPU, not the wall clock)."""
    times = []
    for _ in range(ROUNDS):
        start = time.process_time()
        decode(data)
        times.append(time.process_time() - start)
    return statistics.median(times) / VALUES * 1e6


def main() -> None:
    print(f"one publish of {VALUES:,} values, median of {ROUNDS} decodes, µs of CPU per value")
    print(f"{'publish':<10} {'asyncua + conversion':>22} {'fastdecode':>12} {'ratio':>8}")
    for name, data in (("Double", doubles()), ("mixed", mixed())):
        fast = fastdecode.decode(data)
        assert [tuple(s) for s in fast.data[0].samples] == [tuple(s) for s in stock(data).data[0].samples]
        slow_us, fast_us = per_value(stock, data), per_value(fastdecode.decode, data)
        print(f"{name:<10} {slow_us:>22.2f} {fast_us:>12.2f} {slow_us / fast_us:>7.1f}×   ({fast.how})")


if __name__ == "__main__":
    main()
