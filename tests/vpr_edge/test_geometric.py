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
