"""Digital Nameplate 3.0 submodel (IDTA 02006-3-0) for one piece of equipment.

Semantic ids are the primary (IEC CDD) semanticIds of shared/reference/idta-templates/nameplate-3.0.1.json.
Deliberately not copied from that file:
- supplementalSemanticIds: several are copy-paste defects (AddressInformation carries the
  ContactInformation IRDI and the template-authoring marker "smt-dropin-use"); the primary ids suffice.
- SMT/Cardinality qualifiers: they are TemplateQualifiers, meaningless on an instance.
- AddressInformation children: the template leaves the drop-in empty; Street, Zipcode, CityTown and
  NationalCode follow the Contact Information template (IDTA 02002-1-0) the drop-in refers to, as
  MultiLanguageProperty with ECLASS ids, as defined there.
Texts: the MultiLanguageProperty values are tagged with the environment's language when given as plain
strings (NationalCode too), and carry every language of a {language: text} map.
Kinds follow the template: ManufacturerProductFamily is a MultiLanguageProperty, OrderCodeOfManufacturer,
SerialNumber, YearOfConstruction, HardwareVersion and SoftwareVersion are xs:string Properties.
"""

from __future__ import annotations

from collections.abc import Iterator

from basyx.aas import model
from basyx.aas.model import datatypes

from ._common import external_reference
from .spec import Address, Shell
from .text import Text, lang_texts

SUBMODEL_SEMANTIC_ID = "https://admin-shell.io/idta/nameplate/3/0/Nameplate"
ID_SHORT = "Nameplate"

URI_OF_THE_PRODUCT = "0112/2///61987#ABN590#002"
MANUFACTURER_NAME = "0112/2///61987#ABA565#009"
MANUFACTURER_PRODUCT_DESIGNATION = "0112/2///61987#ABA567#009"
ADDRESS_INFORMATION = "https://admin-shell.io/zvei/nameplate/1/0/ContactInformations/AddressInformation"
MANUFACTURER_PRODUCT_FAMILY = "0112/2///61987#ABP464#002"
ORDER_CODE_OF_MANUFACTURER = "0112/2///61987#ABA950#008"
SERIAL_NUMBER = "0112/2///61987#ABA951#009"
YEAR_OF_CONSTRUCTION = "0112/2///61987#ABP000#002"
HARDWARE_VERSION = "0112/2///61987#ABA926#008"
SOFTWARE_VERSION = "0112/2///61987#ABA601#008"
STREET = "0173-1#02-AAO128#002"
ZIPCODE = "0173-1#02-AAO129#002"
CITY_TOWN = "0173-1#02-AAO132#002"
NATIONAL_CODE = "0173-1#02-AAO134#002"


def build_nameplate(shell: Shell, language: str) -> model.Submodel:
    """Raises ValueError (from basyx) for texts the metamodel rejects; the caller adds shell context."""
    plate = shell.nameplate

    def mlp(id_short: str, semantic_id: str, text: Text) -> model.MultiLanguageProperty:
        return model.MultiLanguageProperty(
            id_short,
            model.MultiLanguageTextType(lang_texts(text, language)),
            semantic_id=external_reference(semantic_id),
        )

    def prop(
        id_short: str, semantic_id: str, text: str, datatype: model.DataTypeDefXsd = datatypes.String
    ) -> model.Property:
        return model.Property(id_short, datatype, text, semantic_id=external_reference(semantic_id))

    def address(addr: Address) -> Iterator[model.SubmodelElement]:
        for id_short, semantic_id, text in (
            ("Street", STREET, addr.street),
            ("Zipcode", ZIPCODE, addr.zipcode),
            ("CityTown", CITY_TOWN, addr.city),
            ("NationalCode", NATIONAL_CODE, addr.country_code),
        ):
            if text is not None:
                yield mlp(id_short, semantic_id, text)

    elements: list[model.SubmodelElement] = [
        prop("URIOfTheProduct", URI_OF_THE_PRODUCT, plate.uri_of_product, datatypes.AnyURI),
        mlp("ManufacturerName", MANUFACTURER_NAME, plate.manufacturer_name),
        mlp("ManufacturerProductDesignation", MANUFACTURER_PRODUCT_DESIGNATION, plate.product_designation),
        model.SubmodelElementCollection(
            "AddressInformation",
            address(plate.address),
            semantic_id=external_reference(ADDRESS_INFORMATION),
        ),
    ]
    if plate.product_family is not None:
        elements.append(mlp("ManufacturerProductFamily", MANUFACTURER_PRODUCT_FAMILY, plate.product_family))
    elements.append(prop("OrderCodeOfManufacturer", ORDER_CODE_OF_MANUFACTURER, plate.order_code))
    for id_short, semantic_id, text in (
        ("SerialNumber", SERIAL_NUMBER, plate.serial_number),
        ("YearOfConstruction", YEAR_OF_CONSTRUCTION, plate.year_of_construction),
        ("HardwareVersion", HARDWARE_VERSION, plate.hardware_version),
        ("SoftwareVersion", SOFTWARE_VERSION, plate.software_version),
    ):
        if text is not None:
            elements.append(prop(id_short, semantic_id, text))

    return model.Submodel(
        shell.nameplate_id(),
        id_short=ID_SHORT,
        semantic_id=external_reference(SUBMODEL_SEMANTIC_ID),
        kind=model.ModellingKind.INSTANCE,
        submodel_element=elements,
    )
