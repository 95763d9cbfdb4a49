"""The running agent: collectors, pipeline, buffers, forwarders and sinks under one supervisor.

The only module that knows adapters, aas_models and uploader together (with wiring.py, which
turns the config into their parts).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from aas_models.live import LiveValues
from aas_models.timeseries import rings_for
from adapters.opcua.pki import Pki
from adapters.opcua.source import OpcUaSource
from adapters.sample import Interruption, SourceState
from agent import nodepaths, usage
from agent.api.operator import Operator
from agent.api.server import ApiServer
from agent.backoff import Backoff
from agent.config import Config
from agent.config_sinks import MqttSinkConfig
from agent.deadletters import FILE as DEAD_LETTERS
from agent.lock import DataDirBusy, DataDirLock
from agent.measure import Measure
from agent.metrics import Metrics
from agent.pipeline import Pipeline
from agent.runstate import RunState
from agent.shells import build_shells
from agent.status import Parts, snapshot
from agent.supervisor import ComponentFailed, Supervisor
from agent.version import VERSION
from agent.wiring import application_uri, endpoint, lanes, make_sink, plan
from uploader.buffer import Buffer, BufferCorruptError, BufferError
from uploader.buffer.recover import Recovery, open_buffer
from uploader.deadletter import DeadLetters
from uploader.forwarder import Forwarder
from uploader.sflog.sink import SfLogSink
from uploader.sink import Sink

log = logging.getLogger(__name__)

MIB = 1024 * 1024
STATS_FLUSH_S = 60.0  # the statistics behind `edge-agent level` are written this often (and at stop)


class Agent:
    def __init__(self, cfg: Config, config_path: Path | None = None) -> None:
        self.cfg = cfg
        self.env = build_shells(cfg)
        self.live = LiveValues(series=rings_for(self.env.shells))  # recent records: Time Series Data
        self.plan = plan(cfg, self.env)
        self.backoff = Backoff(initial=1.0, maximum=30.0)
        cfg.agent.data_dir.mkdir(parents=True, exist_ok=True)
        self.runstate = RunState(cfg.agent.data_dir / "agent-state.json")
        quota = int(cfg.buffer.quota_mb * MIB / len(cfg.sinks))
        self.buffers: list[Buffer] = []
        self.sinks: list[Sink] = []
        self.forwarders: list[Forwarder] = []
        self.dead_letters = open_dead_letters(cfg.agent.data_dir / DEAD_LETTERS)
        self.measure = Measure(
            cfg, {e.id: cfg.aas_id(e) for e in cfg.equipment}, now=datetime.now(UTC).timestamp(), live=self.live
        )
        self._buffer_notes: list[tuple[str, str, dict[str, Any]]] = []  # (kind, message, details) to record
        self.metrics = Metrics(VERSION)
        for s in cfg.sinks:
            # A chunk per message: whole chunks leave the buffer together, in one delete.
            buf, recovery = open_buffer(
                cfg.agent.data_dir / f"buffer-{s.id}.db",
                quota_bytes=quota,
                synchronous=cfg.buffer.synchronous,
                chunk_records=s.batch.max_message_records,
                min_free_bytes=int(cfg.buffer.min_free_mb * MIB),
                reserve_bytes=int(cfg.buffer.reserve_mb * MIB),
                protected_ceiling=int(quota * cfg.buffer.protected_share),
            )
            self._note_buffer(s.id, buf, recovery)
            sink, batching = make_sink(cfg, s, buf.origin)
            if isinstance(s, MqttSinkConfig) and s.password is not None and s.tls is None:
                log.warning(
                    "sink %r sends its MQTT password to %s:%d without TLS: anyone on the path can read it. "
                    "Configure tls (the broker's TLS listener).",
                    s.id,
                    s.host,
                    s.port,
                )
            if isinstance(s, MqttSinkConfig) and s.protocol == "3.1.1":
                log.warning(
                    "sink %r uses MQTT 3.1.1, which cannot tell a refused publish from a delivered one: a broker "
                    "that denies a topic (ACL) still acknowledges it, and those records are lost. Use protocol: 5.",
                    s.id,
                )
            self.buffers.append(buf)
            self.sinks.append(sink)
            self.forwarders.append(
                Forwarder(
                    buf,
                    sink,
                    site=cfg.site.id,
                    batching=batching,
                    delays=Backoff(initial=0.5, maximum=30.0).delays,
                    dead_letters=self.dead_letters,
                    on_delivered=functools.partial(self._delivered, s.id),
                    on_round_trip=self.metrics.round_trip(s.id),
                )
            )
        self.pipeline = Pipeline(
            self.plan.bindings,
            self.plan.events,
            self.buffers,
            self.live,
            delays=self.backoff.delays,
            on_stored=self._wake,
            lanes=[lanes(s) for s in cfg.sinks],
            measure=self.measure,
        )
        self.sources: list[OpcUaSource] = []
        self._previous = self.runstate.load()
        self.pipeline.restore_marks()
        self._first_connect: set[str] = set()
        self.started = datetime.now(UTC)
        app_uri = application_uri(cfg)
        self.pki = Pki(cfg.agent.data_dir / "pki")
        self.own_certificate = self.pki.ensure_own(app_uri)
        for src in cfg.sources:
            items = self.plan.items.get(src.id, [])
            events = self.plan.event_items.get(src.id, [])
            if not items and not events:
                continue
            self.sources.append(
                OpcUaSource(
                    endpoint(src, app_uri, config_path),
                    items,
                    events,
                    emit=self.pipeline.on_samples,
                    emit_events=self.pipeline.on_events,
                    interrupted=self.pipeline.on_interruption,
                    problem=self.pipeline.on_problem,
                    state=self._on_state,
                    delays=Backoff(initial=src.reconnect_initial_s, maximum=src.reconnect_max_s).delays,
                    pki=self.pki,
                    own_certificate=self.own_certificate,
                    paths=nodepaths.load(nodepaths.path_for(cfg.agent.data_dir, src.id), src.endpoint),
                    learnt=functools.partial(
                        nodepaths.save, nodepaths.path_for(cfg.agent.data_dir, src.id), src.endpoint
                    ),
                )
            )
        self.pipeline.on_mismatch = self._recheck
        self.parts = Parts(
            self.pipeline,
            self.measure,
            self.sources,
            [s.id for s in cfg.sinks],
            self.buffers,
            self.forwarders,
            self.dead_letters,
        )
        self.metrics.attach(self.parts)
        self.supervisor = Supervisor(
            delays=Backoff(initial=1.0, maximum=60.0).delays,
            max_failures=cfg.agent.failure_limit,
            window_s=cfg.agent.failure_window_s,
            report=self._component_report,
        )

    def status(self) -> dict[str, Any]:
        """The status page's document (agent/status.py)."""
        return snapshot(self.cfg, self.parts, version=self.metrics.version, started=self.started)

    def _delivered(self, sink: str, lane: str, key: str, count: int, ages: list[float]) -> None:
        self.measure.delivered(sink, lane, key, count, ages)
        self.metrics.delivered(sink, lane, key, count, ages)

    def _recheck(self, source: str, handle: int) -> None:
        """A value that does not fit its element: its node may have changed type on the server, check it."""
        for src in self.sources:
            if src.endpoint.id == source:
                src.recheck([handle], "a value of another type arrived")

    def _note_buffer(self, sink: str, buf: Buffer, recovery: Recovery | None) -> None:
        if recovery is not None:
            self._buffer_notes.append(
                (
                    "buffer-damaged",
                    f"buffer of sink {sink} was damaged ({recovery.problem}); moved to {recovery.damaged}, "
                    f"{recovery.recovered} recovered into a new buffer, {recovery.unreadable} chunks unreadable",
                    {"sink": sink, "recovered": recovery.recovered, "unreadable": recovery.unreadable},
                )
            )
        if buf.replaced is not None:
            origin, mark = buf.replaced
            self._buffer_notes.append(
                (
                    "buffer-rolled-back",
                    f"buffer of sink {sink} is new, but the one before it (origin {origin}, seqs up to {mark}) "
                    "was lost with its undelivered records",
                    {"sink": sink, "lostOrigin": origin, "highWater": mark},
                )
            )
        if buf.rolled_back is not None:
            at, mark = buf.rolled_back
            self._buffer_notes.append(
                (
                    "buffer-rolled-back",
                    f"buffer of sink {sink} ends at seq {at} but seqs up to {mark} were handed out: it lost "
                    f"committed records (a lost -wal or a restored copy); numbering continues after {mark}",
                    {"sink": sink, "fileSeq": at, "highWater": mark},
                )
            )

    def _wake(self) -> None:
        for f in self.forwarders:
            f.wake()

    async def _on_state(self, s: SourceState) -> None:
        await self.pipeline.on_state(s)
        if s.state == "connected" and s.source not in self._first_connect:
            self._first_connect.add(s.source)
            # The downtime before this start ends here (its gap began in _open_downtime).
            await self.pipeline.on_interruption(Interruption(s.source, (), s.time, s.time, "connected"))

    async def _open_downtime(self) -> None:
        """Before anything is collected: every element's gap since the previous run stopped is opened.

        Each element's gap starts at its last stored value (kept in the buffer); an earlier run
        that was killed before it reconnected left its gaps open, and they keep their start.
        """
        prev = self._previous
        if prev is not None:
            since = prev.last_alive
            reason = "agent was stopped" if prev.clean else "agent stopped unexpectedly (crash or kill)"
        elif self.pipeline.last:
            since = self.started
            reason = "agent started; the previous run left no heartbeat"
        else:
            return
        for src in self.sources:
            await self.pipeline.on_interruption(Interruption(src.endpoint.id, self._handles(src), since, None, reason))

    @staticmethod
    def _handles(src: OpcUaSource) -> tuple[int, ...]:
        return tuple(i.handle for i in src.items) + tuple(e.handle for e in src.events)

    async def _component_report(self, name: str, kind: str, message: str) -> None:
        down = sorted(self.supervisor.down)
        for sink in self.sinks:
            sink.announce("degraded" if down else "online", down)
        await self.pipeline.status(kind, f"{name}: {message}", component=name, degraded=down)

    def status_snapshot(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "started": self.started,
            "values_in": self.pipeline.values_in,
            "repeats_skipped": self.pipeline.repeats,
            "bad_values": self.pipeline.bad_values,
            "degraded": sorted(self.supervisor.down),
            "sources": {s.endpoint.id: {"connected": s.connected, "active": len(s.active)} for s in self.sources},
            "buffers": {
                sink.name: {"pending": buf.pending(), "origin": buf.origin}
                for sink, buf in zip(self.sinks, self.buffers, strict=True)
            },
            "forwarders": {
                f.sink.name: {
                    "sent": f.stats.sent_records,
                    "rejected": f.stats.rejected_records,
                    "error": f.stats.last_error,
                }
                for f in self.forwarders
            },
            "dead_letters": self.dead_letters.count(),
            "usage_log": {s.name: asdict(s.sender.stats) for s in self.sinks if isinstance(s, SfLogSink)},
        }

    async def run(self, stop: asyncio.Event, *, drain_timeout: float = 5.0) -> None:
        """Collect until `stop` is set; raises ComponentFailed when a component keeps failing."""
        sup = self.supervisor
        # First the downtime since the last run, durably, then the new heartbeat (in that order: a
        # start killed in between must not leave a later heartbeat and no open gap behind).
        await self._open_downtime()
        for sink in self.sinks:
            sup.start(f"sink-{sink.name}", sink.run)
        self._start_api()
        self.runstate.beat()
        for kind, message, details in self._buffer_notes:
            await self.pipeline.status(kind, message, **details)
        await self.pipeline.status(
            "agent-started",
            f"edge-agent {VERSION}: collecting {len(self.plan.bindings)} elements of {len(self.cfg.equipment)} "
            "machines",
            previous_stop=self._previous.last_alive if self._previous else None,
            version=VERSION,
        )
        # The AAS model and config are long-lived: keep the collector from walking them over and
        # over (it was ~10 % of the per-value cost), and let young garbage pile up a little more
        # before a collection, since every publish creates thousands of short-lived objects.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        for src in self.sources:
            sup.start(f"source-{src.endpoint.id}", src.run)
        for f in self.forwarders:
            sup.start(f"forwarder-{f.sink.name}", f.run)
        sup.start("heartbeat", self._heartbeat)
        sup.start("usage-spool", self._usage_spool)
        try:
            await sup.wait(stop)
        finally:
            await self._shutdown(drain_timeout)

    async def _shutdown(self, drain_timeout: float) -> None:
        sup = self.supervisor
        log.info("stopping: collection first, then flushing buffers")
        await sup.stop("api", *sup.names("source-"), "heartbeat", "usage-spool")  # the API ends its sessions
        self.runstate.beat()
        try:
            await self.pipeline.flush(everything=True)
            await self.pipeline.stopping({s.endpoint.id: self._handles(s) for s in self.sources}, "agent was stopped")
            await self.pipeline.status("agent-stopping", "stopped by request")
            await self.pipeline.store(self.measure.summaries(datetime.now(UTC).timestamp(), final=True))
        except Exception:  # the buffers are closed below anyway; what is stored so far is safe
            log.exception("could not record the stop")
        await sup.stop(*sup.names("forwarder-"))
        for f in self.forwarders:
            if not await f.drain(drain_timeout):
                log.warning("%s: %s records stay buffered for the next start", f.sink.name, f.buffer.pending())
        await sup.stop()
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.stop()
        for buf in self.buffers:
            buf.close()
        self.dead_letters.close()
        self.measure.close()
        self.runstate.beat(clean=True)
        log.info("stopped cleanly")

    def _start_api(self) -> None:
        """The local API (agent/api/, docs/api.md): AAS reads of the live model, sessions whose usage
        events go onto the usage lane here, guarded control writes."""
        if self.cfg.api.enabled:
            api = ApiServer(
                self.cfg,
                self.env,
                self.live,
                record=self.pipeline.usage,
                operator=Operator(metrics=self.metrics.text, status=self.status),
            )
            self.supervisor.start("api", api.run)

    async def _heartbeat(self) -> None:
        """Beat once a second; every `status_interval_s` also write the counters to the status lane."""
        loop = asyncio.get_running_loop()
        next_stats = loop.time() + self.cfg.agent.status_interval_s
        next_flush = loop.time() + STATS_FLUSH_S
        while True:
            await asyncio.sleep(1.0)
            self.runstate.beat()
            await self.pipeline.flush()
            rows = self.measure.summaries(datetime.now(UTC).timestamp())
            if rows:
                await self.pipeline.store(rows)
            if loop.time() >= next_flush:
                next_flush += STATS_FLUSH_S
                await asyncio.to_thread(self.measure.flush)
            if loop.time() >= next_stats:
                next_stats += self.cfg.agent.status_interval_s
                await self.pipeline.status("agent-stats", "counters since start", **self.status_snapshot())

    async def _usage_spool(self, every: float = 1.0) -> None:
        """Usage events of CLI commands (agent/usage.py) onto the usage lane, and control writes' outcomes
        onto the status lane; then their spool files go."""
        while True:
            taken = usage.take(self.cfg.agent.data_dir)
            if taken.files and (not taken.records or await self.pipeline.usage(taken.records)):
                taken.done()
                for lane, _, body in taken.records:
                    if lane == "status" and (doc := orjson.loads(body)).get("kind") == usage.CONTROL_KIND:
                        self.measure.control_write(doc)
            await asyncio.sleep(every)


def open_dead_letters(path: Path) -> DeadLetters:
    """The dead-letter store; a damaged one is moved aside (kept for a person) and a new one started."""
    try:
        return DeadLetters(path)
    except BufferCorruptError as e:
        aside = path.with_name(f"{path.name}.damaged-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}")
        path.rename(aside)
        log.error("dead letters %s are damaged (%s); moved to %s, starting a new store", path, e, aside)
        return DeadLetters(path)


class StartError(Exception):
    """The agent cannot start: a buffer file that is locked, foreign or unwritable, an unreadable TLS file."""


def run_agent(cfg: Config, stop_after: float | None = None, config_path: Path | None = None) -> None:
    """Run until SIGTERM/SIGINT (or `stop_after` seconds).

    Raises StartError with a message for the operator, ComponentFailed when a part of the agent
    kept failing (the caller exits non-zero so a service manager starts it afresh).
    """

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if stop_after is not None:
            loop.call_later(stop_after, stop.set)
        try:
            agent = Agent(cfg, config_path)
        except (BufferError, ValueError, OSError) as e:
            raise StartError(str(e)) from None
        await agent.run(stop)

    # Buffers, dead letters, keys and the heartbeat hold the plant's data: for the service user only.
    os.umask(0o077)
    try:
        cfg.agent.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(cfg.agent.data_dir, 0o700)
        lock = DataDirLock(cfg.agent.data_dir).acquire()
    except (DataDirBusy, OSError) as e:
        raise StartError(str(e)) from None
    if config_path is not None:
        try:
            usage.config_applied(cfg.agent.data_dir, config_path)
        except (OSError, ValueError) as e:
            log.warning("the configuration change could not be recorded for the usage log: %s", e)
    try:
        asyncio.run(main())
    finally:
        lock.release()


__all__ = ["Agent", "ComponentFailed", "StartError", "run_agent"]
