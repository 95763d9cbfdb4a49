"""The clock check (agent/clock.py): which ages on arrival say a source's clock is off, and which do not."""

from __future__ import annotations

from agent.clock import AHEAD_S, BEHIND_S, ClockWatch


def interval(watch: ClockWatch, source: str, *ages: float) -> list[tuple[str, str, float, int]]:
    for first, last in zip(ages[::2], ages[1::2], strict=True):
        watch.seen(source, (first, last))
    return [(c.source, c.state, c.offset_s, c.values) for c in watch.check()]


def test_a_clock_that_agrees_says_nothing_and_one_ahead_says_so_at_once_with_the_korean_time_hint() -> None:
    watch = ClockWatch()
    assert interval(watch, "plc", 0.4, 0.5, 0.45, 0.6) == []
    assert interval(watch, "kst", -32400.2, -32399.9, -32400.1, -32399.8) == [("kst", "ahead", -32400.0, 4)]
    assert watch.check() == []  # nothing new in the next interval: the state stays
    assert watch.states() == {"plc": "agrees", "kst": "ahead"}
    assert interval(watch, "kst", -32400.0, -32399.0) == []  # still ahead: said once
    # the message names the offset, what it does and the likely cause
    watch2 = ClockWatch()
    watch2.seen("kst", (-32400.0, -32400.0))
    (c,) = watch2.check()
    assert "9.0 h ahead" in c.message and "Korean time" in c.message, c.message
    # set right: it agrees again, said once
    assert interval(watch, "kst", 0.3, 0.4) == [("kst", "agrees", 0.35, 2)]
    assert interval(watch, "kst", 0.3, 0.4) == []


def test_a_little_ahead_or_a_late_delivery_is_no_clock_problem() -> None:
    watch = ClockWatch()
    assert interval(watch, "plc", -AHEAD_S + 0.5, -AHEAD_S + 1) == []  # within the margin
    assert interval(watch, "plc", -AHEAD_S - 10, 0.2) == []  # one value in the future is not every one
    assert interval(watch, "plc", BEHIND_S - 1, BEHIND_S + 30) == []
    assert interval(watch, "plc", BEHIND_S + 1, BEHIND_S + 30) == []  # one old interval is not enough


def test_behind_takes_two_old_intervals_in_a_row_and_the_first_values_after_a_subscribe_are_no_sign() -> None:
    watch = ClockWatch()
    # The first subscribe: values that last changed hours ago, then fresh ones.
    assert interval(watch, "plc", 7200.0, 5.0, 0.5, 0.5) == []
    assert interval(watch, "plc", 3600.0, 3600.0) == []  # only the values' own changes, long ago
    assert watch.check() == []  # an interval without values breaks the run
    assert interval(watch, "plc", 3600.0, 3600.0) == []
    assert interval(watch, "plc", 600.5, 601.0, 600.0, 602.0) == [("plc", "behind", 600.75, 4)]
    assert watch.check() == []  # a quiet interval: the state stays
    assert interval(watch, "plc", 600.5, 601.0) == []  # once behind, one old interval keeps it
    assert watch.states() == {"plc": "behind"}
    assert interval(watch, "plc", 0.5, 0.7) == [("plc", "agrees", 0.6, 2)]


def test_sources_are_judged_apart() -> None:
    watch = ClockWatch()
    watch.seen("a", (-100.0, -100.0))
    watch.seen("b", (0.2, 0.3))
    assert [(c.source, c.state) for c in watch.check()] == [("a", "ahead")]


def test_the_status_view_is_the_state_and_the_last_interval_median() -> None:
    watch = ClockWatch()
    assert watch.view("plc") is None  # not judged yet
    watch.seen("plc", (0.2, 0.4))
    watch.check()
    assert watch.view("plc") == {"state": "agrees", "offsetS": 0.3}
    watch.seen("plc", (-600.0, -599.0))
    watch.check()
    assert watch.view("plc") == {"state": "ahead", "offsetS": -599.5}
    watch.check()  # a quiet interval keeps the last figure
    assert watch.view("plc") == {"state": "ahead", "offsetS": -599.5}


def test_the_interval_ages_over_all_sources_are_the_agent_stats_figures() -> None:
    watch = ClockWatch()
    watch.seen("a", (0.1, 0.2))
    watch.seen("b", (0.3, 0.4))
    watch.seen("a", (0.5, 1.0))
    watch.check()
    assert watch.ages_ms == {"count": 6, "p50": 400.0, "p95": 1000.0, "max": 1000.0}
    watch.check()  # a quiet interval: none
    assert watch.ages_ms == {}
