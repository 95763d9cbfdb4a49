"""Configuration: YAML in, validated frozen models out.

Every error names the file, the line, the key path and what is allowed; an unknown key is an
error with a "did you mean" when a known key is close. Secrets are `SecretStr`, so they never
show in a repr, a log line or an error message.

One model per block in the order of docs/configuration.md, so a key is found where the docs put
it; the `sinks:` blocks are in `config_sinks.py`, the shared base in `config_base.py`, error
wording in `config_errors.py`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from aas_models.types import OPCUA_TYPES
from adapters.opcua.values import node_id_problem
from agent.config_aas import AasConfig
from agent.config_api import ApiConfig
from agent.config_base import ID_SHORT, ConfigError, LanguageTag, PlainId, Text
from agent.config_base import Model as _Model
from agent.config_control import Control, allow_problem
from agent.config_errors import KeyLines, Loc, Located, SafeLoader, Shown, format_errors, key_path, place
from agent.config_sinks import (
    HttpSinkConfig,
    MqttSinkConfig,
    SfLogSinkConfig,
    SinkConfig,
)

NODE_ID_FORMS = (
    "ns=<index>;s=<string>, or i=<number>, g=<guid> or b=<base64> in place of s= "
    "(ns= left out for namespace 0), e.g. ns=2;s=CNC01.SpindleSpeed or ns=3;i=1001"
)


def _node_id(v: str) -> str:
    """The text as written in the message (no Python quoting) and what a node id looks like."""
    if node_id_problem(v):
        raise Shown(f"not a valid OPC UA node id: {v}; a node id looks like {NODE_ID_FORMS}")
    return v


NodeId = Annotated[str, AfterValidator(_node_id)]


def _twice(places: dict[str, list[Loc]], what: str) -> list[tuple[tuple[Loc, ...], str]]:
    """One problem per value found at more than one place: every place, the value and the rule."""
    problems: list[tuple[tuple[Loc, ...], str]] = []
    for value, at in places.items():
        if len(at) > 1:
            times = "twice" if len(at) == 2 else f"{len(at)} times"
            problems.append((tuple(at), f"'{value}' is used {times}; {what}"))
    return problems


def _by_value(items: list[tuple[str, Loc]]) -> dict[str, list[Loc]]:
    out: dict[str, list[Loc]] = {}
    for value, at in items:
        out.setdefault(value, []).append(at)
    return out


class Deadband(_Model):
    type: Literal["absolute", "percent"]
    value: float = Field(ge=0)

    @model_validator(mode="after")
    def _percent_range(self) -> Deadband:
        if self.type == "percent" and self.value > 100:
            raise ValueError("a percent deadband must be between 0 and 100")
        return self


class Point(_Model):
    """One mapping: an OPC UA node to an element of the equipment's operational-data submodel."""

    node: NodeId | None = None
    browse_path: str | None = None
    path: str = Field(description="idShort path in the OperationalData submodel, dot-separated")
    type: str = Field(description="OPC UA built-in type of the node's value")
    array: bool = False
    semantic_id: str | None = None
    unit: str | None = None
    description: Text | None = None
    display_name: Text | None = None
    mode: Literal["subscribe", "poll"] = "subscribe"
    sampling_ms: float | None = Field(default=None, ge=0)
    queue_size: int = Field(default=10, ge=1, le=10000)
    deadband: Deadband | None = None
    trigger: Literal["status", "status_value", "status_value_timestamp"] = "status_value"

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        for part in v.split("."):
            if not ID_SHORT.match(part):
                raise ValueError(
                    f"idShort {part!r} in path {v!r} is not allowed: use 2 or more characters, "
                    "a letter first, then letters, digits or '_' (no '-', valid in AAS 3.0 and 3.1)"
                )
        return v

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v not in OPCUA_TYPES:
            near = difflib.get_close_matches(v, OPCUA_TYPES, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(f"unknown OPC UA type {v!r}{hint}; allowed: {', '.join(OPCUA_TYPES)}")
        return v

    @model_validator(mode="after")
    def _address(self) -> Point:
        if (self.node is None) == (self.browse_path is None):
            raise ValueError("give exactly one of 'node' (e.g. ns=2;s=CNC01.Speed) or 'browse_path'")
        return self

    @property
    def address(self) -> str:
        return self.node if self.node is not None else f"browse:{self.browse_path}"


class EventSource(_Model):
    """An object whose events (alarms) go to the event lane."""

    node: NodeId
    name: str = "alarms"
    fields: tuple[str, ...] = ("Message", "Severity", "SourceName", "Time", "EventType")


class AddressConfig(_Model):
    street: Text | None = None
    zipcode: Text | None = None
    city: Text | None = None
    country_code: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")


class NameplateConfig(_Model):
    manufacturer_name: Text
    product_designation: Text
    uri_of_product: str
    order_code: str
    serial_number: str | None = None
    year_of_construction: str | None = None
    product_family: Text | None = None
    software_version: str | None = None
    hardware_version: str | None = None
    address: AddressConfig = AddressConfig()


class AnalysisConfig(_Model):
    """Which elements carry the machine's state, alarms and counters, for the edge analysis (docs/analysis.md)."""

    state: str | None = Field(default=None, description="path of the element holding the machine state")
    running: tuple[str | int, ...] = Field(default=("RUN", 1), min_length=1, description="states that count as running")
    alarm: str | None = Field(default=None, description="path of the active alarm code (0 = none)")
    part_count: str | None = Field(default=None, description="path of the part counter")
    good_count: str | None = None
    scrap_count: str | None = None
    ideal_cycle_s: float | None = Field(default=None, gt=0, description="the ideal cycle time of one part")
    interval_s: float = Field(default=60, ge=1, description="a summary per machine this often")
    counter_modulus: int = Field(default=2**32, ge=2, description="where the counters wrap")

    @model_validator(mode="after")
    def _one_quality_counter(self) -> AnalysisConfig:
        if self.good_count is not None and self.scrap_count is not None:
            raise ValueError("give good_count or scrap_count, not both")
        return self

    def paths(self) -> dict[str, str]:
        """role -> element path, for the roles given."""
        roles = ("state", "alarm", "part_count", "good_count", "scrap_count")
        return {r: v for r in roles if (v := getattr(self, r)) is not None}


class Equipment(_Model):
    id: PlainId = Field(description="equipment id, used in topics and as the default idShort")
    name: Text | None = None
    source: str = Field(description="id of the OPC UA source this equipment is read from")
    line: str | None = Field(
        default=None, min_length=1, description="production line, for the site hierarchy; default: the source id"
    )
    aas_id: str | None = None
    asset_id: str | None = None
    id_short: str | None = None
    nameplate: NameplateConfig
    points: tuple[Point, ...] = Field(min_length=1)
    events: tuple[EventSource, ...] = ()
    analysis: AnalysisConfig | None = None

    @model_validator(mode="after")
    def _unique_paths(self) -> Equipment:
        """Each path mapped once; no path both a value and a collection (`Spindle` and `Spindle.Speed`,
        which aas_models.build refuses too, later); analysis roles name points of this equipment."""
        problems = _twice(
            _by_value([(p.path, ("points", i, "path")) for i, p in enumerate(self.points)]),
            "a path is mapped once per equipment",
        )
        problems += _twice(
            _by_value([(ev.name, ("events", i, "name")) for i, ev in enumerate(self.events)]),
            "each event source of an equipment needs its own name (its events and gaps are told apart by it)",
        )
        seen = {p.path for p in self.points}
        needed: dict[str, int] = {}  # collection path -> first point inside it
        for i, p in enumerate(self.points):
            parts = p.path.split(".")
            for depth in range(1, len(parts)):
                needed.setdefault(".".join(parts[:depth]), i)
        for i, p in enumerate(self.points):
            inner = needed.get(p.path)
            if inner is not None:
                problems.append(
                    (
                        tuple(sorted([("points", i, "path"), ("points", inner, "path")], key=lambda at: at[1])),
                        f"'{p.path}' is both a value and a collection (it holds '{self.points[inner].path}'); "
                        "a path is either one value or a collection of values: rename one of the two points",
                    )
                )
        for role, path in (self.analysis.paths() if self.analysis else {}).items():
            if path not in seen:
                near = difflib.get_close_matches(path, seen, n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                problems.append(
                    ((("analysis", role),), f"'{path}' is not the path of one of this equipment's points{hint}")
                )
        if problems:
            raise Located(problems)
        return self


class Security(_Model):
    policy: Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: Path | None = Field(default=None, description="default: the agent's own, in {data_dir}/pki/own")
    private_key: Path | None = None
    private_key_password: SecretStr | None = None
    server_certificate: Path | None = Field(default=None, description="pin: accept only this server certificate")

    @model_validator(mode="after")
    def _policy_and_mode(self) -> Security:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError(
                "policy and mode go together: both None (no security), or a policy with Sign or SignAndEncrypt"
            )
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("give both certificate and private_key, or neither (the agent's own is used)")
        return self


class Source(_Model):
    id: str
    endpoint: str = Field(pattern=r"^opc\.tcp://")
    username: str | None = None
    password: SecretStr | None = None
    allow_plaintext_password: bool = Field(
        default=False, description="send the password even where the server would not encrypt it (warned)"
    )
    user_certificate: Path | None = Field(default=None, description="X.509 user identity, instead of a user name")
    user_private_key: Path | None = None
    user_private_key_password: SecretStr | None = None
    security: Security = Security()
    publishing_interval_ms: float = Field(default=500, gt=0)
    poll_interval_ms: float = Field(default=1000, gt=0)
    timeout_s: float = Field(default=10, gt=0)
    session_timeout_s: float = Field(
        default=30, ge=1, description="how long the server keeps a session of ours that died without closing it"
    )
    reconnect_initial_s: float = Field(default=1, gt=0)
    reconnect_max_s: float = Field(default=30, gt=0)
    max_items_per_call: int | None = Field(default=None, ge=1, description="default: the server's operation limits")
    max_notifications_per_publish: int = Field(default=10000, ge=0, description="0: as many as the server sends")
    publish_requests: int = Field(
        default=3, ge=1, le=20, description="PublishRequests kept at the server, so its queue moves while we store"
    )

    @model_validator(mode="after")
    def _identity(self) -> Source:
        if (self.user_certificate is None) != (self.user_private_key is None):
            raise ValueError("give both user_certificate and user_private_key for an X.509 user identity")
        if self.user_certificate is not None and self.username is not None:
            raise ValueError("one user identity: username/password or user_certificate, not both")
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        return self


class Site(_Model):
    id: PlainId
    name: str | None = None
    aas_prefix: str = Field(
        default="urn:edge-agent", description="prefix for AAS and asset ids not given per equipment"
    )
    language: LanguageTag = Field(default="ko-KR", description="BCP 47 tag of every text given as a plain string")


class BufferConfig(_Model):
    quota_mb: float = Field(default=1024, gt=0)
    synchronous: Literal["normal", "full"] = "normal"
    min_free_mb: float = Field(default=32, ge=0, description="the buffers never grow into the disk's last MiB")
    reserve_mb: float = Field(default=16, ge=0, description="disk space kept aside for a full disk")
    protected_share: float = Field(
        default=0.1, gt=0, le=1, description="share of the quota that gap, usage, status and analysis records may take"
    )


class AgentSettings(_Model):
    data_dir: Path = Path("./data")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    status_interval_s: float = Field(default=60, gt=0)
    failure_limit: int = Field(
        default=5, ge=1, description="a component that fails this often within failure_window_s ends the process"
    )
    failure_window_s: float = Field(default=600, gt=0)
    stats_retention_days: int = Field(
        default=35, ge=1, description="how long the statistics behind `edge-agent level` are kept"
    )


class Config(_Model):
    version: Literal[1] = 1
    site: Site
    agent: AgentSettings = AgentSettings()
    buffer: BufferConfig = BufferConfig()
    sources: tuple[Source, ...] = Field(min_length=1)
    equipment: tuple[Equipment, ...] = Field(min_length=1)
    sinks: tuple[SinkConfig, ...] = Field(min_length=1)
    control: Control = Control()
    api: ApiConfig = ApiConfig()
    aas: AasConfig = AasConfig()

    @model_validator(mode="after")
    def _references(self) -> Config:
        """Unique ids (each duplicate named at every place it is used), and references that resolve."""
        problems = _twice(
            _by_value([(s.id, ("sources", i, "id")) for i, s in enumerate(self.sources)]),
            "each source needs its own id",
        )
        problems += _twice(
            _by_value([(e.id, ("equipment", i, "id")) for i, e in enumerate(self.equipment)]),
            "each equipment needs its own id",
        )
        problems += _twice(
            _by_value([(s.id, ("sinks", i, "id")) for i, s in enumerate(self.sinks)]),
            "each sink needs its own id (a sink without 'id' takes its type as id: give each sink an 'id')",
        )
        sources = {s.id for s in self.sources}
        for i, e in enumerate(self.equipment):
            if e.source not in sources:
                near = difflib.get_close_matches(e.source, sources, n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                problems.append(
                    (
                        (("equipment", i, "source"),),
                        f"source '{e.source}' is not defined{hint}; defined: {', '.join(sorted(sources))}",
                    )
                )
        points = {e.id: {p.path: p for p in e.points} for e in self.equipment}
        for i, a in enumerate(self.control.allow):
            entry = f"allow {a.machine} {a.element}"  # the entry: its machine and element
            if a.machine not in points:
                near = difflib.get_close_matches(a.machine, points, n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                problems.append(
                    (
                        (("control", "allow", i, "machine"),),
                        f"{entry}: no equipment '{a.machine}'{hint}; defined: {', '.join(sorted(points))}",
                    )
                )
                continue
            point = points[a.machine].get(a.element)
            if point is None:
                paths = points[a.machine]
                near = difflib.get_close_matches(a.element, paths, n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                problems.append(
                    (
                        (("control", "allow", i, "element"),),
                        f"{entry}: {a.machine} has no point with path '{a.element}'{hint}; "
                        f"its points: {', '.join(paths)}",
                    )
                )
                continue
            problem = allow_problem(a, point.type, point.array, point.node is not None)
            if problem:
                problems.append(((("control", "allow", i),), problem.removeprefix("control.")))
        if problems:
            raise Located(problems)
        return self

    def aas_id(self, e: Equipment) -> str:
        return e.aas_id or f"{self.site.aas_prefix}:aas:{self.site.id}:{e.id}"

    def asset_id(self, e: Equipment) -> str:
        return e.asset_id or f"{self.site.aas_prefix}:asset:{self.site.id}:{e.id}"


_REFERENCE = re.compile(r"\$\{(?:(file|credential):([^}]+)|([A-Z_][A-Z0-9_]*))\}")


def _expand_env(
    data: Any,
    file: str,
    lines: Mapping[tuple[str | int, ...], int],
    notes: list[str],
    at: tuple[str | int, ...] = (),
) -> Any:
    """Secrets need not sit in the file: in a value, `${NAME}` takes environment variable NAME,
    `${file:PATH}` the content of a file, `${credential:NAME}` systemd's credential NAME (the file
    `$CREDENTIALS_DIRECTORY/NAME`). A trailing newline of a file is dropped."""
    if isinstance(data, dict):
        return {k: _expand_env(v, file, lines, notes, (*at, str(k))) for k, v in data.items()}
    if isinstance(data, list):
        return [_expand_env(v, file, lines, notes, (*at, i)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def fail(problem: str) -> ConfigError:
        return ConfigError(f"{place(file, at, lines)}: {problem}")

    def sub(m: re.Match[str]) -> str:
        kind, ref, name = m.group(1), m.group(2), m.group(3)
        if name is not None:
            if name not in os.environ:
                raise fail(f"environment variable {name} is used but not set")
            return os.environ[name]
        if kind == "credential":
            directory = os.environ.get("CREDENTIALS_DIRECTORY")
            if not directory:
                raise fail(f"credential {ref} is used but CREDENTIALS_DIRECTORY is not set (systemd LoadCredential=)")
            path = Path(directory) / ref
        else:
            path = Path(ref)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise fail(f"cannot read the secret file {path}: {e.strerror}") from None
        if path.stat().st_mode & 0o077:
            notes.append(f"{file}: {key_path(at)}: the secret file {path} can be read by others than its owner")
        notes.append(_SECRET_REFERENCED)
        return text.removesuffix("\n")

    return _REFERENCE.sub(sub, data)


_SECRET_REFERENCED = ""  # a note without text: a secret came from a file, not from the config itself


def load(path: str | Path) -> Config:
    """Read and validate a config file; raises ConfigError with every problem found."""
    return load_noting(path)[0]


def load_noting(path: str | Path) -> tuple[Config, list[str]]:
    """`load`, and warnings for the person who runs it (secrets readable by others)."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
        mode = Path(path).stat().st_mode
    except OSError as e:
        raise ConfigError(f"{file}: cannot read: {e.strerror}") from None
    notes: list[str] = []
    cfg = parse(text, file, notes)
    if mode & 0o004 and any(secret in text for secret in secrets(cfg)):
        notes.append(f"{file} holds a password or passphrase and can be read by every user: chmod 600 it")
    return cfg, [n for n in notes if n]


def secrets(cfg: Config) -> list[str]:
    """Every secret in the config, for the log filter that masks them (and the checks that look for them)."""
    found = [s.password for s in cfg.sources]
    found += [s.user_private_key_password for s in cfg.sources]
    found += [s.security.private_key_password for s in cfg.sources]
    found += [s.password for s in cfg.sinks if isinstance(s, MqttSinkConfig)]
    found += [s.token for s in cfg.sinks if isinstance(s, HttpSinkConfig)]
    found += [s.crtfc_key for s in cfg.sinks if isinstance(s, SfLogSinkConfig)]
    found += [cfg.control.token]
    found += [u.password for u in cfg.api.users]
    found += [
        s.tls.key_password for s in cfg.sinks if isinstance(s, MqttSinkConfig | HttpSinkConfig) and s.tls is not None
    ]
    return [v.get_secret_value() for v in found if v is not None]


def parse(text: str, file: str = "<config>", notes: list[str] | None = None) -> Config:
    lines = KeyLines(text)
    try:
        data = yaml.load(text, Loader=SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else file
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a mapping with site, sources, equipment and sinks")
    data = _expand_env(data, file, lines, notes if notes is not None else [])
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(Config, file, e, lines, data)) from None


__all__ = ["Config", "ConfigError", "Equipment", "Point", "Source", "load", "load_noting", "parse", "secrets"]
