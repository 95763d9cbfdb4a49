"""CPU per value, stage by stage, of the agent's hot path: one publish of 5,000 Double values, no network.

The stages are the project's own code run as the agent runs it (adapters/opcua/source.py, agent/pipeline.py,
uploader/buffer, uploader/forwarder.py), fed what the stage before it gives; asyncua's decode of the same
publish response is the baseline of the same run (issue "Cheaper than the library"). Each figure is the
best of several rounds, in µs per value and as a share of asyncua's decode. Prints and exits 0.

    .venv/bin/python bench/bench_stages.py        # ~30 s
    .venv/bin/python bench/bench_stages.py --values 20000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import Buffer as UaBuffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

from aas_models.live import LiveValues
from adapters.opcua import fastdecode
from adapters.opcua.source import OpcUaSource
from adapters.opcua.spec import Endpoint, NodeItem
from adapters.sample import Sample
from agent.pipeline import Binding, Pipeline, make_binding
from uploader import wire
from uploader.buffer import Buffer
from uploader.file import FileSink
from uploader.forwarder import Batching, Forwarder

ROUNDS = 7
T0 = datetime(2026, 11, 30, tzinfo=UTC)


def publish_response(n: int, round_: int) -> bytes:
    """A PublishResponse of `n` Double values, both timestamps, as a server sends it."""
    items = []
    for i in range(n):
        t = T0 + timedelta(seconds=round_, microseconds=i)
        dv = ua.DataValue(
            ua.Variant(float(i) + round_ / 7, ua.VariantType.Double), SourceTimestamp=t, ServerTimestamp=t
        )
        items.append(ua.MonitoredItemNotification(ClientHandle=i + 1, Value=dv))
    message = ua.NotificationMessage(
        SequenceNumber=round_ + 1, PublishTime=T0, NotificationData=[ua.DataChangeNotification(MonitoredItems=items)]
    )
    response = ua.PublishResponse()
    response.Parameters = ua.PublishResult(SubscriptionId=1, NotificationMessage=message)
    return bytes(struct_to_binary(response))


def machine(n: int, elements: int) -> list[Binding]:
    """The bindings of `n` items (handles 1..n) of one machine, spread over `elements` Double elements in turn."""
    return [
        make_binding(
            i + 1, "bench", "machine", wire.Element(
                shell="urn:bench:aas:machine", submodel="urn:bench:aas:machine/sm/OperationalData",
                path=f"Var_{i % elements:05d}", value_type="xs:double", node=f"ns=1;s=Var{i % elements:05d}",
            ),
        )
        for i in range(n)
    ]  # fmt: skip


def best(run: Callable[[], Any], values: int) -> float:
    """µs per value of the fastest of ROUNDS runs."""
    times = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return min(times) / values * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", type=int, default=5000, help="values in the publish (one per element)")
    n = ap.parse_args().values
    bodies = [publish_response(n, r) for r in range(ROUNDS)]
    loop = asyncio.new_event_loop()
    rows: dict[str, float] = {}

    # asyncua: the whole PublishResponse, as ua_session.publish decodes it.
    decoded: list[ua.PublishResponse] = []

    def decode() -> None:
        decoded.clear()
        for body in bodies:
            decoded.append(struct_from_binary(ua.PublishResponse, UaBuffer(body)))

    rows["asyncua decode of the publish response"] = best(decode, n * ROUNDS)
    fast: list[fastdecode.Publish] = []

    def own_decode() -> None:
        fast.clear()
        for body in bodies:
            fast.append(fastdecode.decode(body, raw_times=True))  # as the agent's collector decodes

    rows["the agent's own decode, to samples (adapters/opcua/fastdecode.py)"] = best(own_decode, n * ROUNDS)
    assert all(p.how == "fast" for p in fast), {p.how for p in fast}
    stock = [d.Parameters.NotificationMessage.NotificationData[0].MonitoredItems for d in decoded]
    rows["  (stock path only: asyncua's notification -> samples)"] = best(
        lambda: [fastdecode.samples(mi) for mi in stock], n * ROUNDS
    )

    # The adapter: a publish's samples to emit (OpcUaSource._on_publish: bookkeeping, re-check scan), emit keeps.
    batches: list[Sequence[Sample]] = []

    async def keep(samples: Sequence[Sample]) -> None:
        batches.append(samples)

    async def nothing(*_: Any) -> None:
        return None

    items = [NodeItem(handle=i + 1, node=f"ns=1;s=Var{i:05d}", opcua_type="Double") for i in range(n)]
    source = OpcUaSource(
        Endpoint(id="bench", url="opc.tcp://127.0.0.1:4840"), items, emit=keep, emit_events=nothing,
        interrupted=nothing, problem=nothing, state=nothing, delays=lambda: itertools.repeat(1.0),
    )  # fmt: skip

    def adapt() -> None:
        batches.clear()
        for p in fast:
            loop.run_until_complete(source._on_publish(p))

    rows["adapter (publish -> emit)"] = best(adapt, n * ROUNDS)
    samples = list(batches)
    # From here on as the agent runs (agent/app.py): what lives long is frozen, young garbage collected later.
    decoded.clear()
    stock.clear()
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 20, 20)

    with tempfile.TemporaryDirectory() as tmp:
        bindings = machine(n, n)
        # The pipeline without a buffer (its committer has none to write to), then the buffer alone.
        bare = Pipeline(bindings, [], [], LiveValues(), delays=lambda: itertools.repeat(0.1))

        def pipeline() -> None:
            bare.last.clear()
            for batch in samples:
                loop.run_until_complete(bare.on_samples(batch))

        rows["pipeline (binding, record body, live value, repeat check, marks)"] = best(pipeline, n * ROUNDS)
        # The same with one sink's buffer: the difference is the buffer's add (records and marks, one
        # transaction per publish); then the forwarder takes it all out again. Best of ROUNDS rounds each.
        buf = Buffer(Path(tmp) / "buffer.db", quota_bytes=1 << 30, chunk_records=500)
        forwarder = Forwarder(
            buf, FileSink(Path(tmp) / "out.jsonl"), site="bench", batching=Batching(max_records=2000),
            delays=lambda: itertools.repeat(0.1),
        )  # fmt: skip
        stored, forwarded, sizes = [], [], []
        for _ in range(ROUNDS):
            with_buffer = Pipeline(bindings, [], [buf], LiveValues(), delays=lambda: itertools.repeat(0.1))
            t = time.perf_counter()
            for batch in samples:
                loop.run_until_complete(with_buffer.on_samples(batch))
            stored.append(time.perf_counter() - t)
            t = time.perf_counter()
            count = 0
            while (out := buf.begin("data", 2000)) is not None:
                messages, _, _ = forwarder.messages(out)
                sizes.extend(len(m.payload) for m in messages)
                buf.end(out, [i.seq for i in out.items])
                count += len(out.items)
            forwarded.append((time.perf_counter() - t) / count * 1e6)
        base_pipeline = rows["pipeline (binding, record body, live value, repeat check, marks)"]
        rows["buffer add (records and marks, one transaction per publish)"] = (
            min(stored) / (n * ROUNDS) * 1e6 - base_pipeline
        )
        rows["forwarding (begin, payload build, end)"] = min(forwarded)
        prefix = bindings[0].prefix
        body = sum(len(wire.data_body(prefix, x.value, x.source_time, x.server_time, x.status)) for x in samples[0])
        body /= len(samples[0])
        # As the buffer stores it: the element's head once per file, each record its tag and tail (records.py).
        kept = sum(
            len(b"#%d:" % x.handle) + len(wire.data_tail(x.value, x.source_time, x.server_time, x.status))
            for x in samples[0]
        )
        kept /= len(samples[0])
        wire_bytes = sum(sizes) / (n * ROUNDS * ROUNDS)
        buf.close()

        def forward(elements: int, version: int) -> tuple[float, float]:
            """Forwarding µs and wire bytes per value with `wire_version`, the n values spread over `elements`
            elements (n / elements values of each per publish)."""
            spread = machine(n, elements)
            store = Buffer(Path(tmp) / f"buffer-{elements}-{version}.db", quota_bytes=1 << 30, chunk_records=500)
            sender = Forwarder(
                store, FileSink(Path(tmp) / "out.jsonl"), site="bench",
                batching=Batching(max_records=2000, wire_version=version), delays=lambda: itertools.repeat(0.1),
            )  # fmt: skip
            took, sent = [], 0
            for _ in range(ROUNDS):
                filler = Pipeline(spread, [], [store], LiveValues(), delays=lambda: itertools.repeat(0.1))
                for batch in samples:
                    loop.run_until_complete(filler.on_samples(batch))
                t = time.perf_counter()
                count = 0
                while (out := store.begin("data", 2000)) is not None:
                    messages, _, _ = sender.messages(out)
                    sent += sum(len(m.payload) for m in messages)
                    store.end(out, [i.seq for i in out.items])
                    count += len(out.items)
                took.append((time.perf_counter() - t) / count * 1e6)
            store.close()
            return min(took), sent / (n * ROUNDS * ROUNDS)

        shapes = {(elements, version): forward(elements, version) for elements in (n, n // 100) for version in (2, 3)}
    loop.close()

    base = rows["asyncua decode of the publish response"]
    print(f"one publish of {n:,} Double values, best of {ROUNDS} rounds; µs per value and share of asyncua's decode")
    print(f"{'stage':60} {'µs/value':>9} {'x decode':>9}")
    own = 0.0
    for name, us in rows.items():
        print(f"{name:60} {us:9.2f} {us / base:9.2f}")
        if not name.startswith(("asyncua", " ")):
            own += us
    print(f"{'the project own code, all stages above':60} {own:9.2f} {own / base:9.2f}")
    print(
        f"record body: {body:.0f} bytes, of which {kept:.0f} stored per value (its head once per element); "
        f"{wire_bytes:.0f} bytes per value on the wire (JSON)"
    )
    print()
    print("forwarding by wire version (messages of up to 500 records; wire_version 3 lists each head once per message)")
    print(f"{'values per element per publish':32} {'version':>8} {'µs/value':>9} {'bytes/value':>12}")
    for (elements, version), (us, size) in shapes.items():
        print(f"{n // elements:32d} {version:8d} {us:9.2f} {size:12.0f}")


if __name__ == "__main__":
    main()
