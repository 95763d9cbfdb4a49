"""Mapping tables as CSV, both ways: suppliers keep the point mapping in Excel.

`export_csv` writes one row per point of every equipment: the column `equipment`, then each point
key that any point uses, in a fixed order; a text given as a map of languages becomes one column
per language (`display_name[ko-KR]`, `display_name[en]`), a deadband two columns (`deadband_type`,
`deadband_value`). The file is UTF-8 with a BOM and CRLF line ends, as Excel writes it, so Korean
text survives a round through Excel.

`import_csv` reads such a table (with or without the BOM, `,`, `;` or tab separated), replaces the
`points` of the equipment it names and keeps everything else of the config. The result is checked
with `agent.config.parse`; every problem names the CSV line and column and what is allowed. The
YAML is written anew, so the comments of the original file are not carried over.

An empty cell is a key left out (its default applies), so export then import gives the same points.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agent import config as config_mod

# The columns, in this order; only those some point uses are written.
COLUMNS = (
    "equipment",
    "path",
    "node",
    "browse_path",
    "type",
    "array",
    "unit",
    "semantic_id",
    "display_name",
    "description",
    "mode",
    "sampling_ms",
    "queue_size",
    "deadband_type",
    "deadband_value",
    "trigger",
)
TEXT_KEYS = ("display_name", "description")  # a text, or one column per language: display_name[en]
_LANGUAGE_COLUMN = re.compile(r"^(display_name|description)\[([^\[\]]*)\]$")
_BOOLS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}
_FLOATS = ("sampling_ms", "deadband_value")
_INTS = ("queue_size",)
_ALLOWED = {
    "array": "true or false (empty: false)",
    "sampling_ms": "a number of milliseconds, 0 or more (empty: the source's interval)",
    "queue_size": "a whole number from 1 to 10000 (empty: 10)",
    "deadband_value": "a number, 0 or more (percent: at most 100)",
}
COMMENTS_LOST = "comments of the original config are not carried over: the YAML is written anew"


class MappingError(Exception):
    """The table cannot be used. One line per problem, each naming the CSV line and column."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ---------------------------------------------------------------- export


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def export_rows(cfg: config_mod.Config) -> list[list[str]]:
    """The header and one row per point of every equipment."""
    points = [(e.id, p) for e in cfg.equipment for p in e.points]
    used: set[str] = {"equipment", "path", "type"}
    languages: dict[str, list[str]] = {k: [] for k in TEXT_KEYS}
    for _, p in points:
        for key in p.model_fields_set:
            value = getattr(p, key)
            if value is None:
                continue
            if key == "deadband":
                used.update(("deadband_type", "deadband_value"))
            elif key in TEXT_KEYS and isinstance(value, dict):
                languages[key] += [tag for tag in value if tag not in languages[key]]
            else:
                used.add(key)
    header: list[str] = []
    for column in COLUMNS:
        if column in used:
            header.append(column)
        if column in TEXT_KEYS:
            header += [f"{column}[{tag}]" for tag in languages[column]]
    rows = [header]
    for equipment, p in points:
        cells: dict[str, str] = {"equipment": equipment}
        for key in p.model_fields_set:
            value = getattr(p, key)
            if value is None:
                continue
            if key == "deadband":
                cells["deadband_type"] = value.type
                cells["deadband_value"] = _cell(value.value)
            elif key in TEXT_KEYS and isinstance(value, dict):
                cells.update({f"{key}[{tag}]": text for tag, text in value.items()})
            else:
                cells[key] = _cell(value)
        rows.append([cells.get(column, "") for column in header])
    return rows


def export_csv(cfg: config_mod.Config, out: Path) -> int:
    """Write the mapping table (UTF-8 with BOM, CRLF); returns the number of points."""
    rows = export_rows(cfg)
    with open(out, "w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f, lineterminator="\r\n").writerows(rows)
    return len(rows) - 1


# ---------------------------------------------------------------- import


@dataclass
class Row:
    line: int  # the CSV line the row starts on (1: the header)
    equipment: str
    cells: dict[str, str] = field(default_factory=dict)  # column -> non-empty value


@dataclass
class Imported:
    text: str  # the new YAML
    config: config_mod.Config
    points: dict[str, int]  # equipment id -> points from the CSV, in CSV order


def _delimiter(text: str) -> tuple[str, int]:
    """The separator (Excel may save `;` or tab separated) and how many lines precede the header."""
    first = text.split("\n", 1)[0].rstrip("\r")
    m = re.fullmatch(r'"?sep=(.)"?', first)
    if m and m.group(1) in ",;\t":  # Excel's own hint line
        return m.group(1), 1
    try:
        # the header holds only column names, so none of the separators occur in a cell there
        return csv.Sniffer().sniff(first, delimiters=",;\t").delimiter, 0
    except csv.Error:
        return ",", 0


def read_rows(text: str, name: str) -> tuple[list[str], list[Row]]:
    """The header and the rows of a mapping table; raises MappingError for a bad header or row shape."""
    problems: list[str] = []
    delimiter, skip = _delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    for _ in range(skip):
        next(reader, None)
    header = [h.strip() for h in next(reader, [])]
    if not any(header):
        raise MappingError([f"{name}: the file is empty; the first line must name the columns (equipment, path, ...)"])
    line = reader.line_num
    allowed = [c for c in COLUMNS if c not in ("display_name", "description")]
    allowed += ["display_name", "display_name[LANGUAGE]", "description", "description[LANGUAGE]"]
    seen: set[str] = set()
    for i, h in enumerate(header, 1):
        if h in seen:
            problems.append(f"{name}:{line}: column {h!r} is there twice")
        seen.add(h)
        if h not in COLUMNS and not _LANGUAGE_COLUMN.match(h):
            near = difflib.get_close_matches(h, COLUMNS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            shown = f"{h!r}" if h else "without a name"
            problems.append(f"{name}:{line}: column {i} {shown} is not known{hint}; allowed: {', '.join(allowed)}")
    for needed in ("equipment", "path", "type"):
        if needed not in header:
            problems.append(f"{name}:{line}: the column {needed!r} is missing")
    if problems:
        raise MappingError(problems)
    rows: list[Row] = []
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise MappingError([*problems, f"{name}:{start}: not valid CSV: {e}"]) from None
        if not any(c.strip() for c in cells):
            continue  # an empty line, or one Excel filled with separators only
        if len(cells) > len(header) and any(c.strip() for c in cells[len(header) :]):
            problems.append(
                f"{name}:{start}: {len(cells)} cells but the header names {len(header)} columns "
                f"(a separator inside a cell needs the cell in double quotes)"
            )
            continue
        values = {h: c.strip() for h, c in zip(header, cells, strict=False) if c.strip()}
        equipment = values.pop("equipment", "")
        if not equipment:
            problems.append(
                f"{name}:{start}: column equipment: empty; give the id of the equipment the point belongs to"
            )
            continue
        rows.append(Row(start, equipment, values))
    if problems:
        raise MappingError(problems)
    if not rows:
        raise MappingError([f"{name}: no rows after the header: nothing to import"])
    return header, rows


def _number(value: str, integer: bool, decimal_comma: bool) -> Any:
    text = value.replace(",", ".") if decimal_comma and re.fullmatch(r"-?\d+,\d+", value) else value
    try:
        return int(text)
    except ValueError:
        pass
    if not integer:
        try:
            return float(text)
        except ValueError:
            pass
    return value  # pydantic says what is wrong with it


def _point(row: Row, decimal_comma: bool, name: str, problems: list[str]) -> dict[str, Any]:
    """The YAML mapping of one point, keys in the order of the Point model."""
    point: dict[str, Any] = {}
    for key in config_mod.Point.model_fields:
        if key in TEXT_KEYS:
            plain = row.cells.get(key)
            texts = {
                m.group(2): v for c, v in row.cells.items() if (m := _LANGUAGE_COLUMN.match(c)) and m.group(1) == key
            }
            if plain is not None and texts:
                columns = ", ".join(f"{key}[{tag}]" for tag in texts)
                problems.append(
                    f"{name}:{row.line}: column {key}: give the text in {key} (tagged with site.language) "
                    f"or per language in {columns}, not both"
                )
            elif plain is not None:
                point[key] = plain
            elif texts:
                point[key] = texts
        elif key == "deadband":
            kind, value = row.cells.get("deadband_type"), row.cells.get("deadband_value")
            if kind is not None or value is not None:
                deadband: dict[str, Any] = {}
                if kind is not None:
                    deadband["type"] = kind
                if value is not None:
                    deadband["value"] = _number(value, False, decimal_comma)
                point["deadband"] = deadband
        elif key in row.cells:
            value = row.cells[key]
            if key == "array":
                point[key] = _BOOLS.get(value.lower(), value)
            elif key in _FLOATS or key in _INTS:
                point[key] = _number(value, key in _INTS, decimal_comma)
            else:
                point[key] = value
    return point


def _column(rest: tuple[str | int, ...], row: Row) -> str:
    """The CSV column of an error at `rest` inside a point."""
    if not rest:
        return "node/browse_path"
    key = str(rest[0])
    if key == "deadband":
        return f"deadband_{rest[1]}" if len(rest) > 1 else "deadband_value"
    if key in TEXT_KEYS and key not in row.cells:
        columns = [c for c in row.cells if (m := _LANGUAGE_COLUMN.match(c)) and m.group(1) == key]
        return ", ".join(columns) or key
    return key


def _problem(e: Any, column: str | None) -> str:
    msg = str(e["msg"]).removeprefix("Value error, ")
    got = e.get("input")
    error = (e.get("ctx") or {}).get("error")
    plain = isinstance(got, dict | list) or e["type"] == "missing" or got is None
    shown = "" if plain or type(error).__name__ == "Shown" else f" (got {got!r})"  # Shown: the value is in msg
    allowed = _ALLOWED.get(column or "")
    parse_error = str(e["type"]).startswith(("bool_", "float_", "int_"))
    hint = f"; allowed: {allowed}" if allowed and parse_error else ""
    if e["type"] == "missing" and column:
        msg = "empty, but it is needed"
    return f"{msg}{shown}{hint}"


Loc = tuple[str | int, ...]


def _items(err: ValidationError) -> list[tuple[tuple[Loc, ...], Any, str | None]]:
    """(places, pydantic's error, or the message of a problem a model validator placed itself).
    A validator may name several places of one problem (agent.config_errors.Located's `problems`,
    key paths relative to its block): a path mapped twice names both rows."""
    items: list[tuple[tuple[Loc, ...], Any, str | None]] = []
    errors = err.errors()
    for e in errors:
        loc: Loc = tuple(e["loc"])
        if e["type"] == "too_short" and any(o is not e and tuple(o["loc"][: len(loc)]) == loc for o in errors):
            continue  # a list whose items failed looks empty to pydantic; the item errors say why
        located = getattr((e.get("ctx") or {}).get("error"), "problems", None)
        if isinstance(located, list):
            items += [(tuple((*loc, *at) for at in places), e, str(message)) for places, message in located]
        else:
            items.append(((loc,), e, None))
    return items


def _key_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "(top level)"


def _validation_problems(
    err: ValidationError, where: dict[tuple[int, int], Row], name: str, config_name: str
) -> list[str]:
    problems: list[str] = []
    for places, e, message in _items(err):
        cells: list[tuple[Row, str]] = []
        for loc in places:
            if len(loc) >= 4 and loc[0] == "equipment" and loc[2] == "points" and (loc[1], loc[3]) in where:
                row = where[(int(loc[1]), int(loc[3]))]
                cells.append((row, _column(loc[4:], row)))
        if cells and len(cells) == len(places):
            columns = list(dict.fromkeys(c for _, c in cells))
            text = message if message is not None else _problem(e, columns[0])
            lines = ", ".join(str(r.line) for r, _ in cells)
            problems.append(f"{name}:{lines}: column {' and '.join(columns)}: {text}")
        else:
            text = message if message is not None else _problem(e, None)
            at = ", ".join(_key_path(loc) for loc in places)
            problems.append(f"{config_name}: {at}: {text} (with the points of {name})")
    return problems


def import_csv(config_text: str, csv_text: str, config_name: str = "<config>", name: str = "<csv>") -> Imported:
    """The config with the points of the equipment the table names replaced; raises MappingError."""
    _, rows = read_rows(csv_text, name)
    try:
        data = yaml.safe_load(config_text)
    except yaml.YAMLError as e:
        raise MappingError([f"{config_name}: not valid YAML: {getattr(e, 'problem', e)}"]) from None
    equipment = data.get("equipment") if isinstance(data, dict) else None
    if not isinstance(equipment, list) or not all(isinstance(e, dict) for e in equipment):
        raise MappingError([f"{config_name}: has no 'equipment' list to put the points into"])
    ids = {i: str(e.get("id")) for i, e in enumerate(equipment)}
    index = {v: k for k, v in ids.items()}
    problems: list[str] = []
    imported: dict[int, list[Row]] = {}
    unknown: set[str] = set()
    for row in rows:
        i = index.get(row.equipment)
        if i is None:
            if row.equipment not in unknown:
                unknown.add(row.equipment)
                near = difflib.get_close_matches(row.equipment, list(index), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                problems.append(
                    f"{name}:{row.line}: column equipment: {row.equipment!r} is not an equipment of {config_name}"
                    f"{hint}; its equipment: {', '.join(index)}"
                )
            continue
        imported.setdefault(i, []).append(row)
    decimal_comma = _delimiter(csv_text)[0] != ","
    where: dict[tuple[int, int], Row] = {}
    for i, its_rows in imported.items():
        equipment[i]["points"] = [_point(r, decimal_comma, name, problems) for r in its_rows]
        where.update({(i, j): r for j, r in enumerate(its_rows)})
    if problems:
        raise MappingError(problems)
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=1000)
    try:
        cfg = config_mod.parse(text, config_name)
    except config_mod.ConfigError as e:
        cause = e.__context__  # parse raises from None, but keeps pydantic's error as the context
        if isinstance(cause, ValidationError):
            raise MappingError(_validation_problems(cause, where, name, config_name)) from None
        raise MappingError([str(e)]) from None
    return Imported(text, cfg, {ids[i]: len(r) for i, r in imported.items()})


def read_csv_text(path: Path) -> str:
    """The table's text: UTF-8, with or without a BOM; a clear message for Excel's legacy encodings."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise MappingError(
            [
                f"{path}: not UTF-8 (byte {e.start}): in Excel save it as 'CSV UTF-8 (쉼표로 분리) (*.csv)' / "
                "'CSV UTF-8 (Comma delimited)', not as plain 'CSV'"
            ]
        ) from None


__all__ = ["COLUMNS", "COMMENTS_LOST", "Imported", "MappingError", "export_csv", "export_rows", "import_csv"]
