"""Scoring loop-closure detection against ground truth: precision, recall, PR curves.

Ground truth is, per frame of a sequence, the set of other frames showing the same place:
from file names of frame-aligned traversals (``ImageNNN.jpg`` in two folders), or from
positions within a radius. A frame *has a loop* when some frame of its ground truth was in the
map and outside the exclusion window when it was queried.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InvalidInputError

_NUMBER = re.compile(r"\d+")


def frame_numbers(keys: Sequence[str]) -> list[int]:
    """Each frame's number, read from its file name: the first number in the name that is
    not the same in every file of its folder (7 in ``000007_cam0.jpg`` and in
    ``cam0_000007.jpg``, 42 in ``Image042.jpg``, n in a bag frame's ``<bag>:<topic>:n``); for
    the only file of a folder, the last number in its name.

    Raises :class:`InvalidInputError` for a name without a number, and for two files of one
    folder with the same number (ground truth by name could not tell them apart).
    """
    folders: dict[str, dict[str, list[int]]] = {}  # folder -> {key: the numbers in its name}
    for key in keys:
        path = Path(key)
        numbers = [int(n) for n in _NUMBER.findall(path.stem)]
        if not numbers:
            raise InvalidInputError(f"{key}: no frame number in the file name")
        folders.setdefault(str(path.parent), {})[key] = numbers
    number_of: dict[str, int] = {}
    for names in folders.values():
        first = next(iter(names.values()))
        same = {i for i, n in enumerate(first)
                if all(len(other) > i and other[i] == n for other in names.values())}
        seen: dict[int, str] = {}
        for key, numbers in names.items():
            differing = [n for i, n in enumerate(numbers) if i not in same]
            number = differing[0] if differing else numbers[-1]  # (a lone file)
            if number in seen:
                raise InvalidInputError(
                    f"{seen[number]} and {key} both have frame number {number} (the first "
                    "number in a name that is not the same in every file of the folder), so "
                    "ground truth by file name cannot tell them apart: give each file of a "
                    "folder its own number, or use ground truth by position (--gt positions)")
            seen[number] = key
            number_of[key] = number
    return [number_of[key] for key in keys]


def truth_from_names(keys: Sequence[str], tolerance: int = 2) -> list[set[int]]:
    """Frames in different folders whose frame numbers (:func:`frame_numbers`) are within
    ``tolerance``.

    For frame-aligned traversals (Gardens Point: ``day_left/Image042.jpg`` is the same place
    as ``day_right/Image042.jpg``). Frames of the same folder are never ground-truth matches.
    """
    folders = [str(Path(key).parent) for key in keys]
    numbers = frame_numbers(keys)
    return [{j for j, (f, n) in enumerate(zip(folders, numbers))
             if f != folder and abs(n - number) <= tolerance}
            for folder, number in zip(folders, numbers)]


def truth_from_positions(positions: np.ndarray, radius: float, *,
                         min_separation: int = 0) -> list[set[int]]:
    """Frames within ``radius`` of each other (and ``min_separation`` frames apart).

    A grid of ``radius``-sized cells: each frame is compared with the frames of its own and
    the neighbouring cells only (numpy; the runtime has no scipy)."""
    pts = np.asarray(positions, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3) or not np.isfinite(pts).all():
        raise InvalidInputError("positions must be a finite [n, 2] or [n, 3] array")
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
        raise InvalidInputError(f"radius must be a finite number > 0, got {radius!r}")
    cells = np.floor(pts / radius).astype(np.int64)
    members: dict[tuple[int, ...], list[int]] = {}
    for i, cell in enumerate(map(tuple, cells.tolist())):
        members.setdefault(cell, []).append(i)
    offsets = list(itertools.product((-1, 0, 1), repeat=pts.shape[1]))
    truth: list[set[int]] = [set() for _ in range(len(pts))]
    for cell, inside in members.items():
        near = np.array([j for off in offsets
                         for j in members.get(tuple(c + o for c, o in zip(cell, off)), ())])
        for i in inside:
            close = near[np.linalg.norm(pts[near] - pts[i], axis=1) <= radius]
            truth[i] = {int(j) for j in close if abs(int(j) - i) > min_separation}
    return truth


@dataclass(frozen=True)
class LoopScore:
    """Precision/recall of the loops one run reported."""

    reported: int
    correct: int
    frames_with_loop: int

    @property
    def precision(self) -> float:
        return self.correct / self.reported if self.reported else 1.0

    @property
    def recall(self) -> float:
        return self.correct / self.frames_with_loop if self.frames_with_loop else 0.0

    def to_dict(self) -> dict:
        return {"reported": self.reported, "correct": self.correct,
                "frames_with_loop": self.frames_with_loop,
                "precision": round(self.precision, 4), "recall": round(self.recall, 4)}


def score_loops(matches: Sequence[int | None], truth: Sequence[set[int]],
                eligible: Callable[[int, int], bool]) -> LoopScore:
    """``matches[q]`` is the frame index frame ``q`` was matched to (None: no loop).

    ``eligible(q, j)`` says whether frame ``j`` could be returned when ``q`` was queried
    (already in the map and outside the exclusion window).
    """
    reported = correct = with_loop = 0
    for q, match in enumerate(matches):
        if any(eligible(q, j) for j in truth[q]):
            with_loop += 1
        if match is not None:
            reported += 1
            correct += int(match in truth[q])
    return LoopScore(reported, correct, with_loop)


def pr_curve(run: Callable[[float], LoopScore], thresholds: Sequence[float]
             ) -> list[dict]:
    """``run(min_score)`` for each threshold -> rows of threshold, precision, recall."""
    rows = []
    for t in thresholds:
        score = run(float(t))
        rows.append({"min_score": round(float(t), 4), **score.to_dict()})
    return rows


def recall_at_full_precision(rows: Sequence[dict]) -> float:
    """Highest recall among operating points where every reported loop is correct (and at
    least one is reported); counted, not from the rounded precision (24999 correct of 25000
    rounds to 1.0)."""
    return max((r["recall"] for r in rows if r["correct"] == r["reported"] > 0),
               default=0.0)
