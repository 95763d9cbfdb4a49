"""Structured logging: JSON lines (or plain text on a terminal), with every configured secret masked.

A log call names what it is about in fields, not only inside its text: `extra={"source": ..., "node": ...}`
(FIELDS). In JSON they are keys of the line; on a terminal they follow the message in brackets.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

FIELDS = ("source", "sink", "machine", "path", "node")
_STD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {"message", "asctime"}


class Redact(logging.Filter):
    """Replaces every occurrence of a known secret in the final message and its extras."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        msg = record.getMessage()
        for s in self.secrets:
            msg = msg.replace(s, "***")
        record.msg, record.args = msg, None
        for key in FIELDS:
            value = getattr(record, key, None)
            if isinstance(value, str):
                for s in self.secrets:
                    value = value.replace(s, "***")
                setattr(record, key, value)
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            for s in self.secrets:
                text = text.replace(s, "***")
            record.exc_text, record.exc_info = text, None
        return True


class LibraryNoise(logging.Filter):
    """asyncua logs every retry of a lost connection, and a 15-line traceback per lost publish; the
    agent logs the first failure and the recovery itself (docs/operations.md), so these go."""

    _NOISE = (
        "Publish iteration crashed",
        "was called but connection is closed",
        "ServiceFault (",
        "Requested session timeout to be",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("asyncua"):
            return True
        message = str(record.msg)
        return not any(noise in message for noise in self._NOISE)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STD and not k.startswith("_"):
                doc[k] = v
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """For a person at a terminal: time, level, logger, message, then the fields: `[source=plc node=ns=2;i=5]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = [f"{k}={v}" for k in FIELDS if (v := getattr(record, k, None)) is not None]
        if not fields:
            return text
        head, nl, rest = text.partition("\n")  # a traceback stays below the line
        return f"{head} [{' '.join(fields)}]{nl}{rest}"


def mask(secrets: Iterable[str]) -> None:
    """More secrets to mask from now on (a reloaded configuration's), in every handler `setup` made."""
    for handler in logging.getLogger().handlers:
        for f in handler.filters:
            if isinstance(f, Redact):
                f.secrets = sorted({*f.secrets, *(s for s in secrets if s)}, key=len, reverse=True)


def setup(level: str = "info", fmt: str = "auto", secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.addFilter(LibraryNoise())
    handler.addFilter(Redact(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # asyncua logs every request at INFO; its warnings are what an operator needs.
    for noisy in ("asyncua", "asyncua.client.ua_client", "asyncua.common.subscription"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
