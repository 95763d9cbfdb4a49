"""Error messages for config files: where (file, line, key path), what is wrong, what is allowed.

pydantic says what is wrong with a value; this module says where it is in the YAML text and,
for an unknown key, which keys are allowed there and which one was probably meant.

A key path is written one way everywhere, by `key_path`: `sources[0].password`,
`equipment[1].points[3].type`. A model validator that finds a problem at a place inside its block
(a duplicate id, two points that clash) raises `Located` with the key paths relative to the block,
so the message names each place with its line: `x.yaml:20: equipment[0].id and x.yaml:41:
equipment[2].id: 'cnc01' is used twice ...`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

# Tags pydantic inserts into error locations for the sink union (sinks.0.mqtt.host).
_UNION_TAGS = frozenset({"mqtt", "file", "http", "sflog"})  # the `type` of each sink model
# Keys that were accepted once and now live elsewhere (or nowhere): where to look instead.
_MOVED: dict[tuple[str, ...], str] = {
    ("buffer", "path"): "did you mean 'agent.data_dir'? every sink has its own buffer file in the data directory",
}


Loc = tuple[str | int, ...]


class Located(ValueError):
    """Problems a model validator found at places inside its block: each is (key paths relative
    to the block, what is wrong and what is allowed). `format_errors` writes one line per problem,
    naming every place with its file and line."""

    def __init__(self, problems: list[tuple[tuple[Loc, ...], str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


class Shown(ValueError):
    """A problem whose message already shows the value as written: no `(got ...)` is added."""


def key_path(loc: Loc) -> str:
    """The one way a key path is written: `sources[0].password`, `equipment[1].points[3].type`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def place(file: str, loc: Loc, lines: Mapping[Loc, int]) -> str:
    """`file:line: key.path` (the nearest line that exists: a key left out has none of its own)."""
    line = nearest_line(loc, lines)
    return f"{file}:{line}: {key_path(loc) or '(top level)'}" if line else f"{file}: {key_path(loc) or '(top level)'}"


# libyaml's loader where PyYAML was built with it (10-20x faster than the pure-Python one).
SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class KeyLines(Mapping[Loc, int]):
    """`key_lines(text)`, worked out only when an error needs a line: a valid config is parsed once."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._lines: dict[Loc, int] | None = None

    def _all(self) -> dict[Loc, int]:
        if self._lines is None:
            self._lines = key_lines(self._text)
        return self._lines

    def __getitem__(self, key: Loc) -> int:
        return self._all()[key]

    def __iter__(self) -> Iterator[Loc]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Key path -> 1-based line, so errors can point into the file."""
    out: dict[tuple[str | int, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str | int, ...]) -> None:
        out[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = (*path, str(k.value))
                out[key] = k.start_mark.line + 1
                walk(v, key)
                out[key] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, (*path, i))

    try:
        root = yaml.compose(text, Loader=SafeLoader)
    except yaml.YAMLError:
        return out
    if root is not None:
        walk(root, ())
    return out


def _allowed_keys(model: type[BaseModel] | None) -> list[str]:
    return list(model.model_fields) if model is not None else []


def _model_at(root: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that owns the mapping at `loc` (for 'did you mean' on unknown keys). A tagged
    union (the sinks) is resolved by the tag pydantic puts in `loc`: ('sinks', 0, 'http', 'tokn')."""
    model: Any = root
    pending: Any = None  # a field's annotation, resolved once we know whether a union tag follows
    for part in loc:
        if isinstance(part, int):
            continue
        if pending is not None:
            member = _union_member(pending, part)
            model, pending = (member, None) if member is not None else (_inner_model(pending, loc), None)
            if member is not None:
                continue
        if model is None or not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        pending = field.annotation
    if pending is not None:
        model = _inner_model(pending, loc)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _union_member(annotation: Any, tag: str) -> type[BaseModel] | None:
    """The member of a tagged union whose `type` is `tag`, if `annotation` holds one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get("type")
        return annotation if field is not None and tag in getattr(field.annotation, "__args__", ()) else None
    for a in getattr(annotation, "__args__", None) or ():
        found = _union_member(a, tag)
        if found is not None:
            return found
    return None


def _inner_model(annotation: Any, loc: tuple[str | int, ...]) -> Any:
    args = getattr(annotation, "__args__", None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if args:
        for a in args:
            found = _inner_model(a, loc)
            if found is not None:
                return found
        if getattr(annotation, "__metadata__", None):
            return None
    return None


def format_errors(
    root: type[BaseModel], file: str, err: ValidationError, lines: Mapping[tuple[str | int, ...], int], data: Any
) -> str:
    """One line per problem: `file:line: key.path: what is wrong (got ...)`, with "did you mean" for typos."""
    msgs = []
    errors = err.errors()
    for e in errors:
        if e["type"] == "too_short" and any(
            o is not e and tuple(o["loc"][: len(e["loc"])]) == tuple(e["loc"]) for o in errors
        ):
            continue  # a list whose items failed looks empty to pydantic; the item errors say why
        raw = tuple(e["loc"])  # with the union tags: they say which sink model applies
        loc = _strip_tags(raw, data)
        where = place(file, loc, lines)
        error = (e.get("ctx") or {}).get("error")
        if isinstance(error, Located):
            for places, message in error.problems:
                msgs.append(f"{' and '.join(place(file, (*loc, *at), lines) for at in places)}: {message}")
        elif e["type"] == "extra_forbidden":
            allowed = _allowed_keys(_model_at(root, raw[:-1]))
            near = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            moved = _MOVED.get(tuple(str(p) for p in loc if not isinstance(p, int)))
            hint = f" ({moved})" if moved else f" (typo? did you mean {near[0]!r})" if near else ""
            msgs.append(f"{where}: unknown key{hint}; allowed here: {', '.join(allowed)}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            if isinstance(error, Shown):
                shown = ""
            elif _is_secret(root, raw):
                shown = f" (got a {type(got).__name__}; the value is a secret and not shown)"
            else:
                shown = "" if isinstance(got, dict | list) or e["type"] == "missing" else f" (got {got!r})"
            msgs.append(f"{where}: {msg}{shown}")
    return "\n".join(msgs)


def _is_secret(root: type[BaseModel], loc: tuple[str | int, ...]) -> bool:
    """Whether the value at `loc` is a secret (SecretStr): its value never goes into a message."""
    if not loc or not isinstance(loc[-1], str):
        return False
    model = _model_at(root, loc[:-1])
    field = model.model_fields.get(loc[-1]) if model is not None else None
    return field is not None and "SecretStr" in str(field.annotation)


def _strip_tags(loc: tuple[Any, ...], data: Any) -> tuple[str | int, ...]:
    """Remove union tags pydantic inserts (e.g. 'mqtt' in sinks.0.mqtt.host) by walking the data."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            out.append(part)
            node = node[part]
        elif isinstance(node, dict):
            # a tag or a missing key: keep a missing key (it is the subject of the error)
            if isinstance(part, str) and part in _UNION_TAGS:
                continue
            out.append(part)
            node = None
        else:
            out.append(part)
            node = None
    return tuple(out)


def nearest_line(loc: tuple[str | int, ...], lines: Mapping[tuple[str | int, ...], int]) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None
