"""The AAS read routes: AAS Part 2 (IDTA-01002-3-0), API version 3.0, read profiles (SSP-002) of the
AAS repository and the submodel repository service specifications (docs/api.md).

Every read first writes the latest collected values into the SDK model (`LiveValues.apply`), then
serialises with basyx's JSON serializer. A submodel the store holds as a LazySubmodel (the asset interfaces,
aas_models/lazy.py: no live values) is served from its JSON, which that serializer made once; its elements
are then that JSON's objects (`Node`), walked by the same rules (`basyx.aas.adapter.json`, metamodel 3.1 JSON, which for
what the agent builds is also valid 3.0 JSON). What the spec adds on top — `level=core`,
`extent`, `$metadata`, `$value`, `$reference`, `$path`, paging — is applied to that JSON, never
by changing the model.

Identifiers in paths and queries are base64url-encoded UTF-8 without padding (padding is
tolerated); idShort paths are plain (`Control.FeedOverride`, `Axis[0]`). Errors carry the spec's
body: `{"messages": [{"code", "messageType": "Error", "text", "timestamp"}]}`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import orjson
from aiohttp import web
from basyx.aas import model
from basyx.aas.model.concept import ConceptDescription

from aas_models.build import ShellEnvironment
from aas_models.lazy import CHILDREN, LazyGroup, LazySubmodel
from aas_models.live import LiveValues
from agent.shells import ModelUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Model = Callable[[], Awaitable[ShellEnvironment]]  # the model to serve; ModelUnavailable when it cannot be built

SSP = "https://admin-shell.io/aas/API/3/0/"
PROFILES = (
    f"{SSP}AssetAdministrationShellRepositoryServiceSpecification/SSP-002",
    f"{SSP}SubmodelRepositoryServiceSpecification/SSP-002",
)
API_PREFIX = "/api/v3.0"  # the same routes again under the spec's versioned prefix

Level = Literal["deep", "core"]

# What $metadata leaves out: the value, the children (and for a submodel its elements).
_VALUE_KEYS = {
    "Property": ("value", "valueId"),
    "MultiLanguageProperty": ("value", "valueId"),
    "Range": ("min", "max"),
    "File": ("value",),
    "Blob": ("value",),
    "ReferenceElement": ("value",),
    "RelationshipElement": ("first", "second"),
    "AnnotatedRelationshipElement": ("first", "second", "annotations"),
    "Entity": ("statements", "globalAssetId", "specificAssetIds"),
    "BasicEventElement": ("observed",),
    "SubmodelElementCollection": ("value",),
    "SubmodelElementList": ("value",),
    "Submodel": ("submodelElements",),
}
_NO_METADATA = ("Operation", "Capability")
_NO_VALUE = ("Operation", "Capability")
_PATHS = ("SubmodelElementCollection", "SubmodelElementList", "Entity")
_INTEGERS = {
    "xs:integer", "xs:long", "xs:int", "xs:short", "xs:byte", "xs:unsignedLong", "xs:unsignedInt",
    "xs:unsignedShort", "xs:unsignedByte", "xs:positiveInteger", "xs:nonNegativeInteger",
    "xs:negativeInteger", "xs:nonPositiveInteger",
}  # fmt: skip
_NUMBERS = {"xs:double", "xs:float", "xs:decimal"}
_SEGMENT = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)((?:\[\d+\])*)$")


# -- errors -----------------------------------------------------------------------------------------


class ApiError(Exception):
    """A request that cannot be answered as asked: `status` and the spec's error body with `text`."""

    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or {}


def error_body(status: int, text: str) -> dict[str, Any]:
    """The spec's Result object with one Error message."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"messages": [{"code": str(status), "messageType": "Error", "text": text, "timestamp": now}]}


def error_response(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(error_body(status, text), status, headers)


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json", headers=headers)


# -- identifiers, paging, query parameters ----------------------------------------------------------


def encode_id(identifier: str) -> str:
    """An identifier as it goes in a URL: base64url of its UTF-8, without padding."""
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


def decode_id(text: str, what: str) -> str:
    """The identifier a base64url path or query segment names; ApiError 400 if it names none."""
    raw = text.rstrip("=")
    try:
        if len(raw) % 4 == 1 or not re.fullmatch(r"[A-Za-z0-9_-]*", raw):
            raise ValueError("not base64url")
        identifier = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
    except (ValueError, binascii.Error):
        raise ApiError(400, f"{what} {text[:80]!r} is not a base64url-encoded UTF-8 identifier") from None
    if not identifier:
        raise ApiError(400, f"{what} is empty")
    return identifier


def _limit(request: web.Request) -> int | None:
    text = request.query.get("limit")
    if text is None:
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ApiError(400, f"limit {text[:20]!r} is not a whole number of at least 1")
    return n


def _offset(request: web.Request) -> int:
    text = request.query.get("cursor")
    if text is None:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii"))
    except (ValueError, binascii.Error):
        offset = -1
    if offset < 0:
        raise ApiError(400, f"cursor {text[:40]!r} is not one this API handed out")
    return offset


def page(request: web.Request, items: Sequence[T]) -> tuple[list[T], str | None]:
    """The slice of `items` that `limit` and `cursor` ask for, and the cursor of the next slice."""
    limit, offset = _limit(request), _offset(request)
    end = len(items) if limit is None else offset + limit
    cursor = base64.urlsafe_b64encode(str(end).encode()).decode().rstrip("=") if end < len(items) else None
    return list(items[offset:end]), cursor


def paged(result: list[Any], cursor: str | None) -> dict[str, Any]:
    """The spec's paged result envelope."""
    return {"paging_metadata": {"cursor": cursor} if cursor else {}, "result": result}


def level_of(request: web.Request) -> Level:
    text = request.query.get("level", "deep")
    if text not in ("deep", "core"):
        raise ApiError(400, f"level {text[:20]!r} is not one of deep, core")
    return "core" if text == "core" else "deep"


def blobs_of(request: web.Request) -> bool:
    """extent: withBlobValue (True) or withoutBlobValue (False, the default)."""
    text = request.query.get("extent", "withoutBlobValue")
    if text not in ("withoutBlobValue", "withBlobValue"):
        raise ApiError(400, f"extent {text[:20]!r} is not one of withoutBlobValue, withBlobValue")
    return text == "withBlobValue"


def _flag(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "false")
    if text.lower() not in ("true", "false"):
        raise ApiError(400, f"{name} {text[:20]!r} is not true or false")
    return text.lower() == "true"


# -- SDK objects as the spec's JSON -------------------------------------------------------------------


Submodel = model.Submodel | LazySubmodel
# An element: an SDK object, or (in a LazySubmodel) its JSON object, fresh from `LazySubmodel.doc()`.
Node = model.SubmodelElement | dict[str, Any]


def to_json(obj: object) -> Any:
    """The SDK object as basyx's JSON serializer writes it, as plain dicts and lists (a shell's
    submodel references, a set in the SDK, sorted by id, so that every answer lists them alike).
    A LazySubmodel gives a fresh copy of its JSON; an element of one (a JSON object) is already that."""
    if isinstance(obj, LazySubmodel):
        return obj.doc()
    if isinstance(obj, dict):
        return obj
    # basyx.aas.adapter (JSON, XML, AASX, lxml: about 5 MB) is imported at the first answer that needs it.
    from basyx.aas.adapter import json as aas_json

    doc = json.loads(json.dumps(obj, cls=aas_json.AASToJsonEncoder))
    if isinstance(obj, model.AssetAdministrationShell) and isinstance(doc.get("submodels"), list):
        doc["submodels"].sort(key=lambda r: str(r["keys"][0]["value"]))
    return doc


def _children_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    key = CHILDREN.get(doc.get("modelType", ""))
    found = doc.get(key) if key else None
    return found if isinstance(found, list) else []


def shape(doc: dict[str, Any], *, level: Level = "deep", blobs: bool = False) -> dict[str, Any]:
    """`level=core`: the object with its direct children, without theirs; `extent`: Blob values
    only with `blobs`. Changes `doc` (a fresh one from `to_json`) and returns it."""
    if level == "core":
        for child in _children_of(doc):
            key = CHILDREN.get(child.get("modelType", ""))
            if key:
                child.pop(key, None)
    if not blobs:
        _strip_blobs(doc)
    return doc


def _strip_blobs(doc: dict[str, Any]) -> None:
    if doc.get("modelType") == "Blob":
        doc.pop("value", None)
    for child in _children_of(doc):
        _strip_blobs(child)


def metadata(doc: dict[str, Any]) -> dict[str, Any]:
    """`$metadata`: the object without its value and children."""
    kind = doc.get("modelType", "")
    if kind in _NO_METADATA:
        raise ApiError(400, f"a {kind} has no metadata serialisation ($metadata)")
    for key in _VALUE_KEYS.get(kind, ()):
        doc.pop(key, None)
    return doc


def value_only(doc: dict[str, Any]) -> Any:
    """`$value`: the spec's value-only serialisation of a submodel or an element."""
    kind = doc.get("modelType", "")
    if kind == "Submodel":
        return {c["idShort"]: value_only(c) for c in doc.get("submodelElements", []) if c.get("idShort")}
    if kind == "Property":
        return _typed(doc.get("value"), doc.get("valueType", ""))
    if kind == "MultiLanguageProperty":
        return [{t["language"]: t["text"]} for t in doc.get("value", [])]
    if kind == "Range":
        vt = doc.get("valueType", "")
        return {k: _typed(doc[k], vt) for k in ("min", "max") if k in doc}
    if kind in ("File", "Blob"):
        return {k: doc[k] for k in ("contentType", "value") if k in doc}
    if kind == "ReferenceElement":
        return doc.get("value")
    if kind in ("RelationshipElement", "AnnotatedRelationshipElement"):
        out: dict[str, Any] = {k: doc[k] for k in ("first", "second") if k in doc}
        if kind == "AnnotatedRelationshipElement" and doc.get("annotations"):
            out["annotations"] = [{a["idShort"]: value_only(a)} for a in doc["annotations"] if a.get("idShort")]
        return out
    if kind == "SubmodelElementCollection":
        return {c["idShort"]: value_only(c) for c in doc.get("value", []) if c.get("idShort")}
    if kind == "SubmodelElementList":
        return [value_only(c) for c in doc.get("value", [])]
    if kind == "Entity":
        entity: dict[str, Any] = {
            "statements": {s["idShort"]: value_only(s) for s in doc.get("statements", []) if s.get("idShort")}
        }
        entity.update({k: doc[k] for k in ("entityType", "globalAssetId", "specificAssetIds") if k in doc})
        return entity
    if kind == "BasicEventElement":
        return {"observed": doc.get("observed")}
    raise ApiError(400, f"a {kind or 'element'} has no value-only serialisation ($value)")


def keyed(element: Node, value: Any) -> Any:
    """An element's value-only serialisation on its own: `{idShort: value}` (an item of a list, which
    has no idShort, is its bare value)."""
    id_short = _id_short(element)
    return {id_short: value} if id_short else value


def _id_short(element: Node) -> str | None:
    """The element's idShort; None for an item of a list (the SDK gives those a generated one internally)."""
    if isinstance(element, dict):
        return element.get("idShort")
    return None if isinstance(element.parent, model.SubmodelElementList) else element.id_short


def kind_of(element: Node) -> str:
    """The element's modelType (its SDK class name)."""
    return str(element.get("modelType", "")) if isinstance(element, dict) else type(element).__name__


def _typed(text: Any, value_type: str) -> Any:
    """A Property's lexical value as the JSON type the value-only serialisation gives it."""
    if not isinstance(text, str):
        return text
    try:
        if value_type == "xs:boolean":
            return text in ("true", "1")
        if value_type in _INTEGERS:
            return int(text)
        if value_type in _NUMBERS:
            x = float(text)
            return x if math.isfinite(x) else text  # NaN and INF have no JSON number
    except ValueError:
        return text
    return text


def _reference(keys: list[tuple[str, str]]) -> dict[str, Any]:
    return {"type": "ModelReference", "keys": [{"type": t, "value": v} for t, v in keys]}


# -- the model: walking submodels by idShort path ------------------------------------------------------

Segment = str | int


def _children(obj: object) -> list[tuple[Segment, Node]]:
    if isinstance(obj, LazySubmodel):
        obj = obj.doc()
    if isinstance(obj, dict):
        children = _children_of(obj)
        if obj.get("modelType") == "SubmodelElementList":
            return list(enumerate(children))
        return [(c.get("idShort") or "", c) for c in children]
    if isinstance(obj, model.Submodel):
        return [(e.id_short or "", e) for e in obj.submodel_element]
    if isinstance(obj, model.SubmodelElementList):
        return list(enumerate(obj.value))
    if isinstance(obj, model.SubmodelElementCollection):
        return [(e.id_short or "", e) for e in obj.value]
    if isinstance(obj, model.Entity):
        return [(e.id_short or "", e) for e in obj.statement]
    if isinstance(obj, model.AnnotatedRelationshipElement):
        return [(e.id_short or "", e) for e in obj.annotation]
    return []


def join(prefix: str, segment: Segment) -> str:
    if isinstance(segment, int):
        return f"{prefix}[{segment}]"
    return f"{prefix}.{segment}" if prefix else segment


def walk(obj: object, prefix: str = "", deep: bool = True) -> Iterator[tuple[str, Node]]:
    """(idShort path, element) of `obj`'s children, and with `deep` of theirs, depth first."""
    for segment, child in _children(obj):
        path = join(prefix, segment)
        yield path, child
        if deep:
            yield from walk(child, path, deep)


def parse_path(text: str) -> list[Segment]:
    """`Control.FeedOverride`, `Axes[2].Speed` → ["Control", "FeedOverride"], ["Axes", 2, "Speed"]."""
    segments: list[Segment] = []
    for part in text.split("."):
        m = _SEGMENT.match(part)
        if m is None:
            raise ApiError(
                400, f"idShortPath {text[:200]!r} is malformed: give idShorts separated by '.', list indexes as [n]"
            )
        segments.append(m.group(1))
        segments += [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2))]
    return segments


def format_path(segments: Sequence[Segment]) -> str:
    text = ""
    for segment in segments:
        text = join(text, segment)
    return text


def resolve(submodel: Submodel, text: str) -> tuple[Node, list[tuple[str, str]]]:
    """The element at idShort path `text`, and the keys of its ModelReference; ApiError 404 if absent."""
    obj: object = submodel
    keys = [("Submodel", submodel.id)]
    segments = parse_path(text)
    if isinstance(submodel, LazySubmodel):  # only the parts of its JSON on the way are read
        on_the_way = submodel.group.path(submodel.id, segments)
        if on_the_way is None:
            raise ApiError(404, f"submodel {submodel.id!r} has no element {text[:200]!r}")
        keys += [(kind_of(found), str(segment)) for found, segment in zip(on_the_way, segments, strict=True)]
        return on_the_way[-1], keys
    for segment in segments:
        found = next((child for s, child in _children(obj) if s == segment), None)
        if found is None:
            raise ApiError(404, f"submodel {submodel.id!r} has no element {text[:200]!r}")
        obj = found
        keys.append((kind_of(found), str(segment)))
    assert isinstance(obj, model.SubmodelElement | dict)
    return obj, keys


# -- the routes ----------------------------------------------------------------------------------------


class AasRoutes:
    """The read routes over one ShellEnvironment and its live values; or over the model `await model()` gives
    at each read (agent/shells.py: ModelOnDemand, built at the first read and replaced by a reload)."""

    env: ShellEnvironment  # the model the current read is served from

    def __init__(self, model: ShellEnvironment | Model, live: LiveValues) -> None:
        if isinstance(model, ShellEnvironment):
            self.env = model
            self._model: Model | None = None
        else:
            self._model = model
        self.live = live
        self._reported: set[tuple[str, str]] = set()

    def add(self, router: web.UrlDispatcher, prefix: str = "") -> list[web.AbstractRoute]:
        """Register every route under `prefix`; returns the routes that serve AAS data (reads)."""
        reads: list[web.AbstractRoute] = []

        def get(path: str, handler: Handler) -> None:
            reads.append(router.add_get(prefix + path, self._prepared(handler)))

        router.add_get(prefix + "/description", self.description)
        get("/serialization", self.serialization)
        get("/shells", self.shells)
        get("/shells/$reference", self.shells_reference)
        get("/shells/{aas}", self.shell)
        get("/shells/{aas}/$reference", self.shell_reference)
        get("/shells/{aas}/asset-information", self.asset_information)
        get("/shells/{aas}/asset-information/thumbnail", self.thumbnail)
        get("/shells/{aas}/submodel-refs", self.submodel_refs)
        get("/submodels", self.submodels)
        for kind in ("$metadata", "$value", "$reference", "$path"):
            get(f"/submodels/{kind}", self.submodels_as)
        for base in ("/submodels/{sm}", "/shells/{aas}/submodels/{sm}"):
            get(base, self.submodel)
            for kind in ("$metadata", "$value", "$reference", "$path"):
                get(f"{base}/{kind}", self.submodel_as)
            get(f"{base}/submodel-elements", self.elements)
            for kind in ("$metadata", "$value", "$reference", "$path"):
                get(f"{base}/submodel-elements/{kind}", self.elements_as)
            get(base + "/submodel-elements/{path}", self.element)
            for kind in ("$metadata", "$value", "$reference", "$path"):
                get(base + "/submodel-elements/{path}/" + kind, self.element_as)
            get(base + "/submodel-elements/{path}/attachment", self.attachment)
        return reads

    def _prepared(self, handler: Handler) -> Handler:
        """`handler`, after the model is built (the first AAS read builds it) and the lazy submodels the request
        reads have their JSON (aas_models/lazy.py): the first read of one builds and serializes it. Each is
        seconds for a large machine, in a worker thread, so that the event loop (collection, other requests) goes
        on meanwhile."""

        async def prepared(request: web.Request) -> web.StreamResponse:
            if self._model is not None:
                try:
                    self.env = await self._model()
                except ModelUnavailable as e:
                    raise ApiError(503, f"the AAS model of this configuration cannot be built: {e}") from e
            for group in self._unprepared(request):
                await asyncio.to_thread(group.prepare)
            return await handler(request)

        return prepared

    def _unprepared(self, request: web.Request) -> list[LazyGroup]:
        text = request.match_info.get("sm")
        if text is None:  # a list of submodels, or the serialization: every one may be read
            if "/submodels" not in request.path and not request.path.endswith("/serialization"):
                return []
            wanted: list[object] = list(self.env.store.entries())
        else:
            try:
                wanted = [self.env.store.entry(decode_id(text, "submodelIdentifier"))]
            except (ApiError, KeyError):
                return []  # the handler answers that
        groups = {id(w.group): w.group for w in wanted if isinstance(w, LazySubmodel) and not w.group.prepared}
        return list(groups.values())

    # -- lookups

    def fresh(self, submodels: Iterable[str] = ()) -> None:
        """The latest collected values into the model, and for the Time Series Data submodels among
        `submodels` (ids) the records collected since they were last written; a value that does not fit is
        reported once."""
        for p in self.live.apply(self.env):
            key = (p.shell_id, p.path)
            (log.debug if key in self._reported else log.warning)("API read: %s", p)
            self._reported.add(key)
        self.live.apply_series(self.env, submodels)

    def _shells(self) -> list[model.AssetAdministrationShell]:
        return [o for o in self.env.store if isinstance(o, model.AssetAdministrationShell)]

    def _submodels(self) -> list[Submodel]:
        return [o for o in self.env.store.entries() if isinstance(o, Submodel)]

    def _identifiable(self, identifier: str, kind: type[T], what: str) -> T:
        try:
            obj = self.env.store.entry(identifier)  # a LazySubmodel is no `kind`: see _submodel
        except KeyError:
            obj = None
        if not isinstance(obj, kind):
            raise ApiError(404, f"no {what} with id {identifier!r}")
        return obj

    def _submodel(self, identifier: str) -> Submodel:
        """The submodel of `identifier`, or its LazySubmodel (nothing is built)."""
        try:
            obj = self.env.store.entry(identifier)
        except KeyError:
            obj = None
        if not isinstance(obj, Submodel):
            raise ApiError(404, f"no submodel with id {identifier!r}")
        return obj

    def shell_of(self, request: web.Request) -> model.AssetAdministrationShell:
        identifier = decode_id(request.match_info["aas"], "aasIdentifier")
        return self._identifiable(identifier, model.AssetAdministrationShell, "Asset Administration Shell")

    def submodel_of(self, request: web.Request) -> Submodel:
        identifier = decode_id(request.match_info["sm"], "submodelIdentifier")
        self.fresh((identifier,))  # records change a Time Series Data submodel's elements, not only their values
        if "aas" in request.match_info:
            shell = self.shell_of(request)
            if identifier not in {ref.key[0].value for ref in shell.submodel}:
                raise ApiError(404, f"shell {shell.id!r} refers to no submodel with id {identifier!r}")
        return self._submodel(identifier)

    # -- service description, serialization

    async def description(self, request: web.Request) -> web.Response:
        return json_response({"profiles": list(PROFILES)})

    async def serialization(self, request: web.Request) -> web.Response:
        aas_ids = [decode_id(t, "aasIds") for t in request.query.getall("aasIds", [])]
        sm_ids = [decode_id(t, "submodelIds") for t in request.query.getall("submodelIds", [])]
        concepts = _flag(request, "includeConceptDescriptions")
        self.fresh()
        everything = not aas_ids and not sm_ids
        shells = (
            self._shells()
            if everything
            else [self._identifiable(i, model.AssetAdministrationShell, "shell") for i in aas_ids]
        )
        submodels = self._submodels() if everything else [self._submodel(i) for i in sm_ids]
        self.fresh(s.id for s in submodels)
        doc: dict[str, Any] = {}  # the schema refuses empty arrays: a kind with nothing in it is left out
        if shells:
            doc["assetAdministrationShells"] = [to_json(s) for s in shells]
        if submodels:
            doc["submodels"] = [shape(to_json(s)) for s in submodels]
        held = [o for o in self.env.store.entries() if isinstance(o, ConceptDescription)] if concepts else []
        if held:
            doc["conceptDescriptions"] = [to_json(c) for c in held]
        return json_response(doc)

    # -- shells

    def _filtered_shells(self, request: web.Request) -> list[model.AssetAdministrationShell]:
        shells = self._shells()
        id_short = request.query.get("idShort")
        if id_short is not None:
            shells = [s for s in shells if s.id_short == id_short]
        for text in request.query.getall("assetIds", []):
            try:
                wanted = orjson.loads(decode_id(text, "assetIds"))
                name, value = wanted["name"], wanted["value"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise ApiError(
                    400, f"assetIds {text[:80]!r} is not a base64url-encoded {{name, value}} object"
                ) from None
            shells = [s for s in shells if _has_asset_id(s, name, value)]
        return shells

    async def shells(self, request: web.Request) -> web.Response:
        chosen, cursor = page(request, self._filtered_shells(request))
        return json_response(paged([to_json(s) for s in chosen], cursor))

    async def shells_reference(self, request: web.Request) -> web.Response:
        chosen, cursor = page(request, self._filtered_shells(request))
        return json_response(paged([_reference([("AssetAdministrationShell", s.id)]) for s in chosen], cursor))

    async def shell(self, request: web.Request) -> web.Response:
        return json_response(to_json(self.shell_of(request)))

    async def shell_reference(self, request: web.Request) -> web.Response:
        return json_response(_reference([("AssetAdministrationShell", self.shell_of(request).id)]))

    async def asset_information(self, request: web.Request) -> web.Response:
        return json_response(to_json(self.shell_of(request))["assetInformation"])

    async def thumbnail(self, request: web.Request) -> web.Response:
        shell = self.shell_of(request)
        raise ApiError(404, f"shell {shell.id!r} has no thumbnail")

    async def submodel_refs(self, request: web.Request) -> web.Response:
        refs = sorted(self.shell_of(request).submodel, key=lambda r: str(r.key[0].value))
        chosen, cursor = page(request, refs)
        return json_response(paged([to_json(r) for r in chosen], cursor))

    # -- submodels

    def _filtered_submodels(self, request: web.Request) -> list[Submodel]:
        submodels = self._submodels()
        self.fresh(s.id for s in submodels)
        id_short = request.query.get("idShort")
        if id_short is not None:
            submodels = [s for s in submodels if s.id_short == id_short]
        text = request.query.get("semanticId")
        if text is not None:
            wanted = decode_id(text, "semanticId")
            submodels = [s for s in submodels if _semantic_matches(s, wanted)]
        return submodels

    async def submodels(self, request: web.Request) -> web.Response:
        level, blobs = level_of(request), blobs_of(request)
        chosen, cursor = page(request, self._filtered_submodels(request))
        self.fresh()
        return json_response(paged([shape(to_json(s), level=level, blobs=blobs) for s in chosen], cursor))

    async def submodels_as(self, request: web.Request) -> web.Response:
        kind = request.path.rsplit("/", 1)[1]
        submodels = self._filtered_submodels(request)
        if kind == "$path":
            deep = level_of(request) == "deep"
            paths = [join(s.id_short or "", p) for s in submodels for p, _ in walk(s, "", deep)]
            chosen_paths, cursor = page(request, paths)
            return json_response(paged(list(chosen_paths), cursor))
        chosen, cursor = page(request, submodels)
        if kind == "$reference":
            return json_response(paged([_reference([("Submodel", s.id)]) for s in chosen], cursor))
        self.fresh()
        if kind == "$metadata":
            return json_response(paged([metadata(to_json(s)) for s in chosen], cursor))
        level, blobs = level_of(request), blobs_of(request)
        return json_response(paged([value_only(shape(to_json(s), level=level, blobs=blobs)) for s in chosen], cursor))

    async def submodel(self, request: web.Request) -> web.Response:
        level, blobs = level_of(request), blobs_of(request)
        sm = self.submodel_of(request)
        self.fresh()
        return json_response(shape(to_json(sm), level=level, blobs=blobs))

    async def submodel_as(self, request: web.Request) -> web.Response:
        kind = request.path.rsplit("/", 1)[1]
        sm = self.submodel_of(request)
        if kind == "$reference":
            return json_response(_reference([("Submodel", sm.id)]))
        if kind == "$path":
            return json_response([p for p, _ in walk(sm, "", level_of(request) == "deep")])
        self.fresh()
        if kind == "$metadata":
            return json_response(metadata(to_json(sm)))
        return json_response(value_only(shape(to_json(sm), level=level_of(request), blobs=blobs_of(request))))

    # -- submodel elements

    async def elements(self, request: web.Request) -> web.Response:
        level, blobs = level_of(request), blobs_of(request)
        sm = self.submodel_of(request)
        chosen, cursor = page(request, [e for _, e in _children(sm)])
        self.fresh()
        return json_response(paged([_element_json(e, level, blobs, top=True) for e in chosen], cursor))

    async def elements_as(self, request: web.Request) -> web.Response:
        kind = request.path.rsplit("/", 1)[1]
        sm = self.submodel_of(request)
        if kind == "$path":
            paths = [p for p, _ in walk(sm, "", level_of(request) == "deep")]
            chosen_paths, cursor = page(request, paths)
            return json_response(paged(chosen_paths, cursor))
        children = _children(sm)
        chosen, cursor = page(request, children)
        if kind == "$reference":
            refs = [_reference([("Submodel", sm.id), (kind_of(e), str(s))]) for s, e in chosen]
            return json_response(paged(refs, cursor))
        self.fresh()
        if kind == "$metadata":
            return json_response(paged([metadata(to_json(e)) for _, e in chosen], cursor))
        level, blobs = level_of(request), blobs_of(request)
        values = [keyed(e, value_only(_element_json(e, level, blobs, top=True))) for _, e in chosen]
        return json_response(paged(values, cursor))

    async def element(self, request: web.Request) -> web.Response:
        level, blobs = level_of(request), blobs_of(request)
        element, _ = resolve(self.submodel_of(request), request.match_info["path"])
        self.fresh()
        return json_response(_element_json(element, level, blobs))

    async def element_as(self, request: web.Request) -> web.Response:
        kind = request.path.rsplit("/", 1)[1]
        path = request.match_info["path"]
        element, keys = resolve(self.submodel_of(request), path)
        name = kind_of(element)
        if kind == "$reference":
            return json_response(_reference(keys))
        if kind == "$path":
            if name not in _PATHS:
                raise ApiError(400, f"{path!r} is a {name}: $path is for collections, lists and entities")
            own = format_path(parse_path(path))
            return json_response([own, *(p for p, _ in walk(element, own, level_of(request) == "deep"))])
        self.fresh()
        if kind == "$metadata":
            return json_response(metadata(to_json(element)))
        return json_response(keyed(element, value_only(_element_json(element, level_of(request), blobs_of(request)))))

    async def attachment(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        element, _ = resolve(self.submodel_of(request), path)
        if isinstance(element, dict):  # of a LazySubmodel: Blob and File as their JSON carries them
            kind = kind_of(element)
            if kind == "Blob" and element.get("value") is not None:
                content_type = element.get("contentType") or "application/octet-stream"
                return web.Response(body=base64.b64decode(element["value"]), content_type=content_type)
            if kind == "Blob":
                raise ApiError(404, f"the Blob {path!r} has no value")
            if kind == "File":
                raise ApiError(404, f"the File {path!r} is not held by this server (value: {element.get('value')!r})")
            raise ApiError(400, f"{path!r} is a {kind}: attachment is for File and Blob elements")
        if isinstance(element, model.Blob):
            self.fresh()
            if element.value is None:
                raise ApiError(404, f"the Blob {path!r} has no value")
            return web.Response(
                body=bytes(element.value), content_type=element.content_type or "application/octet-stream"
            )
        if isinstance(element, model.File):
            raise ApiError(404, f"the File {path!r} is not held by this server (value: {element.value!r})")
        raise ApiError(400, f"{path!r} is a {type(element).__name__}: attachment is for File and Blob elements")


def _element_json(element: Node, level: Level, blobs: bool, *, top: bool = False) -> Any:
    """An element's JSON; `level=core` for an element of a submodel's list means without its children
    (the submodel is the object asked for), for an element asked for by path with its direct children."""
    doc = to_json(element)
    if top and level == "core":
        key = CHILDREN.get(doc.get("modelType", ""))
        if key:
            doc.pop(key, None)
        return shape(doc, blobs=blobs)
    return shape(doc, level=level, blobs=blobs)


def _has_asset_id(shell: model.AssetAdministrationShell, name: str, value: str) -> bool:
    info = shell.asset_information
    if name == "globalAssetId":
        return info.global_asset_id == value
    return any(s.name == name and s.value == value for s in info.specific_asset_id)


def _semantic_matches(submodel: Submodel, wanted: str) -> bool:
    """semanticId is a base64url-encoded reference (JSON) or the value of its key."""
    ref = submodel.semantic_id
    if ref is None:
        return False
    values = [str(k.value) for k in ref.key]
    try:
        doc = orjson.loads(wanted)
    except orjson.JSONDecodeError:
        return wanted in values
    if isinstance(doc, dict) and isinstance(doc.get("keys"), list):
        return [k.get("value") for k in doc["keys"] if isinstance(k, dict)] == values
    return wanted in values
