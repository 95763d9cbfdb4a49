"""Machine models: a RUN/IDLE/ALARM state machine driving cycle-shaped process signals.

Pure numpy, no OPC UA. Time is counted in update rounds: one cycle spans a few rounds so a test
sees many cycles (and alarms) within seconds, while CycleTime, StrokeRate and Energy are computed
from the wall-clock timestamps each round is given, so they stay consistent with PartCount.
Every random draw comes from a Generator seeded with (seed, machine index): the same seed and
the same sequence of rounds produce the same values.

`feed_override` (percent) and `program_select` are the set-points a client may write (the server's
Control nodes): a CNC scales its cutting feed by the one and loads the other at its next job change
(the random draw still happens, so the sequence of values stays the same otherwise).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import ClassVar

import numpy as np

from simulators.factory.catalogue import machine_kind, machine_name

UINT32_WRAP = 2**32
AMBIENT_C = 24.0


class MachineState(IntEnum):
    IDLE = 0
    RUN = 1
    ALARM = 2


@dataclass(frozen=True, slots=True)
class AlarmDef:
    code: int
    severity: int
    text: str
    text_ko: str


@dataclass(frozen=True, slots=True)
class MachineEvent:
    """An alarm raised (state ALARM) or cleared (state IDLE) on one machine."""

    machine: str
    alarm: AlarmDef
    state: MachineState
    severity: int
    message: str


def _f32(value: float) -> float:
    # Float signals carry the value a client will decode, so records and reads compare equal.
    return float(np.float32(value))


class Machine(ABC):
    kind: ClassVar[str]
    nominal_rounds: ClassVar[int]
    jitter_rounds: ClassVar[int]
    parts_per_cycle: ClassVar[int] = 1
    alarms: ClassVar[tuple[AlarmDef, ...]]
    alarm_probability: ClassVar[float] = 0.02
    idle_probability: ClassVar[float] = 0.03
    idle_power_kw: ClassVar[float]
    alarm_power_kw: ClassVar[float]

    def __init__(self, index: int, seed: int, alarm_every: int) -> None:
        self.index = index
        self.name = machine_name(index)
        self.alarm_every = alarm_every
        self.rng = np.random.default_rng((seed, index))
        self.state = MachineState.RUN
        self.alarm: AlarmDef | None = None
        self.part_count = 0
        self.cycle_time = 0.0
        self.power_kw = 0.0
        self.energy_kwh = 0.0
        self.ambient_c = AMBIENT_C + float(self.rng.normal(0.0, 0.5))
        self._rounds_left = 0
        self._round = 0
        self._cycle_rounds = self.nominal_rounds
        self._cycle_start: datetime | None = None
        self._cycles_since_alarm = 0
        self._last_time: datetime | None = None
        self.feed_override = 100.0  # set-points written by clients (server.py, Control nodes)
        self.program_select = ""

    @property
    def phase(self) -> float | None:
        """Position within the running cycle in [0, 1), None when not running."""
        if self.state is not MachineState.RUN:
            return None
        return self._round / self._cycle_rounds

    def step(self, now: datetime) -> list[MachineEvent]:
        """Advance one update round ending at `now`."""
        dt = 0.0 if self._last_time is None else max(0.0, (now - self._last_time).total_seconds())
        events: list[MachineEvent] = []
        if self._last_time is None:
            self._begin_cycle(now)
        elif self.state is MachineState.RUN:
            self._round += 1
            if self._round >= self._cycle_rounds:
                events.extend(self._complete_cycle(now))
        else:
            self._rounds_left -= 1
            if self._rounds_left <= 0:
                if self.alarm is not None:
                    events.append(self._clear_alarm(self.alarm, "cleared"))
                else:
                    self._begin_cycle(now)
        self._last_time = now
        self.ambient_c += 0.002 * (AMBIENT_C - self.ambient_c) + float(self.rng.normal(0.0, 0.01))
        self.update_process(self.phase)
        self.power_kw = round(self._power(), 2)
        self.energy_kwh += self.power_kw * dt / 3600.0
        return events

    def reset_alarm(self) -> MachineEvent | None:
        """Operator reset: leave ALARM at once. None when no alarm was active."""
        if self.alarm is None:
            return None
        return self._clear_alarm(self.alarm, "reset by operator")

    def values(self) -> dict[str, object]:
        """Current value of every signal of this machine, keyed by catalogue name."""
        common: dict[str, object] = {
            "State": self.state.name,
            "StateCode": int(self.state),
            "AlarmCode": self.alarm.code if self.alarm is not None else 0,
            "PartCount": self.part_count,
            "CycleTime": self.cycle_time,
            "Power": self.power_kw,
            "Energy": round(self.energy_kwh, 6),
        }
        return common | self.process_values()

    @abstractmethod
    def update_process(self, phase: float | None) -> None:
        """Recompute the kind-specific signals; `phase` is None when the machine is not running."""

    @abstractmethod
    def process_values(self) -> dict[str, object]:
        """Kind-specific signal values keyed by catalogue name."""

    @abstractmethod
    def run_power_kw(self) -> float:
        """Power drawn while running, from the process state of this round."""

    @abstractmethod
    def on_cycle_complete(self) -> None:
        """Update per-cycle counters and quality values."""

    @abstractmethod
    def on_idle(self) -> None:
        """Change jobs (program, mould, die) after an idle period."""

    def _power(self) -> float:
        if self.state is MachineState.RUN:
            return self.run_power_kw() * (1.0 + float(self.rng.normal(0.0, 0.01)))
        base = self.alarm_power_kw if self.state is MachineState.ALARM else self.idle_power_kw
        return base * (1.0 + float(self.rng.normal(0.0, 0.02)))

    def _begin_cycle(self, now: datetime) -> None:
        self.state = MachineState.RUN
        self._round = 0
        jitter = int(self.rng.integers(-self.jitter_rounds, self.jitter_rounds + 1))
        self._cycle_rounds = self.nominal_rounds + jitter
        self._cycle_start = now

    def _complete_cycle(self, now: datetime) -> list[MachineEvent]:
        self.part_count = (self.part_count + self.parts_per_cycle) % UINT32_WRAP
        if self._cycle_start is not None:
            self.cycle_time = round((now - self._cycle_start).total_seconds(), 3)
        self._cycles_since_alarm += 1
        self.on_cycle_complete()
        if self._alarm_due():
            return [self._raise_alarm()]
        if self.rng.random() < self.idle_probability:
            self.state = MachineState.IDLE
            self._rounds_left = int(self.rng.integers(2, 5)) * self.nominal_rounds
            self.on_idle()
        else:
            self._begin_cycle(now)
        return []

    def _alarm_due(self) -> bool:
        if self.alarm_every > 0:
            return self._cycles_since_alarm >= self.alarm_every
        return bool(self.rng.random() < self.alarm_probability)

    def _raise_alarm(self) -> MachineEvent:
        alarm = self.alarms[int(self.rng.integers(len(self.alarms)))]
        self.state = MachineState.ALARM
        self.alarm = alarm
        self._cycles_since_alarm = 0
        self._rounds_left = int(self.rng.integers(2, 4)) * self.nominal_rounds
        return MachineEvent(
            machine=self.name,
            alarm=alarm,
            state=MachineState.ALARM,
            severity=alarm.severity,
            message=f"{self.name} alarm {alarm.code}: {alarm.text} ({alarm.text_ko})",
        )

    def _clear_alarm(self, alarm: AlarmDef, how: str) -> MachineEvent:
        self.alarm = None
        # Restarting after an alarm takes the operator a moment.
        self.state = MachineState.IDLE
        self._rounds_left = max(1, self.nominal_rounds // 2)
        return MachineEvent(
            machine=self.name,
            alarm=alarm,
            state=MachineState.IDLE,
            severity=100,
            message=f"{self.name} alarm {alarm.code} {how}: {alarm.text} ({alarm.text_ko})",
        )

    def _lag(self, current: float, target: float, alpha: float, noise: float) -> float:
        """First-order approach to `target` plus sensor noise: slow thermal drift."""
        return current + alpha * (target - current) + float(self.rng.normal(0.0, noise))

    def _noisy(self, value: float, relative: float) -> float:
        return value * (1.0 + float(self.rng.normal(0.0, relative)))


@dataclass(frozen=True, slots=True)
class _Tool:
    number: int
    rpm: float
    feed: float
    load: float


class CncMachine(Machine):
    kind = "CNC"
    nominal_rounds = 12
    jitter_rounds = 2
    idle_power_kw = 1.6
    alarm_power_kw = 1.2
    alarms = (
        AlarmDef(1001, 700, "Spindle overload", "주축 과부하"),
        AlarmDef(1002, 800, "Tool breakage detected", "공구 파손 감지"),
        AlarmDef(1003, 500, "Coolant level low", "절삭유 부족"),
        AlarmDef(1004, 600, "Axis servo following error", "축 서보 추종 오차"),
    )
    programs = ("O1001", "O2040", "O3105")
    # Face mill, end mill, drill: one third of the cutting time each.
    tools = (_Tool(1, 3500.0, 1200.0, 55.0), _Tool(7, 9000.0, 1800.0, 35.0), _Tool(12, 2500.0, 250.0, 45.0))
    rapid_feed = 30000.0
    tool_life_cycles = 400

    def __init__(self, index: int, seed: int, alarm_every: int) -> None:
        super().__init__(index, seed, alarm_every)
        self.program = self.programs[int(self.rng.integers(len(self.programs)))]
        self.tool = self.tools[0]
        self.speed = 0.0
        self.load = 0.0
        self.feed = 0.0
        self.spindle_temp = self.ambient_c + 8.0
        self.coolant_temp = self.ambient_c + 1.5
        self.vibration = 0.0
        self.position = (0.0, 0.0, 100.0)
        self.tool_wear = 0.0

    def on_cycle_complete(self) -> None:
        self.tool_wear = (self.tool_wear + 1.0 / self.tool_life_cycles) % 1.0

    def on_idle(self) -> None:
        drawn = self.programs[int(self.rng.integers(len(self.programs)))]
        self.program = self.program_select or drawn

    def update_process(self, phase: float | None) -> None:
        if phase is None:
            self.speed = 0.0
            self.feed = 0.0
            self.load = max(0.0, float(self.rng.normal(0.5, 0.3)))
            if self.state is MachineState.IDLE:
                self.position = (0.0, 0.0, 100.0)
            heat = 3.0
        elif phase < 0.1:
            # Tool change and rapid approach.
            self.tool = self.tools[0]
            self.speed = 0.0
            self.feed = self.rapid_feed
            self.load = max(0.0, float(self.rng.normal(3.0, 0.5)))
            self.position = (150.0, 100.0, 50.0)
            heat = 10.0
        else:
            cut = (phase - 0.1) / 0.9
            self.tool = self.tools[min(len(self.tools) - 1, int(cut * len(self.tools)))]
            self.speed = self._noisy(self.tool.rpm, 0.002)
            self.feed = self._noisy(self.tool.feed, 0.005) * (max(0.0, self.feed_override) / 100.0)
            wear = 1.0 + 0.3 * self.tool_wear
            self.load = min(150.0, max(0.0, self._noisy(self.tool.load * wear, 0.08)))
            self.position = (
                150.0 + 120.0 * math.sin(2 * math.pi * 3 * cut),
                100.0 + 80.0 * math.cos(2 * math.pi * 2 * cut),
                -15.0 if self.tool is self.tools[-1] else -12.0,
            )
            heat = 12.0 + 0.1 * self.load
        self.spindle_temp = self._lag(self.spindle_temp, self.ambient_c + heat, 0.03, 0.05)
        coolant_rise = 3.0 if phase is not None else 0.5
        self.coolant_temp = self._lag(self.coolant_temp, self.ambient_c + coolant_rise, 0.01, 0.03)
        base_vibration = 0.4 + 0.025 * self.load if self.speed > 0 else 0.05
        self.vibration = abs(base_vibration + float(self.rng.normal(0.0, 0.05)))

    def run_power_kw(self) -> float:
        return 3.0 + 0.15 * self.load

    def process_values(self) -> dict[str, object]:
        x, y, z = self.position
        return {
            "ProgramName": self.program,
            "ToolNumber": self.tool.number,
            "SpindleSpeed": round(self.speed, 1),
            "SpindleLoad": round(self.load, 1),
            "FeedRate": round(self.feed, 1),
            "SpindleTemperature": round(self.spindle_temp, 2),
            "CoolantTemperature": round(self.coolant_temp, 2),
            "Vibration": _f32(self.vibration),
            "PositionX": round(x, 3),
            "PositionY": round(y, 3),
            "PositionZ": round(z, 3),
        }


class InjectionMouldingMachine(Machine):
    kind = "IMM"
    nominal_rounds = 8
    jitter_rounds = 1
    parts_per_cycle = 2  # two-cavity mould
    idle_power_kw = 5.0  # barrel heaters stay on
    alarm_power_kw = 4.5
    alarms = (
        AlarmDef(2001, 600, "Barrel temperature deviation", "실린더 온도 편차"),
        AlarmDef(2002, 500, "Mould open timeout", "금형 열림 시간 초과"),
        AlarmDef(2003, 400, "Short shot detected", "미성형 감지"),
        AlarmDef(2004, 700, "Hydraulic oil overheat", "작동유 과열"),
    )
    moulds = ("M-2231", "M-3107")
    setpoints = (230.0, 220.0, 205.0)
    shot_size_mm = 55.0
    clamp_kn = 1300.0

    def __init__(self, index: int, seed: int, alarm_every: int) -> None:
        super().__init__(index, seed, alarm_every)
        self.mould = self.moulds[int(self.rng.integers(len(self.moulds)))]
        self.shots = 0
        self.pressure = 0.0
        self.speed = 0.0
        self.screw = self.shot_size_mm
        self.cushion = 6.0
        self.clamp = 0.0
        self.closed = False
        self.barrel = list(self.setpoints)
        self.mould_temp = 45.0
        self.oil_temp = self.ambient_c + 15.0
        self._pump_kw = 0.0

    def on_cycle_complete(self) -> None:
        self.shots = (self.shots + 1) % UINT32_WRAP
        self.cushion = round(float(self.rng.normal(6.0, 0.25)), 2)

    def on_idle(self) -> None:
        self.mould = self.moulds[int(self.rng.integers(len(self.moulds)))]

    def update_process(self, phase: float | None) -> None:
        if phase is None:
            self.pressure, self.speed, self.clamp, self.closed, self._pump_kw = 0.0, 0.0, 0.0, False, 0.0
            mould_target = 40.0
        elif phase < 0.1:  # mould closing
            self.pressure, self.speed, self.closed, self._pump_kw = 0.0, 0.0, False, 8.0
            self.clamp = self._noisy(self.clamp_kn * 0.3, 0.05)
            mould_target = 44.0
        elif phase < 0.25:  # injection: screw forward at high pressure
            self.closed = True
            self.clamp = self._noisy(self.clamp_kn, 0.01)
            self.pressure = self._noisy(1150.0, 0.02)
            self.speed = self._noisy(80.0, 0.03)
            self.screw = self.cushion + (self.shot_size_mm - self.cushion) * (0.25 - phase) / 0.15
            self._pump_kw = 18.0
            mould_target = 52.0
        elif phase < 0.45:  # holding
            self.pressure = self._noisy(600.0, 0.02)
            self.speed = self._noisy(2.0, 0.2)
            self.screw = self.cushion
            self._pump_kw = 10.0
            mould_target = 50.0
        elif phase < 0.8:  # cooling while the screw plasticises the next shot against back pressure
            self.pressure = self._noisy(80.0, 0.05)
            self.speed = 0.0
            self.screw = self.cushion + (self.shot_size_mm - self.cushion) * min(1.0, (phase - 0.45) / 0.3)
            self._pump_kw = 12.0
            mould_target = 46.0
        else:  # mould open, eject
            self.pressure, self.speed, self.closed, self._pump_kw = 0.0, 0.0, False, 8.0
            self.clamp = 0.0
            self.screw = self.shot_size_mm
            mould_target = 44.0
        for zone, setpoint in enumerate(self.setpoints):
            self.barrel[zone] = self._lag(self.barrel[zone], setpoint, 0.2, 0.3)
        self.mould_temp = self._lag(self.mould_temp, mould_target, 0.1, 0.1)
        oil_target = self.ambient_c + (20.0 if phase is not None else 10.0)
        self.oil_temp = self._lag(self.oil_temp, oil_target, 0.005, 0.03)

    def run_power_kw(self) -> float:
        return 6.5 + self._pump_kw

    def process_values(self) -> dict[str, object]:
        return {
            "MouldId": self.mould,
            "ShotCount": self.shots,
            "InjectionPressure": round(max(0.0, self.pressure), 1),
            "InjectionSpeed": round(max(0.0, self.speed), 1),
            "ScrewPosition": round(self.screw, 2),
            "Cushion": self.cushion,
            "ClampForce": round(max(0.0, self.clamp), 1),
            "MouldClosed": self.closed,
            "BarrelTemperature1": _f32(self.barrel[0]),
            "BarrelTemperature2": _f32(self.barrel[1]),
            "BarrelTemperature3": _f32(self.barrel[2]),
            "MouldTemperature": round(self.mould_temp, 2),
            "OilTemperature": round(self.oil_temp, 2),
        }


class PressMachine(Machine):
    kind = "PRS"
    nominal_rounds = 4  # rounds at TDC, mid-down, BDC, mid-up
    jitter_rounds = 0
    idle_power_kw = 3.5  # flywheel keeps turning
    alarm_power_kw = 2.0
    alarms = (
        AlarmDef(3001, 800, "Double blank detected", "이중 블랭크 감지"),
        AlarmDef(3002, 900, "Light curtain interrupted", "광전자 안전장치 차단"),
        AlarmDef(3003, 800, "Overload protector tripped", "과부하 방지장치 작동"),
        AlarmDef(3004, 500, "Misfeed detected", "소재 이송 불량"),
    )
    dies = ("D-0412", "D-0977")
    stroke_mm = 180.0
    peak_kn = 1400.0  # a 200 tf press working at about 70 %

    def __init__(self, index: int, seed: int, alarm_every: int) -> None:
        super().__init__(index, seed, alarm_every)
        self.die = self.dies[int(self.rng.integers(len(self.dies)))]
        self.strokes = 0
        self.rate = 0.0
        self.tonnage = 0.0
        self.slide = self.stroke_mm
        self.die_height = 350.0
        self.current = 0.0
        self.clutch_air = 5.2
        self.oil_temp = self.ambient_c + 10.0

    def on_cycle_complete(self) -> None:
        self.strokes = (self.strokes + 1) % UINT32_WRAP
        self.rate = round(60.0 / self.cycle_time, 2) if self.cycle_time > 0 else 0.0

    def on_idle(self) -> None:
        self.die = self.dies[int(self.rng.integers(len(self.dies)))]

    def update_process(self, phase: float | None) -> None:
        if phase is None:
            self.tonnage = 0.0
            self.current = self._noisy(12.0, 0.03)
            self.rate = 0.0
            if self.state is MachineState.IDLE:
                self.slide = self.stroke_mm
        else:
            self.slide = self.stroke_mm / 2 * (1 + math.cos(2 * math.pi * phase))
            # Force builds only over the last few millimetres before bottom dead centre.
            engagement = max(0.0, 1.0 - self.slide / 6.0)
            self.tonnage = self._noisy(self.peak_kn, 0.03) * engagement
            self.current = self._noisy(35.0 + 45.0 * engagement, 0.03)
        thermal_growth = 0.02 * (self.oil_temp - AMBIENT_C) / 20.0
        self.die_height = 350.0 + thermal_growth
        self.clutch_air = self._lag(self.clutch_air, 5.2, 0.1, 0.03)
        oil_target = self.ambient_c + (16.0 if phase is not None else 8.0)
        self.oil_temp = self._lag(self.oil_temp, oil_target, 0.005, 0.03)

    def run_power_kw(self) -> float:
        return 0.4 * self.current

    def process_values(self) -> dict[str, object]:
        return {
            "DieId": self.die,
            "StrokeCount": self.strokes,
            "StrokeRate": self.rate,
            "Tonnage": round(self.tonnage, 1),
            "SlidePosition": round(self.slide, 2),
            "DieHeight": round(self.die_height, 3),
            "MotorCurrent": round(self.current, 2),
            "ClutchAirPressure": _f32(self.clutch_air),
            "OilTemperature": round(self.oil_temp, 2),
        }


MACHINE_CLASSES: dict[str, type[Machine]] = {
    CncMachine.kind: CncMachine,
    InjectionMouldingMachine.kind: InjectionMouldingMachine,
    PressMachine.kind: PressMachine,
}


def make_machine(index: int, seed: int, alarm_every: int) -> Machine:
    return MACHINE_CLASSES[machine_kind(index)](index, seed, alarm_every)
