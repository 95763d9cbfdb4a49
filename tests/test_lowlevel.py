"""The fence around asyncua's internals: the decoder speed-up is installed, exact, and really used."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from asyncua import ua
from asyncua.ua import ua_binary, uatypes

from adapters.opcua import lowlevel


@pytest.mark.parametrize("value", range(64))
def test_same_member_as_asyncua_for_every_type_id(value: int) -> None:
    assert ua.datatype_to_varianttype(value) == uatypes.datatype_to_varianttype(value)
    assert type(ua.datatype_to_varianttype(value)) is type(uatypes.datatype_to_varianttype(value))


def test_node_ids_still_go_through_asyncua() -> None:
    assert ua.datatype_to_varianttype(ua.NodeId(11)) is ua.VariantType.Double
    with pytest.raises(ua.UaError):
        ua.datatype_to_varianttype("Double")


class _Counting(dict[int, Any]):
    calls = 0

    def get(self, key: int, default: Any = None) -> Any:
        _Counting.calls += 1
        return super().get(key, default)


def test_asyncuas_decoder_calls_the_fast_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """If an asyncua upgrade stops calling ua.datatype_to_varianttype, this fails instead of the speed-up vanishing."""
    monkeypatch.setattr(lowlevel, "_BY_VALUE", _Counting(lowlevel._BY_VALUE))
    _Counting.calls = 0
    notification = ua.DataChangeNotification(
        MonitoredItems=[
            ua.MonitoredItemNotification(ClientHandle=h, Value=ua.DataValue(ua.Variant(v)))
            for h, v in enumerate((1.5, "text", True, [1, 2, 3]))
        ]
    )
    data = ua_binary.struct_to_binary(notification)
    decoded = ua_binary.struct_from_binary(ua.DataChangeNotification, ua.utils.Buffer(data))
    assert [n.Value.Value.Value for n in decoded.MonitoredItems] == [1.5, "text", True, [1, 2, 3]]
    assert _Counting.calls >= 4


def test_an_array_of_null_values_longer_than_the_message_is_refused_not_made() -> None:
    """asyncua makes one None per declared element of a Null array, reading nothing: 2**31 - 1 of them took
    the test machine's memory (found by test_fastdecode's corrupted bodies). The guard refuses an array that
    says more elements than the message has bytes; a plausible one decodes as before."""

    def notification(variant: bytes) -> bytes:
        # One MonitoredItemNotification whose DataValue holds only a value (mask 0x01), then no diagnostics.
        return b"\x01\x00\x00\x00" + b"\x07\x00\x00\x00" + b"\x01" + variant + b"\xff\xff\xff\xff"

    for length in (2**31 - 1, 10**6, 9):
        body = notification(b"\x80" + struct.pack("<i", length) + b"\x00" * 4)
        with pytest.raises(ua.UaError, match=f"an array of {length} Null values with 8 bytes left"):
            ua_binary.struct_from_binary(ua.DataChangeNotification, ua.utils.Buffer(body))
    for length in (0, 3, -1):
        body = notification(b"\x80" + struct.pack("<i", length) + b"\x00" * 4)
        decoded = ua_binary.struct_from_binary(ua.DataChangeNotification, ua.utils.Buffer(body))
        value = decoded.MonitoredItems[0].Value.Value.Value
        assert value == (None if length == -1 else [None] * length)
    assert getattr(ua_binary.unpack_uatype_array, "_edge_agent_guard", False), "the guard is on asyncua's path"
