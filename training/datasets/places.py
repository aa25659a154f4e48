"""Places with positions, and the ground truth that radii derive from them.

A :class:`RetrievalDataset` is a database and a set of queries, each a :class:`PlaceSet`
(image paths + positions). Positions are metres (``x, y``; lat/lon is converted to UTM by the
readers) or frame indices for frame-aligned traversals. Ground truth, as in the NetVLAD paper:

- training positives: database images within ``pos_radius`` (10 m) of the query;
- definite negatives: database images farther than ``neg_radius`` (25 m);
- test positives: database images within ``eval_radius`` (25 m).

Datasets with hand-made ground truth (Corridor) carry ``eval_positives`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vpr_edge.errors import InvalidInputError

UNITS = ("m", "frame")


@dataclass(frozen=True)
class PlaceSet:
    """Images and their positions (``[n, 2]``), with optional sequence ids and timestamps."""

    paths: tuple[Path, ...]
    positions: np.ndarray
    sequences: tuple[str, ...] | None = None
    timestamps: np.ndarray | None = None

    def __post_init__(self) -> None:
        pos = np.asarray(self.positions, dtype=np.float64)
        if pos.ndim != 2 or pos.shape != (len(self.paths), 2):
            raise InvalidInputError(
                f"positions must be [{len(self.paths)}, 2], got {pos.shape}"
            )
        if not np.isfinite(pos).all():
            raise InvalidInputError("positions contain NaN or inf")
        object.__setattr__(self, "positions", pos)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: np.ndarray | list[int]) -> PlaceSet:
        idx = np.asarray(indices, dtype=int)
        return PlaceSet(
            paths=tuple(self.paths[i] for i in idx),
            positions=self.positions[idx],
            sequences=None if self.sequences is None else tuple(self.sequences[i] for i in idx),
            timestamps=None if self.timestamps is None else self.timestamps[idx],
        )


@dataclass(frozen=True)
class Radii:
    """Ground-truth radii in the dataset's unit (metres, or frames)."""

    pos_radius: float = 10.0
    neg_radius: float = 25.0
    eval_radius: float = 25.0

    def __post_init__(self) -> None:
        if not 0 <= self.pos_radius <= self.neg_radius:
            raise InvalidInputError(
                f"need 0 <= pos_radius <= neg_radius, got {self.pos_radius}, {self.neg_radius}"
            )
        if self.eval_radius < 0:
            raise InvalidInputError(f"eval_radius must be >= 0, got {self.eval_radius}")


#: Radii for frame-aligned traversals, in frames: positives within 2 frames (the data's
#: evaluation tolerance), definite negatives more than 10 frames away.
FRAME_RADII = Radii(pos_radius=2.0, neg_radius=10.0, eval_radius=2.0)


@dataclass(frozen=True)
class RetrievalDataset:
    """Queries to be found in a database."""

    name: str
    database: PlaceSet
    queries: PlaceSet
    unit: str = "m"
    radii: Radii = field(default_factory=Radii)
    eval_positives: tuple[np.ndarray, ...] | None = None

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise InvalidInputError(f"unit must be one of {UNITS}, got {self.unit!r}")
        if len(self.database) == 0 or len(self.queries) == 0:
            raise InvalidInputError(
                f"{self.name}: empty dataset ({len(self.database)} database images, "
                f"{len(self.queries)} queries)"
            )
        if self.eval_positives is not None and len(self.eval_positives) != len(self.queries):
            raise InvalidInputError("eval_positives needs one entry per query")

    def positives(self, radius: float | None = None) -> list[np.ndarray]:
        """Database indices within ``radius`` (default ``eval_radius``) of each query."""
        if radius is None and self.eval_positives is not None:
            return [np.asarray(p, dtype=int) for p in self.eval_positives]
        r = self.radii.eval_radius if radius is None else radius
        return within_radius(self.database.positions, self.queries.positions, r)

    def training_positives(self) -> list[np.ndarray]:
        return within_radius(self.database.positions, self.queries.positions,
                             self.radii.pos_radius)

    def potential_positives(self) -> list[np.ndarray]:
        """Database images NOT definite negatives (within ``neg_radius``) per query."""
        return within_radius(self.database.positions, self.queries.positions,
                             self.radii.neg_radius)

    def describe(self) -> str:
        return (f"{self.name}: {len(self.database)} database, {len(self.queries)} queries, "
                f"unit {self.unit}")


def within_radius(database: np.ndarray, queries: np.ndarray, radius: float,
                  chunk: int = 4096) -> list[np.ndarray]:
    """Sorted database indices within ``radius`` of each query: with SciPy (the ``train``
    extra) a KD-tree, else NumPy distances in chunks of at most 2**24 pairs, so ``vpr-eval``
    of an exported model needs only the ``cpu`` extra."""
    database = np.asarray(database, dtype=np.float64)
    queries = np.asarray(queries, dtype=np.float64)
    try:
        from scipy.spatial import cKDTree
    except ImportError:
        return _within_radius_numpy(database, queries, radius)
    tree = cKDTree(database)
    out: list[np.ndarray] = []
    for start in range(0, len(queries), chunk):
        for hits in tree.query_ball_point(queries[start:start + chunk], r=radius):
            out.append(np.array(sorted(hits), dtype=int))
    return out


def _within_radius_numpy(database: np.ndarray, queries: np.ndarray, radius: float
                         ) -> list[np.ndarray]:
    rows = max(1, 2**24 // max(len(database), 1))
    out: list[np.ndarray] = []
    for start in range(0, len(queries), rows):
        block = queries[start:start + rows]
        squared = ((block[:, None, :] - database[None, :, :]) ** 2).sum(axis=2)
        out.extend(np.flatnonzero(near) for near in squared <= radius * radius)
    return out
