"""The `aas:` block of the configuration: optional submodels of every machine's shell (docs/configuration.md, "aas")."""

from __future__ import annotations

from pydantic import Field

from agent.config_base import Model as _Model


class TimeSeriesConfig(_Model):
    """A Time Series Data 1.1 submodel per machine: its most recent records (docs/aas.md, "Time Series Data")."""

    enabled: bool = Field(default=True, description="a Time Series Data submodel in every machine's shell")
    records: int = Field(
        default=1000, ge=1, le=10000, description="the most recent records its InternalSegments hold (in memory)"
    )


class AasConfig(_Model):
    time_series: TimeSeriesConfig = TimeSeriesConfig()
