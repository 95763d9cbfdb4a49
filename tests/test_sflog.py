"""The usage-log sender against the fake log API on 127.0.0.1 (simulators/sflogapi), with real SQLite
files: a simulated KST day, every answer code, restarts, yesterday's events, the key kept secret.

Time is virtual: the sender's clock and sleep and the fake's clock are one `VirtualTime`, which
moves only to the next thing that happens (an event, or the moment the sender asked to wake).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from pydantic import SecretStr

from simulators.ports import free_port
from simulators.sflogapi import FakeLogApi, Limits, serve
from tests.helpers import until
from tests.tlsfiles import Ca
from uploader.sflog import (
    LogCall,
    SfLogClient,
    SfLogSender,
    UsageEvent,
    Verdict,
    WindowStore,
    format_log_dt,
    representative,
)
from uploader.sflog.client import verdict_of
from uploader.sflog.events import check_key

SEOUL = ZoneInfo("Asia/Seoul")
DAY = date(2025, 3, 12)
# Written out from the reference, not taken from events.py: C/U/D > login > read > logout.
RANK = {"DO6004": 3, "DO6005": 3, "DO6006": 3, "DO6001": 2, "DO6003": 1, "DO6002": 0}
LOG_DT = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}")


def at(day: date, h: int, m: int, s: int = 0, ms: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, h, m, s, ms * 1000, tzinfo=SEOUL)


def window(t: datetime) -> tuple[date, int]:
    k = t.astimezone(SEOUL)
    return k.date(), (k.hour * 60 + k.minute) // 10


def window_of_log_dt(log_dt: str) -> tuple[date, int]:
    return window(datetime.strptime(log_dt, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=SEOUL))


def quick() -> Iterator[float]:
    return itertools.repeat(30.0)


_ids = itertools.count()


def ev(t: datetime, use: str = "DO6003", user: str = "kim.op", ip: str = "10.1.2.11", size: int = 1000) -> UsageEvent:
    return UsageEvent(f"e{next(_ids)}", t, use, user, ip, size)


class VirtualTime:
    """One clock for the sender and the fake API; `sleep` returns when the test moves the clock."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.wake_at: datetime | None = None
        self._moved = asyncio.Event()
        self._slept = asyncio.Event()

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.wake_at = self.now + timedelta(seconds=seconds)
        self._moved.clear()
        self._slept.set()
        try:
            await self._moved.wait()
        finally:
            self.wake_at = None

    def mark(self) -> None:
        """Before an action: `quiet()` then waits for a sleep begun after it."""
        self._slept.clear()

    async def quiet(self) -> None:
        """Until the sender has done what is due and sleeps again."""
        await asyncio.wait_for(self._slept.wait(), 10)

    def move_to(self, t: datetime) -> None:
        self.now = max(self.now, t)
        self._moved.set()


@dataclass
class Rig:
    vt: VirtualTime
    api: FakeLogApi
    client: SfLogClient
    directory: Path
    sender_kw: dict[str, Any]
    sender: SfLogSender = field(init=False)
    task: asyncio.Task[None] = field(init=False)

    async def start(self) -> None:
        kw: dict[str, Any] = {"delays": quick, **self.sender_kw}
        self.sender = SfLogSender(self.directory, self.client, clock=self.vt, sleep=self.vt.sleep, **kw)
        self.vt.mark()
        self.task = asyncio.create_task(self.sender.run())
        await self.vt.quiet()

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        assert self.task.cancelled(), "run() must end by cancellation, not swallow it"
        self.sender.close()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def feed(self, events: Iterable[UsageEvent]) -> int:
        self.vt.mark()
        n = await self.sender.take(events)
        if n:
            await self.vt.quiet()
        return n

    async def advance(self, to: datetime) -> None:
        """Move the clock to `to`, stopping wherever the sender asked to wake."""
        while self.vt.now < to:
            assert not self.task.done(), f"the sender ended: {self.task}"
            wake = self.vt.wake_at
            self.vt.mark()
            self.vt.move_to(min(wake, to) if wake is not None else to)
            await self.vt.quiet()

    async def advance_until(self, check: Callable[[], object], limit: datetime) -> None:
        """Move the clock from one wake of the sender to the next until `check()` holds."""
        while not check():
            assert self.vt.now < limit, f"not by {limit}"
            await self.advance(self.vt.wake_at or limit)


@asynccontextmanager
async def rig(
    tmp_path: Path, start: datetime, key: str = "TESTKEY-0001", timeout: float = 5.0, **sender_kw: Any
) -> AsyncIterator[Rig]:
    vt = VirtualTime(start)
    api = FakeLogApi({key}, clock=vt)
    port = free_port()
    runner = await serve(api, "127.0.0.1", port)
    client = SfLogClient(f"http://127.0.0.1:{port}", key, timeout=timeout)
    r = Rig(vt, api, client, tmp_path / "sflog", sender_kw)
    await r.start()
    try:
        yield r
    finally:
        if not r.task.done():
            await r.stop()
        await client.close()
        await runner.cleanup()


# -- events, fields, answer codes ----------------------------------------------------------------


def test_log_dt_is_kst_with_truncated_milliseconds() -> None:
    assert format_log_dt(datetime(2025, 3, 12, 1, 2, 3, 456789, tzinfo=UTC)) == "2025-03-12 10:02:03.456"
    # 14:59:59.9999 UTC is 23:59:59.9999 KST: truncated, it stays on its day
    assert format_log_dt(datetime(2025, 3, 12, 14, 59, 59, 999900, tzinfo=UTC)) == "2025-03-12 23:59:59.999"
    assert format_log_dt(datetime(2025, 3, 12, 15, 0, 0, tzinfo=UTC)) == "2025-03-13 00:00:00.000"
    with pytest.raises(ValueError, match="no time zone"):
        ev(datetime(2025, 3, 12, 10, 0))


def test_fields_are_checked_against_the_apis_limits() -> None:
    t = at(DAY, 10, 0)
    assert ev(t, user="u" * 60).user == "u" * 60
    with pytest.raises(ValueError, match=r"sysUser: 61 characters, the limit is 60"):
        ev(t, user="u" * 61)
    with pytest.raises(ValueError, match="sysUser: empty"):
        ev(t, user="")
    long_v6 = "2001:0db8:85a3:0000:0000:8a2e:0370:7334"
    assert len(long_v6) > 30 and ev(t, ip=long_v6).ip == ""
    assert ev(t, ip="2001:db8::7334").ip == "2001:db8::7334", "an IPv6 address that fits is kept"
    with pytest.raises(ValueError, match=r"conectIp: .* 31 characters, the limit is 30"):
        ev(t, ip="h" * 31)
    assert ev(t, size=10**9 - 1).data_bytes == 999_999_999
    for bad in (10**9, -1):
        with pytest.raises(ValueError, match=r"dataUsgqty: .* 0 <= n < 1_000_000_000"):
            ev(t, size=bad)
    with pytest.raises(ValueError, match="DO6007 is physical in/out time"):
        ev(t, use="DO6007")
    with pytest.raises(ValueError, match="dataUsgqty"):
        LogCall.of(ev(t), 10**9)
    long_key = "K" * 101
    with pytest.raises(ValueError, match="crtfcKey: 101 characters, the limit is 100") as caught:
        check_key(long_key)
    assert long_key not in str(caught.value)
    check_key("K" * 100)


def test_the_representative_is_the_most_significant_then_the_earliest() -> None:
    logout, read, login = ev(at(DAY, 10, 0), "DO6002"), ev(at(DAY, 10, 1), "DO6003"), ev(at(DAY, 10, 2), "DO6001")
    update, delete = ev(at(DAY, 10, 5), "DO6005"), ev(at(DAY, 10, 3), "DO6006")
    assert representative([logout, read, login, update, delete]) is delete
    assert representative([logout, read, login]) is login
    assert representative([logout, read]) is read
    twin_a, twin_b = ev(at(DAY, 10, 4), "DO6004", user="a"), ev(at(DAY, 10, 4), "DO6004", user="b")
    assert representative([twin_a, twin_b]) is twin_a


def test_answer_codes_map_to_what_a_sender_must_do() -> None:
    expected = {"AP1001": Verdict.STORED, "AP1002": Verdict.STORED, "AP1028": Verdict.STORED}
    expected |= {"AP1029": Verdict.ACKNOWLEDGED, "AP1030": Verdict.STOP}
    expected |= {c: Verdict.DAILY_LIMIT for c in ("AP1031", "AP1032", "AP1033")}
    expected |= {f"AP{n}": Verdict.REJECTED for n in (1004, 1026, *range(1010, 1026))}
    expected |= {c: Verdict.RETRY for c in ("AP1003", "AP1027", "AP1034", "AP9999")}
    assert {c: verdict_of(c) for c in expected} == expected


def test_the_store_counts_an_event_id_once_and_a_late_event_forms_a_further_call(tmp_path: Path) -> None:
    store = WindowStore(tmp_path)
    try:
        a, b = ev(at(DAY, 10, 1), size=600_000_000), ev(at(DAY, 10, 2), "DO6005", size=500_000_000)
        assert store.add([a, b]) == 2
        assert store.add([a, b]) == 0, "a redelivered event is not counted twice"
        assert store.next_call(at(DAY, 10, 10, 30), timedelta(minutes=1)) is None, "not settled yet"
        call = store.next_call(at(DAY, 10, 11), timedelta(minutes=1))
        assert call is not None and call.event == b and call.events == 2
        assert call.total_bytes == 1_100_000_000 and call.usage == 999_999_999, "capped below 10^9"
        assert call.fields == LogCall(b.log_dt, "DO6005", "kim.op", "10.1.2.11", 999_999_999)
        late = ev(at(DAY, 10, 9), "DO6006", size=7)
        store.add([late])
        assert store.next_call(at(DAY, 10, 12), timedelta(minutes=1)) == call, "the pending call first"
        store.sent(call, "AP1002", at(DAY, 10, 12), stored=True)
        again = store.next_call(at(DAY, 10, 12), timedelta(minutes=1))
        assert again is not None and (again.event, again.total_bytes, again.events) == (late, 7, 1)
        assert (again.day, again.slot) == (call.day, call.slot)
    finally:
        store.close()


# -- a day -----------------------------------------------------------------------------------------


def workday(day: date, seed: int = 7) -> list[UsageEvent]:
    """A factory day: a night batch read, two shifts' operators with a quiet lunch, bursts, an evening."""
    rng = random.Random(seed)
    out: list[UsageEvent] = [ev(at(day, 2, 13, 5, 120), "DO6003", "report-batch", "127.0.0.1", 48_000)]
    staff = [
        ("kim.op", "10.1.2.11"),
        ("lee.op", "10.1.2.12"),
        ("park.eng", "10.1.3.5"),
        ("choi.qa", "fe80:0000:0000:0000:0204:61ff:fe9d:f156"),  # 39 characters: sent as ""
    ]
    for user, ip in staff:
        t = at(day, 8, rng.randrange(25), rng.randrange(60), rng.randrange(1000))
        out.append(ev(t, "DO6001", user, ip, 0))
        while t < at(day, 17, 20):
            t += timedelta(seconds=rng.randrange(120, 1500), milliseconds=rng.randrange(1000))
            if at(day, 12, 0) <= t < at(day, 13, 0):
                t = at(day, 13, rng.randrange(10), rng.randrange(60))
            use = rng.choices(["DO6003", "DO6005", "DO6004", "DO6006"], weights=[80, 10, 7, 3])[0]
            size = rng.randrange(2_000_000) if use == "DO6003" else rng.randrange(20_000)
            out.append(ev(t, use, user, ip, size))
        out.append(ev(at(day, 17, rng.randrange(30, 50), rng.randrange(60)), "DO6002", user, ip, 0))
    out += [ev(at(day, 9, 31, s // 2, s * 7), "DO6003", "kim.op", "10.1.2.11", 35_000 + s) for s in range(60)]
    out += [ev(at(day, 14, 5, s), "DO6004", "park.eng", "10.1.3.5", 900 + s) for s in range(20)]
    out += [ev(at(day, 15, 21, s), "DO6003", "lee.op", "10.1.2.12", 150_000_000) for s in range(10)]  # 1.5 GB
    out += [ev(at(day, 22, 47, 1), "DO6003", "lee.op", "10.1.2.12", 5_000), ev(at(day, 23, 55), "DO6005")]
    return sorted(out, key=lambda e: e.time)


def expected_calls(events: Iterable[UsageEvent]) -> dict[tuple[date, int], tuple[tuple[str, str, str, str], int]]:
    """Per window: (logDt, useSe, sysUser, conectIp) of the representative, and dataUsgqty; by hand."""
    by_window: dict[tuple[date, int], list[UsageEvent]] = {}
    for e in events:
        by_window.setdefault(window(e.time), []).append(e)
    out = {}
    for w, es in by_window.items():
        best = min(es, key=lambda e: (-RANK[e.use], e.time))
        log_dt = best.time.astimezone(SEOUL).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]
        out[w] = ((log_dt, best.use, best.user, best.ip), min(sum(e.data_bytes for e in es), 10**9 - 1))
    return out


async def play(r: Rig, events: list[UsageEvent], until: datetime, redeliver_every: int = 0) -> int:
    """Feed `events` at their own times, one take per minute of activity; returns the new ones counted."""
    taken = 0
    by_minute = itertools.groupby(events, key=lambda e: e.time.replace(second=0, microsecond=0))
    for n, (_, group) in enumerate(by_minute):
        batch = list(group)
        await r.advance(batch[-1].time)
        if redeliver_every and n % redeliver_every == 0:
            batch = batch + batch  # the same ids twice, as after a crash before an ack
        taken += await r.feed(batch)
    await r.advance(until)
    return taken


def check_day(r: Rig, events: list[UsageEvent], day: date) -> None:
    want = expected_calls(events)
    last = max(want)
    assert last == (day, 143), "the day has activity in its last window"
    calls = r.api.calls
    assert {c["code"] for c in calls} == {"AP1002"}, "no call was wasted (AP1029) or refused"
    assert len(calls) < 5000 and len(calls) <= 144
    sent: dict[tuple[date, int], dict[str, Any]] = {}
    for c in calls:
        f = c["fields"]
        assert c["key"] == "known" and LOG_DT.fullmatch(f["logDt"]), c
        assert f["logDt"][:10] == c["at"][:10] == day.isoformat(), f"same-day only: {c}"
        assert len(f["sysUser"]) <= 60 and len(f["conectIp"]) <= 30 and 0 <= f["dataUsgqty"] < 10**9
        assert f["useSe"] in RANK
        w = window_of_log_dt(f["logDt"])
        assert w not in sent, f"window {w} sent twice"
        sent[w] = f
        assert c["at"] >= (at(day, 0, 0) + (w[1] + 1) * timedelta(minutes=10)).strftime("%Y-%m-%d %H:%M"), "closed"
    got = {w: ((f["logDt"], f["useSe"], f["sysUser"], f["conectIp"]), f["dataUsgqty"]) for w, f in sent.items()}
    assert got == {w: v for w, v in want.items() if w != last}, "every window but the day's last, exactly as expected"
    times = [datetime.strptime(c["at"], "%Y-%m-%d %H:%M:%S.%f") for c in calls]
    assert min(b - a for a, b in itertools.pairwise(times)) >= timedelta(minutes=10), "one stored call per 10 min"
    assert max(v[1] for v in got.values()) == 999_999_999, "the 1.5 GB window is capped"
    assert any(v[0][3] == "" for v in got.values()), "the long IPv6 address went as an empty conectIp"
    stats = r.sender.stats
    stale_events = sum(1 for e in events if window(e.time) == last)
    assert (stats.stored, stats.acknowledged, stats.rejected) == (len(calls), 0, 0)
    assert (stats.stale_windows, stats.stale_events, stats.pending_windows) == (1, stale_events, 0)
    states = {(h.slot, h.state) for h in r.sender.store.history(day)}
    assert states == {(w[1], "sent") for w in got} | {(143, "stale")}


def test_a_day_of_factory_use_is_one_call_per_active_window(tmp_path: Path) -> None:
    events = workday(DAY)
    assert len(events) > 200

    async def scenario() -> None:
        async with rig(tmp_path, at(DAY, 0, 0)) as r:
            taken = await play(r, events, at(DAY + timedelta(days=1), 0, 30), redeliver_every=5)
            assert taken == len(events), "redelivered ids were counted once"
            check_day(r, events, DAY)
            assert r.sender.stats.calls_today == 0, "a new KST day"
            assert r.sender.store.ledger.calls_on(DAY) == len(r.api.calls)

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started < 30


def test_a_restart_in_the_middle_of_the_day_loses_and_double_sends_nothing(tmp_path: Path) -> None:
    events = sorted([*workday(DAY, seed=11), ev(at(DAY, 10, 25), size=777)], key=lambda e: e.time)
    morning = [e for e in events if e.time < at(DAY, 10, 30)]
    rest = [e for e in events if e.time >= at(DAY, 10, 30)]

    async def scenario() -> None:
        async with rig(tmp_path, at(DAY, 0, 0)) as r:
            await play(r, morning, at(DAY, 10, 30))
            calls_before = len(r.api.calls)
            r.api.fail("http500")  # the 10:20 window's call fails and waits for its retry ...
            await r.advance_until(lambda: len(r.api.calls) > calls_before, at(DAY, 10, 45))
            assert r.sender.stats.state == "retrying" and len(r.api.calls) == calls_before + 1
            await r.restart()  # ... when the agent restarts
            assert await r.feed(morning[-3:]) == 0, "events taken before the restart are known after it"
            await play(r, rest, at(DAY + timedelta(days=1), 0, 30))
            failed = [c for c in r.api.calls if c["code"] != "AP1002"]
            assert [c["code"] for c in failed] == ["HTTP 500"]
            r.api.calls.remove(failed[0])
            check_day(r, events, DAY)
            assert r.sender.store.ledger.calls_on(DAY) == len(r.api.calls) + 1, "the failed call counted too"

    asyncio.run(scenario())


def test_a_backlog_drains_oldest_first_one_stored_call_per_10_minutes_across_a_restart(tmp_path: Path) -> None:
    late = [ev(at(DAY, 10, m, 7), "DO6005" if m % 20 else "DO6003", size=m) for m in range(1, 60, 10)]  # 6 windows

    async def scenario() -> None:
        async with rig(tmp_path, at(DAY, 12, 0)) as r:
            assert await r.feed(late) == 6  # delivered late, e.g. from a spool after an outage
            await r.advance_until(lambda: len(r.api.calls) == 2, at(DAY, 13, 0))
            await r.restart()
            await r.advance(at(DAY, 13, 30))
            assert [c["code"] for c in r.api.calls] == ["AP1002"] * 6, "none wasted as AP1029"
            assert [c["fields"]["logDt"] for c in r.api.calls] == [e.log_dt for e in late], "oldest window first"
            times = [datetime.strptime(c["at"], "%Y-%m-%d %H:%M:%S.%f") for c in r.api.calls]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert all(timedelta(minutes=10) <= g <= timedelta(minutes=10, seconds=5) for g in gaps), gaps

    asyncio.run(scenario())


def test_an_event_of_yesterday_is_kept_locally_not_sent(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, at(DAY, 9, 0)) as r:
            old = [ev(at(DAY - timedelta(days=1), 23, 58, 30), "DO6005"), ev(at(DAY - timedelta(days=1), 23, 59))]
            assert await r.feed(old) == 2
            today = ev(at(DAY, 9, 1))
            await r.feed([today])
            await r.advance(at(DAY, 10, 0))
            assert [c["fields"]["logDt"] for c in r.api.calls] == [today.log_dt]
            s = r.sender.stats
            assert (s.stale_windows, s.stale_events, s.stored) == (1, 2, 1)
            assert [h.state for h in r.sender.store.history(DAY - timedelta(days=1))] == ["stale"]

    asyncio.run(scenario())


# -- answer codes ----------------------------------------------------------------------------------


def test_ap1029_acknowledges_without_storing_and_the_window_is_done(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, at(DAY, 10, 0)) as r:
            r.api.last_stored["TESTKEY-0001"] = at(DAY, 10, 5)  # another gateway of the project sent
            await r.feed([ev(at(DAY, 10, 1))])
            await r.advance(at(DAY, 11, 0))
            assert [c["code"] for c in r.api.calls] == ["AP1029"], "sent once, not again"
            s = r.sender.stats
            assert (s.acknowledged, s.stored, s.pending_windows, s.state) == (1, 0, 0, "sending")
            assert [(h.state, h.code) for h in r.sender.store.history(DAY)] == [("sent", "AP1029")]
            await r.feed([ev(at(DAY, 11, 1))])
            await r.advance(at(DAY, 11, 20))
            assert [c["code"] for c in r.api.calls] == ["AP1029", "AP1002"]

    asyncio.run(scenario())


def test_ap1030_stops_sending_across_a_restart_until_resumed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "uploader.sflog")

    async def scenario() -> None:
        async with rig(tmp_path, at(DAY, 10, 0)) as r:
            r.api.collecting = False
            first = ev(at(DAY, 10, 2), "DO6004")
            await r.feed([first])
            await r.advance(at(DAY, 12, 0))
            assert [c["code"] for c in r.api.calls] == ["AP1030"], "stopped after the first AP1030"
            assert r.sender.stats.state == "stopped" and "AP1030" in r.sender.stats.stopped_reason
            await r.feed([ev(at(DAY, 12, 1))])
            await r.restart()
            await r.advance(at(DAY, 13, 0))
            assert len(r.api.calls) == 1 and r.sender.stats.state == "stopped", "the stop outlives a restart"
            r.api.collecting = True
            r.vt.mark()
            assert r.sender.resume() is True
            await r.vt.quiet()
            await r.advance(at(DAY, 13, 30))
            assert [c["code"] for c in r.api.calls] == ["AP1030", "AP1002", "AP1002"]
            assert r.api.calls[1]["fields"]["logDt"] == first.log_dt, "the stopped window is sent after resume"
            assert r.sender.stats.state == "sending" and r.sender.resume() is False
            r.api.collecting = False  # stopped again; this time resumed as a CLI would: by the file
            await r.feed([ev(at(DAY, 13, 31))])
            await r.advance(at(DAY, 14, 0))
            assert r.sender.stats.state == "stopped" and len(r.api.calls) == 4
            r.api.collecting = True
            other = WindowStore(r.directory)
            try:
                assert other.ledger.resume() is True
            finally:
                other.close()
            await r.advance(at(DAY, 14, 1))  # noticed within the sender's longest sleep
            assert [c["code"] for c in r.api.calls] == ["AP1030", "AP1002", "AP1002", "AP1030", "AP1002"]

    asyncio.run(scenario())
    stops = [m for m in caplog.messages if "sending stopped" in m]
    assert len(stops) == 3, "when it stopped, when the restarted sender found it stopped, when it stopped again"
    assert sum("sending again (was stopped)" in m for m in caplog.messages) == 2


def test_the_daily_limit_pauses_until_the_next_kst_day(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, at(DAY, 10, 0)) as r:
            r.api.limits = Limits(per_day=2)
            for m in (1, 21, 41):
                await r.feed([ev(at(DAY, 10, m))])
            await r.advance(at(DAY, 23, 0))
            assert [c["code"] for c in r.api.calls] == ["AP1002", "AP1002", "AP1031"]
            s = r.sender.stats
            assert s.state == "daily-limit" and s.paused_until == at(DAY + timedelta(days=1), 0, 0)
            await r.restart()
            await r.advance(at(DAY, 23, 59))
            assert len(r.api.calls) == 3, "the pause outlives a restart"
            nxt = DAY + timedelta(days=1)
            await r.advance(at(nxt, 0, 1))
            await r.feed([ev(at(nxt, 0, 2))])
            await r.advance(at(nxt, 0, 30))
            assert [c["code"] for c in r.api.calls] == ["AP1002", "AP1002", "AP1031", "AP1002"]
            s = r.sender.stats
            assert (s.state, s.stale_windows, s.calls_today) == ("sending", 1, 1), "yesterday's last window: stale"

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("limits", "event", "code"),
    [
        (Limits(sys_user=5), ev(at(DAY, 10, 2), user="operator1"), "AP1004"),
        (Limits(usage=1000), ev(at(DAY, 10, 2), size=5000), "AP1026"),
    ],
)
def test_a_rejected_window_is_kept_with_its_reason_and_not_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, limits: Limits, event: UsageEvent, code: str
) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, at(DAY, 10, 0)) as r:
            r.api.limits = limits
            await r.feed([event])
            await r.advance(at(DAY, 11, 0))
            assert [c["code"] for c in r.api.calls] == [code]
            [h] = r.sender.store.history(DAY)
            assert (h.state, h.code, h.event) == ("rejected", code, event.id) and h.reason
            r.api.limits = Limits()
            await r.feed([ev(at(DAY, 11, 1), user="kim", size=10)])
            await r.advance(at(DAY, 11, 15))
            assert [c["code"] for c in r.api.calls] == [code, "AP1002"], "the next window is not held back"
            assert (r.sender.stats.rejected, r.sender.stats.stored) == (1, 1)

    asyncio.run(scenario())
    assert sum(f"rejected with {code}" in m for m in caplog.messages) == 1


def test_http_500_and_a_malformed_answer_are_retried_later(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "uploader.sflog")

    async def scenario() -> None:
        async with rig(tmp_path, at(DAY, 10, 0)) as r:
            r.api.fail("http500", 2)
            r.api.fail("malformed")
            e = ev(at(DAY, 10, 3), "DO6005")
            await r.feed([e])
            await r.advance(at(DAY, 10, 11, 1))
            assert [c["code"] for c in r.api.calls] == ["HTTP 500"]
            assert "got HTTP 500" in r.sender.stats.last_error and r.sender.stats.state == "retrying"
            await r.advance(at(DAY, 10, 11, 29))
            assert len(r.api.calls) == 1, "not before the backoff"
            await r.advance(at(DAY, 10, 11, 45))
            assert [c["code"] for c in r.api.calls] == ["HTTP 500", "HTTP 500"]
            await r.advance(at(DAY, 10, 12, 1))
            error = r.sender.stats.last_error
            assert 'expected HTTP 200 with JSON {"result": {"recptnRsltCd"' in error, error
            assert "got HTTP 200 text/html: '<html>" in error, error
            await r.advance(at(DAY, 10, 30))
            assert [c["code"] for c in r.api.calls] == ["HTTP 500", "HTTP 500", "malformed", "AP1002"]
            assert {c["fields"]["logDt"] for c in r.api.calls if "fields" in c} == {e.log_dt}
            s = r.sender.stats
            assert (s.state, s.stored, s.calls_today) == ("sending", 1, 4)

    asyncio.run(scenario())
    assert sum("cannot deliver" in m for m in caplog.messages) == 1, "one line per state change, not per try"
    assert sum("sending again (was retrying)" in m for m in caplog.messages) == 1


def test_a_slow_answer_times_out_and_the_retry_is_acknowledged(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, at(DAY, 10, 0), timeout=0.3) as r:
            r.api.fail("slow", delay=1.0)
            await r.feed([ev(at(DAY, 10, 3))])
            await r.advance(at(DAY, 10, 11, 1))
            assert "no answer" in r.sender.stats.last_error and "within 0.3 s" in r.sender.stats.last_error
            await until(lambda: "code" in r.api.calls[0], 5, "the slow answer")  # the fake stored it after all
            await r.advance(at(DAY, 10, 20))
            assert [c["code"] for c in r.api.calls] == ["AP1002", "AP1029"], "stored once, the retry acknowledged"
            assert r.sender.stats.acknowledged == 1 and r.sender.stats.pending_windows == 0

    asyncio.run(scenario())


def test_the_daily_budget_is_never_exceeded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match=r"max_calls_per_day: 5001, allowed 1..5000"):
        SfLogSender(tmp_path / "x", SfLogClient("http://127.0.0.1:1", "k"), delays=quick, max_calls_per_day=5001)

    async def scenario() -> None:
        async with rig(tmp_path, at(DAY, 10, 0), max_calls_per_day=3) as r:
            r.api.fail("http500", 3)
            await r.feed([ev(at(DAY, 10, 3))])
            await r.advance(at(DAY, 23, 59))
            assert len(r.api.calls) == 3 and r.sender.stats.state == "budget-spent"
            nxt = DAY + timedelta(days=1)
            await r.advance(at(nxt, 0, 1))
            await r.feed([ev(at(nxt, 0, 2))])
            await r.advance(at(nxt, 0, 30))
            assert [c["code"] for c in r.api.calls] == ["HTTP 500"] * 3 + ["AP1002"]
            assert r.sender.store.ledger.calls_on(DAY) == 3 and r.sender.stats.calls_today == 1

    asyncio.run(scenario())
    assert sum("reach max_calls_per_day=3" in m for m in caplog.messages) == 1


def test_cancelling_during_a_call_keeps_the_window_for_the_next_run(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, at(DAY, 10, 0)) as r:
            r.api.fail("slow", delay=0.5)
            await r.feed([ev(at(DAY, 10, 3))])
            r.vt.move_to(at(DAY, 10, 11, 1))
            await until(lambda: len(r.api.calls) == 1, 5, "the call to arrive")
            started = time.monotonic()
            await r.stop()
            assert time.monotonic() - started < 0.4, "cancellation does not wait for the answer"
            await until(lambda: "code" in r.api.calls[0], 5, "the slow answer")  # the API stored it all the same
            await r.start()
            await r.advance(at(DAY, 10, 20))
            assert [c["code"] for c in r.api.calls] == ["AP1002", "AP1029"]
            assert r.sender.stats.pending_windows == 0

    asyncio.run(scenario())


# -- secrecy, TLS, the fake on its own -------------------------------------------------------------


def _reprs(obj: object, depth: int = 0, seen: set[int] | None = None) -> Iterator[str]:
    """repr of `obj` and, recursively, of its attributes (not into a SecretStr: it holds the key, by design)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 3:
        return
    seen.add(id(obj))
    yield repr(obj)
    if isinstance(obj, SecretStr):
        return
    attrs = getattr(obj, "__dict__", None) or {s: getattr(obj, s, None) for s in getattr(obj, "__slots__", ())}
    for value in attrs.values():
        yield from _reprs(value, depth + 1, seen)


def test_the_crtfc_key_is_in_no_log_line_error_repr_or_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = "SF-" + secrets.token_hex(24)
    errors: list[str] = []

    async def scenario() -> None:
        async with rig(tmp_path, at(DAY, 10, 0), key=key) as r:
            r.api.fail("malformed")  # echoes the request, key and all
            r.api.fail("http500")
            await r.feed([ev(at(DAY, 10, 3))])
            await r.advance(at(DAY, 10, 11, 1))
            errors.append(r.sender.stats.last_error)
            assert "crtfcKey" in errors[0] and "**********" in errors[0], "the echo came back, masked"
            await r.advance(at(DAY, 10, 20))
            r.api.limits = Limits(sys_user=2)
            await r.feed([ev(at(DAY, 10, 25))])
            await r.advance(at(DAY, 10, 40))
            r.api.collecting = False
            await r.feed([ev(at(DAY, 10, 45))])
            await r.advance(at(DAY, 11, 0))
            assert [c["code"] for c in r.api.calls] == ["malformed", "HTTP 500", "AP1002", "AP1004", "AP1030"]
            errors.append(r.sender.stats.last_error)
            errors.append(r.sender.stats.stopped_reason)
            texts = [*_reprs(r.sender), *_reprs(r.client), *_reprs(r.sender.stats), repr(r.api)]
            texts += [repr(h) for h in r.sender.store.history(DAY)]
            assert any("SecretStr" in t for t in texts), "the walk reached the client's key attribute"
            hits = [t for t in texts if key in t]
            assert not hits, hits[0] if hits else ""
            for bad in (key + "x" * 100, " " + key):
                with pytest.raises(ValueError) as caught:
                    SfLogClient("https://log.example", bad)
                errors.append(str(caught.value))

    asyncio.run(scenario())
    assert len(caplog.records) >= 4, "the scenario logged its state changes"
    for record in caplog.records:
        assert key not in record.getMessage() and key not in (record.exc_text or ""), record.getMessage()
    assert key not in caplog.text
    assert all(key not in e for e in errors) and all(errors)
    for f in (tmp_path / "sflog").iterdir():
        assert key.encode() not in f.read_bytes(), f"the key is written in {f}"


def test_tls_is_verified_by_default_and_a_ca_file_is_trusted(tmp_path: Path) -> None:
    ca = Ca(tmp_path / "pki")
    issued = ca.issue("sflog", host="127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(issued.cert, issued.key)

    async def scenario() -> None:
        api = FakeLogApi({"TLSKEY"})
        port = free_port()
        runner = await serve(api, "127.0.0.1", port, ssl_context=server_ctx)
        call = LogCall.of(ev(datetime.now(SEOUL)), 10)
        untrusting = SfLogClient(f"https://127.0.0.1:{port}", "TLSKEY")
        trusting = SfLogClient(f"https://127.0.0.1:{port}/", "TLSKEY", ca_file=ca.cert)
        try:
            refused = await untrusting.send(call)
            assert refused.verdict is Verdict.RETRY and "certificate" in refused.detail.lower(), refused
            ok = await trusting.send(call)
            assert (ok.verdict, ok.code) == (Verdict.STORED, "AP1002")
            assert [c["code"] for c in api.calls] == ["AP1002"], "nothing reached the API without verification"
        finally:
            await untrusting.close()
            await trusting.close()
            await runner.cleanup()

    asyncio.run(scenario())


def test_the_fake_runs_as_a_module_with_its_http_test_hooks(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.sflogapi", "--port", str(port), "--key", "MODKEY"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"READY http://127.0.0.1:{port}"

        async def scenario() -> None:
            base = f"http://127.0.0.1:{port}"
            client = SfLogClient(base, "MODKEY")
            async with aiohttp.ClientSession() as http:
                try:
                    fixed = at(DAY, 15, 0)
                    async with http.post(f"{base}/_clock", json={"now": fixed.isoformat()}) as resp:
                        assert resp.status == 200
                    first = await client.send(LogCall.of(ev(at(DAY, 14, 59)), 1))
                    yesterday = await client.send(LogCall.of(ev(at(DAY - timedelta(days=1), 14, 59)), 1))
                    async with http.post(f"{base}/_fail", json={"mode": "http500"}) as resp:
                        assert resp.status == 200
                    failed = await client.send(LogCall.of(ev(at(DAY, 14, 59)), 1))
                    test = await client.send(LogCall.of(ev(at(DAY, 14, 59), "DO6999"), 1))
                    async with http.get(f"{base}/_calls") as resp:
                        calls = await resp.json()
                finally:
                    await client.close()
            assert (first.code, yesterday.code, failed.verdict, test.code) == ("AP1002", "AP1023", "retry", "AP1028")
            assert [c["code"] for c in calls] == ["AP1002", "AP1023", "HTTP 500", "AP1028"]
            assert calls[0]["key"] == "known" and "crtfcKey" not in calls[0]["fields"]
            assert calls[0]["fields"]["logDt"] == "2025-03-12 14:59:00.000"
            assert calls[0]["at"] == "2025-03-12 15:00:00.000", "the fake's clock was set over HTTP"

        asyncio.run(scenario())
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
