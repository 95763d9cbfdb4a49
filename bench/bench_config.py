"""Start-up cost of reading a large config: `agent.config.load` on a 10,000-point file, against the same
file read with PyYAML's pure-Python loader alone (the baseline, measured in the same run).

    .venv/bin/python bench/bench_config.py [--points 10000] [--runs 3]

Before this change the agent parsed the file twice with the pure-Python loader (once for values, once for
line numbers); now libyaml's loader parses it once, and line numbers are worked out only for an error.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from agent import config


def write_config(path: Path, points: int, machines: int = 20) -> None:
    nameplate = "{manufacturer_name: M, product_designation: P, uri_of_product: 'https://x', order_code: O}"
    lines = ["site: {id: s}", "sources:", "  - {id: plc, endpoint: 'opc.tcp://127.0.0.1:4840/'}", "equipment:"]
    per = points // machines
    for m in range(machines):
        lines += [f"  - id: m{m}", "    source: plc", f"    nameplate: {nameplate}", "    points:"]
        lines += [f"      - {{node: 'ns=2;s=M{m}.V{i}', path: V{i}, type: Double, unit: rpm}}" for i in range(per)]
    lines += ["sinks:", "  - {type: file, path: /tmp/bench-config.jsonl}"]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "big.yaml"
        write_config(file, args.points)
        text = file.read_text()
        base, agent = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            yaml.load(text, Loader=yaml.SafeLoader)
            base.append(time.perf_counter() - t)
            t = time.perf_counter()
            cfg = config.load(file)
            agent.append(time.perf_counter() - t)
        assert sum(len(e.points) for e in cfg.equipment) == args.points
    b, a = statistics.median(base), statistics.median(agent)
    print(f"{args.points:,} points: pure-Python YAML parse alone {b:.2f} s; agent config load (parse + validate) "
          f"{a:.2f} s; ratio {a / b:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
