"""The install: lock files that cover every import, the scripts' stamp (no pip, no index on an unchanged
checkout), `edge-agent --version`, and the demo's view (80 columns) and Ctrl-C (exit 0).

Real files and processes: the scripts run in a copy of the checkout whose venv sees this venv's
packages, so pip really runs (offline: everything it needs is already there) and really does not.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import tomllib
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from packaging.requirements import Requirement

from agent.version import VERSION
from simulators import demo
from tests.helpers import ROOT, unavailable

LOCKS = ROOT / "requirements"
RUNTIME_PACKAGES = ("agent", "adapters", "aas_models", "uploader")
OURS = {"agent", "adapters", "aas_models", "uploader", "simulators", "tests", "bench"}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def declared(*extras: str) -> list[Requirement]:
    """pyproject's dependencies plus those of `extras` (the self-reference edge-agent[...] left out)."""
    project = pyproject()
    reqs = [Requirement(r) for r in project["dependencies"]]  # type: ignore[attr-defined]
    optional: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
    for extra in extras:
        reqs += [Requirement(r) for r in optional[extra] if norm(Requirement(r).name) != "edge-agent"]
    return reqs


def read_lock(path: Path) -> tuple[dict[str, str], dict[str, set[str]]]:
    """{package: pinned version}, and {package: what it is there for (the lock's `# via` lines)}."""
    pins: dict[str, str] = {}
    via: dict[str, set[str]] = {}
    current = ""
    in_via = False
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _PIN.match(line)
        if m:
            current = norm(m.group(1))
            pins[current] = m.group(2)
            via[current] = set()
            in_via = False
            continue
        text = line.strip()
        if text.startswith("# via"):
            in_via = True
            rest = text.removeprefix("# via").strip()
            if rest:
                via[current].add(rest)
        elif in_via and text.startswith("#   "):
            via[current].add(text.removeprefix("#").strip())
        else:
            in_via = False
    return pins, via


def imported_distributions(*packages: str) -> dict[str, set[str]]:
    """{distribution: the files importing it} for every third-party import in `packages` (ast, not grep)."""
    to_dist = importlib.metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    for package in packages:
        for file in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in OURS or top == "__future__":
                        continue
                    dists = to_dist.get(top)
                    assert dists, f"{file.relative_to(ROOT)} imports {top}, which no installed distribution provides"
                    for dist in dists:
                        found.setdefault(norm(dist), set()).add(str(file.relative_to(ROOT)))
    return found


# -- lock files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lock", "packages", "extras"),
    [
        ("runtime", RUNTIME_PACKAGES, ()),
        ("demo", (*RUNTIME_PACKAGES, "simulators"), ("simulators",)),
        ("test", (*RUNTIME_PACKAGES, "simulators", "tests", "bench"), ("simulators", "test")),
    ],
)
def test_every_import_is_declared_and_locked(lock: str, packages: tuple[str, ...], extras: tuple[str, ...]) -> None:
    pins, _ = read_lock(LOCKS / f"{lock}.lock")
    names = {norm(r.name) for r in declared(*extras)}
    for dist, files in sorted(imported_distributions(*packages).items()):
        where = ", ".join(sorted(files)[:3])
        assert dist in names, f"{dist} is imported ({where}) but not declared in pyproject.toml for {lock}"
        assert dist in pins, f"{dist} is imported ({where}) but not in requirements/{lock}.lock: ./scripts/lock.sh"


def test_the_gateway_install_has_no_simulator_or_test_packages() -> None:
    pins, _ = read_lock(LOCKS / "runtime.lock")
    for name in ("numpy", "psycopg", "jsonschema", "pytest", "mypy", "hypothesis"):
        assert name not in pins, f"{name} is in the gateway's lock (runtime.lock); it belongs in an extra"


@pytest.mark.parametrize(
    ("lock", "extras"), [("runtime", ()), ("demo", ("simulators",)), ("test", ("simulators", "test"))]
)
def test_pyproject_and_the_locks_agree(lock: str, extras: tuple[str, ...]) -> None:
    """Fails when a dependency is added, dropped or its range changed in pyproject.toml without ./scripts/lock.sh."""
    pins, via = read_lock(LOCKS / f"{lock}.lock")
    wanted = declared(*extras) + [
        Requirement(line)
        for line in (LOCKS / "build.in").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for req in wanted:
        name = norm(req.name)
        assert name in pins, f"{req} (pyproject.toml) is not in requirements/{lock}.lock: run ./scripts/lock.sh"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{lock}.lock pins {name}=={pins[name]}, outside {req} (pyproject.toml): ./scripts/lock.sh"
        )
        for extra in req.extras:  # psycopg[binary]: what the extra brings is locked too
            extra_reqs = importlib.metadata.requires(req.name) or []
            for r in map(Requirement, extra_reqs):
                if (
                    r.marker is not None
                    and r.marker.evaluate({"extra": extra})
                    and not r.marker.evaluate({"extra": ""})
                ):
                    assert norm(r.name) in pins, f"{req}: {r.name} is not in requirements/{lock}.lock"
    direct = {name for name, reasons in via.items() if any("pyproject.toml" in r for r in reasons)}
    assert direct <= {norm(r.name) for r in wanted}, (
        f"requirements/{lock}.lock has direct dependencies pyproject.toml no longer declares: "
        f"{sorted(direct - {norm(r.name) for r in wanted})}; run ./scripts/lock.sh"
    )


def test_a_package_has_one_version_in_every_lock() -> None:
    """runtime ⊂ demo ⊂ test with the same pins, so a venv made for the tests also runs the demo."""
    runtime, demo_, test = (read_lock(LOCKS / f"{n}.lock")[0] for n in ("runtime", "demo", "test"))
    for small, big, names in ((runtime, demo_, "runtime/demo"), (demo_, test, "demo/test")):
        differ = {n: (v, big.get(n)) for n, v in small.items() if big.get(n) != v}
        assert not differ, f"{names} locks disagree: {differ}"


def test_every_locked_file_has_a_hash() -> None:
    for lock in sorted(LOCKS.glob("*.lock")):
        blocks = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text(encoding="utf-8"))
        for block in blocks:
            if _PIN.match(block):
                assert "--hash=sha256:" in block, f"{lock.name}: {block.splitlines()[0]} has no hash"


# -- the scripts' install step -----------------------------------------------------------------------


def copy_checkout(dest: Path) -> Path:
    """What the scripts and the demo need of this checkout (no venv, no node_modules, no demo-out)."""
    ignore = shutil.ignore_patterns("__pycache__", "node_modules", "*.egg-info", "demo-out")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("scripts", "requirements", "configs", *RUNTIME_PACKAGES, "simulators"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    return dest


def venv_on_these_packages(checkout: Path) -> None:
    """checkout/.venv without pip of its own, seeing this venv's installed packages (but not this
    checkout's edge-agent), so its pip finds every locked package installed and needs no index."""
    shared = checkout.parent / "shared-site"
    shared.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not re.match(r"(__editable__|edge_agent|_?edge-agent)", entry.name) and entry.suffix != ".pth":
            (shared / entry.name).symlink_to(entry)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(checkout / ".venv")], check=True)
    site = Path(
        subprocess.run(
            [str(checkout / ".venv/bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "shared-site.pth").write_text(f"{shared}\n", encoding="utf-8")


def offline_env(tmp: Path) -> dict[str, str]:
    """No package index (PIP_NO_INDEX and a bogus index URL), and a pip log that shows whether pip ran."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(
        PIP_NO_INDEX="1",
        PIP_INDEX_URL="http://127.0.0.1:9/simple",
        PIP_FIND_LINKS="",
        PIP_LOG=str(tmp / "pip.log"),
        npm_config_offline="true",
    )
    return env


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_an_unchanged_checkout_skips_pip_and_needs_no_index(tmp_path: Path) -> None:
    (tmp_path / "checkout").mkdir()
    checkout = copy_checkout(tmp_path / "checkout")
    venv_on_these_packages(checkout)
    env = offline_env(tmp_path)
    pip_log = tmp_path / "pip.log"

    first = run(["bash", "scripts/install.sh", "demo"], checkout, env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert re.search(r"installing \d+ packages from requirements/demo\.lock", first.stdout), first.stdout
    assert "installed in" in first.stdout and "later runs skip this" in first.stdout
    assert pip_log.exists(), "the first run did not run pip"
    assert (checkout / ".venv/.edge-agent-install").exists()
    installed = run([str(checkout / ".venv/bin/edge-agent"), "--version"], checkout, env)
    assert installed.stdout.strip() == f"edge-agent {pyproject()['version']}", installed.stdout + installed.stderr

    pip_log.unlink()
    started = time.monotonic()
    second = run(["bash", "scripts/install.sh", "demo"], checkout, env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout == "" and not pip_log.exists(), f"pip ran on an unchanged checkout: {second.stdout}"
    assert time.monotonic() - started < 5
    # The whole demo script, offline: past the install straight into the demo (here only its --help).
    shown = run(["bash", "scripts/demo.sh", "--help"], checkout, env)
    assert shown.returncode == 0 and "--seconds" in shown.stdout, shown.stdout + shown.stderr
    assert not pip_log.exists()
    # A smaller profile is part of the installed one: nothing to do either.
    assert run(["bash", "scripts/install.sh", "runtime"], checkout, env).stdout == ""
    assert not pip_log.exists()

    # A changed lock file: the install runs again (and still needs no index: all is installed).
    with (checkout / "requirements/demo.lock").open("a", encoding="utf-8") as f:
        f.write("# changed\n")
    third = run(["bash", "scripts/install.sh", "demo"], checkout, env)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "changed: updating .venv from requirements/demo.lock" in third.stdout, third.stdout
    assert pip_log.exists()


def test_a_first_run_without_the_index_says_what_failed(tmp_path: Path) -> None:
    python3 = shutil.which("python3")
    if (
        python3 is None
        or subprocess.run(
            [python3, "-c", "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))"]
        ).returncode
    ):
        unavailable("needs python3 3.11+ with venv and ensurepip on PATH (what scripts/install.sh makes .venv with)")
    checkout = copy_checkout(tmp_path)
    env = offline_env(tmp_path)
    result = run(["bash", "scripts/install.sh", "runtime"], checkout, env)
    assert result.returncode == 1
    assert "creating .venv" in result.stdout
    assert re.search(r"installing \d+ packages from requirements/runtime\.lock", result.stdout)
    assert "pip failed" in result.stderr and "docs/install.md" in result.stderr, result.stderr
    assert not (checkout / ".venv/.edge-agent-install").exists()


# -- --version ---------------------------------------------------------------------------------------


def test_version_is_pyprojects() -> None:
    expected = pyproject()["version"]
    assert expected == VERSION
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "--version"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"edge-agent {expected}"
    script = Path(sys.executable).parent / "edge-agent"
    if script.exists():
        out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == f"edge-agent {expected}"
        assert importlib.metadata.version("edge-agent") == expected


# -- the demo's view ---------------------------------------------------------------------------------


def columns(line: str) -> int:
    """Terminal columns, counted here independently of the demo's own function."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1 for c in line)


def write_messages(path: Path) -> None:
    """A receiver file as the agent's file sink writes it, with values at the edges of their types."""
    values = [
        ("Double", 1.7976931348623157e308, "xs:double", "kW"),
        ("DoubleMin", 5e-324, "xs:double", ""),
        ("DoubleNeg", -123456.789, "xs:double", "°C"),
        ("NaNText", "NaN", "xs:double", ""),
        ("InfText", "-INF", "xs:double", ""),
        ("Int64", -9223372036854775808, "xs:long", ""),
        ("UInt64", 18446744073709551615, "xs:unsignedLong", "pcs"),
        ("Small", -0.000123, "xs:double", "mm"),
        ("Text", "정상 가동 중 (작업자: 김철수) " * 5, "xs:string", ""),
        ("Bytes", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g" * 3, "xs:base64Binary", ""),
        ("Label", [{"language": "ko", "text": "주축 과부하 경고 " * 4}], "langString", ""),
        ("Array", [1.5, -2.5, "NaN"], "xs:double", ""),
        *[(f"VeryLongElementNameNumber{i:02d}WithUnit", -(10.0**i), "xs:double", "mm/min") for i in range(12)],
    ]
    with path.open("wb") as f:
        for asset in ("cnc01", "imm01-with-a-long-asset-name"):
            records = [
                {"id": f"{asset}-{i}", "path": p, "value": v, "valueType": t, "unit": u}
                for i, (p, v, t, u) in enumerate(values)
            ]
            records += [
                {"id": f"{asset}-d{i}", "path": f"Diagnostics.{p}", "value": v, "valueType": t}
                for i, (p, v, t, _) in enumerate(values)
            ]
            f.write(orjson.dumps({"lane": "data", "asset": asset, "records": records}) + b"\n")
            f.write(orjson.dumps({"lane": "data", "asset": asset, "records": records[:3]}) + b"\n")  # resent
        event = {"id": "e1", "time": "2026-01-01T08:00:00Z", "message": "과부하 알람 " * 20}
        f.write(orjson.dumps({"lane": "event", "asset": "cnc01", "records": [event]}) + b"\n")
        gap = {"id": "g1", "start": "2026-01-01T08:00:00Z", "end": "2026-01-01T08:01:00Z", "elements": ["a"] * 99,
               "reason": "the server restarted and this reason is long " * 3}  # fmt: skip
        f.write(orjson.dumps({"lane": "gap", "asset": "cnc01", "records": [gap]}) + b"\n")
        problem = {"id": "s1", "kind": "node-problem", "path": "Diagnostics.X" * 9, "message": "not there " * 9}
        f.write(orjson.dumps({"lane": "status", "asset": "cnc01", "records": [problem]}) + b"\n")


def test_the_view_fits_80_columns_with_huge_nan_and_negative_values(tmp_path: Path) -> None:
    write_messages(tmp_path / "records.jsonl")
    view = demo.View(tmp_path / "records.jsonl")
    view.poll()
    assert view.duplicates == 6 and view.lanes["data"] > 0
    lines = view.lines(12345.6)
    text = "\n".join(lines)
    for line in lines:
        assert columns(line) <= 80, f"{columns(line)} columns: {line!r}"
    assert not re.search(r"\d{9}", text), "a number was not rounded for display"
    for shown in ("Array=[3]", "Double=1.80e308 kW", "DoubleMin=4.94e-324"):
        assert shown in text, (shown, text)
    for heading in ("latest value per machine", "every OPC UA type", "recent alarms", "gaps (", "problems ("):
        assert heading in text, f"the view does not explain its rows: {heading!r} missing"
    assert "more" in text  # what does not fit is counted, not wrapped past the screen
    cloud = demo.CloudView("token")
    cloud.lanes.update(data=10**12, event=3)
    for line in cloud.lines(1.0):
        assert columns(line) <= 80, f"{columns(line)} columns: {line!r}"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (1.7976931348623157e308, "1.80e308"),
        (float("nan"), "NaN"),
        (float("-inf"), "-INF"),
        (-0.5, "-0.500"),
        (1792.7, "1793"),
        (25.84, "25.8"),
        (0.0, "0"),
        (-5e-324, "-4.94e-324"),
        (2**63, "9.22e18"),
        (-(10**400), "-1.00e400"),
        (-1001, "-1001"),
        (True, "true"),
        ("가" * 30, "가" * 7 + "…"),
        ([1, 2, 3], "[3]"),
    ],
)
def test_a_value_is_rounded_for_display(value: object, shown: str) -> None:
    assert demo.fmt_value(value) == shown
    assert columns(demo.fmt_value(value)) <= 16


# -- Ctrl-C --------------------------------------------------------------------------------------------


class Demo:
    """`python -m simulators.demo` in a copy of the checkout (its demo-out/ is the copy's), read line by line."""

    def __init__(self, checkout: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulators.demo", "--seconds", "120"],
            cwd=checkout,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if re.search(pattern, line):
                return
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {pattern!r}; output:\n{''.join(self.seen)}")

    def interrupt_and_wait(self, timeout: float) -> str:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout)
        self.reader.join(10)  # it ends at the end of the output
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        out = "".join(self.seen)
        assert code == 0, f"exit {code}; output:\n{out}"
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def demo_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_checkout(tmp_path_factory.mktemp("demo-checkout"))


@pytest.fixture
def running_demo(demo_checkout: Path) -> Iterator[Demo]:
    d = Demo(demo_checkout)
    try:
        yield d
    finally:
        d.close()


def test_ctrl_c_right_after_start_ends_cleanly(running_demo: Demo) -> None:
    running_demo.wait_for(r"^starting the OPC UA factory simulator", timeout=30)
    out = running_demo.interrupt_and_wait(timeout=30)
    assert "stopped (Ctrl-C) before the agent started" in out
    assert "Traceback" not in out and "exited early" not in out


def test_ctrl_c_while_the_agent_starts_ends_cleanly(running_demo: Demo) -> None:
    running_demo.wait_for(r"^starting the edge agent", timeout=60)
    out = running_demo.interrupt_and_wait(timeout=60)
    assert "agent stopped (exit 0)" in out and "Traceback" not in out


def test_ctrl_c_in_the_live_view_ends_cleanly(running_demo: Demo) -> None:
    running_demo.wait_for(r"records by lane:.*data \d", timeout=60)
    out = running_demo.interrupt_and_wait(timeout=60)
    assert "agent stopped (exit 0). What the demo left in demo-out/:" in out and "Traceback" not in out
    for line in out.splitlines():
        assert columns(line) <= 80, f"{columns(line)} columns: {line!r}"
