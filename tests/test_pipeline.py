"""The pipeline with a real SQLite buffer: records, repeats, wrong types, quota drops as gap records."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from aas_models.live import LiveValues
from adapters.sample import Interruption, NodeProblem, Sample
from agent.pipeline import Pipeline, make_binding
from uploader import wire
from uploader.buffer import Buffer

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def quick() -> Iterator[float]:
    return itertools.repeat(0.01)


def pipeline(buffer: Buffer) -> Pipeline:
    shell, submodel = "urn:aas:cnc01", "urn:aas:cnc01/sm/op"
    bindings = [
        make_binding(1, "cnc01", wire.Element(
            shell=shell, submodel=submodel, path="Spindle.Speed", value_type="xs:double", node="ns=2;s=S",
            semantic_id="urn:concept:speed", unit="rpm",
        )),
        make_binding(2, "cnc01", wire.Element(
            shell=shell, submodel=submodel, path="Counter", value_type="xs:unsignedByte", node="ns=2;s=C",
        )),
    ]  # fmt: skip
    return Pipeline(bindings, [], [buffer], LiveValues(), delays=quick)


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


def test_a_value_of_the_wrong_type_is_kept_on_the_status_lane(tmp_path: Path) -> None:
    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        p = pipeline(buf)
        asyncio.run(p.on_samples([Sample(2, 300, T0, T0, 0), Sample(1, 5.0, T0, T0, 0)]))
        status = drain(buf, "status")
        data = drain(buf, "data")
    assert [r["path"] for r in data] == ["Spindle.Speed"]
    assert status[0]["kind"] == "bad-value" and "300" in str(status[0]["message"])
    assert "xs:unsignedByte" in str(status[0]["message"]) and status[0]["path"] == "Counter"


def test_interruptions_and_problems_become_gap_and_status_records(tmp_path: Path) -> None:
    with Buffer(tmp_path / "b.db", quota_bytes=10 * 2**20) as buf:
        p = pipeline(buf)
        asyncio.run(p.on_interruption(Interruption("plc", (1, 2), T0, T0 + timedelta(seconds=5), "server restart")))
        asyncio.run(p.on_problem(NodeProblem("plc", 2, "ns=2;s=C", "unknown on the server (BadNodeIdUnknown)")))
        gaps = drain(buf, "gap")
        status = drain(buf, "status")
    assert gaps == [
        {
            "shell": "urn:aas:cnc01",
            "submodel": "urn:aas:cnc01/sm/op",
            "paths": ["Counter", "Spindle.Speed"],
            "start": "2026-11-26T09:00:00Z",
            "end": "2026-11-26T09:00:05Z",
            "reason": "server restart",
        }
    ]
    assert status[0]["kind"] == "node-problem" and status[0]["path"] == "Counter"


def test_quota_drops_oldest_data_and_reports_it_as_a_gap(tmp_path: Path) -> None:
    with Buffer(tmp_path / "b.db", quota_bytes=256 * 1024) as buf:
        p = pipeline(buf)

        async def flood() -> None:
            for n in range(40):
                t = T0 + timedelta(seconds=n)
                await p.on_samples([Sample(1, float(i), t + timedelta(microseconds=i), t, 0) for i in range(200)])

        asyncio.run(flood())
        gaps = drain(buf, "gap")
        data = drain(buf, "data")
        stats = buf.stats()
    assert gaps, "the quota dropped records without a gap record"
    dropped = sum(int(str(g["dropped"])) for g in gaps)
    assert dropped == stats.dropped["data"] > 0
    assert dropped + len(data) == 40 * 200
    assert all("disk quota" in str(g["reason"]) for g in gaps)
    first_kept = min(datetime.fromisoformat(str(r["sourceTime"]).replace("Z", "+00:00")) for r in data)
    assert max(datetime.fromisoformat(str(g["end"]).replace("Z", "+00:00")) for g in gaps) < first_kept
