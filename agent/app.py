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

from aas_models.live import LiveValues, carry
from aas_models.timeseries import rings_for
from adapters.opcua.pki import Pki
from adapters.opcua.source import OpcUaSource
from adapters.sample import Interruption, SourceState
from agent import logs, nodepaths, usage
from agent.backoff import Backoff
from agent.clock import ClockWatch
from agent.config import Config, ConfigError, secrets
from agent.config import Source as SourceConfig
from agent.config import load as load_config
from agent.config_sinks import MqttSinkConfig
from agent.deadletters import FILE as DEAD_LETTERS
from agent.lock import DataDirBusy, DataDirLock
from agent.measure import Measure
from agent.metrics import Metrics
from agent.pipeline import Pipeline
from agent.reload import Changes, compare
from agent.runstate import RunState
from agent.shells import ModelOnDemand, build_shells, shell_specs
from agent.status import Parts, snapshot
from agent.supervisor import ComponentFailed, Supervisor
from agent.version import VERSION
from agent.wiring import AnySink, application_uri, endpoint, lanes, make_sink, plan
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
        # Collecting needs only the specs. Only the local API reads the AAS model (SDK objects, ~4 KB per element)
        # and the recent records (Time Series Data): the model is built at its first AAS read (ModelOnDemand), and
        # without the API (api.enabled false) neither is kept.
        self.specs = shell_specs(cfg)
        self.model = ModelOnDemand(functools.partial(build_shells, cfg, self.specs))
        self.live = LiveValues(series=rings_for(self.specs) if cfg.api.enabled else {})
        self.plan = plan(cfg, self.specs)
        self.backoff = Backoff(initial=1.0, maximum=30.0)
        cfg.agent.data_dir.mkdir(parents=True, exist_ok=True)
        self.runstate = RunState(cfg.agent.data_dir / "agent-state.json")
        quota = int(cfg.buffer.quota_mb * MIB / len(cfg.sinks))
        self.buffers: list[Buffer] = []
        self.sinks: list[Sink] = []
        self.forwarders: list[Forwarder] = []
        self.dead_letters = open_dead_letters(cfg.agent.data_dir / DEAD_LETTERS)
        self.measure = Measure(
            cfg, _shells(cfg), now=datetime.now(UTC).timestamp(), live=self.live, handles=self.plan.handles
        )
        self._buffer_notes: list[tuple[str, str, dict[str, Any]]] = []  # (kind, message, details) to record
        self.metrics = Metrics(VERSION)
        self.clocks = ClockWatch()
        for s in cfg.sinks:
            buf = self._open_buffer(cfg, s, quota)
            sink, forwarder = self._sink_on(s, buf)
            self.buffers.append(buf)
            self.sinks.append(sink)
            self.forwarders.append(forwarder)
        self.pipeline = Pipeline(
            self.plan.bindings,
            self.plan.events,
            self.buffers,
            self.live,
            delays=self.backoff.delays,
            on_stored=self._wake,
            lanes=[lanes(s) for s in cfg.sinks],
            measure=self.measure,
            on_received=self._received,
        )
        self.sources: list[OpcUaSource] = []
        self._previous = self.runstate.load()
        self.pipeline.restore_marks()
        self._first_connect: set[str] = set()
        self.started = datetime.now(UTC)
        self.config_path = config_path
        self.app_uri = application_uri(cfg)
        self.pki = Pki(cfg.agent.data_dir / "pki")
        self.own_certificate = self.pki.ensure_own(self.app_uri)
        for src in cfg.sources:
            source = self._source(src)
            if source is not None:
                self.sources.append(source)
        self.pipeline.on_mismatch = self._recheck
        self._handles = dict(self.plan.handles)  # every element's handle, also of those a reload removed
        self._reloading = asyncio.Lock()
        self._running = False  # collectors started, not yet stopping: a reload may change them
        self.parts = Parts(
            self.pipeline,
            self.measure,
            self.sources,
            [s.id for s in cfg.sinks],
            self.buffers,
            self.forwarders,
            self.dead_letters,
            self.clocks,
        )
        self.metrics.attach(self.parts)
        self.supervisor = Supervisor(
            delays=Backoff(initial=1.0, maximum=60.0).delays,
            max_failures=cfg.agent.failure_limit,
            window_s=cfg.agent.failure_window_s,
            report=self._component_report,
        )

    def _open_buffer(self, cfg: Config, s: AnySink, quota: int) -> Buffer:
        """The buffer of sink `s` (opened, or recovered when damaged: noted, to be recorded)."""
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
        return buf

    def _sink_on(self, s: AnySink, buf: Buffer) -> tuple[Sink, Forwarder]:
        """The sink `s` and its forwarder, sending from `buf`."""
        sink, batching = make_sink(self.cfg, s, buf.origin)
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
        forwarder = Forwarder(
            buf,
            sink,
            site=self.cfg.site.id,
            batching=batching,
            delays=Backoff(initial=0.5, maximum=30.0).delays,
            dead_letters=self.dead_letters,
            on_delivered=functools.partial(self._delivered, s.id),
            on_round_trip=self.metrics.round_trip(s.id),
        )
        return sink, forwarder

    def _source(self, src: SourceConfig) -> OpcUaSource | None:
        """The collector of one configured source; None when no equipment is read from it."""
        items = self.plan.items.get(src.id, [])
        events = self.plan.event_items.get(src.id, [])
        if not items and not events:
            return None
        data_dir = self.cfg.agent.data_dir
        return OpcUaSource(
            endpoint(src, self.app_uri, self.config_path),
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
            paths=nodepaths.load(nodepaths.path_for(data_dir, src.id), src.endpoint),
            raw_times=True,  # the pipeline takes ticks: no datetime per value
            learnt=functools.partial(nodepaths.save, nodepaths.path_for(data_dir, src.id), src.endpoint),
        )

    async def reload(self, why: str) -> dict[str, Any]:
        """Re-read the config file and apply what changed (agent/reload.py says what may change without a
        restart). Answers {"applied", "message", "changes"}; never raises for a bad or refused config: it
        is logged and recorded, and the agent goes on as it was."""
        async with self._reloading:
            try:
                return await self._reload(why)
            except Exception as e:  # a bug: the agent goes on with what is applied; say so loudly
                log.exception("reload (%s) failed part way", why)
                return {"applied": False, "message": f"reload failed part way: {type(e).__name__}: {e}"}

    async def _refuse(self, message: str, changes: Changes | None = None) -> dict[str, Any]:
        log.error("configuration not reloaded: %s", message)
        details = {"changes": changes.as_dict()} if changes is not None else {}
        await self.pipeline.status("config-reload-refused", f"configuration not reloaded: {message}", **details)
        return {"applied": False, "message": message, **details}

    async def _reload(self, why: str) -> dict[str, Any]:
        if not self._running:  # nothing is recorded: the buffers may be closed already
            log.warning("configuration not reloaded (%s): the agent is starting or stopping", why)
            return {"applied": False, "message": "the agent is starting or stopping; try again once it runs"}
        if self.config_path is None:
            return await self._refuse("the agent was started without a configuration file")
        old_env = await self.model.settled()  # the model of the running config (if built), to carry its values over
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
            specs = shell_specs(new)
        except (ConfigError, ValueError) as e:
            return await self._refuse(f"{self.config_path} has errors; nothing was changed:\n{e}")
        changes = compare(self.cfg, new)
        if changes.restart:
            return await self._refuse(
                f"{', '.join(changes.restart)} change only with a restart (systemctl restart edge-agent); nothing "
                "was changed",
                changes,
            )
        if changes.empty:
            log.info("configuration reloaded (%s): nothing changed", why)
            return {"applied": True, "message": "nothing changed", "changes": {}}
        try:
            env = await asyncio.to_thread(build_shells, new, specs)
        except ValueError as e:
            return await self._refuse(f"its AAS model cannot be built; nothing was changed: {e}", changes)
        # New buffers first: a buffer that cannot be opened refuses the reload before anything changed.
        quota = int(new.buffer.quota_mb * MIB / len(new.sinks))
        parts = zip(self.cfg.sinks, self.buffers, self.sinks, self.forwarders, strict=True)
        current = {s.id: (b, k, f) for s, b, k, f in parts}
        opened: dict[str, Buffer] = {}
        notes = len(self._buffer_notes)
        try:
            for s in new.sinks:
                if s.id not in current:
                    opened[s.id] = self._open_buffer(new, s, quota)
        except (BufferError, ValueError, OSError) as e:
            for b in opened.values():
                b.close()
            return await self._refuse(f"a new sink's buffer cannot be opened: {e}", changes)
        reason = f"configuration reloaded ({why})"
        sup = self.supervisor
        going = [*changes.sinks_removed, *changes.sinks_changed]
        await sup.stop(*[f"forwarder-{i}" for i in going], *[f"sink-{i}" for i in going])
        for i in going:
            with contextlib.suppress(Exception):
                await current[i][1].stop()
        self.cfg = new
        logs.mask(secrets(new))
        buffers, sinks, forwarders, fresh = [], [], [], []
        for s in new.sinks:
            if s.id in opened:
                buf = opened[s.id]
                buf.add([], self.buffers[0].marks().items())  # each element's last stored stamp, as the others
            else:
                buf = current[s.id][0]
            buf.quota_bytes, buf.protected_ceiling = quota, int(quota * new.buffer.protected_share)
            buf.chunk_records = s.batch.max_message_records
            if s.id in current and s.id not in changes.sinks_changed:
                sink, forwarder = current[s.id][1:]
            else:
                sink, forwarder = self._sink_on(s, buf)
                fresh.append((sink, forwarder))
            buffers.append(buf)
            sinks.append(sink)
            forwarders.append(forwarder)
        # The model: rebuilt, with the current values and each unchanged shell's recent records.
        if old_env is not None:
            self.live.apply(old_env)
            carry(old_env, env)
        serving = new.api.enabled  # else nothing reads the model: it was built only to check the config
        rings = rings_for(specs) if serving else {}
        for sid, ring in rings.items():
            before = self.live.series.get(sid)
            if before is not None and before.variables == ring.variables:
                rings[sid] = before
        self.live.series = rings
        # Kept only when the model of the config before was in memory: else it is built again at the first read.
        kept = env if serving and old_env is not None else None
        self.model.replace(functools.partial(build_shells, new, specs), kept)
        self.specs = specs
        self.plan = plan(new, specs, self._handles)
        self._handles |= self.plan.handles
        self.measure.reconfigure(new, _shells(new), self.plan.handles, datetime.now(UTC).timestamp())
        removed = await self.pipeline.reconfigure(
            self.plan.bindings, self.plan.events, buffers, [lanes(s) for s in new.sinks], reason
        )
        for i in changes.sinks_removed:
            buf = current[i][0]
            if pending := buf.pending():
                log.warning("sink %s removed: %d records stay in %s (sent if the sink is configured again)",
                            i, pending, buf.path)  # fmt: skip
            buf.close()
        self.buffers[:], self.sinks[:], self.forwarders[:] = buffers, sinks, forwarders
        self.parts.sinks[:] = [s.id for s in new.sinks]
        await self._resource(changes, reason)
        for sink, forwarder in fresh:
            sup.start(f"sink-{sink.name}", sink.run)
            sup.start(f"forwarder-{sink.name}", forwarder.run)
        for kind, message, details in self._buffer_notes[notes:]:
            await self.pipeline.status(kind, message, **details)
        try:
            usage.config_applied(new.agent.data_dir, self.config_path)
        except (OSError, ValueError) as e:
            log.warning("the configuration change could not be recorded for the usage log: %s", e)
        message = f"{reason}: {changes.summary()}"
        log.info("%s", message)
        await self.pipeline.status("config-reloaded", message, changes=changes.as_dict(), elementsRemoved=len(removed))
        return {"applied": True, "message": message, "changes": changes.as_dict()}

    async def _resource(self, changes: Changes, reason: str) -> None:
        """Each source's collector after a reload: told its new items (its session goes on), or stopped,
        or started anew (a source with new connection settings: its elements' gap lasts until it is back)."""
        sup = self.supervisor
        running = {s.endpoint.id: s for s in self.sources}
        keep: list[OpcUaSource] = []
        for conf in self.cfg.sources:
            cur = running.pop(conf.id, None)
            items, events = self.plan.items.get(conf.id, []), self.plan.event_items.get(conf.id, [])
            if cur is not None and conf.id not in changes.sources_changed and (items or events):
                await cur.update(items, events)
                keep.append(cur)
                continue
            if cur is not None:
                running[conf.id] = cur  # stopped below
            new = self._source(conf)
            if new is not None:
                keep.append(new)
        for sid, cur in running.items():
            if sid in changes.sources_changed:
                bound = self.pipeline.bindings.keys() | self.pipeline.events.keys()
                handles = tuple(h for h in self._source_handles(cur) if h in bound)
                await self.pipeline.on_interruption(Interruption(sid, handles, datetime.now(UTC), None, reason))
            await sup.stop(f"source-{sid}")
            self._first_connect.discard(sid)  # a new collector's first connect ends the gap
        names = {s.endpoint.id for s in self.sources}
        self.sources[:] = keep
        for src in keep:
            if src.endpoint.id not in names or src.endpoint.id in running:
                sup.start(f"source-{src.endpoint.id}", src.run)

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
            await self.pipeline.on_interruption(
                Interruption(src.endpoint.id, self._source_handles(src), since, None, reason)
            )

    @staticmethod
    def _source_handles(src: OpcUaSource) -> tuple[int, ...]:
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
        # over (it was ~10 % of the per-value cost). A publish of 5,000 values makes about 140,000
        # container objects that live until it is stored: a young collection every 200,000 instead of
        # every 20,000 no longer walks (and promotes) a publish still in hand several times; over a
        # bench run at 10,000 values/s, young and middle collections went from 0.87 to 0.16 s.
        gc.collect()
        gc.freeze()
        gc.set_threshold(200_000, 20, 20)
        for src in self.sources:
            sup.start(f"source-{src.endpoint.id}", src.run)
        for f in self.forwarders:
            sup.start(f"forwarder-{f.sink.name}", f.run)
        sup.start("heartbeat", self._heartbeat)
        sup.start("usage-spool", self._usage_spool)
        if self.cfg.api.enabled:
            self._start_api()
        else:
            log.info("local API off (api.enabled: false): no AAS model is kept in memory")
        self._running = True
        try:
            await sup.wait(stop)
        finally:
            self._running = False
            async with self._reloading:  # a reload under way finishes first
                await self._shutdown(drain_timeout)

    async def _shutdown(self, drain_timeout: float) -> None:
        sup = self.supervisor
        self.model.cancel()
        log.info("stopping: collection first, then flushing buffers")
        await sup.stop("api", *sup.names("source-"), "heartbeat", "usage-spool")  # the API ends its sessions
        self.runstate.beat()
        try:
            await self.pipeline.flush(everything=True)
            await self.pipeline.stopping(
                {s.endpoint.id: self._source_handles(s) for s in self.sources}, "agent was stopped"
            )
            await self.pipeline.status("agent-stopping", "stopped by request")
            await self.pipeline.store(self.measure.summaries(datetime.now(UTC).timestamp(), final=True))
        except Exception:  # the buffers are closed below anyway; what is stored so far is safe
            log.exception("could not record the stop")
        await sup.stop(*sup.names("forwarder-"))
        # Every sink drains at once, within the one deadline (a service manager's stop timeout counts it once).
        drained = await asyncio.gather(*(f.drain(drain_timeout) for f in self.forwarders), return_exceptions=True)
        for f, done in zip(self.forwarders, drained, strict=True):
            if isinstance(done, BaseException):
                log.warning("%s: draining failed (%r); what is buffered stays for the next start", f.sink.name, done)
            elif not done:
                log.warning("%s: %s records stay buffered for the next start", f.sink.name, f.buffer.pending())
        await sup.stop_all()
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.stop()
        await self.pipeline.committer.close()  # a commit whose caller was cancelled still finishes
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
            # Imported here: aiohttp and the API's modules (~13 MB) are not loaded by an agent without the API.
            from agent.api.operator import Operator
            from agent.api.server import ApiServer

            api = ApiServer(
                self.cfg,
                self.model,
                self.live,
                record=self.pipeline.usage,
                operator=Operator(metrics=self.metrics.text, status=self.status, reload=self.reload),
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
                await self._check_clocks()
                await self.pipeline.status(
                    "agent-stats",
                    "counters since start",
                    **self.status_snapshot(),
                    receive_age_ms=self.clocks.ages_ms,  # the interval _check_clocks closed
                )

    def _received(self, source: str, ages: tuple[float, float]) -> None:
        """A notification's values were stored: how old they arrived, for the metrics and the clock check."""
        self.metrics.received(source, ages)
        self.clocks.seen(source, ages)

    async def _check_clocks(self) -> None:
        for change in self.clocks.check():
            (log.info if change.state == "agrees" else log.warning)("%s", change.message)
            await self.pipeline.status(
                "source-clock",
                change.message,
                source=change.source,
                state=change.state,
                offset_s=round(change.offset_s, 3),
                values=change.values,
            )

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


def _shells(cfg: Config) -> dict[str, str]:
    """equipment id -> its shell's id"""
    return {e.id: cfg.aas_id(e) for e in cfg.equipment}


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
        reloads: set[asyncio.Task[Any]] = set()

        def hangup() -> None:  # SIGHUP: re-read the config (systemctl reload); one at a time, in order
            task = asyncio.ensure_future(agent.reload("SIGHUP"))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, hangup)
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
