"""The OPC UA service requests the source sends, built from the agent's items: pure functions."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from asyncua import ua

from adapters.opcua.spec import Endpoint, EventItem, NodeItem

# Operation limits (Part 5, ServerCapabilities.OperationLimits); 0 means "no limit".
LIMIT_NODES = {
    "read": ua.NodeId(ua.Int32(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)),
    "monitored": ua.NodeId(ua.Int32(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall)),
    "browse": ua.NodeId(ua.Int32(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse)),
    "translate": ua.NodeId(
        ua.Int32(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds)
    ),
}
# Even a server that states no limit gets requests of bounded size: huge requests are what
# break collectors above ~1,000 nodes (message size and encoding limits).
DEFAULT_CHUNK = 1000
KEEPALIVE_COUNT = 10
_MIN_LIFETIME_MS = 60_000
_TRIGGERS = {
    "status": ua.DataChangeTrigger.Status,
    "status_value": ua.DataChangeTrigger.StatusValue,
    "status_value_timestamp": ua.DataChangeTrigger.StatusValueTimestamp,
}
_DEADBANDS = {"absolute": ua.DeadbandType.Absolute, "percent": ua.DeadbandType.Percent}


def chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def subscription(ep: Endpoint) -> ua.CreateSubscriptionParameters:
    # The server deletes a subscription that gets no Publish request for a lifetime, and asyncua sends
    # the next one only after our callback returned: a callback that waits for a full disk (up to the
    # pipeline's store timeout) must not outlive it. At least a minute, whatever the interval.
    lifetime = max(KEEPALIVE_COUNT * 3, math.ceil(_MIN_LIFETIME_MS / ep.publishing_interval_ms))
    return ua.CreateSubscriptionParameters(
        RequestedPublishingInterval=ep.publishing_interval_ms,
        RequestedLifetimeCount=lifetime,
        RequestedMaxKeepAliveCount=KEEPALIVE_COUNT,
        # Bounded publishes keep each callback short (10,000 values take ~0.15 s), so the forwarder and keep-alive
        # check get the event loop between them even while a backlog is being caught up.
        MaxNotificationsPerPublish=ep.max_notifications_per_publish,
        PublishingEnabled=True,
        Priority=0,
    )


def item_request(item: NodeItem, node: ua.NodeId) -> ua.MonitoredItemCreateRequest:
    filt: ua.DataChangeFilter | None = None
    if item.deadband is not None or item.trigger != "status_value":
        filt = ua.DataChangeFilter(Trigger=_TRIGGERS[item.trigger])
        if item.deadband is not None:
            filt.DeadbandType = _DEADBANDS[item.deadband[0]]
            filt.DeadbandValue = float(item.deadband[1])
    params = ua.MonitoringParameters(
        ClientHandle=item.handle,
        SamplingInterval=item.sampling_ms if item.sampling_ms is not None else -1.0,
        Filter=filt,
        QueueSize=item.queue_size,
        DiscardOldest=True,
    )
    return ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=node, AttributeId=ua.AttributeIds.Value),
        MonitoringMode=ua.MonitoringMode.Reporting,
        RequestedParameters=params,
    )


def event_request(ev: EventItem) -> ua.MonitoredItemCreateRequest:
    filt = ua.EventFilter()
    for name in ev.fields:
        ns, _, local = name.rpartition(":")
        op = ua.SimpleAttributeOperand(
            TypeDefinitionId=ua.NodeId(ua.Int32(ua.ObjectIds.BaseEventType)),
            BrowsePath=[ua.QualifiedName(local, int(ns) if ns else 0)],
            AttributeId=ua.AttributeIds.Value,
        )
        filt.SelectClauses.append(op)
    params = ua.MonitoringParameters(ClientHandle=ev.handle, SamplingInterval=0.0, Filter=filt, QueueSize=1000)
    return ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=ua.NodeId.from_string(ev.node), AttributeId=ua.AttributeIds.EventNotifier),
        MonitoringMode=ua.MonitoringMode.Reporting,
        RequestedParameters=params,
    )


def read_values(nodes: Sequence[ua.NodeId]) -> ua.ReadParameters:
    return ua.ReadParameters(
        TimestampsToReturn=ua.TimestampsToReturn.Both,
        NodesToRead=[ua.ReadValueId(NodeId=n, AttributeId=ua.AttributeIds.Value) for n in nodes],
    )
