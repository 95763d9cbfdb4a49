"""`edge-agent mapping export|import`: the point mapping as a CSV table, for suppliers who keep it in
Excel (docs/supplier-guide.md, "Mapping tables as CSV"); the logic is in agent/mapping_csv.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from agent import config as config_mod
from agent import mapping_csv

_CONFIG = click.option(
    "-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="YAML file"
)


def _fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(2)


@click.group("mapping")
def mapping_group() -> None:
    """The point mapping as a CSV table (UTF-8 with BOM, for Excel): export it, edit it, import it."""


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
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_text(result.text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as e:
        _fail(f"{out}: cannot write: {e.strerror}")
        return
    counts = ", ".join(f"{eq} {n}" for eq, n in result.points.items())
    kept = len(result.config.equipment) - len(result.points)
    click.echo(
        f"wrote {out}: points from {csv_path} ({counts}); {kept} other equipment and the rest of the config kept"
    )
    click.echo(f"note: {mapping_csv.COMMENTS_LOST} ({config_path} is unchanged)")
