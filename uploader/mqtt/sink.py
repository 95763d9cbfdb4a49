"""MQTT sink: publishes at QoS 1 and reports True only for messages the broker PUBACKed.

Network I/O runs on the event loop's thread (bridge.py); connecting and reconnecting is this
module's own loop, with delays from the backoff the agent injects.

Invariants:
- Callbacks only complete futures. Pending futures are keyed by message id and removed by the
  send that created them, in `finally`.
- Each connection attempt gets a fresh paho client: whatever paho still queued for a dead
  connection is dropped with it, so an outage cannot grow paho's queue. The forwarder resends.
- While disconnected `send` returns all False at once; on disconnect every pending future
  completes False.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from uploader import wire
from uploader.mqtt.bridge import SocketBridge
from uploader.mqtt.settings import MqttSettings, data_topic, explain_tls, status_topic, tls_context
from uploader.sink import Message, Outcome, Rejected

_log = logging.getLogger("uploader.mqtt")

# paho's keepalive bookkeeping (PINGREQ, dead-broker detection) must be driven by us.
_MISC_INTERVAL = 1.0
_STOP_GRACE = 2.0
_MQTT5_RECEIVE_MAXIMUM = 65535  # what a CONNACK without the property means
# Refusals a broker gives when overloaded; every other refusal means our settings are wrong.
_TRANSIENT_REFUSALS = frozenset({0x88, 0x89, 0x97, 0x9F})
_KEEPALIVE_TIMEOUT = 0x8D  # the reason paho gives when its own keepalive check fails
OFFLINE = wire.agent_state("offline")
# PUBACK reason codes that sending again cannot change: not authorized, topic name invalid,
# packet too large, payload format invalid. (0x97 quota exceeded and 0x80/0x83 may pass.)
_FINAL_REFUSALS = frozenset({0x87, 0x90, 0x95, 0x99})


class MqttSink:
    """A `uploader.sink.Sink` for an MQTT 3.1.1 or 5 broker."""

    def __init__(self, settings: MqttSettings, *, name: str = "mqtt", delays: Callable[[], Iterator[float]]) -> None:
        """`delays` gives the waits between connection attempts (agent/backoff.py), fresh after each connect."""
        self.name = name
        self._settings = settings
        self._delays = delays
        self._where = f"MQTT sink {name!r} ({settings.host}:{settings.port})"
        self._tls = tls_context(settings.tls, self._where) if settings.tls is not None else None
        self._status_topic = status_topic(settings) if settings.announce_status else None
        self._state = wire.agent_state("online")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bridge: SocketBridge | None = None
        self._task: asyncio.Task[None] | None = None
        # State of the current connection attempt; callbacks from any other client are stale.
        self._client: Client | None = None
        self._connack: asyncio.Future[tuple[ReasonCode, int] | None] | None = None
        self._receive_maximum = _MQTT5_RECEIVE_MAXIMUM
        self._lost: asyncio.Future[str] | None = None
        self._up = asyncio.Event()
        self._pending: dict[int, asyncio.Future[Outcome]] = {}
        self._max_packet: int | None = settings.max_packet_bytes  # lowered by the broker's CONNACK

    def __repr__(self) -> str:
        return f"MqttSink(name={self.name!r}, {self._settings.host}:{self._settings.port}, connected={self.connected})"

    async def run(self) -> None:
        """Connect, and reconnect with backoff whenever the connection is lost, until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._bridge = SocketBridge(self._loop, lambda client: client is self._client)
        if self._client is not None:  # restarted after a failure: the old attempt is dead
            self._abandon(self._client)
        await self._keep_connected()

    async def start(self) -> None:
        """`run()` in a task of the sink's own (for use without a supervisor); `stop()` ends it."""
        if self._task is not None:
            raise RuntimeError(f"{self._where} already started")
        self._task = asyncio.create_task(self.run(), name=f"mqtt-sink-{self.name}")
        self._task.add_done_callback(self._run_ended)

    def topic(self, lane: str, key: str) -> str:
        return data_topic(self._settings, lane, key)

    def announce(self, state: str, down: Sequence[str] = ()) -> None:
        """Keep the agent's state on the retained status topic; published now if connected, else at connect."""
        payload = wire.agent_state(state, down)
        if payload == self._state:
            return
        self._state = payload
        if self._status_topic is not None and self._client is not None and self._up.is_set():
            self._client.publish(self._status_topic, payload, qos=1, retain=True)

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._up.wait()
        except TimeoutError:
            return False
        return True

    @property
    def max_message_bytes(self) -> int | None:
        """The broker's Maximum Packet Size (MQTT 5 CONNACK) or the configured limit, whichever is less."""
        return self._max_packet

    async def send(self, messages: Sequence[Message], *, timeout: float) -> list[Outcome]:
        """Publish at QoS 1; element i is True once message i is PUBACKed within `timeout`.

        With MQTT 5 a PUBACK may refuse: "not authorized", "topic name invalid", "packet too
        large" and "payload format invalid" are final (Rejected); any other failure code
        (e.g. "quota exceeded") leaves the message unconfirmed (False). MQTT 3.1.1 cannot refuse
        a publish: a broker that denies it (ACL) still acknowledges it, so the record is lost;
        the agent warns at start when 3.1.1 is configured.

        Raises ValueError for a topic paho rejects (empty, or with + or #): a configuration
        error, not an unreachable broker.
        """
        return await self._publish_and_wait(messages, retain=False, timeout=timeout)

    async def stop(self) -> None:
        """Publish the offline status, give in-flight messages a moment, disconnect cleanly
        (so the broker does not send the last will)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=_STOP_GRACE)
        client, lost = self._client, self._lost
        if client is not None and lost is not None and self._up.is_set():
            waiting: set[asyncio.Future[Any]] = {f for f in self._pending.values() if not f.done()}
            topic = self._status_topic
            if topic is not None:
                offline = [Message(topic, OFFLINE)]
                waiting.add(asyncio.ensure_future(self._publish_and_wait(offline, retain=True, timeout=_STOP_GRACE)))
            if waiting:
                await asyncio.wait(waiting, timeout=_STOP_GRACE)
            await self._disconnect(client, lost)
            _log.info("%s: disconnected", self._where)
        elif client is not None:
            self._abandon(client)

    # -- connection management -------------------------------------------------------------

    async def _keep_connected(self) -> None:
        delays = self._delays()
        # Log the first failure of an outage, each new refusal, and the recovery; retries at DEBUG.
        outage_logged = False
        refusal_logged: str | None = None
        down_since = time.monotonic()
        while True:
            failure, refused = await self._attempt()
            if failure is None:
                if outage_logged:
                    _log.info("%s: connected again after %.1f s", self._where, time.monotonic() - down_since)
                else:
                    _log.info("%s: connected", self._where)
                outage_logged, refusal_logged = False, None
                delays = self._delays()
                if self._status_topic is not None and self._client is not None:
                    # Not awaited: nobody needs to know when the online status was PUBACKed.
                    self._client.publish(self._status_topic, self._state, qos=1, retain=True)
                reason = await self._serve()
                down_since = time.monotonic()
                _log.warning("%s: connection lost: %s; reconnecting in the background", self._where, reason)
                outage_logged = True
            elif refused and failure != refusal_logged:
                _log.error("%s: %s; retrying with backoff", self._where, failure)
                outage_logged, refusal_logged = True, failure
            elif not outage_logged:
                _log.warning("%s: %s; retrying in the background", self._where, failure)
                outage_logged = True
            else:
                _log.debug("%s: still failing: %s", self._where, failure)
            await asyncio.sleep(next(delays))

    async def _attempt(self) -> tuple[str | None, bool]:
        """Connect once. Returns (None, False) when connected, else (why not, whether retrying
        soon is pointless because the broker refused these settings)."""
        loop = asyncio.get_running_loop()
        client = self._new_client()
        self._client = client
        connack: asyncio.Future[tuple[ReasonCode, int] | None] = loop.create_future()
        lost: asyncio.Future[str] = loop.create_future()
        self._connack, self._lost = connack, lost
        timeout = self._settings.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                await asyncio.to_thread(self._connect_blocking, client)
            async with asyncio.timeout(timeout):
                result = await connack
        except TimeoutError:
            self._abandon(client)
            return f"no connection within {timeout:g} s", False
        except OSError as exc:  # refused, unreachable, DNS, TLS verification
            self._abandon(client)
            explained = explain_tls(exc, self._settings.tls, self._settings.host)
            return f"cannot connect: {explained or exc}", explained is not None
        except BaseException:
            self._abandon(client)
            raise
        if result is None:
            self._abandon(client)
            why = "the broker closed the connection before CONNACK"
            tls = self._settings.tls
            if tls is not None and tls.cert_file is None:
                why += " (does it require a client certificate? set tls.cert_file and tls.key_file)"
            return why, False
        reason, receive_maximum = result
        if reason.is_failure:
            self._abandon(client)
            refused = (
                f"the broker refused the connection: {reason} (reason code {reason.value}). Check the username, "
                f"password, client id {self._settings.client_id!r} and the broker's ACL"
            )
            return refused, reason.value not in _TRANSIENT_REFUSALS
        if receive_maximum < client.max_inflight_messages:
            # paho ignores the v5 Receive Maximum and cannot shrink its window on an open
            # connection; a strict broker (HiveMQ allows 10) would disconnect us mid-batch.
            _log.warning(
                "%s: the broker accepts at most %d messages in flight, max_inflight is %d; reconnecting with %d",
                self._where,
                receive_maximum,
                client.max_inflight_messages,
                receive_maximum,
            )
            self._receive_maximum = receive_maximum
            await self._disconnect(client, lost)
            return await self._attempt()
        return None, False

    async def _disconnect(self, client: Client, lost: asyncio.Future[str]) -> None:
        """DISCONNECT, so the broker discards the last will, and wait briefly for the close."""
        client.disconnect()
        await asyncio.wait({lost}, timeout=_STOP_GRACE)
        self._abandon(client)

    def _connect_blocking(self, client: Client) -> None:
        s = self._settings
        if s.protocol == "5":
            # The sink only publishes and the runner redelivers from its own buffer, so a broker
            # session would only carry stale state: start clean, expire at disconnect.
            client.connect(s.host, s.port, s.keepalive, clean_start=True)
        else:
            client.connect(s.host, s.port, s.keepalive)

    async def _serve(self) -> str:
        """Drive paho's keepalive until the connection is lost; returns why it was."""
        client, lost = self._client, self._lost
        assert client is not None and lost is not None
        while not lost.done():
            await asyncio.wait({lost}, timeout=_MISC_INTERVAL)
            if not lost.done():
                client.loop_misc()
        return lost.result()

    def _new_client(self) -> Client:
        s = self._settings
        v5 = s.protocol == "5"
        client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            clean_session=None if v5 else True,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        )
        client.connect_timeout = s.connect_timeout
        client.max_inflight_messages_set(min(s.max_inflight, self._receive_maximum))
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        if self._status_topic is not None:
            client.will_set(self._status_topic, OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        assert self._bridge is not None, "start() first"
        self._bridge.install(client)
        return client

    def _abandon(self, client: Client) -> None:
        """Forget `client` without a DISCONNECT: its socket (if any) is unregistered and closed."""
        if client is self._client:
            self._client = None
            self._up.clear()
            self._fail_pending()
        if self._bridge is not None:
            self._bridge.close(client)

    def _run_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            _log.error("%s: connection task crashed", self._where, exc_info=task.exception())

    # -- publishing --------------------------------------------------------------------------

    async def _publish_and_wait(self, messages: Sequence[Message], *, retain: bool, timeout: float) -> list[Outcome]:
        client, loop = self._client, self._loop
        if client is None or loop is None or not self._up.is_set():
            return [False] * len(messages)
        registered: list[tuple[int, asyncio.Future[Outcome]]] = []
        futures: list[asyncio.Future[Outcome]] = []
        try:
            for m in messages:
                fut: asyncio.Future[Outcome] = loop.create_future()
                futures.append(fut)
                info = client.publish(m.topic, m.payload, qos=1, retain=retain)
                if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    # No PUBACK can be handled before this registration: paho reads only in
                    # _on_readable, on this thread, and there is no await in between.
                    self._pending[info.mid] = fut
                    registered.append((info.mid, fut))
                else:
                    fut.set_result(False)
            if futures:
                await asyncio.wait(futures, timeout=timeout)
            return [f.result() if f.done() else False for f in futures]
        finally:
            for mid, fut in registered:
                if self._pending.get(mid) is fut:
                    del self._pending[mid]

    def _fail_pending(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_result(False)

    # -- paho callbacks: they only complete futures and (un)register the socket ---------------

    def _on_connect(
        self, client: Client, userdata: Any, flags: ConnectFlags, reason: ReasonCode, props: Properties | None
    ) -> None:
        if client is not self._client or self._connack is None:
            return
        receive_maximum = getattr(props, "ReceiveMaximum", _MQTT5_RECEIVE_MAXIMUM)
        broker_max = getattr(props, "MaximumPacketSize", None)
        configured = self._settings.max_packet_bytes
        if isinstance(broker_max, int):
            self._max_packet = broker_max if configured is None else min(broker_max, configured)
        if not reason.is_failure and client.max_inflight_messages <= receive_maximum:
            self._up.set()
        if not self._connack.done():
            self._connack.set_result((reason, receive_maximum))

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if client is not self._client:
            return
        self._up.clear()
        self._fail_pending()
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(None)
        if self._lost is not None and not self._lost.done():
            if flags.is_disconnect_packet_from_server:
                why = f"the broker sent DISCONNECT: {reason} (reason code {reason.value})"
            elif reason.value == _KEEPALIVE_TIMEOUT:
                why = f"no reply from the broker within the keepalive ({self._settings.keepalive} s)"
            else:
                why = "the connection was closed or reset"
            self._lost.set_result(why)

    def _on_publish(self, client: Client, userdata: Any, mid: int, reason: ReasonCode, props: Properties) -> None:
        fut = self._pending.get(mid) if client is self._client else None
        if fut is not None and not fut.done():
            # v5 success codes include "No matching subscribers": the broker still took it.
            if not reason.is_failure:
                fut.set_result(True)
            elif reason.value in _FINAL_REFUSALS:
                fut.set_result(Rejected(f"the broker refused the publish: {reason} (reason code 0x{reason.value:02X})"))
            else:
                fut.set_result(False)
