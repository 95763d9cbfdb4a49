"""The agent as a systemd service: the unit, the installed copy of the config, and what is on disk.

`edge-agent service install|uninstall|status` (agent/cli_service.py) uses these; nothing here runs a
command or touches the system, so tests and image builders can generate everything into a staging root.

Where things go (docs/operations.md, "Running as a service"):

| what | where | mode |
|---|---|---|
| the unit | `/etc/systemd/system/edge-agent.service` | 0644 root:root |
| the config (installed copy) | `/etc/edge-agent/config.yaml`, its `agent.data_dir` rewritten | 0640 root:<user> |
| secrets (`--credential NAME=FILE`) | `/etc/edge-agent/credentials/NAME`, for `LoadCredential=` | 0600 root:root |
| optional environment (`${NAME}`) | `/etc/edge-agent/environment` (`NAME=value` lines) | 0600 root:root |
| the data directory | `/var/lib/edge-agent` (`StateDirectory=`: systemd makes it, owned by the user) | 0700 |
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

NAME = "edge-agent"
UNIT_NAME = f"{NAME}.service"
UNIT_DIR = PurePosixPath("/etc/systemd/system")
CONFIG_DIR = PurePosixPath("/etc/edge-agent")
CONFIG_FILE = CONFIG_DIR / "config.yaml"
CREDENTIALS_DIR = CONFIG_DIR / "credentials"
ENVIRONMENT_FILE = CONFIG_DIR / "environment"
STATE_DIR = PurePosixPath("/var/lib/edge-agent")
WANTED_BY = "multi-user.target"
RESTART_SEC = 10
HEADER_MARK = "# Installed by `edge-agent service install`"

# Where ProtectHome= and PrivateTmp= hide files from the service.
HIDDEN = {
    PurePosixPath("/home"): "ProtectHome=",
    PurePosixPath("/root"): "ProtectHome=",
    PurePosixPath("/run/user"): "ProtectHome=",
    PurePosixPath("/tmp"): "PrivateTmp=",
    PurePosixPath("/var/tmp"): "PrivateTmp=",
}

USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")
CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")
_CREDENTIAL_REF = re.compile(r"\$\{credential:([^}]+)\}")
_FILE_REF = re.compile(r"\$\{file:([^}]+)\}")
_ENV_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


def at(root: Path, target: PurePosixPath) -> Path:
    """`target` (a path on the machine the service runs on) inside the staging root `root`."""
    return root.joinpath(*target.parts[1:])


def stop_timeout_s(sinks: int) -> int:
    """TimeoutStopSec for a clean stop (agent/app.py `_shutdown`): sources close their sessions (2 s,
    together), then each sink's forwarder drains for up to 5 s and each MQTT client publishes `offline`
    and disconnects (2 + 2 s), one sink after another; 30 s on top for the flush and closing SQLite."""
    return 30 + 10 * max(1, sinks)


@dataclass(frozen=True)
class References:
    """What a config takes from outside itself: `${credential:…}`, `${file:…}` and `${NAME}`."""

    credentials: frozenset[str]
    files: frozenset[str]
    environment: frozenset[str]


def references(text: str) -> References:
    """The references in the config's values (not in its comments)."""
    creds: set[str] = set()
    files: set[str] = set()
    env: set[str] = set()
    for value in leaves(yaml.safe_load(text)):
        if not isinstance(value, str):
            continue
        creds.update(_CREDENTIAL_REF.findall(value))
        files.update(_FILE_REF.findall(value))
        env.update(_ENV_REF.findall(value))
    return References(frozenset(creds), frozenset(files), frozenset(env))


def leaves(data: Any) -> Iterator[object]:
    """Every value in nested dicts, lists and tuples that is none of them."""
    if isinstance(data, dict):
        for v in data.values():
            yield from leaves(v)
    elif isinstance(data, list | tuple):
        for v in data:
            yield from leaves(v)
    else:
        yield data


def with_data_dir(text: str, data_dir: PurePosixPath) -> tuple[str, bool]:
    """The config text with `agent.data_dir` set to `data_dir`, comments and layout kept where the YAML
    allows a targeted edit; (text, False) when it had to be written anew (comments lost)."""
    value = str(data_dir) if re.fullmatch(r"[A-Za-z0-9_./-]+", str(data_dir)) else json.dumps(str(data_dir))
    edited = _edit_data_dir(text, value)
    if edited is not None and _data_dir_of(edited) == str(data_dir):
        return edited, True
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("the top level is not a mapping")
    agent = data.get("agent")
    data["agent"] = {**(agent if isinstance(agent, dict) else {}), "data_dir": str(data_dir)}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True), False


def _data_dir_of(text: str) -> str | None:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    agent: object = data.get("agent") if isinstance(data, dict) else None
    return str(agent["data_dir"]) if isinstance(agent, dict) and "data_dir" in agent else None


def _child(node: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return k, v
    return None


def _edit_data_dir(text: str, value: str) -> str | None:
    try:
        top = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if not isinstance(top, yaml.MappingNode):
        return None
    agent = _child(top, "agent")
    if agent is None:
        return text.rstrip("\n") + f"\nagent:\n  data_dir: {value}\n"
    node = agent[1]
    if not isinstance(node, yaml.MappingNode):
        return None
    found = _child(node, "data_dir")
    if found is not None:
        start, end = found[1].start_mark.index, found[1].end_mark.index
        return text[:start] + value + text[end:]
    if node.flow_style:
        brace = node.start_mark.index + 1
        return text[:brace] + f"data_dir: {value}, " + text[brace:]
    if not node.value:
        return None
    first: yaml.Mark = node.value[0][0].start_mark
    index, column = int(first.index), int(first.column)
    return text[:index] + f"data_dir: {value}\n" + " " * column + text[index:]


def installed_config(text: str, source: Path, when: str) -> tuple[str, bool]:
    """The copy of the config for /etc/edge-agent: a header saying where it came from, `agent.data_dir`
    pointed at the state directory. A header of an earlier install is replaced, not stacked."""
    lines = text.splitlines(keepends=True)
    if lines and lines[0].startswith(HEADER_MARK):
        text = "".join(lines[3:])
    body, kept = with_data_dir(text, STATE_DIR)
    header = (
        f"{HEADER_MARK} from {source} ({when}).\n"
        f"# agent.data_dir is set to {STATE_DIR}: the unit's StateDirectory=, made and owned by systemd.\n"
        f"# Edit this file, then: systemctl restart {NAME}\n"
    )
    return header + body, kept


def _quote(arg: str) -> str:
    """One word of a systemd command line: `%` and `$` escaped, quoted when it holds blanks or quotes."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_./:=@+,-]+", escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def command_line(argv: Sequence[str]) -> str:
    return " ".join(_quote(a) for a in argv)


def agent_command() -> list[str]:
    """This installation's `edge-agent`: the console script beside the running interpreter (one venv),
    else that interpreter with `-m agent.cli`. Absolute, not resolved: a venv works through its own path."""
    python = Path(os.path.abspath(sys.executable))
    script = python.parent / NAME
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(python), "-m", "agent.cli"]


def blocked_for_others(path: Path) -> str | None:
    """Why a user who is neither owner nor in the group cannot reach `path` (a directory on the way
    without o+x, or the file without o+r), or None. The service user is such a user."""
    path = path.resolve()
    for p in [*reversed(path.parents), path]:
        try:
            mode = p.stat().st_mode
        except OSError as e:
            return f"{p}: {e.strerror}"
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return f"{p} is mode {stat.S_IMODE(mode):04o}: others cannot enter it"
        if not stat.S_ISDIR(mode) and not mode & stat.S_IROTH:
            return f"{p} is mode {stat.S_IMODE(mode):04o}: others cannot read it"
    return None


def hidden_by(path: PurePosixPath) -> str | None:
    """The sandbox setting that hides `path` from the service, if any."""
    for top, setting in HIDDEN.items():
        if path == top or top in path.parents:
            return setting
    return None


@dataclass
class Unit:
    user: str
    command: list[str]  # the agent's command, without `run -c CONFIG`
    description: str
    credentials: dict[str, PurePosixPath] = field(default_factory=dict)  # name -> file on the target
    stop_timeout_s: int = 60
    read_write: list[PurePosixPath] = field(default_factory=list)  # beyond the state directory
    protect_home: str = "yes"

    def exec_start(self) -> list[str]:
        return [*self.command, "run", "-c", str(CONFIG_FILE)]

    def render(self) -> str:
        credentials = "".join(f"LoadCredential={n}:{p}\n" for n, p in sorted(self.credentials.items()))
        read_write = "".join(f"ReadWritePaths=-{p}\n" for p in self.read_write)
        return f"""\
# Written by `edge-agent service install`; `edge-agent service status` says what runs.
# Changes are overwritten by the next install: put them in a drop-in (systemctl edit {NAME}).
[Unit]
Description={self.description}
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
User={self.user}
Group={self.user}
ExecStart={command_line(self.exec_start())}
# systemctl reload: re-read the config and apply what changed, without losing a value (agent/reload.py).
ExecReload=/bin/kill -HUP $MAINPID
WorkingDirectory={STATE_DIR}
SyslogIdentifier={NAME}
# /var/lib/edge-agent: made by systemd, owned by {self.user}; the installed config's agent.data_dir.
StateDirectory={NAME}
StateDirectoryMode=0700
UMask=0077
# Secrets: ${{credential:NAME}} in the config reads $CREDENTIALS_DIRECTORY/NAME.
{credentials}EnvironmentFile=-{ENVIRONMENT_FILE}
Restart=on-failure
RestartSec={RESTART_SEC}
# A clean stop flushes and drains every sink's buffer (docs/operations.md).
KillSignal=SIGTERM
TimeoutStopSec={self.stop_timeout_s}

# Sandbox: the agent writes only its data directory (buffers, PKI, heartbeat) and logs to the journal.
NoNewPrivileges=yes
ProtectSystem=strict
{read_write}ProtectHome={self.protect_home}
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
CapabilityBoundingSet=
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM

[Install]
WantedBy={WANTED_BY}
"""


def read_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file's directives by section, in order (a key may repeat, e.g. LoadCredential=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


def unquote_command(line: str) -> list[str]:
    """The words of an ExecStart= line as `command_line` writes them."""
    words: list[str] = []
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"|(\S+)', line):
        word = re.sub(r"\\(.)", r"\1", m.group(1)) if m.group(1) is not None else m.group(2)
        words.append(word.replace("$$", "$").replace("%%", "%"))
    return words
