"""The agent's version, from one place: pyproject.toml's `[project] version`.

In a checkout (also the scripts' editable install) it is read from pyproject.toml next to the
packages, so it is right even before a reinstall; an agent installed from a wheel reads the
installed package's metadata. `edge-agent --version`, /metrics and the status page and
records all show `VERSION`.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path
from typing import Final

DISTRIBUTION: Final = "edge-agent"
UNKNOWN: Final = "0+unknown"


def _version() -> str:
    # A checkout first: its pyproject.toml is the truth even when the installed metadata is older.
    try:
        with (Path(__file__).resolve().parents[1] / "pyproject.toml").open("rb") as f:
            project = tomllib.load(f).get("project", {})
        if project.get("name") == DISTRIBUTION and isinstance(project.get("version"), str):
            return str(project["version"])
    except (OSError, tomllib.TOMLDecodeError):
        pass
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN


VERSION: Final = _version()
