"""The faster VariantType lookup gives exactly what asyncua's own function gives."""

from __future__ import annotations

import pytest
from asyncua import ua
from asyncua.ua import uatypes

import adapters.opcua.speedups  # noqa: F401


@pytest.mark.parametrize("value", range(64))
def test_same_member_as_asyncua_for_every_type_id(value: int) -> None:
    assert ua.datatype_to_varianttype(value) == uatypes.datatype_to_varianttype(value)
    assert type(ua.datatype_to_varianttype(value)) is type(uatypes.datatype_to_varianttype(value))


def test_node_ids_still_go_through_asyncua() -> None:
    assert ua.datatype_to_varianttype(ua.NodeId(11)) is ua.VariantType.Double
    with pytest.raises(ua.UaError):
        ua.datatype_to_varianttype("Double")
