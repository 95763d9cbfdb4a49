"""Real-time analysis on the edge: machine state time, cycles, alarms and OEE per machine and period.

Pure computation (standard library only, no I/O, no asyncio): the pipeline feeds it each value of
the few elements a machine's `analysis:` mapping names, and asks for a summary once per interval.
The formulas, the config keys and what is published are in docs/analysis.md.

Time model. Every value carries its source time `t` (epoch seconds). Each role (state, alarm, and
each counter) is its own timeline, applied in time order: a value older than the last one of its
role is ignored and counted (`ignored.out_of_order`). Values of different roles may arrive out of
order with respect to each other. A value dated before the current period (an initial read whose
source time is the last change, hours ago; or a value that arrived after its period was
summarised) takes effect at the period start. A value dated after `until` (a device clock ahead
of the agent's) is kept for the period it belongs to.

Time counts as "unknown" before the first state value and inside the intervals given to
`unknown()` (collection interrupted); unknown time is neither the last state nor planned time.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

ROLES: Final = ("state", "alarm", "part_count", "good_count", "scrap_count")
COUNTER_ROLES: Final = ("part_count", "good_count", "scrap_count")
DEFAULT_RUNNING: Final[frozenset[object]] = frozenset({"RUN", 1})
UNKNOWN: Final = "unknown"  # key of the unknown time in `state_s`
QUALITY_KEYS: Final = "good_count|scrap_count"  # what `missing` names when neither quality counter is mapped

_SECONDS_DIGITS: Final = 3
_RATIO_DIGITS: Final = 4
_INF: Final = math.inf

# Kinds of a counter step (see _Counter.step)
_STEP, _WRAP, _RESET = 0, 1, 2

_CONFIG_KEYS: Final = frozenset(
    {"state", "running", "alarm", "part_count", "good_count", "scrap_count", "ideal_cycle_s", "interval_s"}
    | {"counter_modulus"}
)


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, not {value!r}")


@dataclass(frozen=True, slots=True)
class AnalysisSpec:
    """Which elements (AAS paths of the machine's points) carry which role; None = not mapped."""

    machine: str
    state: str | None = None
    running: frozenset[object] = DEFAULT_RUNNING  # state values that count as running
    alarm: str | None = None
    part_count: str | None = None
    good_count: str | None = None
    scrap_count: str | None = None
    ideal_cycle_s: float | None = None
    interval_s: float = 60.0  # how often the pipeline asks for a summary (not used here)
    counter_modulus: int = 2**32  # where the counters wrap (UInt32)

    def __post_init__(self) -> None:
        if self.ideal_cycle_s is not None:
            _positive("ideal_cycle_s", self.ideal_cycle_s)
        _positive("interval_s", self.interval_s)
        if self.counter_modulus < 2:
            raise ValueError(f"counter_modulus must be at least 2, not {self.counter_modulus!r}")

    @classmethod
    def from_config(cls, machine: str, cfg: Mapping[str, Any]) -> AnalysisSpec:
        """The spec from an equipment's `analysis:` mapping (docs/analysis.md); ValueError names a bad key."""
        unknown = sorted(set(cfg) - _CONFIG_KEYS)
        if unknown:
            raise ValueError(f"analysis: unknown key(s) {unknown}; allowed: {sorted(_CONFIG_KEYS)}")
        paths: dict[str, str | None] = {}
        for key in ("state", "alarm", *COUNTER_ROLES):
            v = cfg.get(key)
            if v is not None and not (isinstance(v, str) and v):
                raise ValueError(f"analysis.{key} must be an element path (a non-empty string), not {v!r}")
            paths[key] = v
        running = cfg.get("running")
        if running is None:
            run_set: frozenset[object] = DEFAULT_RUNNING
        else:
            items: Iterable[object] = running if isinstance(running, list | tuple | set | frozenset) else [running]
            run_set = frozenset(items)
            if not run_set or not all(isinstance(x, str | int) for x in run_set):
                raise ValueError(f"analysis.running must be state values (strings or integers), not {running!r}")
        numbers_: dict[str, float] = {}
        for key in ("ideal_cycle_s", "interval_s"):
            v = cfg.get(key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"analysis.{key} must be a number, not {v!r}")
            numbers_[key] = float(v)
        modulus = cfg.get("counter_modulus", 2**32)
        if isinstance(modulus, bool) or not isinstance(modulus, int):
            raise ValueError(f"analysis.counter_modulus must be an integer, not {modulus!r}")
        return cls(
            machine=machine,
            state=paths["state"],
            running=run_set,
            alarm=paths["alarm"],
            part_count=paths["part_count"],
            good_count=paths["good_count"],
            scrap_count=paths["scrap_count"],
            ideal_cycle_s=numbers_.get("ideal_cycle_s"),
            interval_s=numbers_.get("interval_s", 60.0),
            counter_modulus=modulus,
        )

    def elements(self) -> dict[str, tuple[str, ...]]:
        """Element path -> the roles its values feed (for routing values to `observe`)."""
        out: dict[str, tuple[str, ...]] = {}
        for role in ROLES:
            path = getattr(self, role)
            if path is not None:
                out[path] = (*out.get(path, ()), role)
        return out


def _state_key(value: object) -> bool:
    """Whether `value` can be a state: a string, an integer, or a finite real number."""
    if isinstance(value, str | int):
        return True
    if isinstance(value, float | numbers.Real):
        return math.isfinite(value)
    return False


def _alarm_code(value: object) -> object:
    """The alarm code of `value` (0 = no alarm), or None when it is not a valid code."""
    if isinstance(value, str):
        s = value.strip()
        return 0 if s in ("", "0") else s
    if isinstance(value, int):
        return int(value)  # bool: False = 0
    if isinstance(value, float | numbers.Real):
        f = float(value)
        if not math.isfinite(f):
            return None
        return int(f) if f.is_integer() else f
    return None


def _counter_value(value: object) -> float | int | None:
    """The counter reading of `value`, or None (not a finite number)."""
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if math.isfinite(f) else None
    return None


class _Counter:
    """One monotonic counter: its last valid value and the increments of the open period(s)."""

    __slots__ = ("events", "last", "last_t", "modulus", "window")

    def __init__(self, modulus: int) -> None:
        self.modulus = modulus
        # A decrease is a wrap only when the counter was this close to the top and is this close to 0.
        self.window = max(1, min(2**16, modulus >> 6))
        self.last: float | int | None = None
        self.last_t = -_INF
        self.events: list[tuple[float, float | int, int]] = []  # (t, increment, kind)

    def step(self, v: float | int, t: float) -> None:
        last, self.last = self.last, v
        if last is None:  # the first value is the baseline
            return
        if v >= last:
            if v > last:
                self.events.append((t, v - last, _STEP))
            return
        m, w = self.modulus, self.window
        if m - w <= last < m and 0 <= v < w:  # wrapped: last .. m-1, 0 .. v
            self.events.append((t, m - last + v, _WRAP))
        elif 0 <= v <= last / 2:  # reset: restarted at 0 and counted up to v
            self.events.append((t, v, _RESET))
        else:  # a small step back (a correction, a preset): re-based here, nothing counted
            self.events.append((t, 0, _RESET))


def _merge(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _known(x: float, y: float, gaps: list[tuple[float, float]]) -> float:
    """Length of [x, y) outside the (sorted, disjoint) gaps."""
    n = y - x
    for g0, g1 in gaps:
        if g1 <= x:
            continue
        if g0 >= y:
            break
        n -= min(y, g1) - max(x, g0)
    return n


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _count(x: float | int) -> float | int:
    """A sum of counter increments for JSON: an integer when it is whole."""
    if isinstance(x, int):
        return x
    return int(x) if x.is_integer() else round(x, _SECONDS_DIGITS)


def _ratio(x: float | None) -> float | None:
    return None if x is None else round(x, _RATIO_DIGITS)


def _secs(x: float | None) -> float | None:
    return None if x is None else round(x, _SECONDS_DIGITS)


@dataclass(slots=True)
class _Timeline:
    """A state-like role: its value at the period start and its changes since (time order)."""

    cur: object = None  # value at the period start; None = unknown (no value yet)
    last: object = None  # last applied value
    last_t: float = -_INF
    events: list[tuple[float, object]] = field(default_factory=list)

    def take(self, a: float, b: float, gaps: list[tuple[float, float]]) -> list[tuple[object, float]]:
        """(value, known seconds) per segment of [a, b); the changes in it are consumed."""
        segs: list[tuple[object, float]] = []
        cur, x, n = self.cur, a, 0
        for t, v in self.events:
            if t >= b:
                break
            if cur is not None and t > x:
                segs.append((cur, _known(x, t, gaps)))
            cur, x, n = v, t, n + 1
        if cur is not None and b > x:
            segs.append((cur, _known(x, b, gaps)))
        del self.events[:n]
        self.cur = cur
        return segs


class MachineAnalyzer:
    """Running analysis of one machine; `summary(until)` closes a period and starts the next one."""

    __slots__ = (
        "_alarm",
        "_alarm_code",
        "_counters",
        "_gaps",
        "_invalid",
        "_open",
        "_out_of_order",
        "_start",
        "_state",
        "spec",
    )

    def __init__(self, spec: AnalysisSpec, start: float) -> None:
        if not math.isfinite(start):
            raise ValueError(f"start must be a finite time, not {start!r}")
        self.spec = spec
        self._start = float(start)
        self._state = _Timeline()
        self._alarm = _Timeline()  # values: True (an alarm is active) / False; an event with True is a new alarm
        self._alarm_code: object = None
        self._counters: dict[str, _Counter] = {
            role: _Counter(spec.counter_modulus) for role in COUNTER_ROLES if getattr(spec, role) is not None
        }
        self._gaps: list[list[float]] = []  # [t0, t1); t1 = inf while open
        self._open: list[float] | None = None
        self._out_of_order = 0
        self._invalid = 0

    @property
    def start(self) -> float:
        """Start of the current (open) period."""
        return self._start

    # -- input --------------------------------------------------------------------------------------

    def observe(self, role: str, value: object, t: float) -> None:
        """A value of `role` with source time `t` (epoch seconds). Bad values are counted, never raised."""
        if not math.isfinite(t):
            self._invalid += 1
            return
        if role == "state":
            if self.spec.state is None:
                return
            if self._open is not None:
                self._close_open(t)
            if not _state_key(value):
                self._invalid += 1
                return
            self._apply(self._state, value, t)
        elif role == "alarm":
            if self.spec.alarm is None:
                return
            if self._open is not None and self.spec.state is None:
                self._close_open(t)
            code = _alarm_code(value)
            if code is None:
                self._invalid += 1
                return
            tl = self._alarm
            if t < tl.last_t:
                self._out_of_order += 1
                return
            tl.last_t = t
            if code == self._alarm_code:
                return
            self._alarm_code = code
            active = code != 0  # a change to a non-zero code is a new alarm
            tl.events.append((t if t > self._start else self._start, active))
        else:
            c = self._counters.get(role)
            if c is None:
                if role not in ROLES:
                    raise ValueError(f"unknown role {role!r}; roles: {ROLES}")
                return
            v = _counter_value(value)
            if v is None:
                self._invalid += 1
                return
            if t < c.last_t:
                self._out_of_order += 1
                return
            c.last_t = t
            c.step(v, t if t > self._start else self._start)

    def _apply(self, tl: _Timeline, value: object, t: float) -> None:
        if t < tl.last_t:
            self._out_of_order += 1
            return
        tl.last_t = t
        if tl.last is not None and value == tl.last:
            return
        tl.last = value
        tl.events.append((t if t > self._start else self._start, value))

    def unknown(self, t0: float, t1: float | None) -> None:
        """Collection was interrupted: [t0, t1) is unknown time. `t1` None: open until the next state
        value (alarm value if no state is mapped) observed after this call — at that value's time, or
        at `t0` if it is older (a re-reported value: nothing changed meanwhile) — or until a later
        `unknown(t0, t1)` with the same `t0` gives the end."""
        if not math.isfinite(t0) or (t1 is not None and math.isnan(t1)):
            self._invalid += 1
            return
        if t1 is None:
            if self._open is None:
                self._open = [t0, _INF]
                self._gaps.append(self._open)
            return
        if self._open is not None and self._open[0] == t0:
            self._open[1] = max(t0, t1)
            self._open = None
            return
        if t1 > t0:
            self._gaps.append([t0, t1])

    def _close_open(self, t: float) -> None:
        assert self._open is not None
        self._open[1] = max(t, self._open[0])
        self._open = None

    # -- output -------------------------------------------------------------------------------------

    def summary(self, until: float) -> dict[str, Any]:
        """The period [start, until) as a JSON-able dict; the next period starts at `until`."""
        a, b = self._start, float(until)
        if not math.isfinite(b) or b < a:
            raise ValueError(f"until ({until!r}) must be a finite time not before the period start ({a!r})")
        spec = self.spec
        period = b - a
        gaps = _merge((max(g0, a), min(g1, b)) for g0, g1 in self._gaps if min(g1, b) > max(g0, a))
        self._gaps = [g for g in self._gaps if g[1] > b]
        missing: list[str] = []
        notes: list[str] = []

        # state time
        state_s: dict[str, float] | None = None
        running: float | None = None
        observed: float | None = None
        if spec.state is not None:
            segs = self._state.take(a, b, gaps)
            per_value: dict[object, float] = {}
            for v, s in segs:
                per_value[v] = per_value.get(v, 0.0) + s
            known = sum(per_value.values())
            unknown = max(0.0, period - known)
            observed = period - unknown
            running = sum(s for v, s in per_value.items() if v in spec.running)
            state_s = {}
            for v, s in per_value.items():
                k = str(v)
                state_s[k] = state_s.get(k, 0.0) + s
            state_s = {k: round(s, _SECONDS_DIGITS) for k, s in state_s.items()}
            state_s[UNKNOWN] = round(unknown + state_s.get(UNKNOWN, 0.0), _SECONDS_DIGITS)
        else:
            missing.append("state")

        # alarms
        alarms: int | None = None
        alarm_s: float | None = None
        if spec.alarm is not None:
            onsets = sum(1 for t, active in self._alarm.events if t < b and active)
            segs = self._alarm.take(a, b, gaps)
            alarms = onsets
            alarm_s = sum(s for active, s in segs if active)
        else:
            missing.append("alarm")

        # counters
        incs: dict[str, float | int] = {}
        resets: dict[str, int] = {}
        wraps: dict[str, int] = {}
        for role, c in self._counters.items():
            total: float | int = 0
            n = 0
            for t, d, kind in c.events:
                if t >= b:
                    break
                n += 1
                total += d
                if kind == _WRAP:
                    wraps[role] = wraps.get(role, 0) + 1
                elif kind == _RESET:
                    resets[role] = resets.get(role, 0) + 1
            del c.events[:n]
            incs[role] = total
        parts = incs.get("part_count")
        if parts is None:
            missing.append("part_count")
        if spec.ideal_cycle_s is None:
            missing.append("ideal_cycle_s")

        # availability
        availability: float | None = None
        if observed is not None and running is not None:
            if observed > 0:
                availability = running / observed
            else:
                notes.append("availability: no observed time in the period")

        # cycles and performance
        mean_cycle: float | None = None
        performance: float | None = None
        if parts is not None and running is not None:
            if parts > 0 and running > 0:
                mean_cycle = running / parts
            if spec.ideal_cycle_s is not None:
                if running > 0:
                    performance = spec.ideal_cycle_s * parts / running
                    if performance > 1:
                        notes.append("performance > 1: ideal_cycle_s may be too long")
                elif parts > 0:
                    notes.append("performance: parts counted without running time (check the state mapping)")
                else:
                    notes.append("performance: no running time in the period")

        # quality
        good_inc, scrap_inc = incs.get("good_count"), incs.get("scrap_count")
        if good_inc is None and scrap_inc is None:
            missing.append(QUALITY_KEYS)
        total_parts = parts if parts is not None else (
            good_inc + scrap_inc if good_inc is not None and scrap_inc is not None else None
        )  # fmt: skip
        good: float | int | None = None
        if total_parts is not None:
            if good_inc is not None:
                good = good_inc
            elif scrap_inc is not None:
                good = total_parts - scrap_inc
        quality: float | None = None
        if good is not None and total_parts is not None:
            if good < 0 or good > total_parts:
                notes.append("quality: good/scrap counts disagree with the part count; good clamped to [0, parts]")
                good = min(max(good, 0), total_parts)
            if total_parts > 0:
                quality = good / total_parts
            else:
                notes.append("quality: no parts counted in the period")

        # OEE = A × P × Q (= ideal_cycle_s × good / observed time)
        oee: float | None = None
        if availability is not None and performance is not None and quality is not None:
            oee = availability * performance * quality
        elif (
            availability is not None
            and parts == 0
            and spec.ideal_cycle_s is not None
            and (good_inc is not None or scrap_inc is not None)
        ):
            oee = 0.0  # observed time without a part made

        ignored = {"out_of_order": self._out_of_order, "invalid": self._invalid}
        self._out_of_order = self._invalid = 0
        self._start = b
        return {
            "machine": spec.machine,
            "start": _iso(a),
            "end": _iso(b),
            "period_s": round(period, _SECONDS_DIGITS),
            "observed_s": _secs(observed),
            "state_s": state_s,
            "running_s": _secs(running),
            "cycles": None if parts is None else _count(parts),
            "mean_cycle_s": _secs(mean_cycle),
            "ideal_cycle_s": spec.ideal_cycle_s,
            "alarms": alarms,
            "alarm_s": _secs(alarm_s),
            "good": None if good is None else _count(good),
            "scrap": None if good is None or total_parts is None else _count(total_parts - good),
            "availability": _ratio(availability),
            "performance": _ratio(performance),
            "quality": _ratio(quality),
            "oee": _ratio(oee),
            "missing": missing,
            "notes": notes,
            "resets": resets,
            "wraps": wraps,
            "ignored": ignored,
        }
