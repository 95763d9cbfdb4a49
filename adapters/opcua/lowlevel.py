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

It also guards asyncua's decoder against an array of Null values longer than the message (`_guard_null_arrays`):
asyncua would make every one of them.

And it is the hook for the agent's own publish loop (publish.py): `create_bare_subscription` creates a
subscription asyncua does not know of, so asyncua's one-request publish loop (started only for
subscriptions registered through its `create_subscription`) never runs, and `publish` sends one
PublishRequest and returns the response's bytes undecoded (fastdecode.py reads them). Both go through
`UaSession._send_request`, the method asyncua's own `publish` uses: already decrypted and checked for a
ServiceFault. `own_publish_loop` checks that this asyncua still has it as used here; if not, the source
keeps asyncua's own loop and says so once at WARNING. asyncua logs every ServiceFault at WARNING; the
faults that answer PublishRequests in the ordinary course (each outstanding one gets BadSessionClosed when
the session closes, BadTimeout, BadTooManyPublishRequests, BadNoSubscription) are left to publish.py,
which handles and logs them itself, so a filter drops asyncua's record of those.
"""

from __future__ import annotations

import inspect
import logging
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from asyncua import Client, ua
from asyncua.client.ua_session import UaSession
from asyncua.common.utils import Buffer
from asyncua.ua import ua_binary
from asyncua.ua.ua_binary import struct_from_binary

log = logging.getLogger(__name__)

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


# -- the agent's own publish loop ----------------------------------------------------------------


def _own_loop_missing() -> str | None:
    """Why this asyncua cannot serve the agent's own publish loop; None when it can."""
    send = getattr(UaSession, "_send_request", None)
    if send is None or not inspect.iscoroutinefunction(send):
        return "asyncua's UaSession._send_request is gone"
    names = list(inspect.signature(send).parameters)
    if names[:3] != ["self", "request", "timeout"]:
        return f"asyncua's UaSession._send_request takes ({', '.join(names)}), not (self, request, timeout, ...)"
    if not hasattr(ua.PublishParameters(), "SubscriptionAcknowledgements"):
        return "asyncua's PublishRequest has no SubscriptionAcknowledgements"
    return None


_MISSING = _own_loop_missing()
_warned = False


def own_publish_loop(client: Client) -> bool:
    """True when the agent's own publish loop can run on `client`; else False, logged once at WARNING."""
    global _warned
    missing = _MISSING
    if missing is None and not isinstance(getattr(client.uaclient, "session", None), UaSession):
        missing = "asyncua's client has no UaSession at uaclient.session"
    if missing is not None and not _warned:
        _warned = True
        log.warning(
            "%s (asyncua upgraded?): using asyncua's own publish loop, one request at a time and its slower decoder",
            missing,
        )
    return missing is None


async def create_bare_subscription(client: Client, params: ua.CreateSubscriptionParameters) -> int:
    """A subscription asyncua does not know of (its own publish loop stays off); returns its id."""
    request = ua.CreateSubscriptionRequest()
    request.Parameters = params
    data = await client.uaclient.session._send_request(request)
    response = struct_from_binary(ua.CreateSubscriptionResponse, data)
    response.ResponseHeader.ServiceResult.check()
    sub_id: int = response.Parameters.SubscriptionId
    return sub_id


async def publish(client: Client, acks: Sequence[ua.SubscriptionAcknowledgement]) -> bytes:
    """One PublishRequest carrying `acks`; the PublishResponse's body, undecoded. A ServiceFault raises its
    UaStatusCodeError, a lost connection ConnectionError (as for asyncua's own publish)."""
    request = ua.PublishRequest()
    request.Parameters.SubscriptionAcknowledgements = list(acks)
    # Timeout 0, as asyncua's own publish: the server holds the request until it has something to send.
    data = await client.uaclient.session._send_request(request, timeout=0)
    body: bytes = data.read(len(data))
    return body


# Answers to a PublishRequest that publish.py handles and logs itself.
_PUBLISH_FAULTS = frozenset({"BadSessionClosed", "BadTimeout", "BadTooManyPublishRequests", "BadNoSubscription"})


class _PublishFaults(logging.Filter):
    """Drops asyncua's WARNING "ServiceFault (<name>, diagnostics: ...) from server received in response to
    PublishRequest" for the names above."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (
            isinstance(record.msg, str)
            and record.msg.startswith("ServiceFault")
            and isinstance(args, tuple)
            and len(args) == 3
            and args[0] in _PUBLISH_FAULTS
            and str(args[2]).endswith("PublishRequest")
        )


def _quiet_publish_faults() -> None:
    logger = logging.getLogger("asyncua.client.ua_client.UASocketProtocol")
    if not any(isinstance(f, _PublishFaults) for f in logger.filters):
        logger.addFilter(_PublishFaults())


_quiet_publish_faults()


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


# -- a guard in asyncua's decoder ----------------------------------------------------------------


def _guard_null_arrays() -> None:
    """asyncua decodes an array of Null (Variant encoding byte 0x80) by making as many Nones as the array's
    length says, reading nothing for each: a damaged or hostile message saying 2**31 - 1 takes some 17 GB and
    the process with it. Every other element takes at least one byte, so only a Null array can say more
    elements than the message has bytes left; such a message is refused here with a UaError (the publish
    loop skips a response it cannot parse and says so). tests/test_lowlevel.py checks it is on the path."""
    original: Callable[[ua.VariantType, Any], Any] = ua_binary.unpack_uatype_array
    if getattr(original, "_edge_agent_guard", False):
        return

    def unpack_uatype_array(vtype: ua.VariantType, data: Any) -> Any:
        if vtype is ua.VariantType.Null and isinstance(data, Buffer) and len(data) >= 4:
            (length,) = _INT32.unpack_from(data._data, data._cur_pos)
            if length > len(data) - 4:
                raise ua.UaError(f"an array of {length} Null values with {len(data) - 4} bytes left in the message")
        return original(vtype, data)

    unpack_uatype_array._edge_agent_guard = True  # type: ignore[attr-defined]
    ua_binary.unpack_uatype_array = unpack_uatype_array


_INT32 = struct.Struct("<i")
_guard_null_arrays()
