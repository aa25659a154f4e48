"""``vpr-edge bench``: how long describe, add and query take on this machine.

A ``query`` is preprocessing (resize, colour order) + inference + search. The map is filled
with ``--places`` synthetic unit descriptors (Gaussian directions: a hard case for HNSW) so
the search cost at that size is real; the frame is a real image (``--image``) or noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..images import load_image, prepare_frame
from ..index import IndexSettings, PlaceIndex
from ..paths import expanded_path
from .arg_types import positive_int
from .common import add_model_arguments, backend_options
from .help_format import HelpFormatter, summary
from .output import TO_STDOUT, print_facts, print_table, write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency of describe/add/query on this machine",
                       formatter_class=HelpFormatter,
                       description=summary(__doc__))
    add_model_arguments(p, batch=False)  # times one frame at a time
    p.add_argument("--places", type=int, default=10000, help="map size for the search")
    p.add_argument("--repeat", type=int, default=50, help="timed repetitions per stage")
    p.add_argument("--image", type=expanded_path,
                   default=None, help="frame to use (default: noise)")
    p.add_argument("--frame-size", type=positive_int, nargs=2, default=(480, 640),
                   metavar=("H", "W"), help="camera frame size when no --image")
    p.add_argument("--json", type=expanded_path, default=None,
                   help="write the results here" + TO_STDOUT)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _timed(fn, repeat: int) -> np.ndarray:
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return np.array(out) * 1000.0


#: the share of the available memory the synthetic map may take (the model, the frames being
#: described and the rest of the process need the others)
MEMORY_SHARE = 0.8
#: synthetic places made and added at a time
CHUNK = 10000


def available_memory(cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes of memory new allocations can take here: Linux's MemAvailable, or less where a
    container's memory limit (cgroup v2 ``memory.max`` less ``memory.current``) leaves less;
    None where unknown."""
    found = []
    try:
        with open("/proc/meminfo") as fh:
            found += [int(line.split()[1]) * 1024 for line in fh
                      if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(0, min(found)) if found else None


def map_settings(dim: int, places: int, capacity: int) -> IndexSettings:
    """Settings for a synthetic map of ``places`` and room for ``capacity`` (no growth copies
    mid-benchmark), refused when that would not fit in memory. Beyond the exact limit
    (``IndexSettings.exact_limit``) it searches with HNSW from the start, as ``auto`` would
    at that size, without first making the float32 copy for exact search (4·dim bytes a
    place) at full capacity."""
    settings = IndexSettings()
    if not settings.searches_exactly(places, dim):
        settings = dataclasses.replace(settings, mode="hnsw")
    per_place = PlaceIndex(dim, settings=settings).info()["memory_bytes"]["per_place"]
    available = available_memory()
    if available is not None and per_place * capacity > MEMORY_SHARE * available:
        fits = int(MEMORY_SHARE * available) // per_place - (capacity - places)
        raise InvalidInputError(
            f"--places {places}: the synthetic map of {dim}-d descriptors would need about "
            f"{per_place * capacity / 2**30:,.1f} GiB of memory ({per_place} bytes a place), "
            f"more than the {MEMORY_SHARE:.0%} of the {available / 2**30:,.1f} GiB available "
            f"here it may take; give --places {max(fits, 0)} or fewer")
    return dataclasses.replace(settings, initial_capacity=capacity)


def benchmark(model: Path, *, places: int, repeat: int, frame: np.ndarray,
              backend: str = "auto", options: dict | None = None,
              progress: bool = True) -> dict[str, Any]:
    from tqdm import tqdm

    from ..localizer import Localizer

    if not isinstance(repeat, int) or repeat < 1:
        raise InvalidInputError(f"--repeat must be at least 1, got {repeat!r}")
    if not isinstance(places, int) or places < 0:
        raise InvalidInputError(f"--places must be 0 or more, got {places!r}")
    with Localizer(model, backend=backend, backend_options=options) as loc:
        meta = loc.metadata
        h, w = meta.input_shape
        order = meta.colour_order
        small = prepare_frame(frame, "RGB", h, w, order)[None]
        settings = map_settings(meta.dim, places, places + repeat + 1)  # (+ the timed adds)
        loc.index = PlaceIndex(meta.dim, fingerprint=meta.fingerprint, settings=settings)
        rng = np.random.default_rng(0)
        for start in tqdm(range(0, places, CHUNK), desc="bench: map", unit="10k places",
                          leave=False, disable=not progress):
            chunk = rng.standard_normal((min(CHUNK, places - start), meta.dim), np.float32)
            loc.index.add(chunk / np.linalg.norm(chunk, axis=1, keepdims=True))
        descriptor = loc.describe(frame)
        timed = {
            "preprocess": lambda: prepare_frame(frame, "RGB", h, w, order),
            "inference": lambda: loc._backend.run(small),
            "search": lambda: loc.query_descriptor(descriptor, 5),
            "query (end to end)": lambda: loc.query(frame, 5),
            "describe": lambda: loc.describe(frame),
            "add": lambda: loc.add(frame),
        }
        stages = {name: _timed(fn, repeat)
                  for name, fn in tqdm(timed.items(), desc="bench: stages", unit="stage",
                                       leave=False, disable=not progress)}
        info = loc.info()
    rows = [{"stage": name, "p50_ms": round(float(np.percentile(v, 50)), 3),
             "p99_ms": round(float(np.percentile(v, 99)), 3)} for name, v in stages.items()]
    query = float(np.percentile(stages["query (end to end)"], 50))
    raw = float(np.percentile(stages["inference"], 50))
    return {
        "model": str(model), "backend": info["backend"]["name"],
        "resizer": info["preprocessing"]["resizer"], "places": places,
        "frame": list(frame.shape), "stages": rows,
        "query_overhead_vs_inference": round((query - raw) / raw, 4),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.image is not None:
        frame = load_image(args.image)
    else:
        frame = np.random.default_rng(1).integers(0, 256, (*args.frame_size, 3), np.uint8)
    result = benchmark(args.model, places=args.places, repeat=args.repeat, frame=frame,
                       backend=args.backend, options=backend_options(args),
                       progress=not args.no_progress)
    print_table(result["stages"], title=f"vpr-edge bench: {result['backend']}, "
                                         f"{result['places']} places")
    print_facts({"query overhead vs raw inference": result["query_overhead_vs_inference"],
                 "resizer": result["resizer"]})
    write_json(args.json, result)
    return result
