"""Asset Interfaces Description 1.x and Asset Interfaces Mapping Configuration 1.0. Placeholder until built."""

from __future__ import annotations

from basyx.aas import model

from .spec import Shell


def build_interfaces(shell: Shell, operational: model.Submodel, language: str) -> list[model.Submodel]:
    """AID and AIMC submodels of the shell, or none when `shell.interface` is None."""
    return []
