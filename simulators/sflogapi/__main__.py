"""python -m simulators.sflogapi --port N --key K: serve the fake usage-log API until SIGTERM/SIGINT.

Prints `READY http://host:port` once it listens. The keys are test keys: a real crtfcKey never
belongs on a command line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from simulators.sflogapi.app import FakeLogApi, Limits, serve

log = logging.getLogger("simulators.sflogapi")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulators.sflogapi", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, required=True, help="TCP port")
    parser.add_argument("--key", action="append", required=True, help="a crtfcKey it accepts (repeatable)")
    parser.add_argument("--per-day", type=int, default=5000, help="requests per key and KST day (default %(default)s)")
    parser.add_argument("--log-level", default="WARNING", help="Python logging level (default %(default)s)")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    api = FakeLogApi(set(args.key), limits=Limits(per_day=args.per_day))
    runner = await serve(api, args.host, args.port)
    try:
        print(f"READY http://{args.host}:{args.port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run(args))
    except Exception:
        log.exception("fake usage-log API failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
