"""Does training help? Recall of pooling baselines, k-means NetVLAD and trained NetVLAD.

All on the same EfficientNet-Lite0 (ImageNet weights), in one run:

- Gardens Point: database day_left, queries day_right; k-means and training use only the first
  60% of the route, evaluation the last 30% (frames 140-199; a 10% gap in between, so no
  evaluated frame is near a training frame); correct within +-2 frames.
- Corridor: never seen by k-means or training (generalisation); VPR-Bench's published
  results on the same split are computed from ``reference_results/`` for comparison.

    python benchmarks/training_recall.py --json benchmarks/results/training_recall.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vpr_edge.cli.help_format import HelpFormatter
from vpr_edge.training.checkpoint import save_checkpoint
from vpr_edge.training.config import preset
from vpr_edge.training.evaluate import encode_images, evaluate, format_table
from vpr_edge.training.init_model import init_model
from vpr_edge.training.mining import MiningConfig
from vpr_edge.training.model import build_model, images_to_tensor
from vpr_edge.training.train import TrainConfig, train

from accuracy_matrix import add_data_argument, real_splits, vprbench_recalls  # neighbour script

REPO = Path(__file__).resolve().parents[1]


def recall(model, dataset, label: str, ns=(1, 5, 10)):
    pre = model.config.preprocess
    model.eval()

    def describe(batch):
        with torch.no_grad():
            return model(images_to_tensor(batch, pre)).numpy()

    kw = dict(height=pre.input_height, width=pre.input_width, batch_size=16, progress=False)
    db = encode_images(describe, dataset.database.paths, **kw)
    q = encode_images(describe, dataset.queries.paths, **kw)
    return evaluate(q, db, dataset.positives(), ns=ns, method=label, dataset=dataset.name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    add_data_argument(p)
    p.add_argument("--output", type=Path, default=REPO / "runs" / "training_recall",
                   help="where checkpoints go")
    p.add_argument("--epochs", type=int, default=8, help="training epochs")
    p.add_argument("--lr", type=float, default=1e-5, help="Adam learning rate")
    p.add_argument("--train-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="training image size (default: the model's 240x320)")
    p.add_argument("--trainable-stages", type=int, default=2, help="backbone stages trained")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--json", type=Path, default=None, help="write results here")
    args = p.parse_args(argv)
    splits = real_splits(args.data)
    if splits is None:
        return 0
    train_set, test_set, corridor_set = splits
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []

    for aggregation in ("avg", "gem"):
        model = build_model(preset(aggregation=aggregation)).eval()
        for ds in (test_set, corridor_set):
            results.append(recall(model, ds, f"{aggregation} pooling"))
    config = preset(trainable_stages=args.trainable_stages)
    kmeans_model, _ = init_model(config, train_set.database.paths, progress=False)
    for ds in (test_set, corridor_set):
        results.append(recall(kmeans_model, ds, "NetVLAD k-means (no training)"))

    args.output.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.output / "kmeans.pt", kmeans_model)
    train_config = TrainConfig(
        epochs=args.epochs, lr=args.lr, mining=MiningConfig(num_negatives=10),
        train_height=args.train_size[0] if args.train_size else None,
        train_width=args.train_size[1] if args.train_size else None, seed=0)
    tic = time.perf_counter()
    trained = train(kmeans_model, train_set, train_config, output=args.output / "trained.pt",
                    progress=sys.stderr.isatty())
    train_seconds = time.perf_counter() - tic
    for ds in (test_set, corridor_set):  # train() trained kmeans_model in place
        results.append(recall(kmeans_model, ds, "NetVLAD trained"))
    print(format_table(results))
    bench = vprbench_recalls(args.data / "corridor")
    print("VPR-Bench on Corridor (from reference_results):",
          ", ".join(f"{r['method']} {r['recall@1']}" for r in bench))
    throughput = float(np.mean([h.images_per_second for h in trained.history]))
    print(f"training: {train_seconds / 60:.1f} min, {throughput:.1f} images/s, "
          f"peak memory {trained.peak_memory_mb:.0f} MB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "results": [r.to_dict() for r in results], "vprbench_corridor": bench,
            "training": {**trained.to_dict(), "minutes": round(train_seconds / 60, 2),
                         "images_per_second": round(throughput, 2),
                         "config": {"epochs": args.epochs, "lr": args.lr,
                                    "train_size": args.train_size or [240, 320],
                                    "trainable_stages": args.trainable_stages}},
            "machine": {"cpus": os.cpu_count(), "torch_threads": args.threads},
        }, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
