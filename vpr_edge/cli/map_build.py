"""``vpr-edge map build``: describe a sequence of frames and save them as a map.

Resumable: every place records the frame it came from (``meta["source"]``), the map is saved
atomically every ``--save-every`` frames, and a rerun over the same frames skips those already
in the map. Ctrl-C, SIGTERM, a frame that cannot be decoded (``--skip-damaged`` leaves such
frames out instead) or described (NaN descriptors: the error names it), or any other error
stops the run after saving the places before it; a crash or a power cut loses at most the
frames since the last save.

Frames arrive in route order, which makes a weaker search graph than a random order: each
inference batch is added at once (a batch enters the graph shuffled, and is re-inserted when
the next one is in: ``IndexSettings.refine_adds``), and when this run at least doubled the map
(a new map, say) and the map is searched through its graph, the graph is rebuilt in a random
order before the last save (:meth:`~vpr_edge.index.PlaceIndex.rebuild`; ``--no-rebuild``
skips it).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InferenceError, InvalidInputError
from ..index import map_store
from ..paths import expanded_path
from ..sources import place_meta, stored_keys
from .common import add_model_arguments, add_source_arguments, backend_options, source_from
from .help_format import HelpFormatter, summary
from .output import TO_STDOUT, print_facts, write_json

if TYPE_CHECKING:
    from ..index import IndexSettings

log = logging.getLogger("vpr_edge")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build (or extend/resume) a map from frames",
                       formatter_class=HelpFormatter,
                       description=summary(__doc__))
    add_model_arguments(p)
    p.add_argument("map", type=expanded_path,
                   help="map directory (created, or extended if it exists)")
    add_source_arguments(p)
    p.add_argument("--save-every", type=int, default=500,
                   help="save the map atomically after this many new frames")
    p.add_argument("--no-rebuild", action="store_true",
                   help="keep the route-order graph (skip the random-order rebuild at the end)")
    p.add_argument("--json", type=expanded_path, default=None,
                   help="write a JSON summary here" + TO_STDOUT)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run, writes={"map folder": "map"})


def build_map(model: Path, map_dir: Path, source, *, backend: str = "auto", batch: int = 8,
              save_every: int = 500, progress: bool = True, rebuild: bool = True,
              options: dict | None = None,
              index_settings: IndexSettings | None = None) -> dict[str, Any]:
    """Add every frame of ``source`` not yet in the map; return a summary. ``rebuild``:
    rebuild the graph in a random order at the end when this run at least doubled the map;
    ``index_settings`` for a new map (default ``IndexSettings()``)."""
    if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
        raise InvalidInputError(f"--save-every must be a positive number of frames, got "
                                f"{save_every!r}")
    problem = map_store.save_problem(map_dir)
    if problem:  # found before any frame is described, not at the first save
        raise InvalidInputError(f"{map_dir}: the map cannot be saved there ({problem})")
    from tqdm import tqdm

    from ..localizer import Localizer

    start = time.perf_counter()
    with Localizer(model, map_dir, backend=backend, batch_size=batch,
                   backend_options=options, index_settings=index_settings) as loc:
        done = stored_keys(loc.get(pid).meta.get("source") for pid in loc.index.ids())
        added = skipped = since_save = 0
        saved = first = len(loc)  # places in the map on disk, and before this run
        infer_seconds = 0.0
        pending: list = []

        def flush() -> None:
            nonlocal infer_seconds
            if not pending:
                return
            t0 = time.perf_counter()
            kept, damaged = [], None
            for f in pending:
                try:
                    pixels = source.pixels(f)
                except InvalidInputError as exc:  # the frames before it still go in
                    damaged = exc
                    break
                if pixels is not None:  # None: skipped (--skip-damaged)
                    kept.append((f, pixels))
            pending[:] = [f for f, _ in kept]
            if damaged is not None:
                flush()
                raise damaged
            if not pending:
                return
            descriptors, failure = describe_naming_the_frame(loc, kept)
            infer_seconds += time.perf_counter() - t0
            if failure is not None:  # the frames before it go in, and are saved
                if descriptors is not None:
                    del pending[len(descriptors):]
                    add_pending(descriptors)
                raise failure
            add_pending(descriptors)

        def add_pending(descriptors) -> None:
            nonlocal added, since_save
            # one add per batch: a batch enters the graph shuffled and is re-inserted by the
            # next add (IndexSettings.refine_adds); a new map is rebuilt at the end. Ctrl-C
            # waits until the add is whole (and is raised at its end: the batch is in)
            loc.index.add(descriptors, stamps=[f.stamp for f in pending],
                          poses=[f.pose for f in pending],
                          meta=[place_meta(f) for f in pending])
            added += len(pending)
            since_save += len(pending)
            pending.clear()

        def read_ahead() -> Iterator:
            """The source's frames; a message that does not even deserialise (found a batch
            ahead of decoding) comes after the frames before it, one of which may be the
            first damaged frame."""
            frames = iter(tqdm(source, total=len(source), desc="map build", unit="frame",
                               disable=not progress))
            while True:
                try:
                    yield next(frames)
                except StopIteration:
                    return
                except InvalidInputError:
                    flush()
                    raise

        try:
            for frame in read_ahead():
                if not done.isdisjoint(frame.keys()):
                    skipped += 1
                    continue
                # a frame given again later in this run (a link to its file, a list naming it
                # twice) is in the map by then, as a rerun would find it
                done.update(frame.keys())
                pending.append(frame)
                if len(pending) >= batch:
                    flush()
                if since_save >= save_every:
                    loc.save()
                    since_save, saved = 0, len(loc)
            flush()
            if not len(loc) and source.skipped:  # (a map of no places would be saved)
                raise InvalidInputError(
                    f"{source.description}: every frame was damaged ({len(source.skipped)} "
                    f"skipped; the first: {source.skipped[0]}), so no map was written")
            rebuild_seconds = None
            graph = not loc.index.settings.searches_exactly(len(loc), loc.index.dim)
            if rebuild and added and added >= len(loc) - added and graph:
                # (searched through its graph once opened; the build itself may still be
                # searching exactly, up to EXACT_KEEP_FACTOR beyond the exact limit)
                t0 = time.perf_counter()
                loc.index.rebuild()  # (interrupted, it leaves the route-order graph)
                rebuild_seconds = round(time.perf_counter() - t0, 3)
        except (Exception, KeyboardInterrupt) as exc:
            # a frame that cannot be read or described, Ctrl-C or SIGTERM, running out of
            # memory: keep the places added so far
            if len(loc) != saved:
                loc.save()
                log.warning("saved the %d places this run added before %s to %s (a rerun "
                            "resumes after them)", len(loc) - first,
                            "the interruption" if isinstance(exc, KeyboardInterrupt)
                            else "the error", map_dir)
            raise
        loc.save()
        places = len(loc)
    seconds = time.perf_counter() - start
    return {
        "map": str(map_dir), "source": source.description, "added": added,
        "already_in_map": skipped, "places": places, "seconds": round(seconds, 3),
        "describe_ms_per_frame": round(1000 * infer_seconds / added, 2) if added else None,
        "graph_rebuild_seconds": rebuild_seconds,
        **({"damaged_frames_skipped": len(source.skipped)} if source.skipped else {}),
    }


def describe_naming_the_frame(loc, frames: list) -> tuple[Any, InferenceError | None]:
    """Descriptors of ``(frame, pixels)`` pairs, and None; or, when the model fails on one
    (NaN/inf descriptors: an FP16 overflow, a broken engine), the descriptors of the frames
    before it (None for none) and an :class:`InferenceError` naming that frame's source (the
    backend's message can only give its position in the batch). The batch is described again
    one frame at a time to find it."""
    try:
        return loc.describe([pixels for _, pixels in frames]), None
    except InferenceError:
        pass
    described = []
    for frame, pixels in frames:
        try:
            described.append(loc.describe(pixels))
        except InferenceError as exc:
            return (np.stack(described) if described else None,
                    InferenceError(f"{frame.key}: {exc}"))
    return np.stack(described), None  # (a fault that did not come back)


def run(args: argparse.Namespace) -> dict[str, Any]:
    summary = build_map(args.model, args.map, source_from(args), backend=args.backend,
                        batch=args.batch, save_every=args.save_every,
                        progress=not args.no_progress, rebuild=not args.no_rebuild,
                        options=backend_options(args))
    print_facts(summary, title="vpr-edge map build")
    write_json(args.json, summary)
    return summary
