"""Build the AAS environment (one shell, a nameplate and an operational-data submodel per machine).

Target metamodel is 3.1 (what basyx 2.2 writes), restricted where it costs nothing to the subset that
3.0 readers also accept: idShorts match ^[A-Za-z][A-Za-z0-9_]*$ with 2-128 characters, list children
carry no idShort, units are embedded IEC 61360 data specifications (present in both versions).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

from basyx.aas import model

from ._common import MAX_IDENTIFIER, external_reference, xml_safe
from .nameplate import build_nameplate
from .spec import Element, Shell
from .types import UnknownTypeError, ValueType, value_type

OPERATIONAL_ID_SHORT = "OperationalData"

# Current id of the IEC 61360 template (IDTA-01003-a-3-0-1 dropped the minor version from it).
IEC61360_TEMPLATE = "https://admin-shell.io/DataSpecificationTemplates/DataSpecificationIec61360/3"

_ID_SHORT = re.compile(r"[A-Za-z][A-Za-z0-9_]{1,127}")
ID_SHORT_RULE = "2-128 characters, a letter first, then only letters, digits and '_' (no '-', no '.')"


class ModelBuildError(ValueError):
    """The shell specs cannot become a valid AAS environment; the message names shell and path."""


class UnknownElementError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class ElementSlot:
    """One spec Element and the SDK element that holds its value."""

    shell_id: str
    path: str
    spec: Element
    value_type: ValueType
    element: model.SubmodelElement  # Property, MultiLanguageProperty or SubmodelElementList


class ShellEnvironment:
    """The SDK object store plus O(1) lookups by (shell id, idShort path)."""

    def __init__(
        self,
        store: model.DictIdentifiableStore[model.Identifiable],
        shells: tuple[Shell, ...],
        slots: dict[tuple[str, str], ElementSlot],
    ) -> None:
        self.store = store
        self.shells = shells
        self._shells = {shell.id: shell for shell in shells}
        self._slots = slots

    def shell(self, shell_id: str) -> Shell:
        try:
            return self._shells[shell_id]
        except KeyError:
            raise UnknownElementError(f"no shell {shell_id!r} in this environment") from None

    def slot(self, shell_id: str, path: str) -> ElementSlot:
        try:
            return self._slots[(shell_id, path)]
        except KeyError:
            self.shell(shell_id)
            raise UnknownElementError(f"shell {shell_id!r} has no element {path!r}") from None

    def slots(self) -> Iterator[ElementSlot]:
        return iter(self._slots.values())

    def element(self, shell_id: str, path: str) -> model.SubmodelElement:
        return self.slot(shell_id, path).element

    def submodel_id(self, shell_id: str) -> str:
        """Id of the operational-data submodel."""
        return self.shell(shell_id).operational_id()

    def nameplate_id(self, shell_id: str) -> str:
        return self.shell(shell_id).nameplate_id()

    def semantic_id(self, shell_id: str, path: str) -> str | None:
        return self.slot(shell_id, path).spec.semantic_id

    def unit(self, shell_id: str, path: str) -> str | None:
        return self.slot(shell_id, path).spec.unit


def build_environment(shells: Sequence[Shell], *, language: str = "en") -> ShellEnvironment:
    """Build all shells; `language` tags the nameplate texts and element descriptions (BCP 47)."""
    store: model.DictIdentifiableStore[model.Identifiable] = model.DictIdentifiableStore()
    slots: dict[tuple[str, str], ElementSlot] = {}
    used_ids: set[str] = set()
    for shell in shells:
        _check_shell(shell, used_ids)
        used_ids.update((shell.id, shell.nameplate_id(), shell.operational_id()))
        try:
            nameplate = build_nameplate(shell, language)
        except ValueError as e:
            raise ModelBuildError(f"shell {shell.id!r}: nameplate: {e}") from e
        operational = _build_operational(shell, language, slots)
        aas = model.AssetAdministrationShell(
            model.AssetInformation(model.AssetKind.INSTANCE, global_asset_id=shell.asset_id),
            shell.id,
            id_short=shell.id_short,
            submodel={
                model.ModelReference.from_referable(nameplate),
                model.ModelReference.from_referable(operational),
            },
        )
        for identifiable in (aas, nameplate, operational):
            store.add(identifiable)
    return ShellEnvironment(store, tuple(shells), slots)


def _check_shell(shell: Shell, used_ids: set[str]) -> None:
    where = f"shell {shell.id!r}"
    for label, identifier in (
        ("id", shell.id),
        ("asset_id", shell.asset_id),
        ("nameplate submodel id", shell.nameplate_id()),
        ("operational submodel id", shell.operational_id()),
    ):
        if not identifier or len(identifier) > MAX_IDENTIFIER or not xml_safe(identifier):
            raise ModelBuildError(f"{where}: {label} must be 1-{MAX_IDENTIFIER} XML-safe characters")
    if shell.nameplate_id() == shell.operational_id():
        raise ModelBuildError(f"{where}: nameplate and operational submodel share id {shell.nameplate_id()!r}")
    for identifier in (shell.id, shell.nameplate_id(), shell.operational_id()):
        if identifier in used_ids:
            raise ModelBuildError(f"{where}: identifier {identifier!r} is already used by an earlier shell")
    if not _ID_SHORT.fullmatch(shell.id_short):
        raise ModelBuildError(f"{where}: shell idShort {shell.id_short!r} is invalid; allowed: {ID_SHORT_RULE}")
    for f in fields(shell.nameplate):
        text = getattr(shell.nameplate, f.name)
        if isinstance(text, str) and (not text or not xml_safe(text)):
            raise ModelBuildError(f"{where}: nameplate {f.name} must be non-empty XML-safe text, got {text!r}")
    for f in fields(shell.nameplate.address):
        text = getattr(shell.nameplate.address, f.name)
        if text is not None and (not text or not xml_safe(text)):
            raise ModelBuildError(f"{where}: nameplate address {f.name} must be non-empty XML-safe text")


def _build_operational(shell: Shell, language: str, slots: dict[tuple[str, str], ElementSlot]) -> model.Submodel:
    _check_paths(shell)
    submodel = model.Submodel(shell.operational_id(), id_short=OPERATIONAL_ID_SHORT, kind=model.ModellingKind.INSTANCE)
    collections: dict[str, model.SubmodelElementCollection] = {}
    for spec in shell.elements:
        where = f"shell {shell.id!r}, element {spec.path!r}"
        try:
            vt = value_type(spec.opcua_type)
        except UnknownTypeError as e:
            raise ModelBuildError(f"{where}: {e}") from e
        *parents, id_short = spec.path.split(".")
        container: model.Submodel | model.SubmodelElementCollection = submodel
        for depth in range(len(parents)):
            prefix = ".".join(parents[: depth + 1])
            if prefix not in collections:
                smc = model.SubmodelElementCollection(parents[depth])
                _children(container).add(smc)
                collections[prefix] = smc
            container = collections[prefix]
        try:
            element = _leaf(spec, id_short, vt, language)
        except ValueError as e:
            raise ModelBuildError(f"{where}: {e}") from e
        _children(container).add(element)
        slots[(shell.id, spec.path)] = ElementSlot(shell.id, spec.path, spec, vt, element)
    return submodel


def _children(
    container: model.Submodel | model.SubmodelElementCollection,
) -> model.NamespaceSet[model.SubmodelElement]:
    if isinstance(container, model.Submodel):
        return container.submodel_element
    return container.value


def _check_paths(shell: Shell) -> None:
    """Validate every idShort segment, duplicates and leaf/collection clashes before building anything."""
    leaves: set[str] = set()
    prefixes: dict[str, str] = {}  # collection path → first element path that needs it
    for spec in shell.elements:
        where = f"shell {shell.id!r}, element {spec.path!r}"
        segments = spec.path.split(".")
        for segment in segments:
            if not _ID_SHORT.fullmatch(segment):
                raise ModelBuildError(
                    f"{where}: idShort {segment!r} is invalid; each dot-separated segment needs {ID_SHORT_RULE}"
                )
        if spec.path in leaves:
            raise ModelBuildError(f"{where}: path declared twice")
        leaves.add(spec.path)
        for depth in range(1, len(segments)):
            prefixes.setdefault(".".join(segments[:depth]), spec.path)
        _check_element_texts(spec, where)
    clashes = sorted(leaves & prefixes.keys())
    if clashes:
        raise ModelBuildError(
            f"shell {shell.id!r}, element {clashes[0]!r}: path is a value element and also a collection "
            f"(needed by {prefixes[clashes[0]]!r})"
        )


def _check_element_texts(spec: Element, where: str) -> None:
    if spec.semantic_id is not None and (
        not spec.semantic_id or len(spec.semantic_id) > MAX_IDENTIFIER or not xml_safe(spec.semantic_id)
    ):
        raise ModelBuildError(f"{where}: semantic_id must be 1-{MAX_IDENTIFIER} XML-safe characters")
    if spec.unit is not None and (not spec.unit or not xml_safe(spec.unit)):
        raise ModelBuildError(f"{where}: unit must be non-empty XML-safe text, got {spec.unit!r}")
    if spec.description is not None and not xml_safe(spec.description):
        raise ModelBuildError(f"{where}: description contains characters XML cannot carry")


def _leaf(spec: Element, id_short: str, vt: ValueType, language: str) -> model.SubmodelElement:
    semantic_id = external_reference(spec.semantic_id) if spec.semantic_id else None
    description = model.MultiLanguageTextType({language: spec.description}) if spec.description else None
    unit_specs = (_unit_spec(id_short, spec.unit, vt),) if spec.unit else ()
    if spec.is_array:
        if vt.datatype is None:
            return model.SubmodelElementList(
                id_short,
                model.MultiLanguageProperty,
                semantic_id=semantic_id,
                description=description,
                embedded_data_specifications=unit_specs,
            )
        return model.SubmodelElementList(
            id_short,
            model.Property,
            value_type_list_element=vt.datatype,
            semantic_id=semantic_id,
            description=description,
            embedded_data_specifications=unit_specs,
        )
    if vt.datatype is None:
        return model.MultiLanguageProperty(
            id_short,
            semantic_id=semantic_id,
            description=description,
            embedded_data_specifications=unit_specs,
        )
    return model.Property(
        id_short,
        vt.datatype,
        semantic_id=semantic_id,
        description=description,
        embedded_data_specifications=unit_specs,
    )


def _unit_spec(id_short: str, unit: str, vt: ValueType) -> model.EmbeddedDataSpecification:
    """The unit as IEC 61360 content embedded in the element (readable without concept descriptions)."""
    return model.EmbeddedDataSpecification(
        external_reference(IEC61360_TEMPLATE),
        model.DataSpecificationIEC61360(
            # AASc-3a-002 wants an English preferred name; the idShort is the only name we have.
            model.PreferredNameTypeIEC61360({"en": id_short}),
            data_type=vt.measure,
            unit=unit,
        ),
    )
