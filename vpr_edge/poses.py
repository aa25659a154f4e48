"""Poses from ROS messages, motion between poses, and time lookup of a pose stream.

A :class:`Pose` is position ``x, y, z`` (metres) and orientation quaternion ``qx, qy, qz, qw``;
``as_tuple()`` is the 7-tuple the map stores per place. :func:`pose_from_message` reads
``nav_msgs/Odometry``, ``geometry_msgs/PoseStamped``, ``PoseWithCovarianceStamped``,
``TransformStamped`` and bare ``Pose``/``Transform`` from any ROS client library (duck typed).
:class:`PoseTrack` answers "where was the robot at time t" for images, from the nearest pose
within a tolerance (no interpolation: odometry usually runs faster than the camera).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInputError


@dataclass(frozen=True)
class Pose:
    """A position in metres and a unit quaternion (identity orientation by default)."""

    x: float
    y: float
    z: float = 0.0
    qx: float = 0.0
    qy: float = 0.0
    qz: float = 0.0
    qw: float = 1.0

    def __post_init__(self) -> None:
        values = self.as_tuple()
        if not all(math.isfinite(v) for v in values):
            raise InvalidInputError(f"pose has non-finite values: {values}")

    def as_tuple(self) -> tuple[float, float, float, float, float, float, float]:
        return (self.x, self.y, self.z, self.qx, self.qy, self.qz, self.qw)

    def distance_to(self, other: Pose) -> float:
        """Euclidean distance between the positions, in metres."""
        return math.dist((self.x, self.y, self.z), (other.x, other.y, other.z))

    def rotation_to(self, other: Pose) -> float:
        """Angle of the relative rotation between the orientations, in radians (0..pi)."""
        a, b = _unit(self), _unit(other)
        dot = abs(sum(p * q for p, q in zip(a, b)))
        return 2.0 * math.acos(min(1.0, dot))


def pose_from_message(msg: Any) -> Pose:
    """The pose carried by a ROS odometry/pose/transform message (see module docstring)."""
    inner = msg
    for attribute in ("pose", "pose", "transform"):  # Odometry.pose.pose, PoseStamped.pose
        if hasattr(inner, attribute) and not hasattr(inner, "position") \
                and not hasattr(inner, "translation"):
            inner = getattr(inner, attribute)
    if hasattr(inner, "position") and hasattr(inner, "orientation"):
        p, q = inner.position, inner.orientation
    elif hasattr(inner, "translation") and hasattr(inner, "rotation"):
        p, q = inner.translation, inner.rotation
    else:
        raise InvalidInputError(
            f"{type(msg).__name__} carries no pose: expected nav_msgs/Odometry, "
            f"geometry_msgs/PoseStamped, PoseWithCovarianceStamped or TransformStamped"
        )
    return Pose(float(p.x), float(p.y), float(p.z), float(q.x), float(q.y), float(q.z),
                float(q.w))


def stamp_seconds(header_or_stamp: Any) -> float:
    """Seconds from a ROS ``Header`` or time (``sec``/``nanosec``, ``secs``/``nsecs`` or
    ``to_sec()``)."""
    stamp = getattr(header_or_stamp, "stamp", header_or_stamp)
    if hasattr(stamp, "sec"):
        return stamp.sec + getattr(stamp, "nanosec", getattr(stamp, "nsec", 0)) * 1e-9
    if hasattr(stamp, "secs"):
        return stamp.secs + stamp.nsecs * 1e-9
    if hasattr(stamp, "to_sec"):
        return float(stamp.to_sec())
    raise InvalidInputError(f"{type(stamp).__name__} is not a ROS time or header")


class PoseTrack:
    """Timestamped poses, looked up by nearest time (poses may arrive in any order)."""

    def __init__(self, max_gap: float = 0.1) -> None:
        """``max_gap``: largest time difference (s) at which a pose still counts as "at" t."""
        if not max_gap > 0:
            raise InvalidInputError(f"max_gap must be positive seconds, got {max_gap!r}")
        self.max_gap = float(max_gap)
        self._times: list[float] = []
        self._poses: list[Pose] = []

    def __len__(self) -> int:
        return len(self._times)

    def add(self, stamp: float, pose: Pose) -> None:
        i = bisect.bisect(self._times, stamp)
        self._times.insert(i, float(stamp))
        self._poses.insert(i, pose)

    def at(self, stamp: float) -> Pose | None:
        """The pose nearest in time to ``stamp``, or None if none is within ``max_gap``."""
        i = bisect.bisect(self._times, stamp)
        best = min((j for j in (i - 1, i) if 0 <= j < len(self._times)),
                   key=lambda j: abs(self._times[j] - stamp), default=None)
        if best is None or abs(self._times[best] - stamp) > self.max_gap:
            return None
        return self._poses[best]


def _unit(pose: Pose) -> tuple[float, float, float, float]:
    q = (pose.qx, pose.qy, pose.qz, pose.qw)
    norm = math.sqrt(sum(v * v for v in q))
    if norm == 0:
        raise InvalidInputError("pose orientation is the zero quaternion")
    return tuple(v / norm for v in q)  # type: ignore[return-value]
