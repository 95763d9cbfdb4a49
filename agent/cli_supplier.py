"""Commands for suppliers (공급기업) who map a new machine: `edge-agent browse` writes a config from what
a server offers; `edge-agent check --live` (agent/cli.py, agent/livecheck.py) checks one against it.
docs/supplier-guide.md walks through both."""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import sys
import time
from pathlib import Path

import click
from click.core import ParameterSource

from adapters.opcua import inspect, security
from adapters.opcua.browse import BrowseResult
from adapters.opcua.pki import Pki
from adapters.opcua.spec import Endpoint
from agent import config as config_mod
from agent import logs, mapping, usage
from agent.config_base import PLAIN_ID

_MODES = ("Sign", "SignAndEncrypt")


def _fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(2)


def _security(text: str) -> tuple[str, str]:
    if text == "None":
        return "None", "None"
    policy, _, mode = text.partition("/")
    if policy not in security.POLICIES or mode not in _MODES:
        allowed = ", ".join(f"{p}/{m}" for p in security.POLICIES for m in _MODES)
        raise click.BadParameter(f"{text!r}: give None, or one of {allowed}", param_hint="--security")
    return policy, mode


class _Progress:
    """One line on stderr, rewritten in place (at most 5 times a second)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.last = 0.0
        self.latest: tuple[int, int, float] | None = None
        self.shown: tuple[int, int, float] | None = None

    def __call__(self, nodes: int, variables: int, elapsed: float) -> None:
        self.latest = (nodes, variables, elapsed)
        now = time.monotonic()
        if now - self.last >= 0.2:
            self.last = now
            self._show()

    def _show(self) -> None:
        if self.latest is None or self.latest == self.shown:
            return
        nodes, variables, elapsed = self.shown = self.latest
        line = f"browsing {self.endpoint}: {nodes:,} nodes seen, {variables:,} variables found, {elapsed:.1f} s"
        click.echo(f"\r{line}", err=True, nl=False)

    def done(self) -> None:
        """The last counts, and the end of the line."""
        self._show()
        if self.shown is not None:
            click.echo("", err=True)


def _command_line() -> str:
    """This command as it was given (the options given on the command line), for the file's header."""
    ctx = click.get_current_context()
    words = ["edge-agent", "browse"]
    for param in ctx.command.params:
        name = param.name
        if name is None or ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[name]
        if isinstance(param, click.Argument):
            words.append(str(value))
        elif getattr(param, "is_flag", False):
            words.append(param.opts[-1])
        else:
            words += [param.opts[-1], str(value)]
    return shlex.join(words)


async def _browse(
    ep: Endpoint, pki: Pki | None, root: str | None, progress: _Progress, **options: object
) -> BrowseResult | str:
    """The walk's result, or why the root is not there."""
    async with inspect.session(ep, pki, pki.ensure_own(ep.application_uri) if pki else None) as server:
        lim = await server.limits()
        if root is not None:
            [facts] = await server.inspect([(root, False)], lim)
            if facts.node_id is None:
                return f"the root node {root} is not on the server ({facts.missing})"
        return await server.walk(root, limits_=lim, progress=progress, **options)


@click.command("browse")
@click.argument("endpoint")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="config to write")
@click.option("--root", default=None, metavar="NODE", help="node id to start at  [default: the Objects folder, i=85]")
@click.option("--depth", type=click.IntRange(1, 64), default=32, show_default=True, help="levels below the root")
@click.option("--filter", "filter_text", default=None, metavar="TEXT", help="only variables whose path or id has TEXT")
@click.option("--max-nodes", type=click.IntRange(1), default=20_000, show_default=True, help="stop after N nodes")
@click.option("--timeout", type=click.FloatRange(0.1), default=120.0, show_default=True, help="stop after S seconds")
@click.option("--username", default=None, help="user name token (default: anonymous)")
@click.option("--password-env", default=None, metavar="VAR", help="environment variable that holds the password")
@click.option("--allow-plaintext-password", is_flag=True, help="send the password even where nothing encrypts it")
@click.option("--security", "security_text", default="None", metavar="POLICY/MODE", show_default=True,
              help="e.g. Basic256Sha256/SignAndEncrypt (the agent's certificate is made in DATA_DIR/pki)")  # fmt: skip
@click.option("--site", default="my-site", show_default=True, help="site id for the config (and the certificate)")
@click.option("--source-id", default="opcua", show_default=True, help="the source's id in the config")
@click.option("--data-dir", default="data", show_default=True, help="agent.data_dir of the config")
@click.option("--one-machine", is_flag=True, help="map everything below the root as one machine")
@click.option("--force", is_flag=True, help="overwrite OUTPUT if it exists")
def browse_command(
    endpoint: str,
    output: Path,
    root: str | None,
    depth: int,
    filter_text: str | None,
    max_nodes: int,
    timeout: float,
    username: str | None,
    password_env: str | None,
    allow_plaintext_password: bool,
    security_text: str,
    site: str,
    source_id: str,
    data_dir: str,
    one_machine: bool,
    force: bool,
) -> None:
    """Walk an OPC UA server's address space and write a config that maps every variable found.

    One machine per object below the root (or one for all: --one-machine); a point per variable,
    with its type, array-ness and unit from the server, and its description, access and browse path
    as comments. The config runs as it is (a file sink); fill in site and nameplates, choose and
    rename points, then
    `edge-agent check -c OUTPUT --live`. Exit status: 0 written, 1 written but nothing to map,
    2 not written (the server cannot be reached, OUTPUT exists, a bad option).
    """
    if not endpoint.startswith("opc.tcp://"):
        _fail(f"{endpoint}: an OPC UA endpoint starts with opc.tcp:// (e.g. opc.tcp://192.168.0.10:4840)")
    if not PLAIN_ID.match(site):
        _fail(f"--site {site!r}: use letters, digits, '_', '-' or '.', starting with a letter or digit")
    if output.exists() and not force:
        _fail(f"{output} exists: give --force to overwrite it (your edits in it would be lost)")
    policy, mode = _security(security_text)
    logs.setup("warning", "text", [os.environ.get(password_env, "")] if password_env else [])
    password = None
    if password_env is not None:
        if username is None:
            _fail("--password-env needs --username")
        password = os.environ.get(password_env)
        if password is None:
            _fail(f"--password-env {password_env}: the environment variable {password_env} is not set")
    # The application URI the agent will use with this config (agent.wiring.application_uri).
    app_uri = f"urn:edge-agent:{site}:{socket.gethostname()}"
    pki = Pki(Path(data_dir) / "pki") if policy != "None" else None
    trusted = Path(data_dir) / "pki" / "trusted"
    ep = Endpoint(
        id=source_id,
        url=endpoint,
        username=username,
        password=password,
        security_policy=policy,
        security_mode=mode,
        allow_plaintext_password=allow_plaintext_password,
        application_uri=app_uri,
        trust_command=f"cp -t {shlex.quote(str(trusted))}",  # then the path of the rejected certificate
    )
    progress = _Progress(endpoint)
    try:
        result = asyncio.run(
            _browse(ep, pki, root, progress, max_depth=depth, max_nodes=max_nodes, max_seconds=timeout)
        )
    except inspect.Unreachable as e:
        progress.done()
        _fail(f"cannot browse: {e}")
        return
    except inspect.FAULTS as e:
        progress.done()
        _fail(f"browsing {endpoint} failed: {type(e).__name__}: {e}")
        return
    progress.done()
    if isinstance(result, str):
        _fail(result)
        return
    opts = mapping.Options(
        endpoint=endpoint,
        site=site,
        source_id=source_id,
        data_dir=data_dir,
        sink_path=str(Path(data_dir) / "records.jsonl"),
        username=username,
        password_env=password_env,
        allow_plaintext_password=allow_plaintext_password,
        security_policy=policy,
        security_mode=mode,
        filter=filter_text,
        one_machine=one_machine,
        command=_command_line(),
    )
    written = mapping.render(result, opts)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(written.text, encoding="utf-8")
    click.echo(
        f"wrote {output}: {written.equipment} machine(s), {written.points:,} points from {len(result.variables):,} "
        f"variables ({result.nodes_seen:,} nodes browsed in {result.elapsed_s:.1f} s)"
    )
    if written.filtered_out:
        click.echo(f"--filter left out {written.filtered_out:,} variables")
    if written.not_mapped:
        click.echo(f"{len(written.not_mapped)} variables are in the file commented out (NOT MAPPED), with the reason")
    if result.stopped:
        click.echo(
            f"INCOMPLETE: the walk {result.stopped}, {result.not_walked:,} nodes were not walked; raise --max-nodes "
            "or --timeout, or start at a deeper --root",
            err=True,
        )
    for error in result.errors[:5]:
        click.echo(f"not walked: {error}", err=True)
    problem = usage.note(Path(data_dir), usage.CREATE, len(written.text.encode()), "edge-agent browse")
    if problem:
        click.echo(problem, err=True)
    if not written.equipment:
        click.echo("nothing the agent can map was found: see the comments in the file", err=True)
        sys.exit(1)
    try:
        config_mod.parse(written.text, str(output))
    except config_mod.ConfigError as e:  # a bug of the writer: say so rather than leave a broken file unmentioned
        click.echo(f"the written config does not pass the check:\n{e}", err=True)
        sys.exit(1)
    click.echo(f"next: edit it (site, nameplates, points), then: edge-agent check -c {output} --live")
