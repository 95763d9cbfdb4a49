"""The pipeline with a real SQLite buffer: records, repeats, wrong types, quota drops as gap records."""

from __future__ import annotations

import asyncio
import itertools
import math
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from aas_models.live import LiveValues
from adapters.sample import Interruption, NodeProblem, Sample
from agent.pipeline import Pipeline, make_binding
from uploader import wire
from uploader.buffer import Buffer

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def quick() -> Iterator[float]:
    return itertools.repeat(0.01)


def pipeline(buffer: Buffer, **kw: Any) -> Pipeline:
    shell, submodel = "urn:aas:cnc01", "urn:aas:cnc01/sm/op"
    bindings = [
        make_binding(1, "plc", "cnc01", wire.Element(
            shell=shell, submodel=submodel, path="Spindle.Speed", value_type="xs:double", node="ns=2;s=S",
            semantic_id="urn:concept:speed", unit="rpm",
        )),
        make_binding(2, "plc", "cnc01", wire.Element(
            shell=shell, submodel=submodel, path="Counter", value_type="xs:unsignedByte", node="ns=2;s=C",
        )),
    ]  # fmt: skip
    return Pipeline(bindings, [], [buffer], LiveValues(), delays=quick, **kw)


def drain(buffer: Buffer, lane: str) -> list[dict[str, object]]:
    out = []
    while (batch := buffer.begin(lane, 1000)) is not None:
        out += [orjson.loads(i.body) for i in batch.items]
        buffer.end(batch, [i.seq for i in batch.items])
    return out


def test_samples_become_self_describing_records(tmp_path: Path) -> None:
    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        p = pipeline(buf)
        asyncio.run(
            p.on_samples([Sample(1, math.nan, T0, T0 + timedelta(milliseconds=3), 0), Sample(2, 200, T0, T0, 0)])
        )
        records = drain(buf, "data")
    speed, counter = records
    assert speed == {
        "shell": "urn:aas:cnc01",
        "submodel": "urn:aas:cnc01/sm/op",
        "path": "Spindle.Speed",
        "semanticId": "urn:concept:speed",
        "valueType": "xs:double",
        "unit": "rpm",
        "node": "ns=2;s=S",
        "value": "NaN",
        "sourceTime": "2026-11-26T09:00:00Z",
        "serverTime": "2026-11-26T09:00:00.003000Z",
        "status": 0,
    }
    assert counter["value"] == 200 and counter["valueType"] == "xs:unsignedByte"


def test_a_repeat_of_the_same_source_time_is_not_stored_twice_even_after_a_restart(tmp_path: Path) -> None:
    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        asyncio.run(pipeline(buf).on_samples([Sample(1, 1.0, T0, T0, 0)]))
        assert len(drain(buf, "data")) == 1
    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        p = pipeline(buf)
        p.restore_marks()
        asyncio.run(p.on_samples([Sample(1, 1.0, T0, T0, 0), Sample(1, 2.0, T0 + timedelta(seconds=1), T0, 0)]))
        values = [r["value"] for r in drain(buf, "data")]
    assert values == [2.0]
    assert p.repeats == 1


def test_a_new_value_with_the_same_source_time_is_stored_before_and_after_a_restart(tmp_path: Path) -> None:
    """A device with 1 s timestamps sends 41 then 42 within one second: both are values, not repeats."""
    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        p = pipeline(buf)
        asyncio.run(p.on_samples([Sample(2, 41, T0, T0, 0)]))
        asyncio.run(p.on_samples([Sample(2, 42, T0, T0, 0), Sample(2, 42, T0, T0, 0)]))
        assert [r["value"] for r in drain(buf, "data")] == [41, 42]
        asyncio.run(p.on_samples([Sample(2, 41, T0, T0, 0)]))  # different from the last stored (42)
    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        p = pipeline(buf)
        p.restore_marks()  # the last stored value is known by its digest only
        asyncio.run(p.on_samples([Sample(2, 41, T0, T0, 0)]))
        asyncio.run(p.on_samples([Sample(2, 43, T0, T0, 0)]))
        assert [r["value"] for r in drain(buf, "data")] == [41, 43]
    assert p.repeats == 1


@pytest.mark.parametrize(
    ("value_type", "value"),
    [
        ("xs:double", float("nan")),
        ("xs:double", -0.0),
        ("xs:long", -(2**63)),
        ("xs:string", ""),
        ("xs:string", "긴 문자열 " * 40),  # its mark keeps a digest, not the value
        ("langString", {"language": "ko", "text": "정상"}),
        ("xs:double", None),
    ],
)
def test_a_repeat_after_a_restart_is_known_for_every_kind_of_value(tmp_path: Path, value_type: str, value: Any) -> None:
    """The mark each element's last stored value leaves in the buffer is enough to tell, after a restart,
    that the server re-reported it (same source time, status and value) and a changed value is not."""
    element = wire.Element(shell="urn:aas:m", submodel="urn:aas:m/sm/op", path="E", value_type=value_type, node="n")
    status = 0x80000000 if value is None else 0

    def fresh(buf: Buffer) -> Pipeline:
        return Pipeline([make_binding(1, "plc", "m", element)], [], [buf], LiveValues(), delays=quick)

    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        asyncio.run(fresh(buf).on_samples([Sample(1, value, T0, T0, status)]))
        assert len(drain(buf, "data")) == 1
    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        p = fresh(buf)
        p.restore_marks()
        asyncio.run(p.on_samples([Sample(1, value, T0, T0 + timedelta(seconds=5), status)]))
        assert p.repeats == 1 and not drain(buf, "data")
        other = (
            "x"
            if value_type in ("xs:string",)
            else ({"language": "ko", "text": "경보"} if value_type == "langString" else 7)
        )
        asyncio.run(p.on_samples([Sample(1, other, T0, T0, 0)]))  # same source time, another value: stored
        assert len(drain(buf, "data")) == 1


def test_a_mark_left_by_an_earlier_version_still_tells_a_repeat(tmp_path: Path) -> None:
    """Earlier versions wrote `time|status|clock|crc32 of the value's JSON`."""
    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        digest = zlib.crc32(orjson.dumps(1.5))
        buf.add([], [("last:cnc01/Spindle.Speed", f"{T0.timestamp()!r}|0|source|{digest}")])
        p = pipeline(buf)
        p.restore_marks()
        asyncio.run(p.on_samples([Sample(1, 1.5, T0, T0, 0), Sample(1, 1.6, T0, T0, 0)]))
        assert [r["value"] for r in drain(buf, "data")] == [1.6] and p.repeats == 1


def test_a_bad_sample_travels_with_its_status_and_a_null_value(tmp_path: Path) -> None:
    bad_sensor = 0x808B0000  # BadSensorFailure, no value
    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        p = pipeline(buf)
        asyncio.run(
            p.on_samples([Sample(1, None, T0, T0, bad_sensor), Sample(1, 3.0, T0 + timedelta(seconds=1), T0, 0)])
        )
        data = drain(buf, "data")
        status = drain(buf, "status")
    assert [(r["value"], r["status"]) for r in data] == [(None, bad_sensor), (3.0, 0)]
    assert status == [] and p.bad_values == 0
    message = orjson.loads(
        wire.payload(
            {"origin": "0123456789ab", "site": "s", "lane": "data"}, ["0123456789ab-1"], [orjson.dumps(data[0])]
        )
    )
    jsonschema.Draft202012Validator(wire.schema()).validate(message)


def test_values_of_the_wrong_type_are_reported_once_then_counted(tmp_path: Path) -> None:
    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        p = pipeline(buf)
        for n in range(50):
            asyncio.run(p.on_samples([Sample(2, 300 + n, T0 + timedelta(seconds=n), T0, 0), Sample(1, 5.0, T0, T0, 0)]))
        first = drain(buf, "status")
        asyncio.run(p.flush(everything=True))
        summary = drain(buf, "status")
        data = drain(buf, "data")
    assert [r["path"] for r in data] == ["Spindle.Speed"]
    assert len(first) == 1 and first[0]["kind"] == "bad-value" and "300" in str(first[0]["message"])
    assert "xs:unsignedByte" in str(first[0]["message"]) and first[0]["path"] == "Counter"
    assert len(summary) == 1 and summary[0]["count"] == 49 and "349" in str(summary[0]["message"])
    assert p.bad_values == 50


def gap_of(buf: Buffer) -> dict[str, object]:
    gaps = drain(buf, "gap")
    assert len(gaps) == 1, gaps
    return gaps[0]


def test_an_interruption_is_a_gap_per_element_in_each_elements_own_clock(tmp_path: Path) -> None:
    """The device clock runs 3 s behind the agent's: each element's gap is in the device's clock,
    from its last stored value to its first value after, so no value falls outside it."""
    device = T0 - timedelta(seconds=3)
    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        p = pipeline(buf)

        async def scenario() -> None:
            await p.on_samples([Sample(1, 1.0, device, T0, 0), Sample(2, 7, None, T0, 0)])
            await p.on_interruption(Interruption("plc", (1, 2), T0 + timedelta(seconds=1), None, "connection lost"))
            await p.on_interruption(Interruption("plc", (1, 2), T0, T0 + timedelta(seconds=9), "connected"))
            assert drain(buf, "gap") == [], "written once the first values arrived"
            await p.on_samples([Sample(1, 2.0, device + timedelta(seconds=8), T0 + timedelta(seconds=9), 0)])
            await p.on_samples([Sample(2, 8, None, T0 + timedelta(seconds=10), 0)])

        asyncio.run(scenario())
        gap = gap_of(buf)
    assert gap["reason"] == "connection lost"
    assert gap["start"] == "2026-11-26T09:00:01Z" and gap["end"] == "2026-11-26T09:00:09Z"
    assert gap["elements"] == [
        {"path": "Spindle.Speed", "start": "2026-11-26T08:59:57Z", "end": "2026-11-26T09:00:05Z", "clock": "source"},
        {"path": "Counter", "start": "2026-11-26T09:00:00Z", "end": "2026-11-26T09:00:10Z", "clock": "server"},
    ]


def test_an_element_with_no_value_after_the_interruption_ends_open_after_the_wait(tmp_path: Path) -> None:
    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        p = pipeline(buf, gap_wait_s=0)

        async def scenario() -> None:
            await p.on_samples([Sample(1, 1.0, T0, T0, 0)])
            await p.on_interruption(Interruption("plc", (1, 2), T0, None, "connection lost"))
            await p.on_interruption(Interruption("plc", (1, 2), T0, T0 + timedelta(seconds=5), "connected"))

        asyncio.run(scenario())
        gap = gap_of(buf)
    counter = next(e for e in gap["elements"] if e["path"] == "Counter")  # type: ignore[attr-defined, index]
    speed = next(e for e in gap["elements"] if e["path"] == "Spindle.Speed")  # type: ignore[attr-defined, index]
    assert speed == {"path": "Spindle.Speed", "start": "2026-11-26T09:00:00Z", "end": None, "clock": "source"}
    assert counter["clock"] == "agent" and counter["end"] is None, "never had a value: from when it began"


def test_where_a_gap_starts_survives_a_crash_and_a_restart_killed_before_it_reconnects(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with Buffer(path, quota_bytes=10 * 2**20) as buf:
        p = pipeline(buf)
        asyncio.run(p.on_samples([Sample(1, 1.0, T0, T0, 0)]))
        asyncio.run(p.on_interruption(Interruption("plc", (1, 2), T0 + timedelta(seconds=1), None, "connection lost")))
    for restart in range(2):  # two restarts killed (closed) before they reconnected
        with Buffer(path, quota_bytes=10 * 2**20) as buf:
            p = pipeline(buf)
            p.restore_marks()
            later = T0 + timedelta(minutes=restart + 1)
            asyncio.run(p.on_interruption(Interruption("plc", (1, 2), later, None, "agent stopped unexpectedly")))
    with Buffer(path, quota_bytes=10 * 2**20) as buf:
        p = pipeline(buf)
        p.restore_marks()

        async def reconnects() -> None:
            await p.on_interruption(Interruption("plc", (1, 2), T0, T0 + timedelta(minutes=5), "connected"))
            await p.on_samples([Sample(1, 9.0, T0 + timedelta(minutes=5), T0, 0), Sample(2, 1, T0, T0, 0)])
            await p.flush()

        asyncio.run(reconnects())
        gap = gap_of(buf)
        assert buf.marks().keys() == {"last:cnc01/Spindle.Speed", "last:cnc01/Counter"}, "open marks cleared"
    assert gap["reason"] == "connection lost" and gap["start"] == "2026-11-26T09:00:01Z"
    speed = next(e for e in gap["elements"] if e["path"] == "Spindle.Speed")  # type: ignore[attr-defined, index]
    assert speed["start"] == "2026-11-26T09:00:00Z" and speed["end"] == "2026-11-26T09:05:00Z"


def test_the_servers_queue_overflow_becomes_one_growing_gap_per_machine(tmp_path: Path) -> None:
    overflow = 0x480
    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        p = pipeline(buf)

        async def scenario() -> None:
            await p.on_samples([Sample(1, 0.0, T0, T0, 0)])
            for n in range(1, 20):
                await p.on_samples([Sample(1, float(n), T0 + timedelta(seconds=n), T0, overflow)])
            await p.flush(everything=True)

        asyncio.run(scenario())
        gap = gap_of(buf)
        assert len(drain(buf, "data")) == 20, "the values themselves travel, with their status"
    assert "overflowed" in str(gap["reason"])
    assert gap["elements"] == [
        {"path": "Spindle.Speed", "start": "2026-11-26T09:00:00Z", "end": "2026-11-26T09:00:19Z", "clock": "source"}
    ]


def test_interruptions_and_problems_become_gap_and_status_records(tmp_path: Path) -> None:
    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        p = pipeline(buf, gap_wait_s=0)
        asyncio.run(p.on_interruption(Interruption("plc", (1, 2), T0, None, "server restart")))
        asyncio.run(p.on_interruption(Interruption("plc", (1, 2), T0, T0 + timedelta(seconds=5), "connected")))
        asyncio.run(p.on_problem(NodeProblem("plc", 2, "ns=2;s=C", "unknown on the server (BadNodeIdUnknown)")))
        gap = gap_of(buf)
        status = drain(buf, "status")
    assert gap["start"] == "2026-11-26T09:00:00Z" and gap["end"] == "2026-11-26T09:00:05Z"
    assert gap["reason"] == "server restart" and {e["path"] for e in gap["elements"]} == {"Counter", "Spindle.Speed"}  # type: ignore[attr-defined]
    assert status[0]["kind"] == "node-problem" and status[0]["path"] == "Counter"


def test_quota_drops_are_reported_as_few_growing_gaps_with_their_count(tmp_path: Path) -> None:
    with Buffer(tmp_path / "b.db", quota_bytes=256 * 1024) as buf:
        p = pipeline(buf)

        async def flood() -> None:
            for n in range(40):
                t = T0 + timedelta(seconds=n)
                await p.on_samples([Sample(1, float(i), t + timedelta(microseconds=i), t, 0) for i in range(200)])
            await p.on_samples([])  # an add that drops nothing ends the episode

        asyncio.run(flood())
        gaps = drain(buf, "gap")
        data = drain(buf, "data")
        stats = buf.stats()
        assert buf.drops() == {}
    assert gaps, "the quota dropped records without a gap record"
    assert len(gaps) <= 3, f"one growing record per episode, not one per add: {len(gaps)}"
    dropped = sum(int(str(g["lost"])) for g in gaps)
    assert dropped == stats.dropped["data"] > 0
    assert dropped + len(data) == 40 * 200
    assert all("disk quota" in str(g["reason"]) for g in gaps)
    first_kept = min(datetime.fromisoformat(str(r["sourceTime"]).replace("Z", "+00:00")) for r in data)
    assert max(datetime.fromisoformat(str(g["end"]).replace("Z", "+00:00")) for g in gaps) < first_kept


def test_what_the_disk_refuses_becomes_a_gap_once_it_takes_records_again(tmp_path: Path) -> None:
    """SQLite's page limit makes a real SQLITE_FULL: the values are lost, and said so, with their count."""
    with Buffer(tmp_path / "b.db", quota_bytes=1 << 30) as buf:
        p = pipeline(buf, store_timeout=0.05)

        async def scenario() -> None:
            await p.on_samples([Sample(1, 0.0, T0, T0, 0)])
            pages = buf._store.conn.execute("PRAGMA page_count").fetchone()[0]
            buf._store.conn.execute(f"PRAGMA max_page_count = {pages}")
            big = "x" * 3000
            # More than the free room of the last pages: a data record keeps ~70 bytes there, its head once.
            await p.on_samples([Sample(1, float(n), T0 + timedelta(seconds=n), T0, 0) for n in range(1, 300)])
            await p.status("note", big)  # held in memory while the disk refuses
            buf._store.conn.execute("PRAGMA max_page_count = 1073741823")
            await p.on_samples([Sample(1, 99.0, T0 + timedelta(seconds=99), T0, 0)])
            await p.flush(everything=True)

        asyncio.run(scenario())
        gap = gap_of(buf)
        status = drain(buf, "status")
        data = drain(buf, "data")
    assert [r["value"] for r in data] == [0.0, 99.0]
    assert gap["lost"] == 299 and "could not be stored" in str(gap["reason"])
    assert gap["elements"] == [
        {"path": "Spindle.Speed", "start": "2026-11-26T09:00:00Z", "end": "2026-11-26T09:04:59Z", "clock": "source"}
    ]
    assert [r["kind"] for r in status] == ["note"], "the held status record arrives after all"


def ticks(at: datetime) -> int:
    """OPC UA ticks (100 ns since 1601) of `at`, as fastdecode gives them with raw times (adapters/sample.py)."""
    return (at - datetime(1601, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 10


def _without_time(body: bytes) -> bytes:
    doc = orjson.loads(body)
    doc.pop("time", None)
    return orjson.dumps(doc)


def test_raw_ticks_and_datetimes_make_the_same_records_marks_repeats_gaps_and_reports(tmp_path: Path) -> None:
    """The agent's OPC UA collector hands the pipeline timestamps as ticks; everything it stores, remembers and
    reports is what the same samples with datetimes give: records byte for byte, marks (a repeat after a
    restart is still known across the two forms), bad-value reports, and a batch the disk refuses."""
    times = [T0 + timedelta(microseconds=n * 123_457) for n in range(40)]
    as_datetimes = [
        [Sample(1, n * 1.5, t, t + timedelta(milliseconds=1), 0), Sample(2, 300 + n if n % 7 == 0 else n, t, None, 0)]
        for n, t in enumerate(times)
    ]
    as_ticks = [
        [Sample(s.handle, s.value, ticks(s.source_time), None if s.server_time is None else ticks(s.server_time), 0)
         for s in batch]  # type: ignore[arg-type]
        for batch in as_datetimes
    ]  # fmt: skip
    as_ticks.append([Sample(2, 9, None, ticks(T0 + timedelta(hours=1)), 0)])  # a server time only
    as_datetimes.append([Sample(2, 9, None, T0 + timedelta(hours=1), 0)])
    stored: dict[str, tuple[list[bytes], dict[str, str], int, int]] = {}
    for name, batches in (("datetimes", as_datetimes), ("ticks", as_ticks)):
        with Buffer(tmp_path / f"{name}.db", quota_bytes=10 * 2**20) as buf:
            p = pipeline(buf)
            for batch in batches:
                asyncio.run(p.on_samples(batch))
            asyncio.run(p.flush(everything=True))
            bodies = []
            for lane in ("data", "status"):
                while (b := buf.begin(lane, 1000)) is not None:
                    # a status record's own time is the agent's clock at the moment: not compared
                    bodies += [i.body if lane == "data" else _without_time(i.body) for i in b.items]
                    buf.end(b, [i.seq for i in b.items])
            stored[name] = (bodies, buf.marks(), p.bad_values, p.repeats)
        with Buffer(tmp_path / f"{name}.db", quota_bytes=10 * 2**20) as buf:  # a restart: the other form repeats
            p = pipeline(buf)
            p.restore_marks()
            last = as_ticks[39][0] if name == "datetimes" else as_datetimes[39][0]  # element 1's last value
            asyncio.run(p.on_samples([last]))
            assert p.repeats == 1, name
    assert stored["ticks"] == stored["datetimes"]
    bodies = stored["ticks"][0]
    assert len(bodies) > 70 and any(b'"sourceTime":null,"serverTime":"2026-11-26T10:00:00Z"' in b for b in bodies)
    assert any(b'"kind":"bad-value"' in b and b'"sourceTime":"2026-11-26T09:00:00Z"' in b for b in bodies)
