"""What the level evidence costs on the hot path: `Stats.values_each` (once per publish, every stored
value) and `MachineAnalyzer.observe` (each value of an analysed element), per value, next to a
baseline measured in the same run: one dict store per value, what `LiveValues.update` does for every
value already. Prints and exits 0.

    .venv/bin/python bench/bench_measure.py      # ~10 s
"""

from __future__ import annotations

import tempfile
import timeit
from pathlib import Path

from agent.analysis import AnalysisSpec, MachineAnalyzer
from agent.stats import ElementInfo, Stats

ELEMENTS = 5000
PUBLISHES = 40  # each publish: one value of every element, 100 ms apart
T0 = 1_790_000_000.0


def main() -> None:
    handles = list(range(1, ELEMENTS + 1))
    publishes = [[T0 + p * 0.1] * ELEMENTS for p in range(PUBLISHES)]
    values = PUBLISHES * ELEMENTS
    with tempfile.TemporaryDirectory() as tmp:
        stats = Stats(Path(tmp) / "stats.db", [ElementInfo(h, "m", f"E{h}", 100, "subscribe") for h in handles])
        live: dict[tuple[str, int], float] = {}

        def baseline() -> None:
            for times in publishes:
                for h, t in zip(handles, times, strict=True):
                    live[("shell", h)] = t

        def stats_run() -> None:
            for times in publishes:
                stats.values_each(handles, times)

        spec = AnalysisSpec(machine="m", state="State", part_count="PartCount", alarm="AlarmCode", ideal_cycle_s=7.0)
        analyzer = MachineAnalyzer(spec, T0)
        observations = [(("state", "part_count", "alarm")[i % 3], i // 30, T0 + i * 0.01) for i in range(values)]

        def analysis_run() -> None:
            observe = analyzer.observe
            for role, v, t in observations:
                observe(role, "RUN" if role == "state" else v, t)

        base = min(timeit.repeat(baseline, number=1, repeat=5)) / values * 1e6
        each = min(timeit.repeat(stats_run, number=1, repeat=5)) / values * 1e6
        seen = min(timeit.repeat(analysis_run, number=1, repeat=3)) / values * 1e6
        stats.close()
    print(f"{values:,} values ({ELEMENTS:,} elements x {PUBLISHES} publishes), best of several runs:")
    print(f"  baseline, a dict store per value      {base:6.3f} µs/value   1.00")
    print(f"  Stats.values_each                     {each:6.3f} µs/value   {each / base:4.2f}x baseline")
    print(f"  MachineAnalyzer.observe               {seen:6.3f} µs/value   {seen / base:4.2f}x baseline")


if __name__ == "__main__":
    main()
