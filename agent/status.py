"""What the operator's status page and `edge-agent status` show, as one JSON document (`GET /status`).

Built on request from what the running agent keeps anyway (docs/operations.md, "Status page"):
- per machine: its source's connection state and since when (and why, when down); per element its AAS
  path, label (the configured display name in the site's language), last stored value with unit, its
  time and age, and its OPC UA status as a name (`BadNodeIdUnknown`, not 2156658688);
- per sink: buffer depth per lane and file size, records confirmed and refused, the last error;
- counters for throughput (values in, records out: the page turns two readings into rates);
- interruptions of the last 24 h; the node problems the conformance checks found (and whether the
  element is collected again since).
A value the agent has not seen since its start (only its digest survives a restart) is shown as null.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aas_models.text import Text
from adapters.opcua.source import OpcUaSource
from adapters.opcua.values import status_name
from agent.clock import ClockWatch
from agent.config import Config
from agent.measure import Measure
from agent.pipeline import Pipeline
from uploader.buffer import Buffer, BufferError
from uploader.deadletter import DeadLetters
from uploader.forwarder import Forwarder

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Parts:
    """What the status and the metrics are read from: the running agent's parts (agent/app.py)."""

    pipeline: Pipeline
    measure: Measure
    sources: list[OpcUaSource]
    sinks: list[str]  # sink names, in the order of `buffers`
    buffers: list[Buffer]
    forwarders: list[Forwarder]
    dead_letters: DeadLetters
    clocks: ClockWatch


def label(text: Text | None, language: str) -> str | None:
    """A configured text for people: the site language's entry, else its primary language's, else the first."""
    if text is None or isinstance(text, str):
        return text
    primary = language.split("-")[0].lower()
    for tag, value in text.items():
        if tag.lower() == language.lower():
            return value
    for tag, value in text.items():
        if tag.split("-")[0].lower() == primary:
            return value
    return next(iter(text.values()), None)


def _iso(t: float | datetime | None) -> str | None:
    if t is None:
        return None
    when = t if isinstance(t, datetime) else datetime.fromtimestamp(t, UTC)
    return when.isoformat().replace("+00:00", "Z")


def snapshot(cfg: Config, parts: Parts, *, version: str, started: datetime) -> dict[str, Any]:
    now = datetime.now(UTC)
    t_now = now.timestamp()
    language = cfg.site.language
    pipeline = parts.pipeline
    sources = {s.endpoint.id: s for s in parts.sources}
    by_machine: dict[str, list[dict[str, Any]]] = {}
    points = {(e.id, p.path): p for e in cfg.equipment for p in e.points}
    for h, b in pipeline.bindings.items():
        last = pipeline.latest(h)
        p = points.get((b.equipment, b.path))
        problem = pipeline.problems.get(h)
        src = sources.get(b.source)
        by_machine.setdefault(b.equipment, []).append(
            {
                "path": b.path,
                "label": label(p.display_name, language) if p is not None else None,
                "unit": p.unit if p is not None else None,
                "valueType": b.value_type,
                "node": b.node,
                "value": last[2] if last is not None else None,
                "valueKnown": last is not None and last[3],
                "time": _iso(last[0]) if last is not None else None,
                "ageS": round(t_now - last[0], 3) if last is not None else None,
                "status": last[1] if last is not None else None,
                "statusName": status_name(last[1]) if last is not None else None,
                "collected": src is not None and h in src.active,
                "problem": problem[0].problem if problem is not None else None,
            }
        )
    machines = []
    for e in cfg.equipment:
        src = sources.get(e.source)
        machines.append(
            {
                "id": e.id,
                "name": label(e.name, language),
                "source": e.source,
                "endpoint": src.endpoint.url if src is not None else None,
                "connected": bool(src is not None and src.connected),
                "since": _iso(src.since) if src is not None else None,
                "reason": src.last_problem if src is not None and not src.connected else "",
                "clock": parts.clocks.view(e.source),
                "elements": by_machine.get(e.id, []),
            }
        )
    sinks = []
    for name, buf in zip(parts.sinks, parts.buffers, strict=True):
        f = next((f for f in parts.forwarders if f.buffer is buf), None)
        size, dropped = buffer_figures(buf)
        sinks.append(
            {
                "name": name,
                "connected": bool(f is not None and f.sink.connected),
                "buffer": buf.pending(),
                "bufferBytes": size,
                "sent": f.stats.sent_records if f is not None else 0,
                "rejected": f.stats.rejected_records if f is not None else 0,
                "failedSends": f.stats.failed_sends if f is not None else 0,
                "quotaDropped": dropped,
                "lastSuccess": _iso(f.stats.last_success) if f is not None else None,
                "lastError": f.stats.last_error if f is not None else "",
            }
        )
    gaps = [
        {"source": s, "start": _iso(t0), "end": _iso(t1), "seconds": round((t1 or t_now) - t0, 3), "reason": reason}
        for s, t0, t1, reason in parts.measure.recent_gaps
        if (t1 or t_now) >= t_now - DAY_S
    ]
    problems = [
        {
            "machine": pipeline.bindings[h].equipment if h in pipeline.bindings else None,
            "path": pipeline.bindings[h].path if h in pipeline.bindings else None,
            "node": p.node,
            "kind": p.kind,
            "problem": p.problem,
            "time": _iso(when),
            "collected": any(h in s.active for s in parts.sources),
        }
        for h, (p, when) in sorted(pipeline.problems.items(), key=lambda kv: kv[1][1])
    ]
    return {
        "version": version,
        "site": {"id": cfg.site.id, "name": cfg.site.name, "language": language},
        "started": _iso(started),
        "now": _iso(now),
        "valuesIn": pipeline.values_in,
        "recordsOut": sum(f.stats.sent_records for f in parts.forwarders),
        "badValues": pipeline.bad_values,
        "machines": machines,
        "sinks": sinks,
        "gaps": gaps,
        "problems": problems,
        "deadLetters": parts.dead_letters.count(),
    }


def buffer_figures(buf: Buffer) -> tuple[int | None, int | None]:
    """(bytes on disk with the WAL, records the disk quota dropped since open) from the buffer's own
    counters; (None, None) while the buffer cannot be read (a page or status shows it as unknown)."""
    try:
        st = buf.stats()
    except BufferError:
        return None, None
    return st.db_bytes + st.wal_bytes, sum(st.dropped.values())
