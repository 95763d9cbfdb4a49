"""Browse paths of the nodes the agent collects, learnt once, so that a node can be found again when a PLC
program download gives it another node id.

A path is written as the browse names from the Root folder down, each "namespace index:name", joined by
"/": "0:Objects/2:CNC01/2:SpindleSpeed" (the config's `browse_path` form). Learning goes up from every
node at once, one level per round: one Read of the nodes' BrowseNames, then per level one Browse of the
inverse hierarchical references of all nodes not yet at the Root (each reference names its target's
BrowseName, so no further reads). A 10,000-node mapping three levels deep costs a few dozen calls.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import TypeVar

from asyncua import Client, ua

from adapters.opcua import lowlevel
from adapters.opcua.browse import ROOT, browse_many, local_node, value_of
from adapters.opcua.requests import chunks

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

_NOT_CONTAINMENT = frozenset({ua.ObjectIds.HasEventSource, ua.ObjectIds.HasNotifier})


def _segment(name: object) -> str | None:
    """'2:Speed' for a browse name the path form can carry; None for one it cannot (a '/' in it)."""
    if not isinstance(name, ua.QualifiedName) or not name.Name or "/" in name.Name:
        return None
    return name.to_string()


async def learn(client: Client, nodes: Mapping[K, ua.NodeId], chunk: int, max_depth: int = 32) -> dict[K, str]:
    """The browse path of each node that has one the path form can carry; the others are left out."""
    keys = list(nodes)
    names: list[ua.DataValue] = []
    for part in chunks(keys, chunk):
        names += await lowlevel.read_attributes(client, [nodes[k] for k in part], ua.AttributeIds.BrowseName)
    segments: dict[K, list[str]] = {}
    at: dict[K, ua.NodeId] = {}
    for k, dv in zip(keys, names, strict=True):
        seg = _segment(value_of(dv))
        if seg is not None:
            segments[k], at[k] = [seg], nodes[k]
    found: dict[K, str] = {}
    for _ in range(max_depth):
        if not at:
            break
        level = list(dict.fromkeys(at.values()))
        parents: dict[ua.NodeId, tuple[ua.NodeId, str] | None] = {}
        for part in chunks(level, chunk):
            for node, (status, refs) in zip(
                part, await browse_many(client, part, direction=ua.BrowseDirection.Inverse, mask=0), strict=True
            ):
                parents[node] = _parent(status, refs)
        for k in list(at):
            up = parents.get(at[k])
            if up is None:
                del at[k]  # no way up: no path
                continue
            parent, name = up
            if parent == ROOT:
                found[k] = "/".join(reversed(segments[k]))
                del at[k]
            else:
                segments[k].append(name)
                at[k] = parent
    return found


def _parent(status: ua.StatusCode, refs: list[ua.ReferenceDescription]) -> tuple[ua.NodeId, str] | None:
    if not status.is_good():
        return None
    for r in refs:
        if r.ReferenceTypeId.Identifier in _NOT_CONTAINMENT:
            continue
        node = local_node(r.NodeId)
        name = _segment(r.BrowseName)
        if node is not None and (name is not None or node == ROOT):
            return node, name or ""
    return None
