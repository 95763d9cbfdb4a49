"""Build the AAS environment: one shell, a nameplate and an operational-data submodel per machine, a
ConceptDescription per own semanticId (concepts.py) and, for a site, its Hierarchical Structures submodel
(hierarchy.py).

Texts (nameplate texts, displayNames, descriptions) are plain strings tagged with the environment's
language, or {language tag: text} maps that carry every language given (text.py).

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
from .concepts import IEC61360_TEMPLATE, Use, build_concept_descriptions
from .concepts import unit_spec as _unit_spec
from .hierarchy import build_hierarchy
from .interfaces import build_interfaces, lazy_interfaces
from .lazy import LazySubmodel, ModelStore
from .nameplate import build_nameplate
from .spec import Element, Shell, Site
from .text import DEFAULT_LANGUAGE, NAME_LIMIT, TEXT_LIMIT, Text, is_language_tag, lang_texts, text_problem
from .timeseries import build_time_series
from .types import UnknownTypeError, ValueType, value_type

OPERATIONAL_ID_SHORT = "OperationalData"

__all__ = ["IEC61360_TEMPLATE", "ModelBuildError", "ShellEnvironment", "build_environment"]

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
    """The SDK object store plus O(1) lookups by (shell id, idShort path).

    `store` holds the Asset Interfaces Description and Mapping Configuration as LazySubmodels (lazy.py): every
    reader of it as a basyx object store gets them built; `store.entries()` lists them without building."""

    def __init__(
        self,
        store: ModelStore,
        shells: tuple[Shell, ...],
        slots: dict[tuple[str, str], ElementSlot],
        hierarchy_id: str | None = None,
    ) -> None:
        self.store = store
        self.shells = shells
        self.hierarchy_id = hierarchy_id  # the site's Hierarchical Structures submodel, if one was built
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


def build_environment(
    shells: Sequence[Shell],
    *,
    language: str = DEFAULT_LANGUAGE,
    site: Site | None = None,
    concept_descriptions: bool = False,
    lazy: bool = True,
) -> ShellEnvironment:
    """Build all shells; with `concept_descriptions`, a ConceptDescription per own semanticId (concepts.py);
    with `site`, the site's Hierarchical Structures submodel. The agent asks for both (agent/shells.py).

    `language` (BCP 47) tags every text given as a plain string: nameplate texts, displayNames, descriptions.
    With `lazy` (the default), the Asset Interfaces Description and Mapping Configuration are LazySubmodels
    (lazy.py); without, SDK objects held like the others (the same content: tests compare the two).
    """
    check_shells(shells, language)
    store = ModelStore()
    slots: dict[tuple[str, str], ElementSlot] = {}
    used_ids: set[str] = set()
    for shell in shells:
        used_ids.update((shell.id, shell.nameplate_id(), shell.operational_id()))
        try:
            nameplate = build_nameplate(shell, language)
        except ValueError as e:
            raise ModelBuildError(f"shell {shell.id!r}: nameplate: {e}") from e
        operational = _build_operational(shell, language, slots)
        # The optional submodels (Time Series Data; Asset Interfaces Description and Mapping Configuration).
        try:
            interfaces = lazy_interfaces if lazy else build_interfaces
            more: list[model.Submodel | LazySubmodel] = [
                *build_time_series(shell, language),
                *interfaces(shell, operational, language),
            ]
        except ValueError as e:
            raise ModelBuildError(f"shell {shell.id!r}: {e}") from e
        for submodel in more:
            if submodel.id in used_ids:
                raise ModelBuildError(f"shell {shell.id!r}: submodel id {submodel.id!r} is already used")
            used_ids.add(submodel.id)
        aas = model.AssetAdministrationShell(
            model.AssetInformation(model.AssetKind.INSTANCE, global_asset_id=shell.asset_id),
            shell.id,
            id_short=shell.id_short,
            display_name=_display_name(shell.display_name, language),
            submodel={_submodel_reference(sm) for sm in (nameplate, operational, *more)},
        )
        for identifiable in (aas, nameplate, operational, *more):
            if isinstance(identifiable, LazySubmodel):
                store.add_lazy(identifiable)
            else:
                store.add(identifiable)
    uses = (Use(s.spec, s.path.rsplit(".", 1)[-1], s.value_type) for s in slots.values())
    try:
        concepts = build_concept_descriptions(uses, language) if concept_descriptions else []
    except ValueError as e:
        raise ModelBuildError(f"concept descriptions: {e}") from e
    for concept in concepts:
        if concept.id in used_ids:
            raise ModelBuildError(f"semanticId {concept.id!r} is also the id of a shell or submodel")
        store.add(concept)
    hierarchy_id = None
    if site is not None:
        hierarchy_id = _add_hierarchy(store, site, shells, language, used_ids | set(store.ids()))
    return ShellEnvironment(store, tuple(shells), slots, hierarchy_id)


def _submodel_reference(submodel: model.Submodel | LazySubmodel) -> model.ModelReference[model.Submodel]:
    """What `ModelReference.from_referable` gives for a submodel, also for one not built."""
    return model.ModelReference((model.Key(model.KeyTypes.SUBMODEL, submodel.id),), model.Submodel)


def _add_hierarchy(
    store: ModelStore,
    site: Site,
    shells: Sequence[Shell],
    language: str,
    used_ids: set[str],
) -> str:
    where = f"site {site.id_short!r}"
    for label, identifier in (("asset_id", site.asset_id), ("hierarchy submodel id", site.submodel_id)):
        if not identifier or len(identifier) > MAX_IDENTIFIER or not xml_safe(identifier):
            raise ModelBuildError(f"{where}: {label} must be 1-{MAX_IDENTIFIER} XML-safe characters")
    if site.submodel_id in used_ids:
        raise ModelBuildError(f"{where}: hierarchy submodel id {site.submodel_id!r} is already used")
    if not _ID_SHORT.fullmatch(site.id_short):
        raise ModelBuildError(f"{where}: idShort {site.id_short!r} is invalid; allowed: {ID_SHORT_RULE}")
    _check_text(site.display_name, language, NAME_LIMIT, f"{where}: name")
    for shell in shells:
        if shell.line is not None:
            _check_text(shell.line, language, NAME_LIMIT, f"shell {shell.id!r}: line")
    try:
        submodel = build_hierarchy(site, shells, language)
    except ValueError as e:
        raise ModelBuildError(f"{where}: hierarchy: {e}") from e
    store.add(submodel)
    return submodel.id


def _check_text(text: Text | None, language: str, limit: int, where: str) -> None:
    problem = text_problem(text, language, limit) if text is not None else None
    if problem:
        raise ModelBuildError(f"{where}: {problem}")


def _display_name(text: Text | None, language: str) -> model.MultiLanguageNameType | None:
    return model.MultiLanguageNameType(lang_texts(text, language)) if text is not None else None


def _description(text: Text | None, language: str) -> model.MultiLanguageTextType | None:
    return model.MultiLanguageTextType(lang_texts(text, language)) if text is not None else None


def check_shells(shells: Sequence[Shell], language: str) -> None:
    """ModelBuildError for what `build_environment` would refuse in the shells themselves (ids, idShorts,
    texts), without building anything: milliseconds where building takes seconds for 10,000 elements."""
    if not is_language_tag(language):
        raise ModelBuildError(f"language {language!r} is not a well-formed BCP 47 language tag (e.g. ko-KR, en)")
    used_ids: set[str] = set()
    for shell in shells:
        _check_shell(shell, used_ids, language)
        used_ids.update((shell.id, shell.nameplate_id(), shell.operational_id()))


def _check_shell(shell: Shell, used_ids: set[str], language: str) -> None:
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
    _check_text(shell.display_name, language, NAME_LIMIT, f"{where}: display name")
    for f in fields(shell.nameplate):
        text = getattr(shell.nameplate, f.name)
        if isinstance(text, str) and (not text or not xml_safe(text)):
            raise ModelBuildError(f"{where}: nameplate {f.name} must be non-empty XML-safe text, got {text!r}")
    plate = shell.nameplate
    for name, text in (
        ("manufacturer_name", plate.manufacturer_name),
        ("product_designation", plate.product_designation),
        ("product_family", plate.product_family),
    ):  # the MultiLanguageProperty ones
        _check_text(text, language, TEXT_LIMIT, f"{where}: nameplate {name}")
    for f in fields(shell.nameplate.address):
        text = getattr(shell.nameplate.address, f.name)
        if isinstance(text, str) and (not text or not xml_safe(text)):
            raise ModelBuildError(f"{where}: nameplate address {f.name} must be non-empty XML-safe text")
        _check_text(text, language, TEXT_LIMIT, f"{where}: nameplate address {f.name}")


def _build_operational(shell: Shell, language: str, slots: dict[tuple[str, str], ElementSlot]) -> model.Submodel:
    _check_paths(shell, language)
    submodel = model.Submodel(
        shell.operational_id(),
        id_short=OPERATIONAL_ID_SHORT,
        display_name=_display_name(shell.display_name, language),
        kind=model.ModellingKind.INSTANCE,
    )
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


def _check_paths(shell: Shell, language: str) -> None:
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
        _check_element_texts(spec, where, language)
    clashes = sorted(leaves & prefixes.keys())
    if clashes:
        raise ModelBuildError(
            f"shell {shell.id!r}, element {clashes[0]!r}: path is a value element and also a collection "
            f"(needed by {prefixes[clashes[0]]!r})"
        )


def _check_element_texts(spec: Element, where: str, language: str) -> None:
    if spec.semantic_id is not None and (
        not spec.semantic_id or len(spec.semantic_id) > MAX_IDENTIFIER or not xml_safe(spec.semantic_id)
    ):
        raise ModelBuildError(f"{where}: semantic_id must be 1-{MAX_IDENTIFIER} XML-safe characters")
    if spec.unit is not None and (not spec.unit or not xml_safe(spec.unit)):
        raise ModelBuildError(f"{where}: unit must be non-empty XML-safe text, got {spec.unit!r}")
    if isinstance(spec.description, str) and not xml_safe(spec.description):
        raise ModelBuildError(f"{where}: description contains characters XML cannot carry")
    if spec.description:  # an empty plain description is no description
        _check_text(spec.description, language, TEXT_LIMIT, f"{where}: description")
    _check_text(spec.display_name, language, NAME_LIMIT, f"{where}: display name")


def _leaf(spec: Element, id_short: str, vt: ValueType, language: str) -> model.SubmodelElement:
    semantic_id = external_reference(spec.semantic_id) if spec.semantic_id else None
    description = _description(spec.description or None, language)
    display_name = _display_name(spec.display_name, language)
    unit_specs = (_unit_spec(id_short, spec.unit, vt),) if spec.unit else ()
    if spec.is_array:
        if vt.datatype is None:
            return model.SubmodelElementList(
                id_short,
                model.MultiLanguageProperty,
                semantic_id=semantic_id,
                display_name=display_name,
                description=description,
                embedded_data_specifications=unit_specs,
            )
        return model.SubmodelElementList(
            id_short,
            model.Property,
            value_type_list_element=vt.datatype,
            semantic_id=semantic_id,
            display_name=display_name,
            description=description,
            embedded_data_specifications=unit_specs,
        )
    if vt.datatype is None:
        return model.MultiLanguageProperty(
            id_short,
            semantic_id=semantic_id,
            display_name=display_name,
            description=description,
            embedded_data_specifications=unit_specs,
        )
    return model.Property(
        id_short,
        vt.datatype,
        semantic_id=semantic_id,
        display_name=display_name,
        description=description,
        embedded_data_specifications=unit_specs,
    )
