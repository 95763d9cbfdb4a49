"""What a reload (SIGHUP, `POST /reload`, `edge-agent reload`) changes in the running agent, and what
waits for a restart.

Applied in place, without touching anything else (agent/app.py `Agent.reload`):
- points and event sources added, removed or changed, in any equipment, and equipment added or
  removed: only the monitored items concerned are created or deleted, in the running OPC UA
  sessions; every other element keeps collecting and misses nothing;
- the AAS model (names, nameplates, analysis settings): rebuilt, current values carried over;
- sinks added, removed or changed: a changed sink keeps its buffer and what is in it;
- sources added or removed; a source whose connection settings changed starts a new session (its
  elements get a gap record for the moment between).

Only a restart applies the rest: `site`, `agent`, `buffer`, `api`, `aas`, `control`. A reload that
changes any of them is refused whole, naming them, and nothing is changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from agent.config import Config, Equipment

RESTART_ONLY = ("version", "site", "agent", "buffer", "api", "aas", "control")


@dataclass
class Changes:
    """The difference between two configs, by name: `equipment/path` for points, `equipment!name` for
    event sources, ids for sinks, sources and equipment."""

    restart: list[str] = field(default_factory=list)  # keys only a restart applies
    elements_added: list[str] = field(default_factory=list)
    elements_removed: list[str] = field(default_factory=list)
    elements_changed: list[str] = field(default_factory=list)
    equipment_changed: list[str] = field(default_factory=list)  # names, nameplate, analysis, ids
    sinks_added: list[str] = field(default_factory=list)
    sinks_removed: list[str] = field(default_factory=list)
    sinks_changed: list[str] = field(default_factory=list)
    sources_added: list[str] = field(default_factory=list)
    sources_removed: list[str] = field(default_factory=list)
    sources_changed: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(v for v in vars(self).values())

    def as_dict(self) -> dict[str, list[str]]:
        """The non-empty lists, camelCase, for the status record and the API's answer."""
        out: dict[str, list[str]] = {}
        for name, value in vars(self).items():
            if value:
                head, *rest = name.split("_")
                out[head + "".join(w.title() for w in rest)] = list(value)
        return out

    def summary(self) -> str:
        parts = []
        for name, value in vars(self).items():
            if value and name != "restart":
                shown = ", ".join(value[:5]) + (f" and {len(value) - 5} more" if len(value) > 5 else "")
                parts.append(f"{name.replace('_', ' ')}: {shown}")
        return "; ".join(parts) or "nothing changed"


def compare(old: Config, new: Config) -> Changes:
    out = Changes()
    for key in RESTART_ONLY:
        out.restart += _differences(key, getattr(old, key), getattr(new, key))
    _by_id(old.sinks, new.sinks, out.sinks_added, out.sinks_removed, out.sinks_changed)
    _by_id(old.sources, new.sources, out.sources_added, out.sources_removed, out.sources_changed)
    before = {e.id: e for e in old.equipment}
    after = {e.id: e for e in new.equipment}
    for eid in after.keys() | before.keys():
        a, b = before.get(eid), after.get(eid)
        old_elements = _elements(old, a) if a is not None else {}
        new_elements = _elements(new, b) if b is not None else {}
        out.elements_added += [k for k in new_elements if k not in old_elements]
        out.elements_removed += [k for k in old_elements if k not in new_elements]
        out.elements_changed += [k for k in new_elements if k in old_elements and new_elements[k] != old_elements[k]]
        if a is not None and b is not None and _rest(a) != _rest(b):
            out.equipment_changed.append(eid)
    for name in vars(out):
        if name != "restart":
            getattr(out, name).sort()
    return out


def _differences(key: str, a: Any, b: Any) -> list[str]:
    """`key`, or its changed fields (`api.port`), when `a` and `b` differ."""
    if a == b:
        return []
    if isinstance(a, BaseModel) and isinstance(b, BaseModel) and type(a) is type(b):
        return [f"{key}.{f}" for f in type(a).model_fields if getattr(a, f) != getattr(b, f)] or [key]
    return [key]


def _by_id(old: Sequence[Any], new: Sequence[Any], added: list[str], removed: list[str], changed: list[str]) -> None:
    a = {x.id: x for x in old}
    b = {x.id: x for x in new}
    added += [i for i in b if i not in a]
    removed += [i for i in a if i not in b]
    changed += [i for i in b if i in a and a[i] != b[i]]


def _elements(cfg: Config, e: Equipment) -> dict[str, tuple[Any, ...]]:
    """Each point and event source of `e`, with what decides how it is collected and recorded."""
    where = (e.source, cfg.aas_id(e))
    out: dict[str, tuple[Any, ...]] = {f"{e.id}/{p.path}": (*where, p) for p in e.points}
    out |= {f"{e.id}!{ev.name}": (*where, ev) for ev in e.events}
    return out


def _rest(e: Equipment) -> Equipment:
    """The equipment without its points and event sources."""
    return e.model_copy(update={"points": (), "events": ()})
