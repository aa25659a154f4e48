"""Accuracy matrix: Recall@1/5/10 of every aggregation, with and without PCA-whitening, as FP32
and as FP16 ONNX run by the runtime, on Gardens Point and Corridor, beside VPR-Bench.

All on EfficientNet-Lite0 (ImageNet weights) cut at stride 16, in one run:

- methods: global average pooling, GeM, NetVLAD from k-means (no training), NetVLAD trained
  (``training_recall.py``'s recipe: ``--epochs`` here, or a checkpoint from ``--trained``);
- PCA-whitening to ``--whitening-dim`` (or the descriptor size when smaller), and the same PCA
  as a plain projection (no variance scaling: ``vpr-train whiten --projection-only``), fitted
  on the first 60% of both Gardens Point walks, each image and its mirror image (so 480
  descriptors): disjoint from both evaluations, the same images k-means and training use;
- each model is exported by ``vpr-export --fp16`` (FP32 and strongly typed FP16 ONNX) and its
  descriptors come from ``vpr_edge.Localizer`` on ONNX Runtime CPU: what a robot would run;
- Gardens Point: database day_left, queries day_right, frames of the last 30% of the route,
  correct within +-2 frames; Corridor: 111 queries against 111 references (never seen by
  k-means, whitening or training). VPR-Bench's published Corridor results are computed from
  the similarity matrices shipped in ``corridor/reference_results/``.

    python benchmarks/accuracy_matrix.py --json benchmarks/results/accuracy_matrix.json   # ~25 min
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vpr_edge.cli.help_format import HelpFormatter

REPO = Path(__file__).resolve().parents[1]
NS = (1, 5, 10)


def vprbench_recalls(corridor: Path) -> list[dict]:
    """Recall@1/5/10 of the VPR-Bench methods on Corridor from their shipped results.

    Recall@1 comes from the retrieved index per query (field 1); Recall@5/10 from the
    similarity matrix (field 3, queries x references) when its shape matches.
    """
    gt = np.load(corridor / "ground_truth.npy", allow_pickle=True)
    positives = {int(q): {int(r) for r in np.atleast_1d(refs)} for q, refs in gt}
    rows = []
    for path in sorted((corridor / "reference_results").glob("vprbench_*.npy")):
        data = np.load(path, allow_pickle=True, encoding="latin1")
        queries, retrieved = np.asarray(data[0]).ravel(), np.asarray(data[1]).ravel()
        row = {"method": path.stem.removeprefix("vprbench_"),
               "recall@1": round(float(np.mean(
                   [int(r) in positives[int(q)] for q, r in zip(queries, retrieved)])), 4)}
        sim = np.asarray(data[3], dtype=np.float64) if len(data) > 3 else np.zeros(0)
        if sim.ndim == 2 and sim.shape[0] == len(queries):
            order = np.argsort(-sim, axis=1)
            for n in NS[1:]:
                row[f"recall@{n}"] = round(float(np.mean(
                    [bool(set(order[i, :n].tolist()) & positives[int(q)])
                     for i, q in enumerate(queries)])), 4)
        rows.append(row)
    return rows


def real_splits(data: Path):
    """``(train, gardens_point, corridor)``: Gardens Point's first 60% (k-means, training,
    PCA), its last 30% (evaluation) and Corridor; None when the real data is absent."""
    from vpr_edge.training.datasets.corridor import corridor_dataset
    from vpr_edge.training.datasets.frame_aligned import frame_aligned_dataset

    gp, corridor = data / "gardens_point", data / "corridor"
    if not gp.is_dir() or not corridor.is_dir():
        print(f"skipped: real data not found under {data}")
        return None
    return (frame_aligned_dataset(gp / "day_left", gp / "day_right", span=(0.0, 0.6)),
            frame_aligned_dataset(gp / "day_left", gp / "day_right", span=(0.7, 1.0)),
            corridor_dataset(corridor))


def mirrored_descriptors(model, paths: list[Path], batch: int = 16) -> np.ndarray:
    """Eager descriptors of each image and of its left-right mirror image."""
    import torch

    from vpr_edge.images import load_image, resize
    from vpr_edge.training.model import images_to_tensor

    pre = model.config.preprocess
    out = []
    with torch.no_grad():
        for start in range(0, len(paths), batch):
            frames = np.stack([resize(load_image(p), pre.input_height, pre.input_width)
                               for p in paths[start:start + batch]])
            for views in (frames, np.ascontiguousarray(frames[:, :, ::-1])):
                out.append(model(images_to_tensor(views, pre)).numpy())
    return np.concatenate(out)


def whitened(model, fit_paths: list[Path], dim: int, whiten: bool = True):
    """A copy of ``model`` with PCA-whitening (``whiten=False``: a PCA projection) fitted on
    ``fit_paths`` and their mirror images."""
    from vpr_edge.training.whitening import PCAWhitening

    plain = copy.deepcopy(model).eval()
    plain.set_whitening(None)
    data = mirrored_descriptors(plain, fit_paths)
    dim = min(dim, plain.dim, len(data) - 1)
    layer = PCAWhitening(plain.dim, dim, dim)
    layer.fit(data, whiten=whiten)
    plain.set_whitening(layer)
    return plain.eval()


def export_both(model, work: Path, name: str) -> dict[str, Path]:
    """``{"FP32": onnx, "FP16": onnx}`` written by the exporter (no engine, no validation)."""
    from vpr_edge.export.exporter import export
    from vpr_edge.export.targets import ExportConfig
    from vpr_edge.training.checkpoint import save_checkpoint

    checkpoint = save_checkpoint(work / f"{name}.pt", model)
    files = export(ExportConfig(checkpoint=checkpoint, output_dir=work, name=name, fp16=True,
                                engine=False, validate=False)).files
    return {"FP32": files["onnx"], "FP16": files["onnx-fp16"]}


def recall_row(onnx: Path, dataset) -> dict:
    from vpr_edge.training.evaluate import evaluate

    from loop_closure import describe_files  # neighbour script

    db = describe_files(onnx, list(dataset.database.paths))
    q = describe_files(onnx, list(dataset.queries.paths))
    result = evaluate(q, db, dataset.positives(), ns=NS).to_dict()
    return {f"recall@{n}": round(result[f"recall@{n}"], 4) for n in NS} | {"dim": db.shape[1]}


def print_table(rows: list[dict], datasets: list[str]) -> None:
    head = f"{'method':<20} {'whitening':<22} {'ONNX':<5} {'dim':>5}"
    for name in datasets:
        head += f" | {name[:22]:<22}"
    print(head)
    for r in rows:
        line = f"{r['method']:<20} {r['whitening']:<22} {r['precision']:<5} {r['dim']:>5}"
        for name in datasets:
            res = r[name]
            line += " | " + " / ".join(f"{res[f'recall@{n}']:.3f}" for n in NS) + "     "
        print(line)


def add_data_argument(p: argparse.ArgumentParser) -> None:
    """``--data``: the real data folder (``$VPR_EDGE_DATA``, else ``../shared/data``)."""
    p.add_argument("--data", type=Path, default=Path(os.environ.get(
        "VPR_EDGE_DATA", REPO.parent / "shared" / "data")), help="folder of the real data")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    add_data_argument(p)
    p.add_argument("--trained", type=Path, default=None,
                   help="trained NetVLAD checkpoint (e.g. runs/training_recall/trained.pt); "
                        "default: train one here for --epochs")
    p.add_argument("--epochs", type=int, default=5, help="training epochs when not --trained")
    p.add_argument("--output", type=Path, default=REPO / "runs" / "accuracy_matrix",
                   help="where the model trained here is kept (reuse it with --trained)")
    p.add_argument("--whitening-dim", type=int, default=256, help="PCA-whitening output dims")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--json", type=Path, default=None, help="write results here")
    args = p.parse_args(argv)
    splits = real_splits(args.data)
    if splits is None:
        return 0
    train_set, gp_test, corridor_set = splits

    import torch

    from vpr_edge.training.checkpoint import load_model
    from vpr_edge.training.config import preset
    from vpr_edge.training.init_model import init_model
    from vpr_edge.training.mining import MiningConfig
    from vpr_edge.training.model import build_model
    from vpr_edge.training.train import TrainConfig, train

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tic = time.perf_counter()
    datasets = {"gardens_point": gp_test, "corridor": corridor_set}
    fit_paths = list(train_set.database.paths) + list(train_set.queries.paths)

    with tempfile.TemporaryDirectory(prefix="vpr-accuracy-") as tmp:
        work = Path(tmp)
        models = {"average pooling": build_model(preset(aggregation="avg")).eval(),
                  "GeM": build_model(preset(aggregation="gem")).eval()}
        kmeans, _ = init_model(preset(), train_set.database.paths, progress=False)
        models["NetVLAD k-means"] = kmeans
        if args.trained:
            models["NetVLAD trained"] = load_model(args.trained).eval()
            trained_how = str(args.trained)
        else:
            args.output.mkdir(parents=True, exist_ok=True)
            trained = copy.deepcopy(kmeans)
            train(trained, train_set, TrainConfig(epochs=args.epochs, lr=1e-5, seed=0,
                                                  mining=MiningConfig(num_negatives=10)),
                  output=args.output / "trained.pt", progress=sys.stderr.isatty())
            models["NetVLAD trained"] = trained.eval()
            trained_how = f"{args.epochs} epochs here (lr 1e-5, 10 negatives)"

        rows = []
        for i, (method, model) in enumerate(models.items()):
            dim = min(args.whitening_dim, model.dim)
            variants = {"off": model,
                        f"PCA-{dim} whitened": whitened(model, fit_paths, dim),
                        f"PCA-{dim} projection": whitened(model, fit_paths, dim, whiten=False)}
            for j, (whitening, variant) in enumerate(variants.items()):
                onnx = export_both(variant, work, f"m{i}w{j}")
                for precision, path in onnx.items():
                    row = {"method": method, "whitening": whitening, "precision": precision}
                    for name, ds in datasets.items():
                        row[name] = recall_row(path, ds)
                    row["dim"] = row["corridor"]["dim"]
                    rows.append(row)
                    print(f"  {method}, whitening {whitening}, {precision}: "
                          + ", ".join(f"{n} R@1 {row[n]['recall@1']:.3f}" for n in datasets),
                          flush=True)
    print()
    print_table(rows, list(datasets))
    bench = vprbench_recalls(args.data / "corridor")
    print("\nVPR-Bench on Corridor (from reference_results): " + ", ".join(
        f"{r['method']} {r['recall@1']:.3f}" for r in bench))
    seconds = time.perf_counter() - tic
    print(f"total {seconds / 60:.1f} min")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "benchmark": "accuracy_matrix", "rows": rows, "vprbench_corridor": bench,
            "trained": trained_how, "whitening_fit": f"{len(fit_paths)} images x 2 (mirrored)",
            "gardens_point": "day_left -> day_right, frames 70-100% of the route, +-2 frames",
            "backend": "vpr_edge.Localizer, ONNX Runtime CPU", "minutes": round(seconds / 60, 1),
            "machine": {"cpus": os.cpu_count(), "torch_threads": args.threads},
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
