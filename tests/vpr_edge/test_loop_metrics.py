"""Ground truth from positions (`truth_from_positions`), as `vpr-edge loops --gt positions`
uses it on a robot's runtime install: numpy only, no scipy."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from vpr_edge.errors import InvalidInputError
from vpr_edge.loop_metrics import truth_from_positions


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
