"""How the place index scales: build time, query latency, recall against exact search, bytes
per place, save and open time, at several map sizes and descriptor dimensions.

Descriptors are synthetic unless ``--descriptors`` gives real ones (a float ``.npy`` of shape
``[n, dim]``; queries are then noisy copies of random rows; ``--sizes`` are capped so that the
save after a 1% append has rows to add), or ``--synthesise-from`` gives real
ones to synthesise any number from (PCA of the real ones plus noise, see ``real_route.py``; this
is how the 1M-place rows are made). The synthetic ones imitate a robot
route (see :func:`synthetic_route`): consecutive frames are similar, the route passes through
repeating "environments" that look alike (perceptual aliasing), and queries are revisits under
appearance change. Recall is measured against exact float32 search over the same map, which is
what the index promises (not place-recognition accuracy).

    python benchmarks/index_scaling_quick.py                      # 10k and 100k, dims 512, 1024
    python benchmarks/index_scaling_quick.py --sizes 2000 --dims 256 --json out.json
    python benchmarks/real_route.py --output runs/real_descriptors.npy
    python benchmarks/index_scaling_quick.py --sizes 10000 100000 1000000 --dims 512 \
        --synthesise-from runs/real_descriptors.npy --json out.json
    python benchmarks/index_scaling_quick.py --sizes 10000 100000 --dims 400 --lift \
        --synthesise-from runs/real_descriptors.npy --graph default --json out.json

By default the index holds a plain graph of the full descriptors at a fixed ``ef`` and the
script sweeps hnswlib's ``ef``; ``--graph default`` measures the index as ``IndexSettings()``
makes it instead (descriptors longer than 512-d enter the graph as a 512-d sketch and are
re-scored exactly; ``ef`` follows the map's size) and sweeps the whole ``PlaceIndex.query``
over ``--efs`` capped by the map's size (each ``ef`` in use measured once). ``--lift``
synthesises in ``--dims`` principal components and maps back to the real descriptors'
dimension (7168-d for the default model), as ``insertion_order.py`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vpr_edge.cli.help_format import HelpFormatter
from vpr_edge.index import IndexSettings, PlaceIndex


def synthetic_route(n: int, dim: int, seed: int = 0, rho: float = 0.9, env_len: int = 500,
                    env_weight: float = 0.6) -> np.ndarray:
    """A database ``[n, dim]`` of float32 unit rows along a simulated route.

    ``x_t = normalise(env_weight * c_e(t) + sqrt(1 - env_weight^2) * z_t)`` where ``z`` is an
    AR(1) walk (``z_t = rho z_{t-1} + sqrt(1 - rho^2) e_t``, so frames k apart correlate
    ~rho^k) and ``c_e`` is the centre of the environment frame ``t`` lies in (blocks of
    ``env_len`` frames; ``max(8, n // 2000)`` environments revisited round-robin, so distant
    parts of the route look alike).
    """
    rng = np.random.default_rng(seed)
    n_env = max(8, n // 2000)
    centres = rng.standard_normal((n_env, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    z = np.empty((n, dim), dtype=np.float32)
    z[0] = rng.standard_normal(dim) / np.sqrt(dim)
    step = np.float32(np.sqrt(1 - rho**2))
    block = 8192
    for start in range(1, n, block):
        e = (rng.standard_normal((min(block, n - start), dim)) / np.sqrt(dim)).astype(np.float32)
        for i, row in enumerate(e):
            z[start + i] = rho * z[start + i - 1] + step * row
    env = (np.arange(n) // env_len) % n_env
    x = env_weight * centres[env] + np.float32(np.sqrt(1 - env_weight**2)) * z
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def revisits(db: np.ndarray, n_queries: int, seed: int, query_cos: float) -> np.ndarray:
    """Queries that revisit random places of ``db``: ``normalise(x_t + noise)`` with cosine
    ``query_cos`` to ``x_t`` (appearance change between visits)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(db), n_queries)
    sigma = np.sqrt(1 / query_cos**2 - 1)
    noise = rng.standard_normal((n_queries, db.shape[1])).astype(np.float32)
    noise *= sigma / np.linalg.norm(noise, axis=1, keepdims=True)
    q = db[picks] + noise
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.astype(np.float32)


def exact_topk(db: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((q.shape[0], k), dtype=np.int64)
    for s in range(0, q.shape[0], 64):
        scores = q[s:s + 64] @ db.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(scores, part, 1).argsort(axis=1)[:, ::-1]
        out[s:s + 64] = np.take_along_axis(part, order, 1)
    return out


def latencies(fn, queries: np.ndarray, warmup: int = 20) -> dict:
    for i in range(min(warmup, len(queries))):
        fn(queries[i])
    ts = np.empty(len(queries))
    for i, q in enumerate(queries):
        t = time.perf_counter()
        fn(q)
        ts[i] = time.perf_counter() - t
    return {"p50_ms": float(np.percentile(ts, 50) * 1e3),
            "p99_ms": float(np.percentile(ts, 99) * 1e3)}


def recall(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    r1 = float(np.mean(found[:, 0] == truth[:, 0]))
    k = min(10, found.shape[1], truth.shape[1])
    r10 = float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]))
    return r1, r10


def rss_bytes() -> int:
    """Resident memory of this process (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


@dataclass
class Row:
    dim: int
    places: int
    M: int
    ef_construction: int
    build_s: float
    build_per_s: float
    graph: str = "full"
    ef_sweep: list = field(default_factory=list)
    default_ef: int = 0
    query_e2e: dict = field(default_factory=dict)
    query_e2e_filtered: dict = field(default_factory=dict)
    rerank: dict = field(default_factory=dict)
    exact: dict = field(default_factory=dict)
    faiss_flat: dict = field(default_factory=dict)
    memory_bytes_per_place: float = 0.0
    rss_bytes_per_place: float = 0.0
    disk_bytes_per_place: float = 0.0
    save_s: float = 0.0
    save_append_s: float = 0.0
    append_places: int = 0
    open_s: float = 0.0
    open_kept_graph_s: float = 0.0
    open_full_graph_s: float = 0.0


def append_rows(places: int) -> int:
    """Places of the 1% append after a map of ``places`` (then saved again)."""
    return max(1, places // 100)


def sizes_within(sizes: list[int], rows: int) -> list[int]:
    """The ``sizes`` whose map and 1% append fit in ``rows`` descriptors, or else the largest
    size that fits; says which sizes were left out."""
    fit = [s for s in sizes if s + append_rows(s) <= rows]
    if not fit:
        largest = rows
        while largest > 0 and largest + append_rows(largest) > rows:
            largest -= 1
        fit = [largest]
    if fit != sizes:
        print(f"{rows} descriptors: measuring {fit} places instead of {sizes} (each size needs "
              "1% more rows for the save after a 1% append)")
    return fit


def bench_dim(dim: int, sizes: list[int], n_queries: int, efs: list[int], M: int,
              ef_construction: int, default_ef: int, workdir: Path, seed: int,
              make_db, exact_queries: int, query_cos: float, graph: str = "full") -> list[Row]:
    n_max = max(sizes)
    n_total = n_max + append_rows(n_max)  # the last size's 1% append needs rows too
    db = make_db(n_total, dim, seed)
    dim = db.shape[1]  # --lift: synthesised in `dim` components, lifted to the real dim
    if graph == "default":  # as IndexSettings() makes it: sketched graph, ef for the size
        settings = IndexSettings(M=M, ef_construction=ef_construction, ef=default_ef,
                                 mode="hnsw", initial_capacity=n_total)
    else:
        # search_dim=None: a plain full-dimension graph (the ef sweep queries hnswlib
        # directly); ef_scaling=False: set_ef() sets the ef the sweep and the end-to-end rows
        # use, whatever the map's size
        settings = IndexSettings(M=M, ef_construction=ef_construction, ef=default_ef,
                                 mode="hnsw", initial_capacity=n_total, search_dim=None,
                                 ef_scaling=False)
    rss0 = rss_bytes()
    index = PlaceIndex(dim, fingerprint="benchmark", settings=settings)
    rows: list[Row] = []
    built, build_s = 0, 0.0
    stamps = np.arange(n_total, dtype=np.float64)

    def add(start: int, stop: int) -> None:
        for s in range(start, stop, 10000):
            e = min(stop, s + 10000)
            index.add(db[s:e], ids=range(s, e), stamps=stamps[s:e])

    for n in sorted(sizes):
        n = min(n, len(db))
        t = time.perf_counter()
        add(built, n)
        build_s += time.perf_counter() - t
        built = n
        row = Row(dim, n, M, ef_construction, build_s, n / build_s, graph=graph)
        row.rss_bytes_per_place = (rss_bytes() - rss0) / n
        q = revisits(db[:n], n_queries, seed + n, query_cos)
        truth = exact_topk(db[:n], q, 10)
        hnsw = index._hnsw  # raw hnswlib for the ef sweep (the wrapper adds the same overhead)
        for ef in efs if graph == "full" else []:
            index.set_ef(ef)
            labels, _ = hnsw.knn_query(q, k=10, num_threads=1)
            r1, r10 = recall(labels.astype(np.int64), truth)
            lat = latencies(lambda v, h=hnsw: h.knn_query(v, k=10, num_threads=1), q)
            row.ef_sweep.append({"ef": ef, "recall_at_1": r1, "recall_at_10": r10, **lat})
        measured_efs: set[int] = set()
        for ef in efs if graph == "default" else []:  # the whole query: sketch + re-score
            index.set_ef(ef)
            ef_in_use = index.info()["ef_in_use"]  # capped by the map's size (ef_scaling)
            if ef_in_use in measured_efs:
                continue
            measured_efs.add(ef_in_use)
            found = np.array([[m.place_id for m in index.query(v, k=10)] for v in q])
            r1, r10 = recall(found, truth)
            lat = latencies(lambda v: index.query(v, k=10), q)
            row.ef_sweep.append({"ef": ef_in_use, "recall_at_1": r1,
                                 "recall_at_10": r10, **lat})
        index.set_ef(default_ef)
        info = index.info()
        row.default_ef = info["ef_in_use"]
        row.query_e2e = latencies(lambda v: index.query(v, k=10), q)
        found = np.array([[m.place_id for m in index.query(v, k=10)] for v in q])
        row.query_e2e["recall_at_1"], row.query_e2e["recall_at_10"] = recall(found, truth)
        # temporal exclusion inside the search (hnswlib's filter callable): the newest 50
        # places and everything stamped in the last 1% of the route are excluded
        cutoff = float(n - max(1, n // 100))
        row.query_e2e_filtered = latencies(
            lambda v, c=cutoff: index.query(v, k=10, exclude_newest=50, exclude_after_stamp=c), q)
        if info["graph_dim"] == dim:  # (a sketched graph always re-ranks)
            found = np.array([[m.place_id for m in index.query(v, k=10, rerank=True)]
                              for v in q])
            r1, r10 = recall(found, truth)
            row.rerank = {"factor": settings.rerank_factor, "recall_at_1": r1,
                          "recall_at_10": r10,
                          **latencies(lambda v: index.query(v, k=10, rerank=True), q)}
        mirror = db[:n]
        row.exact = latencies(lambda v, m=mirror: np.argpartition(-(m @ v), 10)[:10],
                              q[:exact_queries], warmup=3)
        row.faiss_flat = faiss_flat(mirror, q[:exact_queries], truth[:exact_queries])
        row.memory_bytes_per_place = index.info()["memory_bytes"]["per_place"]
        target = workdir / f"map-{dim}-{n}"
        t = time.perf_counter()
        index.save(target)
        row.save_s = time.perf_counter() - t
        row.disk_bytes_per_place = dir_bytes(target) / n
        extra = append_rows(n)  # a 1% append, then save again (old segments hard-linked)
        add(n, n + extra)
        built = n + extra
        t = time.perf_counter()
        index.save(target)
        row.save_append_s = time.perf_counter() - t
        row.append_places = extra
        t = time.perf_counter()
        reopened = PlaceIndex.open(target, fingerprint="benchmark",
                                   settings=IndexSettings(mode="hnsw", ef=default_ef))
        row.open_s = time.perf_counter() - t
        # the save after the append kept the graph file (IndexSettings.graph_resave), so
        # opening inserts the appended places: side by side with the same map saved with its
        # whole graph, both read again at once (the first open may read from the disk)
        full = reopened.save(workdir / f"map-{dim}-{n}-full")
        del reopened
        for path, key in ((target, "open_kept_graph_s"), (full, "open_full_graph_s")):
            t = time.perf_counter()
            PlaceIndex.open(path, fingerprint="benchmark",
                            settings=IndexSettings(mode="hnsw", ef=default_ef))
            setattr(row, key, time.perf_counter() - t)
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(full, ignore_errors=True)
        rows.append(row)
        print_row(row, efs)
    return rows


def faiss_flat(db: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    """faiss-cpu IndexFlatIP (exact, BLAS) on the same places: build, query, recall, memory."""
    try:
        import faiss
    except ImportError:
        return {"skipped": "faiss-cpu not installed (pip install 'vpr-edge[bench]')"}
    faiss.omp_set_num_threads(1)
    t = time.perf_counter()
    flat = faiss.IndexFlatIP(db.shape[1])
    flat.add(np.ascontiguousarray(db, dtype=np.float32))
    build_s = time.perf_counter() - t
    _, labels = flat.search(np.ascontiguousarray(queries, dtype=np.float32), 10)
    r1, r10 = recall(labels.astype(np.int64), truth)
    lat = latencies(lambda v: flat.search(v[None].astype(np.float32), 10), queries, warmup=3)
    return {"build_s": round(build_s, 3), "recall_at_1": r1, "recall_at_10": r10,
            "memory_bytes_per_place": 4 * db.shape[1], **lat}


def print_header(efs: list[int]) -> None:
    print(f"{'dim':>5} {'places':>7} {'build/s':>8} {'ef':>4} {'R@1':>6} {'R@10':>6} "
          f"{'p50 ms':>7} {'p99 ms':>7}")


def print_row(row: Row, efs: list[int]) -> None:
    for sweep in row.ef_sweep:
        print(f"{row.dim:>5} {row.places:>7} {row.build_per_s:>8.0f} {sweep['ef']:>4} "
              f"{sweep['recall_at_1']:>6.3f} {sweep['recall_at_10']:>6.3f} "
              f"{sweep['p50_ms']:>7.3f} {sweep['p99_ms']:>7.3f}")
    e, r = row.query_e2e, row.rerank
    reranked = (f"rerank x{r['factor']} R@1 {r['recall_at_1']:.3f} p50 {r['p50_ms']:.3f} ms"
                if r else "re-ranked (sketched graph)")
    print(f"      PlaceIndex.query ({row.graph} graph, ef {row.default_ef}): p50 "
          f"{e['p50_ms']:.3f} ms, p99 {e['p99_ms']:.3f} ms, R@1 {e['recall_at_1']:.3f}, R@10 "
          f"{e['recall_at_10']:.3f}; with temporal exclusion p50 "
          f"{row.query_e2e_filtered['p50_ms']:.3f} ms; {reranked}; exact numpy "
          f"p50 {row.exact['p50_ms']:.2f} ms; faiss flat p50 "
          f"{row.faiss_flat.get('p50_ms', float('nan')):.2f} ms")
    print(f"      build {row.build_s:.1f} s; memory {row.memory_bytes_per_place:.0f} B/place "
          f"(RSS growth {row.rss_bytes_per_place:.0f} B/place), "
          f"disk {row.disk_bytes_per_place:.0f} B/place; save {row.save_s:.2f} s, save after "
          f"+{row.append_places} places {row.save_append_s:.2f} s, open then {row.open_s:.2f} s "
          f"(again {row.open_kept_graph_s:.2f} s; with the whole graph saved "
          f"{row.open_full_graph_s:.2f} s)")


def main(sizes: list[int], dims: list[int], queries: int, efs: list[int], M: int,
         ef_construction: int, default_ef: int, seed: int, descriptors: str | None,
         workdir: str | None, exact_queries: int, query_cos: float,
         json_path: str | None, synthesise_from: str | None = None, lift: bool = False,
         graph: str = "full") -> dict:
    from real_route import descriptors_missing, route_from_real  # neighbour script

    make_db, data = synthetic_route, "synthetic_route"
    for path in (descriptors, synthesise_from):
        if path and descriptors_missing(path):
            return {"benchmark": "index_scaling_quick", "skipped": f"{path} not found"}
    if descriptors:
        real = np.load(descriptors, allow_pickle=False).astype(np.float32)
        real /= np.linalg.norm(real, axis=1, keepdims=True)
        dims = [real.shape[1]]
        sizes = sizes_within(sizes, len(real))
        make_db, data = (lambda n, dim, seed: real[:n]), "real:" + descriptors
    elif synthesise_from:
        source = np.load(synthesise_from, allow_pickle=False)
        data = f"synthesised from {source.shape[0]} real descriptors: {synthesise_from}"
        if lift:
            from insertion_order import lifted_route  # neighbour script

            def make_db(n, dim, seed):
                return lifted_route(source, n, dim, seed)

            data += f" (in {dims} principal components, lifted to {source.shape[1]}-d)"
        else:
            def make_db(n, dim, seed):
                return route_from_real(n, source, dim, seed)
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="vpr-index-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print_header(efs)
    rows: list[Row] = []
    try:
        for dim in dims:
            rows += bench_dim(dim, sizes, queries, efs, M, ef_construction, default_ef, base,
                              seed, make_db, exact_queries, query_cos, graph)
    finally:
        if not workdir:
            shutil.rmtree(base, ignore_errors=True)
    import importlib.metadata

    result = {
        "benchmark": "index_scaling_quick",
        "data": data,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "numpy": np.__version__, "hnswlib": importlib.metadata.version("hnswlib")},
        "queries": queries,
        "query_cos": query_cos,
        "graph": graph,
        "seconds": time.perf_counter() - t0,
        "rows": [asdict(r) for r in rows],
    }
    print(f"total {result['seconds']:.0f} s")
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1))
    return result


def plot(result: dict, path: Path) -> bool:
    """Recall@1 vs ef per map size, and query p50 vs map size (hnswlib at the default ef,
    exact numpy, faiss flat), one panel each; False when matplotlib is missing."""
    from loop_closure import pyplot  # neighbour script

    plt = pyplot(path)
    if plt is None:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for row in result["rows"]:
        sweep = row["ef_sweep"]
        left.plot([s["ef"] for s in sweep], [s["recall_at_1"] for s in sweep], marker="o",
                  label=f"{row['places']:,} places, {row['dim']}-d")
    left.axhline(0.99, color="grey", linestyle=":", linewidth=1)
    left.set(xlabel="ef", ylabel="recall@1 vs exact", title="hnswlib: recall vs ef")
    left.legend(fontsize=8)
    for dim in sorted({r["dim"] for r in result["rows"]}):
        rows = sorted((r for r in result["rows"] if r["dim"] == dim), key=lambda r: r["places"])
        sizes = [r["places"] for r in rows]
        series = {f"PlaceIndex.query (ef {rows[0]['default_ef']})":
                  [r["query_e2e"]["p50_ms"] for r in rows],
                  "exact numpy": [r["exact"]["p50_ms"] for r in rows],
                  "faiss IndexFlatIP": [r["faiss_flat"].get("p50_ms") for r in rows]}
        for name, values in series.items():
            if None not in values:
                right.plot(sizes, values, marker="o", label=f"{name}, {dim}-d")
    right.set(xscale="log", yscale="log", xlabel="places in the map", ylabel="query p50 (ms)",
              title="latency vs map size (k = 10, one thread)")
    right.grid(alpha=0.3, which="both")
    right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def cli(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000],
                   help="map sizes (places), measured incrementally on one growing index")
    p.add_argument("--dims", type=int, nargs="+", default=[512, 1024], help="descriptor dims")
    p.add_argument("--queries", type=int, default=500, help="queries per measurement")
    p.add_argument("--efs", type=int, nargs="+", default=[32, 64, 96, 128, 192, 256],
                   help="ef values to sweep: hnswlib's own search with --graph full, the "
                        "whole PlaceIndex.query (sketch search + exact re-scoring; ef capped "
                        "by the map's size, each ef in use measured once) with --graph default")
    p.add_argument("--M", type=int, default=IndexSettings().M, help="hnswlib M")
    p.add_argument("--ef-construction", type=int, default=IndexSettings().ef_construction,
                   help="hnswlib ef_construction")
    p.add_argument("--default-ef", type=int, default=IndexSettings().ef,
                   help="ef for the end-to-end PlaceIndex.query measurements")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--descriptors", default=None,
                   help="real descriptors (.npy [n, dim]) instead of synthetic ones (--sizes "
                        "capped to leave 1%% more rows for the save after a 1%% append)")
    p.add_argument("--synthesise-from", default=None,
                   help="real descriptors (.npy) to synthesise maps of any size from "
                        "(PCA to each --dims, re-driven with noise: real_route.py)")
    p.add_argument("--lift", action="store_true",
                   help="with --synthesise-from: synthesise in --dims principal components, "
                        "then map back to the real descriptors' dimension")
    p.add_argument("--graph", choices=["full", "default"], default="full",
                   help="full: a plain graph of the full descriptors, fixed ef, ef sweep; "
                        "default: the index as IndexSettings() makes it (sketched graph for "
                        "long descriptors, ef for the map's size), its ef sweep end to end")
    p.add_argument("--workdir", default=None,
                   help="where maps are saved (default: a temp dir, removed afterwards)")
    p.add_argument("--exact-queries", type=int, default=50,
                   help="queries for the brute-force numpy latency")
    p.add_argument("--query-cos", type=float, default=0.75,
                   help="cosine between a query and the place it revisits")
    p.add_argument("--json", dest="json_path", default=None, help="write results as JSON here")
    p.add_argument("--plot", type=Path, default=None,
                   help="write recall-vs-ef and latency-vs-map-size plots (PNG) here")
    p.add_argument("--replot", type=Path, default=None,
                   help="only redraw --plot from this results JSON (no measuring)")
    a = p.parse_args(argv)
    if a.lift and not a.synthesise_from:
        p.error("--lift needs --synthesise-from (the real descriptors to lift back to)")
    if a.replot is not None:
        result = json.loads(a.replot.read_text())
    else:
        result = main(a.sizes, a.dims, a.queries, a.efs, a.M, a.ef_construction, a.default_ef,
                      a.seed, a.descriptors, a.workdir, a.exact_queries, a.query_cos,
                      a.json_path, a.synthesise_from, a.lift, a.graph)
    if a.plot is not None and "rows" in result:
        plot(result, a.plot)
    return result


if __name__ == "__main__":
    cli()
