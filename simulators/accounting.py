"""The receiver's side of the delivery promise: was every value the server produced delivered, or
inside a gap of its element? Used by the end-to-end tests and the fault runs (bench/fault_*.py).

    ledger = Ledger.of(subscriber.messages())          # validated against the wire schema
    missing = ledger.unaccounted(written, until=...)   # written: node -> source times the server produced
    twice = ledger.reissued()                          # the same value under two different ids
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jsonschema
import orjson

from uploader import wire

_VALIDATOR = jsonschema.Draft202012Validator(wire.schema())


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Ledger:
    """Every message received, decoded and validated, grouped by lane."""

    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @classmethod
    def of(cls, received: Iterable[tuple[str, bytes]], *, validate: bool = True) -> Ledger:
        out = []
        for topic, payload in received:
            if topic.endswith("/online"):
                continue
            doc = orjson.loads(payload)
            doc, problems = wire.expand(doc)  # a version-3 message as the version-2 message it stands for
            if problems:
                raise ValueError(f"{topic}: {problems}")
            if validate:
                _VALIDATOR.validate(doc)
            out.append((topic, doc))
        return cls(out)

    def records(self, lane: str) -> list[dict[str, Any]]:
        return [r for _, m in self.messages if m["lane"] == lane for r in m["records"]]

    def unique(self, lane: str) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for r in self.records(lane):
            seen.setdefault(r["id"], r)
        return list(seen.values())

    def element_gaps(self) -> dict[str, list[tuple[datetime | None, datetime | None]]]:
        """Per node: the (start, end) of each gap of its element (inclusive; None: open on that side)."""
        node_of = {(r["shell"], r["path"]): r["node"] for r in self.records("data")}
        out: dict[str, list[tuple[datetime | None, datetime | None]]] = {}
        for g in self.unique("gap"):
            for e in g["elements"]:
                node = node_of.get((g["shell"], e["path"]))
                if node is not None:
                    start = ts(e["start"]) if e["start"] else None
                    end = ts(e["end"]) if e["end"] else None
                    out.setdefault(node, []).append((start, end))
        return out

    def unaccounted(
        self, written: Mapping[str, Sequence[datetime]], *, until: datetime | None = None
    ) -> list[tuple[str, datetime]]:
        """Values the server produced (per node, by source time) that neither arrived nor lie inside a
        gap of their element. Counted from each node's first delivered value (what was written
        before the agent first subscribed was never its to deliver) to `until` (default: the last
        value that arrived for that node)."""
        arrived: dict[str, set[datetime]] = {}
        for r in self.records("data"):
            if r["sourceTime"]:
                arrived.setdefault(r["node"], set()).add(ts(r["sourceTime"]))
        gaps = self.element_gaps()
        missing = []
        for node, times in written.items():
            got = arrived.get(node)
            if not got:
                continue
            first, last = min(got), until or max(got)
            for t in times:
                if first < t <= last and t not in got and not _covered(t, gaps.get(node, [])):
                    missing.append((node, t))
        return missing

    def reissued(self) -> dict[tuple[str, datetime], set[str]]:
        """Values that arrived under more than one id: duplicates a receiver cannot drop."""
        ids: dict[tuple[str, datetime], set[str]] = {}
        for r in self.records("data"):
            if r["sourceTime"]:
                ids.setdefault((r["node"], ts(r["sourceTime"])), set()).add(r["id"])
        return {k: v for k, v in ids.items() if len(v) > 1}


def _covered(t: datetime, gaps: list[tuple[datetime | None, datetime | None]]) -> bool:
    return any((start is None or start <= t) and (end is None or t <= end) for start, end in gaps)
