"""Which camera frames become keyframes: every n-th frame, or after enough motion.

A camera at 30 Hz sees nearly the same place in successive frames; describing and storing all
of them costs time and floods the map with near-duplicates. :class:`KeyframePolicy` keeps a
frame whose pose is known (with ``min_distance`` or ``min_rotation`` set) when the robot has
moved ``min_distance`` metres or turned ``min_rotation`` radians since the last keyframe
that had a pose (``max_interval`` seconds forces one while standing still, only if set); it
keeps a frame without a pose (no odometry, or a gap in it) when ``every_n`` frames have
passed since the last keyframe.

>>> policy = KeyframePolicy(KeyframeConfig(every_n=3))
>>> [policy.accept(stamp=t * 0.1) for t in range(6)]
[True, False, False, True, False, False]
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError
from .plain_numbers import plain_numbers
from .poses import Pose, PoseValues


@dataclass(frozen=True)
class KeyframeConfig:
    """Attributes:
    every_n: keep every n-th frame when no pose is known (1 keeps all).
    min_distance: with poses, keep a frame after this many metres of travel (None: ignore).
    min_rotation: with poses, keep a frame after this many radians of turning (None: ignore).
    max_interval: with poses and ``min_distance`` or ``min_rotation``, also keep a frame when
        this many seconds passed without one (None: never).
    """

    every_n: int = 1
    min_distance: float | None = None
    min_rotation: float | None = None
    max_interval: float | None = None

    def __post_init__(self) -> None:
        plain_numbers(self)
        if not isinstance(self.every_n, int) or isinstance(self.every_n, bool) \
                or self.every_n < 1:
            raise InvalidInputError(f"every_n must be an int >= 1, got {self.every_n!r}")
        for name in ("min_distance", "min_rotation", "max_interval"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, numbers.Real)
                                          and not isinstance(value, bool)
                                          and 0 < value < math.inf):
                raise InvalidInputError(f"{name} must be > 0 and finite, or None, got "
                                        f"{value!r}")
        if self.max_interval is not None and not self.uses_motion:
            raise InvalidInputError(
                "max_interval forces a keyframe while the robot stands still, so it needs "
                "min_distance or min_rotation (without them every_n decides): set one of "
                "them, or leave max_interval unset")

    @property
    def uses_motion(self) -> bool:
        return self.min_distance is not None or self.min_rotation is not None


class KeyframePolicy:
    """Stateful decision per incoming frame (feed frames in time order, from one thread)."""

    def __init__(self, config: KeyframeConfig = KeyframeConfig()) -> None:
        self.config = config
        self._since_last = 0
        self._last_pose: Pose | None = None
        self._last_stamp: float | None = None
        self._started = False
        self._before: tuple = (False, 0, None, None)  # the state before the last accept()

    def accept(self, *, stamp: float | None = None, pose: PoseValues | None = None) -> bool:
        """True if this frame should be a keyframe (the policy then counts it as the last).
        ``pose``: a :class:`~vpr_edge.poses.Pose`, or x, y[, z] or x, y, z, qx, qy, qz, qw."""
        cfg = self.config
        pose = _as_pose(pose)
        first = not self._started
        if cfg.uses_motion and pose is not None:
            keep = first or self._last_pose is None or self._moved_enough(pose) or (
                cfg.max_interval is not None and stamp is not None
                and self._last_stamp is not None
                # abs: time that jumped back (a looped bag) is a gap too
                and abs(stamp - self._last_stamp) >= cfg.max_interval)
        else:
            keep = first or self._since_last + 1 >= cfg.every_n
        self._before = (self._started, self._since_last, self._last_pose, self._last_stamp)
        if keep:
            self._started = True
            self._since_last = 0
            # motion counts from the last keyframe with a pose: one kept in a gap of the
            # odometry does not make the next posed frame a keyframe
            self._last_pose = pose if pose is not None else self._last_pose
            self._last_stamp = stamp
        else:
            self._since_last += 1
        return keep

    def unaccept(self) -> None:
        """Take back the last :meth:`accept` of a keyframe that could not be used (a
        malformed message): the next frame is decided as if it had not come, so a bad
        keyframe does not cost the good one after it."""
        self._started, self._since_last, self._last_pose, self._last_stamp = self._before

    def _moved_enough(self, pose: Pose) -> bool:
        cfg, last = self.config, self._last_pose
        return bool((cfg.min_distance is not None and pose.distance_to(last) >= cfg.min_distance)
                    or (cfg.min_rotation is not None
                        and pose.rotation_to(last) >= cfg.min_rotation))


def _as_pose(pose: PoseValues | None) -> Pose | None:
    """``pose`` as a :class:`Pose` (numbers as the detector and the map take them)."""
    if pose is None or isinstance(pose, Pose):
        return pose
    try:
        values = np.asarray(pose, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        values = None
    if values is None or values.ndim != 1 or values.size not in (2, 3, 7):
        raise InvalidInputError(f"pose must be a vpr_edge.poses.Pose or the numbers x, y or "
                                f"x, y, z or x, y, z, qx, qy, qz, qw, got {pose!r}")
    return Pose(*values.tolist())
