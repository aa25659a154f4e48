"""Exact (brute-force) nearest-neighbour search with numpy.

Used for small maps (a matrix-vector product beats building and walking a graph there and is
always exact), as the reference the HNSW path is tested against, and as the fallback when a
heavily filtered HNSW search cannot find ``k`` allowed places.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import float16_scores

#: Scores closer than this are ties, ordered by row (the place added first comes first). The
#: same descriptor added twice scores the same only up to the last float32 bit: a matrix
#: product sums some rows in another order (OpenBLAS's remainder rows), and one added alone
#: is normalised in another order than one added in a batch. Far below what the float16
#: descriptors resolve (1e-3).
TIE_TOLERANCE = 1e-6


def tie_order(rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Positions of ``rows``/``scores`` best first; the scores within :data:`TIE_TOLERANCE`
    of the best one not yet placed are ties, lower row first (so the order never strays more
    than the tolerance from the scores', and the best place leads whatever ``k``)."""
    order = np.lexsort((rows, -scores))
    ranked = scores[order]
    if order.size < 2 or not (ranked[:-1] - ranked[1:] <= TIE_TOLERANCE).any():
        return order  # no two scores that close: the common case
    return order[ranked_order(rows[order].tolist(), ranked.tolist())]


def ranked(rows: list[int], scores: list[float]) -> list[int]:
    """:func:`tie_order` for a few dozen candidates, in Python (no numpy call: a query's
    re-scored candidates, right after an inference)."""
    order = sorted(range(len(rows)), key=lambda i: (-scores[i], rows[i]))
    return [order[i] for i in ranked_order([rows[i] for i in order],
                                           [scores[i] for i in order])]


def ranked_order(rows: list[int], scores: list[float]) -> list[int]:
    """For candidates already sorted by score, best first: their positions with the ties
    of each run (the scores within :data:`TIE_TOLERANCE` of the run's first, its best)
    ordered by row."""
    out: list[int] = []
    run: list[int] = []
    for i, score in enumerate(scores):
        if run and scores[run[0]] - score > TIE_TOLERANCE:
            out.extend(sorted(run, key=rows.__getitem__) if len(run) > 1 else run)
            run = []
        run.append(i)
    out.extend(sorted(run, key=rows.__getitem__) if len(run) > 1 else run)
    return out


def top_k(scores: np.ndarray, k: int, allowed: np.ndarray | None = None,
          accept: Callable[[int], bool] | None = None) -> list[tuple[int, float]]:
    """The ``k`` best ``(row, score)`` pairs, best first (ties, :data:`TIE_TOLERANCE`:
    lower row first).

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
            cand = np.flatnonzero(s >= kth - TIE_TOLERANCE)
        order = cand[tie_order(cand, s[cand])]
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


#: the most a unit query's score against a float16 descriptor can differ from its score against
#: the float32 vector that was rounded to it: float16 moves each value by at most 2**-11 of
#: itself (its unit roundoff), so the score by at most 2**-11 (Cauchy-Schwarz), plus the float32
#: rounding of the sums and of the values float16 holds as subnormals (below 1e-5 up to 8192
#: dims). The typical error is far smaller (1e-5 at 512 dims), but near-duplicate places (a
#: robot standing still) differ by less than that
FLOAT16_SCORE_ERROR = 2.0**-11 + 1e-5
#: float32 bytes of the float16 rows :func:`scores_from_float16` converts at a time. ONNX
#: Runtime's arena keeps its largest conversion for the process's life: 16384 rows of 7168
#: dims held 460 MB after one scan (and took 221 ms at 20k rows, against 19 ms for 512 rows)
SCAN_CHUNK_BYTES = 16 * 2**20


def scores_from_float16(desc16: np.ndarray, query: np.ndarray,
                        rows: np.ndarray | None = None) -> np.ndarray:
    """``desc16[rows] @ query`` (every row when ``rows`` is None) in float32, gathering and
    converting :data:`SCAN_CHUNK_BYTES` of rows at a time."""
    n = desc16.shape[0] if rows is None else rows.shape[0]
    out = np.empty(n, dtype=np.float32)
    chunk = max(1, SCAN_CHUNK_BYTES // (4 * max(1, desc16.shape[1])))
    for start in range(0, n, chunk):
        part = (desc16[start:start + chunk] if rows is None
                else desc16[rows[start:start + chunk]])
        out[start:start + chunk] = float16_scores.scores(part, query)
    return out
