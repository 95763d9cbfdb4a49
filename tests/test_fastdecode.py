"""fastdecode against asyncua: the same bodies decoded both ways give the same samples, field by field.

The oracle is asyncua 2.1's own decoder (`struct_from_binary` of a PublishResponse) with the conversion the
source always made (values.plain, values.no_time, status 0 when absent), written out here again. Bodies
come from asyncua's own encoder wherever it can make them, and from a small encoder of the wire format
below where a test needs what asyncua's encoder never writes (DataValues without a value, raw DateTime
ticks, reserved mask bits). That encoder writes a DataValue's optional fields in the order asyncua
uses or in the order OPC UA Part 6 §5.2.2.17 gives; the two differ only when both the source picoseconds
and the server timestamp are present, where asyncua reads the server timestamp from the wrong bytes and
fastdecode follows the spec (see its docstring): there the oracle is asyncua reading its own order.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua import ua_binary
from asyncua.ua.uatypes import MAX_OPC_FILETIME
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.opcua import fastdecode
from adapters.opcua.fastdecode import DataChange, Publish
from adapters.opcua.values import no_time, plain
from adapters.sample import stamp_datetime, stamp_seconds

NOW = datetime(2026, 11, 30, 12, 34, 56, 789012, tzinfo=UTC)
VT = ua.VariantType

# -- the oracle --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Want:
    """What asyncua made of a body: the Publish fields and, per notification, samples or asyncua's object."""

    subscription_id: int
    sequence_number: int
    available: tuple[int, ...]
    more: bool
    data: list[Any]
    garbled: list[set[int]]  # per notification: indices of samples whose server time asyncua misreads


def asyncua_reads(body: bytes) -> Want:
    result = ua_binary.struct_from_binary(ua.PublishResponse, Buffer(body)).Parameters
    data: list[Any] = []
    garbled: list[set[int]] = []
    for n in result.NotificationMessage.NotificationData or []:
        if type(n) is ua.DataChangeNotification:
            rows = []
            for m in n.MonitoredItems:
                dv = m.Value
                value = plain(dv.Value.Value) if dv.Value is not None else None
                status = dv.StatusCode.value if dv.StatusCode is not None else 0
                rows.append((m.ClientHandle, value, no_time(dv.SourceTimestamp), no_time(dv.ServerTimestamp), status))
            data.append(rows)
            garbled.append(
                {
                    i
                    for i, m in enumerate(n.MonitoredItems)
                    if m.Value.SourcePicoseconds is not None and m.Value.ServerTimestamp is not None
                }
            )
        else:
            data.append(n)
            garbled.append(set())
    return Want(
        result.SubscriptionId,
        result.NotificationMessage.SequenceNumber,
        tuple(result.AvailableSequenceNumbers or ()),
        bool(result.MoreNotifications),
        data,
        garbled,
    )


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same type all the way down: NaN is NaN, -0.0 keeps its sign, True is not 1."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if type(a) is datetime:
        return bool(a == b and a.tzinfo == b.tzinfo and a.utcoffset() == b.utcoffset())
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def assert_same(got: Publish, want: Want, *, spec_times: bool = False) -> None:
    """`spec_times`: the body is in the spec's order where asyncua's differs, so skip the server times asyncua
    misreads (the caller checks them another way)."""
    assert (got.subscription_id, got.sequence_number, got.available, got.more) == (
        want.subscription_id,
        want.sequence_number,
        want.available,
        want.more,
    )
    assert len(got.data) == len(want.data)
    for g, w, garbled in zip(got.data, want.data, want.garbled, strict=True):
        if isinstance(w, list):
            assert type(g) is DataChange
            assert len(g.samples) == len(w)
            for i, (sample, row) in enumerate(zip(g.samples, w, strict=True)):
                fields = tuple(sample)
                if spec_times and i in garbled:
                    fields, row = fields[:3] + fields[4:], row[:3] + row[4:]
                assert same(fields, row), (i, sample, row)
        else:
            assert g == w


def check(body: bytes) -> Publish:
    """fastdecode reads `body` as asyncua does, and with raw times gives the ticks of the same times;
    returns what it read."""
    got = fastdecode.decode(body)
    assert_same(got, asyncua_reads(body))
    assert_raw_times_are_the_same(body, got)
    return got


def assert_raw_times_are_the_same(body: bytes, got: Publish) -> None:
    """`decode(body, raw_times=True)` gives ints only for times in 1602-9999, and each stands for exactly the
    datetime `decode(body)` gives (`stamp_datetime`), and for the same POSIX seconds (`stamp_seconds`)."""
    raw = fastdecode.decode(body, raw_times=True)
    assert len(raw.data) == len(got.data)
    for r, g in zip(raw.data, got.data, strict=True):
        if type(g) is not DataChange:
            assert r == g
            continue
        assert type(r) is DataChange and len(r.samples) == len(g.samples)
        for rs, gs in zip(r.samples, g.samples, strict=True):
            for rt, gt in ((rs.source_time, gs.source_time), (rs.server_time, gs.server_time)):
                if isinstance(rt, int):
                    assert (gt is not None and gt.year not in (1601, 9999)) or gt == stamp_datetime(rt)
                assert stamp_datetime(rt) == gt
                assert stamp_seconds(rt) == (gt.timestamp() if gt is not None else None)
            assert same(tuple(rs)[:2] + tuple(rs)[4:], tuple(gs)[:2] + tuple(gs)[4:])


# -- bodies ------------------------------------------------------------------------------------------


def response(*notifications: Any, seq: int = 42, available: Sequence[int] = (41, 42), more: bool = False) -> bytes:
    r = ua.PublishResponse()
    r.ResponseHeader.Timestamp = NOW
    r.Parameters.SubscriptionId = 7
    r.Parameters.AvailableSequenceNumbers = list(available)
    r.Parameters.MoreNotifications = more
    r.Parameters.NotificationMessage.SequenceNumber = seq
    r.Parameters.NotificationMessage.PublishTime = NOW
    r.Parameters.NotificationMessage.NotificationData = list(notifications)
    return ua_binary.struct_to_binary(r)


def items(*values: ua.Variant | ua.DataValue) -> ua.DataChangeNotification:
    dvs = [
        v if isinstance(v, ua.DataValue) else ua.DataValue(v, SourceTimestamp=NOW, ServerTimestamp=NOW) for v in values
    ]
    return ua.DataChangeNotification(
        MonitoredItems=[ua.MonitoredItemNotification(ClientHandle=h, Value=dv) for h, dv in enumerate(dvs)]
    )


@dataclass(frozen=True)
class Raw:
    """One monitored item as it travels: the DataValue's mask and fields, the Variant already encoded."""

    handle: int
    mask: int
    variant: bytes = b"\x0b" + struct.pack("<d", 1.5)
    status: int = 0
    source: int = 0
    source_pico: int = 0
    server: int = 0
    server_pico: int = 0

    def encode(self, spec: bool) -> bytes:
        m = self.mask
        out = struct.pack("<IB", self.handle, m)
        if m & 1:
            out += self.variant
        if m & 2:
            out += struct.pack("<I", self.status)
        source_time = struct.pack("<q", self.source) if m & 4 else b""
        server_time = struct.pack("<q", self.server) if m & 8 else b""
        source_pico = struct.pack("<H", self.source_pico) if m & 16 else b""
        server_pico = struct.pack("<H", self.server_pico) if m & 32 else b""
        if spec:
            return out + source_time + source_pico + server_time + server_pico
        return out + source_time + server_time + source_pico + server_pico


def data_change(raws: Sequence[Raw], spec: bool, diagnostics: int = 0) -> ua.ExtensionObject:
    """`diagnostics`: the DiagnosticInfos count, none following (asyncua writes 0, other stacks -1)."""
    body = struct.pack("<i", len(raws)) + b"".join(r.encode(spec) for r in raws) + struct.pack("<i", diagnostics)
    return ua.ExtensionObject(
        TypeId=ua.FourByteNodeId(ua.ObjectIds.DataChangeNotification_Encoding_DefaultBinary), Body=body
    )


def check_raw(raws: Sequence[Raw]) -> Publish:
    """fastdecode reads the spec's order as asyncua reads its own."""
    got = fastdecode.decode(response(data_change(raws, spec=True)))
    assert_same(got, asyncua_reads(response(data_change(raws, spec=False))))
    return got


def variant(value: Any, vtype: ua.VariantType, **kw: Any) -> bytes:
    return ua_binary.variant_to_binary(ua.Variant(value, vtype, **kw))


# -- every built-in type -----------------------------------------------------------------------------

F32_MAX = struct.unpack("<f", struct.pack("<f", 3.4028234663852886e38))[0]
SCALARS: list[ua.Variant] = [
    ua.Variant(True, VT.Boolean),
    ua.Variant(False, VT.Boolean),
    *(ua.Variant(v, VT.SByte) for v in (-128, 127, 0, -1)),
    *(ua.Variant(v, VT.Byte) for v in (0, 255)),
    *(ua.Variant(v, VT.Int16) for v in (-(2**15), 2**15 - 1)),
    *(ua.Variant(v, VT.UInt16) for v in (0, 2**16 - 1)),
    *(ua.Variant(v, VT.Int32) for v in (-(2**31), 2**31 - 1)),
    *(ua.Variant(v, VT.UInt32) for v in (0, 2**32 - 1)),
    *(ua.Variant(v, VT.Int64) for v in (-(2**63), 2**63 - 1, 2**53 + 1)),
    *(ua.Variant(v, VT.UInt64) for v in (0, 2**64 - 1, 2**63)),
    *(ua.Variant(v, VT.Float) for v in (math.nan, math.inf, -math.inf, -0.0, 0.0, F32_MAX, 1.401298464324817e-45, 0.1)),
    *(ua.Variant(v, VT.Double) for v in (math.nan, math.inf, -math.inf, -0.0, 1.7976931348623157e308, 5e-324, 0.1)),
    *(
        ua.Variant(v, VT.String)
        for v in ("", "a", "정상 가동 중 (작업자: 김민수)", "🏭 공장 ✓ Ünïcödé", "가" * 1000, None)
    ),
    *(
        ua.Variant(v, VT.DateTime)
        for v in (
            datetime(1601, 1, 1, tzinfo=UTC),
            datetime(1970, 1, 1, tzinfo=UTC),
            NOW,
            datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
        )
    ),
    *(ua.Variant(v, VT.Guid) for v in (uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), uuid.uuid4())),
    *(ua.Variant(v, VT.ByteString) for v in (b"", b"\x00", bytes(range(256)), None)),
    ua.Variant(ua.XmlElement("<a>b</a>"), VT.XmlElement),
    ua.Variant(ua.NodeId(0, 0), VT.NodeId),
    ua.Variant(ua.NodeId("CNC01.Speed", 2), VT.NodeId),
    ua.Variant(ua.ExpandedNodeId(5, 1, NamespaceUri="urn:x"), VT.ExpandedNodeId),
    *(
        ua.Variant(ua.StatusCode(c), VT.StatusCode)
        for c in (0, ua.StatusCodes.BadSensorFailure, ua.StatusCodes.UncertainLastUsableValue, 2**32 - 1)
    ),
    ua.Variant(ua.QualifiedName("Speed", 3), VT.QualifiedName),
    *(
        ua.Variant(v, VT.LocalizedText)
        for v in (
            ua.LocalizedText("정상 운전", "ko-KR"),
            ua.LocalizedText("x"),
            ua.LocalizedText(None, "en-US"),
            ua.LocalizedText(),
            ua.LocalizedText("", ""),
        )
    ),
    ua.Variant(ua.Range(1.0, 2.0), VT.ExtensionObject),
    ua.Variant(None, VT.ExtensionObject),
    ua.Variant(None, VT.Null),
]
ARRAYS: list[ua.Variant] = [
    ua.Variant([1, 2, 3], VT.Int32),
    ua.Variant([], VT.Double),
    ua.Variant(["a", None, "나"], VT.String),
    ua.Variant([[1, 2], [3, 4]], VT.Int16),
    ua.Variant(None, VT.Int32, is_array=True),
    ua.Variant([True, False], VT.Boolean),
    ua.Variant([NOW], VT.DateTime),
]


def test_every_builtin_scalar_type_as_asyncua_encodes_and_decodes_it() -> None:
    got = check(response(items(*SCALARS)))
    assert got.how == "mixed"  # XmlElement, NodeIds, QualifiedName, ExtensionObjects went through asyncua
    common = [v for v in SCALARS if v.VariantType.value in (*range(0, 16), 19, 21) and v.VariantType != VT.XmlElement]
    assert check(response(items(*common))).how == "fast"


@pytest.mark.parametrize("value", ARRAYS, ids=lambda v: f"{v.VariantType.name}{v.Dimensions or ''}")
def test_arrays_and_matrices_go_through_asyncua_item_by_item(value: ua.Variant) -> None:
    got = check(response(items(ua.Variant(1.5), value, ua.Variant("after"))))
    assert got.how == "mixed"


def test_both_timestamps_present_absent_and_statuses() -> None:
    dvs = [
        ua.DataValue(ua.Variant(1.0), SourceTimestamp=NOW, ServerTimestamp=NOW),
        ua.DataValue(ua.Variant(2.0)),
        ua.DataValue(ua.Variant(3.0), SourceTimestamp=NOW),
        ua.DataValue(ua.Variant(4.0), ServerTimestamp=NOW),
        ua.DataValue(ua.Variant(5.0), ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown), NOW, NOW),
        ua.DataValue(ua.Variant(6.0), ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue), NOW, NOW),
        ua.DataValue(ua.Variant(7.0), ua.StatusCode(0x00000480)),  # Good with the overflow info bits
        ua.DataValue(ua.Variant(8.0), None, NOW, NOW),  # no status: Good, 0
        ua.DataValue(ua.Variant(9.0), SourceTimestamp=datetime(1601, 1, 1, tzinfo=UTC), ServerTimestamp=NOW),
        ua.DataValue(ua.Variant(10.0), SourceTimestamp=NOW, ServerTimestamp=NOW, ServerPicoseconds=9),
        ua.DataValue(ua.Variant(11.0), SourceTimestamp=NOW, SourcePicoseconds=477),  # no server time: same order
    ]
    got = check(response(items(*dvs)))
    assert got.how == "fast"
    samples = got.data[0].samples
    assert samples[1].source_time is None and samples[1].server_time is None
    assert samples[4].status == ua.StatusCodes.BadNodeIdUnknown and samples[7].status == 0
    assert samples[8].source_time is None and samples[8].server_time == NOW


# Ticks (100 ns since 1601) where asyncua's datetime changes its rule: negative, "no time", the last tick of
# 1601, the first of 1602, the maximum it maps to 9999-12-31 23:59:59, Int64's ends, and digits below 1 µs.
NO_TIME_BELOW = 365 * 24 * 3600 * 10**7
TICKS = [
    -(2**63), -1, 0, 1, 9, 10, 11, NO_TIME_BELOW - 10, NO_TIME_BELOW - 1, NO_TIME_BELOW, NO_TIME_BELOW + 9,
    116444736000000000, 133900000000000007, MAX_OPC_FILETIME - 1, MAX_OPC_FILETIME, MAX_OPC_FILETIME + 1,
    MAX_OPC_FILETIME + 10, 2**62, 2**63 - 1,
]  # fmt: skip


def test_timestamps_and_datetime_values_at_every_edge_of_asyncuas_conversion() -> None:
    raws = [Raw(i, 0x0D, source=t, server=TICKS[-1 - i]) for i, t in enumerate(TICKS)]
    raws += [Raw(100 + i, 0x01, variant=b"\x0d" + struct.pack("<q", t)) for i, t in enumerate(TICKS)]
    got = check_raw(raws)
    assert got.how == "fast"
    # With raw times a timestamp comes as its ticks exactly where asyncua's datetime is an ordinary one.
    raw = fastdecode.decode(response(data_change(raws, spec=True)), raw_times=True)
    change = raw.data[0]
    assert type(change) is DataChange
    for t, sample in zip(TICKS, change.samples, strict=False):
        ordinary = NO_TIME_BELOW <= t < MAX_OPC_FILETIME
        assert isinstance(sample.source_time, int) == ordinary, t
        if ordinary:
            assert sample.source_time == t


@pytest.mark.parametrize("mask", range(256))
def test_every_data_value_encoding_mask(mask: int) -> None:
    """Every combination of value, status, source/server timestamp and picoseconds, and the reserved bits."""
    raws = [
        Raw(
            1,
            mask,
            status=0x80340000,
            source=133900000000000007,
            source_pico=477,
            server=133900000000100000,
            server_pico=9,
        ),
        Raw(2, mask, variant=variant("text", VT.String), status=0x40000000, source=1, server=2**63 - 1),
        Raw(3, mask, variant=variant([1, 2], VT.Int32), source=NO_TIME_BELOW, server=NO_TIME_BELOW - 1),
    ]
    got = check_raw(raws)
    assert got.how == ("mixed" if mask & 1 else "fast")


def test_asyncua_misreads_the_server_time_after_source_picoseconds_and_fastdecode_does_not() -> None:
    """asyncua 2.1 reads a DataValue's fields out of the spec's order (node-opcua sends this with every value).
    If this fails because asyncua got it right, fastdecode's docstring and this file's note can go."""
    source, server = 133900000000000000, 133900000000012340
    body = response(data_change([Raw(1, 0x1D, source=source, source_pico=477, server=server)], spec=True))
    [sample] = fastdecode.decode(body).data[0].samples
    assert sample.source_time == ua.win_epoch_to_datetime(source)
    assert sample.server_time == ua.win_epoch_to_datetime(server)
    [item] = ua_binary.struct_from_binary(
        ua.PublishResponse, Buffer(body)
    ).Parameters.NotificationMessage.NotificationData
    assert item.MonitoredItems[0].Value.ServerTimestamp != ua.win_epoch_to_datetime(server)


def test_the_test_encoder_writes_what_asyncua_writes() -> None:
    dvs = [
        ua.DataValue(ua.Variant(1.5), ua.StatusCode(0x80340000), NOW, NOW, 477, 9),
        ua.DataValue(ua.Variant(2.5), None, None, NOW, None, 9),
        ua.DataValue(ua.Variant(3.5), None, NOW, None, 4, None),
    ]
    now = ua.datetime_to_win_epoch(NOW)
    raws = [
        Raw(0, 0x3F, status=0x80340000, source=now, source_pico=477, server=now, server_pico=9),
        Raw(1, 0x29, variant=variant(2.5, VT.Double), server=now, server_pico=9),
        Raw(2, 0x15, variant=variant(3.5, VT.Double), source=now, source_pico=4),
    ]
    assert response(data_change(raws, spec=False)) == response(items(*dvs))
    no_conflict = [dataclasses.replace(r, handle=i) for i, r in enumerate(raws[1:])]
    assert response(data_change(no_conflict, spec=True)) == response(items(*dvs[1:]))  # the same bytes


def test_several_notifications_in_one_message() -> None:
    events = ua.EventNotificationList(
        Events=[
            ua.EventFieldList(ClientHandle=10, EventFields=[ua.Variant("PRS01"), ua.Variant(500, VT.UInt16)]),
            ua.EventFieldList(ClientHandle=11, EventFields=[]),
        ]
    )
    status = ua.StatusChangeNotification(Status=ua.StatusCode(ua.StatusCodes.BadTimeout))
    got = check(response(items(ua.Variant(1.0)), events, status, items(ua.Variant("x"), ua.Variant(2, VT.Int64))))
    assert [type(d) for d in got.data] == [
        DataChange,
        ua.EventNotificationList,
        ua.StatusChangeNotification,
        DataChange,
    ]
    assert got.how == "mixed"


def test_keep_alives_empty_lists_and_the_publish_fields() -> None:
    null_lists = ua.ExtensionObject(
        TypeId=ua.FourByteNodeId(ua.ObjectIds.DataChangeNotification_Encoding_DefaultBinary), Body=b"\xff" * 8
    )
    for body in (
        response(),
        response(null_lists),
        response(seq=1, available=(), more=True),
        response(ua.DataChangeNotification(MonitoredItems=[])),
        response(*[items(ua.Variant(float(i))) for i in range(5)], available=range(100)),
    ):
        assert check(body).how == "fast"


def test_unusual_headers_and_trailers_go_through_asyncua_whole() -> None:
    diag = ua.DiagnosticInfo(SymbolicId=3, AdditionalInfo="more")
    changes = [
        lambda r: setattr(r.ResponseHeader, "ServiceDiagnostics", diag),
        lambda r: setattr(r.ResponseHeader, "StringTable", ["a", "b"]),
        lambda r: setattr(r.ResponseHeader, "AdditionalHeader", ua.ExtensionObject(ua.NodeId(5), b"xy")),
        lambda r: setattr(r.Parameters, "Results", [ua.StatusCode(), ua.StatusCode(ua.StatusCodes.BadTimeout)]),
        lambda r: setattr(r.Parameters, "DiagnosticInfos", [diag]),
        lambda r: setattr(r.Parameters.NotificationMessage.NotificationData[0], "DiagnosticInfos", [diag]),
        lambda r: setattr(r.ResponseHeader, "ServiceResult", ua.StatusCode(ua.StatusCodes.BadTimeout)),
    ]  # fmt: skip
    for change in changes:
        r = ua_binary.struct_from_binary(ua.PublishResponse, Buffer(response(items(ua.Variant(1.5), ua.Variant("s")))))
        change(r)
        check(ua_binary.struct_to_binary(r))


def test_a_data_change_in_another_encoding_goes_through_asyncua() -> None:
    body = ua_binary.struct_to_binary(items(ua.Variant(1.5)))
    numeric = ua.NodeId(ua.ObjectIds.DataChangeNotification_Encoding_DefaultBinary, 0, ua.NodeIdType.Numeric)
    got = check(response(ua.ExtensionObject(TypeId=numeric, Body=body)))
    assert got.how == "mixed"


# -- random notifications, truncated and corrupted bodies ---------------------------------------------

_INT = {VT.SByte: 8, VT.Int16: 16, VT.Int32: 32, VT.Int64: 64}
_UINT = {VT.Byte: 8, VT.UInt16: 16, VT.UInt32: 32, VT.UInt64: 64}
ticks = st.one_of(st.sampled_from(TICKS), st.integers(-(2**63), 2**63 - 1))
variants = st.one_of(
    st.booleans().map(lambda v: variant(v, VT.Boolean)),
    *(st.integers(-(2 ** (b - 1)), 2 ** (b - 1) - 1).map(lambda v, t=t: variant(v, t)) for t, b in _INT.items()),
    *(st.integers(0, 2**b - 1).map(lambda v, t=t: variant(v, t)) for t, b in _UINT.items()),
    st.floats(width=32).map(lambda v: variant(v, VT.Float)),
    st.floats().map(lambda v: variant(v, VT.Double)),
    st.one_of(st.none(), st.text()).map(lambda v: variant(v, VT.String)),
    st.one_of(st.none(), st.binary(max_size=40)).map(lambda v: variant(v, VT.ByteString)),
    ticks.map(lambda t: b"\x0d" + struct.pack("<q", t)),
    st.uuids().map(lambda v: variant(v, VT.Guid)),
    st.integers(0, 2**32 - 1).map(lambda v: variant(ua.StatusCode(v), VT.StatusCode)),
    st.tuples(st.none() | st.text(max_size=8), st.none() | st.text(max_size=8)).map(
        lambda p: variant(ua.LocalizedText(p[0], p[1]), VT.LocalizedText)
    ),
    st.lists(st.integers(-(2**31), 2**31 - 1), max_size=5).map(lambda v: variant(v, VT.Int32)),
    st.lists(st.text(max_size=5), max_size=3).map(lambda v: variant(v, VT.String)),
    st.integers(0, 2**16 - 1).map(lambda v: variant(ua.NodeId(v, 2), VT.NodeId)),
    st.just(b"\x00"),
)
raw_items = st.builds(
    Raw,
    handle=st.integers(0, 2**32 - 1),
    mask=st.integers(0, 255),
    variant=variants,
    status=st.one_of(st.sampled_from([0, 0x80000000, 0x80340000, 0x40000000, 0x00000480]), st.integers(0, 2**32 - 1)),
    source=ticks,
    source_pico=st.integers(0, 2**16 - 1),
    server=ticks,
    server_pico=st.integers(0, 2**16 - 1),
)
notifications = st.lists(st.lists(raw_items, max_size=6), min_size=0, max_size=3)


@settings(max_examples=300, deadline=None)
@given(notifications, st.sampled_from([0, -1]))
def test_random_notifications(changes: list[list[Raw]], diagnostics: int) -> None:
    spec = response(*(data_change(c, spec=True, diagnostics=diagnostics) for c in changes))
    theirs = response(*(data_change(c, spec=False, diagnostics=diagnostics) for c in changes))
    got = fastdecode.decode(spec)
    assert_same(got, asyncua_reads(theirs))
    assert_raw_times_are_the_same(spec, got)


def base_body(changes: list[list[Raw]]) -> bytes:
    events = ua.EventNotificationList(Events=[ua.EventFieldList(ClientHandle=10, EventFields=[ua.Variant("x")])])
    return response(*(data_change(c, spec=True) for c in changes), events)


def same_or_asyncuas_error(body: bytes) -> None:
    """On a damaged body fastdecode gives what asyncua gives for it, or raises what asyncua raises."""
    try:
        want = asyncua_reads(body)
    except Exception as exc:
        with pytest.raises(type(exc)):
            fastdecode.decode(body)
        return
    assert_same(fastdecode.decode(body), want, spec_times=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(notifications, st.data())
def test_truncated_bodies(changes: list[list[Raw]], data: st.DataObject) -> None:
    body = base_body(changes)
    cut = data.draw(st.integers(0, len(body) - 1))
    same_or_asyncuas_error(body[:cut])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(notifications, st.data())
def test_corrupted_bodies(changes: list[list[Raw]], data: st.DataObject) -> None:
    body = bytearray(base_body(changes))
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    same_or_asyncuas_error(bytes(body))


def test_every_prefix_of_a_mixed_body() -> None:
    body = response(
        items(*SCALARS[:40], *ARRAYS[:3]),
        ua.StatusChangeNotification(Status=ua.StatusCode(ua.StatusCodes.BadTimeout)),
    )
    for cut in range(len(body)):
        same_or_asyncuas_error(body[:cut])


def test_stock_results_convert_the_same_way() -> None:
    """The source takes asyncua's PublishResult too (the stock path): converted, it equals the fast result."""
    body = response(items(*SCALARS), ua.StatusChangeNotification(Status=ua.StatusCode(ua.StatusCodes.BadTimeout)))
    stock = fastdecode.from_result(ua_binary.struct_from_binary(ua.PublishResponse, Buffer(body)).Parameters)
    fast = fastdecode.decode(body)
    assert stock.how == "asyncua"
    assert_same(fast, asyncua_reads(body))
    assert same([tuple(s) for s in stock.data[0].samples], [tuple(s) for s in fast.data[0].samples])
    assert stock.data[1] == fast.data[1]
