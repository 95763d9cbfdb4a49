"""What an MQTT sink is told: broker, identity, TLS, and the topic layout (defined here and nowhere else)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Literal

from uploader.tls import TlsSettings
from uploader.tls import explain_tls as explain
from uploader.tls import tls_context as tls_context_for


class MqttConfigError(ValueError):
    """The sink's settings cannot work (for example a TLS file that cannot be read)."""


@dataclass(frozen=True, kw_only=True)
class MqttSettings:
    host: str
    port: int = 1883
    client_id: str
    protocol: Literal["3.1.1", "5"] = "5"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsSettings | None = None
    keepalive: int = 30
    topic_prefix: str = "kamp/v1"
    site: str = "site"
    # Retained on `status_topic()`: the agent's state after every connect and whenever it changes
    # (MqttSink.announce), "offline" as last will and on stop().
    announce_status: bool = False
    max_inflight: int = 20
    connect_timeout: float = 10.0  # for the TCP connect and TLS handshake, and again for the CONNACK
    # The largest PUBLISH the broker takes, for brokers that do not say (MQTT 5 CONNACK); the
    # smaller of the two applies. None: no limit known.
    max_packet_bytes: int | None = None


def data_topic(s: MqttSettings, lane: str, key: str) -> str:
    """Where records of one lane and routing key (equipment id, or "_agent") are published."""
    return f"{s.topic_prefix}/{s.site}/{key}/{lane}"


def status_topic(s: MqttSettings) -> str:
    """The retained online/offline topic of one agent."""
    return f"{s.topic_prefix}/{s.site}/_agent/online"


def tls_context(tls: TlsSettings, where: str) -> ssl.SSLContext:
    return tls_context_for(tls, where, password_hint="MQTT_KEY_PASSWORD", error=MqttConfigError)


def explain_tls(exc: BaseException, tls: TlsSettings | None, host: str) -> str | None:
    return explain(exc, tls, host, peer="broker", by_name="connect by the name in its certificate")
