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
