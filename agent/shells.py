"""From config to AAS: the shell specs aas_models builds, and the valueType records carry."""

from __future__ import annotations

from collections.abc import Sequence

from aas_models import spec
from aas_models.build import ShellEnvironment, build_environment, check_shells
from agent.config import Config, Equipment
from agent.config_sinks import HttpSinkConfig


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
