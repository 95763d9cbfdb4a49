"""Time Series Data 1.1 (IDTA 02008-1-1): a machine's recent records. Placeholder until built."""

from __future__ import annotations

from basyx.aas import model

from .spec import Shell


def build_time_series(shell: Shell, language: str) -> list[model.Submodel]:
    """The shell's Time Series Data submodel, or none when `shell.time_series` is None."""
    return []
