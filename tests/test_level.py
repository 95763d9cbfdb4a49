"""The level-evidence report (agent/level.py) built from real statistics files (agent/stats.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent import level
from agent.stats import ElementInfo, Stats, StatsError

T0 = 1_699_999_200.0  # 2023-11-14T22:00:00Z, the start of a UTC hour
HOUR = 3600.0

ELEMENTS = [
    ElementInfo(1, "press1", "Temperature", 1000, "subscribe"),
    ElementInfo(2, "press1", "Speed", 100, "poll"),  # achieved 500 ms: > 1.5 x configured
    ElementInfo(3, "press2", "Pressure", 500, "subscribe"),
]
MACHINES = ["press1", "press2"]


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def record(
    path: Path,
    *,
    elements: list[ElementInfo] = ELEMENTS,
    analysis: bool = True,
    press2_off_at: float | None = None,
    press2_delivered: bool = True,
    control: list[bool] = (),  # type: ignore[assignment]
) -> None:
    """One hour from T0 of a two-press line, flushed at T0 + 1 h."""
    clock = Clock()
    stats = Stats(path, elements, clock=clock)
    for machine in MACHINES:
        stats.source_state(machine, True, T0)
    stats.values(1, [T0 + i for i in range(3600)])  # 1 s
    stats.values(2, [T0 + i * 0.5 for i in range(7200)])  # 500 ms
    press2_end = press2_off_at if press2_off_at is not None else T0 + HOUR
    stats.values(3, [T0 + i * 0.5 for i in range(int((press2_end - T0) * 2))])  # 500 ms
    if press2_off_at is not None:
        stats.source_state("press2", False, press2_off_at)
        stats.gap("press2", [3], press2_off_at, None, "connection lost")
    clock.t = T0 + 1800
    stats.delivered("mqtt", "press1", "data", 10_800, [0.05, 0.08, 0.12, 0.3])
    stats.delivered("mqtt", None, "status", 3, [])
    if press2_delivered:
        stats.delivered("mqtt", "press2", "data", 3_600, [0.06, 0.09])
    else:
        stats.delivered("mqtt", "press2", "gap", 1, [0.06])  # a gap record is no value delivered
    if analysis:
        for k in range(2):
            stats.analysis(
                "press1",
                {
                    # the second as agent/analysis.py writes it: ISO times and `state_s`
                    "start": T0 if k == 0 else "2023-11-14T22:30:00Z",
                    "end": T0 + 1800 if k == 0 else "2023-11-14T23:00:00Z",
                    "state_seconds" if k == 0 else "state_s": {"running": 1500.0, "idle": 300.0},
                    "running_s": 1500.0,
                    "cycles": 30 + k * 10,
                    "mean_cycle_s": 50.0 - k * 20,
                    "alarms": k,
                    "availability": 0.8 + k * 0.1,
                    "performance": 0.9,
                    "quality": 0.99,
                    "oee": 0.7,
                },
            )
    for i, ok in enumerate(control):
        stats.control_write("press1", "Setpoint", "kim" if ok else "lee", ok, T0 + 100 + i, "set 5.0")
    clock.t = T0 + HOUR
    stats.flush()
    stats.close()


def build(path: Path, **kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "since": None,
        "until": None,
        "configured": ELEMENTS,
        "machines": MACHINES,
        "control_enabled": False,
    }
    args.update(kwargs)
    return level.build(path, **args)


def lv(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(x for x in report["levels"] if x["level"] == name)


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [c["id"] for c in items]


def test_full_report_figures(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    record(db)
    r = build(db)
    assert r["period"]["since"] == "2023-11-14T22:00:00Z"
    assert r["period"]["until"] == "2023-11-14T23:00:00Z"
    assert r["period"]["seconds"] == 3600.0

    cov = r["coverage"]
    assert (cov["machines_configured"], cov["machines_delivering"], cov["machines_pct"]) == (2, 2, 100.0)
    assert (cov["elements_configured"], cov["elements_delivering"], cov["elements_pct"]) == (3, 3, 100.0)

    by_path = {e["path"]: e for e in r["elements"]}
    temp, speed = by_path["Temperature"], by_path["Speed"]
    assert (temp["values"], temp["intervals"], temp["achieved_mean_ms"], temp["jitter_ms"]) == (3600, 3599, 1000.0, 0.0)
    assert temp["slow"] is False and temp["meets_configured"] is True
    assert (speed["configured_ms"], speed["achieved_mean_ms"], speed["slow"]) == (100.0, 500.0, True)
    assert temp["first_seen"] == "2023-11-14T22:00:00Z" and temp["last_seen"] == "2023-11-14T22:59:59Z"
    assert temp["configured_from"] == "2023-11-14T22:00:00Z"
    smp = r["sampling"]
    assert (smp["median_period_ms"], smp["elements_meeting_configured"], smp["elements_with_configured"]) == (
        500.0,
        2,
        3,
    )
    assert smp["slow"] == 1

    assert [(u["machine"], u["uptime_pct"]) for u in r["uptime"]] == [("press1", 100.0), ("press2", 100.0)]
    (mqtt,) = r["latency"]
    assert mqtt["sink"] == "mqtt" and mqtt["records"] == 14_403 and mqtt["latency_samples"] == 6
    assert mqtt["records_by_lane"] == {"data": 14_400, "status": 3}
    assert 80 <= mqtt["p50_ms"] <= 100 and 250 <= mqtt["p99_ms"] <= 340

    (press1,) = r["analysis"]
    t = press1["totals"]
    assert press1["summaries"] == 2 and len(press1["last"]) == 2
    assert (t["cycles"], t["alarms"], t["running_s"]) == (70, 1, 3000)
    assert t["availability"] == pytest.approx(0.85)
    assert t["mean_cycle_s"] == pytest.approx((30 * 50 + 40 * 30) / 70, abs=1e-3)
    assert t["state_seconds"] == {"running": 3000.0, "idle": 600.0}

    assert lv(r, "basic")["supported"] and lv(r, "intermediate1")["supported"]
    assert not lv(r, "intermediate2")["supported"]
    assert ids(lv(r, "intermediate2")["missing"]) == ["control_enabled", "control_write"]
    for x in r["levels"]:
        for c in x["supporting"] + x["missing"]:
            assert c["ko"] and c["en"] and c["ko"] != c["en"]


def test_no_analysis_means_no_intermediate1_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    record(db, analysis=False, control=[True])
    r = build(db, control_enabled=True)
    assert lv(r, "basic")["supported"]
    inter1 = lv(r, "intermediate1")
    assert not inter1["supported"]
    (missing,) = inter1["missing"]
    assert missing["id"] == "analysis"
    assert "분석" in missing["ko"] and "analysis" in missing["en"]
    assert {"realtime", "latency", "basic"} <= set(ids(inter1["supporting"]))
    # levels are cumulative: no Intermediate 2 without Intermediate 1, even with a control write
    assert ids(lv(r, "intermediate2")["missing"]) == ["intermediate1"]
    assert not lv(r, "intermediate2")["supported"]


def test_a_machine_off_for_half_the_period(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    record(db, press2_off_at=T0 + 1800)
    r = build(db)
    uptime = {u["machine"]: u["uptime_pct"] for u in r["uptime"]}
    assert uptime == {"press1": 100.0, "press2": pytest.approx(50.0, abs=0.1)}
    gaps = {g["machine"]: g for g in r["gaps"]["by_machine"]}
    assert gaps["press1"]["gaps"] == 0 and gaps["press1"]["seconds"] == 0
    assert gaps["press2"]["gaps"] == 1 and gaps["press2"]["seconds"] == pytest.approx(1800, abs=1)
    (gap,) = r["gaps"]["list"]
    assert (gap["machine"], gap["reason"], gap["open"], gap["start"]) == (
        "press2",
        "connection lost",
        True,
        "2023-11-14T22:30:00Z",
    )
    assert r["elements"][2]["last_seen"] == "2023-11-14T22:29:59Z"


def test_intermediate2_needs_control_enabled_and_a_successful_write(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    record(db, control=[False, True])
    enabled = build(db, control_enabled=True)
    assert lv(enabled, "intermediate2")["supported"]
    assert ids(lv(enabled, "intermediate2")["supporting"]) == ["intermediate1", "control_enabled", "control_write"]
    ctl = enabled["control"]
    assert (ctl["writes"], ctl["ok"], ctl["failed"]) == (2, 1, 1)
    assert ctl["by_user"] == [{"user": "kim", "ok": 1, "failed": 0}, {"user": "lee", "ok": 0, "failed": 1}]

    disabled = build(db, control_enabled=False)
    assert not lv(disabled, "intermediate2")["supported"]
    assert ids(lv(disabled, "intermediate2")["missing"]) == ["control_enabled"]

    only_failed = tmp_path / "failed.db"
    record(only_failed, control=[False])
    r = build(only_failed, control_enabled=True)
    assert not lv(r, "intermediate2")["supported"]
    assert ids(lv(r, "intermediate2")["missing"]) == ["control_write"]


def test_an_element_delivers_only_when_a_sink_confirmed_its_machine(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    record(db, press2_delivered=False)
    r = build(db)
    cov = r["coverage"]
    assert (cov["elements_delivering"], cov["elements_configured"], cov["elements_pct"]) == (2, 3, 66.7)
    assert (cov["machines_delivering"], cov["machines_pct"]) == (1, 50.0)
    press2 = next(e for e in r["elements"] if e["machine"] == "press2")
    assert press2["values"] > 0 and not press2["delivering"]


def test_configured_elements_without_data_and_stored_elements_no_longer_configured(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    record(db)
    now = [*ELEMENTS[:2], ElementInfo(4, "press3", "Torque", None, "subscribe")]
    r = build(db, configured=now, machines=["press1", "press3"])
    by_path = {e["path"]: e for e in r["elements"]}
    assert by_path["Torque"]["configured_now"] and by_path["Torque"]["values"] == 0
    assert not by_path["Torque"]["delivering"] and by_path["Torque"]["configured_ms"] is None
    # press2/Pressure has data in the period but is not configured now: listed, not counted
    assert not by_path["Pressure"]["configured_now"] and by_path["Pressure"]["configured_ms"] == 500.0
    cov = r["coverage"]
    assert (cov["elements_configured"], cov["elements_delivering"]) == (3, 2)
    assert (cov["machines_configured"], cov["machines_delivering"]) == (2, 1)


def test_an_empty_store_supports_no_level(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    stats = Stats(db, ELEMENTS, clock=Clock())
    stats.flush()
    stats.close()
    r = build(db, control_enabled=True)
    assert [x["supported"] for x in r["levels"]] == [False, False, False]
    assert ids(lv(r, "basic")["missing"]) == ["elements_delivering"]
    assert set(ids(lv(r, "intermediate1")["missing"])) == {"basic", "realtime", "latency", "analysis"}
    nothing = build(db, configured=[], machines=[])
    assert ids(lv(nothing, "basic")["missing"]) == ["elements_delivering", "coverage"]
    assert nothing["coverage"]["elements_pct"] is None


def test_the_period_is_whole_hours_inside_what_the_file_covers(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    clock = Clock()
    stats = Stats(db, ELEMENTS, clock=clock)
    for h in range(3):
        stats.values(1, [T0 + h * HOUR + i for i in range(0, 3600, 10)])
        stats.control_write("press1", "Setpoint", "kim", True, T0 + h * HOUR + 5, "")
    clock.t = T0 + 3 * HOUR
    stats.flush()
    stats.close()
    r = build(
        db,
        since=datetime.fromtimestamp(T0 + HOUR + 900, UTC),  # floored to T0 + 1 h
        until=datetime.fromtimestamp(T0 + HOUR + 1000, UTC),  # ceiled to T0 + 2 h
    )
    assert (r["period"]["since"], r["period"]["until"]) == ("2023-11-14T23:00:00Z", "2023-11-15T00:00:00Z")
    assert r["elements"][0]["values"] == 360 and r["control"]["writes"] == 1
    late = build(db, since=datetime(2023, 11, 1, tzinfo=UTC), until=datetime(2030, 1, 1, tzinfo=UTC))
    assert (late["period"]["since"], late["period"]["until"]) == ("2023-11-14T22:00:00Z", "2023-11-15T01:00:00Z")
    assert late["elements"][0]["values"] == 1080 and late["control"]["writes"] == 3


def test_a_missing_or_foreign_file_is_a_stats_error(tmp_path: Path) -> None:
    with pytest.raises(StatsError, match="does not exist"):
        build(tmp_path / "nope.db")
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StatsError):
        build(tmp_path / "junk.db")


def test_json_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    record(db, control=[True])
    r = build(db, control_enabled=True)
    assert orjson.loads(level.render_json(r)) == r


def test_html_escapes_every_string_from_data(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    evil = [
        ElementInfo(1, "press<1>&", '<script>alert("path")</script>', 1000, "subscribe"),
        ElementInfo(2, "press<1>&", "Speed", 100, "poll"),
        ElementInfo(3, "press2", "<img src=x onerror=alert(1)>", 500, "subscribe"),
    ]
    clock = Clock()
    stats = Stats(db, evil, clock=clock)
    stats.source_state("press<1>&", True, T0)
    stats.values(1, [T0, T0 + 1])
    stats.values(3, [T0, T0 + 1])
    stats.gap("press2", [3], T0 + 5, T0 + 9, "<x-reason>")
    stats.delivered("<x-sink>", "press<1>&", "data", 2, [0.1])
    stats.analysis("press<1>&", {"start": T0, "end": T0 + 60, "<x-key>": "<x-value>", "oee": 0.5})
    stats.control_write("press<1>&", "<x-element>", '"><x-user>', True, T0 + 3, "<x-detail>")
    clock.t = T0 + HOUR
    stats.flush()
    stats.close()
    r = level.build(db, since=None, until=None, configured=evil, machines=["press<1>&", "press2"], control_enabled=True)
    page = level.render_html(r)
    for raw in ("<script", "<img", "<x-", "press<1>", '"><x'):
        assert raw not in page, raw
    for escaped in (
        "&lt;script&gt;alert(&quot;path&quot;)&lt;/script&gt;",
        "press&lt;1&gt;&amp;",
        "&lt;img src=x onerror=alert(1)&gt;",
        "&lt;x-reason&gt;",
        "&lt;x-sink&gt;",
        "&lt;x-key&gt;",
        "&lt;x-element&gt;",
        "&quot;&gt;&lt;x-user&gt;",
        "&lt;x-detail&gt;",
    ):
        assert escaped in page, escaped
    # self-contained: no external asset of any kind
    assert not re.search(r"(?i)<[^>]*\b(src|href)\s*=|https?://|@import|url\(", page)
    assert re.findall(r"<(\w+)", page)  # the page's own tags
    assert set(re.findall(r"<(\w+)", page)) <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "b", "br", "span",
        "div", "ul", "li", "table", "thead", "tbody", "tr", "th", "td", "pre",
    }  # fmt: skip
    assert page.startswith("<!DOCTYPE html>") and "<meta charset=utf-8>" in page
    # Korean and English side by side
    for ko, en in (
        ("커버리지", "Coverage"),
        ("기초", "Basic"),
        ("중간1", "Intermediate 1"),
        ("중간2", "Intermediate 2"),
    ):
        assert ko in page and en in page


def test_the_report_reads_the_file_while_the_agent_writes_it(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    clock = Clock(T0 + 60)
    stats = Stats(db, ELEMENTS, clock=clock)
    stats.values(1, [T0, T0 + 1])
    stats.flush()
    assert Path(f"{db}-wal").exists()
    assert build(db)["elements"][0]["values"] == 2
    stats.values(1, [T0 + 2])
    stats.flush()  # the reader did not lock the writer out
    assert build(db)["elements"][0]["values"] == 3
    stats.close()
