"""The `sinks:` blocks of the configuration: where records go (docs/configuration.md, "sinks")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, model_validator

from agent.config_base import Model as _Model
from agent.config_base import secret_is_text


class BatchConfig(_Model):
    max_records: int = Field(default=1000, ge=1, le=100000)
    max_delay_ms: int = Field(default=1000, ge=0)
    max_message_records: int = Field(default=500, ge=1)
    max_message_bytes: int = Field(default=256 * 1024, ge=1024)
    in_flight: int = Field(default=4, ge=1, le=64, description="batches sent and not yet confirmed, at most")


class Tls(_Model):
    ca_file: Path | None = Field(default=None, description="default: the system's CAs")
    cert_file: Path | None = Field(default=None, description="client certificate, for brokers that require one")
    key_file: Path | None = None
    key_password: SecretStr | None = Field(default=None, description="passphrase of an encrypted key_file")
    insecure: bool = Field(default=False, description="skip only the host name check")


class MqttSinkConfig(_Model):
    type: Literal["mqtt"]
    id: str = "mqtt"
    host: str
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = None
    protocol: Literal["3.1.1", "5"] = "5"
    username: str | None = None
    password: SecretStr | None = None
    tls: Tls | None = None
    topic_prefix: str = "kamp/v1"
    max_packet_bytes: int | None = Field(
        default=None, ge=1024, description="the broker's largest PUBLISH, if it does not announce it (MQTT 5 does)"
    )
    keepalive_s: int = Field(default=30, ge=5)
    reconnect_initial_s: float = Field(default=1, gt=0)
    reconnect_max_s: float = Field(
        default=10, gt=0, description="a broker that returns is used again within about this long"
    )
    wire_version: Literal[2, 3] = Field(
        default=2,
        description="3: each record head once per message, about half the bytes; the receiver must take version 3",
    )
    batch: BatchConfig = BatchConfig()


class FileSinkConfig(_Model):
    """Appends each message as one JSON line to a local file: the demo's receiver, or an air-gapped export."""

    type: Literal["file"]
    id: str = "file"
    path: Path
    wire_version: Literal[2, 3] = Field(
        default=2,
        description="3: each record head once per message, about half the bytes; the receiver must take version 3",
    )
    batch: BatchConfig = BatchConfig(max_delay_ms=200)


class HttpSinkConfig(_Model):
    """POSTs batches to a KAMP-style ingest endpoint, `{url}/v1/ingest` (docs/cloud-api.md)."""

    type: Literal["http"]
    id: str = "http"
    url: str = Field(
        pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$", description="base URL, e.g. https://cloud.example.com"
    )
    token: SecretStr | None = Field(default=None, description="sent as Authorization: Bearer <token>")
    tls: Tls | None = None
    gzip: bool = True
    timeout_s: float = Field(default=10, gt=0, description="for the connect, and for the answer to one request")
    max_body_bytes: int = Field(default=8 * 2**20, ge=16 * 1024, description="the largest request body, before gzip")
    reconnect_initial_s: float = Field(default=1, gt=0)
    reconnect_max_s: float = Field(default=30, gt=0)
    wire_version: Literal[2, 3] = Field(
        default=2,
        description="3: each record head once per message, about half the bytes; the receiver must take version 3",
    )
    batch: BatchConfig = BatchConfig()

    @model_validator(mode="before")
    @classmethod
    def _token_is_text(cls, data: Any) -> Any:
        return secret_is_text(data, "token")

    @model_validator(mode="after")
    def _tls_needs_https(self) -> HttpSinkConfig:
        if self.tls is not None and not self.url.startswith("https://"):
            raise ValueError("tls is set but the url is plain http://: use an https:// url")
        return self


class SfLogSinkConfig(_Model):
    """Sends the agent's usage events (the `usage` lane only) to the programme's usage-log API (사후관리),
    as at most one call per 10-minute KST window (docs/usage-log.md)."""

    type: Literal["sflog"]
    id: str = "sflog"
    url: str = Field(
        pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$",
        description="the API's base URL; the agent POSTs to {url}/sendLogData.json",
    )
    crtfc_key: SecretStr = Field(description="the project's log API certification key (crtfcKey)")
    ca_file: Path | None = Field(default=None, description="default: the system's CAs")
    timeout_s: float = Field(default=10, gt=0)
    max_calls_per_day: int = Field(default=1000, ge=1, le=5000, description="the API allows 5,000 a day")
    settle_s: float = Field(default=60, ge=0, le=600, description="wait after a window ends for late events")
    keep_days: int = Field(default=7, ge=1, description="finished windows are pruned this long after their day")
    batch: BatchConfig = BatchConfig(max_delay_ms=1000, max_records=500, in_flight=1)

    @model_validator(mode="before")
    @classmethod
    def _key_is_text(cls, data: Any) -> Any:
        return secret_is_text(data, "crtfc_key")

    @property
    def lanes(self) -> frozenset[str]:
        return frozenset({"usage"})


SinkConfig = Annotated[MqttSinkConfig | FileSinkConfig | HttpSinkConfig | SfLogSinkConfig, Field(discriminator="type")]
