"""HNSW graph quality by insertion order: places added along a route vs rebuilt.

A robot adds places one at a time in route order; HNSW graphs built that way are weaker than
graphs built in a random order. This builds a ``--places`` map of full-dimension (7168-d)
descriptors synthesised from the real ones and adds it to a :class:`PlaceIndex` (512-d
sketched graph, exact re-scoring) one place at a time in route order, once per setting:
plain hnswlib inserts (``refine_adds=False, rebuild_growth=None``), with the automatic
background rebuilds (at 4k, 8k, 16k, ... places), with each place re-inserted once its
successor is in (``refine_adds``, the default), and both; then in batches of 8 (shuffled
within, as ``vpr-edge map build`` adds them), without and with refinement; then
``rebuild()`` (a random order for all). For each ``--efs`` it measures recall@1 against exact
search over the stored float16 descriptors and the query p50, and the latency of each add.

Descriptors: :func:`real_route.route_from_real` in the first ``--components`` principal
components of the real descriptors, mapped back to 7168-d (the real mean plus the components,
at the real spread), L2-normalised. Queries are ``--queries`` rows of the same synthesis held
out of the map (other passes over the same places).

    python benchmarks/insertion_order.py --descriptors runs/real_descriptors.npy \\
        --json benchmarks/results/insertion_order.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from vpr_edge.cli.help_format import HelpFormatter

from real_route import descriptors_missing, route_from_real  # neighbour script


def lifted_route(real: np.ndarray, n: int, components: int, seed: int) -> np.ndarray:
    """``[n, dim]`` unit rows: a route synthesised in PCA space, mapped back to ``dim``."""
    real = np.asarray(real, dtype=np.float64)
    mean = real.mean(axis=0)
    _, singular, vt = np.linalg.svd(real - mean, full_matrices=False)
    coords = route_from_real(n, real, components, seed=seed)  # unit rows in PCA coordinates
    spread = np.linalg.norm(singular[:components] / np.sqrt(len(real) - 1))
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for start in range(0, n, 8192):  # in blocks: float64 rows of a 100k map would be 5.7 GB
        rows = (coords[start:start + 8192] * spread) @ vt[:components] + mean
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        out[start:start + 8192] = rows
    return out


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


def grow_along_the_route(database: np.ndarray, settings, batch: int, label: str):
    """A default-sized index grown ``batch`` places per add, in route order; (index,
    seconds, latency of each add)."""
    from tqdm import tqdm

    from vpr_edge.index import PlaceIndex

    index = PlaceIndex(database.shape[1], settings=settings)
    starts = range(0, len(database), batch)
    times = np.empty(len(starts))
    tic = time.perf_counter()
    for i, first in enumerate(tqdm(starts, desc=label, unit="add")):
        start = time.perf_counter()
        index.add(database[first] if batch == 1 else database[first:first + batch])
        times[i] = time.perf_counter() - start
    index.wait_for_rebuild()
    return index, time.perf_counter() - tic, times


def add_latency(times: np.ndarray) -> dict:
    return {"p50": round(1e3 * float(np.median(times)), 3),
            "p99": round(1e3 * float(np.percentile(times, 99)), 3),
            "max": round(1e3 * float(times.max()), 1)}


def variants() -> dict:
    """The route-order growths compared: label -> (IndexSettings, places per add)."""
    from vpr_edge.index import IndexSettings

    fixed = IndexSettings(ef_scaling=False)  # each --efs value as it is
    return {label: (dataclasses.replace(fixed, rebuild_growth=growth, refine_adds=refine), batch)
            for label, growth, refine, batch in (("route order", None, False, 1),
                                                 ("background rebuilds", 2.0, False, 1),
                                                 ("refined", None, True, 1),
                                                 ("refined + rebuilds", 2.0, True, 1),
                                                 ("batches of 8", None, False, 8),
                                                 ("batches of 8, refined", None, True, 8))}


def run(real: np.ndarray, places: int, n_queries: int, components: int, efs: list[int],
        seed: int, only: list[str] | None = None) -> dict:
    data = lifted_route(real, places + n_queries, components, seed)
    held_out = np.sort(np.random.default_rng(seed).permutation(len(data))[:n_queries])
    keep = np.setdiff1d(np.arange(len(data)), held_out)
    database, queries = data[keep], data[held_out]
    stored = database.astype(np.float16).astype(np.float32)  # what the index re-scores
    truth = np.concatenate([(stored @ block.T).argmax(axis=0)
                            for block in np.array_split(queries, max(1, n_queries // 100))])
    graphs: dict[str, dict] = {}
    index = None
    for label, (settings, batch) in variants().items():
        if only and label not in only:
            continue
        index, seconds, add_times = grow_along_the_route(database, settings, batch, label)
        graphs[label] = {"build_s": round(seconds, 1), "add_ms": add_latency(add_times),
                         "efs": measure(index, queries, truth, efs)}
    tic = time.perf_counter()
    index.rebuild()
    graphs["rebuilt"] = {"build_s": round(time.perf_counter() - tic, 1),
                         "efs": measure(index, queries, truth, efs)}
    return {"places": places, "queries": n_queries, "dim": int(database.shape[1]),
            "graph_dim": index.info()["graph_dim"], "components": components,
            "graphs": graphs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--descriptors", type=Path, required=True,
                   help="real descriptors (.npy) from benchmarks/real_route.py --output")
    p.add_argument("--places", type=int, default=10000, help="map size")
    p.add_argument("--queries", type=int, default=500, help="held-out queries")
    p.add_argument("--components", type=int, default=400,
                   help="principal components the route is synthesised in")
    p.add_argument("--efs", type=int, nargs="+", default=[32, 64, 128, 192], help="ef values")
    p.add_argument("--only", nargs="+", default=None, choices=list(variants()),
                   help="build only these one-by-one graphs (default: all; the last one built "
                        "is then rebuilt)")
    p.add_argument("--seed", type=int, default=3, help="synthesis seed")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    if descriptors_missing(args.descriptors):
        return 0
    result = run(np.load(args.descriptors), args.places, args.queries, args.components,
                 args.efs, args.seed, args.only)
    graphs = result["graphs"]
    print(f"{result['places']} places, {result['dim']}-d ({result['graph_dim']}-d graph), "
          f"added in route order; recall@1 of exact search (p50 query ms)")
    print(f"{'graph':<24}{'build s':>8}{'add p50/p99/max ms':>22}"
          + "".join(f"{'ef ' + str(ef):>16}" for ef in args.efs))
    for label, g in graphs.items():
        adds = g.get("add_ms")
        add_text = f"{adds['p50']}/{adds['p99']}/{adds['max']}" if adds else "rebuild()"
        print(f"{label:<24}{g['build_s']:>8}{add_text:>22}"
              + "".join(f"{r['recall_at_1']:>9.3f} ({r['p50_ms']:.2f})" for r in g["efs"]))
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "insertion_order", **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
