"""The one place that reaches below asyncua's public Client API.

The agent registers its own publish callback and sends raw service requests, because asyncua's
per-value handler creates a Task per value (most of its cost; shared/reference/testbed.md) and
its subscription helper cannot pass our monitored-item parameters in chunks. Those calls go
through `client.uaclient`, asyncua's internal session object, and are gathered here so that an
asyncua upgrade has one file to check. source.py uses only these functions and public API.

It also installs a faster VariantType lookup into asyncua's decoder, once, at import:
asyncua decodes every Variant with `ua.datatype_to_varianttype(int)`, which calls the Enum
class (`VariantType(n)`): about 0.6 µs of the ~8 µs asyncua spends decoding each value. A dict
lookup gives the same member for every built-in type; anything else (custom types above 25,
NodeIds) still goes through asyncua's own function. tests/test_lowlevel.py checks that asyncua's
decoder really calls it, so an upgrade that moves the lookup fails a test instead of silently
losing the speed-up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from asyncua import Client, ua

PublishCallback = Callable[[ua.PublishResult], Awaitable[None]]


async def create_subscription(
    client: Client, params: ua.CreateSubscriptionParameters, callback: PublishCallback
) -> int:
    """A subscription whose every publish result goes to `callback` whole; returns its id.

    asyncua acknowledges a notification only after the callback returns.
    """
    result = await client.uaclient.create_subscription(params, callback)
    sub_id: int = result.SubscriptionId
    return sub_id


async def create_monitored_items(
    client: Client, params: ua.CreateMonitoredItemsParameters
) -> list[ua.MonitoredItemCreateResult]:
    results: list[ua.MonitoredItemCreateResult] = await client.uaclient.create_monitored_items(params)
    return results


async def delete_monitored_items(client: Client, sub_id: int, ids: Sequence[int]) -> list[ua.StatusCode]:
    params = ua.DeleteMonitoredItemsParameters(SubscriptionId=sub_id, MonitoredItemIds=list(ids))
    results: list[ua.StatusCode] = await client.uaclient.delete_monitored_items(params)
    return results


async def read_attributes(client: Client, nodes: Sequence[ua.NodeId], attribute: ua.AttributeIds) -> list[ua.DataValue]:
    """One Read of `attribute` for every node (the caller keeps `nodes` within the server's limits)."""
    values: list[ua.DataValue] = await client.uaclient.read_attributes(list(nodes), attribute)
    return values


async def read(client: Client, params: ua.ReadParameters) -> list[ua.DataValue]:
    values: list[ua.DataValue] = await client.uaclient.read(params)
    return values


# -- the decoder speed-up ------------------------------------------------------------------------

_BY_VALUE: dict[int, Any] = {t.value: t for t in ua.VariantType}


def _install() -> None:
    original: Callable[[Any], Any] = ua.datatype_to_varianttype
    if getattr(original, "_edge_agent_fast", False):
        return

    def datatype_to_varianttype(int_type: Any) -> Any:
        if type(int_type) is int:
            found = _BY_VALUE.get(int_type)
            if found is not None:
                return found
        return original(int_type)

    datatype_to_varianttype._edge_agent_fast = True  # type: ignore[attr-defined]
    ua.datatype_to_varianttype = datatype_to_varianttype


_install()
