"""What the receiver's answer to one POST means for each message of its body (docs/cloud-api.md).

| answer                                           | every message of the request                      |
|--------------------------------------------------|---------------------------------------------------|
| 200 with the per-record JSON                     | True, or Partial naming the records in `rejected` |
| 400, 413, 415, 422, any other 4xx not below      | Rejected (the receiver's reason, with the code)   |
| 401, 403 (the token), 404, 405 (the url)         | False: our settings, not the records; an ERROR    |
| 408, 425, 429, 5xx                               | False; Retry-After (seconds or a date) honoured   |
| 200 that is not that JSON, 1xx, other 2xx, 3xx   | False: a malformed answer, named in the log       |

Only 200 confirms: every record id of the request that is not in `rejected` is stored. An answer
that rejects an id the request did not carry is malformed, and confirms nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from uploader.sink import Message, Outcome, Partial, Rejected

MAX_RETRY_AFTER_S = 3600.0  # a receiver that asks for more is believed for an hour, then asked again
_SNIPPET = 200  # characters of an unexpected answer quoted in the log
_MAX_REASON = 500
_TOKEN = frozenset({401, 403})
_URL = frozenset({404, 405})
_LATER = frozenset({408, 425, 429})
EXPECTED = 'HTTP 200 with JSON {"accepted": n, "duplicates": n, "rejected": [{"id": "<record id>", "reason": "..."}]}'


@dataclass(frozen=True, slots=True)
class Trouble:
    """What is wrong with the far end or our settings: logged once per episode, at `level`."""

    kind: str  # "token", "url", "HTTP 429" (each status that says "later"), "malformed": a new kind is logged
    level: int
    text: str


@dataclass(frozen=True, slots=True)
class Reading:
    outcomes: list[Outcome]
    trouble: Trouble | None = None
    retry_after: float | None = None  # seconds the receiver asked us to wait before the next POST


def read(
    status: int,
    headers: Mapping[str, str],
    raw: bytes,
    messages: Sequence[Message],
    *,
    mask: Callable[[str], str],
    token_sent: bool = True,
    now: datetime | None = None,
) -> Reading:
    """The outcome of every message of one request from the receiver's answer. `mask` hides the token
    in any text taken from the answer (a far end that echoes the request cannot put it in a log)."""
    n = len(messages)
    if status == 200:
        found = _per_record(raw, messages, mask)
        if isinstance(found, str):
            return Reading([False] * n, Trouble("malformed", logging.WARNING, found))
        return Reading(found)
    said = _reason(status, headers, raw, mask)
    if status in _TOKEN:
        if token_sent:
            text = f"the receiver refused the bearer token ({said}); fix the sink's token and restart the agent"
        else:
            text = f"the receiver wants a bearer token ({said}); set the sink's token and restart the agent"
        return Reading([False] * n, Trouble("token", logging.ERROR, text))
    if status in _URL:
        text = f"there is no ingest endpoint at this url ({said}); check the sink's url (/v1/ingest is appended)"
        return Reading([False] * n, Trouble("url", logging.ERROR, text))
    if status in _LATER or 500 <= status < 600:
        wait = retry_after(headers.get("Retry-After"), now or datetime.now(UTC))
        text = f"the receiver answered {said}" + (f"; not sending again for {wait:g} s (Retry-After)" if wait else "")
        return Reading([False] * n, Trouble(f"HTTP {status}", logging.WARNING, text), wait)
    if 400 <= status < 500:
        return Reading([Rejected(said)] * n)
    text = f"expected {EXPECTED}, got {said}" + (f" to {headers['Location']}" if "Location" in headers else "")
    return Reading([False] * n, Trouble("malformed", logging.WARNING, text))


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None if absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER_S)


def _snippet(raw: bytes, mask: Callable[[str], str]) -> str:
    # Masked before it is cut, so a token that straddles the cut cannot show in part.
    return repr(mask(raw[:65536].decode("utf-8", "replace"))[:_SNIPPET])


def _reason(status: int, headers: Mapping[str, str], raw: bytes, mask: Callable[[str], str]) -> str:
    """`HTTP 422 (invalid): <the receiver's reason>`, or the start of an answer that is not the usual JSON."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("reason"), str):
        error = f" ({doc['error']})" if isinstance(doc.get("error"), str) else ""
        return mask(f"HTTP {status}{error}: {doc['reason']}")[:_MAX_REASON]
    return f"HTTP {status}: {_snippet(raw, mask)}" if raw else f"HTTP {status} without a body"


def _per_record(raw: bytes, messages: Sequence[Message], mask: Callable[[str], str]) -> list[Outcome] | str:
    """Per message True or Partial from a 200 answer; a string says what is malformed about it."""
    try:
        doc: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    if (
        not isinstance(doc, dict)
        or type(doc.get("accepted")) is not int
        or type(doc.get("duplicates")) is not int
        or not isinstance(doc.get("rejected"), list)
    ):
        return f"expected {EXPECTED}, got HTTP 200: {_snippet(raw, mask)}"
    if not doc["rejected"]:
        return [True] * len(messages)
    places = _record_places(messages)
    refused: dict[int, dict[int, str]] = {}
    for entry in doc["rejected"]:
        if not (isinstance(entry, dict) and isinstance(entry.get("id"), str) and isinstance(entry.get("reason"), str)):
            got = mask(orjson.dumps(entry).decode())[:_SNIPPET]
            return f"expected {EXPECTED}, got a rejected record {got}"
        found = places.get(entry["id"])
        if not found:
            rid = mask(entry["id"])[:_SNIPPET]
            return f"the answer rejects record {rid!r}, which the request did not carry; expected {EXPECTED}"
        for m, i in found:
            refused.setdefault(m, {})[i] = mask(entry["reason"])[:_MAX_REASON]
    return [Partial(tuple(sorted(refused[m].items()))) if m in refused else True for m in range(len(messages))]


def _record_places(messages: Sequence[Message]) -> dict[str, list[tuple[int, int]]]:
    """Record id -> (message, index within it). Read only when an answer rejects records."""
    places: dict[str, list[tuple[int, int]]] = {}
    for m, message in enumerate(messages):
        try:
            records = orjson.loads(message.payload).get("records", [])
        except (orjson.JSONDecodeError, AttributeError):
            continue
        for i, record in enumerate(records if isinstance(records, list) else ()):
            rid = record.get("id") if isinstance(record, dict) else None
            if isinstance(rid, str):
                places.setdefault(rid, []).append((m, i))
    return places
