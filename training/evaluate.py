"""Recall@N with exact search, in bounded memory.

A query counts as found at N when one of its N most similar database descriptors (inner
product of L2-normalised descriptors) is a ground-truth positive. Queries without any positive
are left out and counted. Search runs over database chunks with a running top-k merge, so the
similarity matrix is never held whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vpr_edge.images import load_image, resize

DEFAULT_NS = (1, 5, 10, 20)


@dataclass(frozen=True)
class RecallResult:
    """Recall@N of one method on one dataset."""

    method: str
    dataset: str
    recalls: dict[int, float]
    queries: int
    queries_without_positive: int
    top_k: np.ndarray = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"method": self.method, "dataset": self.dataset,
                **{f"recall@{n}": round(r, 4) for n, r in self.recalls.items()},
                "queries": self.queries,
                "queries_without_positive": self.queries_without_positive}


def top_k_exact(queries: np.ndarray, database: np.ndarray, k: int, *,
                query_chunk: int = 1024, db_chunk: int = 16384) -> np.ndarray:
    """``[n_q, k]`` indices of the most similar database rows, best first (chunked)."""
    q = np.asarray(queries, dtype=np.float32)
    db = np.asarray(database, dtype=np.float32)
    k = min(k, db.shape[0])
    out = np.empty((q.shape[0], k), dtype=np.int64)
    for qs in range(0, q.shape[0], query_chunk):
        qb = q[qs:qs + query_chunk]
        best_s = np.full((qb.shape[0], 0), -np.inf, dtype=np.float32)
        best_i = np.empty((qb.shape[0], 0), dtype=np.int64)
        for ds in range(0, db.shape[0], db_chunk):
            sims = qb @ db[ds:ds + db_chunk].T
            take = min(k, sims.shape[1])
            part = np.argpartition(-sims, take - 1, axis=1)[:, :take]
            scores = np.concatenate([best_s, np.take_along_axis(sims, part, 1)], axis=1)
            index = np.concatenate([best_i, part + ds], axis=1)
            keep = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            best_s = np.take_along_axis(scores, keep, 1)
            best_i = np.take_along_axis(index, keep, 1)
        out[qs:qs + query_chunk] = best_i
    return out


def recall_at_n(top_k: np.ndarray, positives: Sequence[np.ndarray],
                ns: Sequence[int] = DEFAULT_NS, *, method: str = "", dataset: str = ""
                ) -> RecallResult:
    """Recall@N from retrieved indices and per-query positive sets."""
    has_positive = np.array([len(p) > 0 for p in positives])
    hits = np.zeros((len(positives), top_k.shape[1]), dtype=bool)
    for i, pos in enumerate(positives):
        if len(pos):
            hits[i] = np.isin(top_k[i], pos)
    first = np.where(hits.any(1), hits.argmax(1), top_k.shape[1])
    scored = int(has_positive.sum())
    recalls = {n: float((first[has_positive] < n).mean()) if scored else 0.0 for n in ns}
    return RecallResult(method, dataset, recalls, scored, int((~has_positive).sum()), top_k)


def evaluate(query_descriptors: np.ndarray, database_descriptors: np.ndarray,
             positives: Sequence[np.ndarray], *, ns: Sequence[int] = DEFAULT_NS,
             method: str = "", dataset: str = "") -> RecallResult:
    """Exact search + Recall@N."""
    top = top_k_exact(query_descriptors, database_descriptors, max(ns))
    return recall_at_n(top, positives, ns, method=method, dataset=dataset)


def encode_images(describe: Callable[[np.ndarray], np.ndarray], paths: Sequence[Path], *,
                  height: int, width: int, batch_size: int = 16, progress: bool = True,
                  desc: str = "describe") -> np.ndarray:
    """Descriptors of image files: load, resize to the model's size, ``describe`` batches.

    An unreadable image raises :class:`~vpr_edge.errors.ImageDecodeError` naming it:
    evaluation must not silently drop images.
    """
    from tqdm import tqdm

    out = []
    for start in tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch",
                      disable=not progress):
        batch = np.stack([resize(load_image(p), height, width)
                          for p in paths[start:start + batch_size]])
        out.append(np.asarray(describe(batch), dtype=np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def format_table(results: Sequence[RecallResult]) -> str:
    """One row per result: method, dataset, Recall@N columns."""
    if not results:
        return "(no results)"
    ns = sorted({n for r in results for n in r.recalls})
    head = ["method", "dataset", *[f"R@{n}" for n in ns], "queries"]
    rows = [[r.method, r.dataset, *[f"{r.recalls.get(n, float('nan')):.3f}" for n in ns],
             str(r.queries)] for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)
