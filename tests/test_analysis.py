"""Edge analysis (agent/analysis.py): every expected number is worked out by hand in the comments."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.analysis import AnalysisSpec, MachineAnalyzer

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
FULL: dict[str, Any] = {
    "state": "State",
    "alarm": "AlarmCode",
    "part_count": "PartCount",
    "scrap_count": "ScrapCount",
    "ideal_cycle_s": 7.0,
}


def analyzer(**kw: Any) -> MachineAnalyzer:
    return MachineAnalyzer(AnalysisSpec(machine="cnc01", **kw), T0)


def feed(an: MachineAnalyzer, role: str, *points: tuple[float, object]) -> None:
    """Values of one role at T0 + offset."""
    for dt, value in points:
        an.observe(role, value, T0 + dt)


# -- the worked example -------------------------------------------------------------------------------


def shift_600s(an: MachineAnalyzer, *, codes: bool = False) -> None:
    """600 s: RUN [0,300), ALARM [300,360) with alarm 17, RUN [360,480), IDLE [480,600); 50 parts."""
    run, alarm, idle = (1, 2, 0) if codes else ("RUN", "ALARM", "IDLE")
    feed(an, "state", (0, run), (300, alarm), (360, run), (480, idle))
    feed(an, "alarm", (0, 0), (300, 17), (360, 0))
    # 1000 is the baseline; +30 in the first RUN stretch, +10 and +10 in the second = 50 parts
    feed(an, "part_count", (0, 1000), (150, 1015), (299, 1030), (400, 1040), (479, 1050))


def test_worked_example_with_scrap_counter() -> None:
    an = analyzer(**FULL)
    shift_600s(an)
    feed(an, "scrap_count", (0, 5), (200, 6), (450, 7))  # baseline 5, +1, +1 = 2 scrap
    s = an.summary(T0 + 600)
    assert s["machine"] == "cnc01"
    assert (s["start"], s["end"]) == ("2026-01-01T00:00:00.000000Z", "2026-01-01T00:10:00.000000Z")
    assert s["period_s"] == 600.0
    # RUN 300 + 120 = 420, ALARM 60, IDLE 120, nothing unknown
    assert s["state_s"] == {"RUN": 420.0, "ALARM": 60.0, "IDLE": 120.0, "unknown": 0.0}
    assert (s["observed_s"], s["running_s"]) == (600.0, 420.0)
    assert s["cycles"] == 50
    assert s["mean_cycle_s"] == 8.4  # 420 s / 50 cycles
    assert (s["alarms"], s["alarm_s"]) == (1, 60.0)
    assert (s["good"], s["scrap"]) == (48, 2)  # 50 parts − 2 scrap
    assert s["availability"] == 0.7  # 420 / 600
    assert s["performance"] == 0.8333  # 7 s × 50 / 420 s = 350 / 420 = 0.83333…
    assert s["quality"] == 0.96  # 48 / 50
    assert s["oee"] == 0.56  # 0.7 × 5/6 × 0.96 = 0.56 (= 7 s × 48 good / 600 s = 336 / 600)
    assert s["missing"] == [] and s["notes"] == []
    assert s["ignored"] == {"out_of_order": 0, "invalid": 0}
    assert s["resets"] == {} and s["wraps"] == {}
    json.dumps(s, allow_nan=False)  # JSON-able as it is


def test_state_codes_and_good_counter() -> None:
    # StateCode 0 IDLE / 1 RUN / 2 ALARM, running = {1}; a good counter instead of scrap
    an = analyzer(**(FULL | {"scrap_count": None, "good_count": "GoodCount", "running": frozenset({1})}))
    shift_600s(an, codes=True)
    feed(an, "good_count", (0, 100), (299, 128), (479, 145))  # 28 + 17 = 45 good
    s = an.summary(T0 + 600)
    assert s["state_s"] == {"1": 420.0, "2": 60.0, "0": 120.0, "unknown": 0.0}
    assert s["running_s"] == 420.0
    assert (s["good"], s["scrap"]) == (45, 5)  # total = the 50 parts
    assert s["quality"] == 0.9  # 45 / 50
    assert s["oee"] == 0.525  # 0.7 × 5/6 × 0.9 = 0.525 (= 7 × 45 / 600 = 315 / 600)


def test_quality_from_good_and_scrap_without_part_count() -> None:
    an = analyzer(state="State", good_count="Good", scrap_count="Scrap", ideal_cycle_s=7.0)
    feed(an, "state", (0, "RUN"))
    feed(an, "good_count", (0, 0), (100, 45))
    feed(an, "scrap_count", (0, 10), (100, 15))
    s = an.summary(T0 + 600)
    assert (s["good"], s["scrap"], s["quality"]) == (45, 5, 0.9)  # 45 / (45 + 5)
    assert s["cycles"] is None and s["performance"] is None and s["oee"] is None
    assert s["missing"] == ["alarm", "part_count"]


def test_scrap_beyond_parts_is_clamped_and_noted() -> None:
    an = analyzer(**FULL)
    feed(an, "state", (0, "RUN"))
    feed(an, "part_count", (0, 0), (100, 10))  # 10 parts
    feed(an, "scrap_count", (0, 0), (100, 12))  # 12 scrap: more than made (counters out of step)
    s = an.summary(T0 + 600)
    assert (s["good"], s["scrap"], s["quality"]) == (0, 10, 0.0)
    assert any(n.startswith("quality:") for n in s["notes"])


# -- alarms ------------------------------------------------------------------------------------------


def test_alarm_onsets_and_seconds() -> None:
    an = analyzer(alarm="AlarmCode")
    # [0,50) 0 | [50,80) 17: new | [80,100) 23: new (another code) | 23 again at 90: same alarm |
    # [100,200) 0 | 0 again | [200,260) 5: new | [260,300) 0
    feed(an, "alarm", (0, 0), (50, 17), (80, 23), (90, 23), (100, 0), (150, 0), (200, 5), (260, 0))
    s = an.summary(T0 + 300)
    assert s["alarms"] == 3
    assert s["alarm_s"] == 110.0  # 30 + 20 + 60
    assert s["state_s"] is None and s["availability"] is None
    assert s["missing"] == ["state", "part_count", "ideal_cycle_s", "good_count|scrap_count"]


def test_alarm_active_across_the_boundary_counts_once() -> None:
    an = analyzer(alarm="AlarmCode")
    feed(an, "alarm", (0, 0), (250, 9))
    first = an.summary(T0 + 300)
    second = an.summary(T0 + 600)
    assert (first["alarms"], first["alarm_s"]) == (1, 50.0)  # raised at 250
    assert (second["alarms"], second["alarm_s"]) == (0, 300.0)  # still active: no new alarm


def test_string_alarm_codes() -> None:
    an = analyzer(alarm="Alarm")
    feed(an, "alarm", (0, ""), (10, "E12"), (20, "0"), (30, "E12"))  # "" and "0" mean none
    s = an.summary(T0 + 40)
    assert (s["alarms"], s["alarm_s"]) == (2, 20.0)  # [10,20) and [30,40)


# -- counters ----------------------------------------------------------------------------------------


def test_counter_wrap_at_2_pow_32() -> None:
    an = analyzer(part_count="PartCount")
    # 4294967293 → 4294967295 (+2) → 0 (wrap: +1) → 2 (+2): 5 parts (…294, …295, 0, 1, 2)
    feed(an, "part_count", (0, 2**32 - 3), (10, 2**32 - 1), (20, 0), (30, 2))
    s = an.summary(T0 + 60)
    assert s["cycles"] == 5
    assert s["wraps"] == {"part_count": 1} and s["resets"] == {}


def test_counter_wrap_between_samples() -> None:
    an = analyzer(part_count="PartCount")
    # 4294967290 → 4: …291 to …295 (5), 0 (1), 1 to 4 (4) = 10 parts
    feed(an, "part_count", (0, 2**32 - 6), (10, 4))
    assert an.summary(T0 + 60)["cycles"] == 10


def test_counter_reset_to_zero() -> None:
    an = analyzer(part_count="PartCount")
    # 490 → 500 (+10) → 0 (reset: +0) → 3 (+3) = 13
    feed(an, "part_count", (0, 490), (10, 500), (20, 0), (30, 3))
    s = an.summary(T0 + 60)
    assert s["cycles"] == 13
    assert s["resets"] == {"part_count": 1} and s["wraps"] == {}


def test_counter_reset_seen_late_counts_the_new_value() -> None:
    an = analyzer(part_count="PartCount")
    # 490 → 500 (+10) → 4: at most half of 500, so a reset counted up to 4 (+4) = 14
    feed(an, "part_count", (0, 490), (10, 500), (20, 4))
    assert an.summary(T0 + 60)["cycles"] == 14


def test_counter_small_step_back_is_rebased_not_counted() -> None:
    an = analyzer(part_count="PartCount")
    # 490 → 500 (+10) → 495 (a correction: +0, re-based) → 497 (+2) = 12
    feed(an, "part_count", (0, 490), (10, 500), (20, 495), (30, 497))
    s = an.summary(T0 + 60)
    assert s["cycles"] == 12
    assert s["resets"] == {"part_count": 1}


def test_reset_far_from_the_top_is_not_a_wrap() -> None:
    an = analyzer(part_count="PartCount")
    # 3,000,000,000 → 0: a reset (+0), not a wrap (which would be 1,294,967,296 parts)
    feed(an, "part_count", (0, 2_999_999_990), (10, 3_000_000_000), (20, 0), (30, 1))
    s = an.summary(T0 + 60)
    assert s["cycles"] == 11  # +10, +0, +1
    assert s["resets"] == {"part_count": 1} and s["wraps"] == {}


def test_counter_wraps_at_a_configured_modulus() -> None:
    an = analyzer(part_count="PartCount", counter_modulus=2**16)
    # UInt16: 65534 → 1 = 65535, 0, 1: 3 parts
    feed(an, "part_count", (0, 65534), (10, 1))
    assert an.summary(T0 + 60)["cycles"] == 3


# -- gaps (unknown time) -----------------------------------------------------------------------------


def test_gap_is_unknown_and_excluded_from_availability() -> None:
    an = analyzer(state="State")
    feed(an, "state", (0, "RUN"), (400, "IDLE"))
    an.unknown(T0 + 100, T0 + 200)
    s = an.summary(T0 + 600)
    # RUN [0,400) minus the gap [100,200) = 300; IDLE [400,600) = 200; unknown 100
    assert s["state_s"] == {"RUN": 300.0, "IDLE": 200.0, "unknown": 100.0}
    assert s["observed_s"] == 500.0
    assert s["availability"] == 0.6  # 300 / (600 − 100)


def test_gap_across_a_state_change_and_overlapping_gaps() -> None:
    an = analyzer(state="State", alarm="AlarmCode")
    feed(an, "state", (0, "RUN"), (400, "ALARM"))
    feed(an, "alarm", (0, 0), (400, 3))
    an.unknown(T0 + 350, T0 + 420)
    an.unknown(T0 + 380, T0 + 450)  # overlaps: together [350,450)
    s = an.summary(T0 + 600)
    # RUN [0,350) = 350; ALARM [450,600) = 150; unknown 100
    assert s["state_s"] == {"RUN": 350.0, "ALARM": 150.0, "unknown": 100.0}
    assert s["availability"] == 0.7  # 350 / 500
    assert s["alarm_s"] == 150.0  # the alarm's time in the gap is not counted either


def test_time_before_the_first_state_value_is_unknown() -> None:
    an = analyzer(state="State")
    feed(an, "state", (150, "RUN"), (450, "IDLE"))
    s = an.summary(T0 + 600)
    assert s["state_s"] == {"RUN": 300.0, "IDLE": 150.0, "unknown": 150.0}
    assert s["availability"] == 0.6667  # 300 / 450


def test_open_gap_ends_at_the_next_state_value() -> None:
    an = analyzer(state="State", alarm="AlarmCode")
    feed(an, "state", (0, "RUN"))
    feed(an, "alarm", (0, 5))
    an.unknown(T0 + 100, None)
    feed(an, "state", (250, "RUN"))  # collection is back: the state is known again from 250
    s = an.summary(T0 + 600)
    assert s["state_s"] == {"RUN": 450.0, "unknown": 150.0}  # 100 + 350; [100,250) unknown
    assert s["alarm_s"] == 450.0


def test_open_gap_closed_by_a_re_reported_value_is_empty() -> None:
    an = analyzer(state="State")
    feed(an, "state", (0, "RUN"))
    an.unknown(T0 + 100, None)
    feed(an, "state", (0, "RUN"))  # the same value with its old source time: nothing changed meanwhile
    s = an.summary(T0 + 600)
    assert s["state_s"] == {"RUN": 600.0, "unknown": 0.0}


def test_open_gap_over_period_boundaries_then_closed_by_its_end() -> None:
    an = analyzer(state="State")
    feed(an, "state", (0, "RUN"))
    an.unknown(T0 + 500, None)
    first = an.summary(T0 + 600)
    assert first["state_s"] == {"RUN": 500.0, "unknown": 100.0}
    assert first["availability"] == 1.0  # 500 / 500
    second = an.summary(T0 + 900)  # the whole period in the gap
    assert second["state_s"] == {"RUN": 0.0, "unknown": 300.0}
    assert second["observed_s"] == 0.0 and second["availability"] is None
    assert "availability: no observed time in the period" in second["notes"]
    an.unknown(T0 + 500, T0 + 950)  # the gap's end became known
    third = an.summary(T0 + 1200)
    assert third["state_s"] == {"RUN": 250.0, "unknown": 50.0}  # [900,950) unknown


# -- ordering and period boundaries ------------------------------------------------------------------


def test_out_of_order_values() -> None:
    an = analyzer(state="State", part_count="PartCount")
    feed(an, "state", (0, "RUN"), (300, "IDLE"))
    feed(an, "state", (200, "RUN"))  # older than IDLE@300: ignored
    feed(an, "part_count", (0, 1000), (100, 1010))
    feed(an, "part_count", (50, 1005))  # older than 1010@100: ignored (not a step back)
    feed(an, "part_count", (500, 1020))  # +10
    feed(an, "state", (450, "ALARM"))  # behind part_count@500, but in order for its own role
    s = an.summary(T0 + 600)
    assert s["state_s"] == {"RUN": 300.0, "IDLE": 150.0, "ALARM": 150.0, "unknown": 0.0}
    assert s["cycles"] == 20
    assert s["ignored"] == {"out_of_order": 2, "invalid": 0}
    assert s["resets"] == {}
    assert an.summary(T0 + 700)["ignored"] == {"out_of_order": 0, "invalid": 0}  # per period


def test_period_boundary_inside_a_run_stretch() -> None:
    an = analyzer(state="State", part_count="PartCount")
    feed(an, "state", (100, "RUN"))
    feed(an, "part_count", (100, 0), (250, 10))
    first = an.summary(T0 + 300)
    assert first["state_s"] == {"RUN": 200.0, "unknown": 100.0}
    assert (first["availability"], first["cycles"]) == (1.0, 10)
    # values dated after the next boundary (a device clock ahead) wait for their period
    feed(an, "state", (650, "IDLE"))
    feed(an, "part_count", (620, 15), (640, 20))
    second = an.summary(T0 + 600)
    assert second["state_s"] == {"RUN": 300.0, "unknown": 0.0}  # RUN carried over, all of it
    assert second["cycles"] == 0
    third = an.summary(T0 + 900)
    assert third["state_s"] == {"RUN": 50.0, "IDLE": 250.0, "unknown": 0.0}
    assert third["cycles"] == 10  # +5 at 620, +5 at 640
    assert (third["start"], third["end"]) == ("2026-01-01T00:10:00.000000Z", "2026-01-01T00:15:00.000000Z")


def test_value_dated_before_the_period_starts_at_the_period_start() -> None:
    an = analyzer(state="State")
    feed(an, "state", (-3600, "RUN"))  # an initial read: source time is its last change, an hour ago
    assert an.summary(T0 + 600)["state_s"] == {"RUN": 600.0, "unknown": 0.0}
    feed(an, "state", (550, "IDLE"))  # arrives after its period was summarised
    s = an.summary(T0 + 900)
    assert s["state_s"] == {"IDLE": 300.0, "unknown": 0.0}  # IDLE from this period's start on


# -- missing config, zero running, bad values --------------------------------------------------------


def test_missing_elements_are_named() -> None:
    an = analyzer(state="State")
    feed(an, "state", (0, "RUN"))
    an.observe("part_count", 5, T0 + 1)  # not mapped: ignored
    s = an.summary(T0 + 600)
    assert s["missing"] == ["alarm", "part_count", "ideal_cycle_s", "good_count|scrap_count"]
    assert s["availability"] == 1.0
    for key in ("cycles", "mean_cycle_s", "alarms", "alarm_s", "performance", "quality", "oee", "good", "scrap"):
        assert s[key] is None, key


def test_only_a_part_counter() -> None:
    an = analyzer(part_count="PartCount", ideal_cycle_s=7.0)
    feed(an, "part_count", (0, 0), (100, 12))
    s = an.summary(T0 + 600)
    assert s["cycles"] == 12
    assert s["state_s"] is None and s["running_s"] is None and s["mean_cycle_s"] is None
    assert s["missing"] == ["state", "alarm", "good_count|scrap_count"]


def test_missing_ideal_cycle_time() -> None:
    an = analyzer(**(FULL | {"ideal_cycle_s": None}))
    shift_600s(an)
    feed(an, "scrap_count", (0, 0))
    s = an.summary(T0 + 600)
    assert (s["availability"], s["quality"]) == (0.7, 1.0)
    assert s["performance"] is None and s["oee"] is None
    assert s["missing"] == ["ideal_cycle_s"]


def test_zero_running_time() -> None:
    an = analyzer(**FULL)
    feed(an, "state", (0, "IDLE"))
    feed(an, "part_count", (0, 7), (300, 7))
    feed(an, "scrap_count", (0, 0))
    s = an.summary(T0 + 600)
    assert (s["running_s"], s["availability"], s["cycles"]) == (0.0, 0.0, 0)
    assert s["mean_cycle_s"] is None and s["performance"] is None and s["quality"] is None
    assert s["oee"] == 0.0  # observed 600 s, no part made: 7 s × 0 good / 600 s
    assert "performance: no running time in the period" in s["notes"]


def test_parts_without_running_time() -> None:
    an = analyzer(**FULL)
    feed(an, "state", (0, "IDLE"))
    feed(an, "part_count", (0, 0), (300, 5))
    feed(an, "scrap_count", (0, 0))
    s = an.summary(T0 + 600)
    assert s["performance"] is None and s["oee"] is None and s["mean_cycle_s"] is None
    assert s["quality"] == 1.0
    assert any("without running time" in n for n in s["notes"])


def test_empty_period() -> None:
    an = analyzer(**FULL)
    s = an.summary(T0)
    assert s["period_s"] == 0.0 and s["state_s"] == {"unknown": 0.0}
    assert s["availability"] is None and s["oee"] is None


def test_performance_above_one_is_reported_and_flagged() -> None:
    an = analyzer(**(FULL | {"ideal_cycle_s": 10.0}))
    feed(an, "state", (0, "RUN"))
    feed(an, "part_count", (0, 0), (299, 40))
    feed(an, "scrap_count", (0, 0))
    s = an.summary(T0 + 300)
    assert s["performance"] == 1.3333  # 10 s × 40 / 300 s
    assert s["oee"] == 1.3333  # 1 × 1.333… × 1
    assert "performance > 1: ideal_cycle_s may be too long" in s["notes"]


def test_nan_and_bad_values_are_ignored_and_counted() -> None:
    an = analyzer(**FULL)
    feed(an, "state", (0, "RUN"), (100, math.nan), (200, None))  # not states
    feed(an, "alarm", (0, 0), (100, math.nan))
    feed(an, "part_count", (0, 1000), (10, math.nan), (20, 1010), (30, math.inf), (40, "1020"), (50, 1020))
    feed(an, "scrap_count", (0, 0))
    an.observe("part_count", 1030, math.nan)  # no usable time
    s = an.summary(T0 + 600)
    assert s["cycles"] == 20  # 1000 → 1010 → 1020; the NaN, inf and string do not break the sum
    assert s["state_s"] == {"RUN": 600.0, "unknown": 0.0}
    assert s["ignored"] == {"out_of_order": 0, "invalid": 7}  # 2 states, 1 alarm, 3 counts, 1 time
    assert s["oee"] is not None and not math.isnan(s["oee"])
    json.dumps(s, allow_nan=False)


def test_bad_calls_raise() -> None:
    an = analyzer(**FULL)
    with pytest.raises(ValueError, match="role"):
        an.observe("temperature", 1.0, T0)
    an.summary(T0 + 60)
    with pytest.raises(ValueError, match="until"):
        an.summary(T0 + 30)  # before the period start
    with pytest.raises(ValueError, match="ideal_cycle_s"):
        AnalysisSpec(machine="m", ideal_cycle_s=0.0)


# -- config ------------------------------------------------------------------------------------------


def test_spec_from_config() -> None:
    cfg = {"state": "State", "running": ["RUN"], "alarm": "AlarmCode", "part_count": "PartCount",
           "scrap_count": "Quality.Scrap", "ideal_cycle_s": 7, "interval_s": 60}  # fmt: skip
    spec = AnalysisSpec.from_config("cnc01", cfg)
    assert spec == AnalysisSpec(
        machine="cnc01", state="State", running=frozenset({"RUN"}), alarm="AlarmCode", part_count="PartCount",
        scrap_count="Quality.Scrap", ideal_cycle_s=7.0, interval_s=60.0,
    )  # fmt: skip
    assert spec.elements() == {"State": ("state",), "AlarmCode": ("alarm",), "PartCount": ("part_count",),
                               "Quality.Scrap": ("scrap_count",)}  # fmt: skip
    assert AnalysisSpec.from_config("m", {"state": "StateCode"}).running == frozenset({"RUN", 1})
    with pytest.raises(ValueError, match="unknown key"):
        AnalysisSpec.from_config("m", {"stat": "State"})
    with pytest.raises(ValueError, match="running"):
        AnalysisSpec.from_config("m", {"running": [1.5]})


# -- property ----------------------------------------------------------------------------------------

_offsets = st.integers(min_value=-200, max_value=1200).map(float) | st.floats(min_value=-200, max_value=1200)
_op = st.one_of(
    st.tuples(st.just("state"), st.sampled_from(["RUN", "IDLE", "ALARM", 1, 0, math.nan]), _offsets),
    st.tuples(st.just("alarm"), st.sampled_from([0, 3, 7]), _offsets),
    st.tuples(st.just("gap"), _offsets, st.none() | _offsets),
    st.tuples(st.just("summary"), st.floats(min_value=0, max_value=300), st.just(0.0)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=40))
def test_state_seconds_sum_to_the_period(ops: list[tuple[str, Any, Any]]) -> None:
    an = analyzer(state="State", alarm="AlarmCode")
    summaries = []
    for kind, a, b in ops:
        if kind == "state":
            an.observe("state", a, T0 + b)
        elif kind == "alarm":
            an.observe("alarm", a, T0 + b)
        elif kind == "gap":
            an.unknown(T0 + a, None if b is None else T0 + b)
        else:
            summaries.append(an.summary(an.start + a))
    summaries.append(an.summary(an.start + 100))
    for s in summaries:
        parts = s["state_s"]
        assert all(v >= 0 for v in parts.values())
        assert sum(parts.values()) == pytest.approx(s["period_s"], abs=0.001 * len(parts))
        assert s["observed_s"] == pytest.approx(s["period_s"] - parts["unknown"], abs=0.002)
        assert s["running_s"] <= s["observed_s"] + 0.002
        assert 0 <= s["alarm_s"] <= s["period_s"] + 0.002
        assert s["availability"] is None or 0 <= s["availability"] <= 1
