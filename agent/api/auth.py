"""Sessions of the local API, and the usage events they are (docs/api.md, docs/usage-log.md).

With `api.users` configured, a person logs in (`POST /login`, JSON `{"user", "password"}` or HTTP
Basic) and gets a bearer token: random, kept in memory only, ended by `POST /logout` or after
30 minutes without a request. Every login is a DO6001 usage event, every logout or expiry a
DO6002, and the AAS data a session is served a DO6003 — one per session and minute: the first
read of a session opens a one-minute window, and when it closes one DO6003 leaves with the time
of that first read and the summed bytes of every response body served in the window (the usage
log sends one call per 10-minute window anyway, with the bytes summed). A logout or an expiry
first closes the open window, so the reads come before the logout.

Without users (only allowed on a loopback address) requests need no token and nothing is
recorded: health checks and local scripts are not a person's use.

Events go straight onto the usage lane through `record` (the agent's `Pipeline.usage`), not the
spool; rows a full buffer could not take are kept and offered again every second.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from agent import usage
from agent.api.aas import ApiError, json_response
from agent.config_api import ApiUser

log = logging.getLogger(__name__)

Row = tuple[str, float, bytes]
Record = Callable[[Sequence[Row]], Awaitable[bool]]

IDLE_S = 30 * 60.0  # a session ends after this long without a request
READ_WINDOW_S = 60.0  # one DO6003 per session and window
MAX_SESSIONS = 256
MAX_FAILURES = 10  # failed logins from one address within FAILURE_WINDOW_S, then it waits
FAILURE_WINDOW_S = 60.0
MAX_UNSENT = 10_000
TICK_S = 1.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)
class Session:
    key: bytes  # SHA-256 of the token: the token itself is kept nowhere
    user: str
    role: str
    ip: str
    seen: float  # monotonic time of the last request
    seen_at: datetime  # the same, as a time
    reads: int = 0  # in the open read window
    read_bytes: int = 0
    read_first: datetime | None = None
    read_ip: str = ""
    read_due: float = 0.0


class Sessions:
    """The open sessions and their usage events. Not thread-safe: the agent's event loop only."""

    def __init__(
        self,
        users: Sequence[ApiUser],
        record: Record,
        *,
        idle_s: float = IDLE_S,
        window_s: float = READ_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._users = {u.name: u for u in users}
        self._record = record
        self.idle_s = idle_s
        self._window_s = window_s
        self._clock = clock
        self._now = now
        self._open: dict[bytes, Session] = {}
        self._unsent: list[Row] = []
        self._failures: dict[str, deque[float]] = {}

    @property
    def enabled(self) -> bool:
        """Users are configured: every route but /description needs a session."""
        return bool(self._users)

    @property
    def open(self) -> list[Session]:
        return list(self._open.values())

    # -- logging in

    def check(self, name: str, password: str) -> ApiUser | None:
        """The user if `password` is theirs (compared in constant time, also for unknown names)."""
        user = self._users.get(name)
        expected = user.password.get_secret_value() if user is not None else secrets.token_hex(16)
        ok = hmac.compare_digest(password.encode(), expected.encode())
        return user if ok and user is not None else None

    def known(self, name: str) -> bool:
        return name in self._users

    def throttled(self, ip: str) -> bool:
        failures = self._failures.get(ip)
        if not failures:
            return False
        while failures and self._clock() - failures[0] > FAILURE_WINDOW_S:
            failures.popleft()
        if not failures:
            del self._failures[ip]
        return len(failures) >= MAX_FAILURES

    def failed(self, ip: str) -> None:
        self._failures.setdefault(ip, deque()).append(self._clock())

    async def login(self, user: ApiUser, ip: str) -> str:
        """A new session of `user`: its token, and a DO6001 on the usage lane."""
        if len(self._open) >= MAX_SESSIONS:
            raise ApiError(429, f"{MAX_SESSIONS} sessions are open; log out of one, or wait until one expires")
        token = secrets.token_urlsafe(32)
        key = hashlib.sha256(token.encode()).digest()
        session = Session(key, user.name, user.role, ip, self._clock(), self._now())
        self._open[key] = session
        log.info("API login: %s (%s) from %s", user.name, user.role, ip)
        row = self._row(usage.LOGIN, session.user, ip, 0, "api login", session.seen_at)
        await self._store([row] if row else [])
        return token

    def authenticate(self, header: str | None) -> Session | None:
        """The live session a `Bearer` Authorization header names (its idle time starts over), or None."""
        if not header or not header.lower().startswith("bearer "):
            return None
        key = hashlib.sha256(header[7:].strip().encode()).digest()
        session = self._open.get(key)
        if session is None or self._clock() - session.seen > self.idle_s:
            return None  # an expired one is ended (DO6002) by the next tick
        session.seen, session.seen_at = self._clock(), self._now()
        return session

    # -- using

    def read(self, session: Session, ip: str, nbytes: int) -> None:
        """`nbytes` of AAS data served to `session`: counted into its open one-minute window."""
        if session.read_first is None:
            session.read_first, session.read_ip = self._now(), ip
            session.read_due = self._clock() + self._window_s
        session.reads += 1
        session.read_bytes += nbytes

    async def logout(self, session: Session) -> None:
        if self._open.pop(session.key, None) is not None:
            log.info("API logout: %s from %s", session.user, session.ip)
            await self._store(self._ending(session, self._now(), "api logout"))

    # -- time passing

    async def tick(self) -> None:
        """Close read windows that are due, end sessions idle too long, offer unsent rows again."""
        rows: list[Row] = []
        now = self._clock()
        for key, s in list(self._open.items()):
            if now - s.seen > self.idle_s:
                del self._open[key]
                log.info("API session of %s from %s expired after %g min idle", s.user, s.ip, self.idle_s / 60)
                rows += self._ending(s, s.seen_at + timedelta(seconds=self.idle_s), "api session expired")
            elif s.read_first is not None and now >= s.read_due:
                rows += self._reads(s)
        await self._store(rows)

    async def close(self, why: str = "api session ended: the agent stopped") -> None:
        """Every open session ends (the API stops): its reads, then a DO6002."""
        rows: list[Row] = []
        at = self._now()
        for s in self._open.values():
            rows += self._ending(s, at, why)
        self._open.clear()
        await self._store(rows)

    async def running(self, app: web.Application) -> AsyncIterator[None]:
        """For the app's cleanup context: ticks while the app serves, ends the sessions when it stops."""
        task = asyncio.create_task(self._ticking(), name="api-sessions")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.close()

    async def _ticking(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.tick()
            except Exception:  # one bad tick must not end the sessions' bookkeeping
                log.exception("API sessions: tick failed")

    # -- the usage rows

    def _reads(self, s: Session) -> list[Row]:
        if s.read_first is None:
            return []
        row = self._row(usage.READ, s.user, s.read_ip, s.read_bytes, f"api read ({s.reads} responses)", s.read_first)
        s.reads, s.read_bytes, s.read_first = 0, 0, None
        return [row] if row else []

    def _ending(self, s: Session, at: datetime, action: str) -> list[Row]:
        rows = self._reads(s)
        row = self._row(usage.LOGOUT, s.user, s.ip, 0, action, at)
        return rows + ([row] if row else [])

    def _row(self, use: str, user: str, ip: str, nbytes: int, action: str, at: datetime) -> Row | None:
        try:
            return usage.usage_row(use, user, ip, nbytes, action, now=at)
        except ValueError as e:  # a field over the usage log's limits: said, not hidden
            log.error("API usage event %s of %s from %s cannot be recorded: %s", use, user, ip, e)
            return None

    async def _store(self, rows: list[Row]) -> None:
        pending = self._unsent + rows
        if not pending:
            return
        self._unsent = []
        try:
            ok = await self._record(pending)
        except Exception as e:  # kept and offered again: a usage event is never dropped silently
            log.error("API usage events: could not be stored (%s); offered again in %g s", e, TICK_S)
            ok = False
        if not ok:
            if len(pending) > MAX_UNSENT:
                log.error("API usage events: %d could not be stored and are lost", len(pending) - MAX_UNSENT)
                pending = pending[-MAX_UNSENT:]
            self._unsent = pending


# The request's Session, set by the server's auth middleware (a typed key where aiohttp has them, 3.12+).
SESSION: Any = web.RequestKey("session", Session) if hasattr(web, "RequestKey") else "edge_agent.session"


# -- the routes ------------------------------------------------------------------------------------------


def session_of(request: web.Request) -> Session | None:
    found = request.get(SESSION)
    return found if isinstance(found, Session) else None


class AuthRoutes:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def add(self, router: web.UrlDispatcher, prefix: str = "") -> list[web.AbstractRoute]:
        """Register /login and /logout; returns the routes that need no session (login)."""
        router.add_post(prefix + "/logout", self.logout)
        return [router.add_post(prefix + "/login", self.login)]

    async def login(self, request: web.Request) -> web.Response:
        sessions = self.sessions
        ip = request.remote or ""
        if not sessions.enabled:
            raise ApiError(400, "no api.users are configured: this API needs no login (and records no sessions)")
        if sessions.throttled(ip):
            raise ApiError(429, f"too many failed logins from {ip}; try again in a minute", {"Retry-After": "60"})
        name, password = await _credentials(request)
        user = sessions.check(name, password)
        if user is None:
            sessions.failed(ip)
            # A name that is no user's may be a password typed into the wrong field: it is not logged.
            who = repr(name) if sessions.known(name) else "an unknown user name"
            log.warning("API login refused for %s from %s", who, ip)
            raise ApiError(401, "wrong user name or password", {"WWW-Authenticate": 'Basic realm="edge-agent"'})
        token = await sessions.login(user, ip)
        return json_response(
            {
                "token": token,
                "tokenType": "Bearer",
                "expiresIn": int(sessions.idle_s),
                "user": user.name,
                "role": user.role,
            }
        )

    async def logout(self, request: web.Request) -> web.Response:
        session = session_of(request)
        if session is None:
            raise ApiError(400, "no session to log out of: this API runs without users")
        await self.sessions.logout(session)
        return web.Response(status=204)


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) of an HTTP Basic Authorization header; None for another scheme; ValueError when it is
    Basic but not base64 of user:password."""
    if not header.lower().startswith("basic "):
        return None
    try:
        name, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        sep = ""
    if not sep:
        raise ValueError("the Basic Authorization header is not base64 of user:password")
    return name, password


async def _credentials(request: web.Request) -> tuple[str, str]:
    """(user, password) from HTTP Basic or a JSON body; ApiError 400 when neither is readable."""
    try:
        basic = basic_credentials(request.headers.get("Authorization", ""))
    except ValueError as e:
        raise ApiError(400, str(e)) from None
    if basic is not None:
        return basic
    try:
        doc: Any = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("user"), str) or not isinstance(doc.get("password"), str):
        raise ApiError(400, 'give {"user": "...", "password": "..."} as JSON, or HTTP Basic authentication')
    return doc["user"], doc["password"]
