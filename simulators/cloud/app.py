"""The receiver's HTTP side: `POST /v1/ingest` validates wire messages against the shipped JSON
Schema, stores the records that pass and answers per record; the query routes read them back.

What is validated where: a body that is not a JSON array of messages, or a message whose envelope
(v, origin, site, lane, records) is invalid, refuses the whole request and stores nothing; a
record that fails is rejected with a reason naming its JSON path, and its neighbours are stored.
docs/cloud-api.md is the contract; docs/openapi/cloud-ingest.yaml lists the same routes.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

import orjson
from aiohttp import web
from jsonschema import Draft202012Validator, ValidationError

from simulators.cloud.faults import Action, FaultError, Faults
from simulators.cloud.store import (
    IdempotencyConflict,
    Rejection,
    Row,
    Store,
    StoreBusy,
    Stored,
    digest,
    iso,
    micros,
)
from uploader import wire

log = logging.getLogger("simulators.cloud")

HEALTH = "/v1/health"
DEFAULT_MAX_BODY_BYTES = 64 * 2**20
DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
_MAX_KEY_CHARS = 255
_MAX_REASON_CHARS = 500
_MAX_LISTED_PROBLEMS = 10
_BUSY_RETRY_AFTER_S = 1
_LOGGED_REJECTIONS = 3

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json", headers=headers)


def _refuse(status: int, error: str, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": error, "reason": reason}, status, headers)


def _refused(key: str, status: int, error: str, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    log.warning("refused ingest %s: %s", key or "(no Idempotency-Key)", reason)
    return _refuse(status, error, reason, headers)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 1] + "…"


class _BadQuery(ValueError):
    """A query parameter that cannot be used; the message names it."""


# -- validation ---------------------------------------------------------------------------------------


class _Examiner:
    """Splits messages into stored rows and per-record rejections, or says why a message is refused."""

    def __init__(self) -> None:
        doc = wire.schema()
        self._validator = Draft202012Validator(doc)
        self._id = re.compile(doc["$defs"]["id"]["pattern"])

    def message(self, index: int, msg: Any, faults: Faults, rows: list[Row], rejected: list[Rejection]) -> list[str]:
        """Append the rows and rejections of message `index`; return its envelope problems (then nothing is added)."""
        envelope: list[str] = []
        per_record: dict[int, list[str]] = {}
        unexpanded: dict[int, str] = {}  # version 3: records that cannot take their head
        if isinstance(msg, dict):
            try:
                msg, unexpanded = wire.expand(msg)
            except wire.WireFormatError as bad:
                return [_clip(f"$[{index}]{str(bad)[1:]}")]
        for e in self._validator.iter_errors(msg):
            problem = _problem(index, e)
            p = e.absolute_path
            if len(p) >= 2 and p[0] == "records" and isinstance(p[1], int):
                per_record.setdefault(p[1], []).append(problem)
            else:
                envelope.append(problem)
        if envelope:
            return envelope
        for i, rec in enumerate(msg["records"]):
            where = f"$[{index}].records[{i}]"
            rid = rec.get("id") if isinstance(rec, dict) else None
            rid = rid if isinstance(rid, str) else None
            if i in unexpanded:
                rejected.append(Rejection(rid, _clip(f"$[{index}]{unexpanded[i][1:]}")))
            elif i in per_record:
                rejected.append(Rejection(rid, _clip("; ".join(dict.fromkeys(per_record[i])))))
            elif rid is None or not self._id.fullmatch(rid):
                rejected.append(Rejection(rid, f"{where}.id: a record needs an id like 0123456789ab-17, got {rid!r}"))
            elif not rid.startswith(msg["origin"] + "-"):
                reason = f"{where}.id: {rid!r} is not an id of this message's origin {msg['origin']!r}"
                rejected.append(Rejection(rid, reason))
            elif faults.rejects(rec):
                rejected.append(Rejection(rid, faults.reject_reason))
            else:
                try:
                    rows.append(_row(msg, rec, rid))
                except ValueError as e:
                    rejected.append(Rejection(rid, _clip(f"{where}.{e}")))
        return []


def _problem(index: int, e: ValidationError) -> str:
    """Where in the body (`$[message].records[i].field`) and what the schema wanted there."""
    # oneOf/anyOf say only "not valid under any of the given schemas"; their alternatives say what was wanted.
    what = " or ".join(sorted({c.message for c in e.context})) if e.context else e.message
    return _clip(f"$[{index}]{e.json_path[1:]}: {what}")


_TIME_FIELDS: dict[str, tuple[str, ...]] = {"data": ("sourceTime", "serverTime"), "gap": ("start",)}


def _row(msg: dict[str, Any], rec: dict[str, Any], rid: str) -> Row:
    """The stored row; raises ValueError("field: why") for a time the schema allows that is no valid date."""
    time_us = None
    for name in _TIME_FIELDS.get(msg["lane"], ("time",)):
        value = rec.get(name)
        if isinstance(value, str):
            try:
                time_us = micros(value)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
            break
    submodel, path = rec.get("submodel"), rec.get("path")
    return Row(
        id=rid,
        origin=msg["origin"],
        site=msg["site"],
        asset=msg.get("asset"),
        lane=msg["lane"],
        submodel=submodel if isinstance(submodel, str) else None,
        path=path if isinstance(path, str) else None,
        time_us=time_us,
        record=orjson.dumps(rec),
    )


# -- query parameters ---------------------------------------------------------------------------------


def _time_param(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        return micros(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise _BadQuery(f"{name}={text!r} is not a time like 2026-11-26T13:25:12Z (ISO 8601 with Z or an offset)")
    return micros(wire.encode_datetime(when))


def _limit_param(request: web.Request) -> int:
    text = request.query.get("limit", str(DEFAULT_LIMIT))
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise _BadQuery(f"limit={text!r} must be a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def _entry(s: Stored) -> dict[str, Any]:
    return {"site": s.site, "asset": s.asset, "origin": s.origin, "received": iso(s.received_us), "record": s.record}


_LATEST_FIELDS = ("submodel", "path", "value", "valueType", "array", "unit", "sourceTime", "serverTime", "status", "id")


# -- the receiver ---------------------------------------------------------------------------------------


class Receiver:
    """Route handlers around one store (used from one worker thread) and the current faults."""

    def __init__(self, store: Store, *, tokens: Iterable[str], faults: Faults) -> None:
        self.store = store
        self.faults = faults
        self._tokens = [t.encode() for t in tokens]
        if not self._tokens or not all(self._tokens):
            raise ValueError("the receiver needs at least one bearer token, and no empty one")
        self._examiner = _Examiner()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cloud-store")

    async def _store(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(call, *args, **kwargs)
        )

    async def close(self, _app: web.Application) -> None:
        self._executor.shutdown(wait=True)
        self.store.close()

    # -- middlewares

    @web.middleware
    async def authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == HEALTH:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            reason = "no bearer token: send Authorization: Bearer <token>"
        elif not any(hmac.compare_digest(given.strip().encode(), t) for t in self._tokens):
            reason = "the bearer token is not accepted"
        else:
            return await handler(request)
        # The token itself is never logged, right or wrong.
        log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote, reason)
        return _refuse(401, "unauthorized", reason, {"WWW-Authenticate": 'Bearer realm="cloud-receiver"'})

    # -- ingest

    async def ingest(self, request: web.Request) -> web.StreamResponse:
        if self.faults.delay_ms:
            await asyncio.sleep(self.faults.delay_ms / 1000)
        action = self.faults.take()
        if action is Action.DROP:
            return await self._drop(request)
        key = request.headers.get("Idempotency-Key", "").strip()
        try:
            body = await request.read()
        except web.RequestPayloadError as e:
            return _refused(key, 400, "bad-request", f"the body could not be read: {e}")
        except ConnectionResetError:  # the sender gave up (its time-out) before we read: nothing stored
            log.info("ingest %s: the sender closed the connection before its body was read", key or "(no key)")
            return web.Response(status=499)
        if action is not None:
            return self._fault(action)
        if not key or len(key) > _MAX_KEY_CHARS:
            reason = f"send Idempotency-Key: <batch id> (1 to {_MAX_KEY_CHARS} characters)"
            return _refused(key, 400, "bad-request", reason)
        if request.content_type != "application/json":
            reason = f"send Content-Type: application/json, not {request.content_type}"
            return _refused(key, 415, "unsupported-media-type", reason)
        try:
            messages = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            return _refused(key, 400, "bad-request", f"the body is not JSON: {e}")
        if not isinstance(messages, list) or not messages:
            got = "an empty array" if messages == [] else f"a JSON {type(messages).__name__}"
            reason = f"the body must be a non-empty JSON array of wire messages, got {got}"
            return _refused(key, 400, "bad-request", reason)

        rows: list[Row] = []
        rejected: list[Rejection] = []
        problems: list[str] = []
        for i, msg in enumerate(messages):
            problems += self._examiner.message(i, msg, self.faults, rows, rejected)
        if problems:
            more = len(problems) - _MAX_LISTED_PROBLEMS
            listed = "; ".join(problems[:_MAX_LISTED_PROBLEMS]) + (f" (and {more} more)" if more > 0 else "")
            return _refused(key, 422, "invalid", f"nothing stored: {listed}")

        try:
            done = await self._store(self.store.ingest, key, digest(body), rows, rejected)
        except IdempotencyConflict as e:
            return _refused(key, 422, "idempotency-conflict", f"{e}; a new batch needs a new key")
        except StoreBusy as e:
            return _refused(key, 503, "unavailable", str(e), {"Retry-After": str(_BUSY_RETRY_AFTER_S)})
        answer = done.answer
        if done.replayed:
            log.info("ingest %s answered again (same key, same body): nothing stored", key)
            return web.Response(
                body=answer.to_json(), content_type="application/json", headers={"Idempotent-Replayed": "true"}
            )
        log.info(
            "ingest %s: %d messages, %d new, %d duplicates, %d rejected",
            key,
            len(messages),
            answer.accepted,
            answer.duplicates,
            len(answer.rejected),
        )
        for r in answer.rejected[:_LOGGED_REJECTIONS]:
            log.warning("ingest %s rejected %s: %s", key, r.id, r.reason)
        return web.Response(body=answer.to_json(), content_type="application/json")

    async def _drop(self, request: web.Request) -> web.StreamResponse:
        await request.content.read(max(1, (request.content_length or 2) // 2))
        log.warning("dropping the connection of an ingest request after part of its body (test fault)")
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)  # a handler must answer; this one is never sent

    def _fault(self, action: Action) -> web.Response:
        log.warning("answering an ingest request with a test fault: %s", action.value)
        if action is Action.FAIL:
            return _refuse(500, "internal", "failing on request (receiver test fault)")
        retry = {"Retry-After": str(self.faults.retry_after)}
        if action is Action.THROTTLE:
            return _refuse(429, "throttled", "too many requests (receiver test fault)", retry)
        return _refuse(503, "unavailable", "unavailable on request (receiver test fault)", retry)

    # -- query side

    async def assets(self, request: web.Request) -> web.StreamResponse:
        found = await self._store(self.store.assets)
        return _json(
            {
                "assets": [
                    {
                        "site": a.site,
                        "asset": a.asset,
                        "lanes": a.lanes,
                        "records": sum(a.lanes.values()),
                        "lastReceived": iso(a.last_received_us),
                    }
                    for a in found
                ]
            }
        )

    async def latest(self, request: web.Request) -> web.StreamResponse:
        asset = request.match_info["asset"]
        found = await self._store(self.store.latest, asset)
        if not found:
            return _refuse(404, "not-found", f"no data records for asset {asset!r}; GET /v1/assets lists the assets")
        elements = []
        for s in found:
            item = {k: s.record[k] for k in _LATEST_FIELDS if k in s.record}
            item["received"] = iso(s.received_us)
            elements.append(item)
        return _json({"asset": asset, "elements": elements})

    async def records(self, request: web.Request) -> web.StreamResponse:
        asset = request.match_info["asset"]
        element = request.query.get("element")
        try:
            if not element:
                raise _BadQuery("element=<idShort path> is required, e.g. element=Spindle.Speed")
            start, end, limit = _time_param(request, "from"), _time_param(request, "to"), _limit_param(request)
        except _BadQuery as e:
            return _refuse(400, "bad-request", str(e))
        found = await self._store(
            self.store.records,
            asset,
            element,
            submodel=request.query.get("submodel"),
            start_us=start,
            end_us=end,
            limit=limit + 1,
        )
        return _json(
            {
                "asset": asset,
                "element": element,
                "records": [s.record for s in found[:limit]],
                "truncated": len(found) > limit,
            }
        )

    async def gaps(self, request: web.Request) -> web.StreamResponse:
        return await self._lane(request, "gap", "gaps")

    async def status(self, request: web.Request) -> web.StreamResponse:
        return await self._lane(request, "status", "status")

    async def _lane(self, request: web.Request, lane: str, name: str) -> web.StreamResponse:
        try:
            limit = _limit_param(request)
        except _BadQuery as e:
            return _refuse(400, "bad-request", str(e))
        found = await self._store(self.store.lane, lane, asset=request.query.get("asset"), limit=limit + 1)
        return _json({name: [_entry(s) for s in found[:limit]], "truncated": len(found) > limit})

    async def health(self, request: web.Request) -> web.StreamResponse:
        return _json({"status": "ok"})

    # -- test controls

    async def get_faults(self, request: web.Request) -> web.StreamResponse:
        return _json(self.faults.as_json())

    async def set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            doc = orjson.loads(await request.read())
            if not isinstance(doc, dict):
                raise FaultError(f"send a JSON object of fault settings, not {type(doc).__name__}")
            self.faults = Faults.of(doc)
        except (orjson.JSONDecodeError, FaultError) as e:
            return _refuse(400, "bad-request", str(e))
        log.warning("test faults set: %s", self.faults.as_json())
        return _json(self.faults.as_json())


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals (404, 405, 413, ...) as JSON with a reason, like the receiver's."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        keep = {k: v for k, v in e.headers.items() if k in ("Allow", "Retry-After")}
        if e.status == 404:
            reason = f"no route {request.method} {request.path}; docs/cloud-api.md lists the routes"
        elif e.status == 405:
            reason = f"{request.method} is not allowed on {request.path}; allowed: {keep.get('Allow', 'none')}"
        else:
            reason = e.text or e.reason
        return _refuse(e.status, e.reason.lower().replace(" ", "-"), reason, keep)


def make_app(
    store: Store,
    *,
    tokens: Sequence[str],
    faults: Faults | None = None,
    test_controls: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> web.Application:
    """The receiver as an aiohttp application; it closes `store` on cleanup.

    `test_controls` adds GET/POST /_faults, to change the misbehaviour at run time.
    """
    receiver = Receiver(store, tokens=tokens, faults=faults or Faults())
    app = web.Application(middlewares=[_json_errors, receiver.authenticate], client_max_size=max_body_bytes)
    app.router.add_post("/v1/ingest", receiver.ingest)
    app.router.add_get("/v1/assets", receiver.assets, allow_head=False)
    app.router.add_get("/v1/assets/{asset}/latest", receiver.latest, allow_head=False)
    app.router.add_get("/v1/assets/{asset}/records", receiver.records, allow_head=False)
    app.router.add_get("/v1/gaps", receiver.gaps, allow_head=False)
    app.router.add_get("/v1/status", receiver.status, allow_head=False)
    app.router.add_get(HEALTH, receiver.health, allow_head=False)
    if test_controls:
        app.router.add_get("/_faults", receiver.get_faults, allow_head=False)
        app.router.add_post("/_faults", receiver.set_faults)
    app.on_cleanup.append(receiver.close)
    return app
