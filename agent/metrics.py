"""The agent's metrics in the Prometheus text format (prometheus-client), served at `/metrics` (docs/operations.md).

Nothing here is per-value work: counters the agent keeps anyway (pipeline, committer, forwarders,
sources, the statistics store) are read when a scrape asks, by a collector; only the histograms
are observed as things happen, once per confirmed message (its records' ages, a sample of at most a
few per message, as the level statistics take them), once per sent batch (its round trip) and once
per stored notification (the ages of its first and last value on arrival).

Metric names (all `edge_agent_`; labels in braces):
- values_in_total{machine}: values stored into the buffers, per machine
- records_out_total{sink,lane,machine}: records the far end confirmed
- buffer_records{sink,lane}, buffer_bytes{sink}: what waits in each sink's buffer, and its file size
- dropped_total{sink,reason}: records the agent gave up: `quota` (the disk quota dropped the oldest),
  `rejected` (the far end refused them: dead letters); values_dropped_total{reason}: values not stored:
  `bad-value` (did not fit the element's type, kept on the status lane), `not-stored` (the disk refused)
- repeats_skipped_total: values a resubscription re-reported unchanged
- source_connected{source}, reconnects_total{source}, elements_active{source}
- gap_seconds_total{source}: time collection was interrupted (an open interruption counts up to now)
- send_failures_total{sink}, dead_letters
- publish_round_trip_seconds{sink}: from handing a batch to the sink to its answer (histogram)
- delivery_age_seconds{sink,lane}: from a record's own time (a value's source time) to the far end's
  confirmation (histogram)
- receive_age_seconds{source}: from a value's own time to the agent taking it in, the first and last
  value of each notification (histogram): the server's sampling and publishing delay, plus how far its
  clock is from ours (a clock ahead of ours gives ages below zero). delivery_age minus receive_age is
  what the agent itself adds.
- info{version}, and the process's own: process_resident_memory_bytes, process_cpu_seconds_total, …
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Histogram, Info, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.committer import AGENT_KEY
from agent.status import Parts, buffer_figures

_AGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, float("inf"))
_RTT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, float("inf"))


class Metrics:
    def __init__(self, version: str) -> None:
        self.version = version
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        Info("edge_agent", "the agent's version", registry=self.registry).info({"version": version})
        self._age = Histogram(
            "edge_agent_delivery_age_seconds",
            "seconds from a record's own time (a value's source time) to the far end's confirmation",
            ["sink", "lane"],
            buckets=_AGE_BUCKETS,
            registry=self.registry,
        )
        self._rtt = Histogram(
            "edge_agent_publish_round_trip_seconds",
            "seconds from handing a batch's messages to the sink to its answer",
            ["sink"],
            buckets=_RTT_BUCKETS,
            registry=self.registry,
        )
        self._arrival = Histogram(
            "edge_agent_receive_age_seconds",
            "seconds from a value's own time to the agent taking it in (first and last value of each notification)",
            ["source"],
            buckets=_AGE_BUCKETS,
            registry=self.registry,
        )
        self._out: dict[tuple[str, str, str], int] = {}
        self._state = _State(self._out)
        self.registry.register(self._state)

    def attach(self, parts: Parts) -> None:
        self._state.parts = parts

    def delivered(self, sink: str, lane: str, key: str, count: int, ages: Sequence[float]) -> None:
        """A message the far end confirmed (the forwarder's `on_delivered`, after the level statistics)."""
        label = (sink, lane, "" if key == AGENT_KEY else key)
        self._out[label] = self._out.get(label, 0) + count
        observe = self._age.labels(sink, lane).observe
        for age in ages:
            observe(age)

    def received(self, source: str, ages: tuple[float, float]) -> None:
        """A notification's values were stored (the pipeline's `on_received`)."""
        observe = self._arrival.labels(source).observe
        observe(ages[0])
        observe(ages[1])

    def round_trip(self, sink: str) -> Callable[[float], None]:
        """The forwarder's `on_round_trip` for `sink`."""
        return self._rtt.labels(sink).observe

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _State(Collector):
    """The counters and gauges the agent keeps anyway, read at each scrape."""

    def __init__(self, out: dict[tuple[str, str, str], int]) -> None:
        self.parts: Parts | None = None
        self._out = out

    def describe(self) -> Iterable[Metric]:
        return []  # the metrics are only known once attached; the registry needs no description up front

    def collect(self) -> Iterator[Metric]:
        p = self.parts
        if p is None:
            return
        yield from self._collection(p)
        yield from self._delivery(p)

    def _collection(self, p: Parts) -> Iterator[Metric]:
        values = CounterMetricFamily("edge_agent_values_in", "values stored into the buffers", labels=["machine"])
        counts = p.measure.stats.counts()
        for m in p.measure.machines.values():
            values.add_metric([m.id], sum(counts.get(h, 0) for h in m.handles))
        yield values
        dropped = CounterMetricFamily("edge_agent_values_dropped", "values not stored, by reason", labels=["reason"])
        dropped.add_metric(["bad-value"], p.pipeline.bad_values)
        dropped.add_metric(["not-stored"], p.pipeline.not_stored)
        yield dropped
        yield CounterMetricFamily(
            "edge_agent_repeats_skipped", "values a resubscription re-reported unchanged", value=p.pipeline.repeats
        )
        connected = GaugeMetricFamily("edge_agent_source_connected", "1 while connected", labels=["source"])
        reconnects = CounterMetricFamily("edge_agent_reconnects", "sessions set up again", labels=["source"])
        active = GaugeMetricFamily("edge_agent_elements_active", "items being collected", labels=["source"])
        gaps = CounterMetricFamily("edge_agent_gap_seconds", "time collection was interrupted", labels=["source"])
        now = time.time()
        for s in p.sources:
            sid = s.endpoint.id
            connected.add_metric([sid], 1.0 if s.connected else 0.0)
            reconnects.add_metric([sid], s.reconnects)
            active.add_metric([sid], len(s.active))
            open_since = p.measure.open_gaps.get(sid)
            gaps.add_metric([sid], p.measure.gap_seconds.get(sid, 0.0) + (now - open_since if open_since else 0.0))
        yield from (connected, reconnects, active, gaps)

    def _delivery(self, p: Parts) -> Iterator[Metric]:
        depth = GaugeMetricFamily("edge_agent_buffer_records", "records waiting in the buffer", labels=["sink", "lane"])
        size = GaugeMetricFamily("edge_agent_buffer_bytes", "size of the buffer's files", labels=["sink"])
        dropped = CounterMetricFamily("edge_agent_dropped", "records given up, by reason", labels=["sink", "reason"])
        for sink, buf in zip(p.sinks, p.buffers, strict=True):
            for lane, n in buf.pending().items():
                depth.add_metric([sink, lane], n)
            on_disk, quota = buffer_figures(buf)
            if on_disk is not None and quota is not None:
                size.add_metric([sink], on_disk)
                dropped.add_metric([sink, "quota"], quota)
        failures = CounterMetricFamily("edge_agent_send_failures", "batches not wholly confirmed", labels=["sink"])
        for f in p.forwarders:
            dropped.add_metric([f.sink.name, "rejected"], f.stats.rejected_records)
            failures.add_metric([f.sink.name], f.stats.failed_sends)
        out = CounterMetricFamily(
            "edge_agent_records_out", "records the far end confirmed", labels=["sink", "lane", "machine"]
        )
        for labels, n in list(self._out.items()):
            out.add_metric(list(labels), n)
        yield from (depth, size, dropped, failures, out)
        yield GaugeMetricFamily("edge_agent_dead_letters", "records in the dead letters", value=p.dead_letters.count())
