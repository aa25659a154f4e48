"""Ground truth from positions (`truth_from_positions`), as `vpr-edge loops --gt positions`
uses it on a robot's runtime install: numpy only, no scipy; and from file names
(`truth_from_names`, `--gt names`)."""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from vpr_edge.errors import InvalidInputError
from vpr_edge.loop_metrics import (
    GroundTruth,
    frame_numbers,
    score_loops,
    truth_from_names,
    truth_from_positions,
)


def listed(truth: GroundTruth) -> list[set[int]]:
    """Every frame's ground truth as a set (for small sequences only)."""
    return [{int(j) for chunk in truth.matches(q) for j in chunk} for q in range(len(truth))]


def brute_force(pts: np.ndarray, radius: float, min_separation: int) -> list[set[int]]:
    dist = np.linalg.norm(pts[:, None, :] - pts[None, :, :], axis=2)
    return [{j for j in np.flatnonzero(dist[i] <= radius) if abs(j - i) > min_separation}
            for i in range(len(pts))]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("min_separation", [0, 5])
def test_same_pairs_as_all_distances(dims: int, min_separation: int) -> None:
    rng = np.random.default_rng(dims)
    route = np.cumsum(rng.normal(0, 1.0, (400, dims)), axis=0)  # a wandering robot
    pts = np.concatenate([route, route[::3] + rng.normal(0, 0.5, (134, dims))])  # a revisit
    for radius in (0.5, 3.0, 10.0):
        assert listed(truth_from_positions(pts, radius, min_separation=min_separation)) == \
            brute_force(pts, radius, min_separation)


def test_exactly_radius_apart_counts_and_negative_cells_work() -> None:
    pts = np.array([[-10.0, -10.0], [-7.0, -10.0], [-4.0, -10.0], [-3.9, -10.0]])
    assert listed(truth_from_positions(pts, 3.0)) == [{1}, {0, 2}, {1, 3}, {2}]


def test_needs_no_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("scipy", "scipy.spatial"):
        monkeypatch.setitem(sys.modules, name, None)  # import scipy now fails
    assert listed(truth_from_positions(np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]]),
                                       2.0)) == [{1}, {0}, set()]


@pytest.mark.parametrize("positions, radius", [
    (np.array([[0.0, np.nan]]), 1.0),
    (np.zeros((3, 4)), 1.0),
    (np.zeros(3), 1.0),
    (np.zeros((3, 2)), 0.0),
    (np.zeros((3, 2)), -1.0),
    (np.zeros((3, 2)), float("inf")),
])
def test_bad_input(positions: np.ndarray, radius: float) -> None:
    with pytest.raises(InvalidInputError):
        truth_from_positions(positions, radius)


def test_ground_truth_settings_of_the_wrong_kind_are_refused_clearly() -> None:
    """Positions that are not numbers raised numpy's bare ValueError, a tolerance of None a
    TypeError at the first question, True was a radius of 1 m; and a NumPy radius (from an
    array of settings) was refused as "not a finite number"."""
    with pytest.raises(InvalidInputError, match="positions must be numbers"):
        truth_from_positions([["a", "b"]], 1.0)
    with pytest.raises(InvalidInputError, match="radius must be"):
        truth_from_positions(np.zeros((3, 2)), True)
    for tolerance in (None, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match="tolerance must be"):
            truth_from_names(["a/1.jpg", "b/2.jpg"], tolerance)
    points = np.array([[0.0, 0.0], [0.5, 0.0]])
    assert truth_from_positions(points, np.float32(1.0)).is_match(1, 0)
    assert truth_from_names(["a/1.jpg", "b/2.jpg"], np.int64(1)).is_match(1, 0)


@pytest.mark.parametrize("name", ["{:06d}_cam0.jpg", "cam0_{:06d}.jpg", "Image{:03d}.jpg",
                                  "seq01_frame{:04d}_left.png"])
def test_the_frame_number_is_the_number_that_differs_within_a_folder(name: str) -> None:
    """``000000_cam0.jpg ... 000009_cam0.jpg`` all had the last number, 0: every frame was
    every other folder's ground truth, and shuffled frames scored recall 1.0."""
    keys = [f"/data/{run}/{name.format(n)}" for run in ("a", "b") for n in range(5)]
    assert frame_numbers(keys) == [0, 1, 2, 3, 4] * 2
    truth = listed(truth_from_names(keys, tolerance=1))
    assert truth[0] == {5, 6} and truth[2] == {6, 7, 8} and truth[9] == {3, 4}


def test_frame_numbers_of_bag_frames_and_lone_files() -> None:
    keys = [f"/bags/run.bag:/cam1/image_raw:{n}" for n in (0, 5, 10)] + ["/x/Image042.jpg",
                                                                         "/x/Image042.jpg"]
    assert frame_numbers(keys) == [0, 5, 10, 42, 42]  # (a file listed twice is one file)


@pytest.mark.parametrize("names, message", [
    (["000001_cam0.jpg", "000001_cam1.jpg", "000002_cam0.jpg"],
     r"/a/000001_cam0\.jpg and /a/000001_cam1\.jpg both have frame number 1 \(the first "
     r"number in a name that is not the same in every file of the folder\), so ground truth "
     r"by file name cannot tell them apart"),
    (["Image001.jpg", "Image001_copy.jpg"], r"both have frame number 1"),
    (["Image001.jpg", "cover.jpg"], r"/a/cover\.jpg: no frame number in the file name"),
])
def test_frames_of_a_folder_without_distinct_numbers_are_refused(names: list[str],
                                                                 message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        truth_from_names([f"/a/{name}" for name in names])


def reference_truth(truth: GroundTruth, pairs: list[set[int]], allowed: np.ndarray) -> None:
    """``truth`` answers every question as the listed ``pairs`` (frame -> its true frames) do,
    with ``allowed[q, j]``: whether frame ``j`` was eligible when ``q`` was queried."""
    n = len(pairs)
    assert len(truth) == n
    assert listed(truth) == pairs
    for q in range(n):
        for before in (0, q, n // 2, n):
            found = [int(j) for chunk in truth.matches(q, before=before) for j in chunk]
            assert sorted(found) == sorted(j for j in pairs[q] if j < before)  # once each
        assert [truth.is_match(q, j) for j in range(n)] == [j in pairs[q] for j in range(n)]

    def eligible(q: int, frames: np.ndarray) -> np.ndarray:
        assert np.all(frames < q)  # only frames already in the map are ever asked about
        return allowed[q, frames]

    assert [truth.has_loop(q, eligible) for q in range(n)] == \
        [any(allowed[q, j] for j in pairs[q] if j < q) for q in range(n)]
    assert truth.any_match() == any(pairs)
    rng = np.random.default_rng(n)
    matches = [None if rng.random() < 0.3 else int(rng.integers(0, n)) for _ in range(n)]
    score = score_loops(matches, truth, eligible)
    assert (score.reported, score.correct, score.frames_with_loop) == (
        sum(m is not None for m in matches),
        sum(m is not None and m in pairs[q] for q, m in enumerate(matches)),
        sum(any(allowed[q, j] for j in pairs[q] if j < q) for q in range(n)))


@pytest.mark.parametrize("seed", range(6))
def test_ground_truth_by_position_answers_as_all_pairs_listed(seed: int) -> None:
    """Ground truth used to be every frame's set of true frames: 5 GB for a lab robot's 6000
    frames. Asked instead, it must answer exactly as those sets did."""
    rng = np.random.default_rng(seed)
    dims, n = 2 + seed % 2, int(rng.integers(1, 90))
    pts = rng.uniform(-6, 6, (n, dims)).round(1)  # rounded: some pairs exactly radius apart
    allowed = np.tril(rng.random((n, n)) < rng.uniform(0.02, 0.9), k=-1)
    for radius in (0.7, 2.0, 30.0):
        for min_separation in (0, 3):
            reference_truth(truth_from_positions(pts, radius, min_separation=min_separation),
                            brute_force(pts, radius, min_separation), allowed)


@pytest.mark.parametrize("seed", range(6))
def test_ground_truth_by_name_answers_as_all_pairs_listed(seed: int) -> None:
    rng = np.random.default_rng(seed)
    keys = [f"/runs/{folder}/Image{number:03d}.jpg" for folder in ("a", "b", "c")[:1 + seed % 3]
            for number in rng.choice(60, int(rng.integers(1, 30)), replace=False)]
    keys = [keys[i] for i in rng.permutation(len(keys))]  # numbers need not follow the order
    numbers = frame_numbers(keys)
    n = len(keys)
    allowed = np.tril(rng.random((n, n)) < rng.uniform(0.02, 0.9), k=-1)
    for tolerance in (0, 2, 100):
        pairs = [{j for j in range(n) if Path(keys[j]).parent != Path(keys[q]).parent
                  and abs(numbers[j] - numbers[q]) <= tolerance} for q in range(n)]
        reference_truth(truth_from_names(keys, tolerance), pairs, allowed)


def test_a_dense_route_is_scored_in_bounded_memory_and_time() -> None:
    """`vpr-edge loops --gt positions` listed, for every frame, the frames within the radius:
    a robot in a lab has almost every pair there (8000 frames: 15 s and 6.1 GB; a 10-minute
    bag at 30 Hz was killed for its memory after every frame was described)."""
    n, window = 20000, 50
    pts = np.random.default_rng(0).uniform(0, 7, (n, 2))  # an 8 x 8 m room, --gt-radius 10
    tracemalloc.start()
    start = time.perf_counter()
    truth = truth_from_positions(pts, 10.0)
    score = score_loops([q - 100 if q >= 100 else None for q in range(n)], truth,
                        lambda q, frames: frames <= q - 1 - window)
    assert truth.any_match()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (score.reported, score.correct, score.frames_with_loop) == (n - 100, n - 100,
                                                                       n - window - 1)
    assert peak < 16e6, f"{peak / 1e6:.0f} MB"  # the positions alone are 0.3 MB
    assert seconds < 20, f"{seconds:.1f} s"  # (about 1.5 s)


def test_ground_truth_by_name_takes_linear_time() -> None:
    """Every frame was compared with every other (8000 frames: 2.5 s; 100000: minutes)."""
    keys = [f"/runs/{walk}/Image{i:06d}.jpg" for walk in ("day", "night") for i in range(20000)]
    start = time.perf_counter()
    truth = truth_from_names(keys, tolerance=2)
    score = score_loops([None] * len(keys), truth, lambda q, frames: frames < q)
    seconds = time.perf_counter() - start
    assert seconds < 5, f"{seconds:.1f} s"  # (about 0.3 s)
    assert score.frames_with_loop == 20000 and truth.is_match(20000 + 7, 9)
