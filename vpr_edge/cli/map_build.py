"""``vpr-edge map build``: describe a sequence of frames and save them as a map.

Resumable: every place records the frame it came from (``meta["source"]``), the map is saved
atomically every ``--save-every`` frames, and a rerun over the same frames skips those already
in the map. A crash or Ctrl-C loses at most the frames since the last save.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .common import add_model_arguments, add_source_arguments, backend_options, source_from
from .help_format import HelpFormatter
from .output import print_facts, write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build (or extend/resume) a map from frames",
                       formatter_class=HelpFormatter,
                       description=__doc__.splitlines()[0])
    add_model_arguments(p)
    p.add_argument("map", type=Path, help="map directory (created, or extended if it exists)")
    add_source_arguments(p)
    p.add_argument("--save-every", type=int, default=500,
                   help="save the map atomically after this many new frames")
    p.add_argument("--json", type=Path, default=None, help="write a JSON summary here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def build_map(model: Path, map_dir: Path, source, *, backend: str = "auto", batch: int = 8,
              save_every: int = 500, progress: bool = True,
              options: dict | None = None) -> dict[str, Any]:
    """Add every frame of ``source`` not yet in the map; return a summary."""
    from tqdm import tqdm

    from ..localizer import Localizer

    start = time.perf_counter()
    with Localizer(model, map_dir, backend=backend, batch_size=batch,
                   backend_options=options) as loc:
        done = {loc.get(pid).meta.get("source") for pid in loc.index.ids()}
        added = skipped = since_save = 0
        infer_seconds = 0.0
        pending: list = []

        def flush() -> None:
            nonlocal added, since_save, infer_seconds
            if not pending:
                return
            t0 = time.perf_counter()
            descriptors = loc.describe([f.pixels() for f in pending])
            infer_seconds += time.perf_counter() - t0
            for frame, descriptor in zip(pending, descriptors):
                loc.add_descriptor(descriptor, stamp=frame.stamp, pose=frame.pose,
                                   meta={"source": frame.key, "index": frame.index})
            added += len(pending)
            since_save += len(pending)
            pending.clear()

        for frame in tqdm(source, total=len(source), desc="map build", unit="frame",
                          disable=not progress):
            if frame.key in done:
                skipped += 1
                continue
            pending.append(frame)
            if len(pending) >= batch:
                flush()
            if since_save >= save_every:
                loc.save()
                since_save = 0
        flush()
        loc.save()
        places = len(loc)
    seconds = time.perf_counter() - start
    return {
        "map": str(map_dir), "source": source.description, "added": added,
        "already_in_map": skipped, "places": places, "seconds": round(seconds, 3),
        "describe_ms_per_frame": round(1000 * infer_seconds / added, 2) if added else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    summary = build_map(args.model, args.map, source_from(args), backend=args.backend,
                        batch=args.batch, save_every=args.save_every,
                        progress=not args.no_progress, options=backend_options(args))
    print_facts(summary, title="vpr-edge map build")
    write_json(args.json, summary)
    return summary
