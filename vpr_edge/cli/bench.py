"""``vpr-edge bench``: how long describe, add and query take on this machine.

A ``query`` is preprocessing (resize, colour order) + inference + search. The map is filled
with ``--places`` synthetic unit descriptors (Gaussian directions: a hard case for HNSW) so
the search cost at that size is real; the frame is a real image (``--image``) or noise.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..images import load_image, prepare_frame
from ..paths import expanded_path
from .arg_types import positive_int
from .common import add_model_arguments, backend_options
from .help_format import HelpFormatter, summary
from .output import print_facts, print_table, write_json


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
    p.add_argument("--json", type=expanded_path, default=None, help="write the results here")
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


def benchmark(model: Path, *, places: int, repeat: int, frame: np.ndarray,
              backend: str = "auto", options: dict | None = None,
              progress: bool = True) -> dict[str, Any]:
    from tqdm import tqdm

    from ..index import PlaceIndex
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
        rng = np.random.default_rng(0)
        synthetic = rng.standard_normal((places, meta.dim)).astype(np.float32)
        synthetic /= np.linalg.norm(synthetic, axis=1, keepdims=True)
        loc.index = PlaceIndex(meta.dim, fingerprint=meta.fingerprint)
        for start in tqdm(range(0, places, 10000), desc="bench: map", unit="10k places",
                          leave=False, disable=not progress):
            loc.index.add(synthetic[start:start + 10000])
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
