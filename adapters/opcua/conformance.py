"""The plant-conformance check, at every (re)connect: each mapped node exists and carries the configured type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from asyncua import Client, ua
from asyncua.common.node import Node

from adapters.opcua import lowlevel
from adapters.opcua.requests import chunks
from adapters.opcua.spec import NodeItem
from adapters.opcua.values import declared_type, expected

Report = Callable[[int, str, str], Awaitable[None]]
"""(handle, node as configured, problem)."""


def _value(dv: ua.DataValue) -> object:
    return dv.Value.Value if dv.Value is not None else None


async def resolve(client: Client, items: Sequence[NodeItem], report: Report) -> dict[int, ua.NodeId]:
    """Node ids by handle; a browse path is looked up on the server. Items that fail are reported and left out."""
    out: dict[int, ua.NodeId] = {}
    for item in items:
        try:
            if item.by_path:
                node: Node = await client.nodes.root.get_child(item.node.split("/"))
                out[item.handle] = node.nodeid
            else:
                out[item.handle] = ua.NodeId.from_string(item.node)
        except ua.UaStatusCodeError as e:
            await report(item.handle, item.node, f"browse path not found on the server ({e})")
        except (ValueError, ua.UaStringParsingError) as e:
            await report(item.handle, item.node, f"not a valid node id ({e})")
    return out


async def check_types(
    client: Client, items: dict[int, NodeItem], nodes: dict[int, ua.NodeId], chunk: int, report: Report
) -> list[int]:
    """Handles whose node exists with the configured type and array shape; the others are reported."""
    handles = list(nodes)
    ok: list[int] = []
    for part in chunks(handles, chunk):
        ids = [nodes[h] for h in part]
        types = await lowlevel.read_attributes(client, ids, ua.AttributeIds.DataType)
        ranks = await lowlevel.read_attributes(client, ids, ua.AttributeIds.ValueRank)
        for h, dt, rank in zip(part, types, ranks, strict=True):
            item = items[h]
            if dt.StatusCode is not None and not dt.StatusCode.is_good():
                await report(h, item.node, f"unknown on the server ({dt.StatusCode.name})")
                continue
            data_type = _value(dt)
            if not isinstance(data_type, ua.NodeId):
                await report(h, item.node, f"the server gave no DataType for it (got {data_type!r})")
                continue
            have = declared_type(data_type)
            want = expected(item.opcua_type)
            if have is None or have != want:
                shown = have or data_type.to_string()
                await report(h, item.node, f"server type is {shown}, the mapping says {item.opcua_type}")
                continue
            value_rank = _value(rank) if rank.StatusCode is None or rank.StatusCode.is_good() else None
            is_array = isinstance(value_rank, int) and value_rank > 0
            if is_array != item.is_array:
                what = "an array" if is_array else "a scalar"
                await report(h, item.node, f"server value is {what}, the mapping says array: {item.is_array}")
                continue
            ok.append(h)
    return ok
