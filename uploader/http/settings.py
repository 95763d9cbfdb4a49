"""What an HTTP sink is told: the receiver's base URL, the bearer token, TLS, compression, limits.

TLS itself is uploader/tls.py, shared with the MQTT sink.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from uploader.tls import TlsSettings
from uploader.tls import explain_tls as explain
from uploader.tls import tls_context as tls_context_for

INGEST_PATH = "/v1/ingest"


class HttpConfigError(ValueError):
    """The sink's settings cannot work (a URL that is no http(s) base URL, a TLS file that cannot be read)."""


@dataclass(frozen=True, kw_only=True)
class HttpSettings:
    url: str  # the receiver's base URL: batches go to {url}/v1/ingest
    token: str | None = field(default=None, repr=False)  # sent as Authorization: Bearer <token>
    tls: TlsSettings | None = None  # for https:// only; None: the system's CAs
    gzip: bool = True
    timeout: float = 10.0  # for the TCP connect and TLS handshake; a request gets the forwarder's send timeout
    max_body_bytes: int = 8 * 2**20  # the largest request body, before compression


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the settings point: checked once, up front."""

    ingest: str
    host: str
    port: int
    https: bool

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


def endpoint(s: HttpSettings, where: str) -> Endpoint:
    """The ingest URL and the host and port to reach; raises HttpConfigError for a URL that cannot work."""
    try:
        parts = urlsplit(s.url)
        port = parts.port
    except ValueError as e:
        raise HttpConfigError(f"{where}: url {s.url!r} cannot be read: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise HttpConfigError(
            f"{where}: url {s.url!r} must be a base URL like https://cloud.example.com[:port][/path], "
            "without query or fragment; batches go to {url}/v1/ingest"
        )
    if parts.username is not None or parts.password is not None:
        raise HttpConfigError(f"{where}: no user or password in the url; give the bearer token as `token`")
    https = parts.scheme == "https"
    if s.tls is not None and not https:
        raise HttpConfigError(f"{where}: tls is set but the url is plain http://; use https://")
    if s.max_body_bytes < 1024:
        raise HttpConfigError(f"{where}: max_body_bytes {s.max_body_bytes} is too small (at least 1024)")
    ingest = s.url.rstrip("/") + INGEST_PATH
    return Endpoint(ingest, parts.hostname, port or (443 if https else 80), https)


def tls_context(tls: TlsSettings | None, where: str) -> ssl.SSLContext:
    return tls_context_for(tls, where, password_hint="HTTP_KEY_PASSWORD", error=HttpConfigError)


def explain_tls(exc: BaseException, tls: TlsSettings | None, host: str) -> str | None:
    return explain(
        exc, tls, host, peer="receiver", by_name="use the name in its certificate in the url", scheme="https"
    )
