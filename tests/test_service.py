"""`edge-agent service install|uninstall|status`, generated into a staging root (test machines run no
systemd): the unit's directives, the installed config, secrets that stay in their credential files,
`systemd-analyze verify` where it exists, and the unit's own command line run for real."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from agent import config as config_mod
from agent import service
from simulators.ports import free_port
from tests.helpers import ROOT, unavailable, wait_until

DEMO = ROOT / "configs" / "demo.yaml"
MQTT = ROOT / "configs" / "factory-mqtt.yaml"
SECRET = "Svc-Secret-4d9a2e"
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
    "SystemCallFilter": "@system-service",
}


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "service", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def unit_of(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file read the way systemd does: sections, keys that may repeat, comments ignored."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a directive: {line!r}"
        current.setdefault(key, []).append(value)
    return sections


def mqtt_config(tmp_path: Path) -> Path:
    """The shipped MQTT example, its broker password taken from a systemd credential."""
    prefix = "    topic_prefix: kamp/v1\n"
    login = "    username: edge\n    password: ${credential:mqtt}\n"
    text = MQTT.read_text(encoding="utf-8").replace(prefix, prefix + login)
    assert "${credential:mqtt}" in text
    path = tmp_path / "factory-mqtt.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def secret_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def everything_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_install_writes_a_unit_for_an_unprivileged_user_with_credentials_and_a_sandbox(tmp_path: Path) -> None:
    root = tmp_path / "root"
    done = cli("install", "-c", str(mqtt_config(tmp_path)), "--root", str(root), "--credential",
               f"mqtt={secret_file(tmp_path, 'mqtt-password')}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    unit_file = root / "etc/systemd/system/edge-agent.service"
    unit = unit_of(unit_file.read_text())
    s = unit["Service"]
    assert s["User"] == ["edge-agent"] and s["Group"] == ["edge-agent"]
    assert s["Restart"] == ["on-failure"] and 1 <= int(s["RestartSec"][0]) <= 60
    assert s["StateDirectory"] == ["edge-agent"] and s["WorkingDirectory"] == ["/var/lib/edge-agent"]
    assert s["KillSignal"] == ["SIGTERM"]
    assert int(s["TimeoutStopSec"][0]) >= 30  # one sink: a 5 s drain, the MQTT offline message, closing
    assert s["LoadCredential"] == ["mqtt:/etc/edge-agent/credentials/mqtt"]
    for key, value in HARDENING.items():
        assert s[key] == [value], key
    assert s["ProtectHome"][0] in ("yes", "read-only")
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "network-online.target" in unit["Unit"]["After"][0]
    exec_start = service.unquote_command(s["ExecStart"][0])
    assert Path(exec_start[0]).is_absolute() and os.access(exec_start[0], os.X_OK), exec_start
    assert exec_start[-3:] == ["run", "-c", "/etc/edge-agent/config.yaml"]

    # The secret is in its credential file (root's only) and nowhere else.
    credential = root / "etc/edge-agent/credentials/mqtt"
    assert credential.read_text() == SECRET + "\n"
    assert stat.S_IMODE(credential.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "etc/edge-agent/credentials").stat().st_mode) == 0o700
    for f in everything_under(root):
        if f != credential:
            assert SECRET not in f.read_text(errors="replace"), f
    assert SECRET not in done.stdout + done.stderr

    # The installed copy: 0640, data_dir in the state directory, otherwise the same config.
    installed = root / "etc/edge-agent/config.yaml"
    assert stat.S_IMODE(installed.stat().st_mode) == 0o640
    assert "# password: ${LINE1_OPCUA_PASSWORD}" in installed.read_text()  # comments are kept
    os.environ["CREDENTIALS_DIRECTORY"] = str(credential.parent)
    try:
        cfg = config_mod.load(installed)
        original = config_mod.load(tmp_path / "factory-mqtt.yaml")
    finally:
        del os.environ["CREDENTIALS_DIRECTORY"]
    assert cfg.agent.data_dir == Path("/var/lib/edge-agent")
    assert cfg.model_dump(exclude={"agent"}) == original.model_dump(exclude={"agent"})
    assert "systemctl daemon-reload && systemctl enable --now edge-agent.service" in done.stdout

    # Again (e.g. after editing the config): the header is not stacked, the earlier copy is kept.
    installed.write_text(installed.read_text() + "# edited on the gateway\n")
    again = cli("install", "-c", str(mqtt_config(tmp_path)), "--root", str(root), "--credential",
                f"mqtt={secret_file(tmp_path, 'mqtt-password')}")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert installed.read_text().count(service.HEADER_MARK) == 1
    assert (root / "etc/edge-agent/config.yaml.previous").read_text().endswith("# edited on the gateway\n")


def test_systemd_analyze_verifies_the_generated_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        unavailable("systemd-analyze is not installed (apt-get install systemd; .ci/run installs it)")
    root = tmp_path / "root"
    done = cli("install", "-c", str(mqtt_config(tmp_path)), "--root", str(root), "--credential",
               f"mqtt={secret_file(tmp_path, 'mqtt-password')}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    unit_file = root / "etc/systemd/system/edge-agent.service"
    # verify checks the directives and that ExecStart's binary exists; it does not look the user up.
    verified = subprocess.run([analyze, "verify", str(unit_file)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stderr
    complaints = [line for line in verified.stderr.splitlines() if "edge-agent.service" in line]
    assert complaints == [], verified.stderr  # an unknown key or a bad value is only a warning: none allowed
    # The check is real: a misspelt directive is reported.
    broken = tmp_path / "edge-agent.service"
    broken.write_text(unit_file.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict"))
    verified = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert "ProtectSystm" in verified.stderr


def test_a_broken_config_is_refused_with_its_own_error_and_nothing_is_written(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(DEMO.read_text(encoding="utf-8").replace("source: factory", "source: factroy", 1))
    root = tmp_path / "root"
    done = cli("install", "-c", str(broken), "--root", str(root))
    assert done.returncode == 2
    assert "configuration error" in done.stderr and "did you mean 'factory'" in done.stderr, done.stderr
    assert "nothing was installed" in done.stderr
    assert not root.exists()

    needs = mqtt_config(tmp_path)  # uses ${credential:mqtt}, not given
    done = cli("install", "-c", str(needs), "--root", str(root))
    assert done.returncode == 2 and "--credential mqtt=FILE" in done.stderr, done.stderr
    assert not root.exists()


def test_dry_run_prints_the_unit_and_writes_nothing(tmp_path: Path) -> None:
    done = cli("install", "-c", str(DEMO), "--root", str(tmp_path / "root"), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "would write" in done.stdout and "Restart=on-failure" in done.stdout
    assert not (tmp_path / "root").exists()


def test_the_units_command_runs_the_agent_and_status_reports_it(tmp_path: Path) -> None:
    """ExecStart= as written, run as systemd would: in the state directory, with the credentials directory.
    The one change: the state directory is the staging root's (the installed config's data_dir rewritten)."""
    port = free_port()
    config = tmp_path / "demo.yaml"
    config.write_text(
        DEMO.read_text(encoding="utf-8")
        + f'api:\n  port: {port}\n  users:\n    - {{name: operator, password: "${{credential:api}}"}}\n'
    )
    root = tmp_path / "root"
    done = cli("install", "-c", str(config), "--root", str(root), "--credential",
               f"api={secret_file(tmp_path, 'api-password')}")  # fmt: skip
    assert done.returncode == 0, done.stderr

    status = cli("status", "--root", str(root))
    assert status.returncode == 0, status.stderr
    assert "enabled on disk: no" in status.stdout
    assert "credential api: present" in status.stdout
    assert "config:   /etc/edge-agent/config.yaml (mode 0640)" in status.stdout
    assert "data dir: /var/lib/edge-agent (set by service install" in status.stdout
    assert "not there yet" in status.stdout and "does not answer" in status.stdout

    unit = unit_of((root / "etc/systemd/system/edge-agent.service").read_text())
    argv = service.unquote_command(unit["Service"]["ExecStart"][0])
    state = root / "var/lib/edge-agent"
    state.mkdir(parents=True)
    installed = root / "etc/edge-agent/config.yaml"
    staged = tmp_path / "staged.yaml"
    staged.write_text(installed.read_text().replace("data_dir: /var/lib/edge-agent", f"data_dir: {state}", 1))
    argv[argv.index("/etc/edge-agent/config.yaml")] = str(staged)
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(root / "etc/edge-agent/credentials")}
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=state, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/description"
        wait_until("the agent's API", lambda: _answers(url), 60)
        status = cli("status", "--root", str(root))
        assert f"{url} answers (HTTP 200)" in status.stdout, status.stdout
        assert ": running" in status.stdout, status.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=int(unit["Service"]["TimeoutStopSec"][0])) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "stopped cleanly" in text and "Traceback" not in text
    assert SECRET not in text
    assert (state / "demo-out/records.jsonl").exists()  # the relative sink path, in WorkingDirectory=
    status = cli("status", "--root", str(root))
    assert "stopped cleanly" in status.stdout, status.stdout


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def test_uninstall_removes_the_unit_and_keeps_config_and_state_unless_purged(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert cli("install", "-c", str(DEMO), "--root", str(root)).returncode == 0
    state = root / "var/lib/edge-agent"
    state.mkdir(parents=True)
    (state / "buffer-local.db").write_bytes(b"undelivered")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir()
    (wants / "edge-agent.service").symlink_to("/etc/systemd/system/edge-agent.service")
    assert "enabled on disk: yes" in cli("status", "--root", str(root)).stdout

    done = cli("uninstall", "--root", str(root))
    assert done.returncode == 0, done.stderr
    assert not (root / "etc/systemd/system/edge-agent.service").exists()
    assert not (wants / "edge-agent.service").is_symlink()
    assert (state / "buffer-local.db").exists() and (root / "etc/edge-agent/config.yaml").exists()
    assert "kept" in done.stdout and "--purge" in done.stdout
    status = cli("status", "--root", str(root))
    assert status.returncode == 3 and "not installed" in status.stdout

    done = cli("uninstall", "--root", str(root), "--purge")
    assert done.returncode == 0, done.stderr
    assert not state.exists() and not (root / "etc/edge-agent").exists()


@pytest.mark.parametrize(
    "text",
    [
        "site: {id: s}\nagent:\n  log_level: info  # keep me\n",
        "site: {id: s}\nagent: {log_level: info}\n",
        "site: {id: s}\nagent:\n  data_dir: ./data   # the old one\n  log_level: info\n",
        "site: {id: s}  # no agent block\n",
        "site: {id: s}\nagent: {data_dir: 'x y', log_level: info}\n",
    ],
)
def test_the_data_dir_is_rewritten_and_the_rest_kept(text: str) -> None:
    out, kept = service.with_data_dir(text, service.STATE_DIR)
    assert kept
    data = yaml.safe_load(out)
    assert data["agent"]["data_dir"] == "/var/lib/edge-agent"
    assert data["site"] == {"id": "s"}
    if "log_level" in text:
        assert data["agent"]["log_level"] == "info"
    for comment in ("# keep me", "# no agent block"):
        assert (comment in out) == (comment in text)
