"""A browsed address space (adapters/opcua/browse.py) as a config file that runs as it is.

The YAML is written as text, so that every point carries its comments: the variable's
description, AccessLevel, xs: value type, and the browse_path that would address it instead of its
node id. What the agent cannot collect (a DataType it does not map, a matrix, a node the session
may not read) is written commented out, with the reason. One equipment per object right below the
browse root (variables directly below the root make one more); paths are the browse names below
that object, made valid idShorts (docs/configuration.md, points.path) and unique within it.

The config has placeholders where only a person knows the answer (site, nameplate) and a file sink,
so `edge-agent check` and `edge-agent run` take it unchanged; docs/supplier-guide.md says what to
edit before production.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aas_models.types import OPCUA_TYPES, xs_type
from adapters.opcua.browse import SUBSCRIBE_TO_EVENTS, BrowseResult, ObjectNode, Variable
from agent.config_base import ID_SHORT, PLAIN_ID

MAX_ID_SHORT = 120  # AAS allows 128; room for a "_2" that makes it unique
_NOT_ID_SHORT = re.compile(r"[^A-Za-z0-9_]+")
_NOT_PLAIN_ID = re.compile(r"[^a-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class Options:
    """What the written config says beyond what was browsed."""

    endpoint: str
    site: str = "my-site"
    source_id: str = "opcua"
    data_dir: str = "data"
    sink_path: str = "data/records.jsonl"
    username: str | None = None
    password_env: str | None = None
    allow_plaintext_password: bool = False
    security_policy: str = "None"
    security_mode: str = "None"
    filter: str | None = None  # only variables whose browse path or node id contains this (any case)
    one_machine: bool = False  # everything below the root is one machine (the root is the machine)
    command: str = "edge-agent browse"


@dataclass
class Mapping:
    text: str
    equipment: int = 0
    points: int = 0
    not_mapped: list[tuple[str, str]] = field(default_factory=list)  # (node id, why)
    filtered_out: int = 0


@dataclass(frozen=True, slots=True)
class _Point:
    variable: Variable
    path: str
    reason: str | None  # why it is not mapped; None: mapped


def id_short(name: str) -> str:
    """`name` as one idShort: letters, digits and '_', a letter first, 2 or more characters."""
    s = _NOT_ID_SHORT.sub("_", name).strip("_")
    if not s:
        s = "Node"
    if not s[0].isalpha():
        s = f"N{s}" if s[0].isdigit() else f"N_{s}"
    if len(s) < 2:
        s += "_"
    s = s[:MAX_ID_SHORT]
    assert ID_SHORT.match(s), s
    return s


def plain_id(name: str) -> str:
    """`name` as an equipment id (docs/configuration.md, equipment.id): lower case, '_ - .' kept."""
    s = _NOT_PLAIN_ID.sub("-", name.lower()).strip("-_.")
    s = s or "equipment"
    assert PLAIN_ID.match(s), s
    return s


def unsupported(v: Variable) -> str | None:
    """Why the agent cannot collect `v` as it is, or None."""
    if not v.readable:
        return f"the server does not let this session read it (AccessLevel {access(v)})"
    if v.data_type is None:
        return (
            f"DataType {v.data_type_name} ({v.data_type_id or 'not given'}) is not an OPC UA built-in type; "
            "the agent maps built-in types only"
        )
    if v.data_type not in OPCUA_TYPES:
        return f"DataType {v.data_type_name} is not a type the agent maps (it maps {', '.join(OPCUA_TYPES)})"
    if v.value_rank >= 2:
        return f"a {v.value_rank}-dimensional array; the agent maps scalars and one-dimensional arrays"
    return None


def access(v: Variable) -> str:
    words = [w for w, on in (("read", v.readable), ("write", v.writable), ("history", v.historizing)) if on]
    return ", ".join(words) or "none"


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is YAML's)."""
    return json.dumps(text, ensure_ascii=False)


def _comment(text: str) -> str:
    return " ".join(text.split())


def _paths(variables: Sequence[Variable], skip: int) -> list[str]:
    """idShort paths from the browse names below the equipment's object: valid, unique, and no element
    also a collection (an AAS element is either)."""
    raw = [".".join(id_short(n) for n in v.names[skip:]) or id_short(v.names[-1]) for v in variables]
    collections = {p.rsplit(".", i)[0] for p in raw for i in range(1, p.count(".") + 1)}
    used: set[str] = set()
    out: list[str] = []
    for p in raw:
        if p in collections:
            p += "_Value"
        candidate, n = p, 1
        while candidate in used or candidate in collections:
            n += 1
            candidate = f"{p}_{n}"
        used.add(candidate)
        out.append(candidate)
    return out


def _matches(v: Variable, text: str | None) -> bool:
    if not text:
        return True
    t = text.lower()
    return t in "/".join(v.names).lower() or t in v.node_id.lower()


def render(result: BrowseResult, opts: Options, now: datetime | None = None) -> Mapping:
    """The config text for `result`."""
    variables = [v for v in result.variables if _matches(v, opts.filter)]
    filtered_out = len(result.variables) - len(variables)
    tops = {o.path[0]: o for o in result.top_objects}
    groups: dict[str | None, list[Variable]] = {}
    for v in variables:
        key = v.path[0] if len(v.path) >= 2 and v.path[0] in tops and not opts.one_machine else None
        groups.setdefault(key, []).append(v)
    out = Mapping(text="", filtered_out=filtered_out)
    lines = _header(result, opts, now or datetime.now(UTC), len(variables), filtered_out)
    lines += _site_and_source(opts)
    lines.append("equipment:")
    ids: set[str] = set()
    order = [o.path[0] for o in result.top_objects if o.path[0] in groups] + ([None] if None in groups else [])
    for key in order:
        members = groups[key]
        obj = tops.get(key) if key is not None else None
        name = obj.name if obj is not None else (result.root_path[-1].split(":", 1)[-1] if result.root_path else "root")
        eid = plain_id(name)
        base, n = eid, 1
        while eid in ids:
            n += 1
            eid = f"{base}-{n}"
        ids.add(eid)
        points = [_Point(v, p, unsupported(v)) for v, p in zip(members, _paths(members, 1 if obj else 0), strict=True)]
        out.not_mapped += [(p.variable.node_id, p.reason) for p in points if p.reason]
        mapped = sum(1 for p in points if p.reason is None)
        if mapped:
            out.equipment += 1
            out.points += mapped
        lines += _equipment(eid, name, obj, points, opts, result)
    if not out.equipment:
        lines.append("  []  # nothing the agent can map was found: see the comments above, and browse another --root")
    lines += _sinks(opts)
    out.text = "\n".join(lines) + "\n"
    return out


def _header(result: BrowseResult, opts: Options, now: datetime, variables: int, filtered_out: int) -> list[str]:
    where = "/".join(result.root_path) if result.root_path else result.root_id
    lines = [
        f"# Written by `{_comment(opts.command)}`",
        f"# on {now.strftime('%Y-%m-%d %H:%M:%S')} UTC from {opts.endpoint}, starting at {where} ({result.root_id}):",
        f"# {result.nodes_seen:,} nodes, {variables:,} variables in {result.elapsed_s:.2f} s.",
    ]
    if filtered_out:
        lines.append(f"# --filter {opts.filter!r} left out {filtered_out:,} variables.")
    if result.stopped:
        lines.append(
            f"# INCOMPLETE: the walk {result.stopped}; {result.not_walked:,} nodes were found but not walked. "
            "Raise --max-nodes / --timeout, or start at a deeper --root."
        )
    for e in result.errors[:20]:
        lines.append(f"# not walked: {_comment(e)}")
    lines += [
        "#",
        "# It runs as it is (`edge-agent run -c THIS-FILE`; values go to the file sink at the end). Before",
        "# production: set site, each machine's nameplate (the TODO lines), delete the points you do not",
        "# need, rename paths, check units, replace the file sink; then `edge-agent check -c THIS-FILE --live`.",
        "# Every key: docs/configuration.md. Step by step: docs/supplier-guide.md.",
        "version: 1",
    ]
    return lines


def _site_and_source(opts: Options) -> list[str]:
    lines = [
        "site:",
        f"  id: {_q(opts.site)}  # TODO: your site id (letters, digits, _ - .): in topics and AAS ids",
        "agent:",
        f"  data_dir: {_q(opts.data_dir)}  # buffers and the agent's certificate (pki/); relative: to where it runs",
        "sources:",
        f"  - id: {_q(opts.source_id)}",
        f"    endpoint: {_q(opts.endpoint)}",
    ]
    if opts.security_policy != "None":
        lines.append(f"    security: {{policy: {opts.security_policy}, mode: {opts.security_mode}}}")
    if opts.username:
        lines.append(f"    username: {_q(opts.username)}")
        if opts.password_env:
            env = opts.password_env
            lines.append(f"    password: ${{{env}}}  # from the environment variable {env}, never written here")
        if opts.allow_plaintext_password:
            lines.append("    allow_plaintext_password: true  # the endpoint would not encrypt the password")
    else:
        lines.append("    # username: collector")
        lines.append("    # password: ${OPCUA_PASSWORD}")
    return lines


def _equipment(
    eid: str, name: str, obj: ObjectNode | None, points: list[_Point], opts: Options, result: BrowseResult
) -> list[str]:
    mapped = [p for p in points if p.reason is None]
    block: list[str] = []
    if obj is not None:
        where = f"object {obj.path[0]} ({obj.node_id})"
    else:
        where = f"{'everything' if opts.one_machine else 'the variables right'} below {result.root_id}"
    block.append(f"  # {where}" + (f": {_comment(obj.description)}" if obj and obj.description else ""))
    block += [
        f"  - id: {_q(eid)}",
        f"    name: {_q(name)}",
        f"    source: {_q(opts.source_id)}",
        "    nameplate:  # TODO: from the machine's name plate (Digital Nameplate 3.0)",
        '      manufacturer_name: "TODO manufacturer"',
        f"      product_designation: {_q((obj.description if obj and obj.description else name)[:200])}",
        f'      uri_of_product: "https://example.com/TODO/{eid}"',
        f'      order_code: "TODO-{eid}"',
    ]
    if obj is not None and obj.event_notifier & SUBSCRIBE_TO_EVENTS:
        block += [
            "    # It notifies events (alarms): to collect them on the event lane, remove the '#' of the next 2 lines.",
            "    # events:",
            f"    #   - {{node: {_q(obj.node_id)}, name: alarms}}",
        ]
    block.append("    points:")
    for p in points:
        block += _point(p, result)
    if not mapped:
        # A machine without points is not valid: keep it, but commented out, with why.
        why = f"none of its {len(points)} variables can be collected (see each)"
        return [f"  # NOT MAPPED: {why}", *("  # " + line[2:] if line.strip() else line for line in block)]
    return block


def _point(p: _Point, result: BrowseResult) -> list[str]:
    v = p.variable
    lines: list[str] = []
    if v.description and v.description != v.names[-1]:
        lines.append(f"      # {_comment(v.description)}")
    facts = [f"access: {access(v)}"]
    if v.data_type in OPCUA_TYPES:
        facts.append(xs_type(v.data_type) + ("[]" if v.value_rank >= 1 else ""))
    elif v.data_type_name:
        facts.append(f"DataType {v.data_type_name}")
    if v.minimum_sampling_ms is not None and v.minimum_sampling_ms > 0:
        facts.append(f"MinimumSamplingInterval {v.minimum_sampling_ms:g} ms")
    if v.value_rank in (-3, -2, 0):
        facts.append(f"ValueRank {v.value_rank}: may carry arrays, mapped as a single value")
    bpath = result.browse_path(v)
    original = "/".join(v.path)
    if bpath:
        lines.append(f"      # {'; '.join(facts)}; or by path: browse_path: {_q(bpath)}")
    else:
        lines.append(f"      # {'; '.join(facts)}; browse names: {_comment(original)}")
    body = [f"- node: {_q(v.node_id)}", f"  path: {p.path}"]
    if v.data_type in OPCUA_TYPES:
        body.append(f"  type: {v.data_type}")
    if v.value_rank >= 1:
        body.append("  array: true")
    if v.unit:
        body.append(f"  unit: {_q(v.unit)}")
    if p.reason is None:
        lines += [f"      {line}" for line in body]
    else:
        lines.append(f"      # NOT MAPPED: {_comment(p.reason)}")
        lines += [f"      # {line}" for line in body]
    return lines


def _sinks(opts: Options) -> list[str]:
    return [
        "sinks:",
        "  # Every record as one JSON line in a local file, so that the agent runs as it is. For the cloud,",
        "  # replace it with an mqtt or http sink (docs/configuration.md, sinks).",
        "  - type: file",
        "    id: local",
        f"    path: {_q(opts.sink_path)}",
    ]
