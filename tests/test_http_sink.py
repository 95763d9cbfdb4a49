"""HttpSink against the reference receiver (`python -m simulators.cloud`, a real process on 127.0.0.1):
one POST per send, what every answer means, Retry-After, refusals per record into the dead letters,
lost connections, TLS; and the whole agent (a real process) between the factory simulator and the
receiver: every record stored exactly once through a slow, failing, throttling, connection-dropping
and record-rejecting receiver, and a refused token that costs one log line and no record."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from agent.backoff import Backoff
from simulators.agentproc import ROOT, AgentProcess
from simulators.cloud import CloudReceiver
from simulators.factory import FactoryThread
from simulators.factory.agentconfig import factory_config
from simulators.ports import free_port
from tests.helpers import until, wait_until
from tests.tlsfiles import Ca, Issued
from uploader import wire
from uploader.buffer import Buffer, Row
from uploader.deadletter import DeadLetters
from uploader.forwarder import Batching, Forwarder
from uploader.http import HttpConfigError, HttpSettings, HttpSink, TlsSettings
from uploader.http.answer import retry_after
from uploader.sink import Message, Outcome, Partial, Rejected

pytestmark = pytest.mark.timeout(120)

TOKEN = "cl0ud-T0ken-5e8d1f"
WRONG = "wr0ng-T0ken-9a7c2b"
LOGGER = "uploader.http"
BIG = 1 << 30
ELEMENT = wire.Element(
    shell="urn:aas:m1", submodel="urn:aas:m1/op", path="Spindle.Speed", value_type="xs:double", node="ns=2;s=S"
)
PREFIX = wire.data_prefix(ELEMENT)
T0 = datetime(2026, 11, 26, 13, 0, tzinfo=UTC)


def body(n: int) -> bytes:
    return wire.data_body(PREFIX, n + 0.5, T0 + timedelta(milliseconds=n), T0, 0)


def rows(count: int, key: str = "m1") -> list[Row]:
    return [("data", key, float(n), body(n)) for n in range(count)]


def message(origin: str, seqs: range, asset: str = "m1") -> Message:
    header = {"origin": origin, "site": "s", "asset": asset, "lane": "data", "sent": datetime.now(UTC)}
    ids = [wire.record_id(origin, s) for s in seqs]
    return Message(f"ingest/data/{asset}", wire.payload(header, ids, [body(s) for s in seqs]))


def new_origin() -> str:
    return uuid.uuid4().hex[:12]


def sink_for(url: str, **kw: Any) -> HttpSink:
    return HttpSink(HttpSettings(url=url, **({"token": TOKEN} | kw)), delays=Backoff(0.1, 0.4).delays)


def stored(cloud: CloudReceiver, origin: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(cloud.db)) as c:
        return [r[0] for r in c.execute("SELECT id FROM records WHERE origin = ? ORDER BY seq", (origin,))]


_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ simulators\.cloud: (.*)$", re.MULTILINE)
_REQUEST = re.compile(
    r"^(ingest \w+: \d+ messages|ingest \w+ answered again|answering an ingest request|dropping the connection"
    r"|refused ingest )"
)


def requests(cloud: CloudReceiver, since: int = 0) -> list[tuple[float, str]]:
    """(time, what the receiver logged) of every ingest request it answered, after log offset `since`."""
    return [
        (datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp(), m[2])
        for m in _LINE.finditer(cloud.log()[since:])
        if _REQUEST.match(m[2])
    ]


def warnings_of(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= level]


@pytest.fixture(scope="module")
def shared_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudReceiver]:
    with CloudReceiver(tmp_path_factory.mktemp("cloud"), tokens=[TOKEN]) as cloud:
        yield cloud


@pytest.fixture
def cloud(shared_cloud: CloudReceiver) -> CloudReceiver:
    shared_cloud.set_faults()  # every knob back to "behave"
    return shared_cloud


async def drain(fwd: Forwarder, sink: HttpSink, timeout: float = 30) -> None:
    """Run the sink and the forwarder until the buffer is empty."""
    tasks = [asyncio.create_task(sink.run()), asyncio.create_task(fwd.run())]
    try:
        await until(lambda: not sum(fwd.buffer.pending().values()) or any(t.done() for t in tasks), timeout, "drain")
        for t in tasks:
            assert not t.done(), f"{t} ended: {t.exception()!r}"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sink.stop()


# -- one POST per send, confirmed per record ---------------------------------------------------------


@pytest.mark.parametrize("gzip", [True, False])
def test_a_backlog_arrives_exactly_once_in_one_post_per_batch_with_gzip_on_and_off(
    tmp_path: Path, cloud: CloudReceiver, gzip: bool
) -> None:
    with Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf:
        buf.add(rows(1500, "m1") + rows(1500, "m2"))
        sink = sink_for(cloud.url, gzip=gzip)
        batching = Batching(max_records=500, max_delay=0, in_flight=4)
        fwd = Forwarder(buf, sink, site="s", batching=batching, delays=lambda: itertools.repeat(0.1))
        asyncio.run(drain(fwd, sink))
        ids = stored(cloud, buf.origin)
    assert sorted(ids) == sorted(wire.record_id(buf.origin, n) for n in range(1, 3001))
    assert sink.stats.requests == 6, "one POST per batch of 500"
    assert fwd.stats.max_window >= 2, "batches in flight together"
    if gzip:
        assert sink.stats.wire_bytes * 4 < sink.stats.body_bytes, sink.stats
    else:
        assert sink.stats.wire_bytes == sink.stats.body_bytes, sink.stats


def test_messages_larger_together_than_max_body_bytes_go_in_several_posts(cloud: CloudReceiver) -> None:
    origin = new_origin()
    messages = [message(origin, range(n, n + 20)) for n in range(1, 101, 20)]
    size = max(len(m.payload) for m in messages)

    async def scenario() -> list[Outcome]:
        sink = sink_for(cloud.url, max_body_bytes=2 * size + 10)
        try:
            return await sink.send(messages, timeout=5)
        finally:
            await sink.stop()
            assert sink.stats.requests == 3, "2 + 2 + 1 messages"

    assert asyncio.run(scenario()) == [True] * 5
    assert sorted(stored(cloud, origin)) == sorted(f"{origin}-{n}" for n in range(1, 101))


@pytest.mark.parametrize("version", [2, 3])
def test_records_the_receiver_refuses_are_dead_lettered_with_its_reason_and_their_neighbours_stored(
    tmp_path: Path, cloud: CloudReceiver, version: int
) -> None:
    """Also with wire_version 3 (each head once per message): the receiver's per-record refusals still name
    the right records, and their dead letters are whole records."""
    with Buffer(tmp_path / "b.db", quota_bytes=BIG) as buf, contextlib.closing(DeadLetters(tmp_path / "d.db")) as dead:
        refused = {wire.record_id(buf.origin, n) for n in (3, 250, 251, 777)}
        cloud.set_faults(reject_ids=sorted(refused), reject_reason="quarantined by the test")
        # As the pipeline adds them: the element's head apart from each record's tail.
        split = [(lane, key, ts, (PREFIX, b[len(PREFIX) :])) for lane, key, ts, b in rows(500, "m1") + rows(500, "m2")]
        buf.add(split)  # type: ignore[arg-type]
        sink = sink_for(cloud.url)
        batching = Batching(max_records=500, max_delay=0, max_message_records=100, wire_version=version)
        fwd = Forwarder(buf, sink, site="s", batching=batching, delays=lambda: itertools.repeat(0.1), dead_letters=dead)
        asyncio.run(drain(fwd, sink))
        letters = dead.list()
        ids = set(stored(cloud, buf.origin))
    assert {d.record_id for d in letters} == refused
    assert all(d.body.startswith(PREFIX) and d.body[len(PREFIX) :].startswith(b'"value":') for d in letters)
    assert {d.reason for d in letters} == {"quarantined by the test"}
    assert {d.key for d in letters} == {"m1", "m2"}
    assert ids == {wire.record_id(buf.origin, n) for n in range(1, 1001)} - refused
    assert fwd.stats.rejected_records == 4 and fwd.stats.failed_sends == 0
    assert fwd.stats.sent_records == 996


def test_answers_map_to_outcomes_per_message(cloud: CloudReceiver, caplog: pytest.LogCaptureFixture) -> None:
    origin = new_origin()
    first, second = message(origin, range(1, 11)), message(origin, range(11, 21), asset="m2")
    invalid = Message("ingest/data/m1", b'{"v":1,"origin":"' + origin.encode() + b'"}')

    async def scenario() -> None:
        sink = sink_for(cloud.url)
        try:
            assert await sink.send([], timeout=5) == []
            cloud.set_faults(reject_ids=[f"{origin}-4", f"{origin}-5"], reject_reason="bad sensor")
            got = await sink.send([first, second], timeout=5)
            assert got == [Partial(((3, "bad sensor"), (4, "bad sensor"))), True]
            cloud.set_faults()
            # The whole request refused for good (an envelope that is no wire message): every message Rejected.
            refused = await sink.send([message(origin, range(21, 31)), invalid], timeout=5)
            assert all(isinstance(r, Rejected) for r in refused), refused
            assert isinstance(refused[0], Rejected) and refused[0].reason.startswith(
                "HTTP 422 (invalid): nothing stored"
            )
            cloud.set_faults(fail_next=2)
            assert await sink.send([message(origin, range(31, 41))], timeout=5) == [False]
            assert await sink.send([message(origin, range(31, 41))], timeout=5) == [False]
            assert sink.connected, "an answer, even 500, is a working connection"
            assert await sink.send([message(origin, range(31, 41))], timeout=5) == [True]
        finally:
            await sink.stop()
        wrong_path = sink_for(cloud.url + "/not-here")
        try:
            assert await wrong_path.send([message(origin, range(41, 51))], timeout=5) == [False]
        finally:
            await wrong_path.stop()

    caplog.set_level(logging.INFO, logger=LOGGER)
    asyncio.run(scenario())
    expected = {f"{origin}-{n}" for n in range(1, 21) if n not in (4, 5)} | {f"{origin}-{n}" for n in range(31, 41)}
    assert set(stored(cloud, origin)) == expected
    logged = warnings_of(caplog)
    assert sum("HTTP 500" in m for m in logged) == 1, "a trouble is logged when it begins, not at every repeat"
    assert any("delivering again" in r.getMessage() for r in caplog.records)
    assert [m for m in warnings_of(caplog, logging.ERROR) if "no ingest endpoint" in m and "/not-here" in m]


def test_a_refused_token_is_one_error_that_names_no_token(
    cloud: CloudReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    async def scenario() -> None:
        sink = sink_for(cloud.url, token=WRONG)
        try:
            for _ in range(3):
                assert await sink.send([message(new_origin(), range(1, 4))], timeout=5) == [False]
            assert sink.connected
        finally:
            await sink.stop()

    asyncio.run(scenario())
    errors = warnings_of(caplog, logging.ERROR)
    assert len(errors) == 1 and "refused the bearer token" in errors[0], errors
    assert "HTTP 401" in errors[0] and "restart" in errors[0]
    assert WRONG not in caplog.text and TOKEN not in caplog.text

    async def without_token() -> None:
        sink = sink_for(cloud.url, token=None)
        try:
            assert await sink.send([message(new_origin(), range(1, 4))], timeout=5) == [False]
        finally:
            await sink.stop()

    caplog.clear()
    asyncio.run(without_token())
    assert [m for m in warnings_of(caplog, logging.ERROR) if "wants a bearer token" in m and "set the sink" in m]
    assert WRONG not in repr(sink_for(cloud.url, token=WRONG)) and WRONG not in repr(HttpSettings(url="x", token=WRONG))


@pytest.mark.parametrize("fault", ["throttle_next", "unavailable_next"])
def test_no_post_goes_before_retry_after_has_passed(cloud: CloudReceiver, fault: str) -> None:
    origin = new_origin()
    batch = [message(origin, range(1, 6))]
    mark = len(cloud.log())

    async def scenario() -> float:
        sink = sink_for(cloud.url)
        try:
            cloud.set_faults(**{fault: 1}, retry_after=2)
            assert await sink.send(batch, timeout=5) == [False]
            answered = time.monotonic()
            while (outcome := await sink.send(batch, timeout=5)) != [True]:
                assert outcome == [False] and sink.connected
                await asyncio.sleep(0.05)
            return time.monotonic() - answered
        finally:
            await sink.stop()

    waited = asyncio.run(scenario())
    seen = requests(cloud, mark)
    assert len(seen) == 2, f"one refused POST, one after the wait, none in between: {seen}"
    assert seen[1][0] - seen[0][0] >= 1.99 and waited >= 1.9, (seen, waited)
    assert stored(cloud, origin) == [f"{origin}-{n}" for n in range(1, 6)]


def test_retry_after_is_read_as_seconds_or_as_a_date() -> None:
    now = datetime(2026, 11, 26, 13, 0, tzinfo=UTC)
    assert retry_after("7", now) == 7.0
    assert retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0.0
    assert retry_after("999999", now) == 3600.0, "capped: a broken header cannot stop delivery for days"
    assert retry_after("soon", now) is None and retry_after(None, now) is None


def test_a_dropped_connection_a_timeout_and_a_receiver_that_is_down_keep_records_until_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    origin = new_origin()
    with CloudReceiver(tmp_path / "cloud", tokens=[TOKEN]) as cloud:

        async def scenario() -> None:
            sink = sink_for(cloud.url)
            running = asyncio.create_task(sink.run())
            try:
                await until(lambda: sink.connected, 10, "the first probe")
                cloud.set_faults(drop_next=1)
                assert await sink.send([message(origin, range(1, 200))], timeout=5) == [False]
                assert not sink.connected
                await until(lambda: sink.connected, 10, "reachable again")
                assert await sink.send([message(origin, range(1, 200))], timeout=5) == [True]
                # Too slow: not confirmed in time. Sent again, it is stored; the very same body once more is
                # the same Idempotency-Key, answered again and not stored again.
                cloud.set_faults(delay_ms=1500)
                slow = [message(origin, range(200, 300))]
                assert await sink.send(slow, timeout=0.5) == [False]
                cloud.set_faults()
                await until(lambda: sink.connected, 10, "reachable again")
                assert await sink.send(slow, timeout=5) == [True]
                assert await sink.send(slow, timeout=5) == [True]
                cloud.kill()
                assert await sink.send([message(origin, range(300, 400))], timeout=5) == [False]
                assert not sink.connected
                await asyncio.sleep(1.0)  # the sink probes with backoff meanwhile
                assert not running.done() and not sink.connected
                await asyncio.to_thread(cloud.start)
                await until(lambda: sink.connected, 10, "reachable after the restart")
                assert await sink.send([message(origin, range(300, 400))], timeout=5) == [True]
            finally:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
                await sink.stop()

        asyncio.run(scenario())
        assert stored(cloud, origin) == [f"{origin}-{n}" for n in range(1, 400)]
        assert any("answered again" in text for _, text in requests(cloud))
    outage = [m for m in warnings_of(caplog) if "cannot deliver" in m]
    assert len(outage) == 3, f"the drop, the timeout, the receiver down: once each, not every probe: {outage}"
    assert "no answer within 0.5 s" in outage[1], outage
    assert any("still: cannot deliver" in r.getMessage() and "Connect call failed" in r.getMessage()
               for r in caplog.records), "the probes while it was down, at DEBUG"  # fmt: skip
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert "Traceback" not in caplog.text


# -- malformed answers (a receiver that breaks the contract; the reference one does not) ----------------


@contextlib.asynccontextmanager
async def answering(*answers: tuple[int, bytes, dict[str, str]]) -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.1 that gives these answers to POST /v1/ingest, in turn."""
    turn = itertools.cycle(answers)

    async def ingest(request: web.Request) -> web.Response:
        await request.read()
        status, text, headers = next(turn)
        return web.Response(status=status, body=text, headers=headers, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/ingest", ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("status", "text", "headers", "expected"),
    [
        (200, b'{"stored": true}', {}, 'got HTTP 200: \'{"stored": true}\''),
        (200, b'{"accepted":1,"duplicates":0,"rejected":[{"id":"0123456789ab-99","reason":"x"}]}', {},
         "rejects record '0123456789ab-99', which the request did not carry"),
        (200, b'{"accepted":1,"duplicates":0,"rejected":[{"id":null,"reason":"x"}]}', {},
         'got a rejected record {"id":null'),
        (302, b"", {"Location": "https://elsewhere.example/login"}, "got HTTP 302 without a body to https://elsewhere"),
    ],
)  # fmt: skip
def test_a_malformed_answer_confirms_nothing_and_is_named_once(
    caplog: pytest.LogCaptureFixture, status: int, text: bytes, headers: dict[str, str], expected: str
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    async def scenario() -> None:
        async with answering((status, text, headers)) as url:
            sink = sink_for(url)
            try:
                for _ in range(2):
                    assert await sink.send([message("0123456789ab", range(1, 4))], timeout=5) == [False]
            finally:
                await sink.stop()

    asyncio.run(scenario())
    logged = warnings_of(caplog)
    assert len(logged) == 1 and expected in logged[0] and "expected HTTP 200 with JSON" in logged[0], logged


# -- TLS -----------------------------------------------------------------------------------------------


class Hop:
    """A TCP hop on 127.0.0.1 in front of the receiver, on a thread of its own; bytes pass as they come.

    With `server` it terminates TLS (the receiver serves plain HTTP), and with `client_ca` it requires a
    client certificate signed by that CA (mutual TLS). While `eating`, requests still reach the receiver
    but its answers are discarded: a reply lost on the way back, so the receiver stores what the sender
    never hears about. `posts` holds the time (epoch seconds) each request began to pass.
    """

    def __init__(self, target: int, server: Issued | None = None, *, client_ca: Path | None = None) -> None:
        self.target = target
        self.eating = False
        self.posts: list[float] = []
        self._context: ssl.SSLContext | None = None
        if server is not None:
            self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._context.load_cert_chain(server.cert, server.key)
            if client_ca is not None:
                self._context.verify_mode = ssl.CERT_REQUIRED
                self._context.load_verify_locations(client_ca)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hop", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    def __enter__(self) -> Hop:
        self._thread.start()
        start = asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self._context)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()  # the pipes end by themselves
        pipes = asyncio.all_tasks() - {asyncio.current_task()}
        if pipes:
            await asyncio.wait(pipes, timeout=5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer, answers=False), self._pipe(up_reader, writer, answers=True),
            return_exceptions=True,
        )  # fmt: skip

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, answers: bool) -> None:
        try:
            while data := await reader.read(65536):
                if not answers and data.startswith(b"POST "):  # aiohttp sends one request at a time per connection
                    self.posts.append(time.time())
                if not (answers and self.eating):
                    writer.write(data)
                    await writer.drain()
        finally:
            writer.close()


async def first_trouble(sink: HttpSink, caplog: pytest.LogCaptureFixture) -> str:
    running = asyncio.create_task(sink.run())
    try:
        await until(lambda: warnings_of(caplog), 10, "a logged failure")
        assert not sink.connected
        return warnings_of(caplog)[0]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await sink.stop()


def test_https_with_the_ca_and_mutual_tls_deliver_and_a_missing_client_certificate_is_explained(
    tmp_path: Path, cloud: CloudReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    ca = Ca(tmp_path / "pki")
    server = ca.issue("receiver")
    client = ca.issue("gateway", host=None, client=True, passphrase="k3y-Pa55")
    origin = new_origin()
    ca_only = TlsSettings(ca_file=str(ca.cert))
    mutual = TlsSettings(
        ca_file=str(ca.cert), cert_file=str(client.cert), key_file=str(client.key), key_password="k3y-Pa55"
    )

    async def scenario() -> str:
        with Hop(cloud.port, server) as hop:
            sink = sink_for(f"https://127.0.0.1:{hop.port}", tls=ca_only)
            running = asyncio.create_task(sink.run())
            await until(lambda: sink.connected, 10, "TLS handshake")
            assert await sink.send([message(origin, range(1, 11))], timeout=5) == [True]
            running.cancel()
            await sink.stop()
        with Hop(cloud.port, server, client_ca=ca.cert) as hop:
            sink = sink_for(f"https://127.0.0.1:{hop.port}", tls=mutual)
            assert await sink.send([message(origin, range(11, 21))], timeout=5) == [True]
            await sink.stop()
            caplog.clear()
            return await first_trouble(sink_for(f"https://127.0.0.1:{hop.port}", tls=ca_only), caplog)

    message_without = asyncio.run(scenario())
    assert stored(cloud, origin) == [f"{origin}-{n}" for n in range(1, 21)]
    assert "require a client certificate" in message_without and "tls.cert_file" in message_without, message_without
    assert "k3y-Pa55" not in caplog.text


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("expired", "the receiver's certificate has expired"),
        ("another host", "is not for 127.0.0.1"),
        ("unknown CA", "not signed by a CA we trust"),
        ("plain http", "does the receiver speak https on this port"),
    ],
)
def test_a_receiver_certificate_that_cannot_be_trusted_is_refused_with_the_reason(
    tmp_path: Path, cloud: CloudReceiver, caplog: pytest.LogCaptureFixture, case: str, expected: str
) -> None:
    ca = Ca(tmp_path / "pki")
    server = {
        "expired": lambda: ca.issue("receiver", expired=True),
        "another host": lambda: ca.issue("receiver", host="10.9.8.7"),
    }.get(case, lambda: ca.issue("receiver"))()
    trusted = Ca(tmp_path / "other", "other").cert if case == "unknown CA" else ca.cert
    tls = TlsSettings(ca_file=str(trusted))

    async def scenario() -> str:
        if case == "plain http":  # https:// to the receiver's plain HTTP port
            return await first_trouble(sink_for(f"https://127.0.0.1:{cloud.port}", tls=tls), caplog)
        with Hop(cloud.port, server) as hop:
            return await first_trouble(sink_for(f"https://127.0.0.1:{hop.port}", tls=tls), caplog)

    said = asyncio.run(scenario())
    assert expected in said, said
    assert "Traceback" not in caplog.text


def test_settings_that_cannot_work_stop_start_up_and_a_token_over_plain_http_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(HttpConfigError, match=r"cannot load TLS files \(ca_file='/nonexistent/ca\.pem'\)"):
        sink_for("https://cloud.example.com", tls=TlsSettings(ca_file="/nonexistent/ca.pem"))
    with pytest.raises(HttpConfigError, match="must be a base URL"):
        sink_for("ftp://cloud.example.com")
    with pytest.raises(HttpConfigError, match="tls is set but the url is plain http"):
        sink_for("http://cloud.example.com", tls=TlsSettings())
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for quiet in ("http://127.0.0.1:8080", "http://localhost:8080/api", "https://cloud.example.com"):
        sink_for(quiet)
    sink_for("http://10.1.2.3:8080", token=None)
    assert not caplog.records
    sink_for("http://cloud.example.com:8080")
    assert [r.getMessage() for r in caplog.records] == [
        "HTTP sink 'http' (http://cloud.example.com:8080) sends its bearer token over plain http to "
        "cloud.example.com: anyone on the path can read it and send in this gateway's name. Use an https:// url."
    ]


# -- the whole agent -------------------------------------------------------------------------------------


HTTP_SINK = """\
- type: http
  id: cloud
  url: {url}
  token: ${{file:{token_file}}}
  timeout_s: 2
  reconnect_initial_s: 0.2
  reconnect_max_s: 1
  batch: {{max_records: 500, max_delay_ms: 100}}
"""


class Bench:
    """The factory simulator, a receiver and an agent config with an HTTP sink to it (token from a file)."""

    def __init__(self, tmp_path: Path, cloud: CloudReceiver, opc_port: int, token: str, url: str = "") -> None:
        self.tmp = tmp_path
        self.cloud = cloud
        self.data_dir = tmp_path / "data"
        self.token_file = tmp_path / "cloud-token"
        self.set_token(token)
        self.config = tmp_path / "agent.yaml"
        sink = HTTP_SINK.format(url=url or cloud.url, token_file=self.token_file)
        self.config.write_text(factory_config(opc_port=opc_port, data_dir=self.data_dir, sinks=sink, machines=1))
        self.runs = 0

    def set_token(self, token: str) -> None:
        self.token_file.write_text(token + "\n")
        self.token_file.chmod(0o600)

    def agent(self) -> AgentProcess:
        self.runs += 1
        return AgentProcess(self.config, self.tmp / f"agent-{self.runs}.log")  # started by `with`

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "agent.cli", *args, "-c", str(self.config)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    def buffer(self) -> tuple[str, int, int]:
        """(origin, last seq handed out, records still pending) of the agent's buffer; the agent is stopped."""
        with Buffer(self.data_dir / "buffer-cloud.db", quota_bytes=BIG) as buf:
            return buf.origin, buf.last_seq, sum(buf.pending().values())

    def count(self) -> int:
        with contextlib.closing(sqlite3.connect(self.cloud.db)) as c:
            return int(c.execute("SELECT count(*) FROM records").fetchone()[0])


def grows(bench: Bench, by: int = 50, timeout: float = 20) -> None:
    start = bench.count()
    wait_until(f"{by} more records stored", lambda: bench.count() >= start + by, timeout)


def test_the_agent_stores_every_record_exactly_once_through_a_misbehaving_receiver_and_replays_what_it_refused(
    tmp_path: Path,
) -> None:
    with (
        CloudReceiver(tmp_path / "cloud", tokens=[TOKEN]) as cloud,
        Hop(cloud.port) as hop,
        FactoryThread(port=free_port(), period=0.1, machines=1) as factory,
    ):
        bench = Bench(tmp_path, cloud, factory.port, TOKEN, url=f"http://127.0.0.1:{hop.port}")
        with bench.agent() as agent:
            grows(bench, 100, 60)
            cloud.set_faults(delay_ms=300)  # slow, within the timeout
            grows(bench)
            cloud.set_faults()
            mark = len(cloud.log())
            hop.eating = True  # stored, but the answers are lost: unconfirmed, so sent again
            wait_until("requests whose answers were lost", lambda: len(requests(cloud, mark)) >= 2, 20)
            hop.eating = False
            resent = re.compile(r" [1-9]\d* duplicates")
            wait_until("a resend of what was stored", lambda: resent.search(cloud.log()[mark:]), 30)
            cloud.set_faults(fail_next=3)
            grows(bench)
            mark = len(cloud.log())
            cloud.set_faults(throttle_next=1, retry_after=3)
            at = wait_until("a 429", lambda: [t for t, w in requests(cloud, mark) if w.endswith("throttle")], 20)[0]
            wait_until("a POST after Retry-After", lambda: [t for t in hop.posts if t > at + 2.9], 20)
            # What was sent before the agent read the 429 is no fault; then nothing until Retry-After passed.
            early = [round(t - at, 2) for t in hop.posts if at + 1.0 < t < at + 2.95]
            assert not early, f"POSTs sent before Retry-After (3 s) passed, s after the 429: {early}"
            mark = len(cloud.log())
            cloud.set_faults(drop_next=3)
            wait_until("dropped connections", lambda: cloud.log()[mark:].count("dropping the connection") == 3, 20)
            grows(bench)
            cloud.set_faults(reject_elements=["SpindleSpeed"], reject_reason="SpindleSpeed quarantined")
            wait_until("refused records", lambda: sum(map(int, re.findall(r" (\d+) rejected", cloud.log()))) >= 5, 20)
            cloud.set_faults()
            grows(bench)
            assert agent.stop() == 0, agent.log()[-3000:]
            first_log = agent.log()
        origin, last, pending = bench.buffer()
        assert pending == 0, "drained on SIGTERM"
        listed = bench.cli("dead-letter", "list", "--limit", "100000", "--json")
        letters = [orjson.loads(line) for line in listed.splitlines()]
        assert letters and {d["reason"] for d in letters} == {"SpindleSpeed quarantined"}
        assert {d["record"]["path"] for d in letters} == {"SpindleSpeed"}
        refused = {d["recordId"] for d in letters}
        ids = stored(cloud, origin)
        assert len(ids) == len(set(ids))
        assert set(ids) | refused == {wire.record_id(origin, n) for n in range(1, last + 1)}, "every record, once"
        assert not set(ids) & refused

        assert "Traceback" not in first_log and "component-failed" not in first_log

        shown = bench.cli("dead-letter", "list")
        assert f"{min(len(letters), 50)} shown of {len(letters)} dead letters" in shown
        assert "cloud/cnc01/data" in shown and ": SpindleSpeed quarantined" in shown, shown

        # The refusal is over: the dead letters go back into the buffer and arrive under new ids.
        assert f"{len(letters)} records back in the buffer" in bench.cli("dead-letter", "replay")
        times = {d["record"]["sourceTime"] for d in letters}

        def replayed() -> bool:
            with contextlib.closing(sqlite3.connect(cloud.db)) as c:
                found = c.execute("SELECT id, record FROM records WHERE path = 'SpindleSpeed'").fetchall()
            return times <= {orjson.loads(r)["sourceTime"] for i, r in found if int(i.rsplit("-", 1)[1]) > last}

        with bench.agent() as agent:
            wait_until("the replayed records stored under new ids", replayed, 30)
            assert agent.stop() == 0
        assert "0 shown of 0 dead letters" in bench.cli("dead-letter", "list")
        origin_after, last_after, pending_after = bench.buffer()
        assert origin_after == origin and pending_after == 0
        ids = stored(cloud, origin)
        assert set(ids) | refused == {wire.record_id(origin, n) for n in range(1, last_after + 1)}
        assert not set(ids) & refused, "a refused record went out under its old id"


def test_a_refused_token_costs_one_log_line_and_no_record_until_it_is_fixed(tmp_path: Path) -> None:
    with (
        CloudReceiver(tmp_path / "cloud", tokens=[TOKEN]) as cloud,
        FactoryThread(port=free_port(), period=0.1, machines=1) as factory,
    ):
        bench = Bench(tmp_path, cloud, factory.port, WRONG)
        with bench.agent() as agent:
            wait_until("refusals", lambda: cloud.log().count("the bearer token is not accepted") >= 3, 30)
            assert agent.stop() == 0, agent.log()[-3000:]
        origin, last, pending = bench.buffer()
        assert bench.count() == 0 and pending == last > 0, "nothing delivered, nothing lost"
        errors = [r for r in agent.log_records() if r.get("level") == "error"]
        assert len(errors) == 1 and "refused the bearer token" in errors[0]["msg"], errors
        assert WRONG not in agent.log() and TOKEN not in agent.log()

        bench.set_token(TOKEN)
        with bench.agent() as agent:
            wait_until("the backlog delivered", lambda: set(range(1, last + 1)) <= seqs(cloud, origin), 30)
            assert agent.stop() == 0
        assert not [r for r in agent.log_records() if r.get("level") == "error"]
        assert set(stored(cloud, origin)) == {wire.record_id(origin, n) for n in range(1, bench.buffer()[1] + 1)}


def seqs(cloud: CloudReceiver, origin: str) -> set[int]:
    return {int(i.rsplit("-", 1)[1]) for i in stored(cloud, origin)}


def test_the_config_builds_the_sink_and_keeps_its_token_a_secret(tmp_path: Path) -> None:
    from agent.config import ConfigError, parse, secrets
    from agent.wiring import make_sink

    text = factory_config(opc_port=4840, data_dir=tmp_path / "data", machines=1, sinks=f"""\
- type: http
  url: https://cloud.example.com/api/
  token: "{TOKEN}"
  tls: {{key_password: k3y-Pa55}}
  gzip: false
  timeout_s: 3.5
  max_body_bytes: 100000
""")  # fmt: skip
    cfg = parse(text)
    sink, batching = make_sink(cfg, cfg.sinks[0])
    assert isinstance(sink, HttpSink) and sink.name == "http"
    assert sink._endpoint.ingest == "https://cloud.example.com/api/v1/ingest"
    assert sink.max_message_bytes == 100_000 and batching.send_timeout == 3.5
    assert sink._settings.gzip is False and sink._settings.timeout == 3.5
    assert secrets(cfg) == [TOKEN, "k3y-Pa55"]
    assert TOKEN not in repr(cfg) and TOKEN not in repr(sink)
    for wrong, message in [
        ("token: 4815162342", "token must be text, not a YAML int (the value is a secret and not shown)"),
        ("url: ftp://cloud.example.com/", "should match pattern"),
        ("url: http://cloud.example.com/", "tls is set but the url is plain http://"),
    ]:
        key = wrong.split(":")[0]
        broken = re.sub(rf"  {key}: .*", f"  {wrong}", text, count=1)
        with pytest.raises(ConfigError) as failed:
            parse(broken)
        assert message in str(failed.value) and "4815162342" not in str(failed.value), str(failed.value)
