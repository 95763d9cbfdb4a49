"""Resident memory of the AAS model for one machine of 5,000 and of 10,000 points (one Double per node).

Each figure comes from a fresh child process: RSS after gc.collect() with the model built, minus RSS before
(psutil). "as the agent builds it" holds each machine's Asset Interfaces Description and Mapping Configuration
as a recipe (aas_models/lazy.py); "all held" is the same environment with them held as SDK objects (how the
agent held them before). The first read of a lazy submodel builds and serializes it once (the API does that in
a worker thread); the figures after it show what stays (the compressed JSON, and the allocator's slack).

Run: .venv/bin/python bench/bench_model_memory.py   — ~1 min; prints figures only, no thresholds, no asserts.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import time

SIZES = (5_000, 10_000)


def config_text(points: int) -> str:
    lines = [
        "site: {id: bench}",
        "agent: {data_dir: /tmp/bench-model-memory}",
        "sources:",
        "  - {id: line1, endpoint: 'opc.tcp://127.0.0.1:4840'}",
        "sinks:",
        "  - {type: file, path: /tmp/bench-model-memory/records.jsonl}",
        "equipment:",
        "  - id: m1",
        "    source: line1",
        "    nameplate: {manufacturer_name: Maker, product_designation: Machine, uri_of_product: 'https://x',"
        " order_code: M-1}",
        "    points:",
    ]
    lines += [f'      - {{node: "ns=1;s=Var{i:05d}", path: Var_{i:05d}, type: Double}}' for i in range(points)]
    return "\n".join(lines) + "\n"


def child(points: int, lazy: bool) -> None:
    import psutil

    from aas_models.build import build_environment
    from aas_models.lazy import LazySubmodel
    from agent.config import parse
    from agent.shells import shell_specs, site_spec

    process = psutil.Process()

    def rss() -> float:
        gc.collect()
        return float(process.memory_info().rss) / 2**20

    cfg = parse(config_text(points))
    specs = shell_specs(cfg)
    before = rss()
    started = time.perf_counter()
    env = build_environment(
        specs, language=cfg.site.language, site=site_spec(cfg), concept_descriptions=True, lazy=lazy
    )
    build_s = time.perf_counter() - started
    model_mb = rss() - before
    out = [f"{model_mb:.1f}", f"{build_s:.2f}"]
    if lazy:
        entries = [e for e in env.store.entries() if isinstance(e, LazySubmodel)]
        started = time.perf_counter()
        entries[0].doc()  # the first read: builds and serializes the machine's AID and AIMC
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        entries[0].doc()
        again_s = time.perf_counter() - started
        aid = next(e for e in entries if e.id_short == "AssetInterfacesDescription")
        last = ["InterfaceOPCUA", "InteractionMetadata", "properties", f"Var_{points - 1:05d}"]
        started = time.perf_counter()
        element = aid.group.path(aid.id, last)  # the API's read of one element (GET .../submodel-elements/...)
        element_s = time.perf_counter() - started
        assert element is not None and element[-1]["idShort"] == last[-1]
        kept_kb = aid.group.kept_bytes / 1024
        out += [
            f"{first_s:.2f}",
            f"{again_s:.2f}",
            f"{rss() - before:.1f}",
            f"{element_s * 1000:.1f}",
            f"{kept_kb:.0f}",
        ]
    print(" ".join(out))


def run(points: int, lazy: bool) -> list[float]:
    r = subprocess.run(
        [sys.executable, __file__, "--child", str(points), "lazy" if lazy else "held"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [float(x) for x in r.stdout.split()]


def main() -> None:
    print("points   model as the agent builds it   all held (AID/AIMC as objects)   AID JSON: first read, again,")
    print("                                                                            model after the first read;")
    print("                                                                            one AID element read, JSON kept")
    for points in SIZES:
        lazy = run(points, True)
        held = run(points, False)
        print(
            f"{points:6d}   {lazy[0]:6.1f} MB (built in {lazy[1]:.1f} s)      "
            f"{held[0]:6.1f} MB (built in {held[1]:.1f} s)         {lazy[2]:.1f} s, {lazy[3]:.2f} s, {lazy[4]:.1f} MB;"
            f" {lazy[5]:.1f} ms, {lazy[6]:.0f} KiB"
        )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), sys.argv[3] == "lazy")
    else:
        main()
