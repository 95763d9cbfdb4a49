"""`edge-agent check --live`: is every mapped point there on the server, and can the agent collect it?

For each source: connect as the agent would (security.connect: the same security, identity and
PKI), then ask the server about every point of the machines read from it, in batches
(adapters/opcua/inspect.py):
- the node exists, or the browse path resolves; if not, the server is walked once
  (adapters/opcua/browse.py) for a node with the same browse name or a similar node id to suggest;
- it is a Variable whose DataType is the configured `type` (a standard subtype such as Duration
  counts as its built-in type, as at run time) and whose ValueRank matches `array`;
- its AccessLevel and UserAccessLevel allow reading;
- the configured `sampling_ms` is supported: for a subscribed point, the server's revised sampling
  interval of a monitored item made as the collector makes it (created disabled, deleted again);
  for a polled point, the node's MinimumSamplingInterval;
- for each `control.allow` entry, that the node is writable;
- each `events` node exists and can be subscribed to for events.

Every problem comes with its fix. Exit status: 0 none, 1 any, 2 a source could not be reached.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aas_models.types import OPCUA_TYPES
from adapters.opcua import browse, inspect
from adapters.opcua.pki import Pki
from adapters.opcua.spec import NodeItem
from adapters.opcua.values import expected
from agent.config import Config, Source
from agent.shells import build_shells
from agent.wiring import application_uri, endpoint, plan

log = logging.getLogger(__name__)

# How much of a server is walked to find a suggestion for a node that is not there.
SUGGEST_MAX_NODES = 20_000
SUGGEST_MAX_SECONDS = 30.0
_SAMPLING_SLACK_MS = 0.5  # a revised interval this much above the configured one is the same


@dataclass(frozen=True, slots=True)
class Problem:
    machine: str
    point: str  # the point's path, "events ..." or "-" for the source itself
    problem: str
    fix: str


@dataclass(frozen=True, slots=True)
class SourceResult:
    id: str
    url: str
    reached: bool
    message: str  # "connected (None/None), 53 points in 0.4 s" or why it could not be reached
    points: int


@dataclass
class LiveReport:
    sources: list[SourceResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if any(not s.reached for s in self.sources):
            return 2
        return 1 if self.problems else 0


@dataclass(frozen=True, slots=True)
class _Target:
    machine: str
    path: str
    item: NodeItem


def _access(level: int) -> str:
    words = [
        w
        for w, bit in (("read", browse.READ), ("write", browse.WRITE), ("history", browse.HISTORY_READ))
        if level & bit
    ]
    return ", ".join(words) or "none"


async def check_live(cfg: Config, config_path: Path | None = None) -> LiveReport:
    """Check every source of `cfg` in turn (one session each); see the module docstring."""
    report = LiveReport()
    env = build_shells(cfg)
    p = plan(cfg, env.shells)
    by_handle = {b.handle: (b.equipment, b.path) for b in p.bindings}
    for source in cfg.sources:
        targets = [_Target(*by_handle[i.handle], i) for i in p.items.get(source.id, [])]
        events = [(e.equipment, e.name, e.node) for e in p.events if e.source == source.id]
        await _check_source(cfg, source, targets, events, report, config_path)
    return report


async def _check_source(
    cfg: Config,
    source: Source,
    targets: list[_Target],
    events: list[tuple[str, str, str]],
    report: LiveReport,
    config_path: Path | None,
) -> None:
    app_uri = application_uri(cfg)
    ep = endpoint(source, app_uri, config_path)
    pki = own = None
    if source.security.policy != "None":
        pki = Pki(cfg.agent.data_dir / "pki")
        own = pki.ensure_own(app_uri)
    started = time.monotonic()
    try:
        async with inspect.session(ep, pki, own) as server:
            problems = await _check_points(server, source, targets, events, cfg)
            took = time.monotonic() - started
            message = f"connected ({server.security}), {len(targets)} points checked in {took:.1f} s"
    except inspect.Unreachable as e:
        report.sources.append(SourceResult(source.id, source.endpoint, False, str(e), 0))
        return
    except inspect.FAULTS as e:
        why = f"{type(e).__name__}: {e}".rstrip(": ")
        report.sources.append(SourceResult(source.id, source.endpoint, False, f"the session failed: {why}", 0))
        return
    report.problems += problems
    report.sources.append(SourceResult(source.id, source.endpoint, True, message, len(targets)))


async def _check_points(
    server: inspect.Session,
    source: Source,
    targets: list[_Target],
    events: list[tuple[str, str, str]],
    cfg: Config,
) -> list[Problem]:
    lim = await server.limits(source.max_items_per_call)
    asked = [(t.item.node, t.item.by_path) for t in targets] + [(node, False) for _, _, node in events]
    facts = await server.inspect(asked, lim)
    point_facts, event_facts = facts[: len(targets)], facts[len(targets) :]
    problems: list[Problem] = []
    writable_needed = {(a.machine, a.element) for a in cfg.control.allow}
    ok: list[tuple[_Target, inspect.NodeFacts]] = []
    missing: list[tuple[_Target, inspect.NodeFacts]] = []
    for t, f in zip(targets, point_facts, strict=True):
        if f.node_id is None:
            missing.append((t, f))
            continue
        found = _variable_problems(t, f, (t.machine, t.path) in writable_needed)
        problems += found
        if not found:
            ok.append((t, f))
    if missing:
        suggest = await _Suggestions.walk(server, lim)
        problems += [_missing(t, f, suggest, source) for t, f in missing]
    subscribed = [(t.item, f.node_id) for t, f in ok if t.item.mode == "subscribe" and f.node_id is not None]
    revised = await server.sampling(subscribed, lim.monitored)
    for t, f in ok:
        problems += _sampling_problems(t, f, revised.get(t.item.handle), source)
    for (machine, name, node), f in zip(events, event_facts, strict=True):
        where = f"events {name}"
        if f.node_id is None:
            problems.append(
                Problem(
                    machine,
                    where,
                    f"node {node} not found ({f.missing})",
                    f"give the node id of the object whose events to collect (edge-agent browse {source.endpoint})",
                )
            )
        elif not f.event_notifier & browse.SUBSCRIBE_TO_EVENTS:
            problems.append(
                Problem(
                    machine,
                    where,
                    f"{node} ({f.node_class}) does not notify events (EventNotifier {f.event_notifier})",
                    "give an object that notifies events: the machine's object, or i=2253 (the Server object)",
                )
            )
    order = {(t.machine, t.path): i for i, t in enumerate(targets)}
    return sorted(problems, key=lambda p: order.get((p.machine, p.point), len(order)))


def _variable_problems(t: _Target, f: inspect.NodeFacts, needs_write: bool) -> list[Problem]:
    out: list[Problem] = []

    def add(problem: str, fix: str) -> None:
        out.append(Problem(t.machine, t.path, problem, fix))

    node = t.item.node
    if f.node_class != "Variable":
        add(
            f"node {node} is an {f.node_class or 'unknown node class'}, not a Variable",
            f"map one of the variables below it: edge-agent browse <endpoint> --root {f.node_id}",
        )
        return out
    have = f.data_type
    want = expected(t.item.opcua_type)
    if have is None:
        add(
            f"type {t.item.opcua_type} but the server's DataType is {f.data_type_name or '(none)'} "
            f"({f.data_type_id or 'not given'}), not a built-in type",
            "the agent maps built-in types only: remove the point",
        )
    elif have != want:
        fix = (
            f"set type: {have}"
            if have in OPCUA_TYPES
            else f"the agent cannot map {f.data_type_name or have}: remove the point"
        )
        add(f"type {t.item.opcua_type} but the server says {have}", fix)
    rank = f.value_rank
    is_array = rank is not None and rank > 0
    if rank is not None and rank >= 2:
        add(
            f"the server's value is a {rank}-dimensional array",
            "the agent maps scalars and one-dimensional arrays: remove the point",
        )
    elif is_array != t.item.is_array:
        if is_array:
            add(f"the server's value is an array (ValueRank {rank}) but the point is not", "set array: true")
        else:
            add(
                f"array: true but the server's value is a single value (ValueRank {rank})",
                "set array: false (or remove it)",
            )
    levels = f"AccessLevel: {_access(f.access_level)}, for this user: {_access(f.user_access_level)}"
    if not f.access_level & f.user_access_level & browse.READ:
        add(
            f"the server does not let the agent read it ({levels})",
            "give the agent's user read access on the server, or remove the point",
        )
    if needs_write and not f.access_level & f.user_access_level & browse.WRITE:
        add(
            f"control.allow lists it, but the server does not let the agent write it ({levels})",
            "make it writable for the agent's user on the server, or remove its control.allow entry",
        )
    return out


def _sampling_problems(t: _Target, f: inspect.NodeFacts, s: inspect.Sampling | None, source: Source) -> list[Problem]:
    item = t.item
    if item.mode == "subscribe":
        if s is None:
            return []
        if s.status != "Good":
            fix = "remove its deadband, or set mode: poll" if item.deadband is not None else "set mode: poll"
            return [Problem(t.machine, t.path, f"the server will not monitor it ({s.status})", fix)]
        if item.sampling_ms and s.revised_ms is not None and s.revised_ms > item.sampling_ms + _SAMPLING_SLACK_MS:
            return [
                Problem(
                    t.machine,
                    t.path,
                    f"sampling_ms {item.sampling_ms:g} but the server samples it at best every {s.revised_ms:g} ms "
                    "(its revised sampling interval)",
                    f"set sampling_ms: {s.revised_ms:g} (or leave it out: the publishing interval)",
                )
            ]
        return []
    period = item.sampling_ms or source.poll_interval_ms
    minimum = f.minimum_sampling_ms
    if minimum is not None and minimum > 0 and period + _SAMPLING_SLACK_MS < minimum:
        return [
            Problem(
                t.machine,
                t.path,
                f"polled every {period:g} ms but the server updates it at most every {minimum:g} ms "
                "(its MinimumSamplingInterval)",
                f"set sampling_ms: {minimum:g}",
            )
        ]
    return []


def _missing(t: _Target, f: inspect.NodeFacts, suggest: _Suggestions, source: Source) -> Problem:
    item = t.item
    what = f"browse path {item.node} does not resolve" if item.by_path else f"node {item.node} not found"
    found = suggest.best(t.path, item.node, item.by_path)
    if found is not None:
        candidate, why = found
        key = "browse_path" if item.by_path else "node"
        fix = f'did you mean {candidate} ({why})? set {key}: "{candidate}"'
    else:
        look = f"find it with edge-agent browse {source.endpoint}, or remove the point"
        name = t.path.rsplit(".", 1)[-1]
        fix = f"no variable named {name} and no similar id on the server: {look}" if suggest.walked else look
    return Problem(t.machine, t.path, f"{what} ({f.missing})", fix)


_SEPARATORS = re.compile(r"[./:;=\\]")


class _Suggestions:
    """The server's variables, to suggest a node for one that is not there."""

    def __init__(self, result: browse.BrowseResult | None) -> None:
        self.walked = result is not None
        self.ids: list[str] = []
        self.paths: list[str] = []
        self.by_name: dict[str, list[tuple[str, str]]] = {}  # lower-case browse name -> [(node id, browse path)]
        for v in result.variables if result is not None else []:
            bpath = result.browse_path(v) if result is not None else None
            self.ids.append(v.node_id)
            if bpath:
                self.paths.append(bpath)
            self.by_name.setdefault(v.names[-1].lower(), []).append((v.node_id, bpath or ""))

    @classmethod
    async def walk(cls, server: inspect.Session, lim: browse.Limits) -> _Suggestions:
        try:
            result = await server.walk(max_nodes=SUGGEST_MAX_NODES, max_seconds=SUGGEST_MAX_SECONDS, limits_=lim)
        except inspect.FAULTS:  # only the suggestions are lost
            log.debug("walking the server for suggestions failed", exc_info=True)
            return cls(None)
        return cls(result)

    def best(self, path: str, node: str, by_path: bool) -> tuple[str, str] | None:
        """(a node id or browse path to suggest, why), or None."""
        names = {path.rsplit(".", 1)[-1].lower()}
        tail = _SEPARATORS.split(node)[-1].lower()
        if tail:
            names.add(tail)
        same = [c for n in names for c in self.by_name.get(n, [])]
        index = 1 if by_path else 0
        same = [c for c in same if c[index]]
        if same:
            pick = max(same, key=lambda c: difflib.SequenceMatcher(None, node, c[index]).ratio())
            return pick[index], "same browse name"
        near = difflib.get_close_matches(node, self.paths if by_path else self.ids, n=1, cutoff=0.8)
        if near:
            return near[0], "a similar browse path" if by_path else "a similar node id"
        return None


def print_report(report: LiveReport, config_path: Path, echo: Callable[[str], None]) -> None:
    """The sources, then a table of problems with their fixes."""
    for s in report.sources:
        echo(f"{s.id} {s.url}: {s.message}")
    checked = sum(s.points for s in report.sources)
    if not report.problems:
        if report.exit_code == 0:
            echo(f"{config_path}: live check OK — {checked} points found, readable and of the configured type")
        return
    rows = [("MACHINE", "POINT", "PROBLEM", "FIX")] + [(p.machine, p.point, p.problem, p.fix) for p in report.problems]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    echo(f"{config_path}: {len(report.problems)} problem(s) in {checked} points:")
    for r in rows:
        echo("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])


def run(cfg: Config, config_path: Path, echo: Callable[[str], None]) -> int:
    """Check `cfg` live and print the report; returns the exit status."""
    report = asyncio.run(check_live(cfg, config_path.resolve()))
    print_report(report, config_path, echo)
    return report.exit_code
