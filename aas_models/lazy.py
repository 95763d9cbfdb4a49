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
`LazySubmodel.doc()`: the serializer's JSON of it, made once and kept zlib-compressed (~30 bytes per point).

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
from typing import Any

from basyx.aas import model

Build = Callable[[], Sequence[model.Submodel]]


class LazyGroup:
    """Submodels one builder makes together (a shell's AID and AIMC: the AIMC refers to the AID's elements)."""

    __slots__ = ("_build", "_docs", "_lock")

    def __init__(self, build: Build) -> None:
        self._build = build
        self._docs: dict[str, bytes] | None = None  # id -> compressed JSON, once asked for
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

                self._docs = {
                    i: zlib.compress(json.dumps(submodel, cls=aas_json.AASToJsonEncoder).encode(), 6)
                    for i, submodel in self.build().items()
                }

    def doc(self, identifier: str) -> dict[str, Any]:
        """The serializer's JSON of the group's submodel `identifier`: a fresh copy, the caller's to change."""
        self.prepare()
        assert self._docs is not None
        found: dict[str, Any] = json.loads(zlib.decompress(self._docs[identifier]))
        return found


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
