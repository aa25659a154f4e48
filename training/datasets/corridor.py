"""The Corridor evaluation set (Milford 2013, as packaged by VPR-Bench): explicit ground truth.

``query/`` and ``ref/`` hold 111 images each; ``ground_truth.npy`` is an object array of
``[query_index, [matching reference indices]]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vpr_edge.errors import InvalidInputError

from .places import PlaceSet, Radii, RetrievalDataset


def corridor_dataset(root: str | os.PathLike) -> RetrievalDataset:
    root = Path(root)
    refs = sorted((root / "ref").glob("*.jpg"))
    queries = sorted((root / "query").glob("*.jpg"))
    gt_file = root / "ground_truth.npy"
    if not refs or not queries or not gt_file.is_file():
        raise InvalidInputError(f"{root}: expected ref/*.jpg, query/*.jpg and ground_truth.npy")
    table = np.load(gt_file, allow_pickle=True)
    positives: list[np.ndarray] = [np.zeros(0, int)] * len(queries)
    for q, matches in table:
        if not 0 <= int(q) < len(queries):
            raise InvalidInputError(f"{gt_file}: query index {q} out of range")
        refs_of_q = np.array(sorted(int(m) for m in matches), dtype=int)
        outside = refs_of_q[(refs_of_q < 0) | (refs_of_q >= len(refs))]
        if outside.size:
            raise InvalidInputError(
                f"{gt_file}: query {q} matches reference index {int(outside[0])}, but "
                f"{root / 'ref'} holds {len(refs)} images (indices 0..{len(refs) - 1}); the "
                "ground truth belongs to another split of the dataset")
        positives[int(q)] = refs_of_q
    # positions are only placeholders here: ground truth is explicit
    return RetrievalDataset(
        name="corridor",
        database=PlaceSet(tuple(refs), np.stack([np.arange(len(refs)), np.zeros(len(refs))], 1)),
        queries=PlaceSet(tuple(queries), np.stack([np.arange(len(queries)),
                                                    np.zeros(len(queries))], 1)),
        unit="frame", radii=Radii(2, 10, 2), eval_positives=tuple(positives),
    )
