"""The pipeline's column-wise path for the common batch (`Pipeline._plain`) against its value-by-value loop
(`Pipeline._each`): for any sequence of batches, each with a real SQLite buffer, both leave the same records,
marks, last stamps, live values, recent records and counters. `wire.float_tails` against `wire.data_tail`."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aas_models import spec
from aas_models.build import build_environment
from aas_models.live import LiveValues
from aas_models.timeseries import rings_for
from adapters.sample import TICKS_AT_UNIX_EPOCH, Sample
from agent import pipeline as pipeline_module
from agent.pipeline import OVERFLOW, Binding, Pipeline, make_binding
from uploader import wire
from uploader.buffer import Buffer

SHELL = "urn:test:aas:plain"
T0 = TICKS_AT_UNIX_EPOCH + 17_900_000_000_000_000  # OPC UA ticks in 2026
NOW = datetime(2026, 11, 30, 3, 4, 5, 678901, tzinfo=UTC)
DOUBLES = 6  # handles 1-6: Double elements; 7: Int32, 8: String, 9: Boolean; 10: not configured
KINDS = {7: ("Int32", "xs:int"), 8: ("String", "xs:string"), 9: ("Boolean", "xs:boolean")}


def quick() -> Iterator[float]:
    return itertools.repeat(0.01)


def _shell() -> spec.Shell:
    elements = [spec.Element(f"D{h}", "Double") for h in range(1, DOUBLES + 1)]
    elements += [spec.Element(f"K{h}", kind) for h, (kind, _) in KINDS.items()]
    nameplate = spec.Nameplate("Test Co.", "Plain", "https://example.com/plain", "P-1")
    # The recent records leave out D6: a batch with it goes into the ring value by value, one without at once.
    recorded = tuple(f"D{h}" for h in range(1, DOUBLES)) + tuple(f"K{h}" for h in KINDS)
    ts = spec.TimeSeries(records=50, sampling_interval_s=0.5, variables=recorded)
    return spec.Shell(SHELL, "plain", "urn:test:asset:plain", nameplate, tuple(elements), time_series=ts)


def _bindings() -> list[Binding]:
    def element(path: str, value_type: str) -> wire.Element:
        return wire.Element(shell=SHELL, submodel=f"{SHELL}/sm/op", path=path, value_type=value_type, node=path)

    out = [make_binding(h, "plc", "m1", element(f"D{h}", "xs:double")) for h in range(1, DOUBLES + 1)]
    return out + [make_binding(h, "plc", "m1", element(f"K{h}", vt)) for h, (_, vt) in KINDS.items()]


def _pipeline(buf: Buffer, *, plain: bool) -> Pipeline:
    env = build_environment([_shell()], language="en")
    p = Pipeline(_bindings(), [], [buf], LiveValues(series=rings_for(env.shells)), delays=quick)
    if not plain:
        p._plain = lambda samples: None  # type: ignore[method-assign]
    return p


def _read(buf: Buffer) -> dict[str, Any]:
    """Everything in the buffer: each lane's records (bodies whole) and the marks."""
    lanes = {}
    for lane in Buffer.LANES:
        got = []
        while (batch := buf.begin(lane, 10_000)) is not None:
            got += [(i.key, i.ts, buf.whole([i.body])[0]) for i in batch.items]
            buf.end(batch, [i.seq for i in batch.items])
        lanes[lane] = got
    return {"lanes": lanes, "marks": buf.marks()}


def _state(p: Pipeline) -> dict[str, Any]:
    rings = {k: list(r.values) for k, r in p.live.series.items()}
    return {
        "last": _comparable(p.last),
        "live": _comparable(p.live._pending),
        "rings": _comparable(rings),
        "counters": (p.values_in, p.repeats, p.bad_values, p.null_values, p.not_stored),
    }


def _comparable(x: Any) -> Any:
    """NaN equals NaN here (a value that is NaN in one is NaN in the other), and -0.0 is not 0.0."""
    if isinstance(x, float):
        return ("nan",) if math.isnan(x) else (repr(x),)
    if isinstance(x, dict):
        return {k: _comparable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_comparable(v) for v in x]
    return x


TICKS = st.sampled_from([T0 + n * 10 for n in (0, 1, 7, 10_000, 10_001, 30_000_000)]) | st.integers(
    TICKS_AT_UNIX_EPOCH, 2_650_000_000_000_000_000
)
FINITE = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 1.5, 5e-324, 1.7976931348623157e308]
)
ANY_VALUE = (
    FINITE
    | st.sampled_from([math.nan, math.inf, -math.inf, None, 7, True, "", "text", "한글"])
    | st.integers(-(2**63), 2**63 - 1)
)
STATUS = st.sampled_from([0, 0, 0, 0x80000000, 0x40000000, OVERFLOW, 0x80340000])


@st.composite
def plain_batch(draw: st.DrawFn) -> list[Sample]:
    """A batch `_plain` may take: Double handles once each, finite floats, Good, source ticks."""
    handles = draw(st.lists(st.integers(1, DOUBLES), min_size=1, max_size=DOUBLES, unique=True))
    server = draw(st.none() | TICKS)
    out = []
    for h in handles:
        source = draw(TICKS)
        out.append(Sample(h, draw(FINITE), source, draw(st.sampled_from([server, source, None])), 0))
    return out


@st.composite
def any_batch(draw: st.DrawFn) -> list[Sample]:
    """Anything: other types, unknown handles, repeats within the batch, statuses, missing or datetime times."""
    size = draw(st.integers(0, 12))
    times = TICKS | st.none() | st.just(datetime(2026, 11, 30, 1, 2, 3, 456789, tzinfo=UTC))
    return [
        Sample(draw(st.integers(1, 10)), draw(ANY_VALUE), draw(times), draw(times), draw(STATUS)) for _ in range(size)
    ]


def _repeat(batch: list[Sample]) -> list[Sample]:
    return list(batch)  # the same values and times again: repeats, as a resubscription sends them


@st.composite
def batches(draw: st.DrawFn) -> list[list[Sample]]:
    out: list[list[Sample]] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["plain", "plain", "any", "again"]))
        if kind == "again" and out:
            out.append(_repeat(out[-1]))
        else:
            out.append(draw(plain_batch() if kind != "any" else any_batch()))
    return out


def _run(tmp: Path, runs: Sequence[list[Sample]], *, plain: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    # The agent's clock (a value with no time of its own, a status record) reads the same in both runs.
    clock, pipeline_module._utcnow = pipeline_module._utcnow, lambda: NOW
    try:
        return _run_with(tmp, runs, plain=plain)
    finally:
        pipeline_module._utcnow = clock


def _run_with(tmp: Path, runs: Sequence[list[Sample]], *, plain: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    with Buffer(tmp / f"{'plain' if plain else 'each'}.db", quota_bytes=1 << 30) as buf:
        p = _pipeline(buf, plain=plain)

        async def go() -> None:
            for samples in runs:
                await p.on_samples(samples)

        asyncio.run(go())
        state = _state(p)
        return state, _read(buf)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=batches())
def test_the_column_wise_path_leaves_what_the_value_by_value_loop_leaves(
    tmp_path: Path, runs: list[list[Sample]]
) -> None:
    for f in tmp_path.glob("*.db*"):
        f.unlink()
    assert _run(tmp_path, runs, plain=True) == _run(tmp_path, runs, plain=False)


def test_the_common_batch_takes_the_column_wise_path_and_the_rest_the_loop(tmp_path: Path) -> None:
    """Held to where each batch goes: the loop is made to fail, so a batch that reached it raises."""
    with Buffer(tmp_path / "b.db", quota_bytes=1 << 30) as buf:
        p = _pipeline(buf, plain=True)

        def refuse(samples: Sequence[Sample], now: float) -> Any:
            raise AssertionError("the loop")

        loop = p._each
        p._each = refuse  # type: ignore[method-assign]
        common = [Sample(h, h / 3, T0 + h, T0 + 100, 0) for h in range(1, DOUBLES + 1)]
        asyncio.run(p.on_samples(common))
        assert p.values_in == DOUBLES and len(p.last) == DOUBLES
        # Each of these is not for the column-wise path: the same batch again (repeats), one value Bad,
        # a NaN, an Int32 element, an element twice, a value without a source time.
        later = [s._replace(source_time=s.source_time + 10_000) for s in common]
        odd = [
            common,
            [later[0]._replace(status=0x80000000), *later[1:]],
            [later[0]._replace(value=math.nan), *later[1:]],
            [*later, Sample(7, 5, T0, T0, 0)],
            [*later, later[0]._replace(source_time=T0 + 20_000)],
            [later[0]._replace(source_time=None), *later[1:]],
        ]
        for batch in odd:
            try:
                asyncio.run(p.on_samples(batch))
                raise AssertionError(f"the column-wise path took {batch}")
            except AssertionError as e:
                assert str(e) == "the loop", e
        p._each = loop  # type: ignore[method-assign]
        asyncio.run(p.on_samples(odd[-1]))
        assert p.values_in == 2 * DOUBLES


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(FINITE, max_size=20),
    data=st.data(),
)
def test_float_tails_are_data_tail_byte_for_byte(values: list[float], data: st.DataObject) -> None:
    sources = [data.draw(TICKS) for _ in values]
    servers = [data.draw(st.none() | TICKS | st.sampled_from(sources or [None])) for _ in values]
    expected = [wire.data_tail(v, s, t, 0) for v, s, t in zip(values, sources, servers, strict=True)]
    assert wire.float_tails(values, sources, servers) == expected


def _refused(tmp: Path, *, plain: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """A first batch is stored, the disk refuses the second (a read-only buffer: SQLite refuses every write),
    then takes a third: the second's values are lost and reported as a gap, from each element's stamp before."""
    clock, pipeline_module._utcnow = pipeline_module._utcnow, lambda: NOW
    try:
        with Buffer(tmp / f"refused-{plain}.db", quota_bytes=1 << 30) as buf:
            p = Pipeline(_bindings(), [], [buf], LiveValues(), delays=quick, store_timeout=0.05)
            if not plain:
                p._plain = lambda samples: None  # type: ignore[method-assign]

            def batch(n: int, handles: Sequence[int]) -> list[Sample]:
                return [Sample(h, n + h / 10, T0 + n * 10_000_000 + h, T0 + n * 10_000_000, 0) for h in handles]

            async def scenario() -> None:
                await p.on_samples(batch(0, [1, 2, 3]))
                buf._store.conn.execute("PRAGMA query_only = ON")
                await p.on_samples(batch(1, range(1, DOUBLES + 1)))  # 4-6 have no value before
                buf._store.conn.execute("PRAGMA query_only = OFF")
                await p.on_samples(batch(2, [1, 4]))
                await p.flush(everything=True)

            asyncio.run(scenario())
            return _state(p), _read(buf)
    finally:
        pipeline_module._utcnow = clock


def test_a_column_wise_batch_the_disk_refuses_is_the_same_gap_as_the_loops(tmp_path: Path) -> None:
    plain, each = _refused(tmp_path, plain=True), _refused(tmp_path, plain=False)
    assert plain == each
    state, stored = plain
    assert state["counters"][4] == DOUBLES, "the refused batch's values are counted as not stored"
    [(_, _, body)] = stored["lanes"]["gap"]
    assert len(orjson.loads(body)["elements"]) == DOUBLES
    assert len(stored["lanes"]["data"]) == 5


def test_many_times_are_written_as_each_alone_across_seconds_and_more_milliseconds_than_are_kept() -> None:
    """`wire._times_json` against `_ticks_json` one by one: whole seconds (no fraction), tenths of a
    microsecond (cut), times 1 ms apart over 10 s (more milliseconds than the cache keeps), few distinct."""
    second = 10_000_000
    cases = [
        [T0 + n * second for n in range(10)],
        [T0 + n * second + d for n in range(3) for d in (0, 1, 9, 10, 10_000, 9_999_999)],
        [T0 + n * 10_000 + 7 for n in range(10_000)],
        [T0 + 5] * 40 + [T0 + second],
    ]
    for ticks in cases:
        wire._MILLIS.clear()
        wire._ticks_json(T0)  # one millisecond known before
        got = wire._times_json(ticks)
        wire._MILLIS.clear()
        assert got == [wire._ticks_json(t) for t in ticks]
