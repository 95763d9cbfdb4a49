"""The supervisor: a component that dies is seen, reported, restarted; one that keeps dying ends the agent."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator

import pytest

from agent.supervisor import ComponentFailed, Supervisor


def quick() -> Iterator[float]:
    return itertools.repeat(0.01)


class Reports:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.degraded_at_failure: list[bool] = []
        self.sup: Supervisor | None = None

    async def __call__(self, name: str, kind: str, message: str) -> None:
        self.seen.append((name, kind))
        if self.sup is not None:
            self.degraded_at_failure.append(self.sup.degraded)


def supervisor(reports: Reports, *, max_failures: int = 5, window_s: float = 60) -> Supervisor:
    sup = Supervisor(delays=quick, max_failures=max_failures, window_s=window_s, report=reports)
    reports.sup = sup
    return sup


def test_a_failing_component_is_logged_reported_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    reports = Reports()
    runs = 0
    healthy = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"boom {runs}")
        healthy.set()
        await asyncio.Event().wait()

    async def scenario() -> None:
        sup = supervisor(reports)
        sup.start("forwarder-x", flaky)
        await asyncio.wait_for(healthy.wait(), 5)
        assert not sup.degraded
        await sup.stop_all()

    asyncio.run(scenario())
    assert runs == 3
    assert reports.seen == [
        ("forwarder-x", "component-failed"),
        ("forwarder-x", "component-restarted"),
        ("forwarder-x", "component-failed"),
        ("forwarder-x", "component-restarted"),
    ]
    assert reports.degraded_at_failure == [True, False, True, False], "degraded while down, not after the restart"
    assert "forwarder-x failed, restarting" in caplog.text and "RuntimeError: boom 1" in caplog.text
    assert "Traceback" in caplog.text, "the traceback is what finds the bug"


def test_a_component_that_returns_counts_as_failed() -> None:
    reports = Reports()

    async def returns() -> None:
        return

    async def scenario() -> None:
        sup = supervisor(reports, max_failures=2)
        sup.start("heartbeat", returns)
        with pytest.raises(ComponentFailed, match="heartbeat failed 2 times"):
            await asyncio.wait_for(sup.wait(asyncio.Event()), 5)
        await sup.stop_all()

    asyncio.run(scenario())
    assert reports.seen[-1] == ("heartbeat", "component-gave-up")


def test_too_many_failures_in_the_window_end_the_wait_with_an_error(caplog: pytest.LogCaptureFixture) -> None:
    reports = Reports()
    other_cancelled = asyncio.Event()

    async def broken() -> None:
        raise OSError(28, "No space left on device")

    async def other() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            other_cancelled.set()
            raise

    async def scenario() -> None:
        sup = supervisor(reports, max_failures=3, window_s=60)
        sup.start("source-plc1", other)
        sup.start("forwarder-mqtt", broken)
        with pytest.raises(ComponentFailed) as err:
            await asyncio.wait_for(sup.wait(asyncio.Event()), 5)
        assert err.value.name == "forwarder-mqtt"
        await sup.stop_all()

    asyncio.run(scenario())
    assert other_cancelled.is_set()
    assert [kind for _, kind in reports.seen].count("component-failed") == 2
    assert reports.seen[-1] == ("forwarder-mqtt", "component-gave-up")
    assert any(r.levelno == logging.CRITICAL and "giving up" in r.getMessage() for r in caplog.records)


def test_failures_older_than_the_window_do_not_count() -> None:
    reports = Reports()
    runs = 0
    done = asyncio.Event()

    async def slow_flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 6:
            done.set()
            await asyncio.Event().wait()
        await asyncio.sleep(0.06)
        raise RuntimeError("again")

    async def scenario() -> None:
        sup = supervisor(reports, max_failures=3, window_s=0.1)
        sup.start("source-x", slow_flaky)
        waiter = asyncio.create_task(sup.wait(asyncio.Event()))
        await asyncio.wait_for(done.wait(), 10)
        assert not waiter.done(), "five failures, but never three within 0.1 s"
        waiter.cancel()
        await sup.stop_all()

    asyncio.run(scenario())


def test_stop_cancels_and_cancellation_is_not_a_failure() -> None:
    reports = Reports()
    started = asyncio.Event()
    cleaned_up = asyncio.Event()

    async def long_running() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    async def scenario() -> None:
        sup = supervisor(reports)
        sup.start("source-a", long_running)
        await asyncio.wait_for(started.wait(), 5)
        stop = asyncio.Event()
        waiter = asyncio.create_task(sup.wait(stop))
        stop.set()
        await asyncio.wait_for(waiter, 5)
        await asyncio.wait_for(sup.stop_all(), 5)

    asyncio.run(scenario())
    assert cleaned_up.is_set() and reports.seen == []


def test_a_report_that_fails_does_not_stop_the_restart(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0
    healthy = asyncio.Event()

    async def failing_report(name: str, kind: str, message: str) -> None:
        raise OSError(28, "No space left on device")

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("first")
        healthy.set()
        await asyncio.Event().wait()

    async def scenario() -> None:
        sup = Supervisor(delays=quick, max_failures=5, window_s=60, report=failing_report)
        sup.start("heartbeat", flaky)
        await asyncio.wait_for(healthy.wait(), 5)
        await sup.stop_all()

    asyncio.run(scenario())
    assert "could not record that heartbeat failed" in caplog.text
