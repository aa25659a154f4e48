"""The per-place records of an index, stored column by column and append-only.

Row ``r`` holds one place as added: id, stamp (NaN = none), pose (NaN row = none), metadata
(compact JSON text or None), the descriptor as float16, and a ``removed`` flag. Rows are only
ever appended; removing a place sets its flag; adding a removed id again appends a new row.
So rows below a saved row count never change, which lets a map save reuse the files that hold
them. Not thread-safe by itself: :class:`~vpr_edge.index.PlaceIndex` guards it with its lock.
"""

from __future__ import annotations

import json
import math

import numpy as np

from ..errors import InvalidInputError
from .results import PlaceRecord


def _grow(arr: np.ndarray, capacity: int, rows: int, fill: float | bool = 0) -> np.ndarray:
    # zeros from np.zeros are pages the OS maps on first write: the room to grow costs no
    # memory until used (filling it made the first add after opening a 30k-place map
    # resident for 410 MB more)
    out = np.zeros((capacity, *arr.shape[1:]), dtype=arr.dtype)
    out[:rows] = arr[:rows]
    if fill:  # (NaN: the small stamp and pose columns)
        out[rows:] = fill
    return out


def open_capacity(rows: int) -> int:
    """Rows the records of an opened map of ``rows`` rows have room for: the first adds
    after opening then copy nothing (growing copies every descriptor under the index's write
    lock: 0.5-2.9 s at 30k places), and the room costs no memory until used."""
    return rows + max(1024, rows // 4)


class PlaceRecords:
    """Append-only columns of place records (see the module docstring)."""

    def __init__(self, dim: int, capacity: int = 16) -> None:
        capacity = max(1, int(capacity))
        self.dim = dim
        self.rows = 0
        self.ids = np.zeros(capacity, dtype=np.int64)
        self.stamps = np.full(capacity, np.nan, dtype=np.float64)
        self.removed = np.zeros(capacity, dtype=bool)
        self.desc16 = np.zeros((capacity, dim), dtype=np.float16)
        self.poses: np.ndarray | None = None  # float64 [capacity, pose_dim]; NaN row = no pose
        self.meta: list[str | None] = []

    # -- shape ---------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return int(self.ids.shape[0])

    @property
    def pose_dim(self) -> int:
        """Length of every pose in this map (0 until the first pose is added)."""
        return 0 if self.poses is None else int(self.poses.shape[1])

    def reserve(self, rows_needed: int, growth: float, pose_dim: int = 0) -> None:
        """Make room for ``rows_needed`` rows, growing geometrically, and a pose column of
        ``pose_dim`` values if there is none yet. All or nothing: a MemoryError leaves the
        records as they were (every new array is made before any is swapped in)."""
        cap = self.capacity
        if rows_needed > cap:
            cap = max(rows_needed, math.ceil(cap * growth))
        grown = {}
        if cap > self.capacity:
            grown = {"ids": _grow(self.ids, cap, self.rows, 0),
                     "stamps": _grow(self.stamps, cap, self.rows, np.nan),
                     "removed": _grow(self.removed, cap, self.rows, False),
                     "desc16": _grow(self.desc16, cap, self.rows, 0)}
            if self.poses is not None:
                grown["poses"] = _grow(self.poses, cap, self.rows, np.nan)
        if self.poses is None and pose_dim:
            grown["poses"] = np.full((cap, pose_dim), np.nan, dtype=np.float64)
        for name, array in grown.items():
            setattr(self, name, array)

    def check_poses(self, poses: list[tuple[float, ...] | None]) -> None:
        """Refuse poses whose length differs from this map's (or from each other)."""
        expected = self.pose_dim
        for i, pose in enumerate(poses):
            if pose is None:
                continue
            if expected == 0:
                expected = len(pose)
            elif len(pose) != expected:
                raise InvalidInputError(
                    f"poses[{i}]: {len(pose)} values, but this map's poses have {expected}; "
                    "use one pose convention per map (e.g. x, y, z, qx, qy, qz, qw)"
                )

    # -- change --------------------------------------------------------------------------
    def append(self, ids: list[int], desc: np.ndarray, stamps: np.ndarray,
               poses: list[tuple[float, ...] | None], metas: list[str | None],
               growth: float = 2.0) -> int:
        """Append rows (inputs already validated); return the first new row."""
        n = len(ids)
        start = self.rows
        self.reserve(start + n, growth)
        stop = start + n
        self.ids[start:stop] = ids
        self.stamps[start:stop] = stamps
        self.removed[start:stop] = False
        self.desc16[start:stop] = desc  # (cast to float16 on assignment)
        if any(p is not None for p in poses):
            if self.poses is None:
                self.reserve(stop, growth, len(next(p for p in poses if p is not None)))
            for i, pose in enumerate(poses):
                self.poses[start + i] = np.nan if pose is None else pose
        elif self.poses is not None:
            self.poses[start:stop] = np.nan
        self.meta.extend(metas)
        self.rows = stop
        return start

    # -- read ----------------------------------------------------------------------------
    def stamp(self, row: int) -> float | None:
        s = float(self.stamps[row])
        return None if math.isnan(s) else s

    def pose(self, row: int) -> tuple[float, ...] | None:
        if self.poses is None:
            return None
        p = self.poses[row]
        if np.isnan(p[0]):
            return None
        return tuple(float(v) for v in p)

    def meta_dict(self, row: int) -> dict:
        text = self.meta[row]
        return {} if text is None else json.loads(text)

    def fields(self, row: int, score: float) -> tuple:
        """``(id, score, stamp, pose, meta)`` of a row, for building a match quickly; the
        score clipped to [-1, 1] (float16 storage leaves a unit descriptor's norm a little
        off 1: a place queried with its own descriptor scored up to 1.00017)."""
        stamp = self.stamps.item(row)
        text = self.meta[row]
        score = -1.0 if score < -1.0 else 1.0 if score > 1.0 else score
        return (self.ids.item(row), score, None if math.isnan(stamp) else stamp,
                None if self.poses is None else self.pose(row),
                {} if text is None else json.loads(text))

    def record(self, row: int) -> PlaceRecord:
        return PlaceRecord(int(self.ids[row]), self.stamp(row), self.pose(row),
                           self.meta_dict(row))

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(~self.removed[: self.rows])

    def compacted(self) -> PlaceRecords:
        """A copy holding only the live rows, in their order."""
        keep = self.live_rows()
        out = PlaceRecords(self.dim, max(16, len(keep)))
        n = len(keep)
        out.ids[:n] = self.ids[keep]
        out.stamps[:n] = self.stamps[keep]
        out.desc16[:n] = self.desc16[keep]
        if self.poses is not None:
            out.poses = np.full((out.capacity, self.pose_dim), np.nan, dtype=np.float64)
            out.poses[:n] = self.poses[keep]
        out.meta = [self.meta[r] for r in keep]
        out.rows = n
        return out

    @classmethod
    def from_columns(cls, dim: int, ids: np.ndarray, stamps: np.ndarray, removed: np.ndarray,
                     desc16: np.ndarray, poses: np.ndarray | None, meta: list[str | None],
                     capacity: int) -> PlaceRecords:
        """Records from loaded columns (all of length ``rows``; ``desc16`` may be longer:
        an array of ``capacity`` rows is taken over as it is, without a copy)."""
        rows = len(ids)
        capacity = max(capacity, rows, 1)
        out = cls(dim, 1)  # (columns of the full capacity below: the descriptors only once)
        out.ids = _grow(np.asarray(ids, dtype=np.int64), capacity, rows, 0)
        out.stamps = _grow(np.asarray(stamps, dtype=np.float64), capacity, rows, np.nan)
        out.removed = _grow(np.asarray(removed, dtype=bool), capacity, rows, False)
        if desc16.shape == (capacity, dim) and desc16.dtype == np.float16:
            out.desc16 = desc16
        else:
            out.desc16 = _grow(desc16[:rows].astype(np.float16, copy=False), capacity, rows, 0)
        if poses is not None and poses.shape[1] > 0:
            out.poses = np.full((out.capacity, poses.shape[1]), np.nan, dtype=np.float64)
            out.poses[:rows] = poses
        out.meta = list(meta)
        out.rows = rows
        return out
