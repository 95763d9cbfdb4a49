"""Reload without loss (agent/reload.py): SIGHUP and `POST /reload` re-read the config while values flow.

The whole agent runs as a child process against the factory simulator. A reload removes one element,
adds a subscribed and a polled one and a second sink; the element left alone must not miss a value
the simulator wrote, the removed one must end with a final status record, the new ones must appear in
both sinks. A reload that changes what only a restart applies, or a config with an error, is refused
whole and the agent goes on as it was.
"""

from __future__ import annotations

import base64
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.config import ConfigError, parse
from agent.reload import compare
from simulators.agentproc import AgentProcess
from simulators.factory import FactoryThread
from simulators.ports import free_port
from tests.helpers import file_records, wait_until

POWER = "ns=2;s=CNC01.Power"  # changes every round: kept through every reload
STEADY = "ns=2;s=CNC01.Diagnostics.Double"  # removed by the reload
WIDE = "ns=2;s=CNC01.Diagnostics.Int64"  # added by the reload, subscribed
VIBRATION = "ns=2;s=CNC01.Vibration"  # polled throughout
FLOAT = "ns=2;s=CNC01.Diagnostics.Float"  # added by the reload, polled

SUBMODEL = "urn:edge-agent:aas:reload-site:cnc01/sm/OperationalData"
NAMEPLATE = "{manufacturer_name: M, product_designation: P, uri_of_product: 'https://x', order_code: O}"


def _config(tmp: Path, endpoint: str, api_port: int, points: list[str], sinks: list[str], site: str = "") -> str:
    point_lines = "".join(f"      - {p}\n" for p in points)
    sink_lines = "".join(f"  - {s}\n" for s in sinks)
    return f"""site: {{id: reload-site{site}}}
agent: {{data_dir: {tmp / "data"}, status_interval_s: 1}}
api: {{port: {api_port}}}
sources:
  - {{id: plc, endpoint: "{endpoint}", publishing_interval_ms: 100, reconnect_initial_s: 0.2, reconnect_max_s: 1}}
equipment:
  - id: cnc01
    source: plc
    nameplate: {NAMEPLATE}
    points:
{point_lines}sinks:
{sink_lines}"""


def _sink(tmp: Path, name: str) -> str:
    return f"{{id: {name}, type: file, path: {tmp / f'{name}.jsonl'}, batch: {{max_delay_ms: 100}}}}"


def _data(path: Path, element: str) -> list[dict[str, Any]]:
    return file_records(path, "data", lambda r: r["path"] == element)


def _status(path: Path, kind: str) -> list[dict[str, Any]]:
    return file_records(path, "status", lambda r: r["kind"] == kind)


def _post_reload(port: int) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/reload", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def _iso(t: Any) -> str:
    return str(t.isoformat().replace("+00:00", "Z"))


def test_a_reload_adds_and_removes_elements_and_sinks_while_values_flow_and_loses_nothing(tmp_path: Path) -> None:
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    api_port = free_port()
    kept = [
        f'{{node: "{POWER}", path: Power, type: Double}}',
        f'{{node: "{VIBRATION}", path: Vibration, type: Float, mode: poll, sampling_ms: 200}}',
    ]
    with FactoryThread(port=free_port(), period=0.1, machines=1) as fac:
        config = tmp_path / "agent.yaml"
        before = [*kept, f'{{node: "{STEADY}", path: Steady, type: Double}}']
        config.write_text(_config(tmp_path, fac.endpoint, api_port, before, [_sink(tmp_path, "first")]))
        with AgentProcess(config, tmp_path / "agent.log") as agent:
            wait_until(
                "values of every element", lambda: all(len(_data(first, p)) >= 5 for p in ("Power", "Steady")), 60
            )
            wait_until("polled values", lambda: len(_data(first, "Vibration")) >= 3, 30)

            after = [
                *kept,
                f'{{node: "{WIDE}", path: Wide, type: Int64}}',
                f'{{node: "{FLOAT}", path: Slow, type: Float, mode: poll, sampling_ms: 200}}',
            ]
            sinks = [_sink(tmp_path, "first"), _sink(tmp_path, "second")]
            config.write_text(_config(tmp_path, fac.endpoint, api_port, after, sinks))
            assert agent.proc is not None
            agent.proc.send_signal(signal.SIGHUP)
            wait_until("the reload recorded", lambda: bool(_status(first, "config-reloaded")), 30)
            for path in (first, second):
                wait_until(f"new elements in {path.name}", lambda p=path: len(_data(p, "Wide")) >= 5, 30)  # type: ignore[misc]
                wait_until(f"new polled values in {path.name}", lambda p=path: len(_data(p, "Slow")) >= 3, 30)  # type: ignore[misc]
            reloaded_at = _status(first, "config-reloaded")[0]["time"]
            status = orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{api_port}/status", timeout=10).read())
            [machine] = status["machines"]
            assert sorted(e["path"] for e in machine["elements"]) == ["Power", "Slow", "Vibration", "Wide"]
            assert all(e["collected"] for e in machine["elements"]), machine["elements"]
            assert [s["name"] for s in status["sinks"]] == ["first", "second"]
            # The AAS API serves the rebuilt model: the new element with its live value, the removed one gone.
            submodel = base64.urlsafe_b64encode(SUBMODEL.encode()).decode().rstrip("=")
            elements = f"http://127.0.0.1:{api_port}/submodels/{submodel}/submodel-elements"
            wait_until("the new element's value in the AAS", lambda: _get(f"{elements}/Wide/$value")[0] == 200, 30)
            code, power_value = _get(f"{elements}/Power/$value")
            assert code == 200 and isinstance(power_value["Power"], float), power_value  # carried into the new model
            assert _get(f"{elements}/Steady/$value")[0] == 404
            wait_until(
                "more kept values after the reload",
                lambda: sum(r["sourceTime"] > reloaded_at for r in _data(first, "Power")) >= 10,
                30,
            )

            # Refused whole, and nothing changes: a key only a restart applies, then a config with an error.
            config.write_text(_config(tmp_path, fac.endpoint, api_port, after, sinks, site="-moved"))
            code, answer = _post_reload(api_port)
            assert code == 409 and not answer["applied"], answer
            assert "site.id" in answer["message"] and "restart" in answer["message"], answer
            config.write_text(
                _config(tmp_path, fac.endpoint, api_port, after, sinks).replace("type: Int64", "type: Int65")
            )
            code, answer = _post_reload(api_port)
            assert code == 409 and "Int65" in answer["message"], answer
            config.write_text(_config(tmp_path, fac.endpoint, api_port, after, sinks))
            code, answer = _post_reload(api_port)
            assert code == 200 and answer == {"applied": True, "message": "nothing changed", "changes": {}}, answer
            seen = len(_data(first, "Power"))
            wait_until("values still flowing", lambda: len(_data(first, "Power")) >= seen + 5, 30)
            assert agent.stop() == 0
        written = {
            name: {_iso(t): v for t, v in fac.written(node)} for name, node in (("Power", POWER), ("Wide", WIDE))
        }

    # The element left alone missed nothing the simulator wrote while the agent ran, across the reload.
    power = sorted(_data(first, "Power"), key=lambda r: r["sourceTime"])
    start, end = power[0]["sourceTime"], power[-1]["sourceTime"]
    expected = {t: v for t, v in written["Power"].items() if start <= t <= end}
    got = {r["sourceTime"]: r["value"] for r in power}
    assert got == expected, sorted(set(expected) ^ set(got))[:10]
    assert sum(t < reloaded_at for t in expected) >= 5 and sum(t > reloaded_at for t in expected) >= 10
    gaps = [g for g in file_records(first, "gap") if any(e["path"] == "Power" for e in g["elements"])]
    assert [g["reason"] for g in gaps] == ["agent was stopped"], gaps  # only the clean stop's own

    # The removed element ended with a final status record, and no value of it is younger than that.
    [removed] = [r for r in _status(first, "element-removed") if r["path"] == "Steady"]
    assert "no longer collected" in removed["message"] and removed["node"] == STEADY
    assert max(r["sourceTime"] for r in _data(first, "Steady")) <= removed["lastValueTime"] <= removed["time"]
    assert not _status(second, "element-removed")  # the new sink never had it

    # The new elements carry the simulator's values, in both sinks; the new sink starts at the reload.
    for path in (first, second):
        wide = _data(path, "Wide")
        assert wide and all(
            written["Wide"][r["sourceTime"]] == int(r["value"]) for r in wide if r["sourceTime"] in written["Wide"]
        )
        assert all(r["valueType"] == "xs:long" for r in wide)
    assert min(r["sourceTime"] for r in _data(second, "Power")) >= start
    assert not _data(second, "Steady")

    # Recorded: what changed, and the changed file as a usage event (DO6005); the refusals too.
    [done] = _status(first, "config-reloaded")
    assert done["changes"] == {
        "elementsAdded": ["cnc01/Slow", "cnc01/Wide"],
        "elementsRemoved": ["cnc01/Steady"],
        "sinksAdded": ["second"],
    }
    assert [u["use"] for u in file_records(first, "usage")].count("DO6005") == 1
    refused = [r["message"] for r in _status(first, "config-reload-refused")]
    assert len(refused) == 2 and "site.id" in refused[0] and "Int65" in refused[1], refused


def test_compare_names_what_only_a_restart_applies_and_what_a_reload_changes(tmp_path: Path) -> None:
    def cfg(extra_point: str = "", api: str = "{port: 8081}", sink_delay: int = 100) -> Any:
        points = [f'{{node: "{POWER}", path: Power, type: Double}}']
        if extra_point:
            points.append(extra_point)
        text = _config(tmp_path, "opc.tcp://127.0.0.1:4840", 8081, points, [_sink(tmp_path, "first")])
        text = text.replace("api: {port: 8081}", f"api: {api}").replace(
            "max_delay_ms: 100", f"max_delay_ms: {sink_delay}"
        )
        return parse(text)

    base = cfg()
    assert compare(base, cfg()).empty
    moved = compare(base, cfg(api="{port: 8082}"))
    assert moved.restart == ["api.port"] and not moved.elements_added
    grown = compare(base, cfg(extra_point=f'{{node: "{WIDE}", path: Wide, type: Int64}}', sink_delay=200))
    assert grown.restart == [] and grown.elements_added == ["cnc01/Wide"] and grown.sinks_changed == ["first"]
    retyped = compare(
        cfg(extra_point=f'{{node: "{WIDE}", path: Wide, type: Int64}}'),
        cfg(extra_point=f'{{node: "{WIDE}", path: Wide, type: Int32}}'),
    )
    assert retyped.elements_changed == ["cnc01/Wide"] and not retyped.elements_added and not retyped.elements_removed


def test_a_config_with_two_event_sources_of_one_name_is_refused_with_both_places() -> None:
    text = _config(
        Path("/tmp"),
        "opc.tcp://127.0.0.1:4840",
        8081,
        [f'{{node: "{POWER}", path: Power, type: Double}}'],
        ["{type: file, path: /tmp/x.jsonl}"],
    )
    text = text.replace("    points:\n", '    events: [{node: "i=2253"}, {node: "i=2254"}]\n    points:\n')
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert "events[0].name" in str(e.value) and "events[1].name" in str(e.value) and "own name" in str(e.value)


def test_a_reload_that_removes_a_sink_and_changes_a_source_keeps_every_value_delivered_or_in_a_gap(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    api_port = free_port()
    points = [f'{{node: "{POWER}", path: Power, type: Double}}']
    sinks = [_sink(tmp_path, "first"), _sink(tmp_path, "second")]
    with FactoryThread(port=free_port(), period=0.1, machines=1) as fac:
        config = tmp_path / "agent.yaml"
        text = _config(tmp_path, fac.endpoint, api_port, points, sinks)
        config.write_text(text)
        with AgentProcess(config, tmp_path / "agent.log") as agent:
            wait_until(
                "values in both sinks", lambda: len(_data(first, "Power")) >= 5 <= len(_data(second, "Power")), 60
            )
            changed = text.replace("publishing_interval_ms: 100", "publishing_interval_ms: 200")
            config.write_text(changed.replace(f"  - {_sink(tmp_path, 'first')}\n", ""))
            code, answer = _post_reload(api_port)
            assert code == 200 and answer["changes"] == {"sinksRemoved": ["first"], "sourcesChanged": ["plc"]}, answer
            reloaded = len(_data(second, "Power"))
            wait_until(
                "values after the source's new session", lambda: len(_data(second, "Power")) >= reloaded + 10, 30
            )
            frozen = len(_data(first, "Power"))
            status = orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{api_port}/status", timeout=10).read())
            assert [s["name"] for s in status["sinks"]] == ["second"], status["sinks"]
            assert agent.stop() == 0
        written = {_iso(t): v for t, v in fac.written(POWER)}

    assert len(_data(first, "Power")) == frozen  # the removed sink got nothing more
    assert (tmp_path / "data" / "buffer-first.db").exists()  # its buffer stays, with anything undelivered
    # Every value the simulator wrote while the agent ran is in the kept sink, or inside its gap record.
    power = _data(second, "Power")
    got = {r["sourceTime"] for r in power}
    start, end = min(got), max(got)
    gaps = [
        (e["start"], e["end"] or "9999")
        for g in file_records(second, "gap")
        if g["reason"].startswith("configuration reloaded")
        for e in g["elements"]
        if e["path"] == "Power"
    ]
    assert len(gaps) == 1, file_records(second, "gap")
    missing = [t for t in written if start <= t <= end and t not in got]
    assert all(any(a < t < b for a, b in gaps) for t in missing), (missing, gaps)
    assert all(written[r["sourceTime"]] == r["value"] for r in power if r["sourceTime"] in written)


def test_the_rebuilt_model_keeps_every_current_value_of_an_element_that_stayed(tmp_path: Path) -> None:
    from aas_models.live import LiveValues, carry
    from agent.shells import build_shells

    def env(*extra: str) -> Any:
        points = [
            f'{{node: "{POWER}", path: Power, type: Double}}',
            '{node: "ns=2;s=CNC01.ProgramName", path: Program, type: String}',
            '{node: "ns=2;s=CNC01.Diagnostics.Int32Array", path: Ints, type: Int32, array: true}',
            '{node: "ns=2;s=CNC01.Diagnostics.LocalizedText", path: Text, type: LocalizedText}',
            *extra,
        ]
        text = _config(tmp_path, "opc.tcp://127.0.0.1:4840", 8081, points, [_sink(tmp_path, "first")])
        return build_shells(parse(text))

    old, new = env(), env(f'{{node: "{WIDE}", path: Wide, type: Int64}}')
    live = LiveValues()
    shell = "urn:edge-agent:aas:reload-site:cnc01"
    for path, value in (
        ("Power", -0.0),
        ("Program", "O1234 황삭"),
        ("Ints", [1, -2, 2**31 - 1]),
        ("Text", {"language": "ko", "text": "정상"}),
    ):
        live.update(shell, path, value)
    assert not live.apply(old)
    carry(old, new)
    for path in ("Power", "Program", "Ints", "Text"):
        a, b = old.element(shell, path), new.element(shell, path)
        if path == "Ints":
            assert [c.value for c in b.value] == [1, -2, 2**31 - 1]  # type: ignore[attr-defined]
        else:
            assert b.value == a.value and b.value is not None, path  # type: ignore[attr-defined]
    assert new.element(shell, "Wide").value is None  # type: ignore[attr-defined]
