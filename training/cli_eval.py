"""``vpr-eval``: Recall@N of a checkpoint or an exported model on a dataset.

    vpr-eval model.pt --corridor data/corridor
    vpr-eval model.onnx --frame-aligned day_left day_right --span 0.7 1.0 --json r.json

Exact search over all database images; descriptors are computed in batches so memory stays
bounded. Checkpoints run in PyTorch; ``.onnx``/``.engine`` files run in the runtime backend
(so FP32 and FP16 exports can be compared with the checkpoint on the same data).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vpr_edge._optional import require
from vpr_edge.cli.arg_types import non_negative_int, positive_float, positive_int
from vpr_edge.cli.help_format import HelpFormatter
from vpr_edge.cli.output import (
    TO_STDOUT,
    check_output_file,
    given_paths,
    tables_off_stdout,
    write_json,
)
from vpr_edge.errors import InvalidInputError, VprEdgeError
from vpr_edge.paths import expanded_path

from .datasets.places import RetrievalDataset
from .evaluate import DEFAULT_NS, RecallResult, encode_images, evaluate, format_table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vpr-eval", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("model", type=expanded_path,
                   help="checkpoint (.pt) or exported model (.onnx/.engine)")
    data = p.add_argument_group("dataset (give one)")
    data.add_argument("--corridor", type=expanded_path, help="Corridor folder (query/, ref/, "
                                                    "ground_truth.npy)")
    data.add_argument("--frame-aligned", nargs=2, type=expanded_path,
                      metavar=("DATABASE", "QUERIES"),
                      help="two folders of the same route (same file name = same place)")
    data.add_argument("--span", nargs=2, type=float, default=(0.0, 1.0), metavar=("FROM", "TO"),
                      help="part of a frame-aligned route evaluated (fractions)")
    data.add_argument("--tolerance", "--gt-tolerance", type=non_negative_int, default=2,
                      help="frame-aligned: a match within this many frames is correct")
    data.add_argument("--manifest", type=expanded_path, help="CSV manifest")
    data.add_argument("--pittsburgh", type=expanded_path, help="dbStruct .mat file")
    data.add_argument("--image-root", type=expanded_path, help="image folder for --pittsburgh")
    p.add_argument("--eval-radius", "--gt-radius", type=positive_float, default=None,
                   help="metric datasets: correct within this many metres (default 25)")
    p.add_argument("--ns", type=positive_int, nargs="+", default=list(DEFAULT_NS),
                   help="N of Recall@N")
    p.add_argument("--whitening-dim", type=positive_int, default=None,
                   help="checkpoints with whitening: output dims to use")
    p.add_argument("--batch", type=positive_int, default=16, help="images per forward pass")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads")
    p.add_argument("--json", type=expanded_path, default=None,
                   help="write the result here" + TO_STDOUT)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def load_dataset(args: argparse.Namespace) -> RetrievalDataset:
    from dataclasses import replace

    from .datasets.corridor import corridor_dataset
    from .datasets.frame_aligned import frame_aligned_dataset
    from .datasets.manifest import read_manifest
    from .datasets.pittsburgh import read_pittsburgh
    from .datasets.places import FRAME_RADII

    given = [n for n in ("corridor", "frame_aligned", "manifest", "pittsburgh")
             if getattr(args, n)]
    if len(given) != 1:
        raise InvalidInputError("give exactly one of --corridor, --frame-aligned, --manifest, "
                                "--pittsburgh")
    if args.corridor:
        return corridor_dataset(args.corridor)
    if args.frame_aligned:
        radii = replace(FRAME_RADII, eval_radius=float(args.tolerance))
        return frame_aligned_dataset(*args.frame_aligned, span=tuple(args.span), radii=radii)
    dataset = read_manifest(args.manifest) if args.manifest else None
    if dataset is None:
        if args.image_root is None:
            raise InvalidInputError("--pittsburgh needs --image-root")
        dataset = read_pittsburgh(args.pittsburgh, args.image_root)
    if args.eval_radius is not None:
        dataset = replace(dataset, radii=replace(dataset.radii, eval_radius=args.eval_radius))
    return dataset


EXPORTED_SUFFIXES = (".onnx", ".engine", ".plan", ".trt")


def describer(model_path: Path, whitening_dim: int | None, threads: int | None
              ) -> tuple[Callable[[np.ndarray], np.ndarray], tuple[int, int], str]:
    """``describe(uint8 NHWC batch)``, the model's input size, and a label."""
    if model_path.suffix in EXPORTED_SUFFIXES:
        from vpr_edge.backends import open_backend

        options = {} if threads is None else {"intra_op_num_threads": threads}
        backend = open_backend(model_path, **options)
        return backend.run, backend.metadata.input_shape, f"{model_path.name} ({backend.name})"
    torch = require("torch", extra="train", purpose=f"evaluating the checkpoint {model_path}"
                    " (an exported .onnx or .engine model needs no torch)")

    from .checkpoint import load_model
    from .model import images_to_tensor

    if threads:
        torch.set_num_threads(threads)
    model = load_model(model_path)
    if whitening_dim is not None:
        model.set_whitening_dim(whitening_dim)
    pre = model.config.preprocess

    def describe(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(images_to_tensor(batch, pre)).numpy()

    return describe, (pre.input_height, pre.input_width), f"{model_path.name} (pytorch)"


def run(args: argparse.Namespace) -> RecallResult:
    if args.whitening_dim is not None and args.model.suffix in EXPORTED_SUFFIXES:
        raise InvalidInputError(
            f"--whitening-dim applies to .pt checkpoints; {args.model.name} was exported with "
            "its output size fixed (export the checkpoint again: vpr-export --whitening-dim)")
    dataset = load_dataset(args)
    describe, (height, width), label = describer(args.model, args.whitening_dim, args.threads)
    kwargs = dict(height=height, width=width, batch_size=args.batch,
                  progress=not args.no_progress)
    database = encode_images(describe, dataset.database.paths, desc="database", **kwargs)
    queries = encode_images(describe, dataset.queries.paths, desc="queries", **kwargs)
    return evaluate(queries, database, dataset.positives(), ns=args.ns, method=label,
                    dataset=dataset.name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_output_file(args.json, "--json", given_paths(args, ("json",)))
        result = run(args)
        with tables_off_stdout([args.json]):
            print(format_table([result]))
            if result.queries_without_positive:
                print(f"({result.queries_without_positive} queries without a positive were "
                      "left out)")
        write_json(args.json, result.to_dict())
    except VprEdgeError as exc:
        print(f"vpr-eval: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vpr-eval: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
