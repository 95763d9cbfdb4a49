"""Rough cost of the live-value hot path: 1,000 `update` calls vs one `apply` (and a JSON snapshot).

Run: .venv/bin/python bench/bench_aas_live.py   — prints timings only; no thresholds, no asserts.
"""

from __future__ import annotations

import math
import time

from aas_models.build import build_environment
from aas_models.export import dumps_json
from aas_models.live import LiveValues
from aas_models.spec import Element, Nameplate, Shell

N = 1_000
SHELL_ID = "urn:example:aas:bench"


def main() -> None:
    elements = tuple(
        Element(f"Group{i // 50:02d}.Value{i:04d}", "Double" if i % 2 else "Int32", unit="mm") for i in range(N)
    )
    shell = Shell(
        id=SHELL_ID,
        id_short="Bench01",
        asset_id="urn:example:asset:bench",
        nameplate=Nameplate("Maker", "Machine", "https://maker.example/m", "M-1"),
        elements=elements,
    )
    started = time.perf_counter()
    env = build_environment([shell])
    build_s = time.perf_counter() - started

    live = LiveValues()
    update = live.update
    values = [float(i) + 0.5 if i % 2 else i for i in range(N)]
    paths = [e.path for e in elements]
    started = time.perf_counter()
    for path, value in zip(paths, values, strict=True):
        update(SHELL_ID, path, value)
    update_s = time.perf_counter() - started

    started = time.perf_counter()
    problems = live.apply(env)
    apply_s = time.perf_counter() - started

    started = time.perf_counter()
    snapshot = dumps_json(env)
    dump_s = time.perf_counter() - started

    print(f"build {N} elements:   {build_s * 1e3:8.2f} ms")
    print(f"{N} x update:          {update_s * 1e3:8.3f} ms  ({update_s / N * 1e9:.0f} ns each)")
    print(f"apply {N} values:     {apply_s * 1e3:8.3f} ms  ({len(problems)} problems)")
    print(f"apply / update ratio:  {apply_s / update_s if update_s else math.inf:8.1f}")
    print(f"JSON snapshot:         {dump_s * 1e3:8.2f} ms  ({len(snapshot) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
