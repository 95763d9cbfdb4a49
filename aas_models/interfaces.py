"""Asset Interfaces Description 1.1 (IDTA 02017-1-1) and Asset Interfaces Mapping Configuration 1.0 (IDTA 02027-1-0).

The AID says how the machine's values are read: its OPC UA endpoint and, per mapped node, a property with the
node id in its form. The AIMC relates each AID property to the element of the OperationalData submodel that
holds the value. A tool that reads both (AASX Package Explorer's AID plugin, agent/mapping_aas.py) can collect
without this agent's configuration. Ids follow shared/reference/idta-templates/aid-1.1.json and aimc-1.0.1.json.

    AssetInterfacesDescription (Submodel, semanticId .../AssetInterfacesDescription/1/1/Submodel)
      InterfaceOPCUA: SMC Interface, supplementalSemanticIds OPC UA WoT binding and W3C Thing Description
        title: the source's id
        EndpointMetadata
          base: the endpoint (opc.tcp://host:port/...), contentType
          security: list of one reference to the scheme below
          securityDefinitions / opcua_channel_sc: scheme ua_channelsec, uav_securityMode, uav_securityPolicy
        InteractionMetadata / properties
          <one SMC per mapped element, idShort from its path>
            key: the element's idShort path, exactly (the SMC's idShort cannot hold the dots)
            type: the WoT data type (boolean, integer, number, string, object; array with items.type)
            title: the element's name, in the environment's language where given
            observable: true when the node is subscribed, false when it is polled
            unit
            valueSemantics: the OPC UA DataType (nsu=http://opcfoundation.org/UA/;i=11 is Double): the xs: type
              of the element cannot tell DateTime from UtcTime, UInt32 from StatusCode, String from Guid or NodeId
            forms: href /?id=<node id> (%, #, &, space and control characters percent-encoded), uav_browsePath
    AssetInterfacesMappingConfiguration (Submodel, semanticId .../AssetInterfacesMappingConfiguration/1/0/Submodel)
      MappingConfigurations: list of one MappingConfiguration
        InterfaceReference: ModelReference to InterfaceOPCUA
        MappingSourceSinkRelations: list, one RelationshipElement per property:
          first = the AID property, second = the OperationalData element (ModelReferences)

Only elements read from the server (a node id or a browse path) are described; the edge analysis' elements are
computed by the agent. A machine none of whose elements is read gets neither submodel.

Deliberately not copied from the templates (docs/aas.md, "Asset interfaces"):
- the OPC UA interface's supplementalSemanticId http://www.w3.org/2011/mqtt (copy-paste from the MQTT one): here
  http://opcfoundation.org/UA/WoT-Binding/;
- the trailing space of .../WoT-Binding/securityMode and of OPCUASecurityAuthenticationScheme: written without;
- idShorts on the children of the security lists (AASd-120 forbids them) and the submodels' semanticIds as
  ModelReferences with a Submodel key (semanticIds name concepts: ExternalReferences here);
- SMT/Cardinality qualifiers and example values; forms' security list (optional in a Thing Description, where
  the endpoint's security applies to every form), opcua_authentication_sc (the user identity is the
  configuration's business, and a secret's place is not an AAS).
The template's PropertyDefinition id is spelled .../AssetInterfaceDescription/... (no 's'): kept, as published
and as AASX Package Explorer matches it.
"""

from __future__ import annotations

from urllib.parse import unquote

from basyx.aas import model
from basyx.aas.model import datatypes

from ._common import MAX_IDENTIFIER, external_reference, xml_safe
from .hierarchy import id_short_for, unique_id_short
from .lazy import LazyGroup, LazySubmodel
from .spec import Element, Shell
from .text import lang_texts
from .types import value_type

AID_SUBMODEL = "https://admin-shell.io/idta/AssetInterfacesDescription/1/1/Submodel"
AID_SUBMODEL_10 = "https://admin-shell.io/idta/AssetInterfacesDescription/1/0/Submodel"  # read, not written
AIMC_SUBMODEL = "https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/1/0/Submodel"
AID_ID_SHORT = "AssetInterfacesDescription"
AIMC_ID_SHORT = "AssetInterfacesMappingConfiguration"
INTERFACE_ID_SHORT = "InterfaceOPCUA"

_AID = "https://admin-shell.io/idta/AssetInterfacesDescription/1/0/"
INTERFACE = _AID + "Interface"
ENDPOINT_METADATA = _AID + "EndpointMetadata"
INTERACTION_METADATA = _AID + "InteractionMetadata"
KEY = _AID + "key"
VALUE_SEMANTICS = _AID + "valueSemantics"
PROPERTY_DEFINITION = "https://admin-shell.io/idta/AssetInterfaceDescription/1/0/PropertyDefinition"  # sic
_TD = "https://www.w3.org/2019/wot/td#"
THING_DESCRIPTION = "https://www.w3.org/2019/wot/td"
TITLE = _TD + "title"
BASE = _TD + "baseURI"
HAS_SECURITY_CONFIGURATION = _TD + "hasSecurityConfiguration"
DEFINES_SECURITY_SCHEME = _TD + "definesSecurityScheme"
INTERACTION_AFFORDANCE = _TD + "InteractionAffordance"
PROPERTY_AFFORDANCE = _TD + "PropertyAffordance"
NAME = _TD + "name"
OBSERVABLE = _TD + "isObservable"
HAS_FORM = _TD + "hasForm"
CONTENT_TYPE = "https://www.w3.org/2019/wot/hypermedia#forContentType"
HREF = "https://www.w3.org/2019/wot/hypermedia#hasTarget"
ITEMS = "https://www.w3.org/2019/wot/json-schema#items"
TYPE = "https://www.w3.org/1999/02/22-rdf-syntax-ns#type"
UNIT = "https://schema.org/unitCode"
SECURITY_SCHEME = "https://www.w3.org/2019/wot/security#SecurityScheme"
OPCUA_BINDING = "http://opcfoundation.org/UA/WoT-Binding/"
CHANNEL_SCHEME = OPCUA_BINDING + "OPCUASecurityChannelScheme"
SECURITY_MODE = OPCUA_BINDING + "securityMode"
SECURITY_POLICY = OPCUA_BINDING + "securityPolicy"
BROWSE_PATH = OPCUA_BINDING + "browsePath"

_AIMC = "https://admin-shell.io/idta/AssetInterfacesMappingConfiguration/1/0/"
MAPPING_CONFIGURATIONS = _AIMC + "MappingConfigurations"
MAPPING_CONFIGURATION = _AIMC + "MappingConfiguration"
INTERFACE_REFERENCE = _AIMC + "InterfaceReference"
MAPPING_RELATIONS = _AIMC + "MappingSourceSinkRelations"
MAPPING_RELATION = _AIMC + "MappingSourceSinkRelation"

CONTENT_TYPE_VALUE = "application/json"  # the template's; how a WoT consumer gets the value
CHANNEL_SCHEME_VALUE = "ua_channelsec"
OPCUA_NAMESPACE = "http://opcfoundation.org/UA/"
_HREF_ID = "/?id="

# WoT data types (JSON schema) of the xs: types the agent maps; LocalizedText is {locale, text}: an object.
_WOT_TYPES = {
    "xs:boolean": "boolean",
    "xs:float": "number",
    "xs:double": "number",
    "langString": "object",
}
_WOT_INTEGERS = frozenset(
    (
        "xs:byte",
        "xs:unsignedByte",
        "xs:short",
        "xs:unsignedShort",
        "xs:int",
        "xs:unsignedInt",
        "xs:long",
        "xs:unsignedLong",
    )
)


def aid_id(shell: Shell) -> str:
    iface = shell.interface
    return (iface.aid_submodel_id if iface else "") or f"{shell.id}/sm/AssetInterfacesDescription"


def aimc_id(shell: Shell) -> str:
    iface = shell.interface
    return (iface.aimc_submodel_id if iface else "") or f"{shell.id}/sm/AssetInterfacesMappingConfiguration"


def wot_type(opcua_type: str) -> str:
    """The WoT data type of an OPC UA built-in type's value (a string for times, bytes, ids)."""
    xs = value_type(opcua_type).xs
    if xs in _WOT_INTEGERS:
        return "integer"
    return _WOT_TYPES.get(xs, "string")


def data_type_reference(opcua_type: str) -> str:
    """The OPC UA DataType as an ExpandedNodeId (Part 6): nsu=http://opcfoundation.org/UA/;i=11 for Double."""
    return f"nsu={OPCUA_NAMESPACE};i={value_type(opcua_type).data_type_id}"


def href(node: str) -> str:
    """The form's href of a node id: `/?id=` and the node id with %, #, &, space and control characters
    percent-encoded, the rest as it is (Korean too), so that `unquote` gives the node id back exactly."""
    return _HREF_ID + "".join(
        "".join(f"%{b:02X}" for b in c.encode()) if c in "%#& " or ord(c) < 0x20 or ord(c) == 0x7F else c for c in node
    )


def node_of_href(text: str) -> str | None:
    """The node id of an href: `/?id=...`, with or without the endpoint in front, or a bare node id (as
    some tools write it); None when it names none. The caller checks that the result is a valid node id."""
    text = text.strip()
    _, question, query = text.partition("?")
    if not question:
        return text or None
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "id" and value:
            return unquote(value)
    return None


def interface_ids(shell: Shell) -> tuple[str, str] | None:
    """Ids of the AID and AIMC submodels `build_interfaces` makes for the shell, or None when it makes none
    (`shell.interface` is None or no element is read from the server). Raises the ValueError `build_interfaces`
    raises for an interface the metamodel cannot carry, without building anything."""
    iface = shell.interface
    if iface is None or not any(e.node is not None or e.browse_path is not None for e in shell.elements):
        return None
    if not iface.base.startswith("opc.tcp://") or len(iface.base) > MAX_IDENTIFIER or not xml_safe(iface.base):
        raise ValueError(f"interface base {iface.base!r} is not an opc.tcp:// URL the metamodel can carry")
    if not iface.title or not xml_safe(iface.title):
        raise ValueError(f"interface title {iface.title!r} must be non-empty XML-safe text")
    for label, identifier in (("AID submodel id", aid_id(shell)), ("AIMC submodel id", aimc_id(shell))):
        if len(identifier) > MAX_IDENTIFIER or not xml_safe(identifier):
            raise ValueError(f"{label} must be 1-{MAX_IDENTIFIER} XML-safe characters")
    for e in shell.elements:
        if e.browse_path is not None and not xml_safe(e.browse_path):
            raise ValueError(f"element {e.path!r}: browse path contains characters XML cannot carry")
    return aid_id(shell), aimc_id(shell)


def lazy_interfaces(shell: Shell, operational: model.Submodel, language: str) -> list[LazySubmodel]:
    """What `build_interfaces` makes, as LazySubmodels (lazy.py): built when asked for, not held. Raises its
    ValueError now, at build time."""
    ids = interface_ids(shell)
    if ids is None:
        return []
    group = LazyGroup(lambda: build_interfaces(shell, operational, language))
    return [
        LazySubmodel(ids[0], AID_ID_SHORT, external_reference(AID_SUBMODEL), group),
        LazySubmodel(ids[1], AIMC_ID_SHORT, external_reference(AIMC_SUBMODEL), group),
    ]


def build_interfaces(shell: Shell, operational: model.Submodel, language: str) -> list[model.Submodel]:
    """AID and AIMC submodels of the shell, or none when `shell.interface` is None or no element is read from
    the server. Raises ValueError for an interface the metamodel cannot carry; the caller adds the shell."""
    iface = shell.interface
    if iface is None or interface_ids(shell) is None:
        return []
    read = [e for e in shell.elements if e.node is not None or e.browse_path is not None]
    aid = model.Submodel(
        aid_id(shell),
        id_short=AID_ID_SHORT,
        semantic_id=external_reference(AID_SUBMODEL),
        kind=model.ModellingKind.INSTANCE,
    )
    interface = model.SubmodelElementCollection(
        INTERFACE_ID_SHORT,
        semantic_id=external_reference(INTERFACE),
        supplemental_semantic_id=(external_reference(OPCUA_BINDING), external_reference(THING_DESCRIPTION)),
    )
    aid.submodel_element.add(interface)
    interface.value.add(_string("title", iface.title, TITLE))
    channel = _endpoint(interface, iface.base, iface.security_mode, iface.security_policy)
    properties = model.SubmodelElementCollection("properties", semantic_id=external_reference(PROPERTY_AFFORDANCE))
    interface.value.add(
        model.SubmodelElementCollection(
            "InteractionMetadata",
            (properties,),
            semantic_id=external_reference(INTERACTION_METADATA),
            supplemental_semantic_id=(external_reference(INTERACTION_AFFORDANCE),),
        )
    )
    taken: set[str] = set()
    pairs = [(_property(e, unique_id_short(id_short_for(e.path, "Property"), taken), language), e) for e in read]
    for described, _ in pairs:
        properties.value.add(described)
    channel[1].value.add(
        model.ReferenceElement(
            None,
            model.ModelReference.from_referable(channel[0]),
            semantic_id=external_reference(HAS_SECURITY_CONFIGURATION),
        )
    )
    relations = model.SubmodelElementList(
        "MappingSourceSinkRelations",
        model.RelationshipElement,
        semantic_id=external_reference(MAPPING_RELATIONS),
        semantic_id_list_element=external_reference(MAPPING_RELATION),
    )
    for described, element in pairs:
        target = operational.get_referable(element.path.split("."))
        relations.value.add(
            model.RelationshipElement(
                None,
                model.ModelReference.from_referable(described),
                model.ModelReference.from_referable(target),
                semantic_id=external_reference(MAPPING_RELATION),
            )
        )
    configuration = model.SubmodelElementCollection(
        None,
        (
            model.ReferenceElement(
                "InterfaceReference",
                model.ModelReference.from_referable(interface),
                semantic_id=external_reference(INTERFACE_REFERENCE),
            ),
            relations,
        ),
        semantic_id=external_reference(MAPPING_CONFIGURATION),
    )
    aimc = model.Submodel(
        aimc_id(shell),
        id_short=AIMC_ID_SHORT,
        semantic_id=external_reference(AIMC_SUBMODEL),
        kind=model.ModellingKind.INSTANCE,
        submodel_element=(
            model.SubmodelElementList(
                "MappingConfigurations",
                model.SubmodelElementCollection,
                (configuration,),
                semantic_id=external_reference(MAPPING_CONFIGURATIONS),
                semantic_id_list_element=external_reference(MAPPING_CONFIGURATION),
            ),
        ),
    )
    return [aid, aimc]


def _string(
    id_short: str, text: str, semantic_id: str, datatype: model.DataTypeDefXsd = datatypes.String
) -> model.Property:
    return model.Property(id_short, datatype, text, semantic_id=external_reference(semantic_id))


def _endpoint(
    interface: model.SubmodelElementCollection, base: str, mode: str, policy: str
) -> tuple[model.SubmodelElementCollection, model.SubmodelElementList[model.ReferenceElement]]:
    """EndpointMetadata in the template's order; the security scheme and the (still empty) list that refers to
    it: the reference is made once both are in the submodel."""
    security: model.SubmodelElementList[model.ReferenceElement] = model.SubmodelElementList(
        "security",
        model.ReferenceElement,
        semantic_id=external_reference(HAS_SECURITY_CONFIGURATION),
        semantic_id_list_element=external_reference(HAS_SECURITY_CONFIGURATION),
    )
    channel = model.SubmodelElementCollection(
        "opcua_channel_sc",
        (
            _string("scheme", CHANNEL_SCHEME_VALUE, SECURITY_SCHEME),
            _string("uav_securityMode", mode, SECURITY_MODE),
            _string("uav_securityPolicy", policy, SECURITY_POLICY),
        ),
        semantic_id=external_reference(CHANNEL_SCHEME),
    )
    interface.value.add(
        model.SubmodelElementCollection(
            "EndpointMetadata",
            (
                _string("base", base, BASE, datatypes.AnyURI),
                _string("contentType", CONTENT_TYPE_VALUE, CONTENT_TYPE),
                security,
                model.SubmodelElementCollection(
                    "securityDefinitions", (channel,), semantic_id=external_reference(DEFINES_SECURITY_SCHEME)
                ),
            ),
            semantic_id=external_reference(ENDPOINT_METADATA),
        )
    )
    return channel, security


def _property(e: Element, id_short: str, language: str) -> model.SubmodelElementCollection:
    """One PropertyDefinition: what a WoT consumer needs to read the element's node."""
    kind = wot_type(e.opcua_type)
    elements: list[model.SubmodelElement] = [
        model.Property(
            "key",
            datatypes.String,
            e.path,
            semantic_id=external_reference(KEY),
            supplemental_semantic_id=(external_reference(NAME),),
        ),
        _string("type", "array" if e.is_array else kind, TYPE),
    ]
    if e.display_name is not None:
        names = lang_texts(e.display_name, language)
        elements.append(_string("title", names.get(language) or next(iter(names.values())), TITLE))
    elements.append(
        model.Property("observable", datatypes.Boolean, e.observable, semantic_id=external_reference(OBSERVABLE))
    )
    if e.unit:
        elements.append(_string("unit", e.unit, UNIT))
    if e.is_array:
        elements.append(
            model.SubmodelElementCollection(
                "items", (_string("type", kind, TYPE),), semantic_id=external_reference(ITEMS)
            )
        )
    elements.append(
        model.ReferenceElement(
            "valueSemantics",
            external_reference(data_type_reference(e.opcua_type)),
            semantic_id=external_reference(VALUE_SEMANTICS),
        )
    )
    form: list[model.SubmodelElement] = [
        # With a browse path only, the href is the endpoint itself and uav_browsePath names the node.
        _string("href", href(e.node) if e.node is not None else "/", HREF),
    ]
    if e.browse_path is not None:
        form.append(_string("uav_browsePath", e.browse_path, BROWSE_PATH))
    elements.append(model.SubmodelElementCollection("forms", form, semantic_id=external_reference(HAS_FORM)))
    return model.SubmodelElementCollection(
        id_short,
        elements,
        semantic_id=external_reference(PROPERTY_DEFINITION),
        supplemental_semantic_id=(external_reference(NAME),),
    )
