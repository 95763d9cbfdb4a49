"""Submodels held as a recipe instead of SDK objects, and the store that holds them.

basyx objects are heavy (about 1-2 KB per element: two NamespaceSets, lists and dicts each), and the Asset
Interfaces Description and Mapping Configuration (interfaces.py) have about ten elements per point: 16 KB per
point, 80 MB for a 5,000-point machine, for submodels that hold no live value and change only with the
configuration. So the environment keeps them as `LazySubmodel`s: id, idShort and semanticId (what listing and
filtering need), and the recipe that builds them from the shell spec.

`ModelStore` is basyx's DictIdentifiableStore for every reader of `ShellEnvironment.store` (the exports, the
reference checks, `get_item`, iteration): a lazy submodel is built when it is asked for, in the order it was
added, and not kept. Within `with store.kept():` what is built is kept until the block ends (an export that
resolves references and then writes builds each submodel once, and `reference.resolve(store)` gives the same
objects). The AAS API reads `store.entries()`, which builds nothing, and serves a lazy submodel from
`LazySubmodel.doc()`: the serializer's JSON of it, made once and kept zlib-compressed in parts (~45 bytes per
point); an element read (`LazyGroup.path`) decompresses only the parts on its way (`_Packed`).

Readers see exactly the content the objects had: the objects come from the same builder, the JSON from the
same serializer (tests/test_api.py and tests/test_export.py compare eager and lazy environments).
Not thread-safe, as the rest of the model: build, read and export from one thread at a time.
"""

from __future__ import annotations

import contextlib
import json
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from basyx.aas import model

Build = Callable[[], Sequence[model.Submodel]]


class LazyGroup:
    """Submodels one builder makes together (a shell's AID and AIMC: the AIMC refers to the AID's elements)."""

    __slots__ = ("_build", "_docs", "_lock")

    def __init__(self, build: Build) -> None:
        self._build = build
        self._docs: dict[str, _Packed] | None = None  # id -> its JSON, compressed, once asked for
        self._lock = threading.Lock()

    def build(self) -> dict[str, model.Submodel]:
        """Fresh SDK objects of every submodel of the group, by id."""
        return {submodel.id: submodel for submodel in self._build()}

    @property
    def prepared(self) -> bool:
        """Whether `doc` has its JSON at hand (else its first call builds and serializes: seconds for 5,000
        points, which the API spends in a worker thread: `prepare`)."""
        return self._docs is not None

    def prepare(self) -> None:
        """Build and serialize the group's submodels once (thread-safe: the API may call it from a worker thread
        while the event loop reads; building only reads the shell spec and the operational submodel's structure).
        """
        with self._lock:
            if self._docs is None:
                from basyx.aas.adapter import json as aas_json  # imported when first needed (agent/api/aas.py)

                # The SDK objects go before the JSON is parsed back: at 5,000 points each is tens of MB.
                texts = {i: json.dumps(sm, cls=aas_json.AASToJsonEncoder) for i, sm in self.build().items()}
                docs: dict[str, _Packed] = {}
                for i in list(texts):
                    docs[i] = _Packed(json.loads(texts.pop(i)))
                self._docs = docs

    @property
    def kept_bytes(self) -> int:
        """Bytes of compressed JSON kept for the group's submodels (0 before the first read)."""
        return sum(packed.size for packed in (self._docs or {}).values())

    def doc(self, identifier: str) -> dict[str, Any]:
        """The serializer's JSON of the group's submodel `identifier`: a fresh copy, the caller's to change."""
        self.prepare()
        assert self._docs is not None
        return self._docs[identifier].doc()

    def path(self, identifier: str, segments: Sequence[str | int]) -> list[dict[str, Any]] | None:
        """The JSON objects along `segments` (idShorts, list indexes) in submodel `identifier`, the last one whole
        and fresh, the ones before it only for their modelType; None if an element on the way is missing.
        Reads only the parts of the JSON on the way (`_Packed`), not the whole submodel."""
        self.prepare()
        assert self._docs is not None
        return self._docs[identifier].path(segments)


# What holds an element's children in the metamodel's JSON, by modelType.
CHILDREN: Final = {
    "Submodel": "submodelElements",
    "SubmodelElementCollection": "value",
    "SubmodelElementList": "value",
    "Entity": "statements",
    "AnnotatedRelationshipElement": "annotations",
}
GROUP = 64  # children stored together, for an element with more than this many (`_Packed`)
_PART = "\u0000part"  # the key of a placeholder for a stored group of children (no idShort or JSON key has it)


class _Packed:
    """One submodel's JSON, compressed, in parts: each element with more than `GROUP` children keeps, in place of
    them, one placeholder per `GROUP` of them (its part number, and their idShorts); each group is a part of its
    own, itself packed so. Reading one element (`path`) decompresses the parts on its way and the element's own,
    about `GROUP` elements each, instead of a 5,000-point submodel; `doc` puts everything back together.
    With 5,000 points the AID and AIMC keep 217 KiB (~45 bytes per point; the whole JSON compressed at once was
    ~30), and one element of the AID reads in about a millisecond instead of the 0.4 s of parsing it all."""

    __slots__ = ("_parts",)

    def __init__(self, doc: dict[str, Any]) -> None:
        self._parts: list[bytes] = [b""]  # part 0: the submodel itself, once its groups are stored
        self._parts[0] = _compressed(self._packed(doc))

    @property
    def size(self) -> int:
        return sum(map(len, self._parts))

    def _packed(self, element: dict[str, Any]) -> dict[str, Any]:
        """`element` with each group of children over `GROUP` stored as a part and left as a placeholder."""
        key = CHILDREN.get(element.get("modelType", ""))
        children = element.get(key) if key else None
        if key is None or not isinstance(children, list) or not children:
            return element
        children = [self._packed(c) if isinstance(c, dict) else c for c in children]
        if len(children) > GROUP:
            placeholders = []
            for i in range(0, len(children), GROUP):
                group = children[i : i + GROUP]
                placeholders.append({_PART: len(self._parts), "ids": [_id_of(c) for c in group]})
                self._parts.append(_compressed(group))
            children = placeholders
        return {**element, key: children}

    def _part(self, number: int) -> Any:
        return json.loads(zlib.decompress(self._parts[number]))

    def _whole(self, element: Any) -> Any:
        """`element` with every placeholder under it replaced by its children, at any depth."""
        if not isinstance(element, dict):
            return element
        key = CHILDREN.get(element.get("modelType", ""))
        children = element.get(key) if key else None
        if not isinstance(children, list) or not children:
            return element
        out: list[Any] = []
        for child in children:
            if isinstance(child, dict) and _PART in child:
                out += self._part(child[_PART])
            else:
                out.append(child)
        element[key] = [self._whole(c) for c in out]
        return element

    def doc(self) -> dict[str, Any]:
        found: dict[str, Any] = self._whole(self._part(0))
        return found

    def path(self, segments: Sequence[str | int]) -> list[dict[str, Any]] | None:
        if not segments:
            return None
        node: dict[str, Any] = self._part(0)
        on_the_way = [node]
        for segment in segments:
            kind = node.get("modelType", "")
            key = CHILDREN.get(kind)
            children = node.get(key) if key else None
            if not isinstance(children, list):
                return None
            found = _child(children, segment, kind == "SubmodelElementList", self._part)
            if found is None:
                return None
            node = found
            on_the_way.append(node)
        on_the_way[-1] = self._whole(node)
        return on_the_way[1:]


def _compressed(value: Any) -> bytes:
    return zlib.compress(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(), 6)


def _id_of(child: Any) -> str:
    return (child.get("idShort") or "") if isinstance(child, dict) else ""


def _child(children: list[Any], segment: str | int, is_list: bool, part: Callable[[int], Any]) -> dict[str, Any] | None:
    """The child `segment` names, as the API names children: a list's by index, the others' by idShort ("" for
    none), the first that matches; a placeholder's group is read only when the child is in it."""
    index = 0
    for child in children:
        if isinstance(child, dict) and _PART in child:
            ids: list[str] = child["ids"]
            if is_list:
                if isinstance(segment, int) and index <= segment < index + len(ids):
                    found: dict[str, Any] = part(child[_PART])[segment - index]
                    return found
            elif isinstance(segment, str) and segment in ids:
                found = part(child[_PART])[ids.index(segment)]
                return found
            index += len(ids)
            continue
        if (segment == index) if is_list else (isinstance(segment, str) and _id_of(child) == segment):
            return child if isinstance(child, dict) else None
        index += 1
    return None


class LazySubmodel:
    """A submodel that is built when asked for; what listing and filtering need is at hand without building."""

    __slots__ = ("group", "id", "id_short", "semantic_id")

    def __init__(self, identifier: str, id_short: str, semantic_id: model.Reference | None, group: LazyGroup) -> None:
        self.id = identifier
        self.id_short = id_short
        self.semantic_id = semantic_id
        self.group = group

    def build(self) -> model.Submodel:
        built = self.group.build()[self.id]
        if built.id_short != self.id_short or built.semantic_id != self.semantic_id:
            raise AssertionError(f"lazy submodel {self.id!r}: the builder made a different submodel")
        return built

    def doc(self) -> dict[str, Any]:
        """What `json.loads(json.dumps(submodel, cls=AASToJsonEncoder))` of the built submodel gives."""
        return self.group.doc(self.id)

    def __repr__(self) -> str:
        return f"LazySubmodel[{self.id}]"


class ModelStore(model.AbstractObjectStore[str, model.Identifiable]):
    """A DictIdentifiableStore (the same order, the same errors) that also holds LazySubmodels."""

    def __init__(self) -> None:  # as DictIdentifiableStore: AbstractObjectStore's __init__ is abstract
        self._entries: dict[str, model.Identifiable | LazySubmodel] = {}
        self._kept: dict[str, model.Submodel] | None = None

    # -- what the builder and the API use

    def add_lazy(self, lazy: LazySubmodel) -> None:
        if lazy.id in self._entries:
            raise KeyError(f"Identifiable object with same id {lazy.id} is already stored in this store")
        self._entries[lazy.id] = lazy

    def entry(self, identifier: str) -> model.Identifiable | LazySubmodel:
        """The object, or the LazySubmodel, of `identifier` (KeyError if none): builds nothing."""
        return self._entries[identifier]

    def entries(self) -> Iterator[model.Identifiable | LazySubmodel]:
        """Every object and LazySubmodel, in the order they were added: builds nothing."""
        return iter(self._entries.values())

    def ids(self) -> Iterator[str]:
        return iter(self._entries)

    @contextlib.contextmanager
    def kept(self) -> Iterator[None]:
        """Lazy submodels built within the block are built once and kept until it ends (nests)."""
        if self._kept is not None:
            yield
            return
        self._kept = {}
        try:
            yield
        finally:
            self._kept = None

    def _built(self, lazy: LazySubmodel) -> model.Submodel:
        if self._kept is None:
            return lazy.build()
        if lazy.id not in self._kept:
            built = lazy.group.build()
            for identifier, submodel in built.items():
                entry = self._entries.get(identifier)
                if isinstance(entry, LazySubmodel) and entry.group is lazy.group:
                    self._kept[identifier] = submodel
        return self._kept[lazy.id]

    # -- basyx's AbstractObjectStore

    def get_item(self, identifier: str) -> model.Identifiable:
        found = self._entries[identifier]
        return self._built(found) if isinstance(found, LazySubmodel) else found

    def add(self, x: model.Identifiable) -> None:
        if x.id in self._entries and self._entries[x.id] is not x:
            raise KeyError(f"Identifiable object with same id {x.id} is already stored in this store")
        self._entries[x.id] = x

    def discard(self, x: model.Identifiable) -> None:
        if x.id in self._entries and (self._entries[x.id] is x or (self._kept or {}).get(x.id) is x):
            del self._entries[x.id]
            if self._kept is not None:
                self._kept.pop(x.id, None)

    def __contains__(self, x: object) -> bool:
        if isinstance(x, str):
            return x in self._entries
        if not isinstance(x, model.Identifiable):
            return False
        found = self._entries.get(x.id)
        if isinstance(found, LazySubmodel):
            return self._kept is not None and self._kept.get(x.id) is x
        return found is x

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[model.Identifiable]:
        for found in list(self._entries.values()):
            yield self._built(found) if isinstance(found, LazySubmodel) else found
