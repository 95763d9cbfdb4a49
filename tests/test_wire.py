"""The wire format: values JSON holds exactly stay numbers, the rest travel as xs: lexical strings."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import orjson
import pytest

from adapters.sample import stamp_datetime
from uploader import wire

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("xs", "value", "json_value"),
    [
        ("xs:double", 1.5, 1.5),
        ("xs:double", math.nan, "NaN"),
        ("xs:double", math.inf, "INF"),
        ("xs:float", -math.inf, "-INF"),
        ("xs:unsignedLong", 2**64 - 1, "18446744073709551615"),
        ("xs:long", -(2**63), "-9223372036854775808"),
        ("xs:long", 2**53, 2**53),
        ("xs:unsignedByte", 255, 255),
        ("xs:byte", -128, -128),
        ("xs:string", "", ""),
        ("xs:string", "주축 과부하", "주축 과부하"),
        ("xs:base64Binary", b"\x00\x01\xff", "AAH/"),
        ("xs:boolean", False, False),
        ("langString", {"language": "ko-KR", "text": "경고"}, [{"language": "ko-KR", "text": "경고"}]),
        ("xs:dateTime", datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "2026-01-02T03:04:05.000006Z"),
        ("xs:dateTime", datetime(2026, 1, 2, 12, tzinfo=timezone(timedelta(hours=9))), "2026-01-02T03:00:00.000000Z"),
    ],
)
def test_values_round_trip_exactly(xs: str, value: object, json_value: object) -> None:
    encoded = wire.value_encoder(xs)(value)
    assert encoded == json_value
    back = wire.decode_value(xs, orjson.loads(orjson.dumps(encoded)))
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(back)
    elif isinstance(value, datetime):
        assert back == value
    else:
        assert back == value


@pytest.mark.parametrize(
    ("xs", "value", "message"),
    [
        ("xs:unsignedByte", 256, "outside xs:unsignedByte"),
        ("xs:unsignedInt", -1, "outside"),
        ("xs:int", 1.5, "expected an integer"),
        ("xs:int", True, "expected an integer"),
        ("xs:double", "3.1", "expected a floating-point value"),
        ("xs:string", b"x", "expected a string"),
    ],
)
def test_values_that_do_not_fit_are_refused_with_a_reason(xs: str, value: object, message: str) -> None:
    with pytest.raises(wire.WireValueError, match=message):
        wire.value_encoder(xs)(value)


def test_arrays_encode_each_item() -> None:
    enc = wire.value_encoder("xs:double", is_array=True)
    assert enc([1.0, math.nan, -math.inf]) == [1.0, "NaN", "-INF"]
    assert enc([]) == []


def test_unknown_value_type_lists_the_allowed_ones() -> None:
    with pytest.raises(wire.WireValueError, match="allowed: xs:boolean"):
        wire.value_encoder("xs:decimal")


def test_payload_splices_stable_ids_and_validates_against_the_shipped_schema() -> None:
    prefix = wire.data_prefix(
        wire.Element(shell="urn:s", submodel="urn:s/sm", path="Spindle.Speed", value_type="xs:double", node="ns=2;s=X")
    )
    now = datetime.now(UTC)
    bodies = [wire.data_body(prefix, wire.encode_float(v), now, now, 0) for v in (1.0, math.nan)]
    ids = [wire.record_id("0123456789ab", 7), wire.record_id("0123456789ab", 8)]
    msg = wire.payload({"origin": "0123456789ab", "site": "s1", "asset": "cnc01", "lane": "data"}, ids, bodies)
    doc = orjson.loads(msg)
    jsonschema.Draft202012Validator(wire.schema()).validate(doc)
    assert [r["id"] for r in doc["records"]] == ["0123456789ab-7", "0123456789ab-8"]
    assert doc["records"][1]["value"] == "NaN"
    assert doc["records"][0]["sourceTime"].endswith("Z")
    header = {"origin": "0123456789ab", "site": "s1", "asset": "cnc01", "lane": "data"}
    odd = [*bodies, b'{"message":"\\"%d\\" \xed\x95\x9c %s"}']  # escapes, a % sign, non-ASCII
    seqs = [7, 8, 2**53]
    by_seq = wire.payload_of(header, "0123456789ab", seqs, odd)
    assert by_seq == wire.payload(header, [wire.record_id("0123456789ab", q) for q in seqs], odd)


def test_schema_rejects_a_record_without_its_value_type() -> None:
    doc = {
        "v": 2,
        "origin": "0123456789ab",
        "site": "s",
        "lane": "data",
        "records": [{"id": "0123456789ab-1", "shell": "a", "submodel": "b", "path": "c", "value": 1}],
    }
    with pytest.raises(jsonschema.ValidationError, match="valueType"):
        jsonschema.Draft202012Validator(wire.schema()).validate(doc)


def _validate(lane: str, body: bytes) -> dict[str, object]:
    doc = orjson.loads(wire.payload({"origin": "0123456789ab", "site": "s", "lane": lane}, ["0123456789ab-1"], [body]))
    jsonschema.Draft202012Validator(wire.schema()).validate(doc)
    record: dict[str, object] = doc["records"][0]
    return record


def test_every_record_builder_writes_what_the_schema_describes() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    elements = [
        wire.GapElement("a", now, None, "source"),
        wire.GapElement("b", None, now, "agent", end_clock="server"),
    ]
    gap = _validate(
        "gap",
        wire.gap_body(
            shell="urn:s",
            submodel="urn:s/sm",
            start=now,
            end=now,
            reason="r",
            elements=elements,
            events=["alarms"],
            lost=7,
        ),
    )
    assert gap["lost"] == 7 and gap["events"] == ["alarms"] and gap["start"] == "2026-11-30T12:00:00Z"
    assert gap["elements"] == [
        {"path": "a", "start": "2026-11-30T12:00:00Z", "end": None, "clock": "source"},
        {"path": "b", "start": None, "end": "2026-11-30T12:00:00Z", "clock": "agent", "endClock": "server"},
    ]
    bare = _validate(
        "gap", wire.gap_body(shell="urn:s", submodel="urn:s/sm", start=now, end=now, reason="r", elements=[])
    )
    assert "lost" not in bare and "events" not in bare
    status = _validate("status", wire.status_body(now, "bad-value", "300 does not fit", big=2**64 - 1, f=math.nan))
    assert status["kind"] == "bad-value" and status["big"] == str(2**64 - 1) and status["f"] == "NaN"
    fields = {"Message": {"language": "ko-KR", "text": "주축 과부하"}, "Severity": 700, "EventType": "i=2041"}
    event = _validate(
        "event", wire.event_body(shell="urn:s", source="alarms", node="ns=2;s=M", time=now, fields=fields)
    )
    assert event["message"] == "주축 과부하" and event["severity"] == 700 and event["eventType"] == "i=2041"


# -- version 3: each record head once per message -------------------------------------------------------


def _v3_parts() -> tuple[dict[str, object], list[int], list[bytes], list[bytes], list[bytes]]:
    """A message's header, seqs, whole bodies, and the heads and tails the buffer keeps them as."""
    header: dict[str, object] = {"origin": "0123456789ab", "site": "s1", "asset": "cnc01", "lane": "data"}
    now = datetime(2026, 12, 1, 7, 0, 0, 123456, tzinfo=UTC)
    heads, tails = [], []
    for n, path in enumerate(["Spindle.Speed", "Feed", "Spindle.Speed", "Label", "Spindle.Speed"]):
        xs = "xs:string" if path == "Label" else "xs:double"
        e = wire.Element(shell="urn:s", submodel="urn:s/sm", path=path, value_type=xs, node=f"ns=2;s={path}")
        value = '"%d" 한 %s' if xs == "xs:string" else wire.encode_float([1.0, math.nan, -0.0, math.inf, 2.5][n])
        heads.append(wire.data_prefix(e))
        tails.append(wire.data_tail(value, now, None, 0))
    bodies = [h + t for h, t in zip(heads, tails, strict=True)]
    return header, [7, 8, 9, 2**53, 11], bodies, heads, tails


def test_a_version_3_message_expands_to_exactly_the_version_2_message() -> None:
    header, seqs, bodies, heads, tails = _v3_parts()
    distinct = list(dict.fromkeys(heads))
    objects = [wire.head_object(h) for h in distinct]
    assert all(o is not None for o in objects)
    refs = [distinct.index(h) for h in heads]
    whole = b'{"kind":"note","message":"no head"}'
    v3 = wire.payload_v3(header, "0123456789ab", [o for o in objects if o], [*seqs, 12], [*tails, whole], [*refs, -1])
    v2 = wire.payload_of(header, "0123456789ab", [*seqs, 12], [*bodies, whole])
    doc3 = orjson.loads(v3)
    assert doc3["v"] == 3 and len(doc3["heads"]) == 3 and doc3["records"][2]["h"] == 0
    assert len(v3) < len(v2)
    expanded, problems = wire.expand(doc3)
    assert problems == {}
    assert orjson.dumps(expanded) == orjson.dumps(orjson.loads(v2))  # same fields, same order, same values
    assert wire.expand(orjson.loads(v2)) == (orjson.loads(v2), {})  # version 2 passes as it is


def test_a_version_3_message_that_cannot_be_expanded_says_where_and_why() -> None:
    header, seqs, _, heads, tails = _v3_parts()
    obj = wire.head_object(heads[0])
    assert obj is not None
    doc = orjson.loads(wire.payload_v3(header, "0123456789ab", [obj], seqs[:2], tails[:2], [0, 0]))
    doc["records"][0]["h"] = 1
    doc["records"][1]["path"] = "Other"
    doc["records"].append({"id": "0123456789ab-99", "h": True, "value": 1})
    expanded, problems = wire.expand(doc)
    assert set(problems) == {0, 1, 2}
    assert 'an index into "heads" (0 to 0), got 1' in problems[0] and problems[0].startswith("$.records[0].h")
    assert "path both in the record and in its head 0" in problems[1]
    assert "got True" in problems[2]
    assert expanded["records"][0]["h"] == 1  # left as it came, for the receiver to reject
    heads_values: list[object] = [None, {"0": {}}, [1]]
    for heads_value in heads_values:
        bad = {**doc, "heads": heads_value}
        with pytest.raises(wire.WireFormatError, match=r'\$\.heads: a version-3 message needs "heads"'):
            wire.expand(bad)
    assert wire.head_object(b'"not":"an object",') is None and wire.head_object(b'{"a":1') is None


# -- raw OPC UA times (adapters/sample.py: Stamp) ---------------------------------------------------------


def _ticks(at: datetime) -> int:
    return (at - datetime(1601, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 10


EDGE_TICKS = [
    _ticks(datetime(1602, 1, 1, tzinfo=UTC)),
    116444736000000000 - 10,  # the last µs before 1970
    116444736000000000 - 1,  # below 1 µs: rounded down, as asyncua does
    116444736000000000,
    116444736000000009,
    134000000000000000,  # µs 0: no fraction written
    134000000000000010,
    134000000001234567,
    (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - datetime(1601, 1, 1, tzinfo=UTC))
    // timedelta(microseconds=1)
    * 10
    + 9_999_999,
]


def test_a_tail_with_raw_ticks_is_byte_for_byte_the_tail_with_their_datetimes() -> None:
    rng = random.Random(5)
    ticks = EDGE_TICKS + [rng.randrange(EDGE_TICKS[0], EDGE_TICKS[-1]) for _ in range(3000)]
    ticks += [134000000000000000 + n * 10_000_000 for n in range(5000)]  # more seconds than the cache keeps
    # One time for a run of values (a server stamping a scan at once), then another, then the first again:
    # the tail keeps the last time it wrote, and must notice every change.
    ticks += [EDGE_TICKS[1]] * 3 + [EDGE_TICKS[1] + 1, EDGE_TICKS[1], EDGE_TICKS[2], EDGE_TICKS[2], EDGE_TICKS[1]]
    values = [1.5, "x", None, wire.encode_float(math.nan), 2**60, [1, 2]]
    for n, t in enumerate(ticks):
        value, status = values[n % len(values)], n % 3 * 0x40000000
        other = [None, t, t + 10_000, datetime(2026, 1, 1, tzinfo=UTC)][n % 4]
        want = wire.data_tail(value, stamp_datetime(t), stamp_datetime(other), status)
        assert wire.data_tail(value, t, other, status) == want, t
        assert wire.data_tail(value, other, t, status) == wire.data_tail(
            value, stamp_datetime(other), stamp_datetime(t), status
        )


def test_the_first_tail_a_process_writes_is_whole_whatever_its_times() -> None:
    """The tail keeps the last times it wrote between calls; before the first, no time (None above all) may be
    taken for a kept one. Each case in a fresh interpreter, as the agent's first record after a start."""
    cases = ["(1.5, T, None, 0)", "(1.5, None, T, 0)", "(1.5, None, None, 0)", "(1.5, T, T, 0)", "(1.5, T, T + 10, 0)"]
    for case in cases:
        probe = (
            "import orjson\nfrom uploader import wire\nT = 134000000001234567\n"
            f"print(orjson.loads(b'{{' + wire.data_tail{case}))"
        )
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 0, (case, out.stderr[-500:])
        assert "'status': 0" in out.stdout, (case, out.stdout)
