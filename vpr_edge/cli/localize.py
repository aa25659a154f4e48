"""``vpr-edge localize``: look up every frame of a traversal in a map; recall and latency.

The map was built from one traversal (``vpr-edge map build``); each frame of another
traversal of the same route is queried. With ground truth by frame number (frame-aligned
folders) or by position, Recall@1/5/10 are printed: the share of the frames that have a true
place in the map (one within --gt-tolerance frames or --gt-radius metres) whose 1/5/10 best
matches hold one; frames without a true place in the map are counted apart
(``frames_without_true_place``), as ``vpr-eval`` does. Always the per-frame latency:
``decode_ms_p50`` (reading and decoding the image file or bag message) and ``query_ms_*``
(``Localizer.query`` on the decoded frame: resize, inference, search).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..loop_metrics import frame_numbers
from ..paths import expanded_path
from .common import (
    add_model_arguments,
    add_source_arguments,
    backend_options,
    check_ground_truth_arguments,
    frame_numbers_by_key,
    require_map,
    require_pose,
    source_from,
)
from .help_format import HelpFormatter, summary
from .output import TO_STDOUT, print_facts, write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("localize", help="query every frame of a traversal against a map",
                       formatter_class=HelpFormatter,
                       description=summary(__doc__))
    add_model_arguments(p, batch=False)  # one frame per query, as on the robot
    p.add_argument("map", type=expanded_path, help="map directory")
    add_source_arguments(p)
    p.add_argument("--gt", choices=("names", "positions"), default=None,
                   help="names: a frame matches places whose source file's frame number "
                        "(the first number in the name that differs between the files of its "
                        "folder: 7 in 000007_cam0.jpg) is within --gt-tolerance; positions: "
                        "within --gt-radius metres")
    p.add_argument("--gt-tolerance", type=int, default=2, help="frames, for --gt names")
    p.add_argument("--gt-radius", type=float, default=25.0, help="metres, for --gt positions")
    p.add_argument("--json", type=expanded_path, default=None,
                   help="write the summary here" + TO_STDOUT)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _source_numbers(places: dict) -> dict[int, int | None]:
    """Each place's source frame number (None: the place records no source file)."""
    sources = {pid: p.meta["source"] for pid, p in places.items() if p.meta.get("source")}
    numbers = dict(zip(sources, frame_numbers(list(sources.values()))))
    return {pid: numbers.get(pid) for pid in places}


def _map_positions(places: dict) -> np.ndarray:
    """The places' positions over the coordinates all their poses have (at most 3)."""
    poses = [p.pose for p in places.values() if p.pose is not None]
    if not poses:
        return np.zeros((0, 3))
    n = min(3, *(len(pose) for pose in poses))
    return np.array([pose[:n] for pose in poses], dtype=np.float64)


def _judged_by_number(want: int, matches: list, numbers: dict[int, int | None],
                      known: np.ndarray, tolerance: int) -> tuple[bool, list[bool]]:
    """Whether the map holds a place within ``tolerance`` frames of frame number ``want``
    (``known``: the map's source numbers, as an array once for all frames), and which
    ``matches`` are such places."""
    present = bool(np.any(np.abs(known - want) <= tolerance))
    return present, [numbers[m.place_id] is not None
                     and abs(numbers[m.place_id] - want) <= tolerance for m in matches]


def _judged_by_position(frame, matches: list, positions: np.ndarray, radius: float
                        ) -> tuple[bool, list[bool]]:
    """Whether the map holds a place within ``radius`` metres of ``frame``'s pose, and which
    ``matches`` are such places."""
    require_pose(frame, frame.index)
    n = min(positions.shape[1], len(frame.pose))
    offsets = positions[:, :n] - np.asarray(frame.pose[:n], dtype=np.float64)
    present = bool(np.any(np.linalg.norm(offsets, axis=1) <= radius))
    return present, [m.pose is not None and _distance(m.pose, frame.pose) <= radius
                     for m in matches]


def _distance(a, b) -> float:
    """Distance of two poses' positions over the coordinates both have (a map of ``x, y``
    poses against a frame's ``x, y, z`` or seven-value odometry pose)."""
    n = min(len(a), len(b), 3)
    return float(np.linalg.norm(np.subtract(a[:n], b[:n])))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from ..localizer import Localizer

    require_map(args.map)
    check_ground_truth_arguments(args)
    source = source_from(args)
    ks = (1, 5, 10)
    hits = {k: 0 for k in ks}
    scored = without_place = 0
    latencies, decode_times = [], []
    with Localizer(args.model, args.map, backend=args.backend,
                   backend_options=backend_options(args)) as loc:
        places = {pid: loc.get(pid) for pid in loc.index.ids()}
        if args.gt == "positions" and places and all(p.pose is None for p in places.values()):
            raise InvalidInputError(
                f"--gt positions: the places of {args.map} have no poses, so no match can be "
                "scored; build a map with poses into a new folder (--list with x, y columns, or "
                "--bag with --pose-topic: a map build over this map skips the frames it "
                "holds), or use --gt names")
        numbers = _source_numbers(places) if args.gt == "names" else {}
        if args.gt == "names" and places and not any(v is not None for v in numbers.values()):
            raise InvalidInputError(
                f"--gt names: the places of {args.map} record no source file (`vpr-edge map "
                "build` stores it; places added with Localizer.add have none), so no match "
                "can be scored by frame number; use --gt positions (places with poses)")
        known = np.array([v for v in numbers.values() if v is not None])
        frame_number = frame_numbers_by_key(source) if args.gt == "names" else {}
        positions = _map_positions(places) if args.gt == "positions" else None
        frames = iter(source)
        bar = tqdm(total=len(source), desc="localize", unit="frame", disable=args.no_progress)
        try:  # closed on Ctrl-C too ("interrupted" then starts a line)
            while True:
                t0 = time.perf_counter()
                frame = next(frames, None)  # a bag message is read here
                if frame is None:
                    break
                pixels = source.pixels(frame)  # and decoded here (or an image file)
                if pixels is None:  # damaged, and --skip-damaged
                    bar.update()
                    continue
                t1 = time.perf_counter()
                matches = loc.query(pixels, k=max(ks))
                latencies.append(time.perf_counter() - t1)
                decode_times.append(t1 - t0)
                bar.update()
                if args.gt is None:
                    continue
                present, good = (_judged_by_number(frame_number[frame.key], matches,
                                                   numbers, known, args.gt_tolerance)
                                 if args.gt == "names" else
                                 _judged_by_position(frame, matches, positions, args.gt_radius))
                if not present:  # no true place in the map: nothing to find
                    without_place += 1
                    continue
                scored += 1
                for k in ks:
                    hits[k] += int(any(good[:k]))
        finally:
            bar.close()
    if not latencies:
        raise InvalidInputError(f"{source.description}: no frames to localize")
    ms = np.array(latencies) * 1000
    summary: dict[str, Any] = {
        "map": str(args.map), "places": len(places), "frames": len(latencies),
        "decode_ms_p50": round(float(np.percentile(np.array(decode_times) * 1000, 50)), 2),
        "query_ms_p50": round(float(np.percentile(ms, 50)), 2),
        "query_ms_p95": round(float(np.percentile(ms, 95)), 2),
        **({"damaged_frames_skipped": len(source.skipped)} if source.skipped else {}),
    }
    if args.gt is not None:
        summary["frames_without_true_place"] = without_place
    if scored:
        summary.update({f"recall@{k}": round(hits[k] / scored, 4) for k in ks})
    print_facts(summary, title=f"vpr-edge localize: {source.description}")
    write_json(args.json, summary)
    return summary
