"""The OPC UA side of the factory simulator (asyncua server).

Every signal of the catalogue is read-only for clients (a client's write is refused,
BadUserAccessDenied). Each machine also has a `Control` folder of client-writable set-points,
which are not signals: not in `catalogue()`, not recorded, not written by the update rounds.

    ns=2;s=<MACHINE>.Control.FeedOverride    Double, percent, default 100.0: scales a CNC's cutting feed
    ns=2;s=<MACHINE>.Control.ProgramSelect   String, default "": the program a CNC loads at its next job
                                             change ("" = its own choice)

The update loop reads them at the start of every round into the machine model (machines.py); the
other machine kinds hold them without using them. A restarted server starts them from the model,
as a PLC keeps its set-points.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from copy import copy as shallow
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from asyncua import Node, Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.address_space import AddressSpace, AttributeValue, NodeData, NodeManagementService
from asyncua.server.event_generator import EventGenerator
from asyncua.server.internal_server import InternalServer
from asyncua.server.standard_address_space import standard_address_space
from asyncua.server.user_managers import UserManager
from cryptography.x509.oid import ExtendedKeyUsageOID

from simulators.factory.catalogue import (
    DIAGNOSTICS_FOLDER,
    DIAGNOSTICS_MACHINE_INDEX,
    EVENT_TYPE_NAME,
    KIND_DESCRIPTIONS,
    NAMESPACE_INDEX,
    NAMESPACE_URI,
    SignalInfo,
)
from simulators.factory.machines import Machine, MachineEvent
from simulators.factory.plant import Plant, Round
from simulators.factory.record import ValueRecorder

log = logging.getLogger(__name__)

APPLICATION_URI = "urn:edge-agent:simulators:factory:server"
UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"
# Catalogue unit -> (UN/CEFACT common code, name), for the standard EngineeringUnits property.
UNECE_UNITS: dict[str, tuple[str, str]] = {
    "rpm": ("RPM", "revolutions per minute"),
    "%": ("P1", "percent"),
    "mm/min": ("H81", "millimetre per minute"),
    "°C": ("CEL", "degree Celsius"),
    "mm": ("MMT", "millimetre"),
    "mm/s": ("C16", "millimetre per second"),
    "bar": ("BAR", "bar"),
    "kN": ("B47", "kilonewton"),
    "s": ("SEC", "second"),
    "kW": ("KWT", "kilowatt"),
    "kWh": ("KWH", "kilowatt hour"),
    "A": ("AMP", "ampere"),
    "1/min": ("C94", "reciprocal minute"),
}
_UNSET = object()
CONTROL_FOLDER = "Control"
# The writable set-points of every machine: name -> (built-in type, the machine model's attribute).
CONTROLS: dict[str, tuple[str, str]] = {
    "FeedOverride": ("Double", "feed_override"),
    "ProgramSelect": ("String", "program_select"),
}


def unece_unit_id(code: str) -> int:
    """EUInformation.UnitId of a UN/CEFACT common code (OPC 10000-8, 5.6.3)."""
    unit_id = 0
    for char in code[:4]:
        unit_id = (unit_id << 8) | ord(char)
    return unit_id


def utcnow() -> datetime:
    return datetime.now(UTC)


async def server_certificate(directory: Path, host: str) -> tuple[Path, Path]:
    """The simulator's certificate in `directory` (cert.der, key.pem), made on first use."""
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    cert, key = directory / "cert.der", directory / "key.pem"
    await setup_self_signed_certificate(
        key,
        cert,
        APPLICATION_URI,
        host,
        [ExtendedKeyUsageOID.SERVER_AUTH],
        {"organizationName": "edge-agent simulators"},
    )
    return cert, key


_standard_lock = threading.Lock()
_standard: dict[ua.NodeId, NodeData] | None = None


def _standard_nodes() -> dict[ua.NodeId, NodeData]:
    """A copy of OPC UA's standard address space, the one asyncua's InternalServer.init builds. asyncua
    builds it node by node from generated code (1.5 s of CPU); here it is built once per process and
    copied (a tenth of that), since tests start and restart simulators many times. Each copy has its
    own nodes, attributes and references (asyncua renames references in place); the attribute values,
    which asyncua replaces rather than changes, are shared with the pristine original."""
    global _standard
    with _standard_lock:
        if _standard is None:
            aspace = AddressSpace()
            standard_address_space.fill_address_space(NodeManagementService(aspace))  # type: ignore[no-untyped-call]
            for node in aspace._nodes.values():
                attributes = node.attributes.values()
                if node.call or any(a.value_callback or a.value_setter or a.datachange_callbacks for a in attributes):
                    raise RuntimeError(f"standard node {node.nodeid} has callbacks, which a copy would lose")
            _standard = aspace._nodes
        original = _standard
    nodes: dict[ua.NodeId, NodeData] = {}
    for node_id, node in original.items():
        twin = nodes[node_id] = NodeData(node_id)
        twin.attributes = {attribute: AttributeValue(value.value) for attribute, value in node.attributes.items()}
        twin.references = [shallow(r) for r in node.references]
    return nodes


class _InternalServer(InternalServer):
    """asyncua's, with the standard address space copied (see `_standard_nodes`) and a stop that does
    not wait for the next tick of the server's clock (up to a second: its loop sleeps 1 s between ticks),
    so a stop and a start take as long as a PLC's restart, not seconds."""

    async def load_standard_address_space(self, shelf_file: Path | None = None) -> None:
        self.aspace._nodes = await asyncio.to_thread(_standard_nodes)

    async def stop(self) -> None:
        task, self.time_task = self.time_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        await super().stop()


class _Users(UserManager):
    """Name and password must match one of `users`. A certificate (an X.509 user token's, or for an
    anonymous token the secure channel's) must be one of `certificates` (DER) when those are given;
    without them any certificate is taken (the secure channel already proved its key)."""

    def __init__(self, users: Mapping[str, str], certificates: Sequence[bytes] | None) -> None:
        self.users = users
        self.certificates = None if certificates is None else set(certificates)

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username is not None:  # a name and password: they must match, whatever certificate came along
            return User(role=UserRole.User) if self.users.get(username) == password else None
        if certificate is not None and (self.certificates is None or bytes(certificate) in self.certificates):
            return User(role=UserRole.User)
        return None


class FactorySimulator:
    """asyncua server for a `Plant`, updated every `period` seconds.

    Each round writes, with explicit source and server timestamps (the same for the whole round),
    the values that changed since the last write, as a PLC gateway reports changes: Diagnostics
    change every round, a setting such as ProgramName only now and then. The recorder sees exactly
    those writes. Pass `plant` and `recorder` to keep counters and history across a stop/start.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4840,
        machines: int = 3,
        period: float = 0.5,
        seed: int = 1,
        alarm_every: int = 0,
        record: str | Path | None = None,
        *,
        plant: Plant | None = None,
        recorder: ValueRecorder | None = None,
        clock_offset: float = 0.0,
        security: Sequence[str] = ("NoSecurity",),
        certificate_dir: Path | None = None,
        users: Mapping[str, str] | None = None,
        user_certificates: Sequence[bytes] | None = None,
        numeric_ids: int | None = None,
    ) -> None:
        """`security`: asyncua SecurityPolicyType names the server offers ("NoSecurity",
        "Basic256Sha256_SignAndEncrypt", ...); a secured one needs `certificate_dir`, where the server's
        certificate is made once and kept (cert.der, key.pem). `users`: name -> password;
        `user_certificates`: the X.509 user certificates (DER) it accepts; with neither it takes anyone.
        `numeric_ids`: the signals get numeric node ids from this number up, in catalogue order, as a PLC
        numbers its tags (a restart with another number is a PLC program download that renumbered them;
        `address()` gives the id a signal has); None: the catalogue's string ids."""
        self.numeric_ids = numeric_ids
        if period <= 0:
            raise ValueError("period must be > 0")
        self.clock_offset = timedelta(seconds=clock_offset)  # the device's clock minus the true time
        self.security = tuple(security)
        self.certificate_dir = certificate_dir
        self.users = dict(users) if users is not None else None
        self.user_certificates = list(user_certificates) if user_certificates is not None else None
        self.host = host
        self.port = port
        self.period = period
        self.plant = plant if plant is not None else Plant(machines, seed, alarm_every)
        self.recorder = recorder if recorder is not None else ValueRecorder(path=record)
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._nodes: dict[str, ua.NodeId] = {}
        self._controls: dict[tuple[str, str], ua.NodeId] = {}  # (machine, control name) -> node
        self._last: dict[str, object] = {}
        self._generators: dict[str, EventGenerator] = {}
        self._removed: set[str] = set()  # catalogue ids of signals removed from the address space
        self._retyped: dict[str, str] = {}  # catalogue id -> the built-in type it is served as now

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Build the address space, write the first round and accept connections."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._nodes.clear()
        self._removed.clear()
        self._retyped.clear()
        self._controls.clear()
        self._last.clear()
        self._generators.clear()
        checked = self.users is not None or self.user_certificates is not None
        server = Server(_InternalServer(_Users(self.users or {}, self.user_certificates) if checked else None))
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("Edge agent factory simulator")
        server.set_security_policy([ua.SecurityPolicyType[name] for name in self.security])
        if any(name != "NoSecurity" for name in self.security):
            if self.certificate_dir is None:
                raise ValueError("a secured simulator needs a certificate_dir")
            cert, key = await server_certificate(self.certificate_dir, self.host)
            await server.load_certificate(str(cert))
            await server.load_private_key(str(key))
        await server.set_application_uri(APPLICATION_URI)
        index = await server.register_namespace(NAMESPACE_URI)
        if index != NAMESPACE_INDEX:
            raise RuntimeError(f"{NAMESPACE_URI} registered at index {index}, expected {NAMESPACE_INDEX}")
        event_type = await self._add_event_type(server)
        for machine in self.plant.machines:
            await self._add_machine(server, machine, event_type)
        # Stepped only now: building the address space takes a second or more, and the first
        # round's source time should be when it is published.
        now = self._now()
        events, values = self.plant.step(now)
        self._server = server
        self.recorder.open()
        try:
            await self._publish(now, values)
            await server.start()
        except BaseException:
            self._server = None
            self.recorder.close()
            raise
        self._task = asyncio.create_task(self._run(), name=f"factory-updates-{self.port}")
        try:
            await self._fire(events, now)
        except BaseException:
            await self.stop()
            raise

    async def serve(self, stop: asyncio.Event, timeout: float | None = None) -> None:
        """Serve until `stop` is set or `timeout` seconds pass; raises if the update loop failed."""
        task = self._task
        if task is None:
            raise RuntimeError("simulator not started")
        waiter = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({waiter, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if task in done:
            task.result()

    async def stop(self) -> None:
        """Stop updating and close the server and every client connection; idempotent."""
        task, self._task = self._task, None
        server, self._server = self._server, None
        try:
            if task is not None:
                task.cancel()
                await asyncio.wait({task})
                if not task.cancelled():
                    # Retrieve the failure so asyncio does not log it again; serve() already raised it.
                    task.exception()
        finally:
            if server is not None:
                await server.stop()
            self.recorder.close()

    async def invalidate_sessions(self) -> int:
        """Close every client session on the server's side, connections left open: each client's next
        request is answered BadSessionIdInvalid, as after a PLC's session purge. Returns how many."""
        server = self._server
        if server is None:
            return 0
        sessions = list(server.iserver._external_sessions.values())
        for session in sessions:
            await session.close_session(delete_subs=True)
            server.iserver.unregister_external_session(session)
        return len(sessions)

    def address(self, node_id: str) -> str:
        """The node id a catalogue signal ("ns=2;s=CNC01.State") is served under now."""
        return self._nodes[node_id].to_string()

    async def remove(self, node_id: str) -> None:
        """Delete a signal's node, as a PLC program download that drops a tag does. Subscribers of it get a
        BadNodeIdUnknown notification first, as OPC 10000-4 asks (asyncua's own delete means to send it but
        never does: its callback is a coroutine it does not await)."""
        server = self._server
        if server is None:
            raise RuntimeError("simulator not started")
        async with self._lock:
            await self._delete(server, node_id)

    async def move(self, node_id: str, new_id: int) -> None:
        """Give a signal's node another (numeric) node id, same place and browse name, while serving: a PLC
        online change that renumbers a tag. Subscribers of the old id get BadNodeIdUnknown, as at `remove`."""
        server = self._server
        if server is None:
            raise RuntimeError("simulator not started")
        signal = next(s for s in self.plant.signals if s.node_id == node_id)
        async with self._lock:
            node = server.get_node(self._nodes[node_id])
            parent, name = await node.get_parent(), (await node.read_browse_name()).Name
            await self._delete(server, node_id)
            self._removed.discard(node_id)
            await self._add_variable(server, parent, name, signal, ua.NodeId(new_id, NAMESPACE_INDEX))
            self._last.pop(node_id, None)

    async def _delete(self, server: Server, node_id: str) -> None:
        nid = self._nodes.pop(node_id)
        self._removed.add(node_id)
        aspace = server.iserver.aspace
        now = self._now()
        gone = ua.DataValue(
            StatusCode=ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown), SourceTimestamp=now, ServerTimestamp=now
        )
        await aspace.write_attribute_value(nid, ua.AttributeIds.Value, gone)
        callbacks = aspace._nodes[nid].attributes[ua.AttributeIds.Value].datachange_callbacks
        for handle in list(callbacks):
            aspace.delete_datachange_callback(handle)
        await server.delete_nodes([server.get_node(nid)])

    async def retype(self, node_id: str) -> None:
        """Serve a signal as a String from now on (its DataType changes, its values become their text), as
        a PLC program download that changes a tag's type does."""
        server = self._server
        if server is None:
            raise RuntimeError("simulator not started")
        async with self._lock:
            nid = self._nodes[node_id]
            string_type = ua.DataValue(ua.Variant(ua.NodeId(ua.ObjectIds.String), ua.VariantType.NodeId))
            await server.write_attribute_value(nid, string_type, ua.AttributeIds.DataType)
            # asyncua refuses a value of another variant type than the stored one; a stored None takes any.
            server.iserver.aspace._nodes[nid].attributes[ua.AttributeIds.Value].value = None
            self._retyped[node_id] = "String"
            self._last.pop(node_id, None)

    async def reset_alarm(self, machine_name: str) -> bool:
        """What the ResetAlarm method does; True if an alarm was active."""
        machine = self.plant.machine(machine_name)
        async with self._lock:
            event = machine.reset_alarm()
            if event is None:
                return False
            now = self._now()
            await self._publish(now, self.plant.machine_values(machine))
            await self._fire([event], now)
            return True

    async def read(self, node_id: str) -> object:
        """The current value of a node, as a client would read it (a signal, or a Control a client wrote)."""
        server = self._server
        if server is None:
            raise RuntimeError("simulator not started")
        nid = self._nodes.get(node_id) or ua.NodeId.from_string(node_id)
        dv = server.iserver.aspace.read_attribute_value(nid, ua.AttributeIds.Value)
        if dv.StatusCode is not None:
            dv.StatusCode.check()
        return dv.Value.Value if dv.Value is not None else None

    def _apply_controls(self) -> None:
        """What clients wrote to the Control nodes, into the machine models."""
        server = self._server
        assert server is not None
        aspace = server.iserver.aspace
        for machine in self.plant.machines:
            for name, (_, attribute) in CONTROLS.items():
                dv = aspace.read_attribute_value(self._controls[machine.name, name], ua.AttributeIds.Value)
                if dv.Value is not None and dv.Value.Value is not None:
                    setattr(machine, attribute, dv.Value.Value)

    def _now(self) -> datetime:
        """The device's clock, which stamps every value: wrong by `clock_offset`, as a PLC's may be."""
        return utcnow() + self.clock_offset

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            deadline += self.period
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            if loop.time() - deadline > self.period:
                # Fell more than a round behind (loaded machine): skip rounds rather than burst.
                deadline = loop.time()
            try:
                async with self._lock:
                    self._apply_controls()
                    now = self._now()
                    events, values = self.plant.step(now)
                    await self._publish(now, values)
                    await self._fire(events, now)
            except Exception:
                log.exception("factory update round failed; updates stop")
                raise

    async def _publish(self, now: datetime, values: Round) -> None:
        """Write the values that changed since the last write, with explicit timestamps."""
        server = self._server
        assert server is not None
        aspace = server.iserver.aspace
        written: list[tuple[str, str, object]] = []
        for signal, value in values:
            if signal.node_id in self._removed or self._last.get(signal.node_id, _UNSET) == value:
                continue
            opcua_type = self._retyped.get(signal.node_id, signal.opcua_type)
            if opcua_type != signal.opcua_type:
                value = str(value)
            data_value = ua.DataValue(
                Value=ua.Variant(value, ua.VariantType[opcua_type]),
                SourceTimestamp=now,
                ServerTimestamp=now,
            )
            # The address space's own write returns the status that Server.write_attribute_value drops:
            # a type mismatch must fail loudly, not leave a stale value.
            status = await aspace.write_attribute_value(self._nodes[signal.node_id], ua.AttributeIds.Value, data_value)
            status.check()
            self._last[signal.node_id] = value
            written.append((signal.node_id, opcua_type, value))
        self.recorder.add(now, written)

    async def _fire(self, events: list[MachineEvent], now: datetime) -> None:
        server = self._server
        assert server is not None
        for event in events:
            generator = self._generators[event.machine]
            fields = generator.event
            fields.Severity = event.severity
            fields.AlarmCode = event.alarm.code
            fields.MachineState = event.state.name
            fields.Message = ua.LocalizedText(event.message, "en-US")
            await generator.trigger(time_attr=now)
            # asyncua delivers an event only to subscribers of its emitting node. Clients also expect
            # machine events on the Server object (the usual place to subscribe to all events), so
            # the same event (same EventId) is delivered there as well.
            machine_node = fields.emitting_node
            fields.emitting_node = ua.NodeId(ua.ObjectIds.Server)
            try:
                await server.iserver.subscription_service.trigger_event(fields)
            finally:
                fields.emitting_node = machine_node

    async def _add_event_type(self, server: Server) -> Node:
        base = server.get_node(ua.NodeId(ua.ObjectIds.BaseEventType))
        event_type = await base.add_object_type(
            ua.NodeId(EVENT_TYPE_NAME, NAMESPACE_INDEX), ua.QualifiedName(EVENT_TYPE_NAME, NAMESPACE_INDEX)
        )
        for name, vtype in (("AlarmCode", ua.VariantType.Int32), ("MachineState", ua.VariantType.String)):
            await event_type.add_property(
                ua.NodeId(f"{EVENT_TYPE_NAME}.{name}", NAMESPACE_INDEX),
                ua.QualifiedName(name, NAMESPACE_INDEX),
                ua.Variant(ua.get_default_value(vtype), vtype),
            )
        return event_type

    async def _add_machine(self, server: Server, machine: Machine, event_type: Node) -> None:
        obj = await server.nodes.objects.add_object(
            ua.NodeId(machine.name, NAMESPACE_INDEX), ua.QualifiedName(machine.name, NAMESPACE_INDEX)
        )
        await self._describe(server, obj.nodeid, KIND_DESCRIPTIONS[machine.kind])
        parents: dict[str, Node] = {"": obj}
        if machine.index == DIAGNOSTICS_MACHINE_INDEX:
            parents[DIAGNOSTICS_FOLDER] = await obj.add_folder(
                ua.NodeId(f"{machine.name}.{DIAGNOSTICS_FOLDER}", NAMESPACE_INDEX),
                ua.QualifiedName(DIAGNOSTICS_FOLDER, NAMESPACE_INDEX),
            )
        for signal in self.plant.signals:
            if signal.machine == machine.name:
                folder, _, name = signal.name.rpartition(".")
                await self._add_variable(server, parents[folder], name, signal)

        controls = await obj.add_folder(
            ua.NodeId(f"{machine.name}.{CONTROL_FOLDER}", NAMESPACE_INDEX),
            ua.QualifiedName(CONTROL_FOLDER, NAMESPACE_INDEX),
        )
        for name, (opcua_type, attribute) in CONTROLS.items():
            vtype = ua.VariantType[opcua_type]
            node = await controls.add_variable(
                ua.NodeId(f"{machine.name}.{CONTROL_FOLDER}.{name}", NAMESPACE_INDEX),
                ua.QualifiedName(name, NAMESPACE_INDEX),
                ua.Variant(getattr(machine, attribute), vtype),
            )
            await node.set_writable()
            self._controls[machine.name, name] = node.nodeid

        # EventGenerator marks the object as an event notifier (SubscribeToEvents).
        self._generators[machine.name] = await server.get_event_generator(event_type, emitting_node=obj)
        await server.nodes.server.add_reference(obj.nodeid, ua.ObjectIds.HasNotifier)
        await obj.add_method(
            ua.NodeId(f"{machine.name}.ResetAlarm", NAMESPACE_INDEX),
            ua.QualifiedName("ResetAlarm", NAMESPACE_INDEX),
            self._reset_method(machine.name),
            [],
            [
                ua.Argument(
                    Name="WasInAlarm",
                    DataType=ua.NodeId(ua.ObjectIds.Boolean),
                    ValueRank=ua.ValueRank.Scalar,
                    Description=ua.LocalizedText("True if an alarm was active and has been reset", "en-US"),
                )
            ],
        )

    def _node_id(self, signal: SignalInfo) -> ua.NodeId:
        """The catalogue's string id, or with `numeric_ids` the signal's number in catalogue order."""
        if self.numeric_ids is None:
            return ua.NodeId.from_string(signal.node_id)
        index = next(i for i, s in enumerate(self.plant.signals) if s.node_id == signal.node_id)
        return ua.NodeId(self.numeric_ids + index, NAMESPACE_INDEX)

    async def _add_variable(
        self, server: Server, parent: Node, name: str, signal: SignalInfo, node_id: ua.NodeId | None = None
    ) -> None:
        # The placeholder value only fixes the type: the first round overwrites it before clients connect.
        vtype = ua.VariantType[signal.opcua_type]
        if node_id is None:
            node_id = self._node_id(signal)
        node = await parent.add_variable(
            node_id,
            ua.QualifiedName(name, NAMESPACE_INDEX),
            ua.Variant([] if signal.is_array else ua.get_default_value(vtype), vtype),
        )
        self._nodes[signal.node_id] = node.nodeid
        await self._describe(server, node.nodeid, signal.description)
        if signal.is_array:
            # asyncua leaves ValueRank at OneOrMoreDimensions (0) for list values; these are 1-D of any length.
            await server.write_attribute_value(
                node.nodeid,
                ua.DataValue(ua.Variant(ua.ValueRank.OneDimension, ua.VariantType.Int32)),
                ua.AttributeIds.ValueRank,
            )
            await server.write_attribute_value(
                node.nodeid, ua.DataValue(ua.Variant([0], ua.VariantType.UInt32)), ua.AttributeIds.ArrayDimensions
            )
        unit = UNECE_UNITS.get(signal.unit or "")
        if unit is not None and signal.unit is not None:
            code, description = unit
            info = ua.EUInformation(
                NamespaceUri=UNECE_NAMESPACE,
                UnitId=unece_unit_id(code),
                DisplayName=ua.LocalizedText(signal.unit),
                Description=ua.LocalizedText(description),
            )
            await node.add_property(
                ua.NodeId(f"{node.nodeid.Identifier}.EngineeringUnits", NAMESPACE_INDEX),
                ua.QualifiedName("EngineeringUnits", 0),
                ua.Variant(info, ua.VariantType.ExtensionObject),
                datatype=ua.NodeId(ua.ObjectIds.EUInformation),
            )

    @staticmethod
    async def _describe(server: Server, node: ua.NodeId, text: str) -> None:
        description = ua.DataValue(ua.Variant(ua.LocalizedText(text, "en-US"), ua.VariantType.LocalizedText))
        await server.write_attribute_value(node, description, ua.AttributeIds.Description)

    def _reset_method(self, machine_name: str) -> Callable[[ua.NodeId], Awaitable[list[ua.Variant]]]:
        async def reset_alarm(parent: ua.NodeId) -> list[ua.Variant]:
            return [ua.Variant(await self.reset_alarm(machine_name), ua.VariantType.Boolean)]

        return reset_alarm
