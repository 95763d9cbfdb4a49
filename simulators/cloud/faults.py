"""Misbehaviour on request, so a sender can be tested against a receiver that is slow, failing,
throttling, unreachable mid-request or refusing particular records.

The knobs apply to `POST /v1/ingest` only, and only to requests that passed authentication (a probe
without a token does not use up a counted fault). Counted faults are taken one per request in this
order: drop, fail, throttle, unavailable; the delay applies to every ingest answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any

DEFAULT_REJECT_REASON = "rejected on request (receiver test fault)"


class FaultError(ValueError):
    """A fault setting that does not exist or has the wrong type."""


class Action(Enum):
    """What the receiver does with one ingest request instead of answering it normally."""

    DROP = "drop"  # read part of the body, then close the connection without an answer
    FAIL = "fail"  # HTTP 500
    THROTTLE = "throttle"  # HTTP 429 with Retry-After
    UNAVAILABLE = "unavailable"  # HTTP 503 with Retry-After


@dataclass
class Faults:
    """The receiver's current misbehaviour; all defaults mean "behave"."""

    delay_ms: int = 0
    """Every ingest answer waits this long."""
    drop_next: int = 0
    """The next N ingest requests lose their connection after part of the body was read."""
    fail_next: int = 0
    """The next N ingest requests get HTTP 500."""
    throttle_next: int = 0
    """The next N ingest requests get HTTP 429 with Retry-After `retry_after`."""
    unavailable_next: int = 0
    """The next N ingest requests get HTTP 503 with Retry-After `retry_after`."""
    retry_after: int = 1
    """Seconds, for 429 and 503 answers."""
    reject_ids: frozenset[str] = frozenset()
    """Records with these ids are rejected with `reject_reason`."""
    reject_elements: frozenset[str] = frozenset()
    """Records whose element (`path`) is, or whose idShort path ends with, one of these names are rejected."""
    reject_reason: str = DEFAULT_REJECT_REASON

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> Faults:
        """Faults from JSON-like settings; keys not given keep their defaults. Raises FaultError."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in settings.items():
            if key not in known:
                raise FaultError(f"unknown fault setting {key!r} (typo?); settings are {', '.join(known)}")
            values[key] = _checked(key, value, known[key].default)
        return cls(**values)

    def take(self) -> Action | None:
        """The counted fault this request gets, if any; uses it up."""
        if self.drop_next > 0:
            self.drop_next -= 1
            return Action.DROP
        if self.fail_next > 0:
            self.fail_next -= 1
            return Action.FAIL
        if self.throttle_next > 0:
            self.throttle_next -= 1
            return Action.THROTTLE
        if self.unavailable_next > 0:
            self.unavailable_next -= 1
            return Action.UNAVAILABLE
        return None

    def rejects(self, record: Mapping[str, Any]) -> bool:
        """Whether this record is to be rejected with `reject_reason`."""
        if record.get("id") in self.reject_ids:
            return True
        path = record.get("path")
        if not self.reject_elements or not isinstance(path, str):
            return False
        return path in self.reject_elements or path.rsplit(".", 1)[-1] in self.reject_elements

    def as_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["reject_ids"] = sorted(self.reject_ids)
        doc["reject_elements"] = sorted(self.reject_elements)
        return doc


def _checked(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, int):
        if type(value) is not int or value < 0:
            raise FaultError(f"fault setting {key!r} must be a whole number >= 0, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise FaultError(f"fault setting {key!r} must be a string, got {value!r}")
        return value
    if isinstance(value, str) or not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise FaultError(f"fault setting {key!r} must be a list of strings, got {value!r}")
    return frozenset(value)
