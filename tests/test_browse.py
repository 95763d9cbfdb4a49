"""The supplier's tools: `edge-agent browse` writes a config from what a server offers, and
`edge-agent check --live` checks a config against the server. Real servers (the factory simulator,
node-opcua with 5,000 variables) on 127.0.0.1, and the commands as a supplier types them
(docs/supplier-guide.md)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from asyncua import Client, ua

from adapters.opcua import browse
from adapters.opcua.browse import BrowseResult, ObjectNode, Variable
from agent import config as config_mod
from agent.mapping import Options, id_short, plain_id, render
from agent.shells import build_shells
from simulators.agentproc import AgentProcess
from simulators.factory import FactoryThread
from simulators.factory.agentconfig import factory_config
from simulators.factory.catalogue import catalogue
from simulators.factory.server import UNECE_UNITS
from simulators.nodeopcua.launcher import NodeOpcuaServer, node_opcua_available
from simulators.ports import free_port
from tests.helpers import EXPECTED_XS, ROOT, unavailable, wait_until

CONTROLS = ("Control.FeedOverride", "Control.ProgramSelect")  # the simulator's writable set-points


def edge_agent(
    *args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`edge-agent ARGS` in `cwd`, as a supplier runs it."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
    )


def problem_rows(out: str) -> list[str]:
    """The rows of `check --live`'s problem table (after its header)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("MACHINE "))
    return [line for line in lines[start + 1 :] if line.strip()]


def data_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for line in path.read_bytes().splitlines():
        message = orjson.loads(line)
        if message["lane"] == "data":
            out += [(message["asset"], r) for r in message["records"]]
    return out


# -- against the factory simulator ----------------------------------------------------------------


def test_browse_writes_a_config_that_checks_runs_and_matches_the_catalogue(tmp_path: Path) -> None:
    with FactoryThread(port=free_port(), machines=3) as factory:
        done = edge_agent("browse", factory.endpoint, "-o", "mapping.yaml", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "wrote mapping.yaml: 3 machine(s), 80 points" in done.stdout, done.stdout
        assert "variables found" in done.stderr  # the progress line
        text = (tmp_path / "mapping.yaml").read_text()

        # The types, arrays and units are the simulator's own, point for point.
        cfg = config_mod.parse(text, "mapping.yaml")
        build_shells(cfg)
        points = {(e.id, p.node): p for e in cfg.equipment for p in e.points}
        signals = catalogue(3)
        for s in signals:
            p = points.pop((s.machine.lower(), s.node_id))
            unit = s.unit if s.unit in UNECE_UNITS else None  # the units it serves as EngineeringUnits
            assert (p.path, p.type, p.array, p.unit) == (s.name, s.opcua_type, s.is_array, unit), s
        assert sorted(p.path for p in points.values()) == sorted(CONTROLS * 3)  # the rest: the set-points
        assert "Spindle bearing temperature" in text and "access: read; xs:double" in text
        assert 'browse_path: "0:Objects/2:CNC01/2:Diagnostics/2:DoubleArray"' in text
        assert "access: read, write" in text  # the set-points

        # `run --seconds 8` collects while the checks (which neither read nor write its data) run beside it.
        running = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "-c", "mapping.yaml", "--seconds", "8"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            static = edge_agent("check", "-c", "mapping.yaml", cwd=tmp_path)
            assert static.returncode == 0 and "OK" in static.stdout, static.stdout + static.stderr
            live = edge_agent("check", "-c", "mapping.yaml", "--live", cwd=tmp_path)
            assert live.returncode == 0, live.stdout + live.stderr
            assert "live check OK — 80 points" in live.stdout
            _, ran_stderr = running.communicate(timeout=120)
        finally:
            if running.poll() is None:
                running.kill()
                running.communicate()
        assert running.returncode == 0, ran_stderr[-3000:]
    exported = edge_agent("export", "-c", "mapping.yaml", "--format", "aasx", "-o", "machines.aasx", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    with zipfile.ZipFile(tmp_path / "machines.aasx") as aasx:
        assert any(b"urn:edge-agent:aas:my-site:cnc01" in aasx.read(n) for n in aasx.namelist())
    # Every point of every machine sent its value, with the value type of its OPC UA type.
    got = {(asset, r["path"]): r["valueType"] for asset, r in data_records(tmp_path / "data" / "records.jsonl")}
    expected = {(s.machine.lower(), s.name): EXPECTED_XS[s.opcua_type] for s in signals}
    expected |= {
        (m, c): EXPECTED_XS[t]
        for m in ("cnc01", "imm01", "prs01")
        for c, t in zip(CONTROLS, ("Double", "String"), strict=True)
    }
    assert got == expected


def test_a_bound_stops_the_walk_and_the_file_says_so(tmp_path: Path) -> None:
    with FactoryThread(port=free_port(), machines=3) as factory:
        done = edge_agent("browse", factory.endpoint, "-o", "part.yaml", "--max-nodes", "30", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "INCOMPLETE: the walk stopped at the node limit (30 nodes)" in done.stderr
    text = (tmp_path / "part.yaml").read_text()
    assert "# INCOMPLETE: the walk stopped at the node limit (30 nodes)" in text
    cfg = config_mod.parse(text, "part.yaml")
    assert 0 < sum(len(e.points) for e in cfg.equipment) < 30
    again = edge_agent("browse", "opc.tcp://127.0.0.1:1/", "-o", "part.yaml", cwd=tmp_path)
    assert again.returncode == 2 and "part.yaml exists: give --force" in again.stderr


def test_one_machine_from_a_root_with_a_filter_and_a_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    users = {"operator": "s3cret-Pw"}
    with FactoryThread(port=free_port(), machines=2, users=users) as factory:
        args = ["browse", factory.endpoint, "-o", "cnc.yaml", "--root", "ns=2;s=CNC01", "--one-machine"]
        args += ["--filter", "temperature", "--username", "operator", "--password-env", "PLC_PW"]
        args += ["--allow-plaintext-password", "--site", "ansan-01"]
        env = {"PLC_PW": users["operator"]}
        done = edge_agent(*args, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        text = (tmp_path / "cnc.yaml").read_text()
        assert "s3cret" not in text and "password: ${PLC_PW}" in text
        monkeypatch.setenv("PLC_PW", users["operator"])  # the config takes the password from there
        cfg = config_mod.parse(text, "cnc.yaml")
        [machine] = cfg.equipment
        assert machine.id == "cnc01" and cfg.site.id == "ansan-01"
        assert sorted(p.path for p in machine.points) == ["CoolantTemperature", "SpindleTemperature"]
        live = edge_agent("check", "-c", "cnc.yaml", "--live", cwd=tmp_path, env=env)
        assert live.returncode == 0, live.stdout + live.stderr
        wrong = edge_agent("browse", factory.endpoint, "-o", "x.yaml", "--root", "ns=2;s=NoSuchMachine", cwd=tmp_path)
        assert wrong.returncode == 2 and "the root node ns=2;s=NoSuchMachine is not on the server" in wrong.stderr


def test_a_secured_server_is_browsed_once_its_certificate_is_trusted_as_the_refusal_says(tmp_path: Path) -> None:
    secured = ("Basic256Sha256_SignAndEncrypt",)
    with FactoryThread(port=free_port(), machines=1, security=secured, certificate_dir=tmp_path / "sim") as factory:
        args = ("browse", factory.endpoint, "-o", "m.yaml", "--security", "Basic256Sha256/SignAndEncrypt")
        refused = edge_agent(*args, cwd=tmp_path)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        trust = re.search(r"trust it: (cp -t \S+ \S+)$", refused.stderr.strip())
        assert trust is not None, refused.stderr
        subprocess.run(trust.group(1), shell=True, cwd=tmp_path, check=True)  # the command, as printed
        done = edge_agent(*args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "security: {policy: Basic256Sha256, mode: SignAndEncrypt}" in (tmp_path / "m.yaml").read_text()
        live = edge_agent("check", "-c", "m.yaml", "--live", cwd=tmp_path)
        assert live.returncode == 0 and "connected (Basic256Sha256/SignAndEncrypt)" in live.stdout, live.stdout


def test_check_live_names_each_problem_with_its_fix(tmp_path: Path) -> None:
    with FactoryThread(port=free_port(), machines=2) as factory:
        text = factory_config(
            opc_port=factory.port,
            data_dir=tmp_path / "data",
            sinks=f"- type: file\n  path: {tmp_path / 'out.jsonl'}",
            machines=2,
        )
        text = text.replace('node: "ns=2;s=CNC01.SpindleSpeed"', 'node: "ns=2;s=CNC01.SpindelSpeed"')  # a typo
        text = text.replace(  # a wrong type
            'node: "ns=2;s=CNC01.Power"\n        path: Power\n        type: Double',
            'node: "ns=2;s=CNC01.Power"\n        path: Power\n        type: Float',
        )
        text = text.replace('node: "ns=2;s=IMM01.ShotCount"', 'node: "ns=2;s=IMM01.NoSuchSignal"')  # missing
        text = text.replace(  # a browse path with a typo
            'node: "ns=2;s=IMM01.MouldId"', 'browse_path: "0:Objects/2:IMM01/2:MoldId"'
        )
        text = text.replace(  # a scalar mapped as an array
            'node: "ns=2;s=IMM01.Cushion"\n        path: Cushion\n        type: Double\n        array: false',
            'node: "ns=2;s=IMM01.Cushion"\n        path: Cushion\n        type: Double\n        array: true',
        )
        text += "control:\n  enabled: true\n  allow:\n    - {machine: cnc01, element: ProgramName, values: [P100]}\n"
        (tmp_path / "bad.yaml").write_text(text)
        done = edge_agent("check", "-c", "bad.yaml", "--live", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    rows = problem_rows(done.stdout)
    wanted = {
        "SpindleSpeed": (
            "node ns=2;s=CNC01.SpindelSpeed not found (BadNodeIdUnknown)",
            'did you mean ns=2;s=CNC01.SpindleSpeed (same browse name)? set node: "ns=2;s=CNC01.SpindleSpeed"',
        ),
        "Power": ("type Float but the server says Double", "set type: Double"),
        "ShotCount": (
            "node ns=2;s=IMM01.NoSuchSignal not found (BadNodeIdUnknown)",
            'did you mean ns=2;s=IMM01.ShotCount (same browse name)? set node: "ns=2;s=IMM01.ShotCount"',
        ),
        "MouldId": (
            "browse path 0:Objects/2:IMM01/2:MoldId does not resolve (BadNoMatch)",
            'set browse_path: "0:Objects/2:IMM01/2:MouldId"',
        ),
        "Cushion": ("array: true but the server's value is a single value (ValueRank -1)", "set array: false"),
        "ProgramName": ("control.allow lists it, but the server does not let the agent write it", "make it writable"),
    }
    assert len(rows) == len(wanted), rows
    for row in rows:
        machine, path = row.split()[:2]
        problem, fix = wanted[path]
        assert machine in ("cnc01", "imm01") and problem in row and fix in row, row


def test_an_unreachable_source_exits_2(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    text = factory_config(
        opc_port=port, data_dir=tmp_path / "data", sinks="- type: file\n  path: out.jsonl", machines=1
    )
    (tmp_path / "down.yaml").write_text(text)
    done = edge_agent("check", "-c", "down.yaml", "--live", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"cannot connect to opc.tcp://127.0.0.1:{port}/" in done.stdout
    assert "Traceback" not in done.stderr
    browsed = edge_agent("browse", f"opc.tcp://127.0.0.1:{port}/", "-o", "m.yaml", cwd=tmp_path)
    assert browsed.returncode == 2 and "cannot browse: cannot connect" in browsed.stderr
    assert not (tmp_path / "m.yaml").exists()


def test_a_server_short_of_continuation_points_is_browsed_in_smaller_calls() -> None:
    """PLCs have few browse continuation points: nodes refused with BadNoContinuationPoints are browsed again."""

    async def walk(url: str) -> tuple[BrowseResult, list[int]]:
        client = Client(url)
        await client.connect()
        sizes: list[int] = []
        real = client.uaclient.browse

        async def short_of_points(params: ua.BrowseParameters) -> list[ua.BrowseResult]:
            results: list[ua.BrowseResult] = await real(params)
            sizes.append(len(results))
            refused = ua.BrowseResult(StatusCode=ua.StatusCode(ua.UInt32(ua.StatusCodes.BadNoContinuationPoints)))
            return [r if i < 2 else refused for i, r in enumerate(results)]

        client.uaclient.browse = short_of_points  # type: ignore[method-assign, assignment]
        try:
            return await browse.walk(client), sizes
        finally:
            await client.disconnect()

    with FactoryThread(port=free_port(), machines=3) as factory:
        result, sizes = asyncio.run(walk(factory.endpoint))
    assert {v.node_id for v in result.variables} >= {s.node_id for s in catalogue(3)}
    assert result.errors == [] and result.stopped is None
    assert max(sizes) > 2 and sizes[-1] <= 2  # it went down to calls the server could answer


# -- the writer, without a server -------------------------------------------------------------------


def _variable(path: tuple[str, ...], data_type: str | None = "Double", **kw: Any) -> Variable:
    fields: dict[str, Any] = {
        "node_id": "ns=3;s=" + ".".join(p.split(":", 1)[1] for p in path[-2:] if not p.startswith("3:Press")),
        "path": path,
        "data_type": data_type,
        "data_type_id": "i=11",
        "data_type_name": data_type or "MyStructure",
        "value_rank": -1,
        "unit": None,
        "access_level": 1,
        "user_access_level": 1,
        "description": "",
        "minimum_sampling_ms": None,
    } | kw
    return Variable(**fields)


def test_names_become_valid_ids_and_what_cannot_be_collected_is_commented_out_with_why() -> None:
    assert [id_short(n) for n in ("Speed", "1st-Stage", "온도", "X", "a b.c")] == [
        "Speed",
        "N1st_Stage",
        "Node",
        "X_",
        "a_b_c",
    ]
    assert [plain_id(n) for n in ("CNC 01", "Line#1/Press", "..")] == ["cnc-01", "line-1-press", "equipment"]
    machine = ObjectNode("ns=3;s=M", ("3:Press 1",), "a press", 0)
    result = BrowseResult(
        endpoint="opc.tcp://127.0.0.1:4840/",
        root_id="i=85",
        root_path=("0:Objects",),
        top_objects=[machine],
        variables=[
            _variable(("3:Press 1", "3:Temp")),
            _variable(("3:Press 1", "3:Temp", "3:Setpoint")),  # a variable below a variable: Temp is both
            _variable(("3:Press 1", "3:Temp-1")),
            _variable(("3:Press 1", "3:Temp_1")),  # the same idShort as Temp-1
            _variable(("3:Press 1", "3:온도"), unit="°C"),
            _variable(("3:Press 1", "3:Status"), data_type=None, data_type_id="ns=3;i=3001"),
            _variable(("3:Press 1", "3:Any"), data_type="Variant", data_type_name="BaseDataType (any type)"),
            _variable(("3:Press 1", "3:Map"), value_rank=2),
            _variable(("3:Press 1", "3:Secret"), user_access_level=0),
            _variable(("3:Press 1", "3:Profile"), value_rank=1),
            _variable(("3:Loose",), data_type="String"),  # right below the root
        ],
        nodes_seen=14,
    )
    written = render(result, Options(endpoint="opc.tcp://127.0.0.1:4840/"))
    cfg = config_mod.parse(written.text, "m.yaml")
    build_shells(cfg)
    press, loose = cfg.equipment
    assert (press.id, press.name, loose.id) == ("press-1", "Press 1", "objects")
    paths = {p.node: (p.path, p.array, p.unit) for p in press.points}
    assert paths == {
        "ns=3;s=Temp": ("Temp_Value", False, None),
        "ns=3;s=Temp.Setpoint": ("Temp.Setpoint", False, None),
        "ns=3;s=Temp-1": ("Temp_1", False, None),
        "ns=3;s=Temp_1": ("Temp_1_2", False, None),
        "ns=3;s=온도": ("Node", False, "°C"),
        "ns=3;s=Profile": ("Profile", True, None),
    }
    assert [p.path for p in loose.points] == ["Loose"]
    reasons = dict(written.not_mapped)
    assert "is not an OPC UA built-in type" in reasons["ns=3;s=Status"]
    assert "BaseDataType (any type) is not a type the agent maps" in reasons["ns=3;s=Any"]
    assert "2-dimensional array" in reasons["ns=3;s=Map"]
    assert "does not let this session read it" in reasons["ns=3;s=Secret"]
    for node, why in reasons.items():
        assert re.search(rf"# NOT MAPPED: {re.escape(why)}\n\s+# - node: \"{re.escape(node)}\"", written.text), node


# -- at scale: node-opcua with 5,000 variables -------------------------------------------------------


@pytest.mark.nodeopcua
def test_browse_finds_5000_variables_quickly_and_they_check_live(tmp_path: Path) -> None:
    reason = node_opcua_available()
    if reason is not None:
        unavailable(reason)
    with NodeOpcuaServer(port=free_port(), vars=5000, period_ms=1000) as server:
        started = time.monotonic()
        done = edge_agent("browse", server.endpoint, "-o", "load.yaml", cwd=tmp_path)
        wall = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        walked = float(re.search(r"nodes browsed in ([\d.]+) s", done.stdout).group(1))  # type: ignore[union-attr]
        print(f"\nbrowse of {server.vars:,} variables: walk {walked:.2f} s, command {wall:.2f} s")
        assert walked < 60, done.stdout
        cfg = config_mod.load(tmp_path / "load.yaml")
        nodes = {p.node for e in cfg.equipment for p in e.points}
        assert set(server.variable_ids()) <= nodes and len(nodes) == 5002  # and Fast, Ramp
        started = time.monotonic()
        live = edge_agent("check", "-c", "load.yaml", "--live", cwd=tmp_path)
        print(f"check --live of {len(nodes):,} points: {time.monotonic() - started:.2f} s")
        assert live.returncode == 0, live.stdout[-3000:] + live.stderr[-3000:]
        # ...and `run` collects from every one of them without an edit.
        records = tmp_path / "data" / "records.jsonl"

        def sent() -> set[str]:
            return {r["node"] for _, r in data_records(records)} if records.exists() else set()

        with AgentProcess(tmp_path / "load.yaml", tmp_path / "agent.log", cwd=tmp_path) as agent:
            wait_until("a value of every browsed point", lambda: sent() >= nodes, 180, interval=0.25)
            assert agent.stop() == 0
    assert sent() == nodes
