"""The fence around asyncua's internals: the decoder speed-up is installed, exact, and really used."""

from __future__ import annotations

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
