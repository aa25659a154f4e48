"""``vpr-edge loops``: offline loop-closure detection over a sequence of frames.

Every frame is described once, then fed in order to a :class:`LoopClosureDetector` (which
adds it to a fresh in-memory map after searching). With ground truth, the run is scored
(precision, recall) and ``--sweep`` re-runs the detector over ``min_score`` thresholds on the
same descriptors to print a precision-recall curve and the recall at 100% precision.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import InvalidInputError
from ..geometric import VerifyConfig
from ..loop_closure import (
    STAMP_TOLERANCE,
    FrameResult,
    LoopClosureConfig,
    LoopClosureDetector,
    check_stamp_unit,
)
from ..loop_metrics import (
    Eligible,
    GroundTruth,
    LoopScore,
    pr_curve,
    recall_at_full_precision,
    score_loops,
    truth_from_names,
    truth_from_positions,
)
from ..paths import expanded_path
from ..poses import StreamClock
from .arg_types import (
    finite_float,
    inlier_count,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from .common import (
    add_model_arguments,
    add_source_arguments,
    backend_options,
    check_ground_truth_arguments,
    frame_numbers_by_key,
    require_pose,
    source_from,
)
from .help_format import HelpFormatter, summary
from .output import TO_STDOUT, output_errors, print_facts, print_table, write_json, write_text

log = logging.getLogger("vpr_edge")


class FrameInfo(NamedTuple):
    """What the run keeps of a frame: its position in the sequence (which is also its place
    id in the detector's map and its row in the ground truth), key, stamp and pose."""

    index: int
    key: str
    stamp: float | None
    pose: tuple[float, ...] | None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("loops", help="detect loop closures over a sequence (offline)",
                       formatter_class=HelpFormatter,
                       description=summary(__doc__))
    add_model_arguments(p)
    add_source_arguments(p)
    d = LoopClosureConfig()
    g = p.add_argument_group("detector")
    g.add_argument("--min-score", type=finite_float, default=d.min_score,
                   help="ignore candidates below this cosine similarity")
    g.add_argument("--consistency", type=positive_int, default=d.consistency,
                   help="successive frames that must agree before a loop is reported")
    g.add_argument("--consistency-radius", type=non_negative_int, default=d.consistency_radius,
                   help="how far apart (frames) successive candidates may be and agree")
    g.add_argument("--exclusion-frames", type=non_negative_int, default=d.exclusion_frames,
                   help="the most recent frames never matched")
    g.add_argument("--exclusion-seconds", type=non_negative_float, default=None,
                   help="also exclude frames stamped this recently (needs stamps, in seconds; "
                        "warns of frames that repeat the stamp before them)")
    g.add_argument("--candidates", type=positive_int, default=d.candidates, help="top-k searched")
    g.add_argument("--verify", action="store_true",
                   help="geometric verification (ORB + RANSAC; needs vpr-edge[verify])")
    g.add_argument("--min-inliers", type=inlier_count, default=VerifyConfig().min_inliers,
                   help="RANSAC inliers needed to verify")
    t = p.add_argument_group("ground truth (optional)")
    t.add_argument("--gt", choices=("names", "positions"), default=None,
                   help="names: frame-aligned folders: frames of different folders whose "
                        "frame numbers (the first number in a file name that differs between "
                        "the files of its folder: 7 in 000007_cam0.jpg) are within "
                        "--gt-tolerance are the same place; positions: poses from --list or "
                        "--pose-topic within --gt-radius")
    t.add_argument("--gt-tolerance", type=int, default=2,
                   help="frame-number tolerance for --gt names")
    t.add_argument("--gt-radius", type=float, default=10.0, help="metres for --gt positions")
    t.add_argument("--sweep", action="store_true",
                   help="precision-recall curve over 25 min_score thresholds (quantiles of "
                        "the frames' best scores); recall_at_100_precision is the best recall "
                        "among them, so a threshold between two may do a little better")
    p.add_argument("--csv", type=expanded_path, default=None,
                   help="write one row per frame here: index, source, stamp; best_match and "
                        "best_score (the most similar place outside the exclusion windows "
                        "that scores at least --min-score; empty if none); loop_match, "
                        "loop_score, verified, inliers (empty without a loop); and with "
                        "--gt, correct" + TO_STDOUT)
    p.add_argument("--json", type=expanded_path, default=None,
                   help="write the summary here" + TO_STDOUT)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def detect(descriptors: np.ndarray, stamps: list, config: LoopClosureConfig,
           features: list | None = None) -> list[FrameResult]:
    """Run the detector over precomputed descriptors with a fresh exact in-memory map."""
    from ..index import IndexSettings, PlaceIndex

    # exact search; the graph is never searched, so it is not refined either
    index = PlaceIndex(descriptors.shape[1],
                       settings=IndexSettings(mode="exact", refine_adds=False))
    detector = LoopClosureDetector(index, config)
    return [detector.process_descriptor(d, stamp=stamps[i],
                                        features=None if features is None else features[i])
            for i, d in enumerate(descriptors)]


def _warn_of_repeated_stamps(stamps: list, config: LoopClosureConfig) -> None:
    """With --exclusion-seconds, say when frames repeat the stamp of the frame before them (a
    stuck camera clock, header stamps never set): the window then excludes every frame
    stamped alike, and a stuck clock found no loop at all, without a word."""
    if not config.exclusion_seconds:  # at 0 s, frames stamped alike are still candidates
        return
    repeats = sum(a == b for a, b in zip(stamps, stamps[1:]))
    if repeats:
        log.warning("%d of %d frames have the stamp of the frame before them (a stuck camera "
                    "clock, header stamps never set?): --exclusion-seconds measures time by "
                    "these stamps, so frames stamped alike exclude each other; check the "
                    "stamps, or use --exclusion-frames alone", repeats, len(stamps))


def _eligible(config: LoopClosureConfig, stamps: list) -> Eligible:
    """Which of ``frames`` (frame indices, an array or one int) could be a loop for frame
    ``q``: outside the detector's exclusion windows, as the detector keeps them when ``q``
    is queried (the time window covers the frames since time last restarted:
    :class:`~vpr_edge.poses.StreamClock`; a frame less out of order keeps the window, and a
    corrupt stamp far ahead counts as the stamp of the frame after it, from that frame on)."""
    since_jump = [0] * len(stamps)  # first frame of each frame's stretch of forward time
    window = config.exclusion_seconds
    held = list(stamps)  # the stamps the detector's window holds after the last frame
    # per frame that came back from a corrupt stamp (and moved some held stamps): the frame,
    # the frames whose stamps it moved, and their stamps before it
    moves: list[tuple[int, np.ndarray, np.ndarray]] = []
    clock = StreamClock()
    for i, stamp in enumerate(stamps):
        since_jump[i] = since_jump[i - 1] if i else 0
        if stamp is None:
            continue
        if clock.restarts_at(stamp):
            since_jump[i] = i
        elif window is not None and clock.returns_at(stamp):
            moved = [j for j in range(since_jump[i], i)
                     if held[j] is not None and held[j] > stamp + window]
            if moved:
                moves.append((i, np.array(moved, dtype=np.int64),
                              np.array([held[j] for j in moved], dtype=np.float64)))
            for j in moved:
                held[j] = stamp
        clock.advance(stamp)
    # (stamps are all known with --exclusion-seconds: _check_frame refuses a frame without)
    held = None if window is None else np.asarray(held, dtype=np.float64)

    def held_at(q: int, frames: np.ndarray) -> np.ndarray:
        """The stamps of ``frames`` as the window holds them when frame ``q`` is queried: a
        frame moves them once it is added, after its own query."""
        frames = np.atleast_1d(frames)
        values = held[frames]
        for i, moved, before in reversed(moves):  # undo the moves not made yet, newest first
            if i < q:
                break
            at = np.minimum(np.searchsorted(moved, frames), len(moved) - 1)
            undone = moved[at] == frames
            values[undone] = before[at[undone]]
        return values

    def eligible(q: int, frames: np.ndarray | int) -> np.ndarray:
        frames = np.asarray(frames)
        allowed = frames <= q - 1 - config.exclusion_frames
        if held is not None:  # (the frame's own stamp as it came, the others' as held)
            allowed &= ((frames < since_jump[q])
                        | (held_at(q, frames).reshape(frames.shape)
                           <= stamps[q] - window + STAMP_TOLERANCE))
        return allowed

    return eligible


def _score(results: list[FrameResult], truth: GroundTruth, eligible: Eligible) -> LoopScore:
    matches = [None if r.loop is None else r.loop.match_id for r in results]
    return score_loops(matches, truth, eligible)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from ..geometric import orb_features
    from ..localizer import Localizer

    options = dict(min_score=args.min_score, consistency=args.consistency,
                   consistency_radius=args.consistency_radius,
                   exclusion_frames=args.exclusion_frames,
                   exclusion_seconds=args.exclusion_seconds, candidates=args.candidates,
                   verify=args.verify)
    try:
        config = LoopClosureConfig(**options,
                                   verify_config=VerifyConfig(min_inliers=args.min_inliers))
    except InvalidInputError as exc:  # named as the user typed them: --min-score, not min_score
        text = str(exc).removeprefix("LoopClosureConfig: ").replace("verify=True", "--verify")
        for name in options:  # ("verify" is a word in the messages too)
            if name != "verify":
                text = re.sub(rf"\b{name}\b", "--" + name.replace("_", "-"), text)
        raise InvalidInputError(text) from exc
    check_ground_truth_arguments(args)
    if args.sweep and args.gt is None:
        raise InvalidInputError("--sweep scores each threshold against ground truth: give "
                                "--gt names or --gt positions")
    source = source_from(args)
    if args.gt == "names" and args.bag is None:  # (a bag's keys end in the message number)
        frame_numbers_by_key(source)  # names it cannot tell apart: refused before describing
    progress = not args.no_progress
    start = time.perf_counter()
    # one pass over the frames, keeping what the detection needs, not the pixels (a bag's
    # decoded frames would otherwise all be in memory at once)
    frames: list[FrameInfo] = []
    chunks: list[np.ndarray] = []
    features: list | None = [] if config.verify else None
    pending: list[np.ndarray] = []
    orb_s = 0.0

    with Localizer(args.model, backend=args.backend, batch_size=args.batch,
                   backend_options=backend_options(args)) as loc:
        def flush() -> None:
            nonlocal orb_s
            if pending:
                chunks.append(loc.describe(pending))
                if features is not None:
                    t = time.perf_counter()
                    features.extend(orb_features(px, config.verify_config) for px in pending)
                    orb_s += time.perf_counter() - t
                pending.clear()

        for frame in tqdm(source, total=len(source), desc="describe", unit="frame",
                          disable=not progress):
            pixels = source.pixels(frame)
            if pixels is None:  # damaged, and --skip-damaged
                continue
            _check_frame(frame, len(frames), config, args.gt)
            frames.append(FrameInfo(len(frames), frame.key, frame.stamp, frame.pose))
            pending.append(pixels)
            if len(pending) >= args.batch:
                flush()
        flush()
    if not frames:
        raise InvalidInputError(f"{source.description}: no frames")
    descriptors = np.concatenate(chunks)
    describe_s = time.perf_counter() - start - orb_s  # decoding + inference
    stamps = [f.stamp for f in frames]
    _warn_of_repeated_stamps(stamps, config)
    truth = None
    if args.gt == "names":
        truth = truth_from_names([f.key for f in frames], args.gt_tolerance)
    elif args.gt == "positions":
        truth = truth_from_positions(np.array([f.pose[:3] for f in frames]), args.gt_radius)
    t0 = time.perf_counter()
    results = detect(descriptors, stamps, config, features)
    detect_s = time.perf_counter() - t0

    summary: dict[str, Any] = {
        "frames": len(frames), "loops_reported": sum(r.loop is not None for r in results),
        "describe_ms_per_frame": round(1000 * describe_s / max(1, len(frames)), 2),
        "detect_ms_per_frame": round(1000 * detect_s / max(1, len(frames)), 3),
        **({"damaged_frames_skipped": len(source.skipped)} if source.skipped else {}),
    }
    if truth is not None and not truth.any_match():  # every reported loop is then a false one
        log.warning("--gt %s: no frame of this sequence has a ground-truth loop, so recall "
                    "is 0 whatever is found (--gt names pairs frames of different folders by "
                    "file number: give each traversal's folder; --gt positions pairs frames "
                    "within --gt-radius)", args.gt)
    if truth is not None:
        eligible = _eligible(config, stamps)
        summary.update({f"at_min_score_{config.min_score}": _score(results, truth,
                                                                    eligible).to_dict()})
        if args.sweep:
            best = [r.best.score for r in detect(descriptors, stamps,
                                                 replace(config, min_score=-1.0, verify=False))
                    if r.best is not None]
            if not best:
                seconds = ("" if config.exclusion_seconds is None
                           else f", --exclusion-seconds {config.exclusion_seconds:g}")
                raise InvalidInputError(
                    f"--sweep: no frame had a candidate outside the exclusion window "
                    f"({len(frames)} frames, --exclusion-frames {config.exclusion_frames}"
                    f"{seconds}); give a longer sequence or a smaller window")
            thresholds = np.unique(np.quantile(best, np.linspace(0.0, 0.99, 25)).round(4))
            sweep = tqdm(thresholds, desc="sweep", unit="threshold", leave=False,
                         disable=not progress)
            rows = pr_curve(lambda t: _score(detect(descriptors, stamps,
                                                    replace(config, min_score=t), features),
                                             truth, eligible), sweep)
            summary["pr_curve"] = rows
            summary["recall_at_100_precision"] = recall_at_full_precision(rows)
            print_table(rows, title="precision-recall over min_score")
    print_facts({k: v for k, v in summary.items() if k != "pr_curve"},
                title=f"vpr-edge loops: {source.description}")
    if args.csv is not None:
        _write_csv(args.csv, frames, results, truth)
    write_json(args.json, summary)
    return summary


def _check_frame(frame, position: int, config: LoopClosureConfig, gt: str | None) -> None:
    """Refuse, at the first frame that lacks it, what the run will need."""
    if config.exclusion_seconds is not None and frame.stamp is None:
        raise InvalidInputError(f"frame {position} ({frame.key}) has no stamp: "
                                "--exclusion-seconds needs stamps (use --list with a "
                                "timestamp column, or a bag)")
    try:
        check_stamp_unit(frame.stamp, config)
    except InvalidInputError as exc:
        raise InvalidInputError(f"frame {position} ({frame.key}): {exc}") from None
    if gt == "positions":
        require_pose(frame, position)


def _write_csv(path: Path, frames: list[FrameInfo], results: list[FrameResult],
               truth: GroundTruth | None) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")  # (not CR LF: for awk, cut, grep)
    writer.writerow(["index", "source", "stamp", "best_match", "best_score", "loop_match",
                     "loop_score", "verified", "inliers", "correct"])
    for frame, r in zip(frames, results):
        loop = r.loop
        correct = (None if truth is None or loop is None
                   else truth.is_match(frame.index, loop.match_id))
        writer.writerow([
            frame.index, frame.key, frame.stamp,
            None if r.best is None else r.best.place_id,
            None if r.best is None else round(r.best.score, 5),
            None if loop is None else loop.match_id,
            None if loop is None else round(loop.score, 5),
            None if loop is None else loop.verified,
            None if loop is None else loop.inliers, correct,
        ])
    with output_errors(path, "--csv"):
        write_text(path, buffer.getvalue())
