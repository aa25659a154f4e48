"""Arguments shared by several ``vpr-edge`` commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..sources import FrameSource, open_source


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("frames (give one source)")
    group.add_argument("--images", type=Path, nargs="+", default=None,
                       help="folder(s) of images, each taken in file-name order, one after "
                            "the other")
    group.add_argument("--list", dest="frame_list", type=Path, default=None,
                       help="CSV with an 'image' column (+ optional timestamp, x, y, z, qx..qw)")
    group.add_argument("--bag", type=Path, default=None, help="ROS 1 .bag or ROS 2 bag")
    group.add_argument("--topic", default=None, help="image topic in the bag")
    group.add_argument("--pose-topic", default=None,
                       help="odometry/pose topic in the bag: each frame gets the pose at its "
                            "stamp, interpolated (or the nearest within 0.1 s)")
    group.add_argument("--every", type=int, default=1, help="use every n-th frame")


def source_from(args: argparse.Namespace) -> FrameSource:
    return open_source(images=args.images, frame_list=args.frame_list, bag=args.bag,
                       topic=args.topic, pose_topic=args.pose_topic, every=args.every)


def add_model_arguments(p: argparse.ArgumentParser, *, batch: bool = True) -> None:
    """The model, backend and thread options; ``batch``: also ``--batch``, for commands that
    describe several frames per inference call (not those timing one frame at a time)."""
    p.add_argument("model", type=Path, help="exported model (.onnx or .engine)")
    p.add_argument("--backend", default="auto",
                   help="auto, onnxruntime-cpu, onnxruntime-cuda, onnxruntime-tensorrt, tensorrt")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for ONNX Runtime (default: physical cores)")
    if batch:
        p.add_argument("--batch", type=int, default=8, help="frames per inference call")


def backend_options(args: argparse.Namespace) -> dict:
    return {} if args.threads is None else {"intra_op_num_threads": args.threads}
