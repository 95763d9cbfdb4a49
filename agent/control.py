"""The guard of every control write: what may be written to equipment, and the record that it was.

`write()` refuses, without connecting to anything, when control is disabled (`control.enabled`),
when the machine's element is not in `control.allow`, when the value text is not a value of the
point's type, or when it is outside the entry's `min`/`max` or not in its `values`; the message
names what is allowed. Otherwise it writes through adapters/opcua/write.py, to the point's own
node, over the same endpoint, PKI and application URI as the agent's collection.

Every attempt that reached the server, accepted or refused, is recorded in the usage spool
(agent/usage.py): a DO6005 (update) usage event, by `user` from `ip`, with the bytes of the value
text, and in the same line the write's outcome, which the agent turns into a `control-write`
status record. Refusals of the guard and unreachable servers wrote nothing and record nothing.
A plant action is not undone when its record cannot be kept: the result says so instead.
See docs/control.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from adapters.opcua.pki import Pki
from adapters.opcua.write import UNCERTAIN, Unreachable, WriteResult, write_value
from agent import usage
from agent.config import Config, Point
from agent.config_control import FLOATS, INTEGER_RANGES, Allow, parse_value, text_of
from agent.wiring import application_uri, endpoint

log = logging.getLogger(__name__)

# written: the server took it; refused: the server said no; uncertain: the connection was lost after
# the write was sent; unreachable: no session, nothing written; not-allowed: the guard said no.
Outcome = Literal["written", "refused", "uncertain", "unreachable", "not-allowed"]


@dataclass(frozen=True, slots=True)
class ControlResult:
    outcome: Outcome
    message: str  # for the person: what happened, or what is allowed
    machine: str
    element: str
    write: WriteResult | None = None  # when the server was reached
    warning: str = ""  # the write was made but its record could not be kept

    @property
    def ok(self) -> bool:
        return self.outcome == "written"

    @property
    def logged(self) -> bool:
        return self.write is not None and not self.warning


def allowed(entry: Allow, opcua_type: str) -> str:
    """What the entry allows, in words."""
    if entry.values is not None:
        return "one of " + ", ".join(text_of(v) for v in entry.values)
    if entry.min is not None and entry.max is not None:
        return f"{entry.min:g} to {entry.max:g}"
    return "true or false" if opcua_type == "Boolean" else "any text"


def check(cfg: Config, machine: str, element: str, text: str) -> tuple[Point, str, object] | str:
    """(the point, its source id, the parsed value) if the guard allows the write; else why not."""
    control = cfg.control
    if not control.enabled:
        return "control writes are disabled (control.enabled is false in the config): nothing is written"
    entry = control.entry(machine, element)
    if entry is None:
        listed = "; ".join(a.key for a in control.allow) or "nothing"
        return f"{machine} {element} is not allow-listed in control.allow; allowed: {listed}"
    equipment = next(e for e in cfg.equipment if e.id == machine)  # the config's check: it exists
    point = next(p for p in equipment.points if p.path == element)
    if point.node is None:
        return f"{machine} {element} is addressed by browse_path; a write needs its node id"
    what = f"{machine} {element} ({point.type}) allows {allowed(entry, point.type)}"
    try:
        value = parse_value(text, point.type)
    except ValueError as e:
        return f"{e}; {what}"
    if entry.values is not None:
        if value not in [parse_value(text_of(v), point.type) for v in entry.values]:
            return f"{text} is not allowed; {what}"
    elif point.type in INTEGER_RANGES or point.type in FLOATS:
        assert isinstance(value, int | float)  # a number: parse_value of a numeric type
        if (entry.min is not None and value < entry.min) or (entry.max is not None and value > entry.max):
            return f"{text.strip()} is outside the limits; {what}"
    return point, equipment.source, value


async def write(
    cfg: Config, machine: str, element: str, value_text: str, *, user: str, ip: str, via: str = "edge-agent write"
) -> ControlResult:
    """Write `value_text` to `machine`'s `element` if the guard allows it; record every attempt that
    reached the server. `via` names the command or API for the usage event's action."""
    checked = check(cfg, machine, element, value_text)
    if isinstance(checked, str):
        log.warning("control write refused by the guard: %s", checked)
        return ControlResult("not-allowed", checked, machine, element)
    point, source_id, value = checked
    assert point.node is not None  # check() refuses browse paths
    source = next(s for s in cfg.sources if s.id == source_id)
    app_uri = application_uri(cfg)
    pki = Pki(cfg.agent.data_dir / "pki")
    own = pki.ensure_own(app_uri)
    try:
        result = await write_value(
            endpoint(source, app_uri), point.node, point.type, value, pki=pki, own_certificate=own
        )
    except Unreachable as e:
        log.error("control write to %s %s: %s", machine, element, e)
        return ControlResult("unreachable", str(e), machine, element)
    outcome: Outcome = "written" if result.ok else "uncertain" if result.status == UNCERTAIN else "refused"
    control: dict[str, Any] = {
        "machine": machine,
        "element": element,
        "node": point.node,
        "old": result.old,
        "new": result.new,
        "readBack": result.read_back,
        "result": outcome,
        "status": result.status,
    }
    warning = ""
    nbytes = min(len(value_text.encode("utf-8")), 10**9 - 1)
    try:
        usage.record(
            cfg.agent.data_dir, usage.UPDATE, nbytes, f"{via} {machine} {element}", user=user, ip=ip, control=control
        )
    except (OSError, ValueError) as e:
        warning = f"warning: the write was made but could not be logged in {usage.spool_dir(cfg.agent.data_dir)}: {e}"
        log.error("%s", warning)
    message = _message(machine, element, result, outcome)
    (log.info if result.ok else log.warning)("control write by %s from %s: %s", user, ip, message)
    return ControlResult(outcome, message, machine, element, result, warning)


def _message(machine: str, element: str, r: WriteResult, outcome: Outcome) -> str:
    where = f"{machine} {element} ({r.node})"
    if outcome == "written":
        return f"{where}: {r.old!r} -> {r.new!r} (read back {r.read_back!r}): written ({r.status})"
    extra = f"; {r.detail}" if r.detail else ""
    if outcome == "uncertain":
        return f"{where}: {r.old!r} -> {r.new!r}: not confirmed, the server may or may not have taken it{extra}"
    return f"{where}: the server refused the write of {r.new!r}: {r.status}; the value was {r.old!r}{extra}"
