"""Config validation: clear messages naming file, line, key path and what is allowed; no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load, parse

GOOD = """\
site:
  id: plant-1
sources:
  - id: plc1
    endpoint: opc.tcp://127.0.0.1:4840/
    username: op
    password: hunter2-secret
equipment:
  - id: cnc01
    source: plc1
    nameplate:
      manufacturer_name: Doosan
      product_designation: DNM 5700
      uri_of_product: https://example.com/dnm5700
      order_code: DNM-5700-01
    points:
      - node: ns=2;s=CNC01.SpindleSpeed
        path: Spindle.Speed
        type: Double
        unit: rpm
        sampling_ms: 100
        deadband: {type: percent, value: 2}
sinks:
  - type: mqtt
    host: 127.0.0.1
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_a_good_config_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, GOOD))
    point = cfg.equipment[0].points[0]
    assert point.deadband is not None and point.deadband.type == "percent"
    assert cfg.sinks[0].type == "mqtt" and cfg.sinks[0].port == 1883
    assert cfg.aas_id(cfg.equipment[0]) == "urn:edge-agent:aas:plant-1:cnc01"
    assert "hunter2" not in repr(cfg)


def test_typo_in_a_key_names_line_path_and_suggests(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("        unit: rpm", "        unti: rpm"))
    with pytest.raises(ConfigError) as err:
        load(p)
    msg = str(err.value)
    assert f"{p}:20:" in msg
    assert "equipment[0].points[0].unti" in msg
    assert "did you mean 'unit'" in msg


def test_wrong_value_type_names_key_and_value(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("sampling_ms: 100", "sampling_ms: fast"))
    with pytest.raises(ConfigError) as err:
        load(p)
    msg = str(err.value)
    assert "equipment[0].points[0].sampling_ms" in msg
    assert "'fast'" in msg and ":21:" in msg


def test_unknown_opcua_type_lists_allowed_types() -> None:
    with pytest.raises(ConfigError) as err:
        parse(GOOD.replace("type: Double", "type: Dubble"), "x.yaml")
    msg = str(err.value)
    assert "did you mean 'Double'" in msg and "UInt64" in msg


def test_bad_idshort_and_unknown_source_are_explained() -> None:
    with pytest.raises(ConfigError) as err:
        parse(GOOD.replace("path: Spindle.Speed", "path: Spindle.spindle-speed"), "x.yaml")
    assert "no '-'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse(GOOD.replace("    source: plc1", "    source: plc2"), "x.yaml")
    assert "did you mean 'plc1'" in str(err.value)


def test_a_malformed_node_id_is_caught_before_connecting() -> None:
    with pytest.raises(ConfigError, match=r"points\[0\].node: not a valid OPC UA node id"):
        parse(GOOD.replace("ns=2;s=CNC01.SpindleSpeed", "ns=2:CNC01.SpindleSpeed"), "x.yaml")


def test_percent_deadband_must_be_a_percentage() -> None:
    with pytest.raises(ConfigError, match="between 0 and 100"):
        parse(GOOD.replace("value: 2}", "value: 250}"), "x.yaml")


def test_secrets_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLC_PASSWORD", "from-env")
    cfg = parse(GOOD.replace("hunter2-secret", "${PLC_PASSWORD}"), "x.yaml")
    assert cfg.sources[0].password is not None
    assert cfg.sources[0].password.get_secret_value() == "from-env"
    with pytest.raises(ConfigError, match="MISSING_VAR"):
        parse(GOOD.replace("hunter2-secret", "${MISSING_VAR}"), "x.yaml")


def test_check_command_reports_without_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path, GOOD.replace("host: 127.0.0.1", "hots: 127.0.0.1"))
    r = subprocess.run(
        [sys.executable, "-m", "agent.cli", "check", "-c", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "sinks[0].hots" in r.stderr and "did you mean 'host'" in r.stderr
    good = write(tmp_path, GOOD)
    r = subprocess.run(
        [sys.executable, "-m", "agent.cli", "check", "-c", str(good)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "1 machines, 1 points" in r.stdout
    assert "hunter2" not in r.stdout + r.stderr


@pytest.mark.parametrize("example", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")), ids=str)
def test_example_configs_validate_and_export_valid_aas(example: Path, tmp_path: Path) -> None:
    import aas_core3_1.jsonization as jsonization
    import aas_core3_1.verification as verification
    import orjson

    from aas_models.export import write_environment
    from agent.shells import build_shells

    out = tmp_path / "env.json"
    write_environment(build_shells(load(example)), "json", out)
    env = jsonization.environment_from_jsonable(orjson.loads(out.read_bytes()))
    assert [str(e) for e in verification.verify(env)] == []


@pytest.mark.parametrize("fmt", ["json", "xml", "aasx"])
def test_export_command_writes_a_readable_environment(fmt: str, tmp_path: Path) -> None:
    from basyx.aas import model
    from basyx.aas.adapter import aasx, json, xml

    out = tmp_path / f"plant.{fmt}"
    config = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "export",
            "-c",
            str(config),
            "--format",
            fmt,
            "--metamodel",
            "3.1",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    store: model.DictIdentifiableStore[model.Identifiable]
    if fmt == "aasx":
        store = model.DictIdentifiableStore()
        with aasx.AASXReader(out) as reader:
            reader.read_into(store, aasx.DictSupplementaryFileContainer())  # type: ignore[no-untyped-call]
    elif fmt == "xml":
        with out.open("rb") as f:
            store = xml.read_aas_xml_file(f, failsafe=False)
    else:
        with out.open(encoding="utf-8") as f:
            store = json.read_aas_json_file(f, failsafe=False)
    shells = [o for o in store if isinstance(o, model.AssetAdministrationShell)]
    assert sorted(s.id_short for s in shells) == ["cnc01", "imm01", "prs01"]
    # 3 machines x (Nameplate, OperationalData, TimeSeries, ...) + the site's HierarchicalStructures
    submodels = {o.id_short for o in store if isinstance(o, model.Submodel)}
    assert {"Nameplate", "OperationalData", "TimeSeries", "HierarchicalStructures"} <= submodels
    for shell in shells:
        assert {f"{shell.id}/sm/{name}" for name in ("Nameplate", "OperationalData", "TimeSeries")} <= {
            r.key[0].value for r in shell.submodel
        }


def test_buffer_path_is_refused_and_points_to_the_data_dir(tmp_path: Path) -> None:
    """There is one buffer file per sink in agent.data_dir; a buffer.path that nothing reads must not pass."""
    p = write(tmp_path, GOOD + "buffer:\n  path: /var/lib/edge/buffer.db\n  quota_mb: 10\n")
    with pytest.raises(ConfigError) as err:
        load(p)
    line = GOOD.count("\n") + 2
    assert str(err.value).startswith(f"{p}:{line}: buffer.path: unknown key (did you mean 'agent.data_dir'?")


def test_mqtt_reconnect_backoff_reaches_the_sink(tmp_path: Path) -> None:
    """The two keys act: the sink waits between attempts within [initial/2, max], nothing longer."""
    from itertools import islice

    from agent.wiring import make_sink
    from uploader.mqtt import MqttSink

    text = GOOD.replace(
        "    host: 127.0.0.1\n", "    host: 127.0.0.1\n    reconnect_initial_s: 0.2\n    reconnect_max_s: 1.5\n"
    )
    cfg = load(write(tmp_path, text))
    sink, _ = make_sink(cfg, cfg.sinks[0])
    assert isinstance(sink, MqttSink)
    delays = list(islice(sink._delays(), 20))
    assert 0.1 <= delays[0] <= 0.2
    assert max(delays) <= 1.5 and delays[-1] >= 0.75


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ("{policy: Basic256Sha256}", "policy and mode go together"),
        ("{policy: None, mode: Sign}", "policy and mode go together"),
        ("{policy: Basic256Sha256, mode: Sign, certificate: a.der}", "give both certificate and private_key"),
        ("{policy: Basic128Rsa15, mode: Sign}", "Basic256Sha256"),
    ],
)
def test_security_settings_that_cannot_work_are_refused(tmp_path: Path, security: str, message: str) -> None:
    text = GOOD.replace("    username: op\n", f"    username: op\n    security: {security}\n")
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, text))


def test_a_secret_that_fails_validation_is_not_echoed(tmp_path: Path) -> None:
    """A numeric password is a YAML int, which pydantic refuses for a string: the message says where, not what."""
    p = write(tmp_path, GOOD.replace("password: hunter2-secret", "password: 73915628"))
    with pytest.raises(ConfigError) as err:
        load(p)
    assert "73915628" not in str(err.value)
    assert "sources[0].password" in str(err.value) and "not shown" in str(err.value)


def test_secrets_from_files_and_systemd_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.config import load_noting, secrets

    secret_file = tmp_path / "opcua-password"
    secret_file.write_text("from-a-file\n")
    secret_file.chmod(0o600)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt").write_text("from-systemd")
    (credentials / "mqtt").chmod(0o644)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    text = GOOD.replace("password: hunter2-secret", f"password: ${{file:{secret_file}}}")
    text = text.replace(
        "    host: 127.0.0.1\n", "    host: 127.0.0.1\n    username: gw\n    password: ${credential:mqtt}\n"
    )
    p = write(tmp_path, text)
    p.chmod(0o644)
    cfg, notes = load_noting(p)
    assert secrets(cfg) == ["from-a-file", "from-systemd"]
    assert any("can be read by others" in n and "mqtt" in n for n in notes), notes
    assert not any("chmod 600" in n for n in notes), "the config itself holds no secret"
    p.write_text(GOOD)
    p.chmod(0o644)
    _, notes = load_noting(p)
    assert any("chmod 600" in n for n in notes), notes
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY is not set"):
        load(write(tmp_path, text))


def test_a_typo_in_any_kind_of_sink_is_checked_against_that_kind() -> None:
    text = GOOD + (
        "  - {type: http, url: 'https://cloud.example.com', tokn: t0ken-Secret}\n"
        "  - {type: file, path: out.jsonl, pth: x}\n"
        "  - {type: http, id: h2, url: 'https://cloud.example.com', token: {nested: s3cret-Value}}\n"
    )
    with pytest.raises(ConfigError) as failed:
        parse(text, "x.yaml")
    said = str(failed.value)
    assert "sinks[1].tokn: unknown key (typo? did you mean 'token'); allowed here: type, id, url, token" in said
    allowed = "allowed here: type, id, path, wire_version, batch"
    assert f"sinks[2].pth: unknown key (typo? did you mean 'path'); {allowed}" in said
    assert "sinks[3]: token must be text" in said and "the value is a secret and not shown" in said, said
    assert "s3cret-Value" not in said and "t0ken-Secret" not in said


def test_a_usage_log_sink_names_what_is_wrong_and_never_shows_its_key() -> None:
    text = GOOD + (
        "  - {type: sflog, url: 'https://log.example.kr/apisvc', crtfc_kye: k3y-Secret}\n"
        "  - {type: sflog, id: s2, url: 'https://log.example.kr', crtfc_key: k3y-Secret, max_calls_per_day: 6000}\n"
        "  - {type: sflog, id: s3, url: 'log.example.kr', crtfc_key: k3y-Secret}\n"
    )
    with pytest.raises(ConfigError) as failed:
        parse(text, "x.yaml")
    said = str(failed.value)
    assert "sinks[1].crtfc_kye: unknown key (typo? did you mean 'crtfc_key')" in said, said
    assert "sinks[2].max_calls_per_day: " in said and "5000" in said, said
    assert "sinks[3].url: " in said, said
    assert "k3y-Secret" not in said
    cfg = parse(GOOD + "  - {type: sflog, url: 'https://log.example.kr/apisvc', crtfc_key: k3y-Secret}\n")
    from agent.config import secrets

    assert "k3y-Secret" in secrets(cfg)  # masked in every log line


def test_publish_requests_reaches_the_source_and_is_bounded() -> None:
    from agent.wiring import endpoint

    given = GOOD.replace("    password: hunter2-secret\n", "    password: hunter2-secret\n    publish_requests: 5\n")
    assert endpoint(parse(given).sources[0], "urn:x").publish_requests == 5
    assert endpoint(parse(GOOD).sources[0], "urn:x").publish_requests == 3
    with pytest.raises(ConfigError, match="publish_requests"):
        parse(given.replace("publish_requests: 5", "publish_requests: 0"))
