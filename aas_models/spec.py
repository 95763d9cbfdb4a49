"""What the agent tells aas_models to build: plain frozen values, no config-file or OPC UA types."""

from __future__ import annotations

from dataclasses import dataclass, field

from .text import Text

# Every `Text` below is a plain string, tagged with the environment's language (build_environment), or a
# map {language tag: text} that carries each language it gives.


@dataclass(frozen=True, slots=True)
class Address:
    street: Text | None = None
    zipcode: Text | None = None
    city: Text | None = None
    country_code: str | None = None  # ISO 3166-1 alpha-2, e.g. "KR"


@dataclass(frozen=True, slots=True)
class Nameplate:
    """Digital Nameplate 3.0 data for one piece of equipment (the IDTA template's mandatory fields first)."""

    manufacturer_name: Text
    product_designation: Text
    uri_of_product: str
    order_code: str
    address: Address = field(default_factory=Address)
    serial_number: str | None = None
    year_of_construction: str | None = None
    product_family: Text | None = None
    software_version: str | None = None
    hardware_version: str | None = None


@dataclass(frozen=True, slots=True)
class Element:
    """One mapped value inside the operational-data submodel.

    `path` is the idShort path, dots separate collections ("Spindle.Speed" is Property
    "Speed" in SubmodelElementCollection "Spindle"). `opcua_type` is the OPC UA built-in
    type name ("Double", "Byte", "LocalizedText", ...); aas_models maps it to the xs: type.
    `display_name` and `description` become the element's displayName and description.
    """

    path: str
    opcua_type: str
    is_array: bool = False
    semantic_id: str | None = None
    unit: str | None = None
    description: Text | None = None
    display_name: Text | None = None
    node: str | None = None  # where the value is read: OPC UA node id or browse path (Asset Interfaces Description)
    browse_path: str | None = None  # the node's browse path, when known besides its node id
    observable: bool = True  # subscribed (True) or polled (False)


@dataclass(frozen=True, slots=True)
class TimeSeries:
    """The machine's Time Series Data 1.1 submodel (timeseries.py): its recent records in an InternalSegment."""

    records: int = 1000  # window: the most recent records the InternalSegments hold
    sampling_interval_s: float | None = None  # the segments' SamplingInterval (the publishing interval)
    linked_endpoint: str | None = None  # where the cloud keeps the rest (LinkedSegment); None: none
    linked_query: str | None = None  # the LinkedSegment's Query (required with linked_endpoint)
    submodel_id: str = ""  # default: f"{shell id}/sm/TimeSeries"
    variables: tuple[str, ...] | None = None  # element paths recorded; None: every scalar, non-LocalizedText one


@dataclass(frozen=True, slots=True)
class Interface:
    """The OPC UA endpoint a machine is read from: its Asset Interfaces Description and Mapping Configuration
    submodels (interfaces.py) describe it and relate each node to its element."""

    title: str  # the interface's name (the source id)
    base: str  # opc.tcp://host:port
    security_mode: str = "None"
    security_policy: str = "None"
    aid_submodel_id: str = ""  # default: f"{shell id}/sm/AssetInterfacesDescription"
    aimc_submodel_id: str = ""  # default: f"{shell id}/sm/AssetInterfacesMappingConfiguration"


@dataclass(frozen=True, slots=True)
class Shell:
    """One Asset Administration Shell per piece of equipment."""

    id: str  # AAS identifier (IRI)
    id_short: str
    asset_id: str  # globalAssetId
    nameplate: Nameplate
    elements: tuple[Element, ...]
    operational_submodel_id: str = ""  # default: f"{id}/sm/OperationalData"
    nameplate_submodel_id: str = ""  # default: f"{id}/sm/Nameplate"
    display_name: Text | None = None  # the machine's name: displayName of the shell and its operational submodel
    line: str | None = None  # the production line it stands in (Site hierarchy); None: directly under the site
    time_series: TimeSeries | None = None  # None: no Time Series Data submodel
    interface: Interface | None = None  # None: no Asset Interfaces Description / Mapping Configuration

    def operational_id(self) -> str:
        return self.operational_submodel_id or f"{self.id}/sm/OperationalData"

    def nameplate_id(self) -> str:
        return self.nameplate_submodel_id or f"{self.id}/sm/Nameplate"


@dataclass(frozen=True, slots=True)
class Site:
    """The plant: entry node of the Hierarchical Structures submodel (site → line → machine)."""

    id_short: str  # the entry node's idShort
    asset_id: str  # the entry node's globalAssetId
    submodel_id: str  # the Hierarchical Structures submodel's id
    display_name: Text | None = None
