"""A private mosquitto on 127.0.0.1 for tests, benchmarks and demos: start, stop, kill, suspend, restart.

with MosquittoBroker(tmp_path / "broker") as broker:
    ... broker.port ...
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from simulators.ports import free_port
from simulators.procs import stop_process

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
_CHECK_S = 0.02  # a waiting Subscriber checks its condition at most this often


class MosquittoUnavailable(RuntimeError):
    """The mosquitto binary is not installed."""


def mosquitto_binary() -> str:
    """The mosquitto executable; raises MosquittoUnavailable saying how to install it."""
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if found is None:
        raise MosquittoUnavailable("mosquitto not found: install it with apt-get install -y mosquitto")
    return found


class MosquittoBroker:
    """mosquitto on 127.0.0.1, restartable on the same port with its persistence kept.

    `extra_conf` lines go right after the listener line, so listener options (certfile, ...)
    apply to it; `allow_anonymous=False` with a `password_file` line makes an authenticating broker.
    """

    def __init__(
        self,
        tmp_path: Path,
        port: int | None = None,
        persistence: bool = True,
        *,
        allow_anonymous: bool = True,
        extra_conf: Sequence[str] = (),
    ) -> None:
        self.binary = mosquitto_binary()
        self.dir = tmp_path
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.conf = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            *extra_conf,
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            # Started as root, mosquitto would drop to user "mosquitto" and lose access to tmp_path.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            # The default (1000 per client) would silently drop what a slow test subscriber missed.
            "max_queued_messages 1000000",
        ]
        if persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.dir}/",
                # Saved on SIGTERM anyway; the interval bounds what a SIGKILL loses.
                "autosave_interval 1",
            ]
        self.conf.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        if self.running:
            return self
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._accepts_connections():
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"mosquitto did not listen on {self.port} within {_START_TIMEOUT} s:\n{self.log()}")
            # The pause between probes, cut short if mosquitto exits.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=0.02)
        return self

    def stop(self) -> None:
        """SIGTERM and wait, so mosquitto saves its persistence and frees the port."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a suspended broker would never act on SIGTERM
        stop_process(proc, _STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL: a broker crash. Clients see their connections reset."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def suspend(self) -> None:
        """SIGSTOP: connections stay open but nothing is acknowledged until `resume()` or `kill()`."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False


class Subscriber:
    """A paho client with a persistent session (fixed client id, clean_session=False) subscribed
    at QoS 1, so what is published while it reconnects (e.g. across a broker restart) still
    reaches it. Collects messages on paho's thread; tests wait with `wait_for`."""

    def __init__(
        self,
        *,
        port: int,
        topic: str,
        client_id: str = "test-subscriber",
        timeout: float = 10.0,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`username`/`password` and `tls` (a context with the CA and, for mutual TLS, a client
        certificate) for a broker that asks for them."""
        self.port = port
        self.topic = topic
        self.timeout = timeout
        self._cond = threading.Condition()
        self._messages: list[tuple[str, bytes, bool]] = []
        self._subscribed = False
        self._client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self._client.reconnect_delay_set(1, 2)
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls is not None:
            self._client.tls_set_context(tls)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def __enter__(self) -> Subscriber:
        self._client.connect_async("127.0.0.1", self.port)
        self._client.loop_start()
        if not self._wait(lambda: self._subscribed, self.timeout):
            self.__exit__()
            raise TimeoutError(f"subscriber did not subscribe to {self.topic!r} on port {self.port}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def messages(self) -> list[tuple[str, bytes]]:
        """(topic, payload) of everything received so far, in arrival order."""
        with self._cond:
            return [(t, p) for t, p, _ in self._messages]

    def retained(self) -> list[tuple[str, bytes]]:
        """Only the messages the broker delivered as retained (stored before we subscribed)."""
        with self._cond:
            return [(t, p) for t, p, r in self._messages if r]

    def payloads(self, topic: str) -> list[bytes]:
        with self._cond:
            return [p for t, p, _ in self._messages if t == topic]

    def wait_for(self, predicate: Callable[[list[tuple[str, bytes]]], bool], timeout: float) -> bool:
        """Wait until `predicate(messages())` holds; False if it still does not after `timeout` s."""
        return self._wait(lambda: predicate([(t, p) for t, p, _ in self._messages]), timeout)

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the PUBACK, e.g. a sentinel that orders later checks."""
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"subscriber could not publish to {topic!r}: {info.rc}")
        info.wait_for_publish(self.timeout)

    def _wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Check `predicate` at once, then after each new message, but at most every `_CHECK_S`: checked
        at every message of a burst of thousands (a replayed session) it would cost quadratic time and
        hold the lock that paho's thread needs to take the next message."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if predicate():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._cond.wait(remaining):
                    return bool(predicate())
            time.sleep(min(_CHECK_S, max(0.0, deadline - time.monotonic())))

    def _on_connect(
        self, client: Client, userdata: Any, flags: ConnectFlags, reason: ReasonCode, props: Properties | None
    ) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(
        self, client: Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Properties | None
    ) -> None:
        with self._cond:
            self._subscribed = True
            self._cond.notify_all()

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        with self._cond:
            self._messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()
