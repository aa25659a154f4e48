"""Resident memory of the runtime process: the default model and a 100k-place map.

1. Exports the default model (a fresh ``vpr-train init`` model on Gardens Point, or
   ``--model``) and builds a ``--places`` map of its descriptor size, saved as a map directory.
   The map's descriptors are synthetic route descriptors (``index_scaling_quick.py``); it is
   built with ``ef_construction`` ``--build-ef`` (default 40) to save time: the memory of an
   hnswlib graph depends on ``M`` and the number of places, not on ``ef_construction``.
2. A fresh Python process (what runs on a robot: no torch) imports ``vpr_edge``, opens the
   model, opens the map, answers ``--queries`` ``Localizer.query`` calls on camera frames, and
   reports its resident memory (``VmRSS``) after each step and its peak (``VmHWM``), the time
   the model alone takes to open (``model_open_s``) and the time ``Localizer(model, map)``
   takes (``open_s``: the model and the map).

    python benchmarks/runtime_memory.py --json benchmarks/results/runtime_memory.json   # ~1 min
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vpr_edge.cli.help_format import HelpFormatter

from loop_closure import add_model_arguments, default_model  # neighbour script

# Runs in the fresh process: prints one JSON line of memory figures (MiB).
PROBE = r"""
import json, sys, time
import numpy as np

def status():
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields

model, map_dir, queries = sys.argv[1], sys.argv[2], int(sys.argv[3])
steps = {"python + numpy": status()}
import vpr_edge
steps["import vpr_edge"] = status()
tic = time.perf_counter()
loc = vpr_edge.Localizer(model, backend="cpu")
model_open_s = time.perf_counter() - tic
steps["model opened"] = status()
loc.close()
tic = time.perf_counter()
loc = vpr_edge.Localizer(model, map_dir, backend="cpu")
open_s = time.perf_counter() - tic
steps["model + map opened"] = status()
rng = np.random.default_rng(0)
for _ in range(queries):
    loc.query(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), k=5, exclude_recent=50)
steps["after queries"] = status()
print(json.dumps({"steps": steps, "places": len(loc.index), "model_open_s": model_open_s,
                  "open_s": open_s,
                  "torch_imported": "torch" in sys.modules}))
"""


def build_map(model: Path, map_dir: Path, places: int, build_ef: int, seed: int) -> float:
    """A ``places`` map for ``model`` from synthetic route descriptors; returns seconds."""
    from vpr_edge.index import IndexSettings
    from vpr_edge.localizer import Localizer

    from index_scaling_quick import synthetic_route  # neighbour script

    tic = time.perf_counter()
    settings = IndexSettings(ef_construction=build_ef, initial_capacity=places)
    with Localizer(model, map_dir, backend="cpu", index_settings=settings) as loc:
        for start in range(0, places, 10000):
            count = min(10000, places - start)
            rows = synthetic_route(count, loc.metadata.dim, seed + start)
            loc.index.add(rows, stamps=np.arange(start, start + count, dtype=np.float64))
        loc.save()
    return time.perf_counter() - tic


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    add_model_arguments(p)
    p.add_argument("--places", type=int, default=100000, help="map size")
    p.add_argument("--build-ef", type=int, default=40,
                   help="ef_construction of the benchmark map (memory does not depend on it)")
    p.add_argument("--queries", type=int, default=20, help="queries before the last reading")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic descriptors")
    p.add_argument("--json", type=Path, default=None, help="write results here")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="vpr-memory-"))
    try:
        model = args.model
        if model is None:
            if not (args.data / "gardens_point").is_dir():
                print(f"skipped: no --model and no real data under {args.data}")
                return 0
            model = default_model(args.data, work)
        map_dir = work / "map"
        build_s = build_map(model, map_dir, args.places, args.build_ef, args.seed)
        map_bytes = sum(f.stat().st_size for f in map_dir.rglob("*") if f.is_file())
        probe = subprocess.run([sys.executable, "-c", PROBE, str(model), str(map_dir),
                                str(args.queries)], capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            print(probe.stderr[-3000:], file=sys.stderr)
            return 1
        result = json.loads(probe.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    steps = result["steps"]
    base = steps["model opened"]["VmRSS"]
    print(f"{result['places']} places, map on disk {map_bytes / 2**20:.0f} MiB, built in "
          f"{build_s:.0f} s, opened (model + map) in {result['open_s']:.2f} s (the model "
          f"alone {result['model_open_s']:.2f} s), "
          f"torch imported: {result['torch_imported']}")
    print(f"{'step':<22}{'RSS MiB':>10}{'peak MiB':>10}")
    for name, fields in steps.items():
        print(f"{name:<22}{fields['VmRSS']:>10.0f}{fields['VmHWM']:>10.0f}")
    per_place = (steps["model + map opened"]["VmRSS"] - base) * 2**20 / result["places"]
    print(f"map in memory: {per_place:.0f} bytes per place")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "benchmark": "runtime_memory", **result, "map_disk_bytes": map_bytes,
            "build_s": round(build_s, 1), "build_ef_construction": args.build_ef,
            "map_rss_bytes_per_place": round(per_place), "machine": {"cpus": os.cpu_count()},
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
