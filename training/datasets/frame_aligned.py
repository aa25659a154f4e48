"""Frame-aligned traversals: the same file name in two folders is the same place.

Gardens Point Walking (``day_left/Image042.jpg`` and ``day_right/Image042.jpg``) and many
robot datasets recorded twice along one route are like this. The position of a frame is its
index along the route, so radii are in frames (:data:`~.places.FRAME_RADII`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vpr_edge.errors import InvalidInputError
from vpr_edge.sources import is_image_file, not_a_folder

from .places import FRAME_RADII, PlaceSet, Radii, RetrievalDataset


def frame_aligned_dataset(database_dir: str | os.PathLike, query_dir: str | os.PathLike, *,
                          span: tuple[float, float] = (0.0, 1.0), radii: Radii = FRAME_RADII,
                          name: str | None = None) -> RetrievalDataset:
    """Database and queries from two folders of the same route.

    Args:
        span: the part of the route used, as fractions of its length (``(0.0, 0.6)`` = the
            first 60% of frames). Positions stay absolute frame indices.
        radii: in frames (default: positives within 2, negatives beyond 10).
    """
    db_dir, q_dir = Path(database_dir), Path(query_dir)
    db_files, q_files = _images(db_dir), _images(q_dir)
    common = sorted(set(db_files) & set(q_files))
    if not common:
        raise InvalidInputError(
            f"{db_dir} and {q_dir} share no file names: frame-aligned traversals must name "
            "the same place the same way"
        )
    lo, hi = span
    if not 0.0 <= lo < hi <= 1.0:
        raise InvalidInputError(f"span must satisfy 0 <= start < end <= 1, got {span}")
    start, stop = round(lo * len(common)), round(hi * len(common))
    chosen = np.arange(start, stop)
    positions = np.stack([chosen, np.zeros_like(chosen)], axis=1).astype(np.float64)

    def part(folder: Path, files: dict[str, Path]) -> PlaceSet:
        return PlaceSet(tuple(files[common[i]] for i in chosen), positions)

    return RetrievalDataset(
        name=name or f"{db_dir.name}->{q_dir.name}[{lo:.2f}:{hi:.2f}]",
        database=part(db_dir, db_files), queries=part(q_dir, q_files), unit="frame",
        radii=radii,
    )


def route_splits(database_dir: str | os.PathLike, query_dir: str | os.PathLike, *,
                 train: float = 0.6, gap: float = 0.1, radii: Radii = FRAME_RADII
                 ) -> tuple[RetrievalDataset, RetrievalDataset]:
    """Train on the first ``train`` of the route, evaluate on what is left after ``gap``.

    The default (0.6 / 0.1) trains on the first 60% and evaluates on the last 30%, so no
    evaluated frame is near a training frame.
    """
    if not 0 < train and train + gap < 1:
        raise InvalidInputError(f"need train > 0 and train + gap < 1, got {train}, {gap}")
    return (frame_aligned_dataset(database_dir, query_dir, span=(0.0, train), radii=radii),
            frame_aligned_dataset(database_dir, query_dir, span=(train + gap, 1.0),
                                  radii=radii))


def _images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InvalidInputError(not_a_folder(folder))
    files = {p.name: p for p in folder.iterdir() if is_image_file(p)}
    if not files:
        raise InvalidInputError(f"{folder}: no images")
    return files
