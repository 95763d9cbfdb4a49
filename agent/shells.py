"""From config to AAS: the shell specs aas_models builds, and the valueType records carry."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Sequence

from aas_models import spec
from aas_models.build import ShellEnvironment, build_environment, check_shells
from agent.config import Config, Equipment
from agent.config_sinks import HttpSinkConfig

log = logging.getLogger(__name__)


def shell_spec(cfg: Config, e: Equipment) -> spec.Shell:
    n = e.nameplate
    return spec.Shell(
        id=cfg.aas_id(e),
        id_short=e.id_short or _id_short(e.id),
        asset_id=cfg.asset_id(e),
        display_name=e.name,
        line=e.line or e.source,
        time_series=time_series_spec(cfg, e),
        interface=interface_spec(cfg, e),
        nameplate=spec.Nameplate(
            manufacturer_name=n.manufacturer_name,
            product_designation=n.product_designation,
            uri_of_product=n.uri_of_product,
            order_code=n.order_code,
            address=spec.Address(
                street=n.address.street,
                zipcode=n.address.zipcode,
                city=n.address.city,
                country_code=n.address.country_code,
            ),
            serial_number=n.serial_number,
            year_of_construction=n.year_of_construction,
            product_family=n.product_family,
            software_version=n.software_version,
            hardware_version=n.hardware_version,
        ),
        elements=tuple(
            spec.Element(
                path=p.path,
                opcua_type=p.type,
                is_array=p.array,
                semantic_id=p.semantic_id,
                unit=p.unit,
                description=p.description,
                display_name=p.display_name,
                node=p.node,
                browse_path=p.browse_path,
                observable=p.mode == "subscribe",
            )
            for p in e.points
        )
        + (analysis_elements() if e.analysis is not None else ()),
    )


def time_series_spec(cfg: Config, e: Equipment) -> spec.TimeSeries | None:
    """The machine's Time Series Data submodel (`aas.time_series`): its points' values, the source's publishing
    interval as SamplingInterval, and the reference receiver's records query when an `http` sink sends there."""
    ts = cfg.aas.time_series
    if not ts.enabled:
        return None
    source = next(s for s in cfg.sources if s.id == e.source)  # the config checked that it exists
    http = next((s for s in cfg.sinks if isinstance(s, HttpSinkConfig)), None)
    return spec.TimeSeries(
        records=ts.records,
        sampling_interval_s=source.publishing_interval_ms / 1000,
        linked_endpoint=f"{http.url.rstrip('/')}/v1/assets/{e.id}/records" if http is not None else None,
        linked_query=LINKED_QUERY if http is not None else None,
        variables=tuple(p.path for p in e.points),
    )


# The receiver's records query (docs/cloud-api.md): {element} an element's idShort path, {from}/{to} ISO 8601.
LINKED_QUERY = "element={element}&from={from}&to={to}"


def interface_spec(cfg: Config, e: Equipment) -> spec.Interface:
    """The OPC UA endpoint the machine is read from, for its Asset Interfaces Description (docs/aas.md)."""
    source = next(s for s in cfg.sources if s.id == e.source)  # the config checked that it exists
    return spec.Interface(
        title=source.id,
        base=source.endpoint,
        security_mode=source.security.mode,
        security_policy=source.security.policy,
    )


ANALYSIS = "EdgeAnalysis"  # the collection in the operational-data submodel that holds the last analysis period
_ANALYSIS_FIELDS: tuple[tuple[str, str, str, str | None], ...] = (
    # (idShort, OPC UA type, summary key, unit)
    ("Availability", "Double", "availability", None),
    ("Performance", "Double", "performance", None),
    ("Quality", "Double", "quality", None),
    ("OEE", "Double", "oee", None),
    ("Cycles", "Int64", "cycles", None),
    ("MeanCycleTime", "Double", "mean_cycle_s", "s"),
    ("RunningTime", "Double", "running_s", "s"),
    ("Alarms", "Int64", "alarms", None),
    ("PeriodStart", "DateTime", "start", None),
    ("PeriodEnd", "DateTime", "end", None),
)


def analysis_elements() -> tuple[spec.Element, ...]:
    """The last edge-analysis period of a machine, as elements its shell serves live (docs/analysis.md)."""
    return tuple(
        spec.Element(
            path=f"{ANALYSIS}.{name}",
            opcua_type=kind,
            semantic_id=f"urn:edge-agent:concept:analysis:{name}",
            unit=unit,
            description={"en": f"edge analysis, last period: {key}"},
        )
        for name, kind, key, unit in _ANALYSIS_FIELDS
    )


def analysis_values(summary: dict[str, object]) -> list[tuple[str, object]]:
    """(element path, value) of a period summary, for the live model; a figure the period lacks is left out."""
    from datetime import datetime

    out: list[tuple[str, object]] = []
    for name, kind, key, _ in _ANALYSIS_FIELDS:
        v = summary.get(key)
        if v is None:
            continue
        if kind == "DateTime":
            v = datetime.fromisoformat(str(v))
        out.append((f"{ANALYSIS}.{name}", v))
    return out


def site_spec(cfg: Config) -> spec.Site:
    """The site as the entry node of its Hierarchical Structures submodel; ids follow the machines' scheme."""
    s = cfg.site
    return spec.Site(
        id_short=_id_short(s.id, "Site"),
        asset_id=f"{s.aas_prefix}:asset:{s.id}",
        submodel_id=f"{s.aas_prefix}:sm:{s.id}:HierarchicalStructures",
        display_name=s.name,
    )


def _id_short(plain_id: str, prefix: str = "Eq") -> str:
    s = "".join(c if c.isalnum() or c == "_" else "_" for c in plain_id)
    return s if s[:1].isalpha() and len(s) >= 2 else f"{prefix}_{s}"


def shell_specs(cfg: Config) -> list[spec.Shell]:
    """Each machine's shell as specs (cheap), checked as the model builder checks them (ModelBuildError)."""
    specs = [shell_spec(cfg, e) for e in cfg.equipment]
    check_shells(specs, cfg.site.language)
    return specs


def build_shells(cfg: Config, specs: Sequence[spec.Shell] | None = None) -> ShellEnvironment:
    """The AAS environment of `cfg` (of `specs`, made from it): seconds for 10,000 elements."""
    return build_environment(
        specs if specs is not None else [shell_spec(cfg, e) for e in cfg.equipment],
        language=cfg.site.language,
        site=site_spec(cfg),
        concept_descriptions=True,
    )


class ModelUnavailable(Exception):
    """The AAS model of the running configuration cannot be built; the message says why."""


class ModelOnDemand:
    """The AAS model (SDK objects) of the running configuration, built the first time something reads it.

    Collecting needs only the specs; only the local API's AAS reads need the model, which costs about 4 KB per
    element (22 MB of RSS at 5,000) and a second of CPU at 10,000. A gateway whose AAS API nobody reads never
    pays for it.
    The first `await model()` builds it in a worker thread (the event loop, so collection, goes on); callers
    meanwhile wait for that one build. A build that fails is not tried again for the same configuration: each
    call raises ModelUnavailable with the reason, until `replace` (a reload) gives a new configuration.

    The values collected before the build are not lost: `LiveValues` keeps each element's latest one until it is
    written into the model (at every API read)."""

    def __init__(self, build: Callable[[], ShellEnvironment]) -> None:
        self._build = build
        self.env: ShellEnvironment | None = None  # None until built
        self._task: asyncio.Task[ShellEnvironment] | None = None
        self._failed: str | None = None

    async def __call__(self) -> ShellEnvironment:
        if self.env is not None:
            return self.env
        if self._failed is not None:
            raise ModelUnavailable(self._failed)
        if self._task is None:
            task = self._task = asyncio.create_task(self._building(self._build), name="aas-model")
            task.add_done_callback(_retrieved)
        # A caller that is cancelled (a client that went away) does not cancel the build the others wait for.
        return await asyncio.shield(self._task)

    async def settled(self) -> ShellEnvironment | None:
        """The model, once a build under way has ended; None when none is built (or it failed)."""
        if self._task is not None:
            with contextlib.suppress(ModelUnavailable):
                await asyncio.shield(self._task)
        return self.env

    def replace(self, build: Callable[[], ShellEnvironment], env: ShellEnvironment | None) -> None:
        """A new configuration: its build, and its model when one was built already (else built on demand)."""
        self._build, self.env, self._failed, self._task = build, env, None, None

    def cancel(self) -> None:
        """Stop waiting for a build under way (at stop)."""
        if self._task is not None:
            self._task.cancel()

    async def _building(self, build: Callable[[], ShellEnvironment]) -> ShellEnvironment:
        started = time.monotonic()
        try:
            env = await asyncio.to_thread(build)
        except Exception as e:
            if self._build is build:  # else a reload replaced the configuration meanwhile
                self._failed, self._task = str(e), None
                log.error(
                    "the AAS model cannot be built; the local API answers AAS reads with 503 (edge-agent check -c "
                    "FILE says why): %s",
                    e,
                )
            raise ModelUnavailable(str(e)) from e
        if self._build is build:
            self.env, self._task = env, None
            log.info(
                "AAS model built (for the first AAS read): %d shells, %d elements, in %.1f s",
                len(env.shells),
                sum(len(s.elements) for s in env.shells),
                time.monotonic() - started,
            )
            gc.freeze()  # long-lived: out of the collector's way, as the rest of the start-up's objects
        return env


def _retrieved(task: asyncio.Task[ShellEnvironment]) -> None:
    """A build's failure is told to its callers and logged: not also as "exception never retrieved"."""
    if not task.cancelled():
        task.exception()
