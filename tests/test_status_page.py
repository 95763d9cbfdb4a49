"""The operator's status page in a real browser (Debian's chromium, driven by Selenium through chromedriver),
and `edge-agent status` on the same running agent.

Screenshots are kept in test-artifacts/ (or $EDGE_AGENT_ARTIFACTS) for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.agentproc import ROOT, AgentProcess
from simulators.factory import FactoryThread
from simulators.ports import free_port
from tests.helpers import unavailable, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("EDGE_AGENT_ARTIFACTS", ROOT / "test-artifacts"))


def _config(tmp: Path, opc_port: int, api_port: int) -> Path:
    nameplate = "{manufacturer_name: M, product_designation: P, uri_of_product: 'https://x', order_code: O}"
    text = f"""site: {{id: page-site, name: 시험 공장}}
agent: {{data_dir: {tmp / "data"}, status_interval_s: 1}}
api: {{port: {api_port}}}
sources:
  - {{id: plc, endpoint: "opc.tcp://127.0.0.1:{opc_port}/", publishing_interval_ms: 100,
      reconnect_initial_s: 0.2, reconnect_max_s: 1}}
equipment:
  - id: cnc01
    name: {{ko-KR: 1호기 CNC, en: CNC no. 1}}
    source: plc
    nameplate: {nameplate}
    points:
      - {{node: "ns=2;s=CNC01.SpindleSpeed", path: SpindleSpeed, type: Double, unit: rpm,
          display_name: {{ko-KR: 주축 회전수, en: Spindle speed}}}}
      - {{node: "ns=2;s=CNC01.Diagnostics.Double", path: Steady, type: Double}}
      - {{node: "ns=2;s=CNC01.NoSuchTag", path: Missing, type: Double}}
sinks:
  - {{type: file, path: {tmp / "records.jsonl"}, batch: {{max_delay_ms: 100}}}}
"""
    path = tmp / "agent.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        unavailable("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("needs selenium (pip install selenium; the test extra has it)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1600", "--lang=ko"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"status-page-{name}.png"))


def test_the_status_page_shows_live_values_and_a_server_going_and_coming_back(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    api_port = free_port()
    with FactoryThread(port=free_port(), period=0.2, machines=1) as factory:
        config = _config(tmp_path, factory.port, api_port)
        with AgentProcess(config, tmp_path / "agent.log") as agent:
            wait_until("the API", lambda: "local API on" in agent.log(), 60)
            browser.get(f"http://127.0.0.1:{api_port}/")

            # The page redraws once a second: read it in one script call, never through a held element.
            def js(script: str) -> Any:
                return browser.execute_script(script)

            def machine_state() -> str:
                return str(js("const e = document.querySelector(\"[data-machine='cnc01'] [data-state]\");"
                              "return e ? e.dataset.state : '';"))  # fmt: skip

            def cell(path: str, column: int) -> str:
                return str(js(f"const r = document.querySelector(\"[data-machine='cnc01'] tr[data-path='{path}']\");"
                              f"return r ? r.cells[{column}].innerText : '';"))  # fmt: skip

            def text(element_id: str) -> str:
                return str(js(f"return document.getElementById('{element_id}').innerText;"))

            wait_until("the machine shown connected", lambda: machine_state() == "connected", 60)
            first = wait_until(
                "a spindle speed on the page",
                lambda: cell("SpindleSpeed", 1) not in ("", "–") and cell("SpindleSpeed", 1),
                30,
            )
            wait_until("the value to change", lambda: cell("SpindleSpeed", 1) not in ("", "–", first), 30)
            page = text("machines") + text("site")
            assert (
                "1호기 CNC" in page and "주축 회전수" in page and "시험 공장" in page
            )  # labels in the site's language
            assert cell("SpindleSpeed", 2) == "rpm" and cell("SpindleSpeed", 4) == "Good"
            assert "BadNodeIdUnknown" in cell("Missing", 5)  # the finding, by name
            findings = text("problems")
            assert "CNC01.NoSuchTag" in findings and "BadNodeIdUnknown" in findings
            assert text("version").startswith("edge-agent ")
            js("document.querySelector(\"[data-machine='cnc01'] tr[data-path='Steady']\").click();")
            wait_until("the chart shown", lambda: browser.find_element(By.ID, "chart-box").is_displayed(), 10)
            wait_until("a throughput figure", lambda: text("rate-in") not in ("", "–"), 10)
            shot(browser, "1-connected")

            factory.stop()
            wait_until("the machine shown disconnected", lambda: machine_state() == "disconnected", 60)
            wait_until(
                "the open interruption listed", lambda: "still open" in browser.find_element(By.ID, "gaps").text, 30
            )
            shot(browser, "2-disconnected")
            factory.start()
            wait_until("the machine shown connected again", lambda: machine_state() == "connected", 60)
            value = cell("SpindleSpeed", 1)
            wait_until("values moving again", lambda: cell("SpindleSpeed", 1) not in ("", "–", value), 30)
            shot(browser, "3-back")
            gaps = text("gaps")
            assert "plc" in gaps and "still open" not in gaps

            # The same agent asked from the command line: what the page shows, in 80 columns.
            done = subprocess.run(
                [sys.executable, "-m", "agent.cli", "status", "-c", str(config)],
                cwd=ROOT, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            lines = done.stdout.splitlines()
            assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
            assert any("1호기 CNC (cnc01): connected" in line for line in lines), done.stdout
            assert any("주축 회전수" in line and "rpm" in line and "Good" in line for line in lines), done.stdout
            assert "BadNodeIdUnknown" in done.stdout
            assert agent.stop() == 0
    no_agent = subprocess.run(
        [sys.executable, "-m", "agent.cli", "status", "-c", str(config)], cwd=ROOT, capture_output=True, text=True
    )
    assert no_agent.returncode == 1 and "no agent answers" in no_agent.stderr
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists()


def test_the_status_page_shows_a_source_clock_that_is_off(browser: Any, tmp_path: Path) -> None:
    """A PLC 9 h ahead (Korean time sent as UTC): its machine carries a badge saying so, once the agent judged it."""
    api_port = free_port()
    with FactoryThread(port=free_port(), period=0.2, machines=1, clock_offset=9 * 3600.0) as factory:
        config = _config(tmp_path, factory.port, api_port)
        with AgentProcess(config, tmp_path / "agent.log") as agent:
            wait_until("the API", lambda: "local API on" in agent.log(), 60)
            browser.get(f"http://127.0.0.1:{api_port}/")

            def badge() -> str:
                return str(browser.execute_script(
                    "const e = document.querySelector(\"[data-machine='cnc01'] [data-clock]\");"
                    "return e ? e.dataset.clock + ' | ' + e.innerText : '';"
                ))  # fmt: skip

            shown = wait_until("the clock badge", badge, 60)
            assert shown == "ahead | source clock ahead by 9.0 h", shown
            shot(browser, "4-clock-ahead")
