"""`/metrics` scraped while the agent runs: every metric the docs name is there, and moves when it should."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from agent.cli_status import render
from simulators.agentproc import AgentProcess
from simulators.factory import FactoryThread
from simulators.ports import free_port
from tests.helpers import wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
AUTH = "Basic " + base64.b64encode(b"prom:scrape-secret-1").decode()


def _config(tmp: Path, opc_port: int, api_port: int) -> Path:
    nameplate = "{manufacturer_name: M, product_designation: P, uri_of_product: 'https://x', order_code: O}"
    text = f"""site: {{id: metrics-site}}
agent: {{data_dir: {tmp / "data"}, status_interval_s: 1}}
api:
  port: {api_port}
  users: [{{name: prom, password: scrape-secret-1}}]
sources:
  - {{id: plc, endpoint: "opc.tcp://127.0.0.1:{opc_port}/", publishing_interval_ms: 100,
      reconnect_initial_s: 0.2, reconnect_max_s: 1}}
equipment:
  - id: cnc01
    source: plc
    nameplate: {nameplate}
    points:
      - {{node: "ns=2;s=CNC01.SpindleSpeed", path: SpindleSpeed, type: Double}}
      - {{node: "ns=2;s=CNC01.Diagnostics.Double", path: Steady, type: Double}}
  - id: imm01
    source: plc
    nameplate: {nameplate}
    points:
      - {{node: "ns=2;s=IMM01.State", path: State, type: String}}
      - {{node: "ns=2;s=IMM01.ScrewPosition", path: ScrewPosition, type: Double}}
sinks:
  - {{type: file, path: {tmp / "records.jsonl"}, batch: {{max_delay_ms: 100}}}}
"""
    path = tmp / "agent.yaml"
    path.write_text(text)
    return path


def scrape(port: int, auth: str | None = AUTH) -> Samples:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if auth:
        request.add_header("Authorization", auth)
    with urllib.request.urlopen(request, timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), -1.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def try_scrape(port: int) -> Samples | None:
    try:
        return scrape(port)
    except (urllib.error.URLError, OSError):
        return None


def test_metrics_are_all_there_and_move_while_the_agent_runs(tmp_path: Path) -> None:
    api_port = free_port()
    with FactoryThread(port=free_port(), period=0.1, machines=2) as factory:
        config = _config(tmp_path, factory.port, api_port)
        with AgentProcess(config, tmp_path / "agent.log") as agent:

            def delivering() -> Samples | None:
                m = try_scrape(api_port)
                machines = ("cnc01", "imm01")
                if m is None or min(value(m, "edge_agent_values_in_total", machine=x) for x in machines) <= 0:
                    return None
                return m if total(m, "edge_agent_records_out_total", lane="data") > 0 else None

            first = wait_until("values counted and records delivered", delivering, 60)
            # A value has a machine, a record out a sink, lane and machine; the buffer a depth per lane.
            for machine in ("cnc01", "imm01"):
                assert value(first, "edge_agent_values_in_total", machine=machine) > 0, machine
            assert value(first, "edge_agent_records_out_total", sink="file", lane="data", machine="cnc01") > 0
            assert ("edge_agent_buffer_records", (("lane", "data"), ("sink", "file"))) in first
            assert value(first, "edge_agent_buffer_bytes", sink="file") > 0
            for reason in ("quota", "rejected"):
                assert value(first, "edge_agent_dropped_total", sink="file", reason=reason) == 0
            for reason in ("bad-value", "not-stored"):
                assert value(first, "edge_agent_values_dropped_total", reason=reason) == 0
            assert value(first, "edge_agent_source_connected", source="plc") == 1
            assert value(first, "edge_agent_elements_active", source="plc") == 4
            assert value(first, "edge_agent_dead_letters") == 0
            assert value(first, "process_resident_memory_bytes") > 10e6
            assert any(n == "edge_agent_info" and dict(ls).get("version") for n, ls in first)

            def moved(m: Samples, name: str, **labels: str) -> bool:
                return value(m, name, **labels) > value(first, name, **labels)

            later = wait_until(
                "every counter and histogram to move",
                lambda: (
                    (m := try_scrape(api_port)) is not None
                    and all(
                        moved(m, name, **labels)
                        for name, labels in (
                            ("edge_agent_values_in_total", {"machine": "cnc01"}),
                            ("edge_agent_values_in_total", {"machine": "imm01"}),
                            ("edge_agent_records_out_total", {"sink": "file", "lane": "data", "machine": "cnc01"}),
                            ("edge_agent_publish_round_trip_seconds_count", {"sink": "file"}),
                            ("edge_agent_delivery_age_seconds_count", {"sink": "file", "lane": "data"}),
                            ("process_cpu_seconds_total", {}),
                        )
                    )
                    and m
                ),
                60,
            )
            assert value(later, "edge_agent_delivery_age_seconds_sum", sink="file", lane="data") > 0
            assert total(later, "edge_agent_records_out_total", lane="status") > 0  # the agent's own records

            # The server goes away and comes back: connected drops to 0, then reconnects and gap time count.
            factory.stop()

            def connected() -> float:
                m = try_scrape(api_port)
                return -1.0 if m is None else value(m, "edge_agent_source_connected", source="plc")

            wait_until("the source shown disconnected", lambda: connected() == 0, 30)
            factory.start()
            back = wait_until(
                "the source back, with its reconnect and gap counted",
                lambda: (
                    (m := try_scrape(api_port)) is not None
                    and value(m, "edge_agent_source_connected", source="plc") == 1
                    and m
                ),
                60,
            )
            assert value(back, "edge_agent_reconnects_total", source="plc") >= 1
            assert value(back, "edge_agent_gap_seconds_total", source="plc") > 0

            # Scrapes need a user: none, or a wrong password, is a 401 that names what to send.
            for auth in (None, "Basic " + base64.b64encode(b"prom:wrong").decode()):
                try:
                    scrape(api_port, auth)
                    raise AssertionError(f"{auth!r} was let in")
                except urllib.error.HTTPError as e:
                    assert e.code == 401 and "HTTP Basic" in e.read().decode()
            # The periodic counters (every status_interval_s: 1 s) are on the status lane before the stop.
            records = tmp_path / "records.jsonl"
            try:
                wait_until(
                    "the periodic counters in the file sink's records",
                    lambda: records.exists() and b'"kind":"agent-stats"' in records.read_bytes(),
                    30,
                )
            except AssertionError as e:
                raise AssertionError(f"{e}; the agent's log ends:\n{agent.log()[-3000:]}") from None
            assert agent.stop() == 0
    assert "scrape-secret-1" not in (tmp_path / "agent.log").read_text()
    # The version is in the status records too: the one at start and the periodic counters.
    from agent.version import VERSION

    statuses = [
        r
        for line in (tmp_path / "records.jsonl").read_bytes().splitlines()
        if (msg := orjson.loads(line))["lane"] == "status"
        for r in msg["records"]
    ]
    assert [r["version"] for r in statuses if r["kind"] == "agent-started"] == [VERSION]
    assert all(r["version"] == VERSION for r in statuses if r["kind"] == "agent-stats")
    assert any(r["kind"] == "agent-stats" for r in statuses)


def test_the_age_of_values_on_arrival_shows_a_device_clock_that_is_behind(tmp_path: Path) -> None:
    """The simulated PLC's clock is ten minutes behind the gateway's: the values' ages on arrival say so, in the
    histogram and in the agent-stats records, while the delivery age (the agent's own part on top) is no less."""
    api_port = free_port()
    behind = 600.0
    with FactoryThread(port=free_port(), period=0.1, machines=2, clock_offset=-behind) as factory:
        config = _config(tmp_path, factory.port, api_port)
        with AgentProcess(config, tmp_path / "agent.log") as agent:
            m = wait_until(
                "ages on arrival observed",
                lambda: (
                    (m := try_scrape(api_port)) is not None
                    and value(m, "edge_agent_receive_age_seconds_count", source="plc") >= 20
                    and total(m, "edge_agent_delivery_age_seconds_count", lane="data") > 0
                    and m
                ),
                60,
            )
            count = value(m, "edge_agent_receive_age_seconds_count", source="plc")
            # Every age is over 300 s and under an hour: the buckets say where each one fell.
            assert value(m, "edge_agent_receive_age_seconds_bucket", source="plc", le="300.0") == 0
            assert value(m, "edge_agent_receive_age_seconds_bucket", source="plc", le="3600.0") == count
            mean = value(m, "edge_agent_receive_age_seconds_sum", source="plc") / count
            assert behind <= mean < behind + 30, mean
            delivered = total(m, "edge_agent_delivery_age_seconds_sum", lane="data") / total(
                m, "edge_agent_delivery_age_seconds_count", lane="data"
            )
            assert delivered >= behind, delivered
            records = tmp_path / "records.jsonl"

            def stats() -> list[dict[str, object]]:
                if not records.exists():
                    return []
                found = [
                    r
                    for line in records.read_bytes().splitlines()
                    if (msg := orjson.loads(line))["lane"] == "status"
                    for r in msg["records"]
                    if r["kind"] == "agent-stats" and r["receive_age_ms"]
                ]
                return found

            with_ages = wait_until("an agent-stats record with ages on arrival", stats, 30)
            # Two status intervals of values all ten minutes old: the clock check says so, once.
            (clock,) = wait_until("the clock warning", lambda: _status(records, "source-clock"), 30)
            assert clock["source"] == "plc" and clock["state"] == "behind", clock
            assert behind <= clock["offset_s"] < behind + 30, clock
            assert "its clock is behind the agent's" in clock["message"] and "10 min old" in clock["message"]
            assert "its clock is behind the agent's" in agent.log()
            assert agent.stop() == 0
    ages = with_ages[-1]["receive_age_ms"]
    assert isinstance(ages, dict) and set(ages) == {"count", "p50", "p95", "max"}, ages
    assert ages["count"] >= 2
    assert behind * 1000 <= ages["p50"] <= ages["p95"] <= ages["max"] < (behind + 30) * 1000, ages


def test_a_device_clock_set_to_korean_time_as_utc_is_warned_about_at_once(tmp_path: Path) -> None:
    """A PLC whose clock runs 9 h ahead (local time sent as UTC): the values arrive from the agent's future; the
    first status interval says so in the log and in a source-clock status record, with the likely cause."""
    ahead = 9 * 3600.0
    api_port = free_port()
    with FactoryThread(port=free_port(), period=0.1, machines=2, clock_offset=ahead) as factory:
        config = _config(tmp_path, factory.port, api_port)
        records = tmp_path / "records.jsonl"
        with AgentProcess(config, tmp_path / "agent.log") as agent:
            (clock,) = wait_until("the clock warning", lambda: _status(records, "source-clock"), 60)
            assert clock["source"] == "plc" and clock["state"] == "ahead", clock
            assert -ahead <= clock["offset_s"] < -ahead + 30, clock
            assert "9.0 h ahead of the agent's clock" in clock["message"] and "Korean time" in clock["message"]
            wait_until("the warning in the log", lambda: "Korean time" in agent.log(), 30)
            # The status document, page and `edge-agent status` show it by the machines of that source.
            request = urllib.request.Request(f"http://127.0.0.1:{api_port}/status", headers={"Authorization": AUTH})
            with urllib.request.urlopen(request, timeout=10) as r:
                doc = orjson.loads(r.read())
            clocks = {m["id"]: m["clock"] for m in doc["machines"]}
            assert {c["state"] for c in clocks.values()} == {"ahead"}, clocks
            assert all(-ahead <= c["offsetS"] < -ahead + 30 for c in clocks.values()), clocks
            assert "  ! source clock ahead by 9.0h" in render(doc).splitlines()
            assert agent.stop() == 0
    assert len(_status(records, "source-clock")) == 1  # said once, not every interval


def _status(records: Path, kind: str) -> list[dict[str, Any]]:
    if not records.exists():
        return []
    return [
        r
        for line in records.read_bytes().splitlines()
        if (msg := orjson.loads(line))["lane"] == "status"
        for r in msg["records"]
        if r["kind"] == kind
    ]
