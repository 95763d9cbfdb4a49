"""`edge-agent service install|uninstall|status`: the agent as a systemd service, for the person who
installs a gateway (docs/operations.md, "Running as a service"). The unit and the paths are in
agent/service.py; this module checks, writes files and runs useradd and systemctl.

`--root DIR` writes everything under a staging root and runs nothing (image builders, tests, a machine
without systemd); `--dry-run` writes nothing and prints what it would write and run.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

import click
import yaml

from agent import config as config_mod
from agent import service
from agent.config_sinks import FileSinkConfig
from agent.runstate import RunState

SYSTEMD_RUNNING = Path("/run/systemd/system")

_ROOT = click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="staging root: every path is taken inside DIR, and nothing is run (image builds, tests)",
)
_UNIT_DIR = click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=PurePosixPath),
    default=service.UNIT_DIR,
    show_default=True,
    help="where the unit file goes",
)


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _systemd(root: Path | None) -> bool:
    """systemctl can be used: systemd runs this machine, and the files are this machine's."""
    return root is None and SYSTEMD_RUNNING.is_dir() and shutil.which("systemctl") is not None


def _run(argv: Sequence[str], dry_run: bool) -> None:
    click.echo(f"{'would run' if dry_run else 'running'}: {' '.join(argv)}")
    if dry_run:
        return
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        _fail(f"{argv[0]} failed (exit status {done.returncode}): {done.stderr.strip() or done.stdout.strip()}", 1)


@click.group("service")
def service_group() -> None:
    """Run the agent as a systemd service: install, uninstall, status."""


# --- install -----------------------------------------------------------------------------------------


@dataclass
class _File:
    target: PurePosixPath  # the path on the machine that runs the service
    content: bytes | None  # None: a directory
    mode: int
    group: str  # owner is root

    def describe(self) -> str:
        kind = "directory" if self.content is None else "file"
        return f"{kind}, mode {self.mode:04o}, root:{self.group}"


def _credentials(given: Sequence[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for item in given:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            _fail(f"--credential {item!r}: expected NAME=FILE, e.g. --credential plc=/root/plc-password")
        if not service.CREDENTIAL_NAME.fullmatch(name):
            _fail(f"--credential {name!r}: a name has letters, digits, '_', '.' and '-' only")
        if name in found:
            _fail(f"--credential {name} is given twice")
        path = Path(file)
        if not path.is_file() or not os.access(path, os.R_OK):
            _fail(f"--credential {name}: cannot read the file {path}")
        found[name] = path.absolute()
    return found


@contextmanager
def _credentials_directory(credentials: dict[str, Path]) -> Iterator[None]:
    """$CREDENTIALS_DIRECTORY as systemd will give it, for checking the config (copies, 0600, removed after)."""
    before = os.environ.get("CREDENTIALS_DIRECTORY")
    with tempfile.TemporaryDirectory(prefix="edge-agent-credentials-") as directory:
        for name, path in credentials.items():
            copy = Path(directory) / name
            copy.write_bytes(path.read_bytes())
            copy.chmod(0o600)
        os.environ["CREDENTIALS_DIRECTORY"] = directory
        try:
            yield
        finally:
            if before is None:
                del os.environ["CREDENTIALS_DIRECTORY"]
            else:
                os.environ["CREDENTIALS_DIRECTORY"] = before


def _check(config_path: Path, credentials: dict[str, Path]) -> tuple[config_mod.Config, list[str]]:
    """What `edge-agent check` checks; the config's own error, and exit status 2, when it fails."""
    from agent.shells import build_shells

    with _credentials_directory(credentials):
        try:
            cfg, notes = config_mod.load_noting(config_path)
            build_shells(cfg)
        except config_mod.ConfigError as e:
            _fail(f"configuration error:\n{e}\nnothing was installed")
        except ValueError as e:
            _fail(f"configuration error: {e}\nnothing was installed")
    return cfg, notes


def _sandbox_notes(cfg: config_mod.Config, refs: service.References) -> tuple[list[PurePosixPath], list[str]]:
    """Directories beyond the state directory the service must write (file sinks), and what would not
    work as configured under the unit's sandbox."""
    notes: list[str] = []
    writable: list[PurePosixPath] = []
    written: set[Path] = set()
    for s in cfg.sinks:
        if not isinstance(s, FileSinkConfig):
            continue
        written.add(s.path)
        if not s.path.is_absolute():
            click.echo(f"note: sink {s.id!r} writes {service.STATE_DIR / s.path} (a relative path: WorkingDirectory=)")
        elif service.STATE_DIR not in PurePosixPath(s.path).parents:
            parent = PurePosixPath(s.path).parent
            writable.append(parent)
            notes.append(f"sink {s.id!r} writes {s.path}: {parent} must exist and be writable by the service user")
    for p in service.leaves(cfg.model_dump(exclude={"agent"})):
        if not isinstance(p, Path) or p in written:
            continue
        if not p.is_absolute():
            notes.append(f"{p} is a relative path: the service looks for it in {service.STATE_DIR}; make it absolute")
        elif (setting := service.hidden_by(PurePosixPath(p))) is not None:
            notes.append(f"{p}: the service cannot see it ({setting}); move it, e.g. to {service.CONFIG_DIR}")
    for f in sorted(refs.files):
        if (setting := service.hidden_by(PurePosixPath(f))) is not None:
            notes.append(
                f"${{file:{f}}}: the service cannot see it ({setting}); use ${{credential:…}} and --credential"
            )
    if refs.environment:
        names = ", ".join(sorted(refs.environment))
        notes.append(
            f"the config takes {names} from the environment, and a service has none of your shell's: put "
            f"NAME=value lines in {service.ENVIRONMENT_FILE} (chmod 600; the unit reads it), or better use "
            "${credential:NAME} with --credential NAME=FILE"
        )
    return writable, notes


def _code_notes(command: Sequence[str]) -> tuple[str, list[str]]:
    """ProtectHome= for the agent's own files, and why the service user might not be able to run them."""
    import agent

    places = [Path(command[0]), Path(sys.executable), Path(agent.__file__).parent, Path(os.__file__)]
    protect_home = "yes"
    notes: list[str] = []
    for p in places:
        real = p.resolve()
        if service.hidden_by(PurePosixPath(real)) == "ProtectHome=" and protect_home == "yes":
            protect_home = "read-only"
            notes.append(f"{real} is under a home directory: the unit has ProtectHome=read-only instead of yes")
        if (why := service.blocked_for_others(real)) is not None:
            notes.append(
                f"the service user may not be able to run the agent: {why}. Install the agent where every "
                "user can read it, e.g. under /opt/edge-agent (docs/operations.md)"
            )
    return protect_home, list(dict.fromkeys(notes))


def _nologin() -> str:
    return next((s for s in ("/usr/sbin/nologin", "/sbin/nologin") if Path(s).exists()), "/bin/false")


def _useradd(user: str) -> list[str]:
    return [
        "useradd",
        "--system",
        "--user-group",
        "--home-dir",
        str(service.STATE_DIR),
        "--no-create-home",
        "--shell",
        _nologin(),
        user,
    ]


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _write(root: Path, f: _File, chown: bool) -> None:
    path = service.at(root, f.target)
    if f.content is None:
        path.mkdir(parents=True, exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, f.content)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    os.chmod(path, f.mode)
    if chown:
        shutil.chown(path, "root", f.group)


def _service_user_can_run(command: Sequence[str], user: str) -> str | None:
    """Run `edge-agent --help` as the service user: None if it works, else what it said."""
    try:
        done = subprocess.run(
            [*command, "--help"], user=user, group=user, extra_groups=[], cwd="/", capture_output=True, text=True
        )
    except OSError as e:
        return e.strerror
    lines = (done.stderr or done.stdout).strip().splitlines()
    return None if done.returncode == 0 else (lines[-1] if lines else f"exit status {done.returncode}")


@service_group.command("install")
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--user", default=service.NAME, show_default=True, help="the unprivileged user the agent runs as")
@_UNIT_DIR
@click.option(
    "--credential",
    "credential_args",
    multiple=True,
    metavar="NAME=FILE",
    help="a secret file for ${credential:NAME} (repeatable); copied to /etc/edge-agent/credentials/NAME",
)
@_ROOT
@click.option("--dry-run", is_flag=True, help="write nothing and run nothing: print what would be done")
def install_command(
    config_path: Path,
    user: str,
    unit_dir: PurePosixPath,
    credential_args: tuple[str, ...],
    root: Path | None,
    dry_run: bool,
) -> None:
    """Check the config, install it and a systemd unit, create the user, enable and start the service.

    The installed copy is /etc/edge-agent/config.yaml with agent.data_dir set to /var/lib/edge-agent.
    Exit status: 0 installed, 1 a system command failed, 2 refused (nothing written).
    """
    if not service.USER_NAME.fullmatch(user) or user == "root":
        _fail(f"--user {user!r}: give an unprivileged user's name, e.g. {service.NAME}")
    if not unit_dir.is_absolute():
        _fail(f"--unit-dir {unit_dir}: give an absolute path")
    if root is None and not dry_run and os.geteuid() != 0:
        _fail("installing a service needs root: sudo edge-agent service install … (or --dry-run, or --root DIR)")
    credentials = _credentials(credential_args)
    try:
        text = config_path.read_text(encoding="utf-8")
        refs = service.references(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        _check(config_path, credentials)  # says what is wrong with the file, in the config's own words
        _fail(f"{config_path}: cannot read it\nnothing was installed")
    missing = sorted(refs.credentials - credentials.keys())
    if missing:
        _fail(
            "the config uses "
            + ", ".join(f"${{credential:{n}}}" for n in missing)
            + ": give "
            + " ".join(f"--credential {n}=FILE" for n in missing)
            + "\nnothing was installed"
        )
    cfg, notes = _check(config_path, credentials)
    for name in sorted(credentials.keys() - refs.credentials):
        _warn(f"--credential {name}: the config does not use ${{credential:{name}}}")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    installed, kept = service.installed_config(text, config_path.absolute(), when)
    with _credentials_directory(credentials):
        try:
            check = config_mod.parse(installed, str(service.CONFIG_FILE))
        except config_mod.ConfigError as e:  # pragma: no cover - an edit that broke the file is a bug
            _fail(f"the installed copy of the config would not load (a bug; nothing was installed):\n{e}")
    if check.agent.data_dir != Path(service.STATE_DIR):  # pragma: no cover - as above
        _fail(f"the installed copy of the config has data_dir {check.agent.data_dir} (a bug; nothing was installed)")

    writable, sandbox = _sandbox_notes(cfg, refs)
    command = service.agent_command()
    protect_home, code = _code_notes(command)
    unit = service.Unit(
        user=user,
        command=command,
        description=f"Edge agent for site {cfg.site.id}: OPC UA -> AAS -> buffer -> cloud",
        credentials={name: service.CREDENTIALS_DIR / name for name in credentials},
        stop_timeout_s=service.stop_timeout_s(len(cfg.sinks)),
        read_write=writable,
        protect_home=protect_home,
    )
    files = [
        _File(service.CONFIG_DIR, None, 0o750, user),
        _File(service.CONFIG_FILE, installed.encode(), 0o640, user),
    ]
    if credentials:
        files.append(_File(service.CREDENTIALS_DIR, None, 0o700, "root"))
        files += [_File(service.CREDENTIALS_DIR / n, p.read_bytes(), 0o600, "root") for n, p in credentials.items()]
    files.append(_File(unit_dir / service.UNIT_NAME, unit.render().encode(), 0o644, "root"))

    for note in [*notes, *sandbox, *code]:
        _warn(note)
    if not kept:
        _warn(f"{service.CONFIG_FILE} is written anew from the YAML: the original's comments are not in it")
    old = cfg.agent.data_dir
    if old.resolve() != Path(service.STATE_DIR) and any(old.glob("buffer-*.db")):
        _warn(
            f"{old.resolve()} holds buffers of an earlier run; the service uses {service.STATE_DIR}: to keep "
            f"undelivered records, move the files there (agent stopped) and chown -R {user}: {service.STATE_DIR}"
        )

    place = root if root is not None else Path("/")
    if dry_run:
        for f in files:
            click.echo(f"would write {service.at(place, f.target)} ({f.describe()})")
        click.echo(f"--- {unit_dir / service.UNIT_NAME}\n{unit.render()}---")
    systemd = _systemd(root)
    user_missing = root is not None or not _user_exists(user)
    if root is None:
        if user_missing:
            _run(_useradd(user), dry_run)
        if not dry_run and (why := _service_user_can_run(command, user)) is not None:
            _fail(
                f"the user {user} cannot run {command[0]}: {why}\nInstall the agent where every user can read it "
                "(e.g. /opt/edge-agent) and run this command from there; nothing else was installed",
                1,
            )
    if not dry_run:
        backup = service.at(place, service.CONFIG_FILE)
        if backup.is_file() and backup.read_bytes() != installed.encode():
            shutil.copy2(backup, backup.with_name(backup.name + ".previous"))
            click.echo(f"kept the config installed before as {service.CONFIG_FILE}.previous")
        for f in files:
            _write(place, f, chown=root is None)
            click.echo(f"wrote {service.at(place, f.target)} ({f.describe()})")
    click.echo(f"the service runs: {service.command_line(unit.exec_start())} (as {user})")
    click.echo(f"its data directory: {service.STATE_DIR} (agent.data_dir in {service.CONFIG_FILE})")
    enable = [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", service.UNIT_NAME],
    ]
    if systemd:
        was_active = (
            subprocess.run(["systemctl", "is-active", "--quiet", service.UNIT_NAME], check=False).returncode == 0
        )
        for argv in enable:
            _run(argv, dry_run)
        if was_active:
            _run(["systemctl", "restart", service.UNIT_NAME], dry_run)
        if not dry_run:
            click.echo(f"installed. Follow it with: journalctl -u {service.NAME} -f")
        return
    if root is None:
        click.echo("systemd is not running here (no /run/systemd/system).")
    click.echo("on the target, as root, run:")
    if root is not None:
        click.echo(f"  id {user} >/dev/null 2>&1 || {' '.join(_useradd(user))}")
        click.echo(f"  chown root:{user} {service.CONFIG_DIR} {service.CONFIG_FILE}")
    click.echo(f"  {' && '.join(' '.join(a) for a in enable)}")
    if root is not None:
        click.echo(f"(an image build can enable it offline: systemctl --root={root} enable {service.UNIT_NAME})")


# --- uninstall ---------------------------------------------------------------------------------------


@service_group.command("uninstall")
@_UNIT_DIR
@_ROOT
@click.option("--purge", is_flag=True, help=f"also delete {service.CONFIG_DIR} and {service.STATE_DIR}")
@click.option("--dry-run", is_flag=True, help="delete nothing and run nothing: print what would be done")
def uninstall_command(unit_dir: PurePosixPath, root: Path | None, purge: bool, dry_run: bool) -> None:
    """Stop and disable the service and remove its unit; the config and the data directory stay unless --purge."""
    if root is None and not dry_run and os.geteuid() != 0:
        _fail("removing a service needs root: sudo edge-agent service uninstall … (or --dry-run)")
    place = root if root is not None else Path("/")
    unit_file = service.at(place, unit_dir / service.UNIT_NAME)
    verb = "would remove" if dry_run else "removed"
    if _systemd(root):
        if unit_file.exists():
            _run(["systemctl", "disable", "--now", service.UNIT_NAME], dry_run)
    elif root is None:
        click.echo(f"systemd is not running here: if the agent runs, stop it first ({service.STATE_DIR}/agent.lock)")
    link = service.at(place, unit_dir / f"{service.WANTED_BY}.wants" / service.UNIT_NAME)
    for path in (link, unit_file):
        if path.is_symlink() or path.exists():
            if not dry_run:
                path.unlink()
            click.echo(f"{verb} {path}")
    if _systemd(root):
        _run(["systemctl", "daemon-reload"], dry_run)
    for target in (service.CONFIG_DIR, service.STATE_DIR):
        path = service.at(place, target)
        if not path.exists():
            continue
        if purge:
            if not dry_run:
                shutil.rmtree(path)
            click.echo(f"{verb} {path}")
        else:
            what = "undelivered records, certificates" if target == service.STATE_DIR else "the config, credentials"
            click.echo(f"kept {path} ({what}); --purge deletes it")


# --- status ------------------------------------------------------------------------------------------


def _systemctl(*args: str) -> str:
    done = subprocess.run(["systemctl", *args, service.UNIT_NAME], capture_output=True, text=True, check=False)
    return done.stdout.strip() or done.stderr.strip() or f"exit status {done.returncode}"


def _config_of(unit: dict[str, list[tuple[str, str]]]) -> PurePosixPath:
    exec_start = next((v for k, v in unit.get("Service", []) if k == "ExecStart"), "")
    words = service.unquote_command(exec_start)
    for flag in ("-c", "--config"):
        if flag in words[:-1]:
            return PurePosixPath(words[words.index(flag) + 1])
    return service.CONFIG_FILE


def _api_answer(host: str, port: int) -> str:
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(host, host)
    if ":" in target and not target.startswith("["):
        target = f"[{target}]"
    url = f"http://{target}:{port}/description"
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return f"{url} answers (HTTP {answer.status})"
    except urllib.error.HTTPError as e:
        return f"{url} answers (HTTP {e.code})"
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return f"{url} does not answer ({reason}): the agent is not running, or still starting"


def _heartbeat(data_dir: Path) -> str:
    state = data_dir / "agent-state.json"
    if not state.exists():
        try:
            present = data_dir.is_dir()
        except OSError:
            present = True
        return "no heartbeat yet: the agent has not run" if present else "not there yet (made at the first start)"
    previous = RunState(state).load()
    if previous is None:
        return f"cannot read {state} (run as root to see it)"
    ago = (datetime.now(UTC) - previous.last_alive).total_seconds()
    how = "stopped cleanly" if previous.clean else ("running" if ago < 5 else "did not stop cleanly (crash or kill)")
    return f"last alive {previous.last_alive.astimezone():%Y-%m-%d %H:%M:%S %Z} ({ago:.0f} s ago): {how}"


@service_group.command("status")
@_UNIT_DIR
@_ROOT
def status_command(unit_dir: PurePosixPath, root: Path | None) -> None:
    """What is installed and whether it runs: unit, enabled/active, config, data directory, local API.

    Exit status: 0 installed, 3 no unit file.
    """
    from agent.config_api import ApiConfig

    place = root if root is not None else Path("/")
    unit_path = unit_dir / service.UNIT_NAME
    unit_file = service.at(place, unit_path)
    if not unit_file.is_file():
        click.echo(f"unit:     {unit_path}: not installed (edge-agent service install -c CONFIG)")
        sys.exit(3)
    unit = service.read_unit(unit_file.read_text(encoding="utf-8"))
    directives = dict(unit.get("Service", []))
    click.echo(f"unit:     {unit_file}")
    if _systemd(root):
        click.echo(f"  enabled: {_systemctl('is-enabled')}; active: {_systemctl('is-active')}")
    else:
        link = service.at(place, unit_dir / f"{service.WANTED_BY}.wants" / service.UNIT_NAME)
        enabled = "yes" if link.is_symlink() or link.exists() else f"no (no link in {link.parent})"
        click.echo(f"  systemd is not running {'for this root' if root else 'here'}: enabled on disk: {enabled}")
    click.echo(f"  runs:    {directives.get('ExecStart', '?')} (user {directives.get('User', '?')})")
    creds = [v.partition(":")[0] for k, v in unit.get("Service", []) if k == "LoadCredential"]
    for name in creds:
        present = service.at(place, service.CREDENTIALS_DIR / name).exists()
        click.echo(f"  credential {name}: {'present' if present else 'MISSING'} ({service.CREDENTIALS_DIR / name})")
    config_target = _config_of(unit)
    config_file = service.at(place, config_target)
    try:
        raw = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        mode = config_file.stat().st_mode & 0o777
    except (OSError, yaml.YAMLError) as e:
        click.echo(f"config:   {config_target}: cannot read it ({getattr(e, 'strerror', None) or e})")
        return
    click.echo(f"config:   {config_target} (mode {mode:04o})")
    raw = raw if isinstance(raw, dict) else {}
    agent: dict[str, Any] = raw["agent"] if isinstance(raw.get("agent"), dict) else {}
    data_dir = PurePosixPath(str(agent.get("data_dir", config_mod.AgentSettings().data_dir)))
    how = "set by service install: StateDirectory=" if data_dir == service.STATE_DIR else "as the config says"
    click.echo(f"data dir: {data_dir} ({how})")
    inside = service.at(place, data_dir) if data_dir.is_absolute() else service.at(place, service.STATE_DIR) / data_dir
    click.echo(f"  {_heartbeat(inside)}")
    api: dict[str, Any] = raw["api"] if isinstance(raw.get("api"), dict) else {}
    defaults = ApiConfig()
    if not api.get("enabled", defaults.enabled):
        click.echo("API:      disabled in the config")
        return
    host, port = str(api.get("host", defaults.host)), api.get("port", defaults.port)
    if not isinstance(port, int):
        click.echo(f"API:      port {port!r} in the config is not a number")
        return
    click.echo(f"API:      {_api_answer(host, port)}")
