"""What an MQTT sink is told: broker, identity, TLS, and the topic layout (defined here and nowhere else)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Literal


class MqttConfigError(ValueError):
    """The sink's settings cannot work (for example a TLS file that cannot be read)."""


@dataclass(frozen=True, kw_only=True)
class TlsSettings:
    """TLS towards the broker. `insecure` skips only the host-name check, as paho's does;
    the broker's certificate chain is still verified against `ca_file` (or the system CAs)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = field(default=None, repr=False)
    insecure: bool = False


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
    """Built once, up front, so a missing or unreadable file stops start-up with a clear message.

    The key's passphrase comes from `key_password` only: OpenSSL would otherwise ask for it on the
    terminal, where nobody answers a service.
    """
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file is not None:
            if tls.key_password is None and _encrypted(tls.key_file or tls.cert_file):
                raise MqttConfigError(
                    f"{where}: the private key {tls.key_file or tls.cert_file} is encrypted; give its passphrase "
                    "as tls.key_password (e.g. key_password: ${MQTT_KEY_PASSWORD})"
                )
            context.load_cert_chain(tls.cert_file, tls.key_file, password=tls.key_password or "")
    except OSError as exc:  # ssl.SSLError included: a file that is not PEM, a wrong passphrase
        files = ", ".join(
            f"{key}={value!r}"
            for key, value in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key_file", tls.key_file))
            if value is not None
        )
        raise MqttConfigError(f"{where}: cannot load TLS files ({files}): {exc}") from exc
    context.check_hostname = not tls.insecure
    return context


def _encrypted(key_file: str) -> bool:
    try:
        with open(key_file, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False  # load_cert_chain says what is wrong with the file
    return b"ENCRYPTED" in head


def explain_tls(exc: BaseException, tls: TlsSettings | None, host: str) -> str | None:
    """What a TLS failure means for the person who configured it; None if it is no TLS failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
            return f"the broker's certificate has expired ({exc.verify_message})"
        if code == 62 or "hostname" in str(exc).lower() or "IP address mismatch" in str(exc):
            return (
                f"the broker's certificate is not for {host} ({exc.verify_message}); connect by the name in its "
                "certificate, or set tls.insecure to skip only this check"
            )
        ca = tls.ca_file if tls and tls.ca_file else "the system's CAs"
        return f"the broker's certificate is not signed by a CA we trust ({ca}): {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if "CERTIFICATE_REQUIRED" in reason or ("HANDSHAKE_FAILURE" in reason and not (tls and tls.cert_file)):
            return "the broker requires a client certificate (mutual TLS): set tls.cert_file and tls.key_file"
        if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason or "CERTIFICATE_UNKNOWN" in reason:
            return f"the broker refused our client certificate ({exc.reason}): is it signed by a CA the broker trusts?"
        if "EXPIRED" in reason:
            return f"the broker says our client certificate has expired ({exc.reason})"
        return f"TLS failed: {exc.reason or exc}"
    return None
