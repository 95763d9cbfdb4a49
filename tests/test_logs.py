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


def test_a_node_problem_is_logged_with_its_source_and_node_as_fields(capfd: pytest.CaptureFixture[str]) -> None:
    """The adapter's real log line, from a real server: in JSON the fields are keys; on a terminal, a bracket."""
    import asyncio
    import itertools

    from adapters.opcua.source import OpcUaSource
    from adapters.opcua.spec import Endpoint, NodeItem
    from simulators.factory import FactoryThread
    from simulators.ports import free_port
    from tests.helpers import Collected, until

    sink = Collected()
    with FactoryThread(port=free_port(), period=0.2, machines=1) as factory:
        source = OpcUaSource(
            Endpoint(id="plc-7", url=factory.endpoint, timeout_s=5),
            [NodeItem(handle=1, node="ns=2;s=CNC01.Nothing", opcua_type="Double")],
            emit=sink.emit, emit_events=sink.emit_events, interrupted=sink.interrupted, problem=sink.problem,
            state=sink.state, delays=lambda: itertools.repeat(0.2),
        )  # fmt: skip

        async def run() -> None:
            task = asyncio.create_task(source.run())
            try:
                await until(lambda: bool(sink.problems), 30, "the node problem")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        for fmt in ("json", "text"):
            logs.setup("info", fmt)
            sink.problems.clear()
            source._reported.clear()
            asyncio.run(run())
    logging.getLogger().handlers.clear()
    err = capfd.readouterr().err.splitlines()
    [doc] = [orjson.loads(line) for line in err if line.startswith("{") and "CNC01.Nothing" in line]
    assert doc["source"] == "plc-7" and doc["node"] == "ns=2;s=CNC01.Nothing" and doc["level"] == "error"
    [text] = [line for line in err if not line.startswith("{") and "CNC01.Nothing" in line]
    assert text.endswith("[source=plc-7 node=ns=2;s=CNC01.Nothing]"), text
