"""python -m simulators.cloud: serve the reference cloud receiver until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from simulators.cloud.app import DEFAULT_MAX_BODY_BYTES, make_app
from simulators.cloud.faults import DEFAULT_REJECT_REASON, Faults
from simulators.cloud.store import POSTGRESQL_SCHEMES, StoreError, open_store

log = logging.getLogger("simulators.cloud")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.cloud",
        description="Reference KAMP-style cloud receiver: takes wire-format batches over HTTP, stores each "
        "record once, answers per record, and serves what it stored (docs/cloud-api.md).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default %(default)s)")
    parser.add_argument(
        "--db",
        default="cloud-receiver.sqlite3",
        help="SQLite file (created if missing; several receivers on one machine may share one), or a PostgreSQL "
        "DSN postgresql://user@host:5432/dbname (any number of receivers; password from PGPASSWORD or ~/.pgpass, "
        "not the command line) (default %(default)s)",
    )
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        help="an accepted bearer token (repeatable; visible in the process list, prefer --token-file)",
    )
    parser.add_argument("--token-file", type=Path, help="accepted bearer tokens, one per line (# comments allowed)")
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=DEFAULT_MAX_BODY_BYTES / 2**20,
        help="largest request body, after gzip (default %(default)s)",
    )
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default %(default)s)")

    faults = parser.add_argument_group("misbehaviour on request (POST /v1/ingest only)")
    faults.add_argument("--test-controls", action="store_true", help="serve GET/POST /_faults to change these live")
    faults.add_argument("--delay-ms", type=int, default=0, metavar="N", help="delay every ingest answer by N ms")
    faults.add_argument(
        "--drop-next", type=int, default=0, metavar="N", help="close the next N connections after part of the body"
    )
    faults.add_argument("--fail-next", type=int, default=0, metavar="N", help="answer the next N with HTTP 500")
    faults.add_argument("--throttle-next", type=int, default=0, metavar="N", help="answer the next N with HTTP 429")
    faults.add_argument("--unavailable-next", type=int, default=0, metavar="N", help="answer the next N with HTTP 503")
    faults.add_argument(
        "--retry-after", type=int, default=1, metavar="S", help="Retry-After seconds of 429 and 503 (default 1)"
    )
    faults.add_argument("--reject-id", action="append", default=[], metavar="ID", help="reject this record id")
    faults.add_argument(
        "--reject-element", action="append", default=[], metavar="NAME", help="reject records of this element"
    )
    faults.add_argument("--reject-reason", default=DEFAULT_REJECT_REASON, help="the reason given for those")
    return parser.parse_args(argv)


def tokens_of(args: argparse.Namespace) -> list[str]:
    """The accepted tokens from --token and --token-file; raises ValueError saying what is missing."""
    tokens = [t.strip() for t in args.token if t.strip()]
    if args.token_file is not None:
        try:
            lines = args.token_file.read_text().splitlines()
        except OSError as e:
            raise ValueError(f"cannot read --token-file {args.token_file}: {e.strerror}") from None
        tokens += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not tokens:
        raise ValueError("no bearer token: give --token-file PATH (one token per line) or --token TOKEN")
    return tokens


def shown(db: str) -> str:
    """The --db value as it may be logged: a PostgreSQL DSN without its password."""
    if db.startswith(POSTGRESQL_SCHEMES):
        from simulators.cloud.pgstore import redact

        return redact(db)
    return db


def faults_of(args: argparse.Namespace) -> Faults:
    return Faults(
        delay_ms=args.delay_ms,
        drop_next=args.drop_next,
        fail_next=args.fail_next,
        throttle_next=args.throttle_next,
        unavailable_next=args.unavailable_next,
        retry_after=args.retry_after,
        reject_ids=frozenset(args.reject_id),
        reject_elements=frozenset(args.reject_element),
        reject_reason=args.reject_reason,
    )


async def serve(args: argparse.Namespace, tokens: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    app = make_app(
        open_store(args.db),
        tokens=tokens,
        faults=faults_of(args),
        test_controls=args.test_controls,
        max_body_bytes=int(args.max_body_mb * 2**20),
    )
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port).start()
        log.info(
            "listening on http://%s:%d, storing into %s%s",
            args.host,
            args.port,
            shown(args.db),
            ", test controls on" if args.test_controls else "",
        )
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(args, tokens_of(args)))
    except (ValueError, StoreError, OSError) as e:
        log.error("cloud receiver cannot run: %s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
