"""Ground truth from positions (`truth_from_positions`), as `vpr-edge loops --gt positions`
uses it on a robot's runtime install: numpy only, no scipy; and from file names
(`truth_from_names`, `--gt names`)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from vpr_edge.errors import InvalidInputError
from vpr_edge.loop_metrics import frame_numbers, truth_from_names, truth_from_positions


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
        assert truth_from_positions(pts, radius, min_separation=min_separation) == \
            brute_force(pts, radius, min_separation)


def test_exactly_radius_apart_counts_and_negative_cells_work() -> None:
    pts = np.array([[-10.0, -10.0], [-7.0, -10.0], [-4.0, -10.0], [-3.9, -10.0]])
    assert truth_from_positions(pts, 3.0) == [{1}, {0, 2}, {1, 3}, {2}]


def test_needs_no_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("scipy", "scipy.spatial"):
        monkeypatch.setitem(sys.modules, name, None)  # import scipy now fails
    assert truth_from_positions(np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]]), 2.0) == \
        [{1}, {0}, set()]


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


@pytest.mark.parametrize("name", ["{:06d}_cam0.jpg", "cam0_{:06d}.jpg", "Image{:03d}.jpg",
                                  "seq01_frame{:04d}_left.png"])
def test_the_frame_number_is_the_number_that_differs_within_a_folder(name: str) -> None:
    """``000000_cam0.jpg ... 000009_cam0.jpg`` all had the last number, 0: every frame was
    every other folder's ground truth, and shuffled frames scored recall 1.0."""
    keys = [f"/data/{run}/{name.format(n)}" for run in ("a", "b") for n in range(5)]
    assert frame_numbers(keys) == [0, 1, 2, 3, 4] * 2
    truth = truth_from_names(keys, tolerance=1)
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
