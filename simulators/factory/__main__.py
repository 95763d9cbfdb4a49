"""python -m simulators.factory: serve the factory simulator until SIGTERM/SIGINT or --seconds."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from simulators.factory.server import FactorySimulator

log = logging.getLogger("simulators.factory")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.factory",
        description="OPC UA factory simulator: CNC, injection moulding and press machines with alarms.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=4840, help="TCP port (default %(default)s)")
    parser.add_argument("--machines", type=int, default=3, help="machines CNC01, IMM01, PRS01, CNC02, ...")
    parser.add_argument("--period", type=float, default=0.5, help="seconds between update rounds")
    parser.add_argument("--seed", type=int, default=1, help="random seed for all signals")
    parser.add_argument(
        "--alarm-every",
        type=int,
        default=0,
        metavar="N",
        help="raise an alarm on every machine after each N cycles (0 = seeded random alarms)",
    )
    parser.add_argument("--record", metavar="PATH", help="append every written value to PATH as JSON lines")
    parser.add_argument(
        "--clock-offset", type=float, default=0.0, metavar="S", help="stamp values S seconds off the true time"
    )
    parser.add_argument("--seconds", type=float, help="exit after this many seconds")
    parser.add_argument("--log-level", default="WARNING", help="Python logging level (default %(default)s)")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    simulator = FactorySimulator(
        host=args.host,
        port=args.port,
        machines=args.machines,
        period=args.period,
        seed=args.seed,
        alarm_every=args.alarm_every,
        record=args.record,
        clock_offset=args.clock_offset,
    )
    await simulator.start()
    try:
        print(f"READY {simulator.endpoint}", flush=True)
        await simulator.serve(stop, timeout=args.seconds)
    finally:
        await simulator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(args))
    except Exception:
        log.exception("factory simulator failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
