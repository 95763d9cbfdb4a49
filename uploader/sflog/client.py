"""One call to the usage-log API (`POST {base}/sendLogData.json`, JSON body) and what its answer means.

Contract:
- `send()` makes exactly one POST and never raises for the far end: every answer, and every way
  of not getting one, becomes an `Outcome`. Cancellation propagates.
- The answer code decides (shared/reference/sf-log-api.md): AP1001/AP1002/AP1028 stored;
  AP1029 acknowledged, not stored (done: sending it again would only be acknowledged again);
  AP1030 stop until resumed; AP1031-AP1033 the daily limit; AP1004, AP1026, AP1010-AP1025
  rejected for good. A transport error, a timeout, an HTTP status other than 200, an answer
  that is not the API's JSON or a code not listed here: retry later, the detail says what was
  expected and what came.
- TLS is verified against the system CAs, or `ca_file`. Redirects are not followed.
- The crtfcKey is held as a `SecretStr`, enters only the request body, and is masked in any text
  taken from an answer (a far end that echoes the request cannot put it in a log line).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import ssl
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import orjson
from pydantic import SecretStr

from uploader.sflog.events import LogCall, check_key

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

PATH: Final = "sendLogData.json"
_SNIPPET: Final = 200  # characters of an unexpected answer quoted in the detail
_CODE = re.compile(r"AP\d{4}")


class Verdict(StrEnum):
    STORED = "stored"
    ACKNOWLEDGED = "acknowledged"  # AP1029: taken, not stored; the window is done
    STOP = "stop"  # AP1030: not collected; stop until resumed
    DAILY_LIMIT = "daily-limit"  # AP1031-33: pause until the next KST day
    REJECTED = "rejected"  # refused for good: never sent again unchanged
    RETRY = "retry"  # no usable answer: send the same call later


STORED_CODES: Final = frozenset({"AP1001", "AP1002", "AP1028"})
DAILY_LIMIT_CODES: Final = frozenset({"AP1031", "AP1032", "AP1033"})
REJECTED_CODES: Final = frozenset({"AP1004", "AP1026", *(f"AP{n}" for n in range(1010, 1026))})


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    code: str  # the answer's recptnRsltCd, "" when there was none
    detail: str  # the answer's message, or what went wrong


def verdict_of(code: str) -> Verdict:
    if code in STORED_CODES:
        return Verdict.STORED
    if code == "AP1029":
        return Verdict.ACKNOWLEDGED
    if code == "AP1030":
        return Verdict.STOP
    if code in DAILY_LIMIT_CODES:
        return Verdict.DAILY_LIMIT
    if code in REJECTED_CODES:
        return Verdict.REJECTED
    return Verdict.RETRY


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class SfLogClient:
    """The usage-log API at `base_url` for the project whose key is `key`. One session, made on first use."""

    def __init__(
        self, base_url: str, key: str | SecretStr, *, timeout: float = 10.0, ca_file: Path | None = None
    ) -> None:
        self._key = key if isinstance(key, SecretStr) else SecretStr(key)
        check_key(self._key.get_secret_value())
        base = urlsplit(base_url.rstrip("/"))
        if base.scheme not in ("http", "https") or not base.hostname or base.query or base.fragment:
            raise ValueError(f"usage log base URL {base_url!r}: expected https://host[:port][/path]")
        if base.scheme == "http" and not _is_loopback(base.hostname):
            log.warning("usage log base URL %s is plain http: the crtfcKey travels unencrypted", base_url)
        if timeout <= 0:
            raise ValueError(f"usage log timeout: {timeout} s, must be > 0")
        self.url = f"{base_url.rstrip('/')}/{PATH}"
        self.timeout = timeout
        self.ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"SfLogClient({self.url!r}, timeout={self.timeout}, ca_file={self.ca_file})"

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp  # here: an agent without a usage-log sink does not load aiohttp (~11 MB)

        if self._session is None or self._session.closed:
            ssl_ctx: ssl.SSLContext | bool = True
            if self.ca_file is not None:
                ssl_ctx = ssl.create_default_context(cafile=str(self.ca_file))
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=1),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _mask(self, text: str) -> str:
        return text.replace(self._key.get_secret_value(), "**********")

    async def send(self, call: LogCall) -> Outcome:
        """POST `call` with the key; the outcome of the one attempt."""
        body = orjson.dumps(call.body(self._key.get_secret_value()))
        headers = {"Content-Type": "application/json; charset=UTF-8", "Accept": "application/json"}
        import aiohttp

        try:
            async with self._open().post(self.url, data=body, headers=headers, allow_redirects=False) as resp:
                raw = await resp.read()
                status, content_type = resp.status, resp.content_type
        except TimeoutError:
            return Outcome(Verdict.RETRY, "", f"no answer from {self.url} within {self.timeout:g} s")
        except (aiohttp.ClientError, OSError) as e:
            return Outcome(Verdict.RETRY, "", self._mask(f"cannot reach {self.url}: {type(e).__name__}: {e}"))
        except asyncio.CancelledError:
            raise
        return self._answer(status, content_type, raw)

    def _answer(self, status: int, content_type: str, raw: bytes) -> Outcome:
        # Masked before it is cut, so a key that straddles the cut cannot show in part.
        text = self._mask(raw[:65536].decode("utf-8", "replace"))[:_SNIPPET]
        expected = 'HTTP 200 with JSON {"result": {"recptnRsltCd": "AP....", ...}}'
        if status != 200:
            return Outcome(Verdict.RETRY, "", f"{self.url}: expected {expected}, got HTTP {status}: {text!r}")
        try:
            result = orjson.loads(raw)["result"]
            code = result["recptnRsltCd"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            got = f"HTTP 200 {content_type or 'without a content type'}"
            return Outcome(Verdict.RETRY, "", f"{self.url}: expected {expected}, got {got}: {text!r}")
        if not isinstance(code, str) or not _CODE.fullmatch(code):
            return Outcome(Verdict.RETRY, "", f"{self.url}: expected an AP.... recptnRsltCd, got {text!r}")
        message = " ".join(str(result.get(k) or "") for k in ("recptnRslt", "recptnRsltDtl")).strip()
        verdict = verdict_of(code)
        if verdict is Verdict.RETRY:
            message = f"unknown answer code {code} ({message}); expected one of the codes in docs/usage-log.md"
        return Outcome(verdict, code, self._mask(message))
