"""The fault matrix at full length: what the suite runs small (tests/test_faults.py), run long, with a report.

  kills   N SIGKILLs at random moments in one run (every third right after a start, before the agent
          can have connected), against the factory simulator whose every written value is recorded;
          then every value produced is either delivered or inside a gap of its element.
  clocks  the device clock 3 s behind and 3 s ahead of the gateway, the OPC UA connection dropped
          every 10 s for --clock-seconds; the same invariant.

Usage: .venv/bin/python bench/fault_runs.py [--kills 20] [--clock-seconds 60] [--seed 1] [--only kills|clocks]
Needs mosquitto. Prints each run's report and exits 1 if any value is unaccounted for.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from simulators import faults
from simulators.faults import Bed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--clock-seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=["kills", "clocks"])
    args = parser.parse_args()
    failed = False
    if args.only in (None, "kills"):
        with tempfile.TemporaryDirectory(prefix="fault-kills-") as tmp, Bed(Path(tmp)) as bed:
            started = time.monotonic()
            report = faults.kills(bed, args.kills, random.Random(args.seed), log=lambda m: print(f"  {m}", flush=True))
            print(f"{args.kills} kills in {time.monotonic() - started:.0f} s: {report}")
            failed |= bool(report.missing or report.reissued or report.invented)
            for node, t in report.missing[:10]:
                print(f"  unaccounted: {node} @ {t.isoformat()}")
    if args.only in (None, "clocks"):
        for offset in (-3.0, 3.0):
            with (
                tempfile.TemporaryDirectory(prefix="fault-clocks-") as tmp,
                Bed(Path(tmp), clock_offset=offset, via_proxy=True) as bed,
            ):
                report = faults.link_drops(bed, every_s=10.0, duration_s=args.clock_seconds)
                print(f"device clock {offset:+.0f} s, link dropped every 10 s for {args.clock_seconds:.0f} s: {report}")
                failed |= bool(report.missing or report.invented)
                for node, t in report.missing[:10]:
                    print(f"  unaccounted: {node} @ {t.isoformat()}")
    print(
        "verdict:",
        "VALUES UNACCOUNTED FOR (or never produced)"
        if failed
        else "every value delivered or inside its element's gap, none invented",
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
