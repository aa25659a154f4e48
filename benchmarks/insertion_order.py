"""HNSW graph quality by insertion order: places added one by one along a route vs rebuilt.

A robot adds places one at a time in route order; HNSW graphs built that way are weaker than
graphs built in a random order. This builds a ``--places`` map of full-dimension (7168-d)
descriptors synthesised from the real ones and adds it to a :class:`PlaceIndex` (512-d
sketched graph, exact re-scoring) one place at a time in route order, twice: without
rebuilds (``rebuild_growth=None``), and with the default automatic background rebuilds
(at 4k, 8k, 16k, ... places); then ``rebuild()`` (a random order for all). For each
``--efs`` it measures recall@1 against exact search over the stored float16 descriptors and
the query p50, and the add latency while background rebuilds run.

Descriptors: :func:`real_route.route_from_real` in the first ``--components`` principal
components of the real descriptors, mapped back to 7168-d (the real mean plus the components,
at the real spread), L2-normalised. Queries are ``--queries`` rows of the same synthesis held
out of the map (other passes over the same places).

    python benchmarks/insertion_order.py --descriptors runs/real_descriptors.npy \\
        --json benchmarks/results/insertion_order.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from real_route import route_from_real  # neighbour script
from vpr_edge.cli.help_format import HelpFormatter


def lifted_route(real: np.ndarray, n: int, components: int, seed: int) -> np.ndarray:
    """``[n, dim]`` unit rows: a route synthesised in PCA space, mapped back to ``dim``."""
    real = np.asarray(real, dtype=np.float64)
    mean = real.mean(axis=0)
    _, singular, vt = np.linalg.svd(real - mean, full_matrices=False)
    coords = route_from_real(n, real, components, seed=seed)  # unit rows in PCA coordinates
    spread = np.linalg.norm(singular[:components] / np.sqrt(len(real) - 1))
    rows = (coords * spread) @ vt[:components] + mean
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32)


def measure(index, queries: np.ndarray, truth: np.ndarray, efs: list[int]) -> list[dict]:
    rows = []
    for ef in efs:
        index.set_ef(ef)
        times, hits = [], 0
        for q, want in zip(queries, truth):
            tic = time.perf_counter()
            (best,) = index.query(q, k=1)
            times.append(time.perf_counter() - tic)
            hits += best.place_id == want
        rows.append({"ef": ef, "recall_at_1": round(hits / len(queries), 4),
                     "p50_ms": round(1e3 * float(np.median(times)), 3)})
    return rows


def grow_one_by_one(database: np.ndarray, settings, label: str):
    """A default-sized index grown one place at a time; (index, seconds, add latencies)."""
    from tqdm import tqdm

    from vpr_edge.index import PlaceIndex

    index = PlaceIndex(database.shape[1], settings=settings)
    times = np.empty(len(database))
    tic = time.perf_counter()
    for i, row in enumerate(tqdm(database, desc=label, unit="place")):
        start = time.perf_counter()
        index.add(row)
        times[i] = time.perf_counter() - start
    index.wait_for_rebuild()
    return index, time.perf_counter() - tic, times


def run(real: np.ndarray, places: int, n_queries: int, components: int, efs: list[int],
        seed: int) -> dict:
    from vpr_edge.index import IndexSettings

    data = lifted_route(real, places + n_queries, components, seed)
    held_out = np.sort(np.random.default_rng(seed).permutation(len(data))[:n_queries])
    keep = np.setdiff1d(np.arange(len(data)), held_out)
    database, queries = data[keep], data[held_out]
    stored = database.astype(np.float16).astype(np.float32)  # what the index re-scores
    truth = np.concatenate([(stored @ block.T).argmax(axis=0)
                            for block in np.array_split(queries, max(1, n_queries // 100))])
    plain, plain_s, _ = grow_one_by_one(database, IndexSettings(rebuild_growth=None),
                                        "route order, no rebuilds")
    route = measure(plain, queries, truth, efs)
    del plain
    index, auto_s, add_times = grow_one_by_one(database, IndexSettings(),
                                               "route order, background rebuilds")
    automatic = measure(index, queries, truth, efs)
    tic = time.perf_counter()
    index.rebuild()
    rebuild_seconds = time.perf_counter() - tic
    rebuilt = measure(index, queries, truth, efs)
    return {"places": places, "queries": n_queries, "dim": int(database.shape[1]),
            "graph_dim": index.info()["graph_dim"], "components": components,
            "route_order_build_s": round(plain_s, 1),
            "background_rebuilds_build_s": round(auto_s, 1),
            "add_ms_with_background_rebuilds": {
                "p50": round(1e3 * float(np.median(add_times)), 3),
                "p99": round(1e3 * float(np.percentile(add_times, 99)), 3),
                "max": round(1e3 * float(add_times.max()), 1)},
            "rebuild_s": round(rebuild_seconds, 1),
            "rows": [{"ef": a["ef"], "route_order": a, "background_rebuilds": b, "rebuilt": c}
                     for a, b, c in zip(route, automatic, rebuilt)]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--descriptors", type=Path, required=True,
                   help="real descriptors (.npy) from benchmarks/real_route.py --output")
    p.add_argument("--places", type=int, default=10000, help="map size")
    p.add_argument("--queries", type=int, default=500, help="held-out queries")
    p.add_argument("--components", type=int, default=400,
                   help="principal components the route is synthesised in")
    p.add_argument("--efs", type=int, nargs="+", default=[64, 128, 192], help="ef values")
    p.add_argument("--seed", type=int, default=3, help="synthesis seed")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    if not args.descriptors.is_file():
        print(f"skipped: {args.descriptors} not found (make it with benchmarks/real_route.py)")
        return 0
    result = run(np.load(args.descriptors), args.places, args.queries, args.components,
                 args.efs, args.seed)
    adds = result["add_ms_with_background_rebuilds"]
    print(f"{result['places']} places, {result['dim']}-d ({result['graph_dim']}-d graph); "
          f"one by one: {result['route_order_build_s']} s without rebuilds, "
          f"{result['background_rebuilds_build_s']} s with background rebuilds (add p50 "
          f"{adds['p50']} ms, p99 {adds['p99']} ms, max {adds['max']} ms); "
          f"rebuild() {result['rebuild_s']} s")
    print(f"{'ef':>5}{'route R@1':>11}{'p50 ms':>8}{'background R@1':>16}{'p50 ms':>8}"
          f"{'rebuilt R@1':>13}{'p50 ms':>8}")
    for row in result["rows"]:
        a, b, c = row["route_order"], row["background_rebuilds"], row["rebuilt"]
        print(f"{row['ef']:>5}{a['recall_at_1']:>11.3f}{a['p50_ms']:>8.3f}"
              f"{b['recall_at_1']:>16.3f}{b['p50_ms']:>8.3f}"
              f"{c['recall_at_1']:>13.3f}{c['p50_ms']:>8.3f}")
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "insertion_order", **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
