"""Hierarchical Structures enabling Bills of Material 1.1 (IDTA 02011-1-1): the plant as site → line → machine.

Ids are those of shared/reference/idta-templates/hierarchical-structures-1.1.1.json. Deliberately not
copied from that file:
- the submodel's semanticId is a ModelReference with a Submodel key there (a defect: a semanticId names
  a concept); here it is an ExternalReference (GlobalReference), as every other semanticId;
- SMT/Cardinality and EditIdShort qualifiers: TemplateQualifiers, meaningless on an instance;
- the template's `https://admin-shell.io/SMT/General/IntentionallyEmpty` first/second: placeholders.

What is built, archetype "Full" (the whole tree below the entry node):

    HierarchicalStructures (Submodel)
      EntryNode = the site: Entity, SelfManagedEntity, globalAssetId = the site's asset id
        <line>: Entity (Node), CoManagedEntity: a line has no shell of its own
          <machine>: Entity (Node), SelfManagedEntity, globalAssetId = the machine shell's globalAssetId
          HasPart_<machine>: RelationshipElement, first = the line, second = the machine
        HasPart_<line>: RelationshipElement, first = the site, second = the line
      ArcheType: "Full"

Relationships sit in the statements of the entity they start from (first), as in the template; first and
second are ModelReferences to the entities (Submodel, Entity[, Entity]).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from basyx.aas import model
from basyx.aas.model import datatypes

from ._common import external_reference
from .spec import Shell, Site
from .text import Text, lang_texts

SUBMODEL_SEMANTIC_ID = "https://admin-shell.io/idta/HierarchicalStructures/1/1/Submodel"
ENTRY_NODE = "https://admin-shell.io/idta/HierarchicalStructures/EntryNode/1/0"
NODE = "https://admin-shell.io/idta/HierarchicalStructures/Node/1/0"
HAS_PART = "https://admin-shell.io/idta/HierarchicalStructures/HasPart/1/0"
ARCHE_TYPE = "https://admin-shell.io/idta/HierarchicalStructures/ArcheType/1/0"
ID_SHORT = "HierarchicalStructures"

_NOT_ID_SHORT = re.compile(r"[^A-Za-z0-9_]+")
_MAX_ID_SHORT = 128


class _Entity(model.Entity):
    """An Entity whose JSON leaves out an empty specificAssetIds.

    basyx 2.2 writes `"specificAssetIds": []` for every Entity without specific asset ids (SDK issue #636);
    the schemas of both versions want the key absent or at least one item. Reporting None for an empty list
    makes every basyx JSON writer (exports, the HTTP API) leave it out; its XML writer already does.
    """

    @property  # type: ignore[override]
    def specific_asset_id(self) -> model.ConstrainedList[model.SpecificAssetId] | None:
        return self._specific_asset_id or None

    @specific_asset_id.setter
    def specific_asset_id(self, specific_asset_id: Iterable[model.SpecificAssetId]) -> None:
        self._specific_asset_id[:] = specific_asset_id


def id_short_for(name: str, prefix: str) -> str:
    """An idShort from free text: runs of other characters become '_'; `prefix` where no letter leads."""
    s = _NOT_ID_SHORT.sub("_", name).strip("_")
    if not s[:1].isascii() or not s[:1].isalpha():
        s = f"{prefix}_{s}" if s else prefix
    return s[:_MAX_ID_SHORT]


def unique_id_short(id_short: str, taken: set[str]) -> str:
    """`id_short`, or with `_2`, `_3`, ... where it is taken already (kept within 128 characters); now taken."""
    candidate, n = id_short, 1
    while candidate in taken:
        n += 1
        suffix = f"_{n}"
        candidate = id_short[: _MAX_ID_SHORT - len(suffix)] + suffix
    taken.add(candidate)
    return candidate


def _display_name(text: Text | None, language: str) -> model.MultiLanguageNameType | None:
    return model.MultiLanguageNameType(lang_texts(text, language)) if text is not None else None


class _Node:
    """An entity and the idShorts taken among its statements."""

    def __init__(self, entity: model.Entity) -> None:
        self.entity = entity
        self.taken: set[str] = set()
        self.children: list[model.Entity] = []

    def add(self, child: model.Entity) -> model.Entity:
        child.id_short = unique_id_short(child.id_short or "Node", self.taken)
        self.entity.statement.add(child)
        self.children.append(child)
        return child

    def relate(self) -> None:
        """A HasPart to every child, once all entities are in the submodel (references need the whole path)."""
        for child in self.children:
            self.entity.statement.add(
                model.RelationshipElement(
                    unique_id_short(f"HasPart_{child.id_short}"[:_MAX_ID_SHORT], self.taken),
                    model.ModelReference.from_referable(self.entity),
                    model.ModelReference.from_referable(child),
                    semantic_id=external_reference(HAS_PART),
                )
            )


def build_hierarchy(site: Site, shells: Sequence[Shell], language: str) -> model.Submodel:
    """Raises ValueError (from basyx) for texts or ids the metamodel rejects; the caller adds context."""
    submodel = model.Submodel(
        site.submodel_id,
        id_short=ID_SHORT,
        semantic_id=external_reference(SUBMODEL_SEMANTIC_ID),
        kind=model.ModellingKind.INSTANCE,
    )
    entry = _Entity(
        site.id_short,
        model.EntityType.SELF_MANAGED_ENTITY,
        global_asset_id=site.asset_id,
        display_name=_display_name(site.display_name, language),
        semantic_id=external_reference(ENTRY_NODE),
    )
    submodel.submodel_element.add(entry)
    submodel.submodel_element.add(
        model.Property("ArcheType", datatypes.String, "Full", semantic_id=external_reference(ARCHE_TYPE))
    )
    root = _Node(entry)
    lines: dict[str, _Node] = {}
    for shell in shells:
        parent = root
        if shell.line is not None:
            if shell.line not in lines:
                line = _Entity(
                    id_short_for(shell.line, "Line"),
                    model.EntityType.CO_MANAGED_ENTITY,
                    display_name=_display_name(shell.line, language),
                    semantic_id=external_reference(NODE),
                )
                lines[shell.line] = _Node(root.add(line))
            parent = lines[shell.line]
        parent.add(
            _Entity(
                shell.id_short,
                model.EntityType.SELF_MANAGED_ENTITY,
                global_asset_id=shell.asset_id,
                display_name=_display_name(shell.display_name, language),
                semantic_id=external_reference(NODE),
            )
        )
    for node in (*lines.values(), root):
        node.relate()
    return submodel
