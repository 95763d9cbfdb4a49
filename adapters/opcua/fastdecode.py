"""A PublishResponse decoded straight from its bytes into Samples; asyncua's decoder only for the rare parts.

asyncua decodes every response field by field through generic dataclass machinery: about 19 µs per
value, the agent's largest single cost (shared/reference/testbed.md). Almost every value a PLC sends
is a scalar of a built-in type in a DataValue of a handful of layouts, so this module reads those with
`struct` (one precompiled layout per DataValue shape, many items per call when they share it) and
makes the Samples the agent wants directly, with no asyncua objects in between.

The result is what asyncua's `struct_from_binary` plus the source's conversion gave (the values as
`values.plain` makes them, OPC UA's "no time" as `values.no_time` maps it, a missing status as 0),
which tests/test_fastdecode.py checks differentially against asyncua's own encoder and decoder, with
one deliberate difference: a DataValue's optional fields are read in the order OPC UA Part 6
§5.2.2.17 gives (source timestamp, source picoseconds, server timestamp, server picoseconds).
asyncua 2.1 reads both timestamps before both picosecond fields, so whenever a server sends source
picoseconds and a server timestamp (the node-opcua simulator does, with every value) asyncua takes the server
timestamp from the wrong bytes. The two orders agree whenever either field is absent.

What it does not know it hands to asyncua, at the narrowest level that keeps the boundaries exact:
  - item: a Variant that is not a scalar of a common built-in type (arrays, matrices, NodeIds,
    ExtensionObjects, ...) is read by asyncua's `variant_from_binary` at its place, bounded by its
    notification's body as asyncua bounds it; the DataValue around it is still read here;
  - notification: event lists, status changes and anything not a DataChangeNotification in the
    usual encoding are read by asyncua's `extensionobject_from_binary`;
  - message: anything else unexpected (diagnostic infos, odd lengths, a body that ends early) and
    any error here makes asyncua decode the whole body, so a corrupt body raises what asyncua raises.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import (
    extensionobject_from_binary,
    get_string_encoding,
    struct_from_binary,
    variant_from_binary,
)
from asyncua.ua.uatypes import MAX_FILETIME_EPOCH_AS_UTC_DATETIME, MAX_OPC_FILETIME, win_epoch_to_datetime

from adapters.opcua import lowlevel  # noqa: F401  # its guards in asyncua's decoder, which this falls back on
from adapters.opcua.values import NO_TIME_YEAR, PLAIN_TYPES, no_time, plain
from adapters.sample import TICKS_AT_UNIX_EPOCH, Sample


class DataChange(NamedTuple):
    """One DataChangeNotification, as the samples the agent receives, in the server's order."""

    samples: list[Sample]


How = Literal["fast", "mixed", "asyncua"]


@dataclass(frozen=True, slots=True)
class Publish:
    """What a PublishResponse says that the agent uses. `data` holds a `DataChange` for each data change
    notification and asyncua's own object for anything else (EventNotificationList, StatusChangeNotification,
    ...). `how`: "fast" read here alone, "mixed" with some parts read by asyncua, "asyncua" read by it whole."""

    subscription_id: int
    sequence_number: int
    available: tuple[int, ...]
    more: bool
    data: tuple[Any, ...]
    how: How


def decode(body: bytes, *, raw_times: bool = False) -> Publish:
    """The PublishResponse in `body` (the bytes asyncua's `UaSession.publish` would decode). Raises only
    what asyncua's decoder raises for the same bytes. With `raw_times` a timestamp in the years 1602-9999 of
    a value of fixed size comes as its int of ticks (adapters/sample.py: Stamp), not as a datetime."""
    try:
        return _Reader(body, raw_times).publish()
    except Exception:  # whatever it is, asyncua decides: same result, or its own error
        pass
    response = struct_from_binary(ua.PublishResponse, Buffer(body))
    return from_result(response.Parameters)


def from_result(result: ua.PublishResult) -> Publish:
    """A publish result asyncua decoded, in the same shape."""
    message = result.NotificationMessage
    data = tuple(
        DataChange(samples(n.MonitoredItems)) if type(n) is ua.DataChangeNotification else n
        for n in message.NotificationData or ()
    )
    available = tuple(result.AvailableSequenceNumbers or ())
    return Publish(
        result.SubscriptionId, message.SequenceNumber, available, bool(result.MoreNotifications), data, "asyncua"
    )


def samples(items: Sequence[ua.MonitoredItemNotification]) -> list[Sample]:
    """The samples of monitored item notifications asyncua decoded."""
    out: list[Sample] = []
    append = out.append
    plain_types = PLAIN_TYPES
    for n in items:
        dv = n.Value
        v = dv.Value.Value if dv.Value is not None else None
        if type(v) not in plain_types:
            v = plain(v)
        sc = dv.StatusCode
        code = sc.value if sc else 0
        st, svt = dv.SourceTimestamp, dv.ServerTimestamp
        if (st is not None and st.year == NO_TIME_YEAR) or (svt is not None and svt.year == NO_TIME_YEAR):
            st, svt = no_time(st), no_time(svt)
        append(Sample(n.ClientHandle, v, st, svt, code))
    return out


# -- the wire format -------------------------------------------------------------------------------


class _Unexpected(Exception):
    """Something this module does not read itself: asyncua reads the whole message."""


def _encoding_id(identifier: int) -> bytes:
    """A FourByte NodeId in namespace 0, as every server encodes these type ids."""
    return struct.pack("<BBH", 1, 0, identifier)


_PUBLISH_RESPONSE = _encoding_id(ua.ObjectIds.PublishResponse_Encoding_DefaultBinary)
_DATA_CHANGE = _encoding_id(ua.ObjectIds.DataChangeNotification_Encoding_DefaultBinary) + b"\x01"  # + body
_NO_EXTENSION_OBJECT = b"\x00\x00\x00"  # null TwoByte NodeId, no body
_DIAGNOSTICS = 20  # offset of the ResponseHeader's ServiceDiagnostics

_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_I64 = struct.Struct("<q")
_HEAD = struct.Struct("<IB")  # ClientHandle, DataValue encoding mask
_RESULT = struct.Struct("<Ii")  # SubscriptionId, AvailableSequenceNumbers count
_MESSAGE = struct.Struct("<?I8xi")  # MoreNotifications, SequenceNumber, PublishTime, NotificationData count
_ENCODED_BODY = struct.Struct("<i")

# DataValue encoding mask bits (Part 6 §5.2.2.17); asyncua ignores the two reserved high bits, so does this.
_VALUE, _STATUS, _SOURCE_TIME, _SERVER_TIME, _SOURCE_PICO, _SERVER_PICO = 1, 2, 4, 8, 16, 32

# Scalar built-in types of a fixed size, as struct formats (the format asyncua's Primitives use).
_FIXED: dict[int, str] = {
    ua.VariantType.Boolean.value: "?",
    ua.VariantType.SByte.value: "b",
    ua.VariantType.Byte.value: "B",
    ua.VariantType.Int16.value: "h",
    ua.VariantType.UInt16.value: "H",
    ua.VariantType.Int32.value: "i",
    ua.VariantType.UInt32.value: "I",
    ua.VariantType.Int64.value: "q",
    ua.VariantType.UInt64.value: "Q",
    ua.VariantType.Float.value: "f",
    ua.VariantType.Double.value: "d",
    ua.VariantType.DateTime.value: "q",
    ua.VariantType.StatusCode.value: "I",  # values.plain makes a StatusCode its int
}
_DATETIME = int(ua.VariantType.DateTime)
_NULL, _STRING, _GUID, _BYTESTRING, _LOCALIZED = (
    int(t)
    for t in (
        ua.VariantType.Null,
        ua.VariantType.String,
        ua.VariantType.Guid,
        ua.VariantType.ByteString,
        ua.VariantType.LocalizedText,
    )
)

# -- time ------------------------------------------------------------------------------------------

_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
# Ticks (100 ns since 1601) below which asyncua's datetime falls in NO_TIME_YEAR: "no time" (values.no_time).
_NO_TIME_BELOW = (datetime(NO_TIME_YEAR + 1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1) * 10
# asyncua adds ticks // 10 µs to 1601-01-01; adding to 1970 what lies beyond it is the same datetime
# (1970 is a whole number of µs after 1601) and, with the smaller timedelta, about a third cheaper.
_UNIX = datetime(1970, 1, 1, tzinfo=UTC)
_UNIX_TICKS = TICKS_AT_UNIX_EPOCH


class _Times(dict[int, datetime | None]):
    """DataValue timestamps by their ticks, as asyncua's `win_epoch_to_datetime` then `values.no_time` make
    them, each made once: a publish repeats its timestamps (one server time for all its values, often one
    source time for many), and making a datetime is most of what a value costs."""

    def __missing__(self, ticks: int) -> datetime | None:
        found: datetime | None
        if ticks < _NO_TIME_BELOW:
            found = None
        elif ticks >= MAX_OPC_FILETIME:
            found = MAX_FILETIME_EPOCH_AS_UTC_DATETIME
        else:
            found = _UNIX + timedelta(0, 0, (ticks - _UNIX_TICKS) // 10)
        self[ticks] = found
        return found


# -- layouts ---------------------------------------------------------------------------------------


class _Layout(NamedTuple):
    """One DataValue shape of fixed size: handle, mask, [variant type, value], [status], [times]."""

    struct: struct.Struct
    mask: int
    check: int  # the byte (4: the mask, 5: the variant type) that must be `expect` for an item of this layout
    expect: int
    value: int  # index of the value, 0 when the DataValue has none
    is_time: bool  # the value is a DateTime
    status: int  # index of the status code, 0 when absent
    source: int  # index of the source timestamp, 0 when absent
    server: int  # index of the server timestamp, 0 when absent


def _tail(mask: int, fmt: str, index: int) -> tuple[str, int, int, int]:
    """The format of the fields after the value, and the indices of status, source and server time (0: absent)."""
    status = source = server = 0
    if mask & _STATUS:
        fmt, status, index = fmt + "I", index, index + 1
    if mask & _SOURCE_TIME:
        fmt, source, index = fmt + "q", index, index + 1
    if mask & _SOURCE_PICO:
        fmt += "2x"
    if mask & _SERVER_TIME:
        fmt, server, index = fmt + "q", index, index + 1
    if mask & _SERVER_PICO:
        fmt += "2x"
    return fmt, status, source, server


def _layout(key: int) -> _Layout | None:
    """The layout for `key` (mask << 8 | variant type byte), None when it has no fixed size."""
    mask, vtype = key >> 8, key & 0xFF
    if not mask & _VALUE:
        fmt, status, source, server = _tail(mask, "<IB", 2)
        return _Layout(struct.Struct(fmt), mask, 4, mask, 0, False, status, source, server)
    value = _FIXED.get(vtype)
    if value is None:
        return None
    fmt, status, source, server = _tail(mask, "<IBB" + value, 4)
    return _Layout(struct.Struct(fmt), mask, 5, vtype, 3, vtype == _DATETIME, status, source, server)


_LAYOUTS: dict[int, _Layout | None] = {}

# After a value of no fixed size: a leading pad byte (the value's last) keeps index 0 meaning "absent".
_TAILS: dict[int, tuple[struct.Struct, int, int, int]] = {
    mask: (struct.Struct(fmt), status, source, server)
    for mask in range(256)
    for fmt, status, source, server in [_tail(mask, "<B", 1)]
}


# -- the reader ------------------------------------------------------------------------------------


class _Reader:
    """One pass over one body. Every length is checked against the part of the body asyncua would allow."""

    def __init__(self, body: bytes, raw_times: bool = False) -> None:
        self.body = body
        self.view = memoryview(body)
        self.encoding = get_string_encoding()
        self.times = _Times()
        self.raw_times = raw_times
        self.mixed = False

    def publish(self) -> Publish:
        body = self.body
        if body[:4] != _PUBLISH_RESPONSE:
            raise _Unexpected("not a PublishResponse in its usual encoding")
        pos = self._header()
        sub_id, count = _RESULT.unpack_from(body, pos)
        pos += 8
        available = self._counts(pos, count)
        pos += 4 * len(available)
        more, seq, count = _MESSAGE.unpack_from(body, pos)
        pos += 17
        if count < -1:
            raise _Unexpected("negative NotificationData count")
        data: list[Any] = []
        for _ in range(count):
            pos = self._notification(pos, data)
        pos = self._skip_array(pos, 4)  # Results: the acknowledgements' status codes
        (count,) = _I32.unpack_from(body, pos)
        if count not in (-1, 0):
            raise _Unexpected("DiagnosticInfos")
        if pos + 4 > len(body):
            raise _Unexpected("the body ends early")
        return Publish(sub_id, seq, available, more, tuple(data), "mixed" if self.mixed else "fast")

    def _header(self) -> int:
        """Where the ResponseHeader ends (asyncua does not look at its ServiceResult either)."""
        body = self.body
        if body[_DIAGNOSTICS] != 0:  # after TypeId, Timestamp, RequestHandle and ServiceResult
            raise _Unexpected("ServiceDiagnostics")
        pos = self._skip_strings(_DIAGNOSTICS + 1)
        if body[pos : pos + 3] != _NO_EXTENSION_OBJECT:
            raise _Unexpected("AdditionalHeader")
        return pos + 3

    def _counts(self, pos: int, count: int) -> tuple[int, ...]:
        if count < -1:
            raise _Unexpected("negative array length")
        if count <= 0:
            return ()
        if pos + 4 * count > len(self.body):
            raise _Unexpected("the body ends early")
        return struct.unpack_from(f"<{count}I", self.body, pos)

    def _skip_array(self, pos: int, size: int) -> int:
        count: int = _I32.unpack_from(self.body, pos)[0]
        if count < -1:
            raise _Unexpected("negative array length")
        return pos + 4 + size * max(count, 0)

    def _skip_strings(self, pos: int) -> int:
        body = self.body
        (count,) = _I32.unpack_from(body, pos)
        pos += 4
        if count < -1:
            raise _Unexpected("negative array length")
        for _ in range(count):
            (n,) = _I32.unpack_from(body, pos)
            if n < -1:
                raise _Unexpected("negative string length")
            pos += 4 + max(n, 0)
        return pos

    def _notification(self, pos: int, data: list[Any]) -> int:
        """One NotificationData ExtensionObject at `pos`, appended to `data`; returns where the next starts."""
        body = self.body
        if body[pos : pos + 5] == _DATA_CHANGE:
            length: int = _ENCODED_BODY.unpack_from(body, pos + 5)[0]
            start = pos + 9
            end = start + length
            if length >= 1 and end <= len(body):
                data.append(DataChange(self._data_change(start, end)))
                return end
        self.mixed = True
        buf = Buffer(body, pos)
        notification = extensionobject_from_binary(buf)
        if type(notification) is ua.DataChangeNotification:
            notification = DataChange(samples(notification.MonitoredItems))
        data.append(notification)
        return buf.cur_pos

    def _data_change(self, pos: int, end: int) -> list[Sample]:
        """The MonitoredItems of a DataChangeNotification body that ends at `end`, as samples."""
        body = self.body
        view = self.view
        (count,) = _I32.unpack_from(body, pos)
        pos += 4
        if count < -1:
            raise _Unexpected("negative MonitoredItems count")
        out: list[Sample] = []
        append = out.append
        new = tuple.__new__
        times = self.times
        raw = self.raw_times
        low, high = _NO_TIME_BELOW, MAX_OPC_FILETIME  # ticks outside: None or asyncua's greatest datetime
        layouts = _LAYOUTS
        done = 0
        while done < count:
            if pos + 6 > end:
                raise _Unexpected("the notification ends early")
            key = body[pos + 4] << 8 | body[pos + 5]
            if not body[pos + 4] & _VALUE:
                key &= 0xFF00
            if key in layouts:
                lay = layouts[key]
            else:
                lay = layouts[key] = _layout(key)
            if lay is None:
                pos = self._item(pos, end, out)
                done += 1
                continue
            st, mask, check, expect, i_value, is_time, i_status, i_source, i_server = lay
            size = st.size
            if pos + size > end:
                raise _Unexpected("the notification ends early")
            rows: Iterable[tuple[Any, ...]]
            if (
                done + 1 < count
                and pos + 2 * size <= end
                and body[pos + size + 4] == mask
                and body[pos + size + check] == expect
            ):
                rows = st.iter_unpack(view[pos : pos + min(count - done, (end - pos) // size) * size])
            else:  # a single item of this layout: one call instead of a run's set-up
                rows = (st.unpack_from(body, pos),)
            for f in rows:
                if f[1] != mask or f[check - 3] != expect:
                    break
                value: Any = f[i_value] if i_value else None
                if is_time:
                    value = win_epoch_to_datetime(value)
                status = f[i_status] if i_status else 0
                if raw:
                    source = f[i_source] if i_source else None
                    if source is not None and not low <= source < high:
                        source = times[source]
                    server = f[i_server] if i_server else None
                    if server is not None and not low <= server < high:
                        server = times[server]
                else:
                    source = times[f[i_source]] if i_source else None
                    server = times[f[i_server]] if i_server else None
                append(new(Sample, (f[0], value, source, server, status)))
                pos += size
                done += 1
        (diagnostics,) = _I32.unpack_from(body, pos)
        if diagnostics not in (-1, 0):
            raise _Unexpected("DiagnosticInfos")
        if pos + 4 > end:
            raise _Unexpected("the notification ends early")
        return out

    def _item(self, pos: int, end: int, out: list[Sample]) -> int:
        """One monitored item whose value has no fixed size; returns where the next starts."""
        body = self.body
        handle, mask = _HEAD.unpack_from(body, pos)
        pos += 5
        vtype = body[pos]
        pos += 1
        value: Any
        if vtype in (_STRING, _BYTESTRING):
            value, pos = self._bytes(pos)
            if vtype == _STRING and value is not None:
                value = str(value, self.encoding, "surrogateescape")
        elif vtype == _NULL:
            value = None
        elif vtype == _LOCALIZED:
            flags = body[pos]
            locale = text = None
            pos += 1
            if flags & 1:
                locale, pos = self._bytes(pos)
            if flags & 2:
                text, pos = self._bytes(pos)
            value = {
                "language": str(locale, self.encoding, "surrogateescape") if locale else "",
                "text": str(text, self.encoding, "surrogateescape") if text else "",
            }
        elif vtype == _GUID:
            if pos + 16 > end:
                raise _Unexpected("the notification ends early")
            value = str(uuid.UUID(bytes_le=body[pos : pos + 16]))
            pos += 16
        else:  # arrays, matrices, NodeIds, ExtensionObjects, ...: asyncua reads the Variant
            self.mixed = True
            buf = Buffer(body, pos - 1, end - pos + 1)
            variant = variant_from_binary(buf)
            value = plain(variant.Value)
            pos = buf.cur_pos
        tail, i_status, i_source, i_server = _TAILS[mask]
        f = tail.unpack_from(body, pos - 1)
        pos += tail.size - 1
        if pos > end:
            raise _Unexpected("the notification ends early")
        out.append(
            Sample(
                handle,
                value,
                self.times[f[i_source]] if i_source else None,
                self.times[f[i_server]] if i_server else None,
                f[i_status] if i_status else 0,
            )
        )
        return pos

    def _bytes(self, pos: int) -> tuple[bytes | None, int]:
        (n,) = _I32.unpack_from(self.body, pos)
        pos += 4
        if n == -1:
            return None, pos
        if n < -1 or pos + n > len(self.body):
            raise _Unexpected("odd string length")
        return self.body[pos : pos + n], pos + n
