"""A fake of the smart-factory usage-log API (`POST /sendLogData.json`), with the reference's rules.

Rules (shared/reference/sf-log-api.md; codes AP1010-AP1025 are not public, so this fake's own
choice is listed here and in docs/usage-log.md), checked in this order:
- body: a JSON object or form fields, else AP1025;
- crtfcKey missing AP1010; not one of `keys` AP1030; collection off (`collecting=False`) AP1030;
- every request with a known key counts against `limits.per_day` of that key's KST day: above it AP1031;
- a field missing AP1011 logDt, AP1012 useSe, AP1013 sysUser, AP1014 conectIp, AP1015 dataUsgqty;
- too long AP1004 (crtfcKey 100, sysUser 60, conectIp 30 characters);
- logDt not `YYYY-MM-DD HH:MI:SS.SSS` AP1020, useSe unknown AP1021, dataUsgqty not an integer >= 0
  AP1022; dataUsgqty >= limits.usage AP1026; logDt not of the fake's current KST day AP1023;
- useSe DO6999: AP1028 (accepted, not stored);
- within `limits.spacing` of the last call stored for that key: AP1029 (acknowledged, not stored);
- else AP1002, stored.

Test hooks: the clock is a callable (`clock=`) or set by `POST /_clock {"now": iso-8601 | null}`;
`fail(mode, count)` or `POST /_fail {"mode": ..., "count": n, "delay": s}` makes the next n
answers misbehave (`http500`, `malformed`: an HTML page echoing the request, `slow`: answer
after `delay` seconds); `POST /_collecting {"on": false}` answers AP1030 to all. Every request is
recorded (`calls`, `GET /_calls`) with its five fields; the key is recorded only as
known/unknown/missing. Nothing is logged with a key.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

USE_CODES: Final = frozenset({"DO6001", "DO6002", "DO6003", "DO6004", "DO6005", "DO6006", "DO6007", "DO6999"})
MISSING: Final = {
    "logDt": "AP1011",
    "useSe": "AP1012",
    "sysUser": "AP1013",
    "conectIp": "AP1014",
    "dataUsgqty": "AP1015",
}
MESSAGES: Final = {
    "AP1002": "데이터 이관 완료",
    "AP1004": "항목 길이 초과",
    "AP1026": "사용량 초과",
    "AP1028": "테스트 데이터 수신(미반영)",
    "AP1029": "10분 이내 재전송: 수신, 미저장",
    "AP1030": "수집 대상 아님",
    "AP1031": "일일 전송 한도 초과",
}
MODES: Final = frozenset({"http500", "malformed", "slow"})
_LOG_DT = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}")
# Its own Korean time, not the agent's (uploader/sflog/events.py): a fake that shared the agent's
# time code would agree with its mistakes. Korea has kept UTC+9 without DST since 1988.
KST: Final = timezone(timedelta(hours=9), "KST")


def kst_now() -> datetime:
    return datetime.now(KST)


def kst(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"the fake's clock gave {t.isoformat()} without a time zone")
    return t.astimezone(KST)


def format_log_dt(t: datetime) -> str:
    return kst(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]


@dataclass
class Limits:
    sys_user: int = 60
    conect_ip: int = 30
    key: int = 100
    usage: int = 10**9
    per_day: int = 5000
    spacing: timedelta = timedelta(minutes=10)


@dataclass
class FakeLogApi:
    keys: set[str]
    clock: Callable[[], datetime] = kst_now
    limits: Limits = field(default_factory=Limits)
    collecting: bool = True
    calls: list[dict[str, Any]] = field(default_factory=list)
    last_stored: dict[str, datetime] = field(default_factory=dict, repr=False)  # by key
    _faults: list[tuple[str, float]] = field(default_factory=list)
    _per_day: dict[tuple[str, date], int] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"FakeLogApi({len(self.keys)} keys, {len(self.calls)} calls, collecting={self.collecting})"

    def fail(self, mode: str, count: int = 1, delay: float = 0.0) -> None:
        """The next `count` requests misbehave as `mode` (http500, malformed, slow)."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {sorted(MODES)}")
        self._faults += [(mode, delay)] * count

    def stored(self) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["code"] == "AP1002"]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/sendLogData.json", self._send)
        app.router.add_get("/_calls", self._calls)
        app.router.add_post("/_clock", self._set_clock)
        app.router.add_post("/_fail", self._set_fail)
        app.router.add_post("/_collecting", self._set_collecting)
        return app

    # -- the API ---------------------------------------------------------------------------------

    async def _send(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        now = kst(self.clock())
        record: dict[str, Any] = {"n": len(self.calls) + 1, "at": format_log_dt(now)}
        self.calls.append(record)
        if self._faults:
            mode, delay = self._faults.pop(0)
            if mode == "http500":
                record["code"] = "HTTP 500"
                return web.Response(status=500, text="Internal Server Error")
            if mode == "malformed":
                record["code"] = "malformed"
                page = "<html><body>error processing " + raw.decode("utf-8", "replace") + "</body></html>"
                return web.Response(status=200, text=page, content_type="text/html")
            await asyncio.sleep(delay)
        fields = _parse(raw, request.content_type)
        key = fields.get("crtfcKey") if fields is not None else None
        record["key"] = "missing" if key is None else ("known" if key in self.keys else "unknown")
        record["fields"] = {k: v for k, v in (fields or {}).items() if k != "crtfcKey"}
        code = self._judge(fields, now)
        record["code"] = code
        if code == "AP1002" and key is not None:
            self.last_stored[key] = now
        result = {"recptnDt": format_log_dt(now), "recptnRsltCd": code, "recptnRslt": MESSAGES.get(code, "오류")}
        result["recptnRsltDtl"] = ""
        return web.Response(body=orjson.dumps({"result": result}), content_type="application/json")

    def _judge(self, fields: dict[str, Any] | None, now: datetime) -> str:
        if fields is None:
            return "AP1025"
        key = fields.get("crtfcKey")
        if not isinstance(key, str) or not key:
            return "AP1010"
        if key not in self.keys or not self.collecting:
            return "AP1030"
        count = self._per_day.get((key, now.date()), 0) + 1
        self._per_day[(key, now.date())] = count
        if count > self.limits.per_day:
            return "AP1031"
        for name, code in MISSING.items():
            if name not in fields:
                return code
        lim = self.limits
        if (
            len(key) > lim.key
            or len(str(fields["sysUser"])) > lim.sys_user
            or len(str(fields["conectIp"])) > lim.conect_ip
        ):
            return "AP1004"
        log_dt, use, usage = fields["logDt"], fields["useSe"], fields["dataUsgqty"]
        if not isinstance(log_dt, str) or not _LOG_DT.fullmatch(log_dt):
            return "AP1020"
        if use not in USE_CODES:
            return "AP1021"
        if isinstance(usage, str) and usage.isdigit():
            usage = int(usage)
        if isinstance(usage, bool) or not isinstance(usage, int) or usage < 0:
            return "AP1022"
        if usage >= lim.usage:
            return "AP1026"
        try:
            day = datetime.strptime(log_dt, "%Y-%m-%d %H:%M:%S.%f").date()
        except ValueError:
            return "AP1020"
        if day != now.date():
            return "AP1023"
        if use == "DO6999":
            return "AP1028"
        last = self.last_stored.get(key)
        if last is not None and now - last < lim.spacing:
            return "AP1029"
        return "AP1002"

    # -- test hooks ------------------------------------------------------------------------------

    async def _calls(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.calls), content_type="application/json")

    async def _set_clock(self, request: web.Request) -> web.Response:
        now = (await request.json()).get("now")
        if now is None:
            self.clock = kst_now
        else:
            fixed = kst(datetime.fromisoformat(now))
            self.clock = lambda: fixed
        return web.json_response({"now": kst(self.clock()).isoformat()})

    async def _set_fail(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            self.fail(str(body.get("mode")), int(body.get("count", 1)), float(body.get("delay", 0.0)))
        except ValueError as e:
            raise web.HTTPBadRequest(text=str(e)) from None
        return web.json_response({"pending_faults": len(self._faults)})

    async def _set_collecting(self, request: web.Request) -> web.Response:
        self.collecting = bool((await request.json()).get("on", True))
        return web.json_response({"collecting": self.collecting})


def _parse(raw: bytes, content_type: str) -> dict[str, Any] | None:
    """The request's fields from a JSON object or a form body; None if it is neither."""
    if content_type == "application/x-www-form-urlencoded":
        try:
            return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


async def serve(api: FakeLogApi, host: str, port: int, **site: Any) -> web.AppRunner:
    """Start `api` on host:port (`site` goes to aiohttp's TCPSite, e.g. ssl_context); cleanup() stops it."""
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, **site).start()
    return runner
