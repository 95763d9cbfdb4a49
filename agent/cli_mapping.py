"""`edge-agent mapping export|import`: the point mapping as a CSV table, for suppliers who keep it in
Excel (docs/supplier-guide.md, "Mapping tables as CSV"); the logic is in agent/mapping_csv.py.
`edge-agent mapping from-aas`: a config from a machine builder's AAS with Asset Interfaces Description and
Mapping Configuration (agent/mapping_aas.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from agent import config as config_mod
from agent import mapping_aas, mapping_csv

_CONFIG = click.option(
    "-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="YAML file"
)


def _fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(2)


def _write(out: Path, text: str) -> bool:
    """Write `out` atomically (a reader sees the old file or the whole new one); False after saying why not."""
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as e:
        _fail(f"{out}: cannot write: {e.strerror}")
        return False
    return True


@click.group("mapping")
def mapping_group() -> None:
    """The point mapping: as a CSV table (UTF-8 with BOM, for Excel) to export, edit and import; or from an AAS."""


@mapping_group.command("export")
@_CONFIG
@click.option(
    "-o", "--output", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="CSV file to write"
)
def export_command(config_path: Path, out: Path) -> None:
    """Write one row per point of every equipment."""
    try:
        cfg = config_mod.load(config_path)
    except config_mod.ConfigError as e:
        _fail(f"configuration error:\n{e}")
        return
    try:
        n = mapping_csv.export_csv(cfg, out)
    except OSError as e:
        _fail(f"{out}: cannot write: {e.strerror}")
        return
    click.echo(f"wrote {out}: {n} points of {len(cfg.equipment)} equipment (UTF-8 with BOM, for Excel)")


@mapping_group.command("import")
@_CONFIG
@click.option(
    "--csv",
    "csv_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="the mapping table",
)
@click.option(
    "-o", "--output", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="YAML file to write"
)
def import_command(config_path: Path, csv_path: Path, out: Path) -> None:
    """Replace the points of the equipment the table names; write the config as a new YAML file.

    Nothing is written when a cell is wrong: each problem names the CSV line and column.
    """
    try:
        config_text = config_path.read_text(encoding="utf-8")
    except OSError as e:
        _fail(f"{config_path}: cannot read: {e.strerror}")
        return
    try:
        result = mapping_csv.import_csv(
            config_text, mapping_csv.read_csv_text(csv_path), str(config_path), str(csv_path)
        )
    except mapping_csv.MappingError as e:
        _fail(f"{csv_path}: not imported, nothing written:\n{e}")
        return
    if not _write(out, result.text):
        return
    counts = ", ".join(f"{eq} {n}" for eq, n in result.points.items())
    kept = len(result.config.equipment) - len(result.points)
    click.echo(
        f"wrote {out}: points from {csv_path} ({counts}); {kept} other equipment and the rest of the config kept"
    )
    click.echo(f"note: {mapping_csv.COMMENTS_LOST} ({config_path} is unchanged)")


@mapping_group.command("from-aas")
@click.argument("aas_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o", "--output", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="YAML file to write"
)
def from_aas_command(aas_file: Path, out: Path) -> None:
    """Write a config from an AASX, JSON or XML file (AAS 3.0 or 3.1) that holds an Asset Interfaces
    Description and Mapping Configuration, such as a machine builder ships.

    Nothing is written when the file cannot become a config: the one-line message names what and where.
    """
    try:
        result = mapping_aas.from_aas(aas_file)
    except mapping_aas.AasFileError as e:
        _fail(str(e))
        return
    if not _write(out, result.text):
        return
    counts = ", ".join(f"{eq} {n}" for eq, n in result.points.items())
    click.echo(f"wrote {out}: {len(result.points)} equipment from {aas_file} (points: {counts})")
    for note in result.skipped:
        click.echo(f"note: skipped {note}")
    if result.todo:
        click.echo(f"to fill in (TODO in {out}): site id, {', '.join(result.todo)}")
    else:
        click.echo(f"to fill in (TODO in {out}): site id")
    click.echo(f"then: edge-agent check -c {out} --live")
