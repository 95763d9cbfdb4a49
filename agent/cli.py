"""The `edge-agent` command: run, check, export, write, ..."""

from __future__ import annotations

import logging
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import ClassVar, cast

import click

from aas_models.build import ShellEnvironment
from agent import config as config_mod
from agent import logs, usage
from agent.config_sinks import SfLogSinkConfig
from agent.version import VERSION


def _load(path: Path) -> config_mod.Config:
    return _load_noting(path)[0]


def _load_noting(path: Path) -> tuple[config_mod.Config, list[str]]:
    try:
        return config_mod.load_noting(path)
    except config_mod.ConfigError as e:
        click.echo(f"configuration error:\n{e}", err=True)
        sys.exit(2)


def _shells(cfg: config_mod.Config) -> ShellEnvironment:
    from agent.shells import build_shells

    try:
        return build_shells(cfg)
    except ValueError as e:
        click.echo(f"configuration error: {e}", err=True)
        sys.exit(2)


def _used(cfg: config_mod.Config, use: str, data_bytes: int, action: str) -> None:
    """A person used the agent: record it for the usage log (agent/usage.py)."""
    problem = usage.note(cfg.agent.data_dir, use, data_bytes, action)
    if problem:
        click.echo(problem, err=True)


CONFIG = click.option(
    "-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="YAML file"
)


class _Commands(click.Group):
    """The commands that live in other modules are imported when they are asked for, so `run` does not pay
    for them at start-up (bench/bench_startup.py)."""

    ELSEWHERE: ClassVar[dict[str, tuple[str, str]]] = {
        "browse": ("agent.cli_supplier", "browse_command"),  # the supplier's commands
        "mapping": ("agent.cli_mapping", "mapping_group"),  # CSV mapping tables
        "service": ("agent.cli_service", "service_group"),  # the systemd service
        "status": ("agent.cli_status", "status_command"),  # asks the running agent
        "reload": ("agent.cli_status", "reload_command"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.ELSEWHERE})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.ELSEWHERE:
            import importlib

            module, name = self.ELSEWHERE[cmd_name]
            command: click.Command = getattr(importlib.import_module(module), name)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, "-V", "--version", prog_name="edge-agent", message="%(prog)s %(version)s")
def main() -> None:
    """Manufacturing data-collection edge agent: OPC UA -> AAS -> durable buffer -> MQTT."""


@main.command()
@CONFIG
@click.option("--live", is_flag=True, help="also connect to each source and check every point on the server")
def check(config_path: Path, live: bool) -> None:
    """Validate a config file without connecting to anything (with --live: and against the servers).

    Exit status with --live: 0 no problem, 1 problems (each with its fix), 2 a source cannot be reached.
    """
    cfg = _load(config_path)
    _shells(cfg)
    points = sum(len(e.points) for e in cfg.equipment)
    click.echo(
        f"{config_path}: OK — site {cfg.site.id}, {len(cfg.equipment)} machines, {points} points, "
        f"{len(cfg.sources)} OPC UA sources, sinks: {', '.join(f'{s.id} ({s.type})' for s in cfg.sinks)}"
    )
    if live:
        from agent import livecheck
        from agent.config import secrets

        logs.setup("critical", "text", secrets(cfg))  # everything the person needs is printed
        sys.exit(livecheck.run(cfg, config_path, click.echo))


@main.command()
@CONFIG
@click.option("--seconds", type=float, default=None, help="stop after this many seconds")
@click.option("--log-format", type=click.Choice(["auto", "json", "text"]), default="auto")
def run(config_path: Path, seconds: float | None, log_format: str) -> None:
    """Collect, buffer and forward until SIGTERM/Ctrl-C; SIGHUP re-reads the config (docs/operations.md)."""
    # A SIGHUP (systemctl reload) before the agent can take it must not end the process (its default).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    cfg, notes = _load_noting(config_path)
    from agent.app import ComponentFailed, StartError, run_agent
    from agent.config import secrets

    logs.setup(cfg.agent.log_level, log_format, secrets(cfg))
    for note in notes:
        logging.getLogger("agent.config").warning("%s", note)
    from agent.shells import shell_specs

    try:
        shell_specs(cfg)  # what building the AAS model would refuse; the model itself is built once running
    except ValueError as e:
        click.echo(f"configuration error: {e}", err=True)
        sys.exit(2)
    try:
        run_agent(cfg, stop_after=seconds, config_path=config_path.resolve())
    except StartError as e:
        click.echo(f"cannot start: {e}", err=True)
        sys.exit(2)
    except ComponentFailed as e:
        # Restarting in-process did not help: a fresh process (systemd Restart=on-failure) may.
        click.echo(f"stopped: {e}", err=True)
        sys.exit(1)


@main.command()
@CONFIG
@click.option("--format", "fmt", type=click.Choice(["json", "xml", "aasx"]), help="default: from the -o extension")
@click.option(
    "--metamodel",
    type=click.Choice(["3.0", "3.1"]),
    default="3.0",
    show_default=True,
    help="AAS metamodel version; most tools read 3.0 only (docs/aas.md)",
)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
def export(config_path: Path, fmt: str | None, metamodel: str, output: Path) -> None:
    """Write the Asset Administration Shell environment built from the config (JSON, XML or AASX)."""
    from aas_models.export import ExportError, Metamodel, format_for, write_environment

    try:
        chosen = format_for(output, fmt)
        cfg = _load(config_path)
        write_environment(_shells(cfg), chosen, output, metamodel=cast(Metamodel, metamodel))  # click.Choice'd
    except ExportError as e:
        click.echo(f"export: {e}", err=True)
        sys.exit(2)
    click.echo(f"wrote {output} ({chosen}, AAS metamodel {metamodel})")
    _used(cfg, usage.CREATE, output.stat().st_size, f"edge-agent export --format {chosen}")


@main.group()
def cert() -> None:
    """The agent's own OPC UA application instance certificate."""


@cert.command("show")
@CONFIG
def cert_show(config_path: Path) -> None:
    """Print the agent's certificate (created if absent): path, thumbprint, application URI, validity."""
    from adapters.opcua.pki import Pki
    from agent.wiring import application_uri

    cfg = _load(config_path)
    own = Pki(cfg.agent.data_dir / "pki").ensure_own(application_uri(cfg))
    click.echo(f"certificate:     {own.cert}")
    click.echo(f"private key:     {own.key}")
    click.echo(f"thumbprint:      {own.thumbprint}")
    click.echo(f"application URI: {own.application_uri}")
    click.echo(f"valid until:     {own.not_after}")
    click.echo("Give the certificate to the OPC UA server's administrator to trust (its 'trusted' folder).")


@main.command()
@CONFIG
@click.argument("what")
def trust(config_path: Path, what: str) -> None:
    """Trust an OPC UA server certificate: a file, or the thumbprint of one the agent rejected."""
    from adapters.opcua.pki import Pki

    cfg = _load(config_path)
    try:
        path = Pki(cfg.agent.data_dir / "pki").trust(what)
    except (ValueError, OSError) as e:
        click.echo(f"cannot trust {what}: {e}", err=True)
        sys.exit(2)
    click.echo(f"trusted: {path} (a running agent uses it at its next connection attempt)")
    _used(cfg, usage.CREATE, path.stat().st_size, "edge-agent trust")


@main.command(context_settings={"ignore_unknown_options": True})  # VALUE may be negative: -5
@CONFIG
@click.argument("machine")
@click.argument("element")
@click.argument("value")
def write(config_path: Path, machine: str, element: str, value: str) -> None:
    """Write VALUE to a machine's point, if control.allow allows it (docs/control.md); logged.

    Exit status: 0 written, 1 the server refused or could not be reached, 2 the guard refused.
    """
    import asyncio

    from agent import control
    from agent.config import secrets

    cfg = _load(config_path)
    logs.setup("critical", "text", secrets(cfg))  # everything the person needs is printed below
    result = asyncio.run(control.write(cfg, machine, element, value, user=usage.os_user(), ip=usage.CLI_IP))
    if result.outcome == "not-allowed":
        click.echo(f"refused: {result.message}", err=True)
        sys.exit(2)
    click.echo(result.message, err=not result.ok)
    if result.write is not None:
        ms = [round(t * 1000) for t in (result.write.total_s, result.write.connect_s, result.write.write_s)]
        click.echo(f"took {ms[0]} ms (connect {ms[1]} ms, write {ms[2]} ms)")
    if result.warning:
        click.echo(result.warning, err=True)
    sys.exit(0 if result.ok else 1)


@main.group("dead-letter")
def dead_letter() -> None:
    """Records a far end refused for good: list them, or put them back into their sink's buffer."""


@dead_letter.command("list")
@CONFIG
@click.option("--sink", default=None, help="only this sink's")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line, bodies included")
def dead_letter_list(config_path: Path, sink: str | None, limit: int, as_json: bool) -> None:
    """Show dead letters (read-only: works while the agent runs)."""
    from agent import deadletters

    cfg = _load(config_path)
    sys.exit(deadletters.show(cfg, sink, limit, as_json))


@dead_letter.command("replay")
@CONFIG
@click.option("--sink", default=None, help="only this sink's")
def dead_letter_replay(config_path: Path, sink: str | None) -> None:
    """Put dead letters back into their sink's buffer, to be sent again (the agent must be stopped)."""
    from agent import deadletters

    cfg = _load(config_path)
    sys.exit(deadletters.replay(cfg, sink))


def _when(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected ISO 8601, e.g. 2026-11-30 or 2026-11-30T09:00+09:00") from None
    return t if t.tzinfo is not None else t.astimezone()  # a time without offset is this machine's local time


@main.command()
@CONFIG
@click.option("--since", default=None, help="start of the period (ISO 8601; default: all the statistics kept)")
@click.option("--until", default=None, help="end of the period (ISO 8601; default: now)")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help=".html or .json")
def level(config_path: Path, since: str | None, until: str | None, output: Path) -> None:
    """Evidence of the smart-factory level (기초/중간1/중간2) from what the agent measured (docs/level-evidence.md)."""
    from agent import level as report_of
    from agent.measure import elements, stats_path
    from agent.stats import StatsError

    cfg = _load(config_path)
    if output.suffix.lower() not in (".html", ".json"):
        click.echo(f"cannot write {output}: give a .html or a .json file", err=True)
        sys.exit(2)
    try:
        report = report_of.build(
            stats_path(cfg.agent.data_dir),
            since=_when(since),
            until=_when(until),
            configured=elements(cfg),
            machines=[e.id for e in cfg.equipment],
            control_enabled=cfg.control.enabled,
        )
    except StatsError as e:
        click.echo(f"no report: {e} (the agent writes its statistics while it runs, once a minute)", err=True)
        sys.exit(2)
    data = report_of.render_json(report) if output.suffix.lower() == ".json" else report_of.render_html(report).encode()
    try:
        output.write_bytes(data)
    except OSError as e:
        click.echo(f"cannot write {output}: {e.strerror}", err=True)
        sys.exit(2)
    for lv in report["levels"]:
        mark = "supported" if lv["supported"] else f"not supported: missing {len(lv['missing'])}"
        click.echo(f"{lv['ko']} ({lv['en']}): {mark}")
    click.echo(f"wrote {output}")
    _used(cfg, usage.READ, len(data), "edge-agent level")


@main.group("usage")
def usage_group() -> None:
    """The usage log (사후관리): what the agent recorded, and resuming after the API said AP1030."""


def _sflog_sinks(cfg: config_mod.Config) -> list[SfLogSinkConfig]:
    found = [s for s in cfg.sinks if isinstance(s, SfLogSinkConfig)]
    if not found:
        click.echo("the config has no usage-log sink (a sink with type: sflog)", err=True)
        sys.exit(2)
    return found


@usage_group.command("show")
@CONFIG
def usage_show(config_path: Path) -> None:
    """Where each usage-log sink stands: state, calls today, windows pending, last answer."""
    from agent.wiring import sflog_dir
    from uploader.sflog import WindowStore

    cfg = _load(config_path)
    for s in _sflog_sinks(cfg):
        directory = sflog_dir(cfg, s)
        if not (directory / "sflog.db").exists():
            click.echo(f"{s.id}: nothing recorded yet ({directory})")
            continue
        store = WindowStore(directory)
        try:
            ledger = store.ledger
            stopped = ledger.stopped
            click.echo(f"{s.id}: {'STOPPED (' + stopped + ')' if stopped else 'sending'}")
            click.echo(f"  paused until: {ledger.paused_until or '-'}")
            click.echo(f"  windows pending: {store.pending_windows()}")
        finally:
            store.close()
    pending = len(list((cfg.agent.data_dir / usage.SPOOL_DIR).glob("spool*")))
    click.echo(f"spool files not yet taken by the agent: {pending}")


@usage_group.command("resume")
@CONFIG
def usage_resume(config_path: Path) -> None:
    """Send again after the API answered AP1030 (not collected): a running agent notices within a minute."""
    from agent.wiring import sflog_dir
    from uploader.sflog import WindowStore

    cfg = _load(config_path)
    for s in _sflog_sinks(cfg):
        store = WindowStore(sflog_dir(cfg, s))
        try:
            was = store.ledger.resume()
        finally:
            store.close()
        click.echo(f"{s.id}: {'resumed: sending again' if was else 'was not stopped'}")


if __name__ == "__main__":
    main()
