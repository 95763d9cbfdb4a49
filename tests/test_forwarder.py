"""The forwarder between a real buffer and real sinks (a file, mosquitto): lanes, splits, refusals,
dead letters, unconfirmed sends, a window of batches in flight, restarts, drain; and the file sink."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import resource
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import orjson
import pytest

from agent.backoff import Backoff
from simulators.netproxy import TcpProxy
from simulators.ports import free_port
from tests.helpers import until
from tests.mqtt_broker import MosquittoBroker, Subscriber
from uploader import wire
from uploader.buffer import Buffer, Row, StoredRecord
from uploader.deadletter import DeadLetters
from uploader.file import FileSink
from uploader.forwarder import _RECORD_OVERHEAD, Batching, Forwarder, _split
from uploader.mqtt import MqttSettings, MqttSink
from uploader.sink import Message, Outcome, Partial, Sink

BIG = 1 << 30


def quick() -> Iterator[float]:
    return itertools.repeat(0.05)


def rows(lane: str, key: str, start: int, count: int, size: int = 60) -> list[Row]:
    pad = "x" * max(0, size - 20)
    return [(lane, key, float(n), b'{"n":%d,"p":"%s"}' % (n, pad.encode())) for n in range(start, start + count)]


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


async def run_until(fwd: Forwarder, sink: Sink, done: Callable[[], bool], timeout: float = 30) -> None:
    """Run the sink's connection and the forwarder until `done()`, then cancel both."""
    tasks = [asyncio.create_task(sink.run()), asyncio.create_task(fwd.run())]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while not done():
            for t in tasks:
                assert not t.done(), f"{t} ended: {t.exception()!r}"
            assert loop.time() < deadline, f"timed out; pending {fwd.buffer.pending()}, stats {fwd.stats}"
            fwd.wake()
            await asyncio.sleep(0.02)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sink.stop()


def mqtt(port: int, **kw: object) -> MqttSink:
    settings = MqttSettings(host="127.0.0.1", port=port, client_id="forwarder-test", topic_prefix="t", site="s", **kw)  # type: ignore[arg-type]
    return MqttSink(settings, delays=Backoff(0.1, 0.5).delays)


def test_lanes_leave_most_urgent_first_and_in_order_in_messages_split_by_count_and_size(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf:
        buf.add(rows("data", "m1", 0, 25) + rows("data", "m2", 100, 5, size=2000))
        buf.add(rows("event", "m1", 200, 3) + rows("gap", "m1", 300, 2) + rows("status", "_agent", 400, 2))
        sink = FileSink(out)
        batching = Batching(max_records=1000, max_delay=0, max_message_records=10, max_message_bytes=4200)
        fwd = Forwarder(buf, sink, site="s", batching=batching, delays=quick)
        asyncio.run(run_until(fwd, sink, lambda: not sum(buf.pending().values())))
    got = lines(out)
    assert [m["lane"] for m in got] == ["status", "gap", "event", "data", "data", "data", "data", "data", "data"]
    data = [m for m in got if m["lane"] == "data"]
    assert [len(m["records"]) for m in data if m["asset"] == "m1"] == [10, 10, 5]  # type: ignore[arg-type]
    assert [len(m["records"]) for m in data if m["asset"] == "m2"] == [2, 2, 1], "4,200 bytes hold two 2 KB records"  # type: ignore[arg-type]
    seqs = [int(r["id"].rsplit("-", 1)[1]) for m in data if m["asset"] == "m1" for r in m["records"]]  # type: ignore[attr-defined, union-attr]
    assert seqs == sorted(seqs) and len(seqs) == 25


def test_data_that_fills_whole_messages_goes_at_once_and_only_the_rest_waits_for_more(tmp_path: Path) -> None:
    """max_delay is for fuller messages: of 1,003 records in a 2,000-record batch of 500-record messages,
    1,000 leave at once as two full messages and 3 wait; 497 more make a full message of them at once."""
    out = tmp_path / "out.jsonl"
    with Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf:
        sink = FileSink(out)
        batching = Batching(max_records=2000, max_delay=600, max_message_records=500)
        fwd = Forwarder(buf, sink, site="s", batching=batching, delays=quick)
        buf.add(rows("data", "m1", 0, 1003))
        # Within the timeout, far below max_delay: waiting for the whole delay would fail here.
        asyncio.run(run_until(fwd, sink, lambda: sum(buf.pending().values()) == 3, timeout=30))
        assert [len(m["records"]) for m in lines(out)] == [500, 500]  # type: ignore[arg-type]
        assert buf.pending()["data"] == 3
        buf.add(rows("data", "m1", 1003, 497))
        asyncio.run(run_until(fwd, sink, lambda: not sum(buf.pending().values()), timeout=30))
    got = lines(out)
    assert [len(m["records"]) for m in got] == [500, 500, 500]  # type: ignore[arg-type]
    seqs = [int(r["id"].rsplit("-", 1)[1]) for m in got for r in m["records"]]  # type: ignore[attr-defined, union-attr]
    assert seqs == sorted(seqs) and len(set(seqs)) == 1500


def test_fewer_records_than_a_message_wait_for_max_delay(tmp_path: Path) -> None:
    """The other side of the rule above: 499 records wait for the 500th, up to max_delay (here 0.5 s), then go."""
    out = tmp_path / "out.jsonl"
    with Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf:
        sink = FileSink(out)
        fwd = Forwarder(buf, sink, site="s", batching=Batching(max_records=2000, max_delay=0.5), delays=quick)
        buf.add(rows("data", "m1", 0, 499))

        async def run() -> float:
            loop = asyncio.get_running_loop()
            start = loop.time()
            await run_until(fwd, sink, lambda: not sum(buf.pending().values()), timeout=30)
            return loop.time() - start

        waited = asyncio.run(run())
    assert waited >= 0.5, waited
    assert [len(m["records"]) for m in lines(out)] == [499]  # type: ignore[arg-type]


def test_a_publish_the_broker_refuses_is_dead_lettered_with_its_reason_and_never_sent_again(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite t/s/allowed/#\n")
    with (
        MosquittoBroker(tmp_path / "broker", extra_conf=[f"acl_file {acl}"]) as broker,
        Subscriber(port=broker.port, topic="t/s/#") as sub,
        Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf,
    ):
        dead = DeadLetters(tmp_path / "dead.db")
        buf.add(rows("data", "allowed", 0, 30) + rows("data", "denied", 100, 20))
        sink = mqtt(broker.port, protocol="5")
        fwd = Forwarder(buf, sink, site="s", batching=Batching(max_delay=0), delays=quick, dead_letters=dead)
        asyncio.run(run_until(fwd, sink, lambda: not sum(buf.pending().values())))
        assert sub.wait_for(lambda got: sum(len(orjson.loads(p)["records"]) for _, p in got) >= 30, timeout=10)
        assert {t for t, _ in sub.messages()} == {"t/s/allowed/data"}
        letters = dead.list()
        assert len(letters) == 20 and dead.count() == 20
        assert {d.key for d in letters} == {"denied"} and all("Not authorized" in d.reason for d in letters)
        assert [d.record_id for d in letters] == [f"{buf.origin}-{seq}" for seq in range(31, 51)]
        assert fwd.stats.rejected_records == 20 and fwd.stats.failed_sends == 0, "refused once, not again and again"
        dead.close()


def test_a_record_larger_than_the_broker_takes_is_dead_lettered_before_it_is_sent(tmp_path: Path) -> None:
    """mosquitto announces its max_packet_size to MQTT 5 clients and disconnects whoever sends more."""
    with (
        MosquittoBroker(tmp_path / "broker", extra_conf=["max_packet_size 20000"]) as broker,
        Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf,
    ):
        dead = DeadLetters(tmp_path / "dead.db")
        buf.add([*rows("data", "m1", 0, 10), ("data", "m1", 10.0, b'{"big":"' + b"y" * 50000 + b'"}')])
        buf.add(rows("data", "m1", 11, 100, size=500))
        sink = mqtt(broker.port, protocol="5")
        fwd = Forwarder(buf, sink, site="s", batching=Batching(max_delay=0), delays=quick, dead_letters=dead)
        asyncio.run(run_until(fwd, sink, lambda: not sum(buf.pending().values())))
        assert sink.max_message_bytes == 20000
        assert [len(d.body) for d in dead.list()] == [50_010]
        assert "larger than the far end takes (20000 bytes" in dead.list()[0].reason
        assert fwd.stats.sent_records == 110
        assert "Client forwarder-test disconnected" not in broker.log().replace("disconnected.", "")
        dead.close()


def test_unconfirmed_sends_stay_buffered_and_go_again_with_the_same_ids(tmp_path: Path) -> None:
    with (
        MosquittoBroker(tmp_path / "broker") as broker,
        Subscriber(port=broker.port, topic="t/s/#") as sub,
        Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf,
    ):
        buf.add(rows("data", "m1", 0, 50))
        sink = mqtt(broker.port)
        batching = Batching(max_delay=0, max_records=10, send_timeout=0.5)
        fwd = Forwarder(buf, sink, site="s", batching=batching, delays=quick)

        async def scenario() -> None:
            run = asyncio.create_task(run_until(fwd, sink, lambda: not sum(buf.pending().values()), timeout=60))
            await until(lambda: sink.connected, 10)
            broker.suspend()  # connected, but nothing is acknowledged
            await until(lambda: fwd.stats.failed_sends >= 2, 20)
            assert buf.pending()["data"] > 0
            broker.resume()
            await run

        asyncio.run(scenario())
        expected = {f"{buf.origin}-{seq}" for seq in range(1, 51)}
        assert sub.wait_for(lambda got: {r["id"] for _, p in got for r in orjson.loads(p)["records"]} == expected, 10)


def test_a_forwarder_that_died_mid_batch_gives_its_records_back_when_restarted(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf:
        buf.add(rows("data", "m1", 0, 20))
        assert buf.begin("data", 15) is not None  # the batch of a forwarder that then died
        assert buf.waiting()["data"] == 5
        sink = FileSink(out)
        fwd = Forwarder(buf, sink, site="s", batching=Batching(max_delay=0), delays=quick)
        asyncio.run(run_until(fwd, sink, lambda: not sum(buf.pending().values())))
    ids = [r["id"] for m in lines(out) for r in m["records"]]  # type: ignore[attr-defined]
    assert ids == [f"{buf.origin}-{seq}" for seq in range(1, 21)]


def test_several_batches_are_in_flight_over_a_slow_link_and_each_asset_keeps_its_order(tmp_path: Path) -> None:
    with (
        MosquittoBroker(tmp_path / "broker") as broker,
        Subscriber(port=broker.port, topic="t/s/#") as sub,
        Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf,
    ):
        for start in range(0, 4000, 1000):
            buf.add(rows("data", "m1", start, 500) + rows("data", "m2", start + 500, 500))
        total = buf.pending()["data"]

        async def scenario() -> None:
            async with TcpProxy("127.0.0.1", broker.port, delay=0.05) as link:  # +100 ms round trip
                sink = mqtt(link.port)
                batching = Batching(max_delay=0, max_records=200, max_message_records=100, in_flight=4)
                fwd = Forwarder(buf, sink, site="s", batching=batching, delays=quick)
                await run_until(fwd, sink, lambda: not sum(buf.pending().values()), timeout=60)
                assert fwd.stats.max_window >= 2, "stop-and-wait: one batch at a time"

        asyncio.run(scenario())
        assert sub.wait_for(lambda got: sum(len(orjson.loads(p)["records"]) for _, p in got) >= total, 20)
        for asset in ("m1", "m2"):
            seqs = [
                int(r["id"].rsplit("-", 1)[1])
                for t, p in sub.messages()
                if t == f"t/s/{asset}/data"
                for r in orjson.loads(p)["records"]
            ]
            assert seqs == sorted(seqs) and len(seqs) == 2000


def test_drain_sends_the_backlog_and_gives_up_at_its_deadline(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def scenario() -> None:
        with Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf:
            buf.add(rows("data", "m1", 0, 3000))
            sink = FileSink(out)
            runner = asyncio.create_task(sink.run())
            await until(lambda: sink.connected, 10)
            fwd = Forwarder(buf, sink, site="s", batching=Batching(max_records=500), delays=quick)
            assert await fwd.drain(timeout=20)
            assert not sum(buf.pending().values())
            buf.add(rows("data", "m1", 5000, 10))
            runner.cancel()
            await sink.stop()  # nothing can be written now
            started = asyncio.get_running_loop().time()
            assert not await fwd.drain(timeout=0.5)
            assert asyncio.get_running_loop().time() - started < 2
            assert buf.pending()["data"] == 10

    asyncio.run(scenario())
    assert sum(len(m["records"]) for m in lines(out)) == 3000  # type: ignore[arg-type]


def test_the_file_sink_leaves_no_partial_line_when_a_write_fails(tmp_path: Path) -> None:
    """A real EFBIG from the kernel (file-size limit) in the middle of a write: the line is cut off again."""
    out = tmp_path / "out.jsonl"
    first = [Message("a", b'{"n":1}')]
    second = [Message("a", b'{"n":2,"pad":"' + b"z" * 8000 + b'"}')]

    async def scenario() -> None:
        sink = FileSink(out)
        runner = asyncio.create_task(sink.run())
        await until(lambda: sink.connected, 10)
        assert await sink.send(first, timeout=5) == [True]
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
        try:
            assert await sink.send(second, timeout=5) == [False]
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)
        assert await sink.send(second, timeout=5) == [True]
        runner.cancel()
        await sink.stop()

    asyncio.run(scenario())
    assert out.read_bytes() == b'{"n":1}\n' + second[0].payload + b"\n"
    assert os.path.getsize(out) > 4096


class Answering:
    """A sink whose far end answers each message as `answers` says, keyed by the message's first record
    id (True when not listed): per-record outcomes without a receiver (tests/test_http_sink.py has one)."""

    name = "answering"
    connected = True
    max_message_bytes = None

    def __init__(self, answers: dict[str, Outcome]) -> None:
        self.answers = answers

    async def run(self) -> None:
        await asyncio.Future()

    def topic(self, lane: str, key: str) -> str:
        return f"{key}/{lane}"

    def announce(self, state: str, down: Sequence[str] = ()) -> None:
        return

    async def send(self, messages: Sequence[Message], *, timeout: float) -> list[Outcome]:
        return [self.answers.pop(orjson.loads(m.payload)["records"][0]["id"], True) for m in messages]

    async def stop(self) -> None:
        return


def test_a_partly_refused_message_deletes_the_confirmed_records_and_dead_letters_the_others_by_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf:
        dead = DeadLetters(tmp_path / "dead.db")
        buf.add(rows("data", "m1", 0, 30))
        first, third = f"{buf.origin}-1", f"{buf.origin}-21"
        sink = Answering({
            first: Partial(((2, "too cold"), (5, "too hot"), (7, "too cold"))),
            third: Partial(((9, "too hot"),)),
        })  # fmt: skip
        fwd = Forwarder(buf, sink, site="s", batching=Batching(max_message_records=10), delays=quick, dead_letters=dead)
        assert asyncio.run(fwd.flush_once())
        assert not sum(buf.pending().values())
        reasons = {d.record_id: d.reason for d in dead.list()}
        dead.close()

    def seq(n: int) -> str:
        return f"{buf.origin}-{n}"

    assert reasons == {seq(3): "too cold", seq(6): "too hot", seq(8): "too cold", seq(30): "too hot"}
    s = fwd.stats
    assert (s.sent_records, s.rejected_records, s.sent_messages, s.failed_sends) == (26, 4, 3, 0)
    refusals = sorted(r.getMessage() for r in caplog.records if "refused for good" in r.getMessage())
    assert [m.split(" (edge-agent")[0] for m in refusals] == [
        "answering: 1 records refused for good on m1/data: too hot; moved to the dead letters",
        "answering: 2 records refused for good on m1/data: too cold; moved to the dead letters",
    ], "grouped by reason (and a reason repeated within a minute is counted, not logged again)"


def test_a_partial_naming_records_the_message_does_not_have_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    with Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf:
        dead = DeadLetters(tmp_path / "dead.db")
        buf.add(rows("data", "m1", 0, 10))
        sink = Answering({f"{buf.origin}-1": Partial(((3, "x"), (10, "out of range")))})
        fwd = Forwarder(buf, sink, site="s", batching=Batching(), delays=quick, dead_letters=dead)
        assert not asyncio.run(fwd.flush_once()), "a send the sink could not account for is not a success"
        assert buf.pending()["data"] == 10 and dead.count() == 0
        assert asyncio.run(fwd.flush_once())  # answered True this time
        assert not sum(buf.pending().values())
        dead.close()
    assert fwd.stats.failed_sends == 1 and fwd.stats.sent_records == 10
    assert any("does not fit a message of 10 records" in r.getMessage() for r in caplog.records)


def test_drain_waits_within_its_deadline_for_a_sink_that_is_reconnecting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop while the broker is away: the sink keeps reconnecting during the drain, and what is buffered
    goes as soon as it is back, within the drain's deadline (before, the drain gave up at the first failed
    send)."""
    caplog.set_level(logging.WARNING)
    port = free_port()
    with (
        MosquittoBroker(tmp_path / "broker", port=port) as broker,
        Subscriber(port=port, topic="t/s/#") as sub,  # its session outlives the broker's restart
        Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf,
    ):
        buf.add(rows("data", "m1", 0, 300))
        broker.stop()
        sink = mqtt(port)
        fwd = Forwarder(buf, sink, site="s", batching=Batching(max_records=100, send_timeout=1), delays=quick)

        async def scenario() -> bool:
            runner = asyncio.create_task(sink.run())
            try:
                drain = asyncio.create_task(fwd.drain(timeout=30))
                await until(lambda: "retrying in the background" in caplog.text, 10)  # the sink failed to connect
                assert not drain.done() and buf.pending()["data"] == 300
                broker.start()
                return await drain
            finally:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
                await sink.stop()

        assert asyncio.run(scenario())
        assert not sum(buf.pending().values())
        expected = {f"{buf.origin}-{seq}" for seq in range(1, 301)}
        assert sub.wait_for(lambda got: {r["id"] for _, p in got for r in orjson.loads(p)["records"]} == expected, 20)


def head_rows(key: str, elements: int, values: int, start: float = 0.0, node_pad: int = 0) -> list[Row]:
    """Data rows as the pipeline adds them: (head, tail) bodies, `values` rounds over `elements` elements."""
    out: list[Row] = []
    for n in range(values * elements):
        e = n % elements
        head = b'{"shell":"urn:%b","submodel":"urn:%b/sm","path":"P%d","valueType":"xs:double","node":"ns=2;s=%b",' % (
            key.encode(),
            key.encode(),
            e,
            b"N%d" % e + b"x" * node_pad,
        )
        out.append(
            ("data", key, start + n, (head, b'"value":%d.5,"sourceTime":null,"serverTime":null,"status":0}' % n))
        )
    return out


def whole(rows_: Sequence[Row]) -> list[bytes]:
    return [b if isinstance(b, bytes) else b[0] + b[1] for *_, b in rows_]


def test_version_3_sends_each_head_once_per_message_within_the_brokers_limit_and_dead_letters_whole_records(
    tmp_path: Path,
) -> None:
    """wire_version 3 through mosquitto: every message within the broker's max_packet_size (each head counted
    once per message), each expanding to exactly the records added, about half the bytes of version 2 for
    elements that repeat in a message; a record whose head alone is too large, and records the broker's ACL
    refuses, are dead-lettered as whole records."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite t/s/m1/#\ntopic readwrite t/s/m2/#\n")
    sent: dict[int, list[tuple[str, bytes]]] = {}
    for version in (2, 3):
        work = tmp_path / f"v{version}"
        with (
            MosquittoBroker(work / "broker", extra_conf=["max_packet_size 20000", f"acl_file {acl}"]) as broker,
            Subscriber(port=broker.port, topic="t/s/#") as sub,
            Buffer(work / "b.db", quota_bytes=BIG) as buf,
        ):
            dead = DeadLetters(work / "dead.db")
            parts = [head_rows("m1", 20, 30), head_rows("m2", 3, 200, 1e6), rows("status", "m1", 0, 1)]
            parts += [head_rows("m1", 1, 1, 2e6, node_pad=30000), head_rows("denied", 2, 5, 3e6)]
            for part in parts:  # one add each: the seqs follow this order
                buf.add(part)
            added = [row for part in parts for row in part]
            sink = mqtt(broker.port, protocol="5")
            batching = Batching(max_delay=0, wire_version=version)
            fwd = Forwarder(buf, sink, site="s", batching=batching, delays=quick, dead_letters=dead)
            asyncio.run(run_until(fwd, sink, lambda: not sum(buf.pending().values())))
            expected = {f"{buf.origin}-{seq}": body for seq, body in enumerate(whole(added), 1)}
            letters = {d.record_id: d for d in dead.list()}
            assert set(letters) == {f"{buf.origin}-{seq}" for seq in range(len(added) - 10, len(added) + 1)}
            assert all(d.body == expected[i] for i, d in letters.items()), "dead letters keep whole records"
            assert "larger than the far end takes" in letters[f"{buf.origin}-{len(added) - 10}"].reason
            delivered = len(added) - 11

            def carried(got: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
                return [(t, p) for t, p in got if b'"records":' in p]  # not the sink's retained online state

            def records(got: list[tuple[str, bytes]], want: int = delivered) -> bool:
                return sum(len(orjson.loads(p)["records"]) for _, p in carried(got)) >= want

            assert sub.wait_for(records, 10)
            sent[version] = carried(sub.messages())
            for _, payload in sent[version]:
                assert len(payload) < 20000
                doc, problems = wire.expand(orjson.loads(payload))
                assert not problems and doc["v"] == 2
                for r in doc["records"]:
                    rid = r.pop("id")
                    assert orjson.dumps(r) == expected.pop(rid)
            assert len(expected) == 11  # the dead letters
            dead.close()
    v2_bytes, v3_bytes = (sum(len(p) for topic, p in sent[v] if topic.endswith("/data")) for v in (2, 3))
    assert v3_bytes < 0.6 * v2_bytes, (v2_bytes, v3_bytes)
    assert all(orjson.loads(p)["v"] == 3 for _, p in sent[3])


def test_a_buffer_switched_back_from_version_3_hands_out_whole_bodies(tmp_path: Path) -> None:
    """A reload from wire_version 3 back to 2 keeps the buffer: records it had read ahead, and those of a batch
    still open, are handed out whole to the version-2 forwarder."""
    out = tmp_path / "out.jsonl"
    with Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf:
        added = head_rows("m1", 5, 40)
        buf.add(added)
        sink = FileSink(out)
        Forwarder(buf, sink, site="s", batching=Batching(wire_version=3), delays=quick)
        batch = buf.begin("data", 30)  # open, read ahead: stored bodies
        assert batch is not None and all(r.body[:1] == b"#" for r in batch.items)
        fwd = Forwarder(buf, sink, site="s", batching=Batching(max_delay=0), delays=quick)
        assert not buf.heads_apart
        asyncio.run(run_until(fwd, sink, lambda: not sum(buf.pending().values())))
    docs = lines(out)
    assert all(m["v"] == 2 for m in docs)
    assert [orjson.dumps({k: v for k, v in r.items() if k != "id"}) for m in docs for r in m["records"]] == whole(  # type: ignore[attr-defined]
        added
    )


def test_version_3_sends_records_whole_whose_head_is_not_the_start_of_an_object(tmp_path: Path) -> None:
    """The buffer keeps any (head, tail) split apart; version 3 lists a head only where it is the start of a
    JSON object ending in a comma, and sends the other records whole."""
    out = tmp_path / "out.jsonl"
    with Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf:
        odd: list[Row] = [("data", "m1", float(n), (b'{"note":"', b'%d"}' % n)) for n in range(5)]
        added = [row for pair in zip(head_rows("m1", 2, 3), odd, strict=False) for row in pair]
        buf.add(added)
        sink = FileSink(out)
        fwd = Forwarder(buf, sink, site="s", batching=Batching(max_delay=0, wire_version=3), delays=quick)
        asyncio.run(run_until(fwd, sink, lambda: not sum(buf.pending().values())))
    docs = lines(out)
    assert [len(m["heads"]) for m in docs] == [2]  # type: ignore[arg-type]
    assert sum(1 for m in docs for r in m["records"] if "h" in r) == 5  # type: ignore[attr-defined]
    expanded = [r for m in docs for r in wire.expand(m)[0]["records"]]
    assert [orjson.dumps({k: v for k, v in r.items() if k != "id"}) for r in expanded] == whole(added)


def test_a_batch_is_split_into_messages_as_full_as_both_limits_allow() -> None:
    """`_split` against the rule written record by record: a message takes the next record while it has fewer
    than max_records and the bytes stay within max_bytes; a record over max_bytes goes alone."""

    def by_rule(items: list[StoredRecord], max_records: int, max_bytes: int) -> list[list[StoredRecord]]:
        out: list[list[StoredRecord]] = []
        for item in items:
            n = len(item.body) + _RECORD_OVERHEAD
            last = out[-1] if out else None
            if (
                last is None
                or len(last) >= max_records
                or sum(len(r.body) + _RECORD_OVERHEAD for r in last) + n > max_bytes
            ):
                out.append([item])
            else:
                last.append(item)
        return out

    rng = random.Random(3)
    for _ in range(3000):
        sizes = [rng.choice([0, 1, 60, 300, rng.randrange(900)]) for _ in range(rng.randrange(40))]
        items = [StoredRecord(i, "data", "k", 0.0, b"x" * n) for i, n in enumerate(sizes)]
        max_records, max_bytes = rng.randrange(1, 12), rng.randrange(1, 2000)
        got = [list(part) for part in _split(items, max_records, max_bytes)]
        assert got == by_rule(items, max_records, max_bytes), (sizes, max_records, max_bytes)
