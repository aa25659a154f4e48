"""Scoring loop-closure detection against ground truth: precision, recall, PR curves.

Ground truth says, per frame of a sequence, which other frames show the same place: from
file names of frame-aligned traversals (``ImageNNN.jpg`` in two folders), or from positions
within a radius. A frame *has a loop* when some frame of its ground truth was in the map and
outside the exclusion window when it was queried. Ground truth is asked, not listed
(:class:`GroundTruth`): a route in a small area makes almost every pair of frames a match.
"""

from __future__ import annotations

import bisect
import itertools
import math
import numbers
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
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


#: ``eligible(q, frames)``: for each of ``frames`` (an array of frame indices, all before
#: ``q``), whether it could be returned when frame ``q`` was queried (already in the map and
#: outside the exclusion window)
Eligible = Callable[[int, np.ndarray], np.ndarray]


class GroundTruth(ABC):
    """Which frames of a sequence show the same place, asked frame by frame.

    The pairs are never listed: on a route that stays in a small area almost every pair of
    frames is a match (a lab robot's 6000 frames held 36 million), so memory stays linear in
    the frames and each question looks only at the frames that could answer it.
    """

    def __init__(self, frames: int) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return self.frames

    @abstractmethod
    def is_match(self, query: int, frame: int) -> bool:
        """Whether ``frame`` shows the place of frame ``query`` (a correct loop)."""

    @abstractmethod
    def matches(self, query: int, *, before: int | None = None) -> Iterator[np.ndarray]:
        """The frames (only those before frame ``before``, when given) that show the place of
        frame ``query``, in non-empty chunks, small ones first: a caller that stops at the
        first chunk that answers its question never looks at the others."""

    def has_loop(self, query: int, eligible: Eligible) -> bool:
        """Whether frame ``query`` has a true loop among the earlier frames ``eligible``
        allows (it stops at the first)."""
        return any(bool(np.any(eligible(query, chunk)))
                   for chunk in self.matches(query, before=query))

    def any_match(self) -> bool:
        """Whether any two frames of the sequence show the same place."""
        return any(True for q in range(self.frames) for _ in self.matches(q, before=q))


def _chunks(frames: np.ndarray, first: int = 64) -> Iterator[np.ndarray]:
    """``frames`` in pieces that double in size: the first answers most questions cheaply,
    and a long search still runs in few numpy calls."""
    start, size = 0, first
    while start < len(frames):
        yield frames[start:start + size]
        start, size = start + size, size * 2


class NameTruth(GroundTruth):
    """Frames in different folders whose frame numbers (:func:`frame_numbers`) are within
    ``tolerance``.

    For frame-aligned traversals (Gardens Point: ``day_left/Image042.jpg`` is the same place
    as ``day_right/Image042.jpg``). Frames of the same folder are never ground-truth matches.
    The frames are kept sorted by number, so a frame's matches are one binary search away.
    """

    def __init__(self, keys: Sequence[str], tolerance: int = 2) -> None:
        if not (isinstance(tolerance, numbers.Integral) and not isinstance(tolerance, bool)
                and tolerance >= 0):
            raise InvalidInputError(f"tolerance must be an int >= 0 (frame numbers), got "
                                    f"{tolerance!r}")
        super().__init__(len(keys))
        self._numbers = frame_numbers(keys)  # Python ints: a number may exceed int64
        folder_ids: dict[str, int] = {}
        self._folders = np.array([folder_ids.setdefault(str(Path(key).parent), len(folder_ids))
                                  for key in keys], dtype=np.int64)
        self._order = np.array(sorted(range(len(keys)), key=lambda i: (self._numbers[i], i)),
                               dtype=np.int64)
        self._sorted_numbers = [self._numbers[i] for i in self._order.tolist()]
        self._tolerance = int(tolerance)

    def is_match(self, query: int, frame: int) -> bool:
        return bool(self._folders[query] != self._folders[frame]
                    and abs(self._numbers[frame] - self._numbers[query]) <= self._tolerance)

    def matches(self, query: int, *, before: int | None = None) -> Iterator[np.ndarray]:
        number = self._numbers[query]
        low = bisect.bisect_left(self._sorted_numbers, number - self._tolerance)
        high = bisect.bisect_right(self._sorted_numbers, number + self._tolerance)
        limit = self.frames if before is None else before
        for chunk in _chunks(self._order[low:high]):
            found = chunk[(self._folders[chunk] != self._folders[query]) & (chunk < limit)]
            if found.size:
                yield found


class PositionTruth(GroundTruth):
    """Frames within ``radius`` of each other (and more than ``min_separation`` frames
    apart).

    A grid of ``radius``-sized cells: a frame is compared with the frames of its own and the
    neighbouring cells only (numpy; the runtime has no scipy).
    """

    def __init__(self, positions: np.ndarray, radius: float, *,
                 min_separation: int = 0) -> None:
        try:
            points = np.asarray(positions, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"positions must be numbers (metres), an [n, 2] or [n, 3] "
                                    f"array: {exc}") from None
        if points.ndim != 2 or points.shape[1] not in (2, 3) or not np.isfinite(points).all():
            raise InvalidInputError("positions must be a finite [n, 2] or [n, 3] array")
        if not (isinstance(radius, numbers.Real) and not isinstance(radius, bool)
                and math.isfinite(radius) and radius > 0):
            raise InvalidInputError(f"radius must be a finite number > 0, got {radius!r}")
        radius = float(radius)
        super().__init__(len(points))
        self._points, self._radius, self._min_separation = points, radius, min_separation
        cells = list(map(tuple, np.floor(points / radius).astype(np.int64).tolist()))
        members: dict[tuple[int, ...], list[int]] = {}
        for i, cell in enumerate(cells):
            members.setdefault(cell, []).append(i)
        inside = {cell: np.array(frames, dtype=np.int64) for cell, frames in members.items()}
        offsets = list(itertools.product((-1, 0, 1), repeat=points.shape[1]))
        near = {cell: [inside[n] for n in (tuple(c + o for c, o in zip(cell, off))
                                           for off in offsets) if n in inside]
                for cell in inside}
        #: per frame, the frames of its own and the neighbouring cells (each array sorted;
        #: the lists are shared by the frames of a cell)
        self._near = [near[cell] for cell in cells]

    def _close(self, query: int, frames: np.ndarray) -> np.ndarray:
        """Which of ``frames`` are matches of frame ``query``."""
        distances = np.linalg.norm(self._points[frames] - self._points[query], axis=1)
        return (distances <= self._radius) & (np.abs(frames - query) > self._min_separation)

    def is_match(self, query: int, frame: int) -> bool:
        return bool(self._close(query, np.array([frame], dtype=np.int64))[0])

    def matches(self, query: int, *, before: int | None = None) -> Iterator[np.ndarray]:
        limit = self.frames if before is None else before
        for cell in self._near[query]:
            for chunk in _chunks(cell[:np.searchsorted(cell, limit)]):
                found = chunk[self._close(query, chunk)]
                if found.size:
                    yield found


def truth_from_names(keys: Sequence[str], tolerance: int = 2) -> NameTruth:
    """Ground truth by file name: see :class:`NameTruth`."""
    return NameTruth(keys, tolerance)


def truth_from_positions(positions: np.ndarray, radius: float, *,
                         min_separation: int = 0) -> PositionTruth:
    """Ground truth by position: see :class:`PositionTruth`."""
    return PositionTruth(positions, radius, min_separation=min_separation)


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


def score_loops(matches: Sequence[int | None], truth: GroundTruth, eligible: Eligible
                ) -> LoopScore:
    """``matches[q]`` is the frame index frame ``q`` was matched to (None: no loop).

    ``eligible(q, frames)`` says which of ``frames`` (all before ``q``) could be returned
    when ``q`` was queried (already in the map and outside the exclusion window): a frame has
    a loop when one of them is in its ground truth.
    """
    reported = correct = with_loop = 0
    for q, match in enumerate(matches):
        with_loop += truth.has_loop(q, eligible)
        if match is not None:
            reported += 1
            correct += truth.is_match(q, match)
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
