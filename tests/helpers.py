"""Shared test helpers: free ports, condition waits with deadlines, configs, and the agent as a process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import orjson
import pytest

from adapters.sample import Event, Interruption, NodeProblem, Sample, SourceState
from simulators.factory.catalogue import catalogue

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")

# OPC UA built-in type -> xs: value type, written out by hand from the mapping table in
# shared/reference/aas-notes.md, so a wrong row in aas_models/types.py fails a test.
EXPECTED_XS: dict[str, str] = {
    "Boolean": "xs:boolean", "SByte": "xs:byte", "Byte": "xs:unsignedByte", "Int16": "xs:short",
    "UInt16": "xs:unsignedShort", "Int32": "xs:int", "UInt32": "xs:unsignedInt", "Int64": "xs:long",
    "UInt64": "xs:unsignedLong", "Float": "xs:float", "Double": "xs:double", "String": "xs:string",
    "DateTime": "xs:dateTime", "UtcTime": "xs:dateTime", "ByteString": "xs:base64Binary",
    "LocalizedText": "langString", "StatusCode": "xs:unsignedInt", "Guid": "xs:string", "NodeId": "xs:string",
}  # fmt: skip


def unavailable(reason: str) -> NoReturn:
    """A test that cannot run: skipped with `reason` on a developer's machine, failed under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"cannot run under CI=true: {reason}")
    pytest.skip(reason)


def wait_until(what: str, check: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


async def until(check: Callable[[], object], timeout: float, what: str = "the condition") -> None:
    """In a coroutine: wait until `check()` is truthy (for states that offer nothing to await); fail after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


def path_for(name: str) -> str:
    """The idShort path a factory signal maps to: `Diagnostics.Byte` stays as is, `SpindleSpeed` too."""
    return name


def factory_config(
    *,
    opc_port: int,
    data_dir: Path,
    sinks: str,
    machines: int = 3,
    publishing_ms: int = 100,
    extra_points: str = "",
    only: Callable[[Any], bool] = lambda s: True,
    events: bool = True,
    password: str | None = None,
) -> str:
    """A config that maps every signal of the factory simulator (or those `only` keeps)."""
    lines = [
        "site:",
        "  id: test-site",
        "agent:",
        f"  data_dir: {data_dir}",
        "  log_level: info",
        "  status_interval_s: 2",
        "sources:",
        "  - id: factory",
        f"    endpoint: opc.tcp://127.0.0.1:{opc_port}/",
        f"    publishing_interval_ms: {publishing_ms}",
        "    timeout_s: 4",
        *([f'    username: operator\n    password: "{password}"'] if password else []),
        "    reconnect_initial_s: 0.2",
        "    reconnect_max_s: 2",
        "equipment:",
    ]
    by_machine: dict[str, list[Any]] = {}
    for s in catalogue(machines):
        if only(s):
            by_machine.setdefault(s.machine, []).append(s)
    for machine, signals in by_machine.items():
        lines += [
            f"  - id: {machine.lower()}",
            "    source: factory",
            "    nameplate:",
            "      manufacturer_name: Test Machines Co.",
            f"      product_designation: {machine}",
            f"      uri_of_product: https://example.com/products/{machine.lower()}",
            f"      order_code: OC-{machine}",
            f"      serial_number: SN-{machine}",
            "    points:",
        ]
        for s in signals:
            lines += [
                f'      - node: "{s.node_id}"',
                f"        path: {path_for(s.name)}",
                f"        type: {s.opcua_type}",
                f"        array: {str(s.is_array).lower()}",
                "        queue_size: 100",
            ]
            if s.unit:
                lines.append(f'        unit: "{s.unit}"')
        lines += extra_points.splitlines() if machine == "CNC01" else []
        if events:
            lines += ["    events:", f'      - node: "ns=2;s={machine}"', "        name: alarms"]
    lines += ["sinks:", *("  " + line for line in sinks.strip().splitlines())]
    return "\n".join(lines) + "\n"


class AgentProcess:
    """`edge-agent run` as a real child process, so a test can SIGTERM or SIGKILL it."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "-c", str(self.config), "--log-format", "json"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    out.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue
        return out

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


class Collected:
    """What an adapter under test emitted, by kind."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.events: list[Event] = []
        self.problems: list[NodeProblem] = []
        self.states: list[SourceState] = []
        self.interruptions: list[Interruption] = []

    async def emit(self, samples: Sequence[Sample]) -> None:
        self.samples.extend(samples)

    async def emit_events(self, events: Sequence[Event]) -> None:
        self.events.extend(events)

    async def interrupted(self, i: Interruption) -> None:
        self.interruptions.append(i)

    async def problem(self, p: NodeProblem) -> None:
        self.problems.append(p)

    async def state(self, s: SourceState) -> None:
        self.states.append(s)

    def of(self, handle: int) -> list[Sample]:
        return [s for s in self.samples if s.handle == handle]
