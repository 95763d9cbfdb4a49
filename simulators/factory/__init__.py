"""OPC UA factory simulator: CNC machining centres, injection moulding machines and presses.

Run it with `python -m simulators.factory --help`, or from Python:

    with FactoryThread(port=4841, period=0.1) as factory:      # synchronous tests
        ...factory.endpoint, factory.written("ns=2;s=CNC01.PartCount")...

    async with FactorySimulator(port=4841) as simulator:       # asyncio code
        ...

`catalogue(machines)` lists every variable (node id, type, unit) the server will serve.
"""

from simulators.factory.catalogue import (
    EVENT_TYPE_NODE_ID,
    NAMESPACE_INDEX,
    NAMESPACE_URI,
    SignalInfo,
    catalogue,
    machine_names,
    node_id,
)
from simulators.factory.machines import MachineState
from simulators.factory.plant import Plant
from simulators.factory.record import ValueRecorder, json_value
from simulators.factory.server import FactorySimulator
from simulators.factory.thread import FactoryThread

__all__ = [
    "EVENT_TYPE_NODE_ID",
    "NAMESPACE_INDEX",
    "NAMESPACE_URI",
    "FactorySimulator",
    "FactoryThread",
    "MachineState",
    "Plant",
    "SignalInfo",
    "ValueRecorder",
    "catalogue",
    "json_value",
    "machine_names",
    "node_id",
]
