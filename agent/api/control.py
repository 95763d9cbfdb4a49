"""`POST /control/write`: a control write through the local API (docs/api.md, docs/control.md).

Only a session of a user with role `write` may write (403 otherwise, and always when the API runs
without users: no anonymous plant actions), only while `control.enabled` is true (403), and, when
`control.token` is configured, only with that token in `X-Control-Token` as well (403). The write
itself goes through the same guard and OPC UA path as `edge-agent write` (agent/control.py), which
records every attempt that reached the machine in the usage spool (DO6005 with the acting user
and the client's address, and a `control-write` status record); the running agent takes the
spool every second. Writes through the API run one at a time.

| outcome | status |
|---|---|
| written | 200 |
| refused by the server (Bad…) | 409 |
| not allowed by the guard | 422, with the guard's message |
| unreachable (nothing written) | 502 |
| uncertain (the connection was lost after the write was sent) | 504 |
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

import orjson
from aiohttp import web

from agent import control
from agent.api.aas import ApiError, error_body, json_response
from agent.api.auth import session_of
from agent.config import Config

log = logging.getLogger(__name__)

STATUS = {"written": 200, "refused": 409, "not-allowed": 422, "unreachable": 502, "uncertain": 504}
TOKEN_HEADER = "X-Control-Token"


class ControlRoutes:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._one_at_a_time = asyncio.Lock()

    def add(self, router: web.UrlDispatcher, prefix: str = "") -> None:
        router.add_post(prefix + "/control/write", self.write)

    async def write(self, request: web.Request) -> web.Response:
        session = session_of(request)
        if session is None:
            raise ApiError(403, "control writes need a session of a user with role write: configure api.users")
        if session.role != "write":
            raise ApiError(403, f"user {session.user!r} has role {session.role}; control writes need role write")
        if not self.cfg.control.enabled:
            raise ApiError(
                403, "control writes are disabled (control.enabled is false in the config): nothing is written"
            )
        token = self.cfg.control.token
        if token is not None and not hmac.compare_digest(
            request.headers.get(TOKEN_HEADER, "").encode(), token.get_secret_value().encode()
        ):
            raise ApiError(403, f"control writes need the configured control token in {TOKEN_HEADER}")
        machine, element, text = await _request(request)
        ip = request.remote or ""
        async with self._one_at_a_time:
            result = await control.write(self.cfg, machine, element, text, user=session.user, ip=ip, via="api")
        status = STATUS[result.outcome]
        doc: dict[str, Any] = {
            "outcome": result.outcome,
            "message": result.message,
            "machine": result.machine,
            "element": result.element,
            "logged": result.logged,
        }
        w = result.write
        if w is not None:
            doc.update({"node": w.node, "old": w.old, "new": w.new, "readBack": w.read_back, "status": w.status})
        if result.warning:
            doc["warning"] = result.warning
        if status >= 400:
            doc.update(error_body(status, result.message))
        return json_response(_jsonable(doc), status)


async def _request(request: web.Request) -> tuple[str, str, str]:
    """(machine, element, value text) from the JSON body; the value may be text, a number or a boolean."""
    try:
        doc: Any = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise ApiError(400, 'give {"machine": "...", "element": "...", "value": ...} as JSON')
    machine, element, value = doc.get("machine"), doc.get("element"), doc.get("value")
    if not isinstance(machine, str) or not isinstance(element, str):
        raise ApiError(400, "machine and element must be text (an equipment id and one of its points' path)")
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float | str):
        text = str(value)
    else:
        raise ApiError(400, "value must be text, a number or true/false")
    return machine, element, text


def _jsonable(doc: dict[str, Any]) -> dict[str, Any]:
    """Old, new and read-back values as JSON can carry them (a value orjson cannot write becomes its text)."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        try:
            orjson.dumps(v)
            out[k] = v
        except TypeError:
            out[k] = str(v)
    return out
