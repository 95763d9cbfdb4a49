"""What the factory simulator serves: machine names, node ids and every variable with type and unit.

The server builds its address space from this module, so configs and tests generated from
`catalogue()` always match what a client can browse.
"""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE_URI = "urn:edge-agent:simulators:factory"
# Registered first on a fresh asyncua server, so it always lands at index 2 (0 = OPC UA, 1 = server URI).
NAMESPACE_INDEX = 2
EVENT_TYPE_NAME = "MachineAlarmEventType"
EVENT_TYPE_NODE_ID = f"ns={NAMESPACE_INDEX};s={EVENT_TYPE_NAME}"
DIAGNOSTICS_MACHINE_INDEX = 0
DIAGNOSTICS_FOLDER = "Diagnostics"

MACHINE_KINDS: tuple[str, ...] = ("CNC", "IMM", "PRS")
KIND_DESCRIPTIONS: dict[str, str] = {
    "CNC": "CNC machining centre",
    "IMM": "Injection moulding machine",
    "PRS": "Mechanical stamping press",
}


@dataclass(frozen=True, slots=True)
class SignalSpec:
    name: str
    opcua_type: str
    unit: str | None
    description: str
    is_array: bool = False


@dataclass(frozen=True, slots=True)
class SignalInfo:
    node_id: str
    machine: str
    name: str
    opcua_type: str
    is_array: bool
    unit: str | None
    description: str


COMMON_SIGNALS: tuple[SignalSpec, ...] = (
    SignalSpec("State", "String", None, "Machine state: RUN, IDLE or ALARM"),
    SignalSpec("StateCode", "Int32", None, "Machine state as a code: 0 IDLE, 1 RUN, 2 ALARM"),
    SignalSpec("AlarmCode", "Int32", None, "Code of the active alarm, 0 when none is active"),
    SignalSpec("PartCount", "UInt32", "pcs", "Parts produced since the counter was reset (per cycle)"),
    SignalSpec("CycleTime", "Double", "s", "Duration of the last completed cycle"),
    SignalSpec("Power", "Double", "kW", "Electrical power drawn by the machine"),
    SignalSpec("Energy", "Double", "kWh", "Electrical energy counter"),
)

KIND_SIGNALS: dict[str, tuple[SignalSpec, ...]] = {
    "CNC": (
        SignalSpec("ProgramName", "String", None, "Running NC program"),
        SignalSpec("ToolNumber", "UInt16", None, "Tool in the spindle"),
        SignalSpec("SpindleSpeed", "Double", "rpm", "Actual spindle speed"),
        SignalSpec("SpindleLoad", "Double", "%", "Spindle motor load relative to rated torque"),
        SignalSpec("FeedRate", "Double", "mm/min", "Actual path feed rate"),
        SignalSpec("SpindleTemperature", "Double", "°C", "Spindle bearing temperature"),
        SignalSpec("CoolantTemperature", "Double", "°C", "Coolant tank temperature"),
        SignalSpec("Vibration", "Float", "mm/s", "Spindle housing vibration velocity (RMS)"),
        SignalSpec("PositionX", "Double", "mm", "X axis machine position"),
        SignalSpec("PositionY", "Double", "mm", "Y axis machine position"),
        SignalSpec("PositionZ", "Double", "mm", "Z axis machine position"),
    ),
    "IMM": (
        SignalSpec("MouldId", "String", None, "Mould mounted on the machine"),
        SignalSpec("ShotCount", "UInt32", None, "Injection shots since the counter was reset"),
        SignalSpec("InjectionPressure", "Double", "bar", "Hydraulic injection pressure"),
        SignalSpec("InjectionSpeed", "Double", "mm/s", "Screw forward speed"),
        SignalSpec("ScrewPosition", "Double", "mm", "Screw position (0 = fully forward)"),
        SignalSpec("Cushion", "Double", "mm", "Melt cushion at the end of holding, last cycle"),
        SignalSpec("ClampForce", "Double", "kN", "Mould clamping force"),
        SignalSpec("MouldClosed", "Boolean", None, "Mould closed and locked"),
        SignalSpec("BarrelTemperature1", "Float", "°C", "Barrel heater zone 1 (nozzle side)"),
        SignalSpec("BarrelTemperature2", "Float", "°C", "Barrel heater zone 2"),
        SignalSpec("BarrelTemperature3", "Float", "°C", "Barrel heater zone 3 (feed side)"),
        SignalSpec("MouldTemperature", "Double", "°C", "Mould surface temperature"),
        SignalSpec("OilTemperature", "Double", "°C", "Hydraulic oil temperature"),
    ),
    "PRS": (
        SignalSpec("DieId", "String", None, "Die set mounted on the press"),
        SignalSpec("StrokeCount", "UInt32", None, "Strokes since the counter was reset"),
        SignalSpec("StrokeRate", "Double", "1/min", "Strokes per minute, from the last stroke"),
        SignalSpec("Tonnage", "Double", "kN", "Press force (tonnage) measured on the frame"),
        SignalSpec("SlidePosition", "Double", "mm", "Slide height above bottom dead centre"),
        SignalSpec("DieHeight", "Double", "mm", "Shut height of the die"),
        SignalSpec("MotorCurrent", "Double", "A", "Main motor current"),
        SignalSpec("ClutchAirPressure", "Float", "bar", "Clutch/brake air supply pressure"),
        SignalSpec("OilTemperature", "Double", "°C", "Lubrication oil temperature"),
    ),
}

# One variable per OPC UA built-in scalar type of the aas-notes mapping table, plus arrays.
DIAGNOSTIC_TYPES: tuple[str, ...] = (
    "Boolean",
    "SByte",
    "Byte",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
    "Float",
    "Double",
    "String",
    "DateTime",
    "ByteString",
    "LocalizedText",
    "StatusCode",
    "Guid",
    "NodeId",
)

DIAGNOSTIC_SIGNALS: tuple[SignalSpec, ...] = (
    *(SignalSpec(t, t, None, f"Type test: {t} values including edge cases") for t in DIAGNOSTIC_TYPES),
    SignalSpec("DoubleArray", "Double", "mm/s", "Vibration spectrum, 8 bins at 1x..8x spindle frequency", True),
    SignalSpec("Int32Array", "Int32", None, "Axis following errors in µm; variable length, may be empty", True),
)


def machine_kind(index: int) -> str:
    return MACHINE_KINDS[index % len(MACHINE_KINDS)]


def machine_name(index: int) -> str:
    return f"{machine_kind(index)}{index // len(MACHINE_KINDS) + 1:02d}"


def machine_names(machines: int) -> list[str]:
    return [machine_name(i) for i in range(machines)]


def node_id(machine: str, name: str) -> str:
    return f"ns={NAMESPACE_INDEX};s={machine}.{name}"


def machine_signals(index: int) -> tuple[SignalSpec, ...]:
    return COMMON_SIGNALS + KIND_SIGNALS[machine_kind(index)]


def catalogue(machines: int = 3) -> list[SignalInfo]:
    """Every variable the simulator serves with `machines` machines, in address-space order."""
    out: list[SignalInfo] = []
    for index in range(machines):
        machine = machine_name(index)
        for spec in machine_signals(index):
            out.append(_info(machine, spec.name, spec))
        if index == DIAGNOSTICS_MACHINE_INDEX:
            for spec in DIAGNOSTIC_SIGNALS:
                out.append(_info(machine, f"{DIAGNOSTICS_FOLDER}.{spec.name}", spec))
    return out


def _info(machine: str, name: str, spec: SignalSpec) -> SignalInfo:
    return SignalInfo(
        node_id=node_id(machine, name),
        machine=machine,
        name=name,
        opcua_type=spec.opcua_type,
        is_array=spec.is_array,
        unit=spec.unit,
        description=spec.description,
    )
