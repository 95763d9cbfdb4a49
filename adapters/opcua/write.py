"""One OPC UA write: connect as the collector does, read the old value, write, read it back, close.

The connection is made by `security.connect`, exactly as source.py makes the collector's: the same
policy and mode, the same trust list, the same user identity. The value goes as a `ua.Variant` of
the configured built-in type, in a DataValue without timestamps (many PLCs refuse a write that
carries them, BadWriteNotSupported). What the server answers is the result:
- a refusal of the write (BadNotWritable, BadUserAccessDenied, BadTypeMismatch, BadOutOfRange, ...)
  is a failed `WriteResult` with the status name, not an exception;
- a server that cannot be reached, or is refused by the security checks, or a connection lost
  before the write was sent, raises `Unreachable` with a message for the person: nothing was
  written;
- a value that is not of the type raises ValueError, before anything is connected;
- a connection lost after the write was sent is a failed result with status `Uncertain`: the
  server may or may not have taken the value, and the read-back says nothing.

The caller decides whether a write is allowed; this module only carries it out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from asyncua import Client, Node, ua
from asyncua.ua import ua_binary

from adapters.opcua import security
from adapters.opcua.pki import OwnCertificate, Pki
from adapters.opcua.spec import Endpoint
from adapters.opcua.values import expected, plain

log = logging.getLogger(__name__)

UNCERTAIN = "Uncertain"


class Unreachable(ConnectionError):
    """No session with the server: nothing was written."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    node: str
    ok: bool  # the server accepted the write (status Good)
    status: str  # the Write's status code name ("Good", "BadNotWritable", ...), or UNCERTAIN
    old: Any  # the value before the write (plain Python; None when it could not be read)
    new: Any  # the value written
    read_back: Any  # the value read after the write (None when it could not be read)
    connect_s: float  # to open the session
    write_s: float  # the Write service call
    total_s: float  # everything, the close included
    detail: str = ""  # why a read failed, or how the connection was lost


def variant(value: object, opcua_type: str) -> ua.Variant:
    """`value` as a Variant of the built-in type named `opcua_type` (asyncua's VariantType names)."""
    try:
        vtype = ua.VariantType[expected(opcua_type)]
    except KeyError:
        raise ValueError(f"unknown OPC UA built-in type {opcua_type!r}") from None
    v = ua.Variant(value, vtype)
    try:
        ua_binary.variant_to_binary(v)
    except (ua.UaError, TypeError, ValueError) as e:
        raise ValueError(f"{value!r} cannot be sent as {opcua_type}: {e}") from None
    return v


async def write_value(
    endpoint: Endpoint,
    node: str,
    opcua_type: str,
    value: object,
    *,
    pki: Pki | None,
    own_certificate: OwnCertificate | None,
) -> WriteResult:
    """Write `value` to `node` on `endpoint`; see the module docstring for what comes back."""
    written = variant(value, opcua_type)
    node_id = ua.NodeId.from_string(node)
    started = time.monotonic()
    client = security.new_client(endpoint)
    try:
        await security.connect(client, endpoint, pki, own_certificate)
    except security.SecurityRefused as e:
        await _close(client, endpoint)
        raise Unreachable(f"{endpoint.id}: refused to connect to {endpoint.url}: {e}") from None
    except Exception as e:  # any network or server fault before a session exists
        await _close(client, endpoint)
        reason = f"{type(e).__name__}: {e}".rstrip(": ")
        raise Unreachable(f"{endpoint.id}: cannot connect to {endpoint.url}: {reason}; nothing was written") from None
    connected = time.monotonic()
    target = client.get_node(node_id)
    details: list[str] = []
    old: Any = None
    read_back: Any = None
    status = UNCERTAIN
    ok = False
    write_s = 0.0
    phase = "before"  # then "sent", then "answered"
    try:
        old = await _read(target, "before", details)
        params = ua.WriteParameters(
            NodesToWrite=[ua.WriteValue(NodeId=node_id, AttributeId=ua.AttributeIds.Value, Value=ua.DataValue(written))]
        )
        before_write, phase = time.monotonic(), "sent"
        [code] = await target.write_params(params)
        write_s, phase = time.monotonic() - before_write, "answered"
        status, ok = code.name, code.is_good()
        if ok:
            read_back = await _read(target, "after", details)
    except (ConnectionError, TimeoutError, ua.UaError) as e:
        why = f"{type(e).__name__} {e}".strip()
        if phase == "before":
            raise Unreachable(
                f"{endpoint.id}: the session with {endpoint.url} failed before the write: {why}; nothing was written"
            ) from None
        if phase == "answered":
            details.append(f"read after the write failed: {why}")
        elif isinstance(e, ua.UaStatusCodeError):  # a service fault: the server answered, and wrote nothing
            status = ua.StatusCode(e.code).name
        else:
            details.append(f"connection lost after the write was sent, the server may or may not have taken it: {why}")
    finally:
        await _close(client, endpoint)
    result = WriteResult(
        node=node,
        ok=ok,
        status=status,
        old=old,
        new=plain(written.Value),
        read_back=read_back,
        connect_s=connected - started,
        write_s=write_s,
        total_s=time.monotonic() - started,
        detail="; ".join(details),
    )
    log.info(
        "%s: write %s = %r (was %r, read back %r): %s", endpoint.id, node, result.new, old, read_back, result.status
    )
    return result


async def _read(target: Node, when: str, details: list[str]) -> Any:
    """The node's value, plain; None (and why, in `details`) when the server does not give it."""
    dv = await target.read_data_value(raise_on_bad_status=False)
    if dv.StatusCode is not None and not dv.StatusCode.is_good():
        details.append(f"read {when} the write: {dv.StatusCode.name}")
        return None
    return plain(dv.Value.Value) if dv.Value is not None else None


async def _close(client: Client, endpoint: Endpoint) -> None:
    try:
        await asyncio.wait_for(client.disconnect(), 2.0)
    except Exception:  # the session is over either way; a cancellation is not swallowed
        log.debug("disconnect from %s failed", endpoint.url, exc_info=True)
