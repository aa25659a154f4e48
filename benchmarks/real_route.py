"""Map-sized descriptor sets synthesised from real ones, for index scaling beyond real data.

It also checks the index's random sketch (``IndexSettings.search_dim``) on the real
descriptors: where each real query's exact best match ranks among the projected candidates.

The shared data has 622 real images; an index benchmark at 1M places needs a million
descriptors that are distributed like real ones. :func:`real_descriptors` describes every real
image (Gardens Point day_left and day_right, Corridor ref and query, in route order) with the
default init model; :func:`route_from_real` then re-drives that route many times:

- the real descriptors are projected on their first ``dim`` principal components (PCA without
  whitening: the coordinates keep the real variance spectrum), so ``dim`` must be smaller than
  the number of real images;
- each pass walks the real route at a random speed (positions interpolated between consecutive
  real frames), with a per-pass appearance offset (``pass_noise``, "another day") and AR(1)
  per-frame noise (``frame_noise``, correlation ``rho`` between consecutive frames), both
  Gaussian in the PCA basis with per-component standard deviation ``noise x sqrt(eigenvalue)``;
- rows are L2-normalised.

    python benchmarks/real_route.py --output runs/real_descriptors.npy     # ~30 s
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vpr_edge.cli.help_format import HelpFormatter

from loop_closure import add_model_arguments, describe_files, model_to_use  # neighbour script

ROUTE_FOLDERS = ("gardens_point/day_left", "gardens_point/day_right", "corridor/ref",
                 "corridor/query")


def descriptors_missing(path: Path) -> bool:
    """True, after saying so, when the descriptors file that ``real_route.py --output`` writes
    is absent (the benchmarks that read it then exit 0, as any benchmark without its data)."""
    if Path(path).is_file():
        return False
    print(f"skipped: {path} not found (make it with benchmarks/real_route.py)")
    return True


def real_image_files(data: Path) -> list[Path]:
    """Every real image of the shared data, folder by folder in route order."""
    from vpr_edge.sources import IMAGE_SUFFIXES

    files: list[Path] = []
    for folder in ROUTE_FOLDERS:
        files += sorted(f for f in (data / folder).glob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    return files


def real_descriptors(data: Path, model: Path | None = None) -> np.ndarray:
    """``[n, dim]`` descriptors of the real images (default: a fresh init model, 7168-d)."""
    with model_to_use(model, data, "vpr-real-route-") as chosen:
        return describe_files(chosen, real_image_files(data)).astype(np.float32)


def route_from_real(n: int, real: np.ndarray, dim: int, seed: int = 0, pass_noise: float = 0.5,
                    frame_noise: float = 0.3, rho: float = 0.9) -> np.ndarray:
    """``[n, dim]`` float32 unit rows: the real route re-driven ``ceil(n / len(real))`` times
    in its ``dim``-component PCA space (see the module docstring)."""
    real = np.asarray(real, dtype=np.float64)
    if real.ndim != 2 or real.shape[0] <= dim:
        raise ValueError(f"a {dim}-component PCA needs more than {dim} real descriptors, "
                         f"got {real.shape}")
    centred = real - real.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    coords = (centred @ vt[:dim].T).astype(np.float32)  # [n_real, dim], route order
    std = (singular[:dim] / np.sqrt(len(real) - 1)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    step = np.float32(np.sqrt(1 - rho**2))
    z = rng.standard_normal(dim).astype(np.float32)
    last = len(coords) - 1
    for start in range(0, n, len(coords)):
        count = min(len(coords), n - start)
        pos = np.sort(rng.uniform(0, last, count))  # a pass at a random, varying speed
        lo = np.floor(pos).astype(int)
        frac = (pos - lo).astype(np.float32)[:, None]
        hi = np.minimum(lo + 1, last)
        rows = (1 - frac) * coords[lo] + frac * coords[hi]
        rows += pass_noise * std * rng.standard_normal(dim).astype(np.float32)
        e = rng.standard_normal((count, dim)).astype(np.float32)
        for i in range(count):
            z = rho * z + step * e[i]
            e[i] = z
        rows += frame_noise * std * e
        out[start:start + count] = rows
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def projection_check(descriptors: np.ndarray, search_dim: int = 512) -> dict:
    """Where the exact best match of each real query ranks among the candidates of the
    index's random sketch (``vpr_edge.index.projection``): Gardens Point day_right and
    Corridor queries against day_left + Corridor references (rows in ROUTE_FOLDERS order)."""
    from vpr_edge.index.projection import count_sketch, project

    gp, cr = 200, 111
    database = np.r_[descriptors[:gp], descriptors[2 * gp:2 * gp + cr]]
    queries = np.r_[descriptors[gp:2 * gp], descriptors[2 * gp + cr:]]
    best = (queries @ database.T).argmax(axis=1)
    sketch = count_sketch(descriptors.shape[1], search_dim)
    approx = project(queries, sketch) @ project(database, sketch).T
    rank = (approx > approx[np.arange(len(queries)), best][:, None]).sum(axis=1)
    return {"search_dim": search_dim, "queries": len(queries), "database": len(database),
            "worst_rank_of_exact_best": int(rank.max()),
            "within_16": round(float(np.mean(rank < 16)), 4),
            "within_32": round(float(np.mean(rank < 32)), 4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    add_model_arguments(p)
    p.add_argument("--output", type=Path, required=True, help="write the descriptors (.npy) here")
    p.add_argument("--json", type=Path, default=None,
                   help="write a summary here (count, dim, variance kept by PCA-128/256/512)")
    args = p.parse_args(argv)
    if not (args.data / "gardens_point").is_dir() or not (args.data / "corridor").is_dir():
        print(f"skipped: real data not found under {args.data}")
        return 0
    descriptors = real_descriptors(args.data, args.model)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.output, descriptors)
    print(f"{descriptors.shape[0]} real descriptors of dim {descriptors.shape[1]} -> {args.output}")
    singular = np.linalg.svd(descriptors - descriptors.mean(axis=0), compute_uv=False)
    energy = np.cumsum(singular**2) / np.sum(singular**2)
    kept = {str(k): round(float(energy[min(k, len(energy)) - 1]), 4) for k in (128, 256, 512)}
    print("variance kept by the first PCA components: "
          + ", ".join(f"{k}: {v:.3f}" for k, v in kept.items()))
    check = projection_check(descriptors)
    print(f"index projection to {check['search_dim']} dims: the exact best match of each of "
          f"{check['queries']} queries ranks at worst {check['worst_rank_of_exact_best'] + 1} "
          f"among the projected candidates ({100 * check['within_32']:.1f}% within the 32 "
          "re-scored by default)")
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "real_route", "images": len(descriptors),
                                         "dim": descriptors.shape[1], "pca_variance_kept": kept,
                                         "projection_check": check,
                                         "output": str(args.output)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
