"""Smart-factory level evidence (KS X 9001) from what the agent measured: agent/stats.py's file.

`build` reads the statistics file (read-only; the agent may be running) and returns a plain dict
(JSON-ready); `render_json` and `render_html` write it out. docs/level-evidence.md explains every
figure for a reader of the report; the rules are these.

Period. Figures are stored per UTC hour, so a given `since` is floored and a given `until` ceiled
to whole hours. The period never starts before the file's `covered_from` (its first open, or the
retention cutoff) and never ends after its last flush (the time after it is not measured yet).
Without `since`/`until` it is exactly that covered range. Hour rows count when their hour starts
at or after the floored start and before the end; gaps, analysis summaries and control writes by
their own times.

Figures.
- Coverage: configured machines (`machines`, plus any machine of `configured`) and elements
  (`configured`, by machine and path) against those delivering. An element is *delivering* when
  it had at least one value stored in the period AND its machine had records confirmed by a sink
  in the period (in a value lane: any lane but `gap`, `status` and `usage`); a machine is
  delivering when one of its elements is. Share = delivering / configured, in %. Records confirmed
  without a machine (`delivered(machine=None)`) count for the sink's figures, not for coverage.
  Elements with data in the period that are no longer configured are listed with their figures,
  but counted neither in coverage nor in the sampling summary below.
- Sampling per element: achieved mean period = sum of intervals / number of intervals between
  consecutive source times; jitter = their population standard deviation; both in ms. Flagged
  (`slow`) when the configured sampling is > 0 and the achieved mean is > 1.5 x configured; an
  element *meets its configured sampling* when it is > 0 and the mean is <= 1.5 x configured.
- Gaps: every gap overlapping the period, clipped to it (an open gap runs to the period end);
  seconds per machine are the union of its gaps (overlaps counted once).
- Uptime per machine: connected seconds in the period / period seconds, in %.
- Latency per sink: p50/p95/p99 of source time to far-end confirmation, read from the merged
  histograms (within one bucket: 20 buckets per decade, about 12 %).
- Analysis per machine: the summaries overlapping the period, the last three, and totals: sums of
  cycles, alarms (a number, or the length of a list), running seconds and seconds per state
  (`state_seconds`, or `state_s` as agent/analysis.py names it); means of availability,
  performance, quality and OEE weighted by each summary's observed seconds (`observed_s`, else its
  duration); the cycle-weighted mean cycle time.
- Control writes in the period: count, successful, failed, by user.

Levels (cumulative: each needs the one below). Each criterion is stated with its figure in Korean
and English, under `supporting` when met, `missing` when not; `supported` = all met.
- 기초 (Basic, production data digitised): `elements_delivering`: at least one configured element
  delivering; `coverage`: a coverage figure (at least one element configured).
- 중간1 (Intermediate 1, real-time collection and analysis): `basic` supported; `realtime`: the
  median of the delivering elements' achieved mean periods is <= 1000 ms, or at least half of the
  delivering elements that have a configured sampling meet it, or a sink's end-to-end latency p95
  is <= 5000 ms (values reported on change arrive seconds, not hours, after they happen: their
  period is the process's, not the collection's); `latency`: a p95 latency measured
  for at least one sink; `analysis`: at least one edge-analysis summary in the period.
- 중간2 (Intermediate 2, real-time control): `intermediate1` supported; `control_enabled`: control
  writes enabled in the configuration; `control_write`: at least one successful control write
  logged in the period.
"""

from __future__ import annotations

import math
import sqlite3
import statistics
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from agent.level_html import fmt as _f
from agent.level_html import render_html
from agent.stats import (
    HOUR,
    NO_SAMPLING,
    SCHEMA_VERSION,
    ElementInfo,
    Hist,
    StatsError,
    add_hist,
    hist_from_blob,
    new_hist,
    percentile,
)

FORMAT: Final = "edge-agent/level-evidence/1"
SLOW_FACTOR: Final = 1.5
REALTIME_MS: Final = 1000.0
REALTIME_LATENCY_MS: Final = 5000.0  # values reported on change: real time is how soon they arrive
NON_VALUE_LANES: Final = frozenset({"gap", "status", "usage", "analysis"})
LAST_SUMMARIES: Final = 3

LEVELS: Final = (
    ("basic", "기초", "Basic", "생산 데이터 디지털화", "production data digitised"),
    ("intermediate1", "중간1", "Intermediate 1", "실시간 수집·분석", "real-time collection and analysis"),
    ("intermediate2", "중간2", "Intermediate 2", "실시간 제어", "real-time control"),
)

LIMITS: Final = (
    (
        "이 보고서는 에이전트가 직접 측정한 데이터 수집·전달·제어 기록만 근거로 합니다. 수준 평가는 MES/ERP 연계, "
        "공정·품질 관리, 데이터 활용, 조직과 업무 프로세스 등 에이전트가 볼 수 없는 항목도 함께 봅니다.",
        "This report rests only on what the agent itself measured: data collection, delivery and control "
        "writes. A level assessment also looks at what the agent cannot see: MES/ERP integration, process "
        "and quality management, how the data is used, organisation and work processes.",
    ),
    (
        "수치는 UTC 시간 단위로 저장되므로 기간은 정시 단위로 맞춰지며, 마지막 저장(flush) 이후와 보존 기간 "
        "이전은 포함되지 않습니다.",
        "Figures are stored per UTC hour, so the period is widened to whole hours; it excludes what came "
        "after the last flush and what is older than the retention.",
    ),
    (
        "지연 시간과 주기는 설비·서버의 source time 기준이므로 시계 동기화(NTP)에 따라 달라집니다. 구독(subscribe) "
        "요소는 값이 바뀔 때만 보고되므로 달성 주기가 설정 주기보다 길 수 있습니다.",
        "Latency and periods use the devices' and servers' source times, so they depend on clock "
        "synchronisation (NTP). Subscribed elements report on change, so their achieved period can be "
        "longer than the configured sampling without anything being lost.",
    ),
    (
        "전달 확인은 싱크(MQTT/HTTP 등)의 수신 확인까지이며, 수신 측에서 데이터를 어떻게 쓰는지는 알 수 없습니다. "
        "제어 쓰기는 에이전트를 거친 것만 기록됩니다.",
        "Delivery is confirmed up to the sink's acknowledgement (MQTT/HTTP...); what the far end does with "
        "the data is not seen. Only control writes made through the agent are logged.",
    ),
)


# -- reading -----------------------------------------------------------------------------------


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _epoch(d: datetime) -> float:
    return (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp()


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _whole(v: float | None) -> float | int | None:
    """A sum as an int when it is whole (counts), else rounded."""
    if v is None:
        return None
    return int(v) if v.is_integer() else round(v, 3)


def _pct(part: float, whole: float) -> float | None:
    return None if whole <= 0 else round(100.0 * part / whole, 1)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise StatsError(f"statistics file {path} does not exist (has the agent flushed its statistics yet?)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as e:
        raise StatsError(f"statistics file {path} cannot be read: {e}") from e
    if version != SCHEMA_VERSION:
        db.close()
        raise StatsError(f"{path} is not a statistics file of version {SCHEMA_VERSION} (user_version {version})")
    return db


def _union_seconds(spans: Iterable[tuple[float, float]]) -> float:
    total = 0.0
    cur_a = cur_b = None
    for a, b in sorted(spans):
        if cur_b is None or a > cur_b:
            if cur_a is not None and cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None and cur_b is not None:
        total += cur_b - cur_a
    return total


def build(
    stats_path: Path,
    *,
    since: datetime | None,
    until: datetime | None,
    configured: Sequence[ElementInfo],
    machines: Sequence[str],
    control_enabled: bool,
) -> dict[str, Any]:
    """The level-evidence report for the period, from the statistics file (see the module docstring)."""
    stats_path = Path(stats_path)
    db = _connect(stats_path)
    try:
        return _build(db, stats_path, since, until, configured, machines, control_enabled)
    except sqlite3.Error as e:
        raise StatsError(f"statistics file {stats_path} cannot be read: {e}") from e
    finally:
        db.close()


def _build(
    db: sqlite3.Connection,
    stats_path: Path,
    since: datetime | None,
    until: datetime | None,
    configured: Sequence[ElementInfo],
    machines: Sequence[str],
    control_enabled: bool,
) -> dict[str, Any]:
    now = time.time()
    meta = {k: float(v) for k, v in db.execute("SELECT key, value FROM meta")}
    last_flush = meta.get("last_flush")
    data_until = last_flush if last_flush is not None else now
    data_from = meta.get("covered_from", meta.get("first_open", data_until))
    start = data_from
    if since is not None:
        start = max(start, math.floor(_epoch(since) / HOUR) * HOUR)
    end = data_until
    if until is not None:
        end = min(end, math.ceil(_epoch(until) / HOUR) * HOUR)
    end = max(end, start)
    period_s = end - start
    h_from = math.floor(start / HOUR) * HOUR

    # what was measured
    samples: dict[tuple[str, str], tuple[Any, ...]] = {
        (r[0], r[1]): r[2:]
        for r in db.execute(
            "SELECT machine, path, sum(n_values), sum(intervals), sum(isum), sum(isumsq), min(imin), max(imax), "
            "min(first_t), max(last_t) FROM samples WHERE hour >= ? AND hour < ? GROUP BY machine, path",
            (h_from, end),
        )
    }
    deliv: dict[tuple[str, str, str], list[Any]] = {}
    for sink, machine, lane, records, n, blob in db.execute(
        "SELECT sink, machine, lane, records, samples, hist FROM delivered WHERE hour >= ? AND hour < ?",
        (h_from, end),
    ):
        acc = deliv.setdefault((sink, machine, lane), [0, 0, new_hist()])
        acc[0] += records
        acc[1] += n
        add_hist(acc[2], hist_from_blob(blob))
    connected = dict(
        db.execute(
            "SELECT machine, sum(seconds) FROM connected WHERE hour >= ? AND hour < ? GROUP BY machine",
            (h_from, end),
        ).fetchall()
    )
    gap_rows = db.execute(
        "SELECT machine, start_t, end_t, reason, elements FROM gaps "
        "WHERE start_t < ? AND (end_t IS NULL OR end_t > ?) ORDER BY start_t, machine",
        (end, start),
    ).fetchall()
    analysis_rows = db.execute(
        "SELECT machine, start_t, end_t, summary FROM analysis WHERE start_t < ? AND end_t >= ? ORDER BY start_t",
        (end, start),
    ).fetchall()
    control_rows = db.execute(
        "SELECT at, machine, element, user, ok, detail FROM control_writes WHERE at >= ? AND at < ? ORDER BY at",
        (start, end),
    ).fetchall()
    history: dict[tuple[str, str], list[tuple[str, float, float, float]]] = {}
    for machine, path, mode, ms, first_c, last_c in db.execute(
        "SELECT machine, path, mode, sampling_ms, first_configured, last_configured FROM elements "
        "ORDER BY last_configured"
    ):
        history.setdefault((machine, path), []).append((mode, ms, first_c, last_c))

    # machines whose records a sink confirmed (value lanes)
    confirmed: dict[str, int] = {}
    for (_, machine, lane), (records, _, _) in deliv.items():
        if lane not in NON_VALUE_LANES and machine:
            confirmed[machine] = confirmed.get(machine, 0) + records

    elements = _elements(configured, samples, history, confirmed)
    all_machines = list(dict.fromkeys([*machines, *(e.machine for e in configured)]))
    coverage = _coverage(all_machines, elements, confirmed)
    sampling = _sampling(elements)
    gaps = _gaps(gap_rows, start, end, all_machines)
    uptime = [
        {
            "machine": m,
            "connected_s": round(float(connected.get(m, 0.0)), 1),
            "period_s": round(period_s, 1),
            "uptime_pct": _pct(min(float(connected.get(m, 0.0)), period_s), period_s),
        }
        for m in list(dict.fromkeys([*all_machines, *sorted(connected)]))
    ]
    latency = _latency(deliv)
    analysis = _analysis(analysis_rows)
    control = _control(control_rows, control_enabled)
    report: dict[str, Any] = {
        "format": FORMAT,
        "generated_at": _iso(now),
        "stats_file": str(stats_path),
        "period": {
            "since": _iso(start),
            "until": _iso(end),
            "seconds": round(period_s, 1),
            "requested_since": _iso(_epoch(since)) if since is not None else None,
            "requested_until": _iso(_epoch(until)) if until is not None else None,
            "file_first_open": _iso(meta.get("first_open")),
            "file_covered_from": _iso(meta.get("covered_from")),
            "file_last_flush": _iso(last_flush),
        },
        "coverage": coverage,
        "sampling": sampling,
        "elements": elements,
        "gaps": gaps,
        "uptime": uptime,
        "latency": latency,
        "analysis": analysis,
        "control": control,
    }
    report["levels"] = _levels(report)
    report["limits"] = [{"ko": ko, "en": en} for ko, en in LIMITS]
    return report


def _elements(
    configured: Sequence[ElementInfo],
    samples: dict[tuple[str, str], tuple[Any, ...]],
    history: dict[tuple[str, str], list[tuple[str, float, float, float]]],
    confirmed: dict[str, int],
) -> list[dict[str, Any]]:
    now_cfg: dict[tuple[str, str], ElementInfo] = {}
    for e in configured:
        now_cfg.setdefault((e.machine, e.path), e)
    keys = list(now_cfg) + sorted(k for k in samples if k not in now_cfg)
    out = []
    for key in keys:
        machine, path = key
        info = now_cfg.get(key)
        hist = history.get(key, [])
        if info is not None:
            mode: str | None = info.mode
            cfg_ms = None if info.sampling_ms is None else float(info.sampling_ms)
        elif hist:
            mode, ms = hist[-1][0], hist[-1][1]
            cfg_ms = None if ms == NO_SAMPLING else ms
        else:
            mode, cfg_ms = None, None
        n_values, k, s, ss, lo, hi, first_t, last_t = samples.get(key, (0, 0, 0.0, 0.0, None, None, None, None))
        mean = s / k if k else None
        jitter = math.sqrt(max(ss / k - mean * mean, 0.0)) if k and mean is not None else None
        mean_ms = _ms(mean)
        meets = None
        if cfg_ms is not None and cfg_ms > 0 and mean_ms is not None:
            meets = mean_ms <= SLOW_FACTOR * cfg_ms
        out.append(
            {
                "machine": machine,
                "path": path,
                "mode": mode,
                "configured_now": info is not None,
                "configured_ms": cfg_ms,
                "values": int(n_values or 0),
                "intervals": int(k or 0),
                "achieved_mean_ms": mean_ms,
                "jitter_ms": _ms(jitter),
                "min_ms": _ms(lo),
                "max_ms": _ms(hi),
                "slow": meets is False,
                "meets_configured": meets,
                "delivering": bool(n_values) and confirmed.get(machine, 0) > 0,
                "first_seen": _iso(first_t),
                "last_seen": _iso(last_t),
                "configured_from": _iso(min(h[2] for h in hist)) if hist else None,
                "configured_until": _iso(max(h[3] for h in hist)) if hist else None,
            }
        )
    return out


def _coverage(machines: list[str], elements: list[dict[str, Any]], confirmed: dict[str, int]) -> dict[str, Any]:
    cfg = [e for e in elements if e["configured_now"]]
    per_machine = []
    for m in machines:
        mine = [e for e in cfg if e["machine"] == m]
        per_machine.append(
            {
                "machine": m,
                "elements_configured": len(mine),
                "elements_delivering": sum(e["delivering"] for e in mine),
                "records_confirmed": confirmed.get(m, 0),
                "delivering": any(e["delivering"] for e in mine),
            }
        )
    n_el = len(cfg)
    n_el_d = sum(e["delivering"] for e in cfg)
    n_m_d = sum(m["delivering"] for m in per_machine)
    return {
        "machines_configured": len(machines),
        "machines_delivering": n_m_d,
        "machines_pct": _pct(n_m_d, len(machines)),
        "elements_configured": n_el,
        "elements_delivering": n_el_d,
        "elements_pct": _pct(n_el_d, n_el),
        "machines": per_machine,
    }


def _sampling(elements: list[dict[str, Any]]) -> dict[str, Any]:
    configured = [e for e in elements if e["configured_now"]]
    delivering = [e for e in configured if e["delivering"] and e["achieved_mean_ms"] is not None]
    median = statistics.median(e["achieved_mean_ms"] for e in delivering) if delivering else None
    with_cfg = [e for e in delivering if e["meets_configured"] is not None]
    meeting = sum(bool(e["meets_configured"]) for e in with_cfg)
    return {
        "elements_measured": len(delivering),
        "median_period_ms": None if median is None else round(median, 3),
        "elements_with_configured": len(with_cfg),
        "elements_meeting_configured": meeting,
        "meeting_configured_pct": _pct(meeting, len(with_cfg)),
        "slow": sum(e["slow"] for e in configured),
    }


def _gaps(rows: list[Any], start: float, end: float, machines: list[str]) -> dict[str, Any]:
    listed = []
    spans: dict[str, list[tuple[float, float]]] = {}
    counts: dict[str, int] = {}
    for machine, a, b, reason, n in rows:
        lo, hi = max(a, start), min(end if b is None else b, end)
        seconds = max(hi - lo, 0.0)
        spans.setdefault(machine, []).append((lo, max(hi, lo)))
        counts[machine] = counts.get(machine, 0) + 1
        listed.append(
            {
                "machine": machine,
                "start": _iso(a),
                "end": _iso(b),
                "open": b is None,
                "seconds_in_period": round(seconds, 1),
                "reason": reason,
                "elements": n,
            }
        )
    by_machine = [
        {"machine": m, "gaps": counts.get(m, 0), "seconds": round(_union_seconds(spans.get(m, [])), 1)}
        for m in list(dict.fromkeys([*machines, *sorted(spans)]))
    ]
    return {"by_machine": by_machine, "list": listed}


def _latency(deliv: dict[tuple[str, str, str], list[Any]]) -> list[dict[str, Any]]:
    sinks: dict[str, list[Any]] = {}
    for (sink, _, lane), (records, n, hist) in sorted(deliv.items(), key=lambda kv: kv[0]):
        acc = sinks.setdefault(sink, [0, 0, new_hist(), {}])
        acc[0] += records
        acc[1] += n
        add_hist(acc[2], hist)
        acc[3][lane] = acc[3].get(lane, 0) + records
    out = []
    for sink, (records, n, hist, lanes) in sinks.items():
        merged: Hist = hist
        out.append(
            {
                "sink": sink,
                "records": int(records),
                "latency_samples": int(n),
                "p50_ms": _ms(percentile(merged, 0.50)),
                "p95_ms": _ms(percentile(merged, 0.95)),
                "p99_ms": _ms(percentile(merged, 0.99)),
                "records_by_lane": lanes,
            }
        )
    return out


def _analysis(rows: list[Any]) -> list[dict[str, Any]]:
    per: dict[str, list[tuple[float, float, dict[str, Any]]]] = {}
    for machine, a, b, text in rows:
        try:
            summary = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        if isinstance(summary, dict):
            per.setdefault(machine, []).append((a, b, summary))
    out = []
    for machine, items in per.items():
        sums: dict[str, float | None] = {"cycles": None, "alarms": None, "running_s": None}
        states: dict[str, float] = {}
        weighted: dict[str, list[float]] = {k: [0.0, 0.0] for k in ("availability", "performance", "quality", "oee")}
        cycle_w = [0.0, 0.0]
        for a, b, s in items:
            observed = _num(s.get("observed_s"))
            weight = observed if observed is not None and observed > 0 else (max(b - a, 0.0) or 1.0)
            cycles = _num(s.get("cycles"))
            if cycles is not None:
                sums["cycles"] = (sums["cycles"] or 0.0) + cycles
                mean_cycle = _num(s.get("mean_cycle_s"))
                if mean_cycle is not None and cycles > 0:
                    cycle_w[0] += mean_cycle * cycles
                    cycle_w[1] += cycles
            alarms = s.get("alarms")
            n_alarms = float(len(alarms)) if isinstance(alarms, list | dict) else _num(alarms)
            if n_alarms is not None:
                sums["alarms"] = (sums["alarms"] or 0.0) + n_alarms
            running = _num(s.get("running_s"))
            if running is not None:
                sums["running_s"] = (sums["running_s"] or 0.0) + running
            st = s.get("state_seconds", s.get("state_s"))
            if isinstance(st, dict):
                for state, sec in st.items():
                    if (v := _num(sec)) is not None:
                        states[str(state)] = states.get(str(state), 0.0) + v
            for key, w in weighted.items():
                if (v := _num(s.get(key))) is not None:
                    w[0] += v * weight
                    w[1] += weight
        totals: dict[str, Any] = {k: _whole(v) for k, v in sums.items()}
        for key, w in weighted.items():
            totals[key] = round(w[0] / w[1], 4) if w[1] else None
        totals["mean_cycle_s"] = round(cycle_w[0] / cycle_w[1], 3) if cycle_w[1] else None
        totals["state_seconds"] = {k: round(v, 1) for k, v in states.items()}
        out.append(
            {
                "machine": machine,
                "summaries": len(items),
                "first_start": _iso(items[0][0]),
                "last_end": _iso(max(b for _, b, _ in items)),
                "totals": totals,
                "last": [s for _, _, s in items[-LAST_SUMMARIES:]],
            }
        )
    return out


def _control(rows: list[Any], enabled: bool) -> dict[str, Any]:
    users: dict[str, list[int]] = {}
    for _, _, _, user, ok, _ in rows:
        u = users.setdefault(user, [0, 0])
        u[0 if ok else 1] += 1
    ok_n = sum(1 for r in rows if r[4])
    return {
        "enabled": enabled,
        "writes": len(rows),
        "ok": ok_n,
        "failed": len(rows) - ok_n,
        "by_user": [{"user": u, "ok": c[0], "failed": c[1]} for u, c in sorted(users.items())],
        "list": [
            {"at": _iso(at), "machine": m, "element": el, "user": u, "ok": bool(ok), "detail": d}
            for at, m, el, u, ok, d in rows
        ],
    }


# -- levels ------------------------------------------------------------------------------------


def _c(cid: str, met: bool, ko: str, en: str) -> dict[str, Any]:
    return {"id": cid, "met": met, "ko": ko, "en": en}


def _levels(r: dict[str, Any]) -> list[dict[str, Any]]:
    cov, smp, lat, ana, ctl = r["coverage"], r["sampling"], r["latency"], r["analysis"], r["control"]
    n_cfg, n_del, pct = cov["elements_configured"], cov["elements_delivering"], cov["elements_pct"]

    basic = [
        _c(
            "elements_delivering",
            n_del >= 1,
            f"설정된 요소 {n_cfg}개 중 {n_del}개가 기간 중 값을 전달함 (값 저장 + 해당 설비 레코드의 싱크 수신 확인)",
            f"{n_del} of {n_cfg} configured elements delivered values in the period "
            "(values stored and their machine's records confirmed by a sink)",
        ),
        _c(
            "coverage",
            n_cfg >= 1,
            f"커버리지: 설비 {cov['machines_delivering']}/{cov['machines_configured']}대 "
            f"({_f(cov['machines_pct'], ' %')}), 요소 {n_del}/{n_cfg}개 ({_f(pct, ' %')})"
            if n_cfg
            else "설정된 요소가 없어 커버리지를 계산할 수 없음",
            f"coverage: machines {cov['machines_delivering']} of {cov['machines_configured']} "
            f"({_f(cov['machines_pct'], ' %')}), elements {n_del} of {n_cfg} ({_f(pct, ' %')})"
            if n_cfg
            else "no element configured: coverage cannot be computed",
        ),
    ]
    basic_ok = all(c["met"] for c in basic)

    median, share = smp["median_period_ms"], smp["meeting_configured_pct"]
    by_median = median is not None and median <= REALTIME_MS
    by_config = share is not None and share >= 50.0
    sinks_p95 = [s for s in lat if s["p95_ms"] is not None]
    fastest = min((s["p95_ms"] for s in sinks_p95), default=None)
    by_latency = fastest is not None and fastest <= REALTIME_LATENCY_MS
    p95_text = ", ".join(f"{s['sink']} {_f(s['p95_ms'], ' ms')}" for s in sinks_p95)
    n_sum = sum(a["summaries"] for a in ana)
    inter1 = [
        _c(
            "basic",
            basic_ok,
            "기초 수준의 근거 충족" if basic_ok else "기초 수준의 근거가 부족함",
            "the Basic level is supported" if basic_ok else "the Basic level is not supported",
        ),
        _c(
            "realtime",
            by_median or by_config or by_latency,
            f"실시간 수집 (평균 주기 중앙값 ≤ 1000 ms, 설정 주기 달성 50 % 이상, 또는 종단 간 지연 p95 ≤ 5000 ms): "
            f"값을 전달한 요소 {smp['elements_measured']}개의 평균 주기 중앙값 {_f(median, ' ms')}, 설정 주기 달성 "
            f"{smp['elements_meeting_configured']}/{smp['elements_with_configured']}개 ({_f(share, ' %')}), "
            f"가장 짧은 지연 p95 {_f(fastest, ' ms')}",
            "real-time collection (median achieved period ≤ 1000 ms, at least 50 % meeting their configured "
            "sampling, or end-to-end latency p95 ≤ 5000 ms): median achieved mean period of the "
            f"{smp['elements_measured']} delivering elements {_f(median, ' ms')}; configured sampling met by "
            f"{smp['elements_meeting_configured']} of {smp['elements_with_configured']} ({_f(share, ' %')}); "
            f"lowest latency p95 {_f(fastest, ' ms')}",
        ),
        _c(
            "latency",
            bool(sinks_p95),
            f"종단 간 지연 p95 측정됨: {p95_text}" if sinks_p95 else "종단 간 지연(p95) 측정값이 없음",
            f"end-to-end latency p95 measured: {p95_text}"
            if sinks_p95
            else "no end-to-end latency (p95) measured: no confirmed records with latency samples",
        ),
        _c(
            "analysis",
            n_sum >= 1,
            f"엣지 분석 요약 {n_sum}건 (설비 {len(ana)}대)" if n_sum else "기간 중 엣지 분석 요약이 없음",
            f"{n_sum} edge-analysis summar{'y' if n_sum == 1 else 'ies'} from {len(ana)} machine(s)"
            if n_sum
            else "no edge-analysis summary in the period",
        ),
    ]
    inter1_ok = all(c["met"] for c in inter1)

    inter2 = [
        _c(
            "intermediate1",
            inter1_ok,
            "중간1 수준의 근거 충족" if inter1_ok else "중간1 수준의 근거가 부족함",
            "the Intermediate 1 level is supported" if inter1_ok else "the Intermediate 1 level is not supported",
        ),
        _c(
            "control_enabled",
            bool(ctl["enabled"]),
            "설정에서 제어 쓰기가 활성화됨" if ctl["enabled"] else "설정에서 제어 쓰기가 비활성화됨",
            "control writes are enabled in the configuration"
            if ctl["enabled"]
            else "control writes are disabled in the configuration",
        ),
        _c(
            "control_write",
            ctl["ok"] >= 1,
            f"기간 중 성공한 제어 쓰기 {ctl['ok']}건 기록됨 (실패 {ctl['failed']}건)"
            if ctl["ok"]
            else f"기간 중 성공한 제어 쓰기 기록이 없음 (실패 {ctl['failed']}건)",
            f"{ctl['ok']} successful control write(s) logged in the period ({ctl['failed']} failed)"
            if ctl["ok"]
            else f"no successful control write logged in the period ({ctl['failed']} failed)",
        ),
    ]
    out = []
    for (lid, ko, en, mean_ko, mean_en), crit in zip(LEVELS, (basic, inter1, inter2), strict=True):
        out.append(
            {
                "level": lid,
                "ko": ko,
                "en": en,
                "meaning_ko": mean_ko,
                "meaning_en": mean_en,
                "supported": all(c["met"] for c in crit),
                "supporting": [c for c in crit if c["met"]],
                "missing": [c for c in crit if not c["met"]],
            }
        )
    return out


# -- output ------------------------------------------------------------------------------------


def render_json(report: dict[str, Any]) -> bytes:
    """The report as indented JSON (UTF-8)."""
    return orjson.dumps(
        report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY, default=str
    )


__all__ = ["build", "render_html", "render_json"]
