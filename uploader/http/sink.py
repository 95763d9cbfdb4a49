"""HTTP sink (aiohttp): one POST of a JSON array of wire messages per `send()`, confirmed per record.

The body is the messages' payloads spliced into an array, never re-encoded; gzip on request; the
Idempotency-Key is the body's SHA-256, so a resend of the very same body is answered again, not
stored again (and any new body gets a new key, as the receiver demands). What each answer means
is answer.py's job.

Invariants:
- `connected` is the transport result of the last request (or reachability probe): False after a
  connection error or a timeout, True after any HTTP answer. While it is False, `run()` probes the
  receiver (TCP, and the TLS handshake for https) with backoff, so the forwarder does not send
  into a dead link; the backoff starts afresh only after an HTTP answer.
- While a Retry-After is in force, `send()` returns all False at once and makes no request.
- Every trouble (unreachable, token refused, wrong url, busy, malformed answer) is logged once
  when it begins and once when delivery works again; repeats go to DEBUG.
- The token enters only the Authorization header: never a repr, a log line or an error message
  (text taken from an answer is masked too).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import aiohttp

from uploader.http import answer
from uploader.http.settings import HttpSettings, endpoint, explain_tls, tls_context
from uploader.sink import Message, Outcome

_log = logging.getLogger("uploader.http")

_GZIP_LEVEL = 6
_GZIP_IN_THREAD = 64 * 1024  # larger bodies are compressed off the event loop (zlib releases the GIL)
_PROBE_CLOSE_S = 2.0
_PROBE_LISTEN_S = 0.25  # after a TLS handshake: long enough for a receiver's refusal of our certificate


@dataclass(slots=True)
class HttpStats:
    requests: int = 0  # POSTs made (answered or not)
    body_bytes: int = 0  # JSON bytes of those bodies
    wire_bytes: int = 0  # bytes of those bodies as sent (after gzip)


class HttpSink:
    """A `uploader.sink.Sink` for a KAMP-style ingest endpoint (docs/cloud-api.md)."""

    def __init__(self, settings: HttpSettings, *, name: str = "http", delays: Callable[[], Iterator[float]]) -> None:
        """`delays` gives the waits between reachability probes (agent/backoff.py)."""
        self.name = name
        self._settings = settings
        self._delays = delays
        self._where = f"HTTP sink {name!r} ({settings.url})"
        self._endpoint = endpoint(settings, self._where)
        self._tls = tls_context(settings.tls, self._where) if self._endpoint.https else None
        self._headers = {"Content-Type": "application/json", "User-Agent": "edge-agent"}
        if settings.token is not None:
            self._headers["Authorization"] = f"Bearer {settings.token}"
            if not self._endpoint.https and not self._endpoint.loopback:
                _log.warning(
                    "%s sends its bearer token over plain http to %s: anyone on the path can read it and send "
                    "in this gateway's name. Use an https:// url.",
                    self._where,
                    self._endpoint.host,
                )
        self._session: aiohttp.ClientSession | None = None
        self._up = False
        self._lost = asyncio.Event()  # set when a request finds the receiver unreachable
        self._answered = False  # an HTTP answer came since the last probe: the probe backoff starts afresh
        self._not_before = 0.0  # monotonic time before which no POST is made (Retry-After)
        self._trouble: str | None = None  # the kind of trouble logged and not yet over
        self._trouble_since = 0.0
        self._ever_up = False
        self.stats = HttpStats()

    def __repr__(self) -> str:
        return f"HttpSink(name={self.name!r}, {self._endpoint.ingest}, connected={self._up})"

    def topic(self, lane: str, key: str) -> str:
        return f"ingest/{lane}/{key}"  # one URL for everything; the payload header says lane and asset

    def announce(self, state: str, down: Sequence[str] = ()) -> None:
        return  # no status channel: status records travel on the status lane

    @property
    def connected(self) -> bool:
        return self._up

    @property
    def max_message_bytes(self) -> int | None:
        return self._settings.max_body_bytes

    async def run(self) -> None:
        """Keep the session, and while the receiver is unreachable probe it with backoff, until cancelled."""
        self._open()
        delays: Iterator[float] | None = None
        wait = False  # the first probe of a run goes at once
        while True:
            if self._up:
                self._lost.clear()
                await self._lost.wait()
                wait = True
                continue
            if self._answered:
                delays, self._answered = None, False
            if wait:
                delays = delays or self._delays()
                await asyncio.sleep(next(delays))
                if self._up:
                    continue
            wait = True
            failure = await self._probe()
            if failure is None:
                self._reachable()
            else:
                self._unreachable(*failure)

    async def send(self, messages: Sequence[Message], *, timeout: float) -> list[Outcome]:
        """POST the messages as one JSON array (more than one POST only if they exceed max_body_bytes);
        element i is True once the receiver stored every record of message i within `timeout`, Partial
        if it refused some for good, Rejected if it refused the request for good, False otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        results: list[Outcome] = []
        for part in _bodies(messages, self._settings.max_body_bytes):
            left = deadline - loop.time()
            if loop.time() < self._not_before or left <= 0:
                results += [False] * len(part)
            else:
                results += await self._post(part, left)
        return results

    async def stop(self) -> None:
        """Close the session (and its kept-alive connections); nothing of ours is in flight by now."""
        session, self._session = self._session, None
        self._up = False
        if session is not None:
            await session.close()

    # -- one request -----------------------------------------------------------------------------

    async def _post(self, messages: Sequence[Message], timeout: float) -> list[Outcome]:
        body = b"[" + b",".join(m.payload for m in messages) + b"]"
        headers = {**self._headers, "Idempotency-Key": hashlib.sha256(body).hexdigest()}
        data = body
        if self._settings.gzip:
            data = await _gzip(body)
            headers["Content-Encoding"] = "gzip"
        self.stats.requests += 1
        self.stats.body_bytes += len(body)
        self.stats.wire_bytes += len(data)
        connect = min(timeout, self._settings.timeout)
        limits = aiohttp.ClientTimeout(total=timeout, sock_connect=connect)
        try:
            async with self._open().post(
                self._endpoint.ingest, data=data, headers=headers, timeout=limits, allow_redirects=False
            ) as resp:
                raw = await resp.read()
                status, answer_headers = resp.status, resp.headers
        except TimeoutError:
            self._unreachable(f"no answer within {timeout:.3g} s")
            return [False] * len(messages)
        except (aiohttp.ClientError, OSError) as e:
            self._unreachable(*self._explain(e))
            return [False] * len(messages)
        self._answered = True
        if not self._up:
            self._reachable()
        reading = answer.read(
            status, answer_headers, raw, messages, mask=self._mask, token_sent=self._settings.token is not None
        )
        if reading.retry_after:
            until = asyncio.get_running_loop().time() + reading.retry_after
            self._not_before = max(self._not_before, until)
        if reading.trouble is not None:
            self._report(reading.trouble.kind, reading.trouble.level, reading.trouble.text)
        elif self._trouble is not None:
            _log.info("%s: delivering again after %.1f s", self._where, time.monotonic() - self._trouble_since)
            self._trouble = None
        return reading.outcomes

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._tls or False))
        return self._session

    # -- reachability ----------------------------------------------------------------------------

    async def _probe(self) -> tuple[str, bool] | None:
        """Open a TCP connection (and for https complete the TLS handshake); None if that worked, else why
        not (and whether TLS said so)."""
        e = self._endpoint
        timeout = self._settings.timeout
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    e.host, e.port, ssl=self._tls, server_hostname=e.host if self._tls else None
                )
        except TimeoutError:
            return f"no connection within {timeout:g} s", False
        except (OSError, ValueError) as exc:  # refused, unreachable, DNS (a name IDNA refuses), TLS verification
            return self._explain(exc)
        try:
            if self._tls is not None and await _closes_at_once(reader):
                # TLS 1.3: the receiver checks our certificate after the handshake, and closes.
                tls = self._settings.tls
                if tls is None or tls.cert_file is None:
                    why = "does it require a client certificate (mutual TLS)? set tls.cert_file and tls.key_file"
                else:
                    why = "did it refuse our client certificate? is it signed by a CA the receiver trusts?"
                return f"the receiver closed the connection right after the TLS handshake: {why}", True
        finally:
            writer.close()
            try:
                async with asyncio.timeout(_PROBE_CLOSE_S):
                    await writer.wait_closed()
            except (TimeoutError, OSError):
                pass  # it is closed on our side; how the far end takes it does not matter
        return None

    def _reachable(self) -> None:
        self._up = True
        if self._trouble is not None and self._trouble.startswith("unreachable"):
            _log.info("%s: reachable again after %.1f s", self._where, time.monotonic() - self._trouble_since)
            self._trouble = None
        elif not self._ever_up:
            _log.info("%s: reachable", self._where)
        self._ever_up = True

    def _unreachable(self, why: str, settings: bool = False) -> None:
        """Not delivered for want of a connection. `settings`: TLS says why (our settings or the receiver's
        do not fit), which is worth an ERROR of its own even in an outage already logged."""
        self._up = False
        self._lost.set()
        self._report(
            f"unreachable: {why}" if settings else "unreachable",
            logging.ERROR if settings else logging.WARNING,
            f"cannot deliver: {why}; records stay buffered, retrying in the background",
        )

    def _report(self, kind: str, level: int, text: str) -> None:
        """Log the start of a trouble (a new kind of it is a new start); repeats only at DEBUG."""
        if kind == self._trouble:
            _log.debug("%s: still: %s", self._where, text)
            return
        if self._trouble is None:
            self._trouble_since = time.monotonic()
        self._trouble = kind
        _log.log(level, "%s: %s", self._where, text)

    def _explain(self, exc: BaseException) -> tuple[str, bool]:
        """A transport failure in words (never the token), and whether it is a TLS failure: what TLS
        said, from the innermost error aiohttp wrapped, or the error itself."""
        chain: list[BaseException] = []
        cause: BaseException | None = exc
        while cause is not None and cause not in chain:
            chain.append(cause)
            nested = getattr(cause, "certificate_error", None) or getattr(cause, "os_error", None)
            cause = nested if isinstance(nested, BaseException) else (cause.__cause__ or cause.__context__)
        for c in reversed(chain):
            explained = explain_tls(c, self._settings.tls, self._endpoint.host)
            if explained is not None:
                return explained, True
        return self._mask(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__), False

    def _mask(self, text: str) -> str:
        token = self._settings.token
        return text.replace(token, "**********") if token else text


def _bodies(messages: Sequence[Message], limit: int) -> Iterator[Sequence[Message]]:
    """Consecutive runs of messages whose JSON array stays within `limit` bytes (a message larger than
    that goes alone: the receiver says whether it takes it). Usually one run: the whole batch."""
    start, size = 0, 2
    for i, m in enumerate(messages):
        n = len(m.payload) + 1
        if i > start and size + n > limit:
            yield messages[start:i]
            start, size = i, 2
        size += n
    if start < len(messages):
        yield messages[start:]


async def _closes_at_once(reader: asyncio.StreamReader) -> bool:
    """Whether the far end closes a fresh connection before we said anything."""
    try:
        async with asyncio.timeout(_PROBE_LISTEN_S):
            return await reader.read(1) == b""
    except TimeoutError:
        return False  # it waits for a request, as it should
    except OSError:
        return True


async def _gzip(body: bytes) -> bytes:
    # mtime=0: the same body compresses to the same bytes.
    if len(body) < _GZIP_IN_THREAD:
        return gzip.compress(body, _GZIP_LEVEL, mtime=0)
    return await asyncio.to_thread(gzip.compress, body, _GZIP_LEVEL, mtime=0)
