"""Ask a server about nodes a mapping names, without collecting anything: for checking a mapping live.

`inspect()` resolves every node (a node id, or a browse path by one batched
TranslateBrowsePathsToNodeIds) and reads, in batched Reads, what decides whether the agent can
collect it: NodeClass, BrowseName, DataType, ValueRank, AccessLevel, UserAccessLevel,
MinimumSamplingInterval, EventNotifier. `sampling()` creates the monitored items the collector
would create (same parameters, built by requests.py), disabled, in a subscription of its own that
it deletes again, and returns what the server made of them: its status and the revised sampling
interval. Plain dataclasses out; what is a problem is for the caller to say.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from asyncua import Client, ua

from adapters.opcua import browse, lowlevel, requests, security
from adapters.opcua.browse import ROOT, Limits, read_many, type_names, value_of
from adapters.opcua.pki import OwnCertificate, Pki
from adapters.opcua.requests import chunks
from adapters.opcua.spec import Endpoint, NodeItem
from adapters.opcua.values import declared_type

log = logging.getLogger(__name__)

# What a session's calls raise when the server or the connection fails (not a bug of ours).
FAULTS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, ua.UaError)


class Unreachable(ConnectionError):
    """No session with the server; the message says why, for the person."""


_HIERARCHICAL = ua.NodeId(ua.Int32(ua.ObjectIds.HierarchicalReferences))
_FALSE = cast(ua.Boolean, False)  # asyncua annotates its Boolean fields with a marker class
_ATTRIBUTES = (
    ua.AttributeIds.NodeClass,
    ua.AttributeIds.BrowseName,
    ua.AttributeIds.DataType,
    ua.AttributeIds.ValueRank,
    ua.AttributeIds.AccessLevel,
    ua.AttributeIds.UserAccessLevel,
    ua.AttributeIds.MinimumSamplingInterval,
    ua.AttributeIds.EventNotifier,
)


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the server says about one node a mapping names."""

    node: str  # as given: a node id, or a browse path
    node_id: str | None  # the node it resolved to; None when it did not
    missing: str | None  # why it was not found ("BadNodeIdUnknown", "BadNoMatch", "not a valid node id: ...")
    node_class: str = ""  # "Variable", "Object", ...
    browse_name: str = ""  # "2:SpindleSpeed"
    data_type: str | None = None  # built-in type name; None: none (or not a built-in type)
    data_type_id: str = ""
    data_type_name: str = ""  # for people: "Double", "Structure", "MyEnumType"
    value_rank: int | None = None
    access_level: int = 0
    user_access_level: int = 0
    minimum_sampling_ms: float | None = None
    event_notifier: int = 0


@dataclass(frozen=True, slots=True)
class Sampling:
    """What the server made of a monitored item like the collector's."""

    status: str  # "Good", or why it cannot be monitored ("BadFilterNotAllowed", ...)
    revised_ms: float | None  # the revised sampling interval


class Session:
    """A connected client, and what can be asked of the server through it."""

    def __init__(self, client: Client, endpoint: Endpoint, chosen: str) -> None:
        self.client = client
        self.endpoint = endpoint
        self.security = chosen  # "None/None", "Basic256Sha256/SignAndEncrypt", ...

    async def limits(self, cap: int | None = None) -> Limits:
        return await browse.limits(self.client, cap)

    async def walk(self, root: str | None = None, **options: Any) -> browse.BrowseResult:
        """browse.walk from `root` (a node id; the Objects folder by default)."""
        node = ua.NodeId.from_string(root) if root else browse.OBJECTS
        return await browse.walk(self.client, node, endpoint=self.endpoint.url, **options)

    async def inspect(self, nodes: Sequence[tuple[str, bool]], lim: Limits) -> list[NodeFacts]:
        return await inspect(self.client, nodes, lim)

    async def sampling(self, items: Sequence[tuple[NodeItem, str]], chunk: int) -> dict[int, Sampling]:
        return await sampling(self.client, self.endpoint, items, chunk)


@contextlib.asynccontextmanager
async def session(ep: Endpoint, pki: Pki | None, own: OwnCertificate | None) -> AsyncIterator[Session]:
    """A session with `ep`, made as the collector makes its own (security.connect), closed on exit.

    Raises Unreachable when none can be made.
    """
    client = security.new_client(ep)
    try:
        try:
            chosen = await security.connect(client, ep, pki, own)
        except security.SecurityRefused as e:
            raise Unreachable(f"refused to connect to {ep.url}: {e}") from None
        except Exception as e:  # any network or server fault before a session exists
            reason = f"{type(e).__name__}: {e}".rstrip(": ")
            raise Unreachable(f"cannot connect to {ep.url}: {reason}") from None
        yield Session(client, ep, chosen)
    finally:
        try:
            await asyncio.wait_for(client.disconnect(), 2.0)
        except Exception:  # the session is over either way; a cancellation is not swallowed
            log.debug("disconnect from %s failed", ep.url, exc_info=True)


def _browse_path(text: str) -> ua.BrowsePath:
    elements = [
        ua.RelativePathElement(
            ReferenceTypeId=_HIERARCHICAL,
            IsInverse=_FALSE,
            TargetName=ua.QualifiedName.from_string(part),
        )
        for part in text.split("/")
    ]
    return ua.BrowsePath(StartingNode=ROOT, RelativePath=ua.RelativePath(Elements=elements))


async def resolve(client: Client, nodes: Sequence[tuple[str, bool]], lim: Limits) -> list[ua.NodeId | str]:
    """For each (node id or browse path, is it a browse path): its NodeId, or why it has none."""
    out: list[ua.NodeId | str] = []
    paths: list[tuple[int, ua.BrowsePath]] = []
    for i, (text, by_path) in enumerate(nodes):
        try:
            if by_path:
                paths.append((i, _browse_path(text)))
                out.append("")
            else:
                out.append(ua.NodeId.from_string(text))
        except (ValueError, ua.UaStringParsingError) as e:
            out.append(f"not a valid {'browse path' if by_path else 'node id'}: {e}")
    for part in chunks(paths, lim.translate):
        results: list[ua.BrowsePathResult] = await client.uaclient.translate_browsepaths_to_nodeids(
            [p for _, p in part]
        )
        for (i, _), r in zip(part, results, strict=True):
            if r.StatusCode is not None and not r.StatusCode.is_good():
                out[i] = r.StatusCode.name
            elif not r.Targets:
                out[i] = "BadNoMatch"
            else:
                t = r.Targets[0].TargetId
                out[i] = ua.NodeId(t.Identifier, t.NamespaceIndex, t.NodeIdType)
    return out


async def inspect(client: Client, nodes: Sequence[tuple[str, bool]], lim: Limits) -> list[NodeFacts]:
    """What the server says about each (node id or browse path, is it a browse path), in order."""
    resolved = await resolve(client, nodes, lim)
    found = [(i, n) for i, n in enumerate(resolved) if isinstance(n, ua.NodeId)]
    pairs = [(n, a) for _, n in found for a in _ATTRIBUTES]
    values = [(dv, value_of(dv)) for dv in await read_many(client, pairs, lim.read)]
    k = len(_ATTRIBUTES)
    attrs = {i: values[j * k : (j + 1) * k] for j, (i, _) in enumerate(found)}
    names = await type_names(client, [v[2][1] for v in attrs.values()], lim)
    out: list[NodeFacts] = []
    for i, (text, _) in enumerate(nodes):
        node = resolved[i]
        if not isinstance(node, ua.NodeId):
            out.append(NodeFacts(text, None, node))
            continue
        (cls_dv, cls), (_, name), (_, dtype), (_, rank), (_, access), (_, user_access), (_, minimum), (_, notifier) = (
            attrs[i]
        )
        if cls_dv.StatusCode is not None and not cls_dv.StatusCode.is_good():
            out.append(NodeFacts(text, None, cls_dv.StatusCode.name))
            continue
        type_id = dtype if isinstance(dtype, ua.NodeId) else None
        out.append(
            NodeFacts(
                node=text,
                node_id=node.to_string(),
                missing=None,
                node_class=ua.NodeClass(cls).name if isinstance(cls, int) else "",
                browse_name=name.to_string() if isinstance(name, ua.QualifiedName) else "",
                data_type=declared_type(type_id) if type_id is not None else None,
                data_type_id=type_id.to_string() if type_id is not None else "",
                data_type_name=names.get(type_id, "") if type_id is not None else "",
                value_rank=rank if isinstance(rank, int) else None,
                access_level=access if isinstance(access, int) else 0,
                user_access_level=user_access if isinstance(user_access, int) else 0xFF,
                minimum_sampling_ms=float(minimum) if isinstance(minimum, int | float) else None,
                event_notifier=notifier if isinstance(notifier, int) else 0,
            )
        )
    return out


async def sampling(
    client: Client, ep: Endpoint, items: Sequence[tuple[NodeItem, str]], chunk: int
) -> dict[int, Sampling]:
    """Per item handle: the server's answer to the item as the collector would monitor it (at `node`).

    The items are created disabled (the server samples nothing) in a subscription made for this,
    which is deleted before returning.
    """
    out: dict[int, Sampling] = {}
    if not items:
        return out

    async def ignore(_: ua.PublishResult) -> None:
        return None

    sub_id = await lowlevel.create_subscription(client, requests.subscription(ep), ignore)
    try:
        wanted = []
        for item, node in items:
            req = requests.item_request(item, ua.NodeId.from_string(node))
            req.MonitoringMode = ua.MonitoringMode.Disabled
            wanted.append(req)
        for part in chunks(wanted, chunk):
            params = ua.CreateMonitoredItemsParameters(
                SubscriptionId=sub_id, TimestampsToReturn=ua.TimestampsToReturn.Neither, ItemsToCreate=list(part)
            )
            for req, res in zip(part, await lowlevel.create_monitored_items(client, params), strict=True):
                good = res.StatusCode is None or res.StatusCode.is_good()
                out[req.RequestedParameters.ClientHandle] = Sampling(
                    "Good" if good else res.StatusCode.name, float(res.RevisedSamplingInterval) if good else None
                )
    finally:
        with contextlib.suppress(ua.UaError, TimeoutError, ConnectionError):
            await client.uaclient.delete_subscriptions([sub_id])
    return out
