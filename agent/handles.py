"""The number the running agent gives each configured element (its "handle").

One place, so the adapter's items, the pipeline's bindings and the statistics agree on it, and so
a reload (agent/reload.py) keeps the number of every element it did not remove: an element's
monitored item, its last value and its open gap are all found by that number.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.config import Config

Key = tuple[str, str, str]  # (equipment id, "point" or "event", idShort path or event source name)


def point_key(equipment: str, path: str) -> Key:
    return (equipment, "point", path)


def event_key(equipment: str, name: str) -> Key:
    return (equipment, "event", name)


def assign(cfg: Config, previous: Mapping[Key, int] | None = None) -> dict[Key, int]:
    """A handle per point and event source: the one in `previous` where the key is there, else the next
    number above every handle given so far (so a removed element's number is never reused for another).
    Without `previous`: 1, 2, 3… in config order, points of an equipment before its events."""
    previous = previous or {}
    out: dict[Key, int] = {}
    free = max(previous.values(), default=0) + 1
    for e in cfg.equipment:
        keys = [point_key(e.id, p.path) for p in e.points] + [event_key(e.id, ev.name) for ev in e.events]
        for key in keys:
            h = previous.get(key)
            if h is None:
                h, free = free, free + 1
            out[key] = h
    return out
