"""Geometric verification (``vpr_edge.geometric``) of frames of any size."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 2000), (2000, 3), (62, 640),
                                   (200, 10000)])
def test_a_frame_too_small_to_verify_has_no_features(shape: tuple[int, int]) -> None:
    """A 1x1 or 3x2000 frame (a 3x2000 one shrinks to 1x640) raised OpenCV's "inv_scale_x
    > 0 in function 'resize'" from ORB's pyramid and stopped ``vpr-edge loops --verify``; no
    keypoint lies within 31 pixels of a border, so such a frame has none and verifies no
    candidate."""
    from vpr_edge.geometric import count_inliers, orb_features

    rng = np.random.default_rng(0)
    small = orb_features(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    assert small.points.shape == (0, 2) and small.descriptors.shape == (0, 32)
    textured = orb_features(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    assert len(textured.points) > 100
    assert count_inliers(small, textured) == 0 and count_inliers(textured, small) == 0


def _flip_bits(descriptors: np.ndarray, rng: np.random.Generator, bits: int) -> np.ndarray:
    """Descriptors with ``bits`` random bits of each flipped (a near copy)."""
    out = descriptors.copy()
    for row in out:
        for bit in rng.choice(256, bits, replace=False):
            row[bit // 8] ^= np.uint8(1 << (bit % 8))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_a_keypoint_matched_many_times_counts_once(seed: int) -> None:
    """1000 query keypoints matched to the 9 keypoints of an unrelated stored image (random
    layouts): RANSAC put its epipole on a stored point matched many times, and every match
    to it was an inlier: 18-24 "inliers" from 9 keypoints, and the pair verified."""
    from vpr_edge.geometric import OrbFeatures, VerifyConfig, count_inliers

    rng = np.random.default_rng(seed)
    stored = OrbFeatures(rng.uniform(0, [640, 360], (9, 2)).astype(np.float32),
                         rng.integers(0, 256, (9, 32), dtype=np.uint8))
    query = OrbFeatures(rng.uniform(0, [640, 360], (1000, 2)).astype(np.float32),
                        _flip_bits(stored.descriptors[np.arange(1000) % 9], rng, 4))
    for a, b in ((query, stored), (stored, query)):
        inliers = count_inliers(a, b)
        assert inliers <= len(stored.points) < len(query.points), inliers
        assert inliers < VerifyConfig().min_inliers, inliers


@pytest.mark.parametrize("seed", range(3))
def test_copies_of_a_corner_at_several_pyramid_levels_count_once(seed: int) -> None:
    """ORB finds most corners again at other pyramid levels, within a pixel, each copy with
    its own descriptor; copies matched to copies counted once each: 9 unrelated corners,
    3 copies each in both images, made 18-21 "inliers" and verified."""
    from vpr_edge.geometric import OrbFeatures, VerifyConfig, count_inliers

    rng = np.random.default_rng(seed)
    copies = np.repeat(np.arange(9), 3)

    def layout() -> np.ndarray:
        corners = rng.uniform(40, [600, 320], (9, 2))
        return (corners[copies] + rng.uniform(-0.5, 0.5, (27, 2))).astype(np.float32)

    descriptors = rng.integers(0, 256, (27, 32), dtype=np.uint8)
    a = OrbFeatures(layout(), descriptors)
    b = OrbFeatures(layout(), _flip_bits(descriptors, rng, 4))
    inliers = count_inliers(a, b)
    assert inliers <= 9 and inliers < VerifyConfig().min_inliers, inliers


def test_unrelated_gardens_point_views_do_not_verify(gardens_point_dir) -> None:
    """Three of the unrelated pairs (frames 57-123 apart) that reached 16 inliers, and
    verified, from 12-26 distinct stored keypoints matched many times over."""
    from vpr_edge.geometric import VerifyConfig, count_inliers, orb_features
    from vpr_edge.images import load_image

    def feats(side: str, n: int):
        return orb_features(load_image(gardens_point_dir / side / f"Image{n:03d}.jpg"))

    for right, left in ((30, 153), (57, 126), (69, 12)):
        inliers = count_inliers(feats("day_right", right), feats("day_left", left))
        assert inliers < VerifyConfig().min_inliers, (right, left, inliers)


def test_a_mono_frame_has_the_features_of_its_grey_image() -> None:
    """An ``HxW`` grey frame (ROS ``mono8``) raised OpenCV's "Invalid number of channels"
    from cvtColor; the detector itself takes mono frames."""
    from vpr_edge.errors import InvalidInputError
    from vpr_edge.geometric import orb_features

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (480, 640), dtype=np.uint8)
    colour = orb_features(np.repeat(grey[:, :, None], 3, axis=2))
    assert len(colour.points) > 100
    for frame in (grey, grey[:, :, None], np.asfortranarray(grey)):
        mono = orb_features(frame)
        np.testing.assert_array_equal(mono.points, colour.points)
        np.testing.assert_array_equal(mono.descriptors, colour.descriptors)
    for bad, words in ((grey.astype(np.float32), "uint8"),
                       (np.zeros((480, 640, 4), np.uint8), "HxWx3")):
        with pytest.raises(InvalidInputError, match=words):
            orb_features(bad)


def test_features_with_non_finite_points_are_counted_without_them() -> None:
    """One-to-one matching rounded every point to a grid cell: a NaN point made by hand
    raised a bare ValueError ("cannot convert float NaN to integer")."""
    from vpr_edge.geometric import OrbFeatures, count_inliers

    rng = np.random.default_rng(0)
    points = rng.uniform(0, [640, 360], (200, 2)).astype(np.float32)
    descriptors = rng.integers(0, 256, (200, 32), dtype=np.uint8)
    clean = OrbFeatures(points, descriptors)
    broken = points.copy()
    broken[::3] = np.nan
    broken[1::3, 0] = np.inf
    assert count_inliers(OrbFeatures(broken, descriptors), clean) <= 200 // 3 + 1
    assert count_inliers(clean, clean) >= 150  # (the same points: all of them agree)
