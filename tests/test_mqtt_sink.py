"""MqttSink against a real mosquitto on 127.0.0.1: PUBACK-driven results, outages, status, auth, TLS."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.backoff import Backoff
from simulators.ports import free_port
from tests.helpers import unavailable
from tests.mqtt_broker import MosquittoBroker, Subscriber
from tests.tlsfiles import Ca, Issued
from uploader.mqtt import MqttConfigError, MqttSettings, MqttSink, TlsSettings, status_topic
from uploader.sink import Message

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(60)]

T = TypeVar("T")
LOGGER = "uploader.mqtt"
SITE = "gw1"
STATUS = status_topic(MqttSettings(host="-", client_id="-", topic_prefix="edge", site=SITE))
ONLINE = b'{"state":"online"}'
OFFLINE = b'{"state":"offline"}'


def run(scenario: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(scenario)


def settings(port: int, **kw: Any) -> MqttSettings:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "client_id": "sink-under-test",
        "topic_prefix": "edge",
        "site": SITE,
    }
    return MqttSettings(**(base | kw))


def sink_for(s: MqttSettings) -> MqttSink:
    return MqttSink(s, delays=Backoff(initial=0.1, maximum=0.5).delays)


def batch(n: int, size: int = 1024, topic: str = "data/t") -> list[Message]:
    return [Message(topic, i.to_bytes(4, "big") + bytes([i % 251]) * (size - 4)) for i in range(n)]


async def until(check: Callable[[], bool], timeout: float) -> bool:
    """For conditions that offer nothing to wait on (log records); everything else waits on events."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def received(sub: Subscriber, predicate: Callable[[list[tuple[str, bytes]]], bool], timeout: float) -> bool:
    """Subscriber.wait_for blocks; off the loop so the sink keeps running meanwhile."""
    return await asyncio.to_thread(sub.wait_for, predicate, timeout)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path / "broker") as b:
        yield b


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_send_confirms_every_message_at_qos1_and_payloads_arrive_exactly(
    broker: MosquittoBroker, protocol: str
) -> None:
    messages = [*batch(200), Message("data/big", bytes(range(256)) * 256), Message("data/empty", b"")]

    async def scenario() -> list[bool]:
        sink = sink_for(settings(broker.port, protocol=protocol))
        await sink.start()
        try:
            assert await sink.wait_connected(10)
            assert sink.connected
            return await sink.send(messages, timeout=10)
        finally:
            await sink.stop()

    with Subscriber(port=broker.port, topic="data/#") as sub:
        assert run(scenario()) == [True] * len(messages)
        assert sub.wait_for(lambda got: len(got) >= len(messages), timeout=10)
        assert sub.messages() == [(m.topic, m.payload) for m in messages]


def test_a_window_above_the_brokers_receive_maximum_is_shrunk_on_a_clean_reconnect(
    broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def scenario() -> None:
        # mosquitto announces Receive Maximum 20 but does not enforce it; HiveMQ (10) does.
        sink = sink_for(settings(broker.port, protocol="5", max_inflight=100, announce_status=True))
        await sink.start()
        try:
            assert await sink.wait_connected(10)
            assert await sink.send(batch(500), timeout=10) == [True] * 500
        finally:
            await sink.stop()

    with Subscriber(port=broker.port, topic=STATUS) as sub:
        run(scenario())
        sub.publish(STATUS, b"sentinel")
        assert sub.wait_for(lambda got: (STATUS, b"sentinel") in got, timeout=10)
        assert sub.payloads(STATUS) == [ONLINE, OFFLINE, b"sentinel"], "the reconnect must not trigger the last will"
    assert "at most 20 messages in flight, max_inflight is 100; reconnecting with 20" in caplog.text


def test_broker_down_at_start_send_fails_fast_then_sink_connects_by_itself(tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path / "broker", port=free_port())

    async def scenario() -> None:
        sink = sink_for(settings(broker.port))
        await sink.start()
        try:
            started = time.monotonic()
            assert await sink.send(batch(10), timeout=30) == [False] * 10
            assert time.monotonic() - started < 5, "while disconnected, send answers at once, not at its timeout"
            assert not sink.connected
            await asyncio.to_thread(broker.start)
            assert await sink.wait_connected(10)
            assert await sink.send(batch(10), timeout=5) == [True] * 10
        finally:
            await sink.stop()

    try:
        run(scenario())
    finally:
        broker.stop()


def test_broker_crash_completes_pending_sends_false_before_the_timeout_then_sending_resumes(
    broker: MosquittoBroker,
) -> None:
    async def scenario() -> None:
        sink = sink_for(settings(broker.port))
        await sink.start()
        try:
            assert await sink.wait_connected(10)
            broker.suspend()  # keeps the connection open but acknowledges nothing
            started = time.monotonic()
            sending = asyncio.create_task(sink.send(batch(100), timeout=30))
            await asyncio.sleep(0)  # lets send() publish everything and start waiting for PUBACKs
            broker.kill()
            assert await sending == [False] * 100
            assert time.monotonic() - started < 5
            assert not sink.connected
            await asyncio.to_thread(broker.start)
            assert await sink.wait_connected(10)
            assert await sink.send(batch(100), timeout=10) == [True] * 100
        finally:
            await sink.stop()

    run(scenario())


def test_broker_restart_mid_stream_loses_nothing_once_failures_are_resent(broker: MosquittoBroker) -> None:
    messages = batch(10_000)
    expected = {(m.topic, m.payload) for m in messages}

    async def scenario(sub: Subscriber) -> None:
        sink = sink_for(settings(broker.port))
        await sink.start()
        try:
            assert await sink.wait_connected(10)
            sending = asyncio.create_task(sink.send(messages, timeout=30))
            assert await received(sub, lambda got: len(got) >= 300, timeout=10)
            started = time.monotonic()
            await asyncio.to_thread(broker.stop)
            results = await sending
            assert time.monotonic() - started < 10
            assert not all(results), "the broker stopped mid-stream: some sends cannot have been acknowledged"
            await asyncio.to_thread(broker.start)
            assert await sink.wait_connected(10)
            # What the runner does: resend whatever was not confirmed.
            unconfirmed = [m for m, ok in zip(messages, results, strict=True) if not ok]
            deadline = time.monotonic() + 30
            while unconfirmed and time.monotonic() < deadline:
                results = await sink.send(unconfirmed, timeout=10)
                unconfirmed = [m for m, ok in zip(unconfirmed, results, strict=True) if not ok]
            assert not unconfirmed
        finally:
            await sink.stop()

    with Subscriber(port=broker.port, topic="data/#") as sub:
        run(scenario(sub))
        # The subscriber reconnects (1-2 s) and its persistent session is replayed: on a loaded machine a
        # 10,000-message replay can take a while; the deadline is generous, the wait ends as soon as all arrived.
        arrived = sub.wait_for(lambda got: expected <= set(got), timeout=60)
        missing = expected - set(sub.messages())
        assert arrived, f"{len(missing)} of {len(expected)} never arrived, e.g. {sorted(missing)[:3]}"


def test_without_puback_send_returns_false_at_its_timeout_and_late_pubacks_are_ignored(
    broker: MosquittoBroker,
) -> None:
    async def scenario() -> None:
        sink = sink_for(settings(broker.port))
        await sink.start()
        try:
            assert await sink.wait_connected(10)
            broker.suspend()
            started = time.monotonic()
            assert await sink.send(batch(5), timeout=0.5) == [False] * 5
            assert 0.5 <= time.monotonic() - started < 10, "waits its timeout, and not much more"
            broker.resume()  # the broker now acknowledges the first five, for mids nobody waits on
            assert await sink.send(batch(5), timeout=10) == [True] * 5
            assert sink._pending == {}
        finally:
            broker.resume()
            await sink.stop()

    run(scenario())


def test_cancelled_send_raises_cancelled_error_and_leaves_nothing_pending(broker: MosquittoBroker) -> None:
    async def scenario() -> None:
        sink = sink_for(settings(broker.port))
        await sink.start()
        try:
            assert await sink.wait_connected(10)
            broker.suspend()
            sending = asyncio.create_task(sink.send(batch(10), timeout=30))
            await asyncio.sleep(0)
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending
            assert sink._pending == {}
        finally:
            broker.resume()
            await sink.stop()

    run(scenario())


def test_online_status_is_retained_and_a_clean_stop_publishes_offline_without_the_will(
    broker: MosquittoBroker,
) -> None:
    async def scenario(sub: Subscriber) -> None:
        sink = sink_for(settings(broker.port, announce_status=True))
        await sink.start()
        try:
            assert await sink.wait_connected(10)
            assert await received(sub, lambda got: (STATUS, ONLINE) in got, timeout=10)
            with Subscriber(port=broker.port, topic=STATUS, client_id="late-subscriber") as late:
                assert late.wait_for(lambda got: bool(got), timeout=10)
                assert late.retained() == [(STATUS, ONLINE)]
        finally:
            await sink.stop()

    with Subscriber(port=broker.port, topic=STATUS) as sub:
        run(scenario(sub))
        # A sentinel published after stop() returned is ordered after anything the broker would
        # send for that connection, a last will included.
        sub.publish(STATUS, b"sentinel")
        assert sub.wait_for(lambda got: (STATUS, b"sentinel") in got, timeout=10)
        assert sub.payloads(STATUS) == [ONLINE, OFFLINE, b"sentinel"]


def test_last_will_offline_is_delivered_and_retained_when_the_process_dies(broker: MosquittoBroker) -> None:
    script = (
        "import asyncio, sys\n"
        "from uploader.mqtt import MqttSettings, MqttSink\n"
        "async def main() -> None:\n"
        "    from agent.backoff import Backoff\n"
        "    s = MqttSettings(host='127.0.0.1', port=int(sys.argv[1]), client_id='doomed', topic_prefix='edge',\n"
        "                     site=sys.argv[2], announce_status=True)\n"
        "    await MqttSink(s, delays=Backoff().delays).start()\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    with Subscriber(port=broker.port, topic=STATUS) as sub:
        proc = subprocess.Popen([sys.executable, "-c", script, str(broker.port), SITE], stderr=subprocess.PIPE)
        try:
            assert sub.wait_for(lambda got: (STATUS, ONLINE) in got, timeout=15), "the sink never came online"
        finally:
            proc.kill()
            _, stderr = proc.communicate(timeout=10)
        assert sub.wait_for(lambda got: (STATUS, OFFLINE) in got, timeout=10), stderr.decode()
    with Subscriber(port=broker.port, topic=STATUS, client_id="late-subscriber") as late:
        assert late.wait_for(lambda got: bool(got), timeout=10)
        assert late.retained() == [(STATUS, OFFLINE)]


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        unavailable("mosquitto_passwd not found: install it with apt-get install -y mosquitto")
    password_file = tmp_path / "passwd"
    subprocess.run([passwd, "-b", "-c", str(password_file), "gateway", "s3cret-Pa55"], check=True)
    broker = MosquittoBroker(tmp_path / "broker", allow_anonymous=False, extra_conf=[f"password_file {password_file}"])
    with broker:
        yield broker


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_wrong_password_is_logged_once_clearly_without_the_password_and_retried(
    auth_broker: MosquittoBroker, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    wrong = settings(auth_broker.port, protocol=protocol, username="gateway", password="wrong-Pa55word")
    right = settings(auth_broker.port, protocol=protocol, username="gateway", password="s3cret-Pa55")

    def errors() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.levelno >= logging.ERROR]

    def retries() -> int:
        return sum("still failing" in r.getMessage() for r in caplog.records)

    async def scenario() -> None:
        sink = sink_for(wrong)
        await sink.start()
        try:
            assert await until(lambda: bool(errors()) and retries() >= 2, timeout=15)
            assert not sink.connected
            assert await sink.send(batch(3), timeout=1) == [False] * 3
        finally:
            await sink.stop()
        sink = sink_for(right)
        await sink.start()
        try:
            assert await sink.wait_connected(10)
            assert await sink.send(batch(3), timeout=5) == [True] * 3
        finally:
            await sink.stop()

    run(scenario())
    [error] = errors()
    message = error.getMessage()
    assert f"127.0.0.1:{auth_broker.port}" in message
    assert "refused" in message and "reason code" in message
    for secret in ("wrong-Pa55word", "s3cret-Pa55"):
        assert secret not in caplog.text
        assert secret not in repr(wrong) + repr(right) + repr(sink_for(wrong))


def make_ca_and_server_cert(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate it signed, for 127.0.0.1."""
    binary = shutil.which("openssl")
    if binary is None:
        unavailable("openssl not found")
    ca_key, ca_crt = directory / f"{name}-ca.key", directory / f"{name}-ca.crt"
    key, csr, crt = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    ext = directory / f"{name}.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1\n")

    def openssl(*args: str | Path) -> None:
        subprocess.run([binary, *map(str, args)], check=True, capture_output=True)

    new_key = ("-newkey", "rsa:2048", "-nodes")
    openssl("req", "-x509", *new_key, "-days", "2", "-subj", f"/CN={name} CA", "-keyout", ca_key, "-out", ca_crt)
    openssl("req", *new_key, "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr)
    signed_by_ca = ("-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-days", "2", "-extfile", ext)
    openssl("x509", "-req", *signed_by_ca, "-in", csr, "-out", crt)
    return ca_crt, crt, key


# paho 2.2 does not close its socket when the TLS handshake fails; it is closed when collected.
@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
def test_tls_connects_with_the_right_ca_and_reports_verification_failure_with_another(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    ca, crt, key = make_ca_and_server_cert(tmp_path, "good")
    other_ca, _, _ = make_ca_and_server_cert(tmp_path, "other")
    tls_conf = [f"cafile {ca}", f"certfile {crt}", f"keyfile {key}"]

    async def scenario(port: int) -> None:
        sink = sink_for(settings(port, tls=TlsSettings(ca_file=str(ca))))
        await sink.start()
        try:
            assert await sink.wait_connected(10)
            assert await sink.send(batch(20, size=64 * 1024), timeout=10) == [True] * 20
        finally:
            await sink.stop()
        sink = sink_for(settings(port, tls=TlsSettings(ca_file=str(other_ca))))
        await sink.start()
        try:
            assert await until(lambda: "not signed by a CA we trust" in caplog.text, timeout=10)
            assert not sink.connected
        finally:
            await sink.stop()

    with MosquittoBroker(tmp_path / "broker", extra_conf=tls_conf) as broker:
        run(scenario(broker.port))


def test_unreadable_tls_file_is_a_config_error_naming_the_broker_and_the_file() -> None:
    bad = settings(8883, tls=TlsSettings(ca_file="/nonexistent/ca.crt"))
    with pytest.raises(MqttConfigError, match=r"127\.0\.0\.1:8883.*/nonexistent/ca\.crt"):
        sink_for(bad)


def test_a_silent_broker_costs_one_warning_and_no_tracebacks(tmp_path: Path, broker: MosquittoBroker) -> None:
    """A broker that accepts TCP and never answers (suspended): paho's abandoned clients used to print
    "Exception ignored in Client.__del__" tracebacks at every retry."""
    script = (
        "import asyncio, itertools, logging, sys\n"
        "from uploader.mqtt import MqttSettings, MqttSink\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "async def main() -> None:\n"
        "    s = MqttSettings(host='127.0.0.1', port=int(sys.argv[1]), client_id='c', connect_timeout=0.5)\n"
        "    sink = MqttSink(s, delays=lambda: itertools.repeat(0.1))\n"
        "    task = asyncio.create_task(sink.run())\n"
        "    await asyncio.sleep(4)\n"
        "    task.cancel()\n"
        "    await asyncio.gather(task, return_exceptions=True)\n"
        "    await sink.stop()\n"
        "asyncio.run(main())\n"
    )
    broker.suspend()
    try:
        done = subprocess.run([sys.executable, "-c", script, str(broker.port)], capture_output=True, timeout=60)
    finally:
        broker.resume()
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert err.count("no connection within 0.5 s") == 1, err
    assert "Traceback" not in err and "Exception ignored" not in err, err


# --- TLS: what goes wrong in the field, said so ---------------------------------------------------


def tls_broker(tmp_path: Path, ca: Ca, server: Issued, *, require_client: bool = False) -> MosquittoBroker:
    conf = [f"cafile {ca.cert}", f"certfile {server.cert}", f"keyfile {server.key}"]
    if require_client:
        conf += ["require_certificate true"]
    return MosquittoBroker(tmp_path / "broker", extra_conf=conf)


async def first_failure(sink: MqttSink, caplog: pytest.LogCaptureFixture, timeout: float = 15) -> str:
    """The sink's first logged connection failure (it keeps retrying in the background)."""
    await sink.start()
    try:
        assert await until(
            lambda: any(r.name == LOGGER and r.levelno >= logging.WARNING for r in caplog.records), timeout
        )
        return next(r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING)
    finally:
        await sink.stop()


@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
def test_mutual_tls_connects_with_a_client_certificate_and_says_when_one_is_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = Ca(tmp_path / "pki")
    with tls_broker(tmp_path, ca, ca.issue("broker"), require_client=True) as broker:
        client = ca.issue("gateway", host=None, client=True, passphrase="k3y-Pa55")
        with_cert = TlsSettings(ca_file=str(ca.cert), cert_file=str(client.cert), key_file=str(client.key),
                                key_password="k3y-Pa55")  # fmt: skip

        async def connects() -> None:
            sink = sink_for(settings(broker.port, tls=with_cert))
            await sink.start()
            try:
                assert await sink.wait_connected(10)
                assert await sink.send(batch(5), timeout=10) == [True] * 5
            finally:
                await sink.stop()

        run(connects())
        message = run(first_failure(sink_for(settings(broker.port, tls=TlsSettings(ca_file=str(ca.cert)))), caplog))
    assert "client certificate" in message and "tls.cert_file" in message, message
    assert "k3y-Pa55" not in caplog.text


@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("expired", "the broker's certificate has expired"),
        ("another host", "is not for 127.0.0.1"),
        ("unknown CA", "not signed by a CA we trust"),
    ],
)
def test_a_broker_certificate_that_cannot_be_trusted_is_refused_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str, expected: str
) -> None:
    ca = Ca(tmp_path / "pki")
    server = {
        "expired": lambda: ca.issue("broker", expired=True),
        "another host": lambda: ca.issue("broker", host="10.9.8.7"),
        "unknown CA": lambda: ca.issue("broker"),
    }[case]()
    trusted = Ca(tmp_path / "other", "other").cert if case == "unknown CA" else ca.cert
    with tls_broker(tmp_path, ca, server) as broker:
        message = run(first_failure(sink_for(settings(broker.port, tls=TlsSettings(ca_file=str(trusted)))), caplog))
    assert expected in message, message
    assert "Traceback" not in caplog.text


def test_an_encrypted_key_without_its_passphrase_is_a_config_error_not_a_prompt(tmp_path: Path) -> None:
    ca = Ca(tmp_path / "pki")
    client = ca.issue("gateway", host=None, client=True, passphrase="k3y-Pa55")
    tls = TlsSettings(ca_file=str(ca.cert), cert_file=str(client.cert), key_file=str(client.key))
    with pytest.raises(MqttConfigError, match=r"is encrypted; give its passphrase as tls\.key_password"):
        sink_for(settings(8883, tls=tls))
    wrong = TlsSettings(ca_file=str(ca.cert), cert_file=str(client.cert), key_file=str(client.key), key_password="no")
    with pytest.raises(MqttConfigError, match="cannot load TLS files") as failed:
        sink_for(settings(8883, tls=wrong))
    assert "k3y-Pa55" not in str(failed.value) and "'no'" not in str(failed.value)
