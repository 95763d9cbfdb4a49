"""From config to parts: handles for every point, the adapter's items, the sinks and their settings.

Plain functions, no running code: app.py builds the running agent from what these return.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import SecretStr

from aas_models.spec import Shell
from aas_models.types import xs_type
from adapters.opcua.spec import Endpoint, EventItem, NodeItem
from agent.backoff import Backoff
from agent.config import Config, Point, Source
from agent.config_sinks import FileSinkConfig, HttpSinkConfig, MqttSinkConfig, SfLogSinkConfig
from agent.handles import Key, assign, event_key, point_key
from agent.pipeline import Binding, EventBinding, make_binding
from uploader import wire
from uploader.file import FileSink
from uploader.forwarder import Batching
from uploader.sink import Sink


@dataclass
class Plan:
    """What the config asks for, resolved into handles (agent/handles.py)."""

    bindings: list[Binding] = field(default_factory=list)
    events: list[EventBinding] = field(default_factory=list)
    items: dict[str, list[NodeItem]] = field(default_factory=dict)
    event_items: dict[str, list[EventItem]] = field(default_factory=dict)
    handles: dict[Key, int] = field(default_factory=dict)


def plan(cfg: Config, shells: Iterable[Shell], previous: Mapping[Key, int] | None = None) -> Plan:
    """The parts for `cfg` and its `shells` (agent/shells.py: specs or a built environment's `shells`); with
    `previous` (a reload), every element keeps the handle it had."""
    out = Plan(handles=assign(cfg, previous))
    submodels = {s.id: s.operational_id() for s in shells}
    for e in cfg.equipment:
        shell_id = cfg.aas_id(e)
        submodel_id = submodels[shell_id]
        for p in e.points:
            handle = out.handles[point_key(e.id, p.path)]
            element = wire.Element(
                shell=shell_id,
                submodel=submodel_id,
                path=p.path,
                value_type=xs_type(p.type),
                node=p.address,
                semantic_id=p.semantic_id,
                is_array=p.array,
                unit=p.unit,
            )
            out.bindings.append(make_binding(handle, e.source, e.id, element))
            out.items.setdefault(e.source, []).append(_item(handle, p))
        for ev in e.events:
            handle = out.handles[event_key(e.id, ev.name)]
            out.events.append(EventBinding(handle, e.source, e.id, shell_id, submodel_id, ev.name, ev.node))
            out.event_items.setdefault(e.source, []).append(EventItem(handle, ev.node, ev.fields))
    return out


def _item(handle: int, p: Point) -> NodeItem:
    return NodeItem(
        handle=handle,
        node=p.node if p.node is not None else str(p.browse_path),
        opcua_type=p.type,
        is_array=p.array,
        by_path=p.node is None,
        mode=p.mode,
        sampling_ms=p.sampling_ms,
        queue_size=p.queue_size,
        deadband=(p.deadband.type, p.deadband.value) if p.deadband else None,
        trigger=p.trigger,
    )


def application_uri(cfg: Config) -> str:
    """The agent's OPC UA application URI: in its certificate, and sent in every session."""
    return f"urn:edge-agent:{cfg.site.id}:{socket.gethostname()}"


def _path(p: Path | None) -> str | None:
    return str(p) if p is not None else None


def _secret(s: SecretStr | None) -> str | None:
    return s.get_secret_value() if s is not None else None


def endpoint(s: Source, app_uri: str, config_path: Path | None = None) -> Endpoint:
    sec = s.security
    return Endpoint(
        id=s.id,
        url=s.endpoint,
        username=s.username,
        password=_secret(s.password),
        security_policy=sec.policy,
        security_mode=sec.mode,
        certificate=_path(sec.certificate),
        private_key=_path(sec.private_key),
        private_key_password=_secret(sec.private_key_password),
        server_certificate=_path(sec.server_certificate),
        user_certificate=_path(s.user_certificate),
        user_private_key=_path(s.user_private_key),
        user_private_key_password=_secret(s.user_private_key_password),
        allow_plaintext_password=s.allow_plaintext_password,
        application_uri=app_uri,
        trust_command=f"edge-agent trust -c {config_path or '<config>'}",
        publishing_interval_ms=s.publishing_interval_ms,
        poll_interval_ms=s.poll_interval_ms,
        timeout_s=s.timeout_s,
        session_timeout_s=s.session_timeout_s,
        max_items_per_call=s.max_items_per_call,
        max_notifications_per_publish=s.max_notifications_per_publish,
        publish_requests=s.publish_requests,
    )


AnySink = MqttSinkConfig | FileSinkConfig | HttpSinkConfig | SfLogSinkConfig


def lanes(s: AnySink) -> frozenset[str] | None:
    """The lanes a sink's buffer takes; None: all of them."""
    return s.lanes if isinstance(s, SfLogSinkConfig) else None


def sflog_dir(cfg: Config, s: SfLogSinkConfig) -> Path:
    """Where a usage-log sink keeps its windows and calls (`sflog.db`)."""
    return cfg.agent.data_dir / ("sflog" if s.id == "sflog" else f"sflog-{s.id}")


def make_sink(cfg: Config, s: AnySink, origin: str = "") -> tuple[Sink, Batching]:
    """The sink and its batching; `origin` (the sink's buffer id) makes the default MQTT client id unique."""
    b = s.batch
    batching = Batching(
        max_records=b.max_records,
        max_delay=b.max_delay_ms / 1000,
        max_message_records=b.max_message_records,
        max_message_bytes=b.max_message_bytes,
        in_flight=b.in_flight,
        wire_version=wire.WIRE_VERSION if isinstance(s, SfLogSinkConfig) else s.wire_version,  # sflog reads v2
    )
    if isinstance(s, FileSinkConfig):
        return FileSink(s.path, name=s.id), batching
    if isinstance(s, HttpSinkConfig):
        return _http_sink(s), replace(batching, send_timeout=s.timeout_s)
    if isinstance(s, SfLogSinkConfig):
        return _sflog_sink(cfg, s), batching
    from uploader.mqtt import MqttSettings, MqttSink, TlsSettings

    tls = None
    if s.tls is not None:
        tls = TlsSettings(
            ca_file=str(s.tls.ca_file) if s.tls.ca_file else None,
            cert_file=str(s.tls.cert_file) if s.tls.cert_file else None,
            key_file=str(s.tls.key_file) if s.tls.key_file else None,
            key_password=_secret(s.tls.key_password),
            insecure=s.tls.insecure,
        )
    settings = MqttSettings(
        host=s.host,
        port=s.port,
        client_id=s.client_id or default_client_id(cfg.site.id, origin),
        protocol=s.protocol,
        username=s.username,
        password=s.password.get_secret_value() if s.password else None,
        tls=tls,
        keepalive=s.keepalive_s,
        topic_prefix=s.topic_prefix,
        site=cfg.site.id,
        announce_status=True,
        max_packet_bytes=s.max_packet_bytes,
    )
    delays = Backoff(initial=s.reconnect_initial_s, maximum=s.reconnect_max_s).delays
    return MqttSink(settings, name=s.id, delays=delays), batching


def _http_sink(s: HttpSinkConfig) -> Sink:
    from uploader.http import HttpSettings, HttpSink, TlsSettings

    tls = None
    if s.tls is not None:
        tls = TlsSettings(
            ca_file=_path(s.tls.ca_file),
            cert_file=_path(s.tls.cert_file),
            key_file=_path(s.tls.key_file),
            key_password=_secret(s.tls.key_password),
            insecure=s.tls.insecure,
        )
    settings = HttpSettings(
        url=s.url,
        token=_secret(s.token),
        tls=tls,
        gzip=s.gzip,
        timeout=s.timeout_s,
        max_body_bytes=s.max_body_bytes,
    )
    delays = Backoff(initial=s.reconnect_initial_s, maximum=s.reconnect_max_s).delays
    return HttpSink(settings, name=s.id, delays=delays)


def _sflog_sink(cfg: Config, s: SfLogSinkConfig) -> Sink:
    from datetime import timedelta

    from uploader.sflog import SfLogClient, SfLogSender
    from uploader.sflog.sink import SfLogSink

    client = SfLogClient(s.url, s.crtfc_key, timeout=s.timeout_s, ca_file=s.ca_file)
    sender = SfLogSender(
        sflog_dir(cfg, s),
        client,
        delays=Backoff(initial=5.0, maximum=300.0).delays,
        max_calls_per_day=s.max_calls_per_day,
        settle=timedelta(seconds=s.settle_s),
        keep_days=s.keep_days,
    )
    return SfLogSink(sender, client, name=s.id)


def default_client_id(site: str, origin: str) -> str:
    """Unique per agent: two agents of one site on one host (a test bench, a migration) must not
    take each other's MQTT session (the broker would disconnect one for the other, over and over).
    The host name is cut, not the buffer's origin id, to stay within 64 characters."""
    tail = f"-{origin}" if origin else ""
    return f"edge-agent-{site}-{socket.gethostname()}"[: 64 - len(tail)] + tail
