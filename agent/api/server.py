"""The local API as an aiohttp application, and the supervised component that serves it (docs/api.md).

`create_app` builds the application (used in-process by tests as well); `start`/`stop` run it on
a TCP address; `ApiServer.run` is the agent's `api` component: it serves until cancelled, then
ends every open session (DO6002) before it returns, so the agent stops it before its buffers
close. An address that cannot be bound (another process has the port) is logged (WARNING) and
tried again with backoff inside the component: collection goes on without the API, the process
is not restarted over it.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from aas_models.build import ShellEnvironment
from aas_models.live import LiveValues
from agent.api.aas import API_PREFIX, AasRoutes, ApiError, Handler, Model, error_response
from agent.api.auth import SESSION, AuthRoutes, Record, Sessions
from agent.api.control import ControlRoutes
from agent.api.operator import Operator
from agent.config import Config
from agent.config_base import ConfigError

log = logging.getLogger(__name__)

SESSIONS = web.AppKey("sessions", Sessions)
READS = web.AppKey("reads", frozenset)  # routes that serve AAS data: a session's reads (DO6003)
PUBLIC = web.AppKey("public", frozenset)  # routes that need no session
MAX_BODY = 64 * 1024  # logins and control writes are small
SHUTDOWN_S = 15.0


def create_app(
    cfg: Config, env: ShellEnvironment | Model, live: LiveValues, record: Record, operator: Operator | None = None
) -> web.Application:
    """The API over `env` (values from `live`), or over the model `await env()` gives at each AAS read; with
    `record(rows)` storing its usage rows; with `operator`, also the operator's routes: `/metrics`, `/status`
    and the status page."""
    check(cfg)
    sessions = Sessions(cfg.api.users, record)
    app = web.Application(middlewares=[_errors, _sessions], client_max_size=MAX_BODY)
    aas, auth, ctl = AasRoutes(env, live), AuthRoutes(sessions), ControlRoutes(cfg)
    reads: list[web.AbstractRoute] = []
    public: list[web.AbstractRoute] = []
    if operator is not None:
        public += operator.add(app.router, sessions)
    for prefix in ("", API_PREFIX):
        reads += aas.add(app.router, prefix)
        public += auth.add(app.router, prefix)
        ctl.add(app.router, prefix)
    public += [
        r for r in app.router.routes() if r.resource is not None and r.resource.canonical.endswith("/description")
    ]
    app[SESSIONS] = sessions
    app[READS] = frozenset(reads)
    app[PUBLIC] = frozenset(public)
    app.cleanup_ctx.append(sessions.running)
    return app


def check(cfg: Config) -> None:
    """ConfigError for an API that must not start: reachable from the network without users (the config's
    own validation refuses it first; this guards a Config built in code)."""
    api = cfg.api
    if not api.loopback and not api.users:
        raise ConfigError(
            f"api.host {api.host!r} is not a loopback address and api.users is empty: the API would serve the "
            "plant's data to anyone on the network without a login; add users or keep host: 127.0.0.1"
        )


async def start(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve `app` on host:port; OSError when the address cannot be bound (nothing left running then)."""
    # Requests still in flight at a stop get this long (a control write's OPC UA round trip included).
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def stop(runner: web.AppRunner) -> None:
    """Stop serving; the app's cleanup ends the open sessions (their reads, then DO6002)."""
    await runner.cleanup()


class ApiServer:
    """The agent's `api` component."""

    def __init__(
        self,
        cfg: Config,
        env: ShellEnvironment | Model,
        live: LiveValues,
        record: Record,
        *,
        operator: Operator | None = None,
        retry: tuple[float, float] = (5.0, 60.0),
    ) -> None:
        check(cfg)
        self.cfg, self.env, self.live, self.record = cfg, env, live, record
        self.operator = operator
        self._retry = retry

    async def run(self) -> None:
        api = self.cfg.api
        delay, longest = self._retry
        while True:
            app = create_app(self.cfg, self.env, self.live, self.record, self.operator)
            try:
                runner = await start(app, api.host, api.port)
                break
            except OSError as e:
                # A WARNING, not an ERROR: the agent's own work (collection, delivery) is unaffected.
                log.warning(
                    "local API: cannot listen on %s:%d (%s); the API is unavailable, collection goes on; "
                    "trying again in %g s",
                    api.host,
                    api.port,
                    e.strerror or e,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)
        users = len(api.users)
        log.info(
            "local API on http://%s:%d/ (%s)",
            api.host,
            api.port,
            f"{users} user(s), sessions recorded as usage" if users else "loopback, no login, no usage recorded",
        )
        if users and not api.loopback:
            log.warning(
                "local API on %s:%d is plain HTTP: passwords and session tokens cross the network readable. Put it "
                "behind a TLS reverse proxy, or keep it on 127.0.0.1",
                api.host,
                api.port,
            )
        try:
            await asyncio.Event().wait()
        finally:
            await stop(runner)
            log.info("local API stopped")


# -- middleware ---------------------------------------------------------------------------------------


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer carries the spec's error body."""
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e.status, e.text, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "www-authenticate", "retry-after")}
        text = {
            404: f"no such resource: {request.path[:200]}",
            405: f"{request.method} is not allowed on {request.path[:200]}: this API only reads the AAS (allowed: "
            f"{headers.get('Allow', 'GET')})",
            413: f"the request body is larger than {MAX_BODY} bytes",
        }.get(e.status, e.reason)
        return error_response(e.status, text, headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("local API: %s %s failed", request.method, request.path[:200])
        return error_response(500, "internal error; the agent's log has the details")


@web.middleware
async def _sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With users configured, a session for every route but /description and /login; each AAS read
    served to a session is counted into its usage."""
    app = request.app
    sessions = app[SESSIONS]
    route = request.match_info.route
    session = None
    if sessions.enabled and route not in app[PUBLIC]:
        session = sessions.authenticate(request.headers.get("Authorization"))
        if session is None:
            raise ApiError(
                401, "log in first (POST /login) and send the token as Authorization: Bearer <token>",
                {"WWW-Authenticate": 'Bearer realm="edge-agent"'},
            )  # fmt: skip
        request[SESSION] = session
    response = await handler(request)
    if (
        session is not None
        and request.method == "GET"
        and route in app[READS]
        and 200 <= response.status < 300
        and isinstance(response, web.Response)
    ):
        body = response.body
        sessions.read(session, request.remote or "", len(body) if isinstance(body, bytes | bytearray) else 0)
    return response
