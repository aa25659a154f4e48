"""Keyframe selection: every n-th frame, or by motion when poses are known."""

from __future__ import annotations

import math

import pytest

from vpr_edge.errors import InvalidInputError
from vpr_edge.keyframes import KeyframeConfig, KeyframePolicy
from vpr_edge.poses import Pose


def test_every_n_keeps_first_and_each_nth() -> None:
    policy = KeyframePolicy(KeyframeConfig(every_n=3))
    assert [policy.accept() for _ in range(7)] == [True, False, False, True, False, False, True]
    assert all(KeyframePolicy().accept() for _ in range(3))


def test_motion_policy_by_distance_and_rotation() -> None:
    policy = KeyframePolicy(KeyframeConfig(every_n=100, min_distance=1.0,
                                           min_rotation=math.radians(20)))
    kept = [policy.accept(stamp=i * 0.1, pose=Pose(i * 0.3, 0)) for i in range(10)]
    assert [i for i, k in enumerate(kept) if k] == [0, 4, 8]  # every >= 1 m
    turned = Pose(2.4, 0, 0, 0, 0, math.sin(math.radians(12.5)), math.cos(math.radians(12.5)))
    assert policy.accept(stamp=1.0, pose=turned)  # 25 degrees, no travel
    assert not policy.accept(stamp=1.1, pose=turned)


def test_standing_still_keeps_only_with_max_interval() -> None:
    still = KeyframePolicy(KeyframeConfig(min_distance=1.0))
    assert [still.accept(stamp=t, pose=Pose(0, 0)) for t in range(5)] == [True] + [False] * 4
    timed = KeyframePolicy(KeyframeConfig(min_distance=1.0, max_interval=2.0))
    assert [timed.accept(stamp=t, pose=Pose(0, 0)) for t in range(5)] == [
        True, False, True, False, True]
    # time jumps back (a looped bag): the interval counts from there, not from the future
    assert [timed.accept(stamp=t, pose=Pose(0, 0)) for t in (0, 1, 2)] == [True, False, True]


def test_without_pose_the_motion_policy_falls_back_to_every_n() -> None:
    policy = KeyframePolicy(KeyframeConfig(every_n=2, min_distance=1.0))
    assert [policy.accept(stamp=t) for t in range(4)] == [True, False, True, False]


def test_a_gap_in_the_odometry_does_not_make_the_next_posed_frame_a_keyframe() -> None:
    """A keyframe kept in the gap forgot the last pose, so a robot standing still got one
    more keyframe after every odometry drop-out (the ROS node keeps every frame of a gap)."""
    policy = KeyframePolicy(KeyframeConfig(min_distance=1.0))
    poses = [Pose(0, 0)] * 3 + [None] * 3 + [Pose(0, 0)] * 4
    assert [policy.accept(stamp=i * 0.1, pose=p) for i, p in enumerate(poses)] == [
        True, False, False, True, True, True, False, False, False, False]


@pytest.mark.parametrize("kwargs", [dict(every_n=0), dict(every_n=True),
                                    dict(min_distance=0.0), dict(max_interval=-1.0)])
def test_bad_config_is_refused(kwargs) -> None:
    with pytest.raises(InvalidInputError):
        KeyframeConfig(**kwargs)


def test_max_interval_without_a_motion_threshold_is_refused() -> None:
    """It forces keyframes while standing still, a motion policy's notion; alone it used to
    do nothing at all (every_n decided)."""
    with pytest.raises(InvalidInputError, match="needs min_distance or min_rotation"):
        KeyframeConfig(every_n=50, max_interval=1.0)
    assert KeyframeConfig(min_rotation=0.3, max_interval=1.0).uses_motion


def test_a_keyframe_taken_back_leaves_the_next_frame_its_place() -> None:
    """A keyframe whose message turned out malformed: the frame after it is decided as if
    the bad one had not come (it used to wait for the next n frames or metres)."""
    policy = KeyframePolicy(KeyframeConfig(every_n=3))
    assert [policy.accept(stamp=t) for t in range(4)] == [True, False, False, True]
    policy.unaccept()  # frame 3 could not be converted
    assert [policy.accept(stamp=t) for t in range(4, 7)] == [True, False, False]
    moving = KeyframePolicy(KeyframeConfig(min_distance=1.0))
    assert moving.accept(stamp=0.0, pose=Pose(0, 0))
    assert moving.accept(stamp=1.0, pose=Pose(1.0, 0))
    moving.unaccept()
    assert moving.accept(stamp=1.1, pose=Pose(1.1, 0))  # 1.1 m from the last good keyframe


def test_a_pose_given_as_numbers_is_taken_and_anything_else_refused_clearly() -> None:
    """The detector and the map take a pose as x, y[, z[, qx, qy, qz, qw]] numbers; the
    policy kept the first such keyframe, then raised AttributeError ("'tuple' object has no
    attribute 'distance_to'") at the next frame."""
    import numpy as np

    policy = KeyframePolicy(KeyframeConfig(min_distance=1.0))
    assert policy.accept(stamp=0.0, pose=(0.0, 0.0, 0.0))
    assert not policy.accept(stamp=0.1, pose=np.array([0.5, 0.0]))
    assert policy.accept(stamp=0.2, pose=[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    assert not policy.accept(stamp=0.3, pose=Pose(1.5, 0.0))
    for bad in ((1.0,), (1.0, 2.0, 3.0, 4.0), "1,2", (1.0, math.nan)):
        with pytest.raises(InvalidInputError, match="pose"):
            KeyframePolicy(KeyframeConfig(min_distance=1.0)).accept(stamp=0.0, pose=bad)
