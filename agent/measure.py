"""What the agent measures about itself, for the level evidence: the statistics store and the edge analysis.

The pipeline hands it every stored value (`watch` routes the analysed elements' values to their
machine's analyzer; `stats.values_each` counts all), each interruption and connection change;
the forwarders each confirmed message; the usage spool each control write. Every `interval_s`
an analyzer's period summary becomes an `analysis` record and a row in the statistics store.

Invariants:
- Nothing here may stop collection or delivery: a failing statistics file is logged (once per
  episode) and the figures wait in memory for the next flush (agent/stats.py).
- An analyzer sees an interruption as unknown time, from the interruption's start to its end (the
  agent's view), not from each element's last value.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aas_models.live import LiveValues
from agent.analysis import AnalysisSpec, MachineAnalyzer
from agent.committer import AGENT_KEY
from agent.config import AnalysisConfig, Config
from agent.handles import Key, assign, point_key
from agent.shells import analysis_values
from agent.stats import ElementInfo, Stats, StatsError
from uploader import wire
from uploader.buffer import Row

log = logging.getLogger(__name__)

STATS_FILE = "stats.db"
RECENT_GAPS = 500


@dataclass
class _Machine:
    id: str
    shell: str
    source: str
    config: AnalysisConfig | None = None
    handles: list[int] = field(default_factory=list)
    analyzer: MachineAnalyzer | None = None
    interval_s: float = 60.0
    next_summary: float = 0.0


def elements(cfg: Config, handles: Mapping[Key, int] | None = None) -> list[ElementInfo]:
    """Every configured point, with its handle (agent/handles.py: `handles`, or those a start gives)."""
    given = handles if handles is not None else assign(cfg)
    out: list[ElementInfo] = []
    for e in cfg.equipment:
        for p in e.points:
            ms = round(p.sampling_ms) if p.sampling_ms is not None else None
            out.append(ElementInfo(given[point_key(e.id, p.path)], e.id, p.path, ms, p.mode))
    return out


class Measure:
    def __init__(
        self,
        cfg: Config,
        shells: dict[str, str],
        *,
        now: float,
        live: LiveValues | None = None,
        handles: Mapping[Key, int] | None = None,
    ) -> None:
        """`shells`: equipment id -> its shell id; `live`: where the last period's figures are served;
        `handles`: each element's (agent/handles.py)."""
        self.live = live
        infos = elements(cfg, handles)
        self.stats = Stats(cfg.agent.data_dir / STATS_FILE, infos, retention_days=cfg.agent.stats_retention_days)
        self.machines: dict[str, _Machine] = {}
        self.watch: dict[int, list[tuple[MachineAnalyzer, str]]] = {}
        self._machines(cfg, shells, infos, now)
        self._failing = False
        self.gap_seconds: dict[str, float] = {}  # per source: seconds of its closed interruptions, since start
        self.open_gaps: dict[str, float] = {}  # per source: start (epoch) of its open interruption
        # The latest interruptions, for the status page: [source, start, end or None, reason], oldest first.
        self.recent_gaps: deque[list[Any]] = deque(maxlen=RECENT_GAPS)

    def reconfigure(self, cfg: Config, shells: dict[str, str], handles: Mapping[Key, int], now: float) -> None:
        """A reload: the elements and machines of `cfg`. A machine whose analysis settings and elements
        did not change keeps its analyzer (its period goes on); the figures collected so far stay."""
        infos = elements(cfg, handles)
        self.stats.configure(infos)
        self._machines(cfg, shells, infos, now)

    def _machines(self, cfg: Config, shells: dict[str, str], infos: list[ElementInfo], now: float) -> None:
        by_path = {(i.machine, i.path): i.handle for i in infos}
        machines: dict[str, _Machine] = {}
        watch: dict[int, list[tuple[MachineAnalyzer, str]]] = {}
        for e in cfg.equipment:
            m = machines[e.id] = _Machine(e.id, shells[e.id], e.source, config=e.analysis)
            m.handles = [by_path[(e.id, p.path)] for p in e.points]
            a = e.analysis
            if a is None:
                continue
            before = self.machines.get(e.id)
            same = before is not None and before.config == a and before.handles == m.handles
            if before is not None and before.analyzer is not None and same:
                m.analyzer, m.interval_s, m.next_summary = before.analyzer, before.interval_s, before.next_summary
            else:
                spec = AnalysisSpec(
                    machine=e.id,
                    state=a.state,
                    running=frozenset(a.running),
                    alarm=a.alarm,
                    part_count=a.part_count,
                    good_count=a.good_count,
                    scrap_count=a.scrap_count,
                    ideal_cycle_s=a.ideal_cycle_s,
                    interval_s=a.interval_s,
                    counter_modulus=a.counter_modulus,
                )
                m.analyzer = MachineAnalyzer(spec, now)
                m.interval_s = a.interval_s
                m.next_summary = now + a.interval_s
            for role, path in a.paths().items():
                watch.setdefault(by_path[(e.id, path)], []).append((m.analyzer, role))
        self.machines, self.watch = machines, watch

    def _of(self, source: str) -> list[_Machine]:
        return [m for m in self.machines.values() if m.source == source]

    def interrupted(self, source: str, start: datetime, end: datetime | None, reason: str) -> None:
        t0, t1 = start.timestamp(), end.timestamp() if end is not None else None
        if t1 is None:
            if source not in self.open_gaps:
                self.recent_gaps.append([source, t0, None, reason])
            self.open_gaps.setdefault(source, t0)
        else:
            self.open_gaps.pop(source, None)
            self.gap_seconds[source] = self.gap_seconds.get(source, 0.0) + max(0.0, t1 - t0)
            for gap in reversed(self.recent_gaps):
                if gap[0] == source and gap[2] is None:
                    gap[2] = t1
                    break
            else:
                self.recent_gaps.append([source, t0, t1, reason])
        for m in self._of(source):
            self.stats.gap(m.id, m.handles, t0, t1, reason)
            if m.analyzer is not None:
                m.analyzer.unknown(t0, t1)

    def connection(self, source: str, connected: bool, at: datetime) -> None:
        for m in self._of(source):
            self.stats.source_state(m.id, connected, at.timestamp())

    def delivered(self, sink: str, lane: str, key: str, count: int, latencies: list[float]) -> None:
        self.stats.delivered(sink, None if key == AGENT_KEY else key, lane, count, latencies)

    def control_write(self, body: dict[str, Any]) -> None:
        """A `control-write` status record (agent/control.py) that the usage spool brought in."""
        at = datetime.fromisoformat(str(body.get("time", ""))).timestamp()
        ok = body.get("result") == "written"
        self.stats.control_write(
            str(body.get("machine", "")),
            str(body.get("element", "")),
            str(body.get("user", "")),
            ok,
            at,
            str(body.get("message", "")),
        )

    def summaries(self, now: float, *, final: bool = False) -> list[Row]:
        """The analysis records of every machine whose interval has passed (every one with a period
        begun when `final`: the agent stops), as rows for the analysis lane."""
        rows: list[Row] = []
        for m in self.machines.values():
            if m.analyzer is None or now <= m.analyzer.start or (now < m.next_summary and not final):
                continue
            summary = m.analyzer.summary(now)
            m.next_summary = now + m.interval_s
            self.stats.analysis(m.id, summary)
            if self.live is not None:
                for path, value in analysis_values(summary):
                    self.live.update(m.shell, path, value)
            rows.append(("analysis", m.id, now, wire.analysis_body(shell=m.shell, summary=summary)))
        return rows

    def flush(self) -> None:
        """Write the figures to the statistics file; a failure is logged once and retried next time."""
        try:
            self.stats.flush()
        except StatsError as e:
            if not self._failing:
                log.error("statistics for the level report cannot be written (kept in memory, retried): %s", e)
                self._failing = True
            return
        if self._failing:
            log.info("statistics are written again")
            self._failing = False

    def close(self) -> None:
        self.flush()
        self.stats.close()


def stats_path(data_dir: Path) -> Path:
    return data_dir / STATS_FILE


__all__ = ["Measure", "elements", "stats_path"]
