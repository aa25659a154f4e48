"""Exact (brute-force) nearest-neighbour search with numpy.

Used for small maps (a matrix-vector product beats building and walking a graph there and is
always exact), as the reference the HNSW path is tested against, and as the fallback when a
heavily filtered HNSW search cannot find ``k`` allowed places.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import float16_scores


def top_k(scores: np.ndarray, k: int, allowed: np.ndarray | None = None,
          accept: Callable[[int], bool] | None = None) -> list[tuple[int, float]]:
    """The ``k`` best ``(row, score)`` pairs, best first (ties: lower row first).

    ``allowed`` (bool per row) removes rows up front; ``accept(row)`` is asked, in decreasing
    score order, only until ``k`` rows were accepted, so a costly predicate runs as little as
    possible. The result is the exact top-k of the rows that pass both.
    """
    n = scores.shape[0]
    if n == 0 or k <= 0:
        return []
    s = scores.astype(np.float32, copy=False)
    if allowed is not None:
        s = np.where(allowed[:n], s, np.float32(-np.inf))
        n_ok = int(np.count_nonzero(allowed[:n]))
    else:
        n_ok = n
    if n_ok == 0:
        return []
    out: list[tuple[int, float]] = []
    want = min(k, n_ok) if accept is None else min(max(4 * k, 32), n_ok)
    done: np.ndarray | None = None
    while True:
        if want >= n:
            cand = np.arange(n)
        else:
            # every row tied with the want-th best is a candidate, so ties go to lower rows
            kth = s[np.argpartition(-s, want - 1)[want - 1]]
            cand = np.flatnonzero(s >= kth)
        order = cand[np.lexsort((cand, -s[cand]))]
        order = order[np.isfinite(s[order])]
        if done is not None:
            order = order[~np.isin(order, done)]
        for row in order:
            r = int(row)
            if accept is None or accept(r):
                out.append((r, float(s[r])))
                if len(out) == k:
                    return out
        if accept is None or want >= n_ok:
            return out
        done = order if done is None else np.concatenate([done, order])
        want = min(want * 4, n_ok)


def scores_from_float16(desc16: np.ndarray, query: np.ndarray, chunk: int = 16384
                        ) -> np.ndarray:
    """``desc16 @ query`` in float32 without converting the whole float16 matrix at once."""
    out = np.empty(desc16.shape[0], dtype=np.float32)
    for start in range(0, desc16.shape[0], chunk):
        out[start:start + chunk] = float16_scores.scores(desc16[start:start + chunk], query)
    return out
