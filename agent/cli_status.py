"""`edge-agent status`: what the operator's status page shows, from the running agent's local API, as text;
`edge-agent reload`: the running agent re-reads its config (agent/reload.py)."""

from __future__ import annotations

import base64
import os
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from agent import config as config_mod

WIDTH = 80


USER = click.option(
    "--user", default=None, help="an api.users name (its password from EDGE_AGENT_PASSWORD or a prompt)"
)
CONFIG = click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path))


@click.command("status")
@CONFIG
@USER
@click.option("--json", "as_json", is_flag=True, help="the status document as it is (GET /status)")
def status_command(config_path: Path, user: str | None, as_json: bool) -> None:
    """Ask the running agent (its local API, api.host:api.port of the config) how it is doing."""
    doc = _ask(config_path, user, "/status")
    if as_json:
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(render(doc))
    if any(not m["connected"] for m in doc["machines"]) or any(s["lastError"] for s in doc["sinks"]):
        sys.exit(3)


def _message(e: urllib.error.HTTPError) -> str:
    try:
        return str(orjson.loads(e.read())["messages"][0]["text"])
    except (ValueError, KeyError, IndexError, TypeError):
        return e.reason


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def show(v: Any) -> str:
    """A value for a terminal: numbers rounded to 6 significant digits, long text shortened."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        return f"{v:.6g}"
    if isinstance(v, list):
        return "[" + ", ".join(show(x) for x in v[:4]) + (", …" if len(v) > 4 else "") + "]"
    return _fit(str(v), 24)


def _age(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 60:
        return f"{max(0.0, s):.1f}s"
    if s < 3600:
        return f"{s / 60:.0f}min"
    return f"{s / 3600:.1f}h"


@click.command("reload")
@CONFIG
@USER
def reload_command(config_path: Path, user: str | None) -> None:
    """Make the running agent re-read its config file and apply what changed, without a restart (as
    SIGHUP and `systemctl reload edge-agent` do). Exit 0 when applied, 1 when refused (the reason is
    printed; the agent goes on as it was)."""
    doc = _ask(config_path, user, "/reload", refused_ok=True)
    click.echo(doc.get("message", ""))
    if not doc.get("applied"):
        sys.exit(1)


def _ask(config_path: Path, user: str | None, route: str, *, refused_ok: bool = False) -> dict[str, Any]:
    """The running agent's answer on `route` (POST for /reload, else GET); exits with a message when there
    is none. `refused_ok`: a 409 (the agent refused) is an answer too."""
    try:
        cfg = config_mod.load(config_path)
    except config_mod.ConfigError as e:
        click.echo(f"configuration error:\n{e}", err=True)
        sys.exit(2)
    api = cfg.api
    if not api.enabled:
        click.echo("the config turns the local API off (api.enabled: false): the agent cannot be asked", err=True)
        sys.exit(2)
    host = "127.0.0.1" if api.host in ("0.0.0.0", "::") else api.host
    url = f"http://{host}:{api.port}{route}"
    request = urllib.request.Request(url, method="POST" if route == "/reload" else "GET")
    if api.users:
        name = user or api.users[0].name
        password = os.environ.get("EDGE_AGENT_PASSWORD") or click.prompt(f"password of {name}", hide_input=True)
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            doc: dict[str, Any] = orjson.loads(r.read())
            return doc
    except urllib.error.HTTPError as e:
        if refused_ok and e.code == 409:
            refused: dict[str, Any] = orjson.loads(e.read())
            return refused
        click.echo(f"the agent at {url} answered {e.code}: {_message(e)}", err=True)
        sys.exit(1)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        click.echo(f"no agent answers at {url} ({reason}): is it running with this config?", err=True)
        sys.exit(1)


def render(doc: dict[str, Any]) -> str:
    """The status page as lines of at most 80 columns."""
    started = datetime.fromisoformat(doc["started"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    lines = [
        _fit(f"edge-agent {doc['version']} · site {doc['site']['name'] or doc['site']['id']} · since {started}", WIDTH),
        _fit(
            f"values in {doc['valuesIn']:,} · records out {doc['recordsOut']:,} · bad values {doc['badValues']:,}"
            f" · dead letters {doc['deadLetters']:,}",
            WIDTH,
        ),
        "",
    ]
    for m in doc["machines"]:
        state = "connected" if m["connected"] else f"DISCONNECTED ({m['reason']})"
        name = f"{m['name']} ({m['id']})" if m["name"] else m["id"]
        lines.append(_fit(f"{name}: {state} since {m['since']}", WIDTH))
        if (clock := m.get("clock")) and clock["state"] != "agrees":
            lines.append(_fit(f"  ! source clock {clock['state']} by {_age(abs(clock['offsetS']))}", WIDTH))
        for e in m["elements"]:
            value = show(e["value"]) if e["valueKnown"] else "–"
            unit = f" {e['unit']}" if e["unit"] else ""
            status = e["statusName"] or "–"
            what = _fit(e["label"] or e["path"], 28)
            row = f"  {what:<28} {_fit(value + unit, 22):>22} {_age(e['ageS']):>7} {status}"
            lines.append(_fit(row, WIDTH))
            if e["problem"]:
                lines.append(_fit(f"    ! {e['problem']}", WIDTH))
    lines.append("")
    for s in doc["sinks"]:
        depth = ", ".join(f"{lane} {n:,}" for lane, n in s["buffer"].items() if n) or "empty"
        link = "up" if s["connected"] else "DOWN"
        lines.append(_fit(f"sink {s['name']} ({link}): sent {s['sent']:,}, buffered {depth}", WIDTH))
        if s["lastError"]:
            lines.append(_fit(f"    last error: {s['lastError']}", WIDTH))
    open_gaps = [g for g in doc["gaps"] if g["end"] is None]
    still = f", {len(open_gaps)} open" if open_gaps else ""
    lines.append(_fit(f"interruptions in 24 h: {len(doc['gaps'])}{still}", WIDTH))
    for p in doc["problems"]:
        lines.append(_fit(f"finding {p['machine']} {p['path']}: {p['problem']}", WIDTH))
    return "\n".join(lines)
