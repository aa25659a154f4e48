"""Latency on this machine: PyTorch eager vs ONNX Runtime FP32 / FP16, and Localizer.query.

All in one run, side by side (this machine is shared and noisy: compare the ratios):

- the model of a checkpoint (default: a fresh ``vpr-train init`` model on Gardens Point)
  exported to FP32 and FP16 ONNX; PyTorch eager, ONNX Runtime FP32 and FP16 on the CPU at
  batch 1 and 8, median and p90 over ``--repeat`` runs after ``--warmup`` runs;
- ``Localizer.query`` on a 640x480 frame against a ``--places`` map, split into preprocessing
  (resize), inference and search (each alone, and in sequence after an inference), and its
  overhead over inference alone; for the model as it is (default index settings: the graph
  holds 512-d random projections, candidates re-scored exactly, ef for the map's size), the
  same at the fixed ``ef=192`` (``ef_scaling=False``), with a full-dimension graph
  (``search_dim=None``), and the model with PCA-whitening to each ``--whitening-dims`` (a
  random orthonormal projection: the timing does not depend on the fitted values);
- with ``--backbones``, eager vs ONNX Runtime FP32/FP16 for each named backbone preset.

    python benchmarks/latency.py --json benchmarks/results/latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vpr_edge.cli.help_format import HelpFormatter

from accuracy_matrix import add_data_argument  # neighbour script

REPO = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], object], warmup: int, repeat: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        tic = time.perf_counter()
        fn()
        times.append((time.perf_counter() - tic) * 1e3)
    return {"median_ms": round(float(np.median(times)), 3),
            "p90_ms": round(float(np.percentile(times, 90)), 3)}


def make_checkpoint(data: Path, out: Path) -> Path:
    from vpr_edge.training.checkpoint import save_checkpoint
    from vpr_edge.training.config import preset
    from vpr_edge.training.init_model import init_model, list_images

    model, _ = init_model(preset(), list_images(data / "gardens_point" / "day_left")[::4],
                          progress=False)
    return save_checkpoint(out / "bench.pt", model)


def paired_overhead(query: Callable[[], object], infer: Callable[[], object], warmup: int,
                    repeat: int) -> float:
    """Median over rounds of ``query / infer - 1``, both timed back to back in each round:
    this machine's speed drifts by more than the overhead between two separate loops."""
    for _ in range(warmup):
        infer()
        query()
    ratios = []
    for _ in range(repeat):
        tic = time.perf_counter()
        infer()
        mid = time.perf_counter()
        query()
        ratios.append((time.perf_counter() - mid) / (mid - tic))
    return round(float(np.median(ratios)) - 1, 4)


def query_breakdown(loc, places: int, warmup: int, repeat: int, rounds: int) -> dict:
    """``Localizer.query`` of a 640x480 frame against a ``places`` map of route-shaped
    synthetic descriptors (``index_scaling_quick.synthetic_route``, one batch: a random-order
    graph), split into stages; overhead = total / inference - 1 (median of ``rounds`` paired
    rounds)."""
    from index_scaling_quick import synthetic_route  # neighbour script

    rng = np.random.default_rng(0)
    loc.index.add(synthetic_route(places, loc.metadata.dim))
    camera = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    batch1 = loc._prepare(camera, "RGB")[0]
    descriptor = loc.describe(camera)
    out = {
        "preprocess (resize 640x480)": timed(lambda: loc._prepare(camera, "RGB"), warmup, repeat),
        "inference": timed(lambda: loc._infer(batch1), warmup, repeat),
        f"search ({places} places, k=5)": timed(lambda: loc.query_descriptor(descriptor, 5),
                                                warmup, repeat),
        "Localizer.query total": timed(lambda: loc.query(camera, 5), warmup, repeat),
    }
    out["overhead vs inference"] = paired_overhead(lambda: loc.query(camera, 5),
                                                   lambda: loc._infer(batch1), warmup, rounds)
    out["after an inference"] = stages_after_inference(loc, camera, batch1, rounds)
    return out


def print_breakdown(title: str, breakdown: dict) -> None:
    """A :func:`query_breakdown` as lines under ``title``."""
    print(f"\n{title}")
    for stage, r in breakdown.items():
        if stage == "overhead vs inference":
            print(f"  {stage:<34}{100 * r:>9.1f} %")
        elif stage == "after an inference":
            print("  timed in sequence after an inference: "
                  + ", ".join(f"{key} {ms:.2f}" for key, ms in r.items()))
        else:
            print(f"  {stage:<34}{r['median_ms']:>9.2f} ms  (p90 {r['p90_ms']:.2f})")


def timed_query(loc, camera: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """A ``Localizer.query`` of ``camera`` (k = 5) in its three stages: seconds of the resize,
    the inference and the search, and the descriptor."""
    tic = time.perf_counter()
    batch, _ = loc._prepare(camera, "RGB")
    t1 = time.perf_counter()
    descriptor = loc._infer(batch)[0]
    t2 = time.perf_counter()
    loc.query_descriptor(descriptor, 5)
    t3 = time.perf_counter()
    return t1 - tic, t2 - t1, t3 - t2, descriptor


def stages_after_inference(loc, camera: np.ndarray, batch1: np.ndarray, rounds: int
                           ) -> dict[str, float]:
    """Medians over ``rounds`` of the stages of a query timed right after an inference (the
    caches then hold the network's data, not the frame, graph or descriptors), and of that
    inference."""
    parts: dict[str, list[float]] = {"inference alone": [], "resize": [],
                                     "inference in the query": [], "search": []}
    for _ in range(rounds):
        tic = time.perf_counter()
        loc._infer(batch1)
        parts["inference alone"].append(time.perf_counter() - tic)
        resize, inference, search, descriptor = timed_query(loc, camera)
        parts["resize"].append(resize)
        parts["inference in the query"].append(inference)
        parts["search"].append(search)
    out = {f"{key} ms": round(1e3 * float(np.median(values)), 3)
           for key, values in parts.items()}
    out["graph walk alone ms"] = graph_walk_after_inference(loc, batch1, descriptor, rounds)
    return out


def graph_walk_after_inference(loc, batch1: np.ndarray, descriptor: np.ndarray, rounds: int
                               ) -> float:
    """Median over ``rounds`` of hnswlib's own ``knn_query`` (the graph walk, nothing else: no
    input check, no re-scoring, no records) timed right after an inference, with the
    candidates the query fetches: the floor of any search through the graph. With the
    resize, it is what a query cannot avoid paying for cold caches."""
    index = loc.index
    if index._exact is not None:  # searched without a graph
        return 0.0
    s, k = index.settings, 5
    if index._projection is not None:  # as PlaceIndex._search fetches them
        fetch = max(k * s.rerank_factor, s.search_candidates)
    else:
        fetch = k * s.rerank_factor if s.rerank else k
    fetch = min(fetch, len(index))
    sketch = index._to_graph(descriptor[None, :], query=True)
    times = []
    for _ in range(rounds):
        loc._infer(batch1)
        tic = time.perf_counter()
        index._hnsw.knn_query(sketch, k=fetch, num_threads=1)
        times.append(time.perf_counter() - tic)
    return round(1e3 * float(np.median(times)), 3)


def exact_map_products(loc, camera: np.ndarray, places: int, rounds: int) -> dict:
    """A small map searched exactly (``places`` places: one matrix product per query), its
    product in NumPy (OpenBLAS on every core, whose threads spin after it) against one ONNX
    Runtime thread (``vpr_edge.index.float32_scores``, what the index uses): medians of the
    query's inference and search and of ``Localizer.query`` per frame, in alternating blocks
    of ``rounds // 4`` frames (OpenBLAS's threads spin into the next frame, so the variants
    are not interleaved frame by frame)."""
    from vpr_edge.index import float32_scores

    from index_scaling_quick import synthetic_route  # neighbour script

    loc.index.add(synthetic_route(places, loc.metadata.dim, seed=1))
    assert loc.index.info()["search"] == "exact", "not searched exactly: fewer --exact-places"
    onnx = float32_scores.scores
    variants = {"numpy (OpenBLAS, all cores)": lambda a, b: a @ b.T,
                "onnxruntime (one thread)": onnx}
    parts = {name: {"inference": [], "search": [], "query": []} for name in variants}
    try:
        for block in range(4):
            for name, product in variants.items():
                float32_scores.scores = product
                for _ in range(max(1, rounds // 4)):
                    resize, inference, search, _ = timed_query(loc, camera)
                    if block:  # the first block warms up
                        parts[name]["inference"].append(inference)
                        parts[name]["search"].append(search)
                        parts[name]["query"].append(resize + inference + search)
    finally:
        float32_scores.scores = onnx
    return {name: {f"{key} ms": round(1e3 * float(np.median(v)), 3) for key, v in got.items()}
            for name, got in parts.items()}


def whitened_export(model, dim: int, work: Path) -> Path:
    """FP32 ONNX of ``model`` + PCA-whitening to ``dim`` (random orthonormal components)."""
    import copy

    import torch

    from vpr_edge.export.exporter import export
    from vpr_edge.export.targets import ExportConfig
    from vpr_edge.training.checkpoint import save_checkpoint
    from vpr_edge.training.whitening import PCAWhitening

    variant = copy.deepcopy(model)
    variant.set_whitening(None)
    layer = PCAWhitening(variant.dim, dim, dim)
    generator = torch.Generator().manual_seed(dim)
    q, _ = torch.linalg.qr(torch.randn(variant.dim, dim, generator=generator))
    layer.components.copy_(q.t())
    layer.explained_variance.fill_(1.0)
    variant.set_whitening(layer)
    checkpoint = save_checkpoint(work / f"whitened{dim}.pt", variant.eval())
    return export(ExportConfig(checkpoint=checkpoint, output_dir=work, name=f"whitened{dim}",
                               engine=False, validate=False)).files["onnx"]


def backbone_rows(backbones: list[str], size: tuple[int, int], threads: int, warmup: int,
                  repeat: int, work: Path) -> list[dict]:
    """Eager vs ONNX Runtime FP32/FP16 for each backbone preset (random weights: the timing
    does not depend on them; NetVLAD K=64 on the stride-16 features)."""
    import torch

    from vpr_edge.export.exporter import export
    from vpr_edge.export.targets import ExportConfig
    from vpr_edge.localizer import Localizer
    from vpr_edge.training.checkpoint import save_checkpoint
    from vpr_edge.training.config import preset
    from vpr_edge.training.model import build_model, images_to_tensor

    rows = []
    rng = np.random.default_rng(1)
    for name in backbones:
        model = build_model(preset(name, input_size=size, pretrained=False)).eval()
        checkpoint = save_checkpoint(work / f"{name}.pt", model)
        files = export(ExportConfig(checkpoint=checkpoint, output_dir=work, name=name,
                                    fp16=True, engine=False, validate=False)).files
        options = {"intra_op_num_threads": threads}
        runners = {f"onnxruntime {p}": Localizer(files[key], backend="cpu",
                                                 backend_options=options)
                   for p, key in (("fp32", "onnx"), ("fp16", "onnx-fp16"))}
        pre = model.config.preprocess
        for batch in (1, 8):
            frames = rng.integers(0, 256, (batch, *size, 3), dtype=np.uint8)

            def eager(frames=frames, model=model, pre=pre):
                with torch.inference_mode():
                    return model(images_to_tensor(frames, pre))

            base = timed(eager, warmup, repeat)
            row = {"backbone": name, "dim": model.dim, "batch": batch,
                   "eager_fp32_ms": base["median_ms"]}
            for label, loc in runners.items():
                got = timed(lambda loc=loc, frames=frames: loc._backend.run(frames), warmup,
                            repeat)
                key = label.replace("onnxruntime ", "ort_")
                row[f"{key}_ms"] = got["median_ms"]
                row[f"{key}_speedup"] = round(base["median_ms"] / got["median_ms"], 2)
            rows.append(row)
            print(f"{name:<24}{batch:>6}{row['eager_fp32_ms']:>11.1f}{row['ort_fp32_ms']:>10.1f}"
                  f"{row['ort_fp32_speedup']:>8.2f}x{row['ort_fp16_ms']:>10.1f}", flush=True)
        for loc in runners.values():
            loc.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint to measure (default: a fresh init model on Gardens Point)")
    add_data_argument(p)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for both runtimes")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    p.add_argument("--repeat", type=int, default=30, help="timed runs")
    p.add_argument("--rounds", type=int, default=200,
                   help="paired rounds (inference, then query) for each query overhead")
    p.add_argument("--places", type=int, default=10000, help="map size for the query breakdown")
    p.add_argument("--exact-places", type=int, default=200,
                   help="map size for the exact-search product comparison (searched exactly: "
                        "at most IndexSettings.exact_limit(dim) places)")
    p.add_argument("--whitening-dims", type=int, nargs="*", default=[512, 1024],
                   help="also break Localizer.query down with PCA-whitening to these dims")
    p.add_argument("--backbones", nargs="*", default=[],
                   help="also time these backbone presets (random weights), e.g. "
                        "efficientnet_lite0 mobilenetv3_large_100 resnet18 resnet50 vgg16")
    p.add_argument("--backbone-repeat", type=int, default=10,
                   help="timed runs per backbone measurement")
    p.add_argument("--json", type=Path, default=None, help="write results here")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="vpr-latency-") as work:  # models, maps: removed
        return measure(args, Path(work))


def measure(args: argparse.Namespace, work: Path) -> int:
    """:func:`main`'s measurements, its files in ``work``."""
    import torch

    from vpr_edge.export.exporter import export
    from vpr_edge.export.targets import ExportConfig
    from vpr_edge.localizer import Localizer
    from vpr_edge.training.checkpoint import load_model
    from vpr_edge.training.model import images_to_tensor

    checkpoint = args.checkpoint
    if checkpoint is None:
        if not (args.data / "gardens_point").is_dir():
            print(f"skipped: no --checkpoint and no real data under {args.data}")
            return 0
        checkpoint = make_checkpoint(args.data, work)
    files = export(ExportConfig(checkpoint=checkpoint, output_dir=work, name="bench", fp16=True,
                                engine=False, validate=False)).files
    model = load_model(checkpoint).eval()
    pre = model.config.preprocess
    h, w = pre.input_height, pre.input_width
    rng = np.random.default_rng(0)
    rows = []
    options = {"intra_op_num_threads": args.threads}
    runners = {"onnxruntime fp32": Localizer(files["onnx"], backend="cpu",
                                             backend_options=options),
               "onnxruntime fp16": Localizer(files["onnx-fp16"], backend="cpu",
                                             backend_options=options)}
    for batch in (1, 8):
        frames = rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)

        def eager(frames=frames):
            with torch.inference_mode():
                return model(images_to_tensor(frames, pre))

        base = timed(eager, args.warmup, args.repeat)
        rows.append({"runtime": "pytorch eager fp32", "batch": batch, **base, "speedup": 1.0})
        for name, loc in runners.items():
            result = timed(lambda loc=loc, frames=frames: loc._backend.run(frames),
                           args.warmup, args.repeat)
            rows.append({"runtime": name, "batch": batch, **result,
                         "speedup": round(base["median_ms"] / result["median_ms"], 2)})

    loc = runners["onnxruntime fp32"]
    dim = loc.metadata.dim
    from vpr_edge.index import IndexSettings, float16_scores

    graph = loc.index.info()["graph_dim"]
    default = query_breakdown(loc, args.places, args.warmup, args.repeat, args.rounds)
    breakdowns = {f"{dim}-d (graph {graph}-d, default: ef {loc.index.info()['ef_in_use']})":
                  default}
    fixed = IndexSettings(ef_scaling=False)
    with Localizer(files["onnx"], backend="cpu", backend_options=options,
                   index_settings=fixed) as unscaled:
        breakdowns[f"{dim}-d (graph {graph}-d, ef {fixed.ef}: ef_scaling=False)"] = \
            query_breakdown(unscaled, args.places, args.warmup, args.repeat, args.rounds)
    with Localizer(files["onnx"], backend="cpu", backend_options=options,
                   index_settings=IndexSettings(search_dim=None)) as full:
        breakdowns[f"{dim}-d (graph {dim}-d, search_dim=None)"] = query_breakdown(
            full, args.places, args.warmup, args.repeat, args.rounds)
    for wdim in args.whitening_dims:
        path = whitened_export(model, wdim, work)
        with Localizer(path, backend="cpu", backend_options=options) as wloc:
            breakdowns[f"{wdim}-d (PCA-whitened model)"] = query_breakdown(
                wloc, args.places, args.warmup, args.repeat, args.rounds)
    camera = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    with Localizer(files["onnx"], backend="cpu", backend_options=options) as small:
        exact_rows = exact_map_products(small, camera, args.exact_places, args.rounds)
    print(f"model {model.config.name}, input {h}x{w}, dim {dim}, {args.threads} threads; "
          f"FP32 ONNX {files['onnx'].stat().st_size / 2**20:.1f} MiB, "
          f"FP16 ONNX {files['onnx-fp16'].stat().st_size / 2**20:.1f} MiB")
    print(f"{'runtime':<22}{'batch':>6}{'median ms':>11}{'p90 ms':>9}{'x eager':>9}")
    for r in rows:
        print(f"{r['runtime']:<22}{r['batch']:>6}{r['median_ms']:>11.2f}{r['p90_ms']:>9.2f}"
              f"{r['speedup']:>9.2f}")
    for name, breakdown in breakdowns.items():
        print_breakdown(f"Localizer.query breakdown, {name} descriptors (batch 1)", breakdown)
    print(f"\nLocalizer.query against {args.exact_places} places searched exactly (one matrix "
          "product per query), medians per frame in ms")
    print(f"{'product':<30}{'inference':>11}{'search':>9}{'query':>8}")
    for name, r in exact_rows.items():
        print(f"{name:<30}{r['inference ms']:>11.2f}{r['search ms']:>9.2f}{r['query ms']:>8.2f}")
    per_backbone = []
    if args.backbones:
        print(f"\nper backbone ({h}x{w}, NetVLAD K=64, medians of {args.backbone_repeat} runs)")
        print(f"{'backbone':<24}{'batch':>6}{'eager ms':>11}{'ORT ms':>10}{'x eager':>9}"
              f"{'ORT16 ms':>10}")
        per_backbone = backbone_rows(args.backbones, (h, w), args.threads, 2,
                                     args.backbone_repeat, work)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "model": {"name": model.config.name, "input": [h, w], "dim": dim,
                      "onnx_bytes": files["onnx"].stat().st_size,
                      "onnx_fp16_bytes": files["onnx-fp16"].stat().st_size},
            "threads": args.threads, "runtimes": rows, "query_breakdown": breakdowns,
            "exact_map": {"places": args.exact_places, "per_frame": exact_rows},
            "float16_rescoring": float16_scores.engine(),
            "per_backbone": per_backbone,
            "machine": {"cpus": os.cpu_count()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
