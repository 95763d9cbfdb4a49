"""A real mosquitto for tests (simulators/mosquitto.py), and a subscriber that waits on conditions instead of sleeping.

with MosquittoBroker(tmp_path / "broker") as broker, Subscriber(port=broker.port, topic="a/#") as sub:
    ...
    assert sub.wait_for(lambda msgs: len(msgs) == 3, timeout=10)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from simulators import mosquitto
from tests.helpers import unavailable


class MosquittoBroker(mosquitto.MosquittoBroker):
    """The simulators' broker; without mosquitto installed the test is skipped (failed under CI=true)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(*args, **kwargs)
        except mosquitto.MosquittoUnavailable as e:
            unavailable(str(e))


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
    ) -> None:
        self.port = port
        self.topic = topic
        self.timeout = timeout
        self._cond = threading.Condition()
        self._messages: list[tuple[str, bytes, bool]] = []
        self._subscribed = False
        self._client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self._client.reconnect_delay_set(1, 2)
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
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

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
