"""``vpr-train``: make a model (``init``), train it (``fit``), add PCA-whitening (``whiten``).

    vpr-train init --images robot_run_1/ --output model.pt
    vpr-train fit --frame-aligned day_left day_right --init model.pt --output trained.pt
    vpr-train whiten trained.pt --images big_folder/ --dim 512 --output trained-w512.pt
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from vpr_edge._optional import require
from vpr_edge.cli.arg_types import positive_int
from vpr_edge.cli.help_format import HelpFormatter
from vpr_edge.cli.output import (
    TO_STDOUT,
    check_distinct_outputs,
    check_output_file,
    given_paths,
    tables_off_stdout,
    write_json,
)
from vpr_edge.errors import VprEdgeError
from vpr_edge.paths import expanded_path

from .config import BACKBONES, preset


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", default="efficientnet_lite0", choices=BACKBONES,
                        help="CNN producing local features (only efficientnet_lite0 has "
                             "ImageNet weights available offline)")
    parser.add_argument("--clusters", type=positive_int, default=64, help="NetVLAD clusters K")
    parser.add_argument("--height", type=positive_int, default=240, help="model input height (px)")
    parser.add_argument("--width", type=positive_int, default=320, help="model input width (px)")
    parser.add_argument("--aggregation", default="netvlad", choices=("netvlad", "avg", "gem"),
                        help="aggregation of local features (avg/gem are baselines)")


def _add_init(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init", formatter_class=HelpFormatter,
        help="a usable model in minutes: pretrained backbone + k-means NetVLAD",
        description="Build an untrained but usable model: ImageNet backbone, NetVLAD "
                    "centroids from k-means on local features of your images, and the "
                    "paper's alpha. Optionally fit PCA-whitening on the same images.",
    )
    p.add_argument("--images", required=True, type=expanded_path,
                   help="folder of images from the deployment domain (searched recursively)")
    p.add_argument("--output", "-o", required=True, type=expanded_path, help="checkpoint to write")
    _add_model_arguments(p)
    p.add_argument("--max-images", type=positive_int, default=500, help="images used at most")
    p.add_argument("--descriptors-per-image", type=positive_int, default=100,
                   help="local descriptors sampled per image for k-means")
    p.add_argument("--whitening-dim", type=positive_int, default=None,
                   help="also fit PCA-whitening to this many dims (needs more images)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--json", type=expanded_path, default=None,
                   help="write a JSON report here" + TO_STDOUT)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_init)


def run_init(args: argparse.Namespace) -> dict:
    from .checkpoint import save_checkpoint
    from .init_model import init_model, list_images

    config = preset(args.backbone, num_clusters=args.clusters,
                    input_size=(args.height, args.width), aggregation=args.aggregation)
    images = list_images(args.images)
    model, report = init_model(
        config, images, max_images=args.max_images,
        descriptors_per_image=args.descriptors_per_image, whitening_dim=args.whitening_dim,
        seed=args.seed, progress=not args.no_progress,
    )
    save_checkpoint(args.output, model, provenance={
        "made_by": "vpr-train init", "images": str(args.images), "seed": args.seed,
        "init": report.to_dict(),
    })
    result = {"checkpoint": str(args.output), "dim": model.dim, **report.to_dict()}
    _print_table("vpr-train init", result)
    return result


def _add_whiten(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "whiten", formatter_class=HelpFormatter,
        help="fit PCA-whitening on a (large) folder of images",
        description="Fit a PCA-whitening layer on the descriptors of a folder of images and "
                    "write a new checkpoint. Needs many more images than output dims.",
    )
    p.add_argument("checkpoint", type=expanded_path, help="checkpoint to start from")
    p.add_argument("--images", required=True, type=expanded_path, help="folder of images")
    p.add_argument("--dim", type=positive_int, required=True, help="output dims used (e.g. 512)")
    p.add_argument("--max-dim", type=positive_int, default=None,
                   help="components stored (any dim up to it can be selected at export); "
                        "default: --dim")
    p.add_argument("--projection-only", action="store_true",
                   help="PCA projection without whitening (no variance scaling): drops the "
                        "weakest directions only; measured safer when the images are few")
    p.add_argument("--output", "-o", required=True, type=expanded_path, help="checkpoint to write")
    p.add_argument("--json", type=expanded_path, default=None,
                   help="write a JSON report here" + TO_STDOUT)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_whiten)


def run_whiten(args: argparse.Namespace) -> dict:
    from .checkpoint import load_checkpoint, save_checkpoint
    from .init_model import InitReport, fit_whitening, list_images

    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.build()
    report = InitReport()
    fit_whitening(model, list_images(args.images), args.dim, max_dim=args.max_dim,
                  report=report, whiten=not args.projection_only,
                  progress=not args.no_progress)
    save_checkpoint(args.output, model, provenance={
        **ckpt.provenance, "whitening": {"images": str(args.images), "dim": args.dim,
                                         "whitened": not args.projection_only,
                                         "skipped": len(report.skipped)}})
    result = {"checkpoint": str(args.output), "dim": model.dim,
              "images_skipped": len(report.skipped)}
    _print_table("vpr-train whiten", result)
    return result


def _print_table(title: str, values: dict) -> None:
    width = max(len(k) for k in values)
    print(title)
    for key, value in values.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, list):
            value = f"{len(value)} items"
        print(f"  {key:<{width}}  {value}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpr-train", formatter_class=HelpFormatter,
        description="Make, train and whiten NetVLAD place-recognition models.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="run `vpr-train COMMAND --help` for its options")
    _add_init(sub)
    from .train import add_fit_parser

    add_fit_parser(sub)
    _add_whiten(sub)
    return parser


def _resume_hint(args: argparse.Namespace, started: float) -> str:
    """What an interrupted ``fit`` left: its checkpoint after the last finished epoch."""
    output = getattr(args, "output", None)
    if args.command != "fit" or output is None:
        return ""
    try:
        written = output.stat().st_mtime >= started
    except OSError:
        written = False
    if not written:
        resumed = getattr(args, "resume", None)
        if resumed is not None and resumed.is_file():  # a resumed run: that one still holds
            return (f" before an epoch of this run finished; {resumed} still holds the last "
                    f"finished epoch: continue with the same command (--resume {resumed})")
        return " before the first epoch finished; nothing was written"
    return (f"; {output} holds the last finished epoch: continue with the same command and "
            f"--resume {output}")


def main(argv: list[str] | None = None) -> int:
    try:  # every command trains or loads a network (the parser itself imports the trainer)
        require("torch", extra="train", purpose="vpr-train")
    except VprEdgeError as exc:
        print(f"vpr-train: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    started = time.time()
    json_path = getattr(args, "json", None)
    try:  # the outputs before the work (hours, for fit), and the report's write in it
        check_output_file(args.output, "-o/--output", a_model=True)  # (not stdout: binary)
        check_distinct_outputs({"-o/--output": args.output, "--json": json_path})
        check_output_file(json_path, "--json", given_paths(args, ("json", "output")))
        with tables_off_stdout([json_path]):  # (--json -: stdout holds the report alone)
            result = args.run(args)
        if result is not None:  # (None: a distributed run's other ranks)
            write_json(json_path, result)
    except VprEdgeError as exc:
        print(f"vpr-train {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vpr-train {args.command}: interrupted{_resume_hint(args, started)}",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
