"""Poses from ROS messages, motion between poses, and time lookup of a pose stream.

A :class:`Pose` is position ``x, y, z`` (metres) and orientation quaternion ``qx, qy, qz, qw``;
``as_tuple()`` is the 7-tuple the map stores per place. :func:`pose_from_message` reads
``nav_msgs/Odometry``, ``geometry_msgs/PoseStamped``, ``PoseWithCovarianceStamped``,
``TransformStamped`` and bare ``Pose``/``Transform`` from any ROS client library (duck typed).
:class:`PoseTrack` answers "where was the robot at time t" for images: interpolated between
the two poses around t (position linearly, orientation by slerp) when both are within
``max_gap`` seconds of t, else the nearest pose within ``max_gap``, else None.

A zero quaternion means "no orientation": it is what ROS 1 leaves in a pose whose publisher
set only the position. Such a pose keeps its position; its orientation stays zero (also when
interpolated), and :meth:`Pose.rotation_to` counts no rotation to or from it.
"""

from __future__ import annotations

import bisect
import math
import numbers
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from .errors import InvalidInputError
from .plain_numbers import plain_numbers

#: A keyframe or a pose stamped more than this many seconds before the newest one means time
#: jumped back (a bag played in a loop, a restarted simulator); one stamped less before is
#: merely out of order (two drivers, a late message).
JUMP_BACK_SECONDS = 1.0


def jumped_back(stamp: float, newest: float | None, seconds: float = JUMP_BACK_SECONDS) -> bool:
    """Whether time jumped back at ``stamp`` (a looped bag, a restarted simulator): more than
    ``seconds`` before ``newest``, the newest stamp of the same stream (None: none yet). A
    stamp less before it is merely out of order."""
    return newest is not None and stamp < newest - seconds


class StreamClock:
    """The time of one stream of stamps (a camera's keyframes): its newest stamp, and whether
    a stamp restarts it (:meth:`restarts_at`), or comes back from one corrupt stamp
    (:meth:`returns_at`).

    Time restarts at a stamp more than ``seconds`` before the newest (:func:`jumped_back`: a
    looped bag, a restarted simulator), unless the newest was a *leap*: a stamp more than
    ``seconds`` after the one before it, and the stream now goes on from where it was before
    the leap. That leap was one corrupt stamp far ahead (a camera driver's glitch), not time
    passing, and the stream's time goes on from before it. A stamp that follows a leap
    (not more than ``seconds`` before it) makes the leap time passing (a robot that stood
    still, a paused camera).
    """

    def __init__(self, seconds: float = JUMP_BACK_SECONDS) -> None:
        self.seconds = seconds
        self.newest: float | None = None
        self._before_leap: float | None = None  # the newest before a leap not yet followed

    def restarts_at(self, stamp: float) -> bool:
        """Whether time restarts at ``stamp`` (changes nothing)."""
        return jumped_back(stamp, self.newest, self.seconds) and (
            self._before_leap is None or jumped_back(stamp, self._before_leap, self.seconds))

    def returns_at(self, stamp: float) -> bool:
        """Whether ``stamp`` goes back to the time before a leap that was corrupt (changes
        nothing)."""
        return jumped_back(stamp, self.newest, self.seconds) and not self.restarts_at(stamp)

    @property
    def trusted(self) -> float | None:
        """The newest stamp that is not a leap nothing has followed yet: every later stamp is
        at least this minus ``seconds``, or restarts time."""
        return self.newest if self._before_leap is None else self._before_leap

    def advance(self, stamp: float) -> None:
        """Take the stream's next stamp."""
        stamp = float(stamp)
        newest, before = self.newest, self._before_leap
        if newest is None or self.restarts_at(stamp):
            self.newest, self._before_leap = stamp, None
        elif self.returns_at(stamp):  # the leap was corrupt: forget it, and take the stamp
            self.newest, self._before_leap = before, None  # as it comes after the time
            self.advance(stamp)  # before it (it may be a corrupt leap from there, too)
        elif stamp > newest + self.seconds:
            self.newest, self._before_leap = stamp, newest
        else:
            self.newest, self._before_leap = max(newest, stamp), None


@dataclass(frozen=True)
class Pose:
    """A position in metres and an orientation quaternion (identity by default; a zero
    quaternion means the orientation is unknown, see the module docstring)."""

    x: float
    y: float
    z: float = 0.0
    qx: float = 0.0
    qy: float = 0.0
    qz: float = 0.0
    qw: float = 1.0

    def __post_init__(self) -> None:
        plain_numbers(self)
        values = self.as_tuple()
        if not all(math.isfinite(v) for v in values):
            raise InvalidInputError(f"pose has non-finite values: {values}")

    def as_tuple(self) -> tuple[float, float, float, float, float, float, float]:
        return (self.x, self.y, self.z, self.qx, self.qy, self.qz, self.qw)

    def distance_to(self, other: Pose) -> float:
        """Euclidean distance between the positions, in metres."""
        return math.dist((self.x, self.y, self.z), (other.x, other.y, other.z))

    def rotation_to(self, other: Pose) -> float:
        """Angle of the relative rotation between the orientations, in radians (0..pi); 0.0
        when either orientation is unknown (a zero quaternion)."""
        a, b = _unit(self), _unit(other)
        if a is None or b is None:
            return 0.0
        dot = abs(sum(p * q for p, q in zip(a, b)))
        return 2.0 * math.acos(min(1.0, dot))


#: a place's pose as add() takes it: x, y, z, qx, qy, qz, qw (or fewer, or more values) as a
#: sequence or a NumPy array, or a :class:`Pose`
PoseValues = Union[Sequence[float], np.ndarray, Pose]


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


def stamp_parts(header_or_stamp: Any) -> tuple[int, int] | None:
    """``(sec, nanosec)`` of a ROS ``Header`` or time exactly (ROS 2 ``sec``/``nanosec``,
    ROS 1 ``secs``/``nsecs``), or None for a time that has only ``to_sec()``."""
    stamp = getattr(header_or_stamp, "stamp", header_or_stamp)
    if hasattr(stamp, "sec"):
        return int(stamp.sec), int(getattr(stamp, "nanosec", getattr(stamp, "nsec", 0)))
    if hasattr(stamp, "secs"):
        return int(stamp.secs), int(stamp.nsecs)
    return None


#: The key of a place's metadata that holds its image's exact header stamp, ``[sec, nanosec]``.
STAMP_META_KEY = "ros_stamp"


def stamp_meta(parts: tuple[int, int] | None) -> dict[str, Any] | None:
    """A keyframe's place metadata holding its exact stamp (None for an unstamped frame)."""
    return None if parts is None else {STAMP_META_KEY: list(parts)}


def stamp_from_meta(meta: Any, seconds: float | None) -> tuple[int, int] | None:
    """The exact stamp a place's metadata holds (:func:`stamp_meta`), if it is one and agrees
    with the place's float ``seconds`` (to a microsecond: not a stamp of something else, nor
    an edited one); else None."""
    value = meta.get(STAMP_META_KEY) if isinstance(meta, dict) else None
    if (seconds is None or not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return None
    sec, nanosec = value
    if not (0 <= nanosec < 1_000_000_000 and abs(sec) < 2**63) \
            or abs(sec + nanosec * 1e-9 - seconds) > 1e-6:
        return None
    return sec, nanosec


class PoseTrack:
    """Timestamped poses, looked up by time as the module docstring says (poses may arrive
    in any order). Thread-safe: one thread may add while another looks up (a ROS node's
    odometry and image callbacks)."""

    def __init__(self, max_gap: float = 0.1, keep_seconds: float | None = None,
                 jump_back_seconds: float | None = None) -> None:
        """``max_gap``: largest time difference (s) at which a pose still counts as "at" t.
        ``keep_seconds``: forget poses this much older than the newest (None: keep all; a
        node running for hours keeps a bounded history); a pose older than that starts a new
        history (time jumped back). ``jump_back_seconds``: a pose stamped more than this
        before the newest starts a new history already (a live node: a looped bag or a
        restarted simulator must not pair new frames with the last pass's poses). With
        either, one pose stamped far ahead that the stream then comes back from (a corrupt
        stamp: :class:`StreamClock`) is dropped, and trims nothing."""
        if not max_gap > 0:
            raise InvalidInputError(f"max_gap must be positive seconds, got {max_gap!r}")
        if keep_seconds is not None and not keep_seconds > 0:
            raise InvalidInputError(f"keep_seconds must be positive or None, got "
                                    f"{keep_seconds!r}")
        if jump_back_seconds is not None and not jump_back_seconds > 0:
            raise InvalidInputError(f"jump_back_seconds must be positive or None, got "
                                    f"{jump_back_seconds!r}")
        self.max_gap = float(max_gap)
        self.keep_seconds = keep_seconds
        limits = [v for v in (keep_seconds, jump_back_seconds) if v is not None]
        self._clock = StreamClock(min(limits)) if limits else None
        self._times: list[float] = []
        self._poses: list[Pose] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._times)

    def span(self) -> tuple[float, float] | None:
        """The stamps of the first and the last pose held, or None when it holds none."""
        with self._lock:
            return (self._times[0], self._times[-1]) if self._times else None

    def add(self, stamp: float, pose: Pose) -> None:
        """Hold ``pose`` at ``stamp`` (finite seconds: a NaN one would sit out of order and
        hand its pose to the frames around it)."""
        if isinstance(stamp, (bool, np.bool_)) or not isinstance(stamp, numbers.Real) \
                or not math.isfinite(stamp):
            raise InvalidInputError(f"a pose's stamp must be finite seconds, got {stamp!r}")
        stamp = float(stamp)
        with self._lock:
            times = self._times
            keep = self.keep_seconds
            clock = self._clock
            if clock is not None:
                if clock.restarts_at(stamp):
                    # time jumped back (a looped bag, a restarted simulator): a new history;
                    # trimming against the old newest pose would drop every pose from now on
                    times.clear()
                    self._poses.clear()
                elif clock.returns_at(stamp) and times and times[-1] == clock.newest:
                    del times[-1], self._poses[-1]  # the pose stamped far ahead was corrupt
                clock.advance(stamp)
            i = bisect.bisect(times, stamp)
            if i and times[i - 1] == stamp:  # the same stamp again: the newest pose is kept
                self._poses[i - 1] = pose  # (a driver repeating a stuck stamp at 100 Hz grew
                return                     # the history by 56 MB an hour)
            times.insert(i, float(stamp))
            self._poses.insert(i, pose)
            # trimmed in batches, now and then; not against a leap ahead nothing followed yet
            newest = times[-1] if clock is None else clock.trusted
            if keep is not None and newest - times[0] > 2 * keep:
                cut = bisect.bisect_left(times, newest - keep)
                del times[:cut], self._poses[:cut]

    def clear(self) -> None:
        """Forget every pose (time jumped back: the poses held belong to the last run)."""
        with self._lock:
            self._times.clear()
            self._poses.clear()
            if self._clock is not None:
                self._clock = StreamClock(self._clock.seconds)

    def at(self, stamp: float) -> Pose | None:
        """The pose at ``stamp`` (see the module docstring), or None if none is near."""
        with self._lock:
            return self._at(stamp)

    def _at(self, stamp: float) -> Pose | None:
        times = self._times
        i = bisect.bisect(times, stamp)
        before, after = i - 1, i
        if 0 <= before and after < len(times) and stamp - times[before] <= self.max_gap \
                and times[after] - stamp <= self.max_gap:
            span = times[after] - times[before]
            weight = 0.0 if span == 0 else (stamp - times[before]) / span
            return interpolate(self._poses[before], self._poses[after], weight)
        best = min((j for j in (before, after) if 0 <= j < len(times)),
                   key=lambda j: abs(times[j] - stamp), default=None)
        if best is None or abs(times[best] - stamp) > self.max_gap:
            return None
        return _normalised(self._poses[best])


def interpolate(a: Pose, b: Pose, weight: float) -> Pose:
    """The pose ``weight`` (0..1) of the way from ``a`` to ``b``: lerp and slerp (the
    orientation stays unknown, a zero quaternion, if either one's is)."""
    x, y, z = (pa + weight * (pb - pa) for pa, pb in zip((a.x, a.y, a.z), (b.x, b.y, b.z)))
    qa, qb = _unit(a), _unit(b)
    if qa is None or qb is None:
        return Pose(x, y, z, 0.0, 0.0, 0.0, 0.0)
    dot = sum(p * q for p, q in zip(qa, qb))
    if dot < 0:  # the shorter way round
        qb, dot = tuple(-q for q in qb), -dot
    if dot > 0.9995:  # nearly equal: lerp, then normalise
        q = [p + weight * (r - p) for p, r in zip(qa, qb)]
    else:
        theta = math.acos(dot)
        wa = math.sin((1 - weight) * theta) / math.sin(theta)
        wb = math.sin(weight * theta) / math.sin(theta)
        q = [wa * p + wb * r for p, r in zip(qa, qb)]
    norm = math.sqrt(sum(v * v for v in q))
    return Pose(x, y, z, *(v / norm for v in q))


def _normalised(pose: Pose) -> Pose:
    """``pose`` with a unit quaternion (a zero one, no orientation, stays zero)."""
    q = _unit(pose)
    if q is None or q == (pose.qx, pose.qy, pose.qz, pose.qw):
        return pose
    return Pose(pose.x, pose.y, pose.z, *q)


def _unit(pose: Pose) -> tuple[float, float, float, float] | None:
    """The orientation as a unit quaternion, or None if it is unknown (zero)."""
    q = (pose.qx, pose.qy, pose.qz, pose.qw)
    norm = math.sqrt(sum(v * v for v in q))
    if norm == 0:
        return None
    return tuple(v / norm for v in q)  # type: ignore[return-value]
