"""What the agent asks the OPC UA adapter to collect. Plain values; handles are the agent's indexes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class NodeItem:
    handle: int
    node: str  # "ns=2;s=CNC01.Speed", or a browse path "0:Objects/2:CNC01/2:Speed" when by_path
    opcua_type: str  # expected built-in type name; checked against the server at every (re)connect
    is_array: bool = False
    by_path: bool = False
    mode: Literal["subscribe", "poll"] = "subscribe"
    sampling_ms: float | None = None  # None: the publishing interval (subscribe) or the source's poll interval
    queue_size: int = 10
    deadband: tuple[Literal["absolute", "percent"], float] | None = None
    trigger: Literal["status", "status_value", "status_value_timestamp"] = "status_value"


@dataclass(frozen=True, slots=True)
class EventItem:
    handle: int
    node: str  # the object whose events to receive (its EventNotifier must allow subscribing)
    fields: tuple[str, ...] = ("Message", "Severity", "SourceName", "Time", "EventType")


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    security_policy: str = "None"  # "None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"
    security_mode: str = "None"  # "None", "Sign", "SignAndEncrypt"
    certificate: str | None = None  # the agent's own, if not the one in the PKI folder
    private_key: str | None = None
    private_key_password: str | None = field(default=None, repr=False)
    server_certificate: str | None = None  # pinned: only this certificate is accepted
    user_certificate: str | None = None  # X.509 user identity, instead of a user name
    user_private_key: str | None = None
    user_private_key_password: str | None = field(default=None, repr=False)
    allow_plaintext_password: bool = False
    application_uri: str = "urn:edge-agent:client"  # must be in the agent certificate's subjectAltName
    trust_command: str = "edge-agent trust -c <config>"  # how the operator trusts a refused server certificate
    publishing_interval_ms: float = 500.0
    poll_interval_ms: float = 1000.0
    timeout_s: float = 10.0
    session_timeout_s: float = 30.0  # a session of ours that dies unclosed holds a PLC's slot this long
    max_items_per_call: int | None = None  # None: the server's operation limits decide
    max_notifications_per_publish: int = 10000
    publish_requests: int = 3  # PublishRequests kept at the server (publish.py)
