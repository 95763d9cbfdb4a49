"""What the agent tells aas_models to build: plain frozen values, no config-file or OPC UA types."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Address:
    street: str | None = None
    zipcode: str | None = None
    city: str | None = None
    country_code: str | None = None  # ISO 3166-1 alpha-2, e.g. "KR"


@dataclass(frozen=True, slots=True)
class Nameplate:
    """Digital Nameplate 3.0 data for one piece of equipment (the IDTA template's mandatory fields first)."""

    manufacturer_name: str
    product_designation: str
    uri_of_product: str
    order_code: str
    address: Address = field(default_factory=Address)
    serial_number: str | None = None
    year_of_construction: str | None = None
    product_family: str | None = None
    software_version: str | None = None
    hardware_version: str | None = None


@dataclass(frozen=True, slots=True)
class Element:
    """One mapped value inside the operational-data submodel.

    `path` is the idShort path, dots separate collections ("Spindle.Speed" is Property
    "Speed" in SubmodelElementCollection "Spindle"). `opcua_type` is the OPC UA built-in
    type name ("Double", "Byte", "LocalizedText", ...); aas_models maps it to the xs: type.
    """

    path: str
    opcua_type: str
    is_array: bool = False
    semantic_id: str | None = None
    unit: str | None = None
    description: str | None = None


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

    def operational_id(self) -> str:
        return self.operational_submodel_id or f"{self.id}/sm/OperationalData"

    def nameplate_id(self) -> str:
        return self.nameplate_submodel_id or f"{self.id}/sm/Nameplate"
