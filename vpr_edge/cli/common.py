"""Arguments shared by several ``vpr-edge`` commands."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import InvalidInputError, MapError
from ..loop_metrics import frame_numbers
from ..paths import expanded_path
from ..sources import FrameSource, SourceFrame, open_source
from .arg_types import positive_int


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("frames (give one source)")
    group.add_argument("--images", type=expanded_path, nargs="+", default=None,
                       help="folder(s) of images, each taken in file-name order, one after "
                            "the other")
    group.add_argument("--list", dest="frame_list", type=expanded_path, default=None,
                       help="CSV with an 'image' column (+ optional timestamp, x, y, z, qx..qw)")
    group.add_argument("--bag", type=expanded_path, default=None, help="ROS 1 .bag or ROS 2 bag")
    group.add_argument("--topic", default=None, help="image topic in the bag")
    group.add_argument("--pose-topic", default=None,
                       help="odometry/pose topic in the bag: each frame gets the pose at its "
                            "stamp, interpolated between the poses around it (or the nearest)")
    group.add_argument("--pose-max-gap", type=float, default=0.1,
                       help="seconds: a pose further than this from a frame's stamp is not "
                            "used for it (raise it for pose topics slower than 10 Hz)")
    group.add_argument("--every", type=int, default=1, help="use every n-th frame")
    group.add_argument("--skip-damaged", action="store_true",
                       help="leave out frames that cannot be decoded (a truncated file, a "
                            "damaged bag message), with a warning each and their count in "
                            "the summary, instead of stopping at the first")


def source_from(args: argparse.Namespace) -> FrameSource:
    return open_source(images=args.images, frame_list=args.frame_list, bag=args.bag,
                       topic=args.topic, pose_topic=args.pose_topic, every=args.every,
                       max_pose_gap=args.pose_max_gap, skip_damaged=args.skip_damaged)


def require_map(path: Path) -> None:
    """Refuse a path that holds no map (missing, a file, an empty folder) for commands that
    read one: the Localizer would start an empty map there, and every query would find
    nothing."""
    from ..index import atomic_dir
    from ..index.map_format import INDEX_NAME, MANIFEST_NAME

    where = None if atomic_dir.is_file(path) else atomic_dir.resolve_for_read(path)
    if where is None:
        hint = atomic_dir.legacy_map_hint(path)
        raise MapError(f"{path}: no such map (nothing, a file or an empty folder there)"
                       + (hint or "; build one with `vpr-edge map build`"))
    if not (where / MANIFEST_NAME).exists() and not (where / INDEX_NAME).exists():
        raise MapError(f"{path}: a folder of other things, not a map (no {MANIFEST_NAME}); "
                       "give the map's folder, or build one with `vpr-edge map build`")


def check_ground_truth_arguments(args: argparse.Namespace) -> None:
    """Refuse, before any work, a ``--gt-tolerance`` below 0 or a ``--gt-radius`` that is not
    a positive number: no frame could then count as a correct match."""
    if args.gt_tolerance < 0:
        raise InvalidInputError(f"--gt-tolerance must be 0 or more frames, got {args.gt_tolerance}")
    if not (math.isfinite(args.gt_radius) and args.gt_radius > 0):
        raise InvalidInputError(f"--gt-radius must be a positive distance, got {args.gt_radius}")


def frame_numbers_by_key(source: FrameSource) -> dict[str, int]:
    """Each frame's number (:func:`~vpr_edge.loop_metrics.frame_numbers`: numbers need all of
    a folder), by key, for ``--gt names``; reads the keys only, no pixels, so a name without
    a number, or two files of a folder with one number, are refused before any frame is
    described or queried."""
    keys = [frame.key for frame in source]
    return dict(zip(keys, frame_numbers(keys)))


def require_pose(frame: SourceFrame, position: int) -> None:
    """Refuse a frame without a pose, for ``--gt positions``."""
    if frame.pose is None:
        raise InvalidInputError(f"frame {position} ({frame.key}) has no pose: --gt positions "
                                "needs a pose per frame (x, y columns in --list; with --bag, "
                                "a --pose-topic with a pose within --pose-max-gap of each "
                                "frame's stamp)")


def add_model_arguments(p: argparse.ArgumentParser, *, batch: bool = True) -> None:
    """The model, backend and thread options; ``batch``: also ``--batch``, for commands that
    describe several frames per inference call (not those timing one frame at a time)."""
    p.add_argument("model", type=expanded_path, help="exported model (.onnx or .engine)")
    p.add_argument("--backend", default="auto",
                   help="auto, onnxruntime-cpu, onnxruntime-cuda, onnxruntime-tensorrt, tensorrt")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for ONNX Runtime (default: physical cores)")
    if batch:
        p.add_argument("--batch", type=positive_int, default=8, help="frames per inference call")


def backend_options(args: argparse.Namespace) -> dict:
    return {} if args.threads is None else {"intra_op_num_threads": args.threads}
