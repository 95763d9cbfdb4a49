"""The simulated plant: its machines and the diagnostics generator, stepped one round at a time."""

from __future__ import annotations

from datetime import datetime

from simulators.factory.catalogue import (
    DIAGNOSTICS_FOLDER,
    DIAGNOSTICS_MACHINE_INDEX,
    SignalInfo,
    catalogue,
    node_id,
)
from simulators.factory.diagnostics import Diagnostics
from simulators.factory.machines import Machine, MachineEvent, make_machine

Round = list[tuple[SignalInfo, object]]


class Plant:
    """State that outlives a server: a restarted server continues the same counters."""

    def __init__(self, machines: int = 3, seed: int = 1, alarm_every: int = 0) -> None:
        if machines < 1:
            raise ValueError("a plant needs at least one machine")
        if alarm_every < 0:
            raise ValueError("alarm_every must be >= 0 (0 = seeded random alarms)")
        self.machines = [make_machine(i, seed, alarm_every) for i in range(machines)]
        self.diagnostics = Diagnostics(seed)
        self.signals = catalogue(machines)
        self._diagnostics_machine = self.machines[DIAGNOSTICS_MACHINE_INDEX].name
        self._diagnostic_values: dict[str, object] = {}

    def machine(self, name: str) -> Machine:
        for machine in self.machines:
            if machine.name == name:
                return machine
        raise KeyError(name)

    def step(self, now: datetime) -> tuple[list[MachineEvent], Round]:
        """Advance every machine and the diagnostics by one round ending at `now`."""
        events: list[MachineEvent] = []
        for machine in self.machines:
            events.extend(machine.step(now))
        self._diagnostic_values = {
            node_id(self._diagnostics_machine, f"{DIAGNOSTICS_FOLDER}.{name}"): value
            for name, value in self.diagnostics.step(now).items()
        }
        return events, self._values()

    def machine_values(self, machine: Machine) -> Round:
        """Current values of one machine's own signals, without stepping anything."""
        values = machine.values()
        return [(s, values[s.name]) for s in self.signals if s.machine == machine.name and s.name in values]

    def _values(self) -> Round:
        current = {node_id(m.name, name): value for m in self.machines for name, value in m.values().items()}
        current.update(self._diagnostic_values)
        expected = {s.node_id for s in self.signals}
        if current.keys() != expected:
            raise RuntimeError(f"machine models and catalogue disagree on {sorted(current.keys() ^ expected)}")
        return [(s, current[s.node_id]) for s in self.signals]
