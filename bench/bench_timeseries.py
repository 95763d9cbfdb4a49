"""What the Time Series Data costs on the hot path: the pipeline's per-value ring append (a dict lookup of the
element's ring, a tuple, a deque append), next to a baseline measured in the same run: one dict store per
value, what `LiveValues.update` does for every value already. Then, for scale, what one read costs when
the ring changed (`write_ring`: plain values into SDK objects), per record. Prints and exits 0.

    .venv/bin/python bench/bench_timeseries.py      # ~10 s
"""

from __future__ import annotations

import timeit

from aas_models import spec
from aas_models.build import build_environment
from aas_models.live import LiveValues
from aas_models.timeseries import rings_for

ELEMENTS = 5000
MACHINES = 10  # the elements spread over this many shells, one ring each
PUBLISHES = 40  # each publish: one value of every element, 100 ms apart
T0 = 1_790_000_000.0
WINDOW = 1000


def _shells() -> list[spec.Shell]:
    plate = spec.Nameplate("Bench Co.", "Bench machine", "https://example.com/bench", "OC-1")
    per = ELEMENTS // MACHINES
    return [
        spec.Shell(
            f"urn:bench:aas:m{m}",
            f"m{m}",
            f"urn:bench:asset:m{m}",
            plate,
            tuple(spec.Element(f"Var_{i:05d}", "Double") for i in range(per)),
            time_series=spec.TimeSeries(records=WINDOW, sampling_interval_s=0.1),
        )
        for m in range(MACHINES)
    ]


def main() -> None:
    shells = _shells()
    env = build_environment(shells, language="en")
    live = LiveValues(series=rings_for(env.shells))
    per = ELEMENTS // MACHINES
    # (handle, shell id, path) as the pipeline's bindings have them; handle -> its ring's append, as Pipeline builds.
    items = [(m * per + i, shells[m].id, f"Var_{i:05d}") for m in range(MACHINES) for i in range(per)]
    appends = {h: live.series[shell].values.append for h, shell, _ in items}
    publishes = [(T0 + p * 0.1, [float(p + h) for h, _, _ in items]) for p in range(PUBLISHES)]
    values = PUBLISHES * ELEMENTS
    store: dict[tuple[str, str], object] = {}

    def baseline() -> None:
        for _, vs in publishes:
            for (_, shell, path), v in zip(items, vs, strict=True):
                store[(shell, path)] = v

    def with_ring() -> None:
        series = appends.get
        for t, vs in publishes:
            for (h, shell, path), v in zip(items, vs, strict=True):
                store[(shell, path)] = v
                add = series(h)
                if add is not None:
                    add((t, path, v))

    base = min(timeit.repeat(baseline, number=1, repeat=5)) / values * 1e6
    both = min(timeit.repeat(with_ring, number=1, repeat=5)) / values * 1e6
    ring = next(iter(live.series.values()))

    def read() -> None:
        for r in live.series.values():  # one more value in every ring: each is written again
            r.values.append((T0 + PUBLISHES * 0.1, "Var_00000", 0.0))
        live.apply_series(env)

    records = min(WINDOW, len({e[0] for e in ring.values}))
    written = min(timeit.repeat(read, number=1, repeat=3)) / MACHINES
    print(f"{values:,} values ({ELEMENTS:,} elements, {MACHINES} shells, {PUBLISHES} publishes), best of several runs:")
    print(f"  baseline, a dict store per value          {base:6.3f} µs/value   1.00")
    print(f"  the same and the ring append              {both:6.3f} µs/value   {both / base:4.2f}x baseline")
    alone = both - base
    print(f"  the ring append alone                     {alone:6.3f} µs/value   {alone / base:4.2f}x baseline")
    print(
        f"  a read after a change (write_ring), per shell: {written * 1e3:6.1f} ms for {records} records "
        f"of {per} values ({written / records * 1e6:6.1f} µs/record); only on reads, never per value"
    )


if __name__ == "__main__":
    main()
