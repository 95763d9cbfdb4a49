"""Logs are JSON lines and never carry a configured secret, even inside an exception."""

from __future__ import annotations

import logging

import orjson
import pytest

from agent import logs


def test_secrets_are_masked_in_messages_and_tracebacks(capfd: pytest.CaptureFixture[str]) -> None:
    logs.setup("info", "json", ["hunter2-pw", "tok-123456"])
    log = logging.getLogger("agent.test")
    log.warning("connecting with password %s", "hunter2-pw")
    try:
        raise RuntimeError("server said: bad token tok-123456")
    except RuntimeError:
        log.exception("login failed")
    err = capfd.readouterr().err
    assert "hunter2-pw" not in err and "tok-123456" not in err
    lines = [orjson.loads(line) for line in err.splitlines()]
    assert lines[0]["msg"] == "connecting with password ***" and lines[0]["level"] == "warning"
    assert "bad token ***" in lines[1]["exc"]
    logging.getLogger().handlers.clear()
