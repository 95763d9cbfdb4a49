"""The plant-conformance check, at every (re)connect: each mapped node exists and carries the configured type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from asyncua import Client, ua

from adapters.opcua import inspect, lowlevel
from adapters.opcua.browse import Limits
from adapters.opcua.requests import chunks
from adapters.opcua.spec import NodeItem
from adapters.opcua.values import declared_type, expected

Report = Callable[[int, str, str], Awaitable[None]]
"""(handle, node as configured, problem)."""

# Status codes that say the node itself is gone (deleted, or its id no longer valid), not its value.
GONE = frozenset({ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNodeIdInvalid})


def _value(dv: ua.DataValue) -> object:
    return dv.Value.Value if dv.Value is not None else None


async def resolve(
    client: Client, items: Sequence[NodeItem], known: Mapping[str, str], chunk: int, report: Report, moved: Report
) -> dict[int, ua.NodeId]:
    """Node ids by handle, in batched calls: a browse path is translated on the server; a node id whose browse
    path was learnt (`known`: configured node id → path) is looked up by that path too, and where the path now
    leads to another node (a PLC program download renumbered it) the path wins and `moved` is told.
    Items that resolve to nothing are reported and left out."""
    asked: list[tuple[str, bool]] = []
    for item in items:
        asked.append((item.node, item.by_path))
        if not item.by_path and item.node in known:
            asked.append((known[item.node], True))
    found = iter(await inspect.resolve(client, asked, Limits(translate=chunk)))
    out: dict[int, ua.NodeId] = {}
    for item in items:
        first = next(found)
        by_learnt = next(found) if not item.by_path and item.node in known else None
        if isinstance(by_learnt, ua.NodeId) and by_learnt != first:
            out[item.handle] = by_learnt
            await moved(
                item.handle,
                item.node,
                f"renumbered on the server: found by its browse path {known[item.node]} as {by_learnt.to_string()}, "
                f"the mapping says {item.node}; collected from there — update the mapping",
            )
        elif isinstance(first, ua.NodeId):
            out[item.handle] = first
        elif item.by_path:
            await report(item.handle, item.node, f"browse path not found on the server ({first})")
        else:
            await report(item.handle, item.node, first)
    return out


async def problems(
    client: Client, items: Mapping[int, NodeItem], nodes: Mapping[int, ua.NodeId], chunk: int
) -> dict[int, tuple[str, bool]]:
    """What is wrong with each node that does not exist with the configured type and array shape:
    handle → (problem, gone), gone when the server does not know the node at all."""
    out: dict[int, tuple[str, bool]] = {}
    for part in chunks(list(nodes), chunk):
        ids = [nodes[h] for h in part]
        types = await lowlevel.read_attributes(client, ids, ua.AttributeIds.DataType)
        ranks = await lowlevel.read_attributes(client, ids, ua.AttributeIds.ValueRank)
        for h, dt, rank in zip(part, types, ranks, strict=True):
            item = items[h]
            if dt.StatusCode is not None and not dt.StatusCode.is_good():
                out[h] = (f"unknown on the server ({dt.StatusCode.name})", dt.StatusCode.value in GONE)
                continue
            data_type = _value(dt)
            if not isinstance(data_type, ua.NodeId):
                out[h] = (f"the server gave no DataType for it (got {data_type!r})", False)
                continue
            have = declared_type(data_type)
            want = expected(item.opcua_type)
            if have is None or have != want:
                shown = have or data_type.to_string()
                out[h] = (f"server type is {shown}, the mapping says {item.opcua_type}", False)
                continue
            value_rank = _value(rank) if rank.StatusCode is None or rank.StatusCode.is_good() else None
            is_array = isinstance(value_rank, int) and value_rank > 0
            if is_array != item.is_array:
                what = "an array" if is_array else "a scalar"
                out[h] = (f"server value is {what}, the mapping says array: {item.is_array}", False)
    return out


async def check_types(
    client: Client, items: Mapping[int, NodeItem], nodes: Mapping[int, ua.NodeId], chunk: int, report: Report
) -> list[int]:
    """Handles whose node exists with the configured type and array shape; the others are reported."""
    found = await problems(client, items, nodes, chunk)
    for h, (problem, _) in found.items():
        await report(h, items[h].node, problem)
    return [h for h in nodes if h not in found]
