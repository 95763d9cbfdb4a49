"""Wiring and supervision: config in, collectors, pipeline, buffers and forwarders running.

The only module that knows adapters, aas_models and uploader together.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aas_models.build import ShellEnvironment
from aas_models.live import LiveValues
from aas_models.types import xs_type
from adapters.opcua.source import OpcUaSource
from adapters.opcua.spec import Endpoint, EventItem, Item
from adapters.sample import Interruption, SourceState
from agent.backoff import Backoff
from agent.config import Config, FileSinkConfig, MqttSinkConfig, Point, Source
from agent.pipeline import Binding, EventBinding, Pipeline, make_binding
from agent.runstate import RunState
from agent.shells import build_shells
from uploader.buffer import Buffer, BufferError
from uploader.file import FileSink
from uploader.runner import Batching, Forwarder, default_topic
from uploader.sink import Sink

log = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass
class Plan:
    """What the config asks for, resolved into handles."""

    bindings: list[Binding] = field(default_factory=list)
    events: list[EventBinding] = field(default_factory=list)
    items: dict[str, list[Item]] = field(default_factory=dict)
    event_items: dict[str, list[EventItem]] = field(default_factory=dict)


def plan(cfg: Config, env: ShellEnvironment) -> Plan:
    out = Plan()
    handle = 0
    for e in cfg.equipment:
        shell_id = cfg.aas_id(e)
        submodel_id = env.submodel_id(shell_id)
        for p in e.points:
            handle += 1
            out.bindings.append(
                make_binding(
                    handle=handle,
                    equipment=e.id,
                    shell_id=shell_id,
                    submodel_id=submodel_id,
                    path=p.path,
                    value_type=xs_type(p.type),
                    is_array=p.array,
                    node=p.address,
                    semantic_id=p.semantic_id,
                    unit=p.unit,
                )
            )
            out.items.setdefault(e.source, []).append(_item(handle, p))
        for ev in e.events:
            handle += 1
            out.events.append(EventBinding(handle, e.id, shell_id, ev.name, ev.node))
            out.event_items.setdefault(e.source, []).append(EventItem(handle, ev.node, ev.fields))
    return out


def _item(handle: int, p: Point) -> Item:
    return Item(
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


def endpoint(s: Source) -> Endpoint:
    sec = s.security
    return Endpoint(
        id=s.id,
        url=s.endpoint,
        username=s.username,
        password=s.password.get_secret_value() if s.password else None,
        security_policy=sec.policy,
        security_mode=sec.mode,
        certificate=str(sec.certificate) if sec.certificate else None,
        private_key=str(sec.private_key) if sec.private_key else None,
        server_certificate=str(sec.server_certificate) if sec.server_certificate else None,
        publishing_interval_ms=s.publishing_interval_ms,
        poll_interval_ms=s.poll_interval_ms,
        timeout_s=s.timeout_s,
        max_items_per_call=s.max_items_per_call,
        max_notifications_per_publish=s.max_notifications_per_publish,
    )


def make_sink(cfg: Config, s: MqttSinkConfig | FileSinkConfig) -> tuple[Sink, Batching, str]:
    b = s.batch
    batching = Batching(
        max_records=b.max_records,
        max_delay=b.max_delay_ms / 1000,
        max_message_records=b.max_message_records,
        max_message_bytes=b.max_message_bytes,
    )
    if isinstance(s, FileSinkConfig):
        return FileSink(s.path, name=s.id), batching, "edge"
    from uploader.mqtt import MqttSettings, MqttSink, TlsSettings

    tls = None
    if s.tls is not None:
        tls = TlsSettings(
            ca_file=str(s.tls.ca_file) if s.tls.ca_file else None,
            cert_file=str(s.tls.cert_file) if s.tls.cert_file else None,
            key_file=str(s.tls.key_file) if s.tls.key_file else None,
            insecure=s.tls.insecure,
        )
    status_topic = f"{s.topic_prefix}/{cfg.site.id}/_agent/online"
    settings = MqttSettings(
        host=s.host,
        port=s.port,
        client_id=s.client_id or f"edge-agent-{cfg.site.id}-{socket.gethostname()}"[:64],
        protocol=s.protocol,
        username=s.username,
        password=s.password.get_secret_value() if s.password else None,
        tls=tls,
        keepalive=s.keepalive_s,
        status_topic=status_topic,
    )
    return MqttSink(settings, name=s.id), batching, s.topic_prefix


def secrets(cfg: Config) -> list[str]:
    out = [s.password.get_secret_value() for s in cfg.sources if s.password]
    out += [s.password.get_secret_value() for s in cfg.sinks if isinstance(s, MqttSinkConfig) and s.password]
    return out


class Agent:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.env = build_shells(cfg)
        self.live = LiveValues()
        self.plan = plan(cfg, self.env)
        self.backoff = Backoff(initial=1.0, maximum=30.0)
        cfg.agent.data_dir.mkdir(parents=True, exist_ok=True)
        self.runstate = RunState(cfg.agent.data_dir / "agent-state.json")
        quota = int(cfg.buffer.quota_mb * MIB / len(cfg.sinks))
        self.buffers: list[Buffer] = []
        self.sinks: list[Sink] = []
        self.forwarders: list[Forwarder] = []
        for s in cfg.sinks:
            sink, batching, prefix = make_sink(cfg, s)
            # A chunk per message: whole chunks leave the buffer together, in one delete.
            buf = Buffer(
                cfg.agent.data_dir / f"buffer-{s.id}.db",
                quota_bytes=quota,
                synchronous=cfg.buffer.synchronous,
                chunk_records=batching.max_message_records,
            )
            self.buffers.append(buf)
            self.sinks.append(sink)
            self.forwarders.append(
                Forwarder(
                    buf,
                    sink,
                    site=cfg.site.id,
                    topic=default_topic(prefix, cfg.site.id),
                    batching=batching,
                    delays=Backoff(initial=0.5, maximum=30.0).delays,
                )
            )
        self.pipeline = Pipeline(
            self.plan.bindings,
            self.plan.events,
            self.buffers,
            self.live,
            delays=self.backoff.delays,
            on_stored=self._wake,
        )
        self.sources: list[OpcUaSource] = []
        self._previous = self.runstate.load()
        self.pipeline.restore_marks()
        self._first_connect: set[str] = set()
        self.started = datetime.now(UTC)
        for src in cfg.sources:
            items = self.plan.items.get(src.id, [])
            events = self.plan.event_items.get(src.id, [])
            if not items and not events:
                continue
            self.sources.append(
                OpcUaSource(
                    endpoint(src),
                    items,
                    events,
                    emit=self.pipeline.on_samples,
                    emit_events=self.pipeline.on_events,
                    interrupted=self.pipeline.on_interruption,
                    problem=self.pipeline.on_problem,
                    state=self._on_state,
                    delays=Backoff(initial=src.reconnect_initial_s, maximum=src.reconnect_max_s).delays,
                )
            )

    def _wake(self) -> None:
        for f in self.forwarders:
            f.wake()

    async def _on_state(self, s: SourceState) -> None:
        await self.pipeline.on_state(s)
        if s.state == "connected" and s.source not in self._first_connect:
            self._first_connect.add(s.source)
            prev = self._previous
            src = next(x for x in self.sources if x.endpoint.id == s.source)
            if prev is not None and src.active:
                reason = "agent was stopped" if prev.clean else "agent stopped unexpectedly (crash or kill)"
                await self.pipeline.on_interruption(Interruption(s.source, src.active, prev.last_alive, s.time, reason))

    def status_snapshot(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "values_in": self.pipeline.values_in,
            "repeats_skipped": self.pipeline.repeats,
            "bad_values": self.pipeline.bad_values,
            "sources": {s.endpoint.id: {"connected": s.connected, "active": len(s.active)} for s in self.sources},
            "buffers": {
                sink.name: {"pending": buf.pending(), "origin": buf.origin}
                for sink, buf in zip(self.sinks, self.buffers, strict=True)
            },
            "forwarders": {
                f.sink.name: {"sent": f.stats.sent_records, "error": f.stats.last_error} for f in self.forwarders
            },
        }

    async def run(self, stop: asyncio.Event, *, drain_timeout: float = 5.0) -> None:
        for sink in self.sinks:
            await sink.start()
        self.runstate.beat()
        await self.pipeline.status(
            "agent-started",
            f"collecting {len(self.plan.bindings)} elements of {len(self.cfg.equipment)} machines",
            previous_stop=self._previous.last_alive if self._previous else None,
        )
        # The AAS model and config are long-lived: keep the collector from walking them over and
        # over (it was ~10 % of the per-value cost), and let young garbage pile up a little more
        # before a collection, since every publish creates thousands of short-lived objects.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        source_tasks = [asyncio.create_task(s.run(), name=f"source-{s.endpoint.id}") for s in self.sources]
        forward_tasks = [asyncio.create_task(f.run(), name=f"forward-{f.sink.name}") for f in self.forwarders]
        beat = asyncio.create_task(self._heartbeat(), name="heartbeat")
        try:
            await stop.wait()
        finally:
            log.info("stopping: collection first, then flushing buffers")
            for t in source_tasks:
                t.cancel()
            await asyncio.gather(*source_tasks, return_exceptions=True)
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            self.runstate.beat()
            with contextlib.suppress(Exception):
                await self.pipeline.status("agent-stopping", "stopped by request")
            for t in forward_tasks:
                t.cancel()
            await asyncio.gather(*forward_tasks, return_exceptions=True)
            for f in self.forwarders:
                if not await f.drain(drain_timeout):
                    log.warning("%s: %s records stay buffered for the next start", f.sink.name, f.buffer.pending())
            for sink in self.sinks:
                with contextlib.suppress(Exception):
                    await sink.stop()
            for buf in self.buffers:
                buf.close()
            self.runstate.beat(clean=True)
            log.info("stopped cleanly")

    async def _heartbeat(self) -> None:
        """Beat once a second; every `status_interval_s` also write the counters to the status lane."""
        loop = asyncio.get_running_loop()
        next_stats = loop.time() + self.cfg.agent.status_interval_s
        while True:
            await asyncio.sleep(1.0)
            self.runstate.beat()
            if loop.time() >= next_stats:
                next_stats += self.cfg.agent.status_interval_s
                await self.pipeline.status("agent-stats", "counters since start", **self.status_snapshot())


class StartError(Exception):
    """The agent cannot start: a buffer file that is locked, foreign or unwritable, an unreadable TLS file."""


def run_agent(cfg: Config, stop_after: float | None = None) -> None:
    """Run until SIGTERM/SIGINT (or `stop_after` seconds). Raises StartError with a message for the operator."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if stop_after is not None:
            loop.call_later(stop_after, stop.set)
        try:
            agent = Agent(cfg)
        except (BufferError, ValueError, OSError) as e:
            raise StartError(str(e)) from None
        await agent.run(stop)

    asyncio.run(main())
