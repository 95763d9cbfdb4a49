"""Walk a server's address space and describe every variable found: for writing a mapping.

`walk()` goes breadth-first from a root node (the Objects folder by default) along hierarchical
references (Organizes, HasComponent, HasProperty, ...; not HasNotifier/HasEventSource, which only
say where events come from), and returns plain dataclasses: no YAML, no AAS, no config.

Everything goes in batches, as the agent's collection does (shared/reference/testbed.md: node by
node is 5-10x slower): one Browse call for many nodes (continuation points followed with
BrowseNext), one Read call for many (node, attribute) pairs, both split by the server's operation
limits (MaxNodesPerBrowse, MaxNodesPerRead; 1,000 where it states none). The walk stops at
`max_nodes` nodes or after `max_seconds`, and says so; what was found until then is returned.

- Standard nodes (namespace 0) below the root are not walked: the Server object with its
  diagnostics and capabilities is not machine data. Give it as the root to walk it.
- A property of a variable (HasProperty: EngineeringUnits, EURange, ...) describes the variable and
  is not returned as a variable of its own; its EngineeringUnits give the variable's unit.
- A node reached along two paths is taken once, by its shortest path.

Browse, BrowseNext and TranslateBrowsePathsToNodeIds go through `client.uaclient` (asyncua's
session object), as lowlevel.py's calls do: asyncua's public API has them only node by node.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from asyncua import Client, ua

from adapters.opcua import lowlevel
from adapters.opcua.requests import DEFAULT_CHUNK, chunks
from adapters.opcua.values import declared_type

# AccessLevel / UserAccessLevel bits (OPC 10000-3, 5.6.2)
READ, WRITE, HISTORY_READ = 0x01, 0x02, 0x04
SUBSCRIBE_TO_EVENTS = 0x01  # EventNotifier bit

OBJECTS = ua.NodeId(ua.Int32(ua.ObjectIds.ObjectsFolder))
ROOT = ua.NodeId(ua.Int32(ua.ObjectIds.RootFolder))
_HIERARCHICAL = ua.NodeId(ua.Int32(ua.ObjectIds.HierarchicalReferences))
_NOT_CONTAINMENT = frozenset({ua.ObjectIds.HasEventSource, ua.ObjectIds.HasNotifier})
_HAS_PROPERTY = ua.ObjectIds.HasProperty
_TOO_MANY = frozenset({ua.StatusCodes.BadNoContinuationPoints, ua.StatusCodes.BadTooManyOperations})
_OBJECT_OR_VARIABLE = int(ua.NodeClass.Object) | int(ua.NodeClass.Variable)
_LIMITS = {
    "read": ua.NodeId(ua.Int32(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)),
    "browse": ua.NodeId(ua.Int32(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse)),
    "translate": ua.NodeId(
        ua.Int32(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds)
    ),
    "monitored": ua.NodeId(ua.Int32(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall)),
}
_VARIABLE_ATTRIBUTES = (
    ua.AttributeIds.DataType,
    ua.AttributeIds.ValueRank,
    ua.AttributeIds.AccessLevel,
    ua.AttributeIds.UserAccessLevel,
    ua.AttributeIds.Description,
    ua.AttributeIds.MinimumSamplingInterval,
)
# What a DataType that is no built-in type is called, for the messages (Structure, BaseDataType, ...).
_ABSTRACT = {
    "Variant": "BaseDataType (any type)",
    "ExtensionObject": "Structure",
    "DataValue": "DataValue",
    "DiagnosticInfo": "DiagnosticInfo",
}

Progress = Callable[[int, int, float], None]
"""(nodes seen, variables found, seconds since the walk began)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Nodes per service call, from the server's OperationLimits (or the default where it states none)."""

    read: int = DEFAULT_CHUNK
    browse: int = DEFAULT_CHUNK
    translate: int = DEFAULT_CHUNK
    monitored: int = DEFAULT_CHUNK


@dataclass(frozen=True, slots=True)
class Variable:
    """One Variable node and what a mapping needs to know of it."""

    node_id: str  # "ns=2;s=CNC01.SpindleSpeed"
    path: tuple[str, ...]  # qualified browse names below the walk's root: ("2:CNC01", "2:SpindleSpeed")
    data_type: str | None  # the built-in type its values travel as ("Double"); None: no built-in type
    data_type_id: str  # the DataType attribute ("i=11")
    data_type_name: str  # for people: "Double", "Structure", "ServerStatusDataType", ...
    value_rank: int  # -1 scalar, 1 one-dimensional array, ... (OPC 10000-3, 5.6.2)
    unit: str | None  # EngineeringUnits.DisplayName, when the variable has them
    access_level: int
    user_access_level: int
    description: str
    minimum_sampling_ms: float | None  # None: not stated; 0: continuous; -1: indeterminate

    @property
    def names(self) -> tuple[str, ...]:
        """The browse names without their namespace index."""
        return tuple(q.split(":", 1)[1] if ":" in q else q for q in self.path)

    @property
    def readable(self) -> bool:
        return bool(self.access_level & self.user_access_level & READ)

    @property
    def writable(self) -> bool:
        return bool(self.access_level & self.user_access_level & WRITE)

    @property
    def historizing(self) -> bool:
        return bool(self.access_level & HISTORY_READ)


@dataclass(frozen=True, slots=True)
class ObjectNode:
    """An Object directly below the walk's root (a machine, usually)."""

    node_id: str
    path: tuple[str, ...]  # (qualified browse name,)
    description: str
    event_notifier: int  # SUBSCRIBE_TO_EVENTS set: its events can be subscribed to

    @property
    def name(self) -> str:
        return self.path[-1].split(":", 1)[-1]


@dataclass
class BrowseResult:
    endpoint: str
    root_id: str
    root_path: tuple[str, ...] | None  # qualified browse names from the Root folder to the root; None: no path
    top_objects: list[ObjectNode] = field(default_factory=list)
    variables: list[Variable] = field(default_factory=list)
    nodes_seen: int = 0
    elapsed_s: float = 0.0
    stopped: str | None = None  # why the walk ended before it had seen everything
    not_walked: int = 0  # nodes found but not browsed when it stopped
    errors: list[str] = field(default_factory=list)  # nodes the server would not browse, and why

    def browse_path(self, v: Variable) -> str | None:
        """The variable's `browse_path` as the config writes it ("0:Objects/2:CNC01/2:Speed"), if it has one."""
        if self.root_path is None:
            return None
        parts = (*self.root_path, *v.path)
        if any("/" in p or not p.split(":", 1)[0].isdigit() for p in parts):
            return None  # a name the config's browse_path cannot express
        return "/".join(parts)


@dataclass(slots=True)
class _Found:
    node: ua.NodeId
    path: tuple[str, ...]
    node_class: ua.NodeClass
    unit_node: ua.NodeId | None = None


async def limits(client: Client, cap: int | None = None) -> Limits:
    """The server's operation limits, in one Read; `cap` (a config's max_items_per_call) bounds them all."""
    names = list(_LIMITS)
    try:
        values = await lowlevel.read_attributes(client, [_LIMITS[n] for n in names], ua.AttributeIds.Value)
    except (ua.UaError, TimeoutError):
        values = []
    found: dict[str, int] = {}
    for name, dv in zip(names, values, strict=False):
        v = dv.Value.Value if dv.Value is not None and (dv.StatusCode is None or dv.StatusCode.is_good()) else None
        sizes = [s for s in (cap, int(v) if isinstance(v, int) else 0) if s]
        found[name] = min(sizes) if sizes else DEFAULT_CHUNK
    return Limits(**found)


async def read_many(
    client: Client, pairs: Sequence[tuple[ua.NodeId, ua.AttributeIds]], chunk: int
) -> list[ua.DataValue]:
    """One DataValue per (node, attribute), in Read calls of at most `chunk` operations each."""
    out: list[ua.DataValue] = []
    for part in chunks(pairs, chunk):
        params = ua.ReadParameters(
            TimestampsToReturn=ua.TimestampsToReturn.Neither,
            NodesToRead=[ua.ReadValueId(NodeId=n, AttributeId=a) for n, a in part],
        )
        out += await lowlevel.read(client, params)
    return out


def value_of(dv: ua.DataValue) -> object:
    """The value of a DataValue, None when the server gave a bad status or no value."""
    if dv.StatusCode is not None and not dv.StatusCode.is_good():
        return None
    return dv.Value.Value if dv.Value is not None else None


def text_of(v: object) -> str:
    if isinstance(v, ua.LocalizedText):
        return v.Text or ""
    return "" if v is None else str(v)


def local_node(e: ua.ExpandedNodeId | ua.NodeId) -> ua.NodeId | None:
    """The NodeId of a reference's target on this server, None for one on another server."""
    if getattr(e, "ServerIndex", 0) or getattr(e, "NamespaceUri", None):
        return None
    return ua.NodeId(e.Identifier, e.NamespaceIndex, e.NodeIdType)


def _description(node: ua.NodeId, direction: ua.BrowseDirection, mask: int) -> ua.BrowseDescription:
    return ua.BrowseDescription(
        NodeId=node,
        BrowseDirection=direction,
        ReferenceTypeId=_HIERARCHICAL,
        IncludeSubtypes=True,
        NodeClassMask=mask,
        ResultMask=int(ua.BrowseResultMask.All),
    )


async def browse_many(
    client: Client,
    nodes: Sequence[ua.NodeId],
    *,
    direction: ua.BrowseDirection = ua.BrowseDirection.Forward,
    mask: int = _OBJECT_OR_VARIABLE,
) -> list[tuple[ua.StatusCode, list[ua.ReferenceDescription]]]:
    """One Browse call for `nodes` (the caller keeps them within MaxNodesPerBrowse), continuation
    points followed: per node, the status and every hierarchical reference."""
    params = ua.BrowseParameters(
        View=ua.ViewDescription(),
        RequestedMaxReferencesPerNode=0,
        NodesToBrowse=[_description(n, direction, mask) for n in nodes],
    )
    results: list[ua.BrowseResult] = await client.uaclient.browse(params)
    out = [(r.StatusCode, list(r.References or [])) for r in results]
    pending = {i: r.ContinuationPoint for i, r in enumerate(results) if r.ContinuationPoint}
    while pending:
        order = list(pending)
        nxt = ua.BrowseNextParameters(ReleaseContinuationPoints=False, ContinuationPoints=[pending[i] for i in order])
        more: list[ua.BrowseResult] = await client.uaclient.browse_next(nxt)
        pending = {}
        for i, r in zip(order, more, strict=True):
            _, refs = out[i]
            if r.StatusCode is not None and not r.StatusCode.is_good():
                out[i] = (r.StatusCode, refs)
                continue
            refs.extend(r.References or [])
            if r.ContinuationPoint:
                pending[i] = r.ContinuationPoint
    return out


async def path_from_root(client: Client, node: ua.NodeId, max_depth: int = 32) -> tuple[str, ...] | None:
    """Qualified browse names from the Root folder down to `node` (Root itself not included), by
    following inverse hierarchical references; None when no such path is found."""
    if node == ROOT:
        return ()
    names: list[str] = []
    current = node
    for _ in range(max_depth):
        [(status, refs)] = await browse_many(client, [current], direction=ua.BrowseDirection.Inverse, mask=0)
        if not status.is_good():
            return None
        [dv] = await lowlevel.read_attributes(client, [current], ua.AttributeIds.BrowseName)
        name = value_of(dv)
        if not isinstance(name, ua.QualifiedName):
            return None
        names.append(name.to_string())
        parents = [
            p for r in refs if r.ReferenceTypeId.Identifier not in _NOT_CONTAINMENT and (p := local_node(r.NodeId))
        ]
        if not parents:
            return None
        current = parents[0]
        if current == ROOT:
            return tuple(reversed(names))
    return None


async def walk(
    client: Client,
    root: ua.NodeId = OBJECTS,
    *,
    endpoint: str = "",
    max_depth: int = 32,
    max_nodes: int = 20_000,
    max_seconds: float = 120.0,
    limits_: Limits | None = None,
    progress: Progress | None = None,
) -> BrowseResult:
    """Every Object and Variable below `root` (see the module docstring), `max_depth` levels deep."""
    started = time.monotonic()
    lim = limits_ or await limits(client)
    out = BrowseResult(endpoint=endpoint, root_id=root.to_string(), root_path=await path_from_root(client, root))
    seen: set[ua.NodeId] = {root}
    found: list[_Found] = []
    queue: deque[_Found] = deque([_Found(root, (), ua.NodeClass.Object)])
    variables = 0
    skip_standard = root == OBJECTS or root.NamespaceIndex != 0
    size = lim.browse  # nodes per Browse call

    def report() -> None:
        if progress is not None:
            progress(len(seen) - 1, variables, time.monotonic() - started)

    while queue:
        if time.monotonic() - started > max_seconds:
            out.stopped = f"stopped at the time limit ({max_seconds:g} s)"
            break
        if len(seen) - 1 >= max_nodes:
            out.stopped = f"stopped at the node limit ({max_nodes:,} nodes)"
            break
        batch = [queue.popleft() for _ in range(min(size, len(queue)))]
        try:
            results = await browse_many(client, [b.node for b in batch])
        except ua.UaStatusCodeError as e:
            if e.code not in _TOO_MANY or size == 1:
                raise
            size = max(1, size // 2)  # the server's limits are lower than it says: smaller calls
            queue.extendleft(reversed(batch))
            continue
        refused = 0
        for parent, (status, refs) in zip(batch, results, strict=True):
            if status.value in _TOO_MANY and len(batch) > 1:
                # Out of continuation points (PLCs have few): browse it again, in smaller calls.
                refused += 1
                queue.append(parent)
                continue
            if not status.is_good():
                out.errors.append(f"{parent.node.to_string()}: cannot be browsed ({status.name})")
                continue
            for ref in refs:
                if ref.ReferenceTypeId.Identifier in _NOT_CONTAINMENT and ref.ReferenceTypeId.NamespaceIndex == 0:
                    continue
                child = local_node(ref.NodeId)
                if child is None or child in seen:
                    continue
                if child.NamespaceIndex == 0 and skip_standard:
                    continue  # standard nodes: the Server object, its diagnostics, ...
                is_property_of_variable = (
                    parent.node_class == ua.NodeClass.Variable
                    and ref.ReferenceTypeId.Identifier == _HAS_PROPERTY
                    and ref.ReferenceTypeId.NamespaceIndex == 0
                )
                if is_property_of_variable:
                    seen.add(child)
                    if ref.BrowseName.Name == "EngineeringUnits":
                        parent.unit_node = child
                    continue
                if len(seen) - 1 >= max_nodes:
                    break
                seen.add(child)
                item = _Found(child, (*parent.path, ref.BrowseName.to_string()), ref.NodeClass)
                found.append(item)
                if ref.NodeClass == ua.NodeClass.Variable:
                    variables += 1
                if len(item.path) < max_depth:
                    queue.append(item)
        if refused:
            size = max(1, len(batch) // 2)
        report()
    out.not_walked = len(queue)
    out.nodes_seen = len(seen) - 1
    await _describe(client, out, found, lim)
    out.elapsed_s = time.monotonic() - started
    report()
    return out


async def _describe(client: Client, out: BrowseResult, found: list[_Found], lim: Limits) -> None:
    """Read what the mapping needs of every variable (and of the objects right below the root)."""
    variables = [f for f in found if f.node_class == ua.NodeClass.Variable]
    tops = [f for f in found if f.node_class == ua.NodeClass.Object and len(f.path) == 1]
    pairs = [(v.node, a) for v in variables for a in _VARIABLE_ATTRIBUTES]
    units = [v for v in variables if v.unit_node is not None]
    pairs += [(v.unit_node, ua.AttributeIds.Value) for v in units if v.unit_node is not None]
    pairs += [(t.node, a) for t in tops for a in (ua.AttributeIds.Description, ua.AttributeIds.EventNotifier)]
    values = [value_of(dv) for dv in await read_many(client, pairs, lim.read)]
    n = len(_VARIABLE_ATTRIBUTES)
    attrs = {v.node: values[i * n : (i + 1) * n] for i, v in enumerate(variables)}
    at = len(variables) * n
    unit_of: dict[ua.NodeId, str | None] = {}
    for v, value in zip(units, values[at : at + len(units)], strict=True):
        unit_of[v.node] = (text_of(value.DisplayName) or None) if isinstance(value, ua.EUInformation) else None
    at += len(units)
    for i, t in enumerate(tops):
        description, notifier = values[at + 2 * i], values[at + 2 * i + 1]
        out.top_objects.append(
            ObjectNode(t.node.to_string(), t.path, text_of(description), notifier if isinstance(notifier, int) else 0)
        )
    names = await type_names(client, [a[0] for a in attrs.values()], lim)
    for v in variables:
        data_type, rank, access, user_access, description, minimum = attrs[v.node]
        type_id = data_type if isinstance(data_type, ua.NodeId) else None
        builtin = declared_type(type_id) if type_id is not None else None
        out.variables.append(
            Variable(
                node_id=v.node.to_string(),
                path=v.path,
                data_type=builtin,
                data_type_id=type_id.to_string() if type_id is not None else "",
                data_type_name=names.get(type_id, "") if type_id is not None else "(not given)",
                value_rank=rank if isinstance(rank, int) else -1,
                unit=unit_of.get(v.node),
                access_level=access if isinstance(access, int) else 0,
                # A server that does not give UserAccessLevel: AccessLevel applies to everyone.
                user_access_level=user_access if isinstance(user_access, int) else 0xFF,
                description=text_of(description),
                minimum_sampling_ms=float(minimum) if isinstance(minimum, int | float) else None,
            )
        )


async def type_names(client: Client, types: Sequence[object], lim: Limits) -> dict[ua.NodeId, str]:
    """A name for each DataType: the built-in type's, or the DataType node's browse name (one Read)."""
    out: dict[ua.NodeId, str] = {}
    unknown: list[ua.NodeId] = []
    for t in types:
        if not isinstance(t, ua.NodeId) or t in out:
            continue
        builtin = declared_type(t)
        if builtin is not None:
            out[t] = _ABSTRACT.get(builtin, builtin)
        else:
            out[t] = t.to_string()
            unknown.append(t)
    if unknown:
        dvs = await read_many(client, [(t, ua.AttributeIds.BrowseName) for t in unknown], lim.read)
        for t, dv in zip(unknown, dvs, strict=True):
            name = value_of(dv)
            if isinstance(name, ua.QualifiedName) and name.Name:
                out[t] = name.Name
    return out
