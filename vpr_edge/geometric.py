"""Geometric verification of a loop candidate: ORB features + RANSAC on the fundamental matrix.

Appearance alone confuses look-alike places (two identical corridor doors). Two views of the
same place share many feature matches consistent with one epipolar geometry; look-alikes
rarely do. Needs OpenCV (``pip install 'vpr-edge[verify]'``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ._optional import require
from .errors import InvalidInputError
from .images import checked_frame
from .plain_numbers import plain_numbers

#: the fewest inliers that verify: a fundamental matrix fits any 7 matches
LEAST_MIN_INLIERS = 8
LEAST_MIN_INLIERS_WHY = " (a fundamental matrix fits any 7 matches, so fewer would verify anything)"


@dataclass(frozen=True)
class VerifyConfig:
    """How candidates are verified.

    Attributes:
        features: ORB keypoints detected per image (ORB-SLAM uses 1000-2000 at 640x480).
        max_side: images are shrunk so their longer side is at most this many pixels first.
        ratio: Lowe's ratio test on the two nearest Hamming neighbours.
        ransac_threshold: maximum distance from the epipolar line for an inlier, in pixels
            of the image ORB ran on (longer side at most ``max_side``), so that cameras of
            ``max_side`` pixels and more verify alike (smaller frames are not enlarged: they
            have fewer features and verify fewer true loops; Gardens Point pairs shrunk to
            320 px verified 0.68 of the true pairs instead of 0.72, at 160x90 0.08, counted
            before matches were one-to-one). Measured in original pixels instead, the same
            Gardens Point pairs upscaled to 1920x1080 kept a median of 19.5 inliers instead of
            27.5 (24 in ORB's pixels). 4/3 is the 2 pixels at 960x540 that ``min_inliers``
            was calibrated with.
        confidence: RANSAC confidence.
        min_inliers: a candidate is verified when at least this many independent matches
            (see :func:`count_inliers`) are inliers. On Gardens Point, 43605 unrelated pairs
            (day_right vs day_left and day_left vs day_left, every pair of frames at least 30
            apart) score 0-13, median 8, 99th percentile 10 (RANSAC fits some chance
            matches; 12 pairs reach 12 or 13); the same place seen from the other side of the
            path (the 200 frame-aligned day_right/day_left pairs) scores 7-130, median 19.
            15 rejects every unrelated pair there, with a margin of 2, and keeps 128 of the
            200 true ones (64%; 14 would keep 132).
    """

    features: int = 1000
    max_side: int = 640
    ratio: float = 0.8
    ransac_threshold: float = 4 / 3
    confidence: float = 0.999
    min_inliers: int = 15

    def __post_init__(self) -> None:
        plain_numbers(self)
        problems = []
        for name, least, why in (("features", 8, ""), ("max_side", 32, ""),
                                 ("min_inliers", LEAST_MIN_INLIERS, LEAST_MIN_INLIERS_WHY)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                problems.append(f"{name} must be an int >= {least}{why}, got {value!r}")
        if not (_real(self.ratio) and 0.0 < self.ratio <= 1.0):
            problems.append(f"ratio must be a number in (0, 1], got {self.ratio!r}")
        if not (_real(self.ransac_threshold) and 0.0 < self.ransac_threshold < math.inf):
            problems.append(f"ransac_threshold must be finite pixels > 0 (an infinite one makes "
                            f"every match an inlier), got {self.ransac_threshold!r}")
        if not (_real(self.confidence) and 0.0 < self.confidence < 1.0):
            problems.append(f"confidence must be a number in (0, 1), got {self.confidence!r}")
        if problems:
            raise InvalidInputError("VerifyConfig: " + "; ".join(problems))


def _real(value: object) -> bool:
    """A real number (NumPy's too, made plain by :func:`plain_numbers`), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class OrbFeatures:
    """Keypoint positions ``[n, 2]`` (pixels of the image ORB ran on: the frame shrunk to a
    longer side of at most ``VerifyConfig.max_side``) and binary descriptors ``[n, 32]``
    (uint8)."""

    points: np.ndarray
    descriptors: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.points.nbytes + self.descriptors.nbytes)


def _cv2():
    return require("cv2", extra="verify", purpose="geometric verification")


#: ORB finds no keypoint within 31 pixels (its ``edgeThreshold``) of a border, so an image
#: with a side shorter than this has none (and OpenCV 5 fails on sides of 1-2 pixels)
ORB_MIN_SIDE = 2 * 31 + 1


def orb_features(rgb: np.ndarray, config: VerifyConfig = VerifyConfig()) -> OrbFeatures:
    """Detect ORB features on an ``uint8 HxWx3`` RGB frame or an ``HxW`` (or ``HxWx1``) grey
    one (none on a frame with a side under :data:`ORB_MIN_SIDE` pixels once shrunk: such a
    frame verifies no candidate). Anything else raises :class:`InvalidInputError`."""
    cv2 = _cv2()
    frame, layout = checked_frame(rgb, "RGB")
    none = OrbFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))
    scale = min(1.0, config.max_side / max(frame.shape[:2]))
    size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
    if min(size) < ORB_MIN_SIDE:
        return none
    gray = frame if layout == "mono" else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    orb = cv2.ORB_create(nfeatures=config.features)
    keypoints, descriptors = orb.detectAndCompute(gray, None)
    if descriptors is None or not keypoints:
        return none
    points = np.array([kp.pt for kp in keypoints], dtype=np.float32)
    return OrbFeatures(points, descriptors)


#: Keypoints closer than this (pixels of the image ORB ran on) are one point of the scene to
#: :func:`count_inliers`. ORB finds most corners again at other levels of its pyramid, a
#: pixel or so away: in 80 Gardens Point frames (1000 features at 640x360) 57% of the
#: keypoints have another within 1 pixel and 75% within 1.5, always of another level (none
#: of one level lie within 2 pixels: FAST's non-maximum suppression keeps them apart).
SAME_POINT_PX = 1.5


def _distinct(src: np.ndarray, dst: np.ndarray, order: np.ndarray) -> list[int]:
    """Indices (in ``order``, best first) of correspondences whose point in each image is at
    least :data:`SAME_POINT_PX` from the point of every correspondence kept before it: one
    correspondence per point of either image (a grid of ``SAME_POINT_PX`` cells, so only the
    9 cells around a point are searched)."""
    radius2 = SAME_POINT_PX * SAME_POINT_PX
    grids: tuple[dict, dict] = ({}, {})
    keep = []
    for i in order:
        points = (src[i], dst[i])
        cells = [(int(p[0] // SAME_POINT_PX), int(p[1] // SAME_POINT_PX)) for p in points]
        if any((q[0] - p[0]) ** 2 + (q[1] - p[1]) ** 2 < radius2
               for grid, p, (cx, cy) in zip(grids, points, cells)
               for dx in (-1, 0, 1) for dy in (-1, 0, 1)
               for q in grid.get((cx + dx, cy + dy), ())):
            continue
        for grid, p, cell in zip(grids, points, cells):
            grid.setdefault(cell, []).append((float(p[0]), float(p[1])))
        keep.append(int(i))
    return keep


def count_inliers(a: OrbFeatures, b: OrbFeatures, config: VerifyConfig = VerifyConfig()) -> int:
    """Independent matches between ``a`` and ``b`` consistent with one fundamental matrix (0
    if fewer than 8).

    The matches are one-to-one, between points of the scene: after the ratio test, the
    matches are taken best (smallest Hamming distance) first, and one whose point in either
    image lies within :data:`SAME_POINT_PX` of a point already taken is dropped. So several
    keypoints of ``a`` matched to one keypoint of ``b`` count once, and so do the copies of one
    corner found at several pyramid levels; the count is at most the number of keypoints of
    either image. (They used to count once each: RANSAC fits a fundamental matrix whose
    epipole is a point matched many times, making all of those matches inliers, and 212 of
    43605 unrelated Gardens Point pairs reached 15 inliers, up to 24; now at most 13.)
    """
    cv2 = _cv2()
    if len(a.descriptors) < 8 or len(b.descriptors) < 8:
        return 0
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    pairs = matcher.knnMatch(a.descriptors, b.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < config.ratio * p[1].distance]
    if len(good) < 8:
        return 0
    src = a.points[[m.queryIdx for m in good]]
    dst = b.points[[m.trainIdx for m in good]]
    order = np.argsort([m.distance for m in good], kind="stable")
    finite = np.isfinite(src).all(axis=1) & np.isfinite(dst).all(axis=1)
    keep = _distinct(src, dst, order[finite[order]])  # (points made by hand may be NaN)
    if len(keep) < 8:
        return 0
    src, dst = src[keep], dst[keep]
    fundamental, mask = cv2.findFundamentalMat(src, dst, cv2.FM_RANSAC, config.ransac_threshold,
                                               config.confidence)
    # no fundamental matrix (degenerate points): OpenCV may still hand back a mask, of
    # uninitialised bytes (OpenCV 5.0 did), which counted hundreds of "inliers"
    if fundamental is None or fundamental.size == 0 or mask is None:
        return 0
    return int(np.count_nonzero(mask))
