"""The operator's routes of the local API: `/metrics` (Prometheus), `/status` (JSON) and the status page.

The page (`/` and `/ui/…`) is static files shipped in the package (agent/api/static/, no CDN): it
polls `/status` and draws from it. With `api.users` configured, `/metrics` and `/status` need a user
— HTTP Basic with any user's name and password (what Prometheus' basic_auth sends), or a session's
Bearer token (what the page gets from `POST /login`); a failed Basic login counts towards the
login throttle. Neither is an AAS read, so neither is recorded as usage (DO6003 is for AAS data).
`POST /reload` re-reads the configuration file (agent/reload.py); with users, only a `write` user may.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from agent.api.aas import ApiError
from agent.api.auth import Sessions, basic_credentials

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text exposition format
_STATIC = resources.files("agent.api") / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}


@dataclass(frozen=True, slots=True)
class Operator:
    metrics: Callable[[], bytes]
    status: Callable[[], dict[str, Any]]
    reload: Callable[[str], Awaitable[dict[str, Any]]] | None = None  # re-read the config (agent/reload.py)

    def add(self, router: web.UrlDispatcher, sessions: Sessions) -> list[web.AbstractRoute]:
        """Register the routes; all are public to the session middleware (each checks its own access)."""

        def guarded(body: Callable[[], web.Response]) -> Callable[[web.Request], Any]:
            async def handler(request: web.Request) -> web.Response:
                if sessions.enabled and _role(sessions, request) is None:
                    raise ApiError(
                        401, "give a user's name and password (HTTP Basic) or a session's Bearer token (POST /login)",
                        {"WWW-Authenticate": 'Basic realm="edge-agent"'},
                    )  # fmt: skip
                return body()

            return handler

        def metrics() -> web.Response:
            return web.Response(body=self.metrics(), headers={"Content-Type": METRICS_CONTENT_TYPE})

        def status() -> web.Response:
            body = orjson.dumps(self.status(), option=orjson.OPT_NON_STR_KEYS)
            return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})

        async def reload(request: web.Request) -> web.Response:
            if sessions.enabled and _role(sessions, request) != "write":
                raise ApiError(
                    401, "a reload needs a user with role write (HTTP Basic, or a session's Bearer token)",
                    {"WWW-Authenticate": 'Basic realm="edge-agent"'},
                )  # fmt: skip
            assert self.reload is not None
            answer = await self.reload("POST /reload")
            return web.Response(
                body=orjson.dumps(answer), status=200 if answer["applied"] else 409, content_type="application/json"
            )

        routes = [
            router.add_get("/metrics", guarded(metrics)),
            router.add_get("/status", guarded(status)),
            router.add_get("/", _page),
            router.add_get("/ui/{name}", _asset),
        ]
        if self.reload is not None:
            routes.append(router.add_post("/reload", reload))
        return routes


async def _page(request: web.Request) -> web.Response:
    return _file("index.html")


async def _asset(request: web.Request) -> web.Response:
    return _file(request.match_info["name"])


def _file(name: str) -> web.Response:
    suffix = name[name.rfind(".") :] if "." in name else ""
    item = _STATIC / name
    if "/" in name or name.startswith(".") or suffix not in _TYPES or not item.is_file():
        raise ApiError(404, f"no such file of the status page: {name[:80]}")
    return web.Response(body=item.read_bytes(), headers={"Content-Type": _TYPES[suffix], "Cache-Control": "no-cache"})


def _role(sessions: Sessions, request: web.Request) -> str | None:
    """The role of the user the request names (a session's Bearer token, or HTTP Basic), None if none."""
    header = request.headers.get("Authorization", "")
    session = sessions.authenticate(header)
    if session is not None:
        return session.role
    ip = request.remote or ""
    try:
        basic = basic_credentials(header)
    except ValueError:
        return None
    if basic is None or sessions.throttled(ip):
        return None
    user = sessions.check(*basic)
    if user is None:
        sessions.failed(ip)
        return None
    return user.role
