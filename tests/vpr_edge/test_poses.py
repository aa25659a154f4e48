"""Poses from ROS-shaped messages, motion measures, nearest-time lookup."""

from __future__ import annotations

import math
from types import SimpleNamespace as NS

import numpy as np
import pytest

from vpr_edge.errors import InvalidInputError
from vpr_edge.poses import Pose, PoseTrack, pose_from_message, stamp_seconds

POINT = NS(x=1.0, y=2.0, z=3.0)
QUAT = NS(x=0.0, y=0.0, z=math.sin(0.25), w=math.cos(0.25))  # 0.5 rad about z
EXPECTED = (1.0, 2.0, 3.0, 0.0, 0.0, math.sin(0.25), math.cos(0.25))


@pytest.mark.parametrize("message", [
    NS(pose=NS(pose=NS(position=POINT, orientation=QUAT), covariance=[0] * 36)),  # Odometry
    NS(header=None, pose=NS(position=POINT, orientation=QUAT)),  # PoseStamped
    NS(transform=NS(translation=POINT, rotation=QUAT)),  # TransformStamped
    NS(position=POINT, orientation=QUAT),  # Pose
])
def test_pose_from_every_message_kind(message) -> None:
    assert pose_from_message(message).as_tuple() == pytest.approx(EXPECTED)


def test_message_without_pose_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="carries no pose"):
        pose_from_message(NS(data=1))


def test_distance_and_rotation() -> None:
    a = Pose(0, 0)
    b = Pose(3, 4, 0, *EXPECTED[3:])
    assert a.distance_to(b) == pytest.approx(5.0)
    assert a.rotation_to(b) == pytest.approx(0.5)
    flipped = Pose(0, 0, 0, 0, 0, -math.sin(0.25), -math.cos(0.25))  # same rotation, -q
    assert b.rotation_to(flipped) == pytest.approx(0.0, abs=1e-6)


def test_non_finite_pose_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="non-finite"):
        Pose(float("nan"), 0)


def test_stamps_from_ros1_and_ros2_times() -> None:
    assert stamp_seconds(NS(stamp=NS(sec=3, nanosec=500_000_000))) == 3.5
    assert stamp_seconds(NS(secs=2, nsecs=250_000_000)) == 2.25
    with pytest.raises(InvalidInputError):
        stamp_seconds(NS(foo=1))


def test_track_interpolates_between_close_poses_else_nearest() -> None:
    track = PoseTrack(max_gap=0.1)
    for t in (3.0, 1.0, 2.0, 2.1):  # out of order on purpose
        track.add(t, Pose(t, 0))
    assert len(track) == 4
    assert track.at(2.04).x == pytest.approx(2.04)  # between 2.0 and 2.1: interpolated
    assert track.at(1.95).x == 2.0 and track.at(2.96).x == 3.0  # one side only: nearest
    assert track.at(2.5) is None and track.at(10.0) is None
    assert PoseTrack().at(1.0) is None


def test_interpolation_slerps_the_orientation() -> None:
    half = math.radians(45)  # 0 and 90 degrees about z
    a, b = Pose(0, 0), Pose(2, 0, 0, 0, 0, math.sin(half), math.cos(half))
    track = PoseTrack(max_gap=1.0)
    track.add(0.0, a)
    track.add(1.0, b)
    mid = track.at(0.5)
    assert mid.x == pytest.approx(1.0)
    assert a.rotation_to(mid) == pytest.approx(math.radians(45))
    assert mid.rotation_to(b) == pytest.approx(math.radians(45))


def test_a_zero_quaternion_is_no_orientation() -> None:
    """ROS 1 leaves (0, 0, 0, 0) in a pose whose publisher set only the position. Looking
    up a frame between two such poses used to raise ('zero quaternion'), which stopped a bag
    read and every image callback of the ROS node; now the position is interpolated and the
    orientation stays unknown."""
    unknown = (0.0, 0.0, 0.0, 0.0)
    track = PoseTrack(max_gap=1.0)
    track.add(0.0, Pose(0, 0, 0, *unknown))
    track.add(1.0, Pose(2, 0, 0, *unknown))
    track.add(2.0, Pose(4, 0))  # an orientation after an unknown one
    mid = track.at(0.5)
    assert mid.as_tuple() == pytest.approx((1.0, 0.0, 0.0, *unknown))
    assert track.at(1.5).as_tuple()[3:] == unknown
    assert track.at(2.4).as_tuple() == (4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    assert mid.rotation_to(Pose(0, 0)) == 0.0 and Pose(0, 0).rotation_to(mid) == 0.0


def test_the_nearest_pose_comes_back_with_a_unit_quaternion() -> None:
    track = PoseTrack(max_gap=0.1)
    track.add(1.0, Pose(1, 2, 3, 0, 0, 0, 2.0))  # not normalised by its publisher
    assert track.at(1.05).as_tuple() == (1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0)


def test_a_track_keeps_a_bounded_history_and_takes_adds_during_lookups() -> None:
    """A ROS node adds odometry on one thread while images look poses up on another (two
    unguarded list inserts let a lookup see them half done: IndexError), for hours (every
    pose was kept: 70 MB an hour at 100 Hz)."""
    import threading

    track = PoseTrack(max_gap=0.05, keep_seconds=5.0)
    errors: list[Exception] = []
    done = threading.Event()

    def look_up() -> None:
        while not done.is_set():
            try:
                track.at(1.234)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    reader = threading.Thread(target=look_up)
    reader.start()
    try:
        for i in range(20000):  # 200 s at 100 Hz
            track.add(i * 0.01, Pose(i * 0.01, 0))
    finally:
        done.set()
        reader.join()
    assert errors == []
    assert 500 <= len(track) <= 1001  # between keep_seconds and twice that, at 100 Hz
    assert track.at(199.99).x == pytest.approx(199.99) and track.at(100.0) is None
    with pytest.raises(InvalidInputError, match="keep_seconds"):
        PoseTrack(keep_seconds=0)


def test_a_track_refuses_a_stamp_that_is_not_finite_and_can_be_cleared() -> None:
    """A NaN stamp was taken, sat out of order in the sorted stamps, and from then on
    handed its pose to the frames around it (and at(nan) returned a pose)."""
    track = PoseTrack(max_gap=0.05)
    for i in range(10):
        track.add(i * 0.02, Pose(i * 0.02, 0))
    for bad in (math.nan, math.inf, -math.inf, "0.1", None, True):
        with pytest.raises(InvalidInputError, match="finite seconds"):
            track.add(bad, Pose(999.0, 999.0))
    assert len(track) == 10 and track.at(0.05).x == pytest.approx(0.05)
    track.clear()
    assert len(track) == 0 and track.at(0.05) is None and track.span() is None
    track.add(np.float32(0.5), Pose(1, 0))  # numpy stamps, as ROS adapters may give
    track.add(np.int64(1), Pose(2, 0))
    assert track.span() == (0.5, 1.0) and track.at(0.5).x == 1 and track.at(1.0).x == 2



def test_a_stream_clock_tells_a_restart_from_one_corrupt_stamp_ahead() -> None:
    """One keyframe stamped far ahead (a driver's glitch), then the stream going on from
    before it, counted as time jumping back: the exclusion window started afresh, and the
    frames of the last seconds became loop candidates."""
    from vpr_edge.poses import StreamClock

    clock = StreamClock()
    for t in (100.0, 100.1, 1100.0):  # a leap of 1000 s
        assert not clock.restarts_at(t)
        clock.advance(t)
    assert clock.newest == 1100.0 and clock.trusted == 100.1
    assert clock.returns_at(100.2) and not clock.restarts_at(100.2)  # back from the leap
    assert clock.restarts_at(99.0) and not clock.returns_at(99.0)  # before it: a restart
    clock.advance(100.2)
    assert clock.newest == clock.trusted == 100.2
    clock.advance(160.0)  # a leap that the stream follows: time passed (a paused camera)
    clock.advance(160.1)
    assert clock.trusted == 160.1 and clock.restarts_at(100.3)
    clock.advance(0.5)  # a looped bag, a restarted simulator
    assert clock.newest == 0.5 and not clock.restarts_at(0.0)  # out of order by 0.5 s
    assert clock.restarts_at(-0.6)


def test_a_stream_clock_comes_back_from_two_corrupt_stamps_in_a_row() -> None:
    """A corrupt stamp far ahead, then another between it and the stream's time: the second
    became the stream's time, so the stream going on counted as time jumping back."""
    from vpr_edge.poses import StreamClock

    clock = StreamClock()
    for t in (100.0, 100.1, 1100.0, 600.0):
        assert not clock.restarts_at(t)
        clock.advance(t)
    assert clock.newest == 600.0 and clock.trusted == 100.1  # 600 is a leap from 100.1 too
    assert clock.returns_at(100.2) and not clock.restarts_at(100.2)
    clock.advance(100.2)
    assert clock.newest == clock.trusted == 100.2
    track = PoseTrack(max_gap=0.05, keep_seconds=5.0, jump_back_seconds=1.0)
    for t in (0.0, 0.02, 1000.0, 500.0, 0.04):
        track.add(t, Pose(t, 0.0))
    assert track.span() == (0.0, 0.04) and track.at(0.03).x == pytest.approx(0.03)


def test_a_jump_back_in_time_starts_a_new_history() -> None:
    """A looped bag or a restarted simulator: trimming against the old newest pose deleted
    every new pose right after it came, and no frame got a pose again."""
    track = PoseTrack(max_gap=0.05, keep_seconds=5.0)
    for i in range(3000):
        track.add(i * 0.1, Pose(i * 0.1, 0))  # 300 s
    for i in range(100):
        track.add(i * 0.1, Pose(-i * 0.1, 0))  # the bag again from 0 s
    assert track.at(5.0).x == pytest.approx(-5.0)
    assert len(track) == 100


def test_a_short_jump_back_starts_a_new_history_with_jump_back_seconds() -> None:
    """Time jumping back by less than keep_seconds (a 30 s bag in a loop, at the node's 60 s)
    kept the last pass's poses: a frame whose odometry was still on its way took the old
    pass's pose at that stamp, and the map stored it."""
    track = PoseTrack(max_gap=0.05, keep_seconds=60.0, jump_back_seconds=1.0)
    for i in range(300):
        track.add(i * 0.1, Pose(i * 0.1, 100.0))  # 30 s, y = 100
    track.add(0.0, Pose(0.0, 0.0))  # the bag again: y = 0
    assert len(track) == 1 and track.at(10.0) is None  # no old pose for a frame at 10 s
    track.add(10.0, Pose(1.0, 0.0))
    track.add(9.5, Pose(0.5, 0.0))  # out of order by 0.5 s: kept, not a jump
    assert len(track) == 3 and track.at(9.5).y == 0.0
    with pytest.raises(InvalidInputError, match="jump_back_seconds"):
        PoseTrack(jump_back_seconds=0)


@pytest.mark.parametrize("jump_back", [None, 1.0])
def test_one_pose_stamped_far_ahead_is_dropped_and_keeps_the_history(jump_back) -> None:
    """One odometry message with a corrupt stamp 1000 s ahead: trimming against it dropped
    the whole history at once, and the next pose (time "jumping back") cleared it again, so
    the frames around it got no pose."""
    track = PoseTrack(max_gap=0.05, keep_seconds=5.0, jump_back_seconds=jump_back)
    for i in range(100):
        track.add(i * 0.01, Pose(i * 0.01, 0))  # 1 s at 100 Hz
    track.add(1000.0, Pose(-1.0, -1.0))
    assert len(track) == 101 and track.at(0.5).x == pytest.approx(0.5)
    for i in range(100, 150):
        track.add(i * 0.01, Pose(i * 0.01, 0))  # the odometry goes on
    assert len(track) == 150 and track.span() == (0.0, 1.49)
    assert track.at(0.5).x == pytest.approx(0.5) and track.at(1000.0) is None
    track.add(3000.0, Pose(3.0, 0))  # a leap that the stream follows: time passed
    track.add(3000.04, Pose(3.04, 0))
    assert len(track) == 2 and track.at(3000.02).x == pytest.approx(3.02)


def test_a_stuck_odometry_stamp_keeps_one_pose_not_a_growing_history() -> None:
    """A driver repeating its last stamp at 100 Hz grew the history by 56 MB an hour: the
    trimming looks at the time span, which stays 0. The newest pose of a stamp is kept."""
    track = PoseTrack(max_gap=0.1, keep_seconds=5.0)
    track.add(0.5, Pose(0.0, 0.0))
    for i in range(10_000):
        track.add(1.0, Pose(float(i), 0.0))
    assert len(track) == 2
    assert track.at(1.0).x == 9999.0
