"""An edge-agent config that maps every signal of the factory simulator: for tests, benchmarks and fault runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulators.factory.catalogue import catalogue


def _login(password: str) -> list[str]:
    # The simulator serves unsecured by default: a password then needs the explicit permission.
    return ["    username: operator", f'    password: "{password}"', "    allow_plaintext_password: true"]


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
    agent: str = "",
    source: str = "",
    buffer: str = "",
) -> str:
    """A config that maps every signal of the factory simulator (or those `only` keeps).

    `agent`, `source` and `buffer` are extra YAML lines for those blocks (indented as given).
    """
    lines = [
        "site:",
        "  id: test-site",
        "agent:",
        f"  data_dir: {data_dir}",
        "  log_level: info",
        "  status_interval_s: 2",
        *agent.splitlines(),
        *(["buffer:", *buffer.splitlines()] if buffer else []),
        "sources:",
        "  - id: factory",
        f"    endpoint: opc.tcp://127.0.0.1:{opc_port}/",
        f"    publishing_interval_ms: {publishing_ms}",
        "    timeout_s: 4",
        *(_login(password) if password else []),
        "    reconnect_initial_s: 0.2",
        "    reconnect_max_s: 2",
        *source.splitlines(),
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
