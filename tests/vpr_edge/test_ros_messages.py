"""The nodes' output messages, built from stand-ins of the generated ROS message classes."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from vpr_edge.loop_closure import LoopClosure
from vpr_edge.ros_messages import (
    LOOP_ROW_FIELDS,
    MessageTypes,
    loop_closure_messages,
    match_pose_header_fields,
)


class Msg(SimpleNamespace):
    """A generated message class: keyword fields, attributes settable afterwards."""


class Pose(SimpleNamespace):
    def __init__(self) -> None:
        super().__init__(position=SimpleNamespace(), orientation=SimpleNamespace())


class ArrayMsg(Msg):
    def __init__(self, **fields) -> None:
        super().__init__(layout=SimpleNamespace(dim=[]), **fields)


def loop(pose=(1.0, 2.0, 3.0)) -> LoopClosure:
    return LoopClosure(query_id=40, query_stamp=12.5, match_id=3, match_stamp=2.0, score=0.41,
                       verified=None, inliers=None, match_pose=pose, consistent_frames=3)


def types(loop_type=None) -> MessageTypes:
    return MessageTypes(loop_type, ArrayMsg, Msg, Pose, Msg)


def test_standard_row_and_match_pose() -> None:
    header = object()
    message, pose = loop_closure_messages(loop(), header, float, types())
    assert message.data[:5] == [12.5, 40.0, 2.0, 3.0, 0.41] and message.data[5:7] == [-1, -1]
    assert message.layout.dim[0].label == ",".join(LOOP_ROW_FIELDS)
    assert message.layout.dim[0].size == len(LOOP_ROW_FIELDS) == len(message.data)
    assert pose.header is header
    assert (pose.pose.position.x, pose.pose.position.z, pose.pose.orientation.w) == (1, 3, 1)


def test_the_matched_pose_is_stamped_and_framed_as_the_match() -> None:
    """match_pose carried the query image's header: the camera frame and the query's
    stamp, so RViz drew the earlier place's odometry pose relative to the camera, now."""
    assert match_pose_header_fields(loop(), "odom_wheel") == (2.0, "odom_wheel")
    unstamped = LoopClosure(query_id=40, query_stamp=12.5, match_id=3, match_stamp=None,
                            score=0.41, verified=None, inliers=None, match_pose=(1.0, 2.0),
                            consistent_frames=3)
    assert match_pose_header_fields(unstamped, "") == (0.0, "odom")  # no odometry seen yet
    pose_header = object()
    _, pose = loop_closure_messages(loop(), object(), float, types(), pose_header)
    assert pose.header is pose_header


def test_vpr_edge_msgs_and_no_pose() -> None:
    header = object()
    message, pose = loop_closure_messages(loop(pose=None), header, lambda t: ("time", t),
                                          types(loop_type=Msg))
    assert pose is None
    assert message.header is header and message.query_stamp == ("time", 12.5)
    assert (message.match_id, message.verified, message.has_match_pose) == (3, -1, False)
    row, _ = loop_closure_messages(loop(pose=None), header, float, types())
    assert all(math.isnan(v) for v in row.data[-3:])


def test_planar_and_full_poses() -> None:
    """A map built from ``x, y`` columns has 2-value poses: the loop is still published (it
    was lost to an unpacking error), with z = 0 and the identity orientation; so is a pose
    whose orientation is unknown (a zero quaternion, which RViz refuses)."""
    for stored, position, orientation in [
        ((4.0, 5.0), (4, 5, 0), (0, 0, 0, 1)),
        ((4.0, 5.0, 6.0), (4, 5, 6), (0, 0, 0, 1)),
        ((1, 2, 3, 0.0, 0.0, 0.7071, 0.7071), (1, 2, 3), (0, 0, 0.7071, 0.7071)),
        ((1, 2, 3, 0.0, 0.0, 0.0, 0.0), (1, 2, 3), (0, 0, 0, 1)),
    ]:
        for message_type in (None, Msg):  # std_msgs row + PoseStamped, vpr_edge_msgs
            _, pose = loop_closure_messages(loop(pose=stored), object(), float,
                                                  types(loop_type=message_type))
            p, q = pose.pose.position, pose.pose.orientation
            assert (p.x, p.y, p.z) == position and (q.x, q.y, q.z, q.w) == orientation
        row, _ = loop_closure_messages(loop(pose=stored), object(), float, types())
        assert len(row.data) == len(LOOP_ROW_FIELDS) and row.data[-3:] == list(position)


def test_a_loop_of_unstamped_frames_makes_a_row() -> None:
    """Frames without stamps are allowed (no exclusion_seconds): the standard row raised
    TypeError on float(None) instead of NaN, as every other unknown is."""
    unstamped = LoopClosure(query_id=1, query_stamp=None, match_id=0, match_stamp=None,
                            score=0.9, verified=None, inliers=None, match_pose=None,
                            consistent_frames=1)
    row, _ = loop_closure_messages(unstamped, object(), float, types())
    assert math.isnan(row.data[0]) and math.isnan(row.data[2]) and row.data[1] == 1.0


def test_loop_stamps_come_back_exactly_as_the_images_carried_them() -> None:
    """A camera stamp turned into float seconds and back was up to ~120 ns off
    (1700000100.200123457 published as .200123548), so a SLAM back end looking its
    keyframes up by stamp found none; a remembered keyframe's stamp comes back exact."""
    from vpr_edge.poses import stamp_seconds
    from vpr_edge.ros_messages import ExactStamps, rounded_parts, stamp_parts

    header = SimpleNamespace(stamp=SimpleNamespace(sec=1700000100, nanosec=200123457))
    seconds = stamp_seconds(header)
    assert rounded_parts(seconds) != (1700000100, 200123457)  # what float seconds give back
    stamps = ExactStamps()
    assert stamps.remember(seconds, stamp_parts(header))
    assert stamps.parts(seconds) == (1700000100, 200123457)
    ros1 = SimpleNamespace(stamp=SimpleNamespace(secs=5, nsecs=7))
    assert stamp_parts(ros1) == (5, 7) and stamp_parts(SimpleNamespace(to_sec=lambda: 1.0)) \
        is None
    assert not stamps.remember(seconds, (0, 0))  # a second frame of that stamp changes nothing
    assert stamps.parts(seconds) == (1700000100, 200123457)
    assert ExactStamps().parts(seconds) == rounded_parts(seconds)  # a place from a map on disk
    assert rounded_parts(1.9999999996) == (2, 0)  # rounds up into the next second
    bounded = ExactStamps(limit=3)
    for i in range(5):
        bounded.remember(100.0 + i, (100 + i, 1))
    assert len(bounded) == 3 and bounded.parts(104.0) == (104, 1)
    assert bounded.parts(100.0) == (100, 0)  # the oldest was dropped: rounded
    bounded.clear()
    assert len(bounded) == 0


def test_a_keyframe_keeps_its_exact_stamp_and_a_dropped_frame_takes_no_entry() -> None:
    """ExactStamps.queue, what both ROS nodes call around the core's on_image. The stamp is
    remembered when the core converts the frame (keyframes alone, maybe later: a frame
    waiting for odometry), not when it takes it: with motion keyframes every frame waited,
    and the cache of 50 000 filled with frames the policy dropped (28 minutes at 30 Hz), so
    older loops were published with rounded stamps."""
    from vpr_edge.errors import InvalidInputError
    from vpr_edge.ros_messages import ExactStamps

    def header(sec: int, nanosec: int) -> SimpleNamespace:
        return SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec))

    stamps = ExactStamps()
    taken: list = []

    def core_takes(convert, seconds, meta):  # a frame that waits: converted later
        taken.append((convert, seconds, meta))
        return True

    assert stamps.queue(header(1700000100, 200123457), lambda: 5.0, core_takes, lambda: "px")
    assert len(stamps) == 0  # taken, not yet a keyframe
    convert, seconds, meta = taken[-1]
    assert convert() == "px" and stamps.parts(seconds) == (1700000100, 200123457)
    assert meta == {"ros_stamp": [1700000100, 200123457]}  # stored with the place
    assert not stamps.queue(header(1700000101, 7), lambda: 5.0, lambda c, s, m: False,
                            lambda: "px")
    assert stamps.queue(header(1700000102, 9), lambda: 5.0, core_takes, lambda: "px")
    assert len(stamps) == 1  # dropped by the policy: never converted, no entry

    def malformed():
        raise InvalidInputError("image encoding 'yuv422' is not supported")

    stamps.queue(header(1700000103, 11), lambda: 5.0, core_takes, malformed)
    with pytest.raises(InvalidInputError):
        taken[-1][0]()
    assert len(stamps) == 1
    assert stamps.queue(header(0, 0), lambda: 5.0, core_takes, lambda: "px")
    assert taken[-1][1] == 5.0 and taken[-1][0]() == "px" and len(stamps) == 1  # arrival time
    assert taken[-1][2] is None  # nothing exact to keep


def test_a_place_s_exact_stamp_comes_from_its_metadata() -> None:
    """stamp_from_meta takes a place's ``ros_stamp`` only when it is a stamp, and that of the
    place (within a microsecond of its float stamp); remember_match makes parts() give it."""
    from vpr_edge.ros_messages import ExactStamps, rounded_parts, stamp_from_meta, stamp_meta

    seconds = 1700000100.200123457
    exact = (1700000100, 200123457)
    assert stamp_from_meta(stamp_meta(exact), seconds) == exact
    assert stamp_meta(None) is None
    for meta in ({}, None, {"ros_stamp": "1700000100.2"}, {"ros_stamp": [1700000100]},
                 {"ros_stamp": [1700000100.0, 200123457]}, {"ros_stamp": [True, 5]},
                 {"ros_stamp": [1700000100, 1_000_000_000]},  # not a nanosecond part
                 {"ros_stamp": [10**400, 0]},  # (a float of it overflowed)
                 {"ros_stamp": [1700000101, 200123457]}):  # another time than the place's
        assert stamp_from_meta(meta, seconds) is None, meta
    assert stamp_from_meta(stamp_meta(exact), None) is None

    stamps = ExactStamps(limit=2)
    loop = LoopClosure(query_id=9, query_stamp=seconds + 60, match_id=3, match_stamp=seconds,
                       score=0.5, verified=None, inliers=None, match_pose=None,
                       consistent_frames=3, match_meta=stamp_meta(exact))
    assert stamps.parts(seconds) == rounded_parts(seconds) != exact
    stamps.remember_match(loop)
    assert stamps.parts(seconds) == exact
    edited = ExactStamps()
    edited.remember_match(LoopClosure(**{**loop.to_dict(), "match_meta": {
        "ros_stamp": [1700000000, 0]}}))
    assert edited.parts(seconds) == rounded_parts(seconds)
    unstamped = ExactStamps()
    unstamped.remember_match(LoopClosure(**{**loop.to_dict(), "match_stamp": None}))
    assert len(unstamped) == 0


def test_loops_to_a_map_saved_by_an_earlier_run_carry_exact_stamps(tiny_onnx, tmp_path,
                                                                   cpu_only) -> None:
    """The node's core, fed as both ROS nodes feed it (ExactStamps.queue), over two runs on
    one map: a loop to a place of the first run (a restart, a power cut) was published with
    its stamp rounded from float seconds (up to ~120 ns off), since only this run's stamps
    were remembered; a back end that looks its keyframes up by stamp found none. Now the
    exact stamp is stored with the place, and comes back however old the place is."""
    from vpr_edge.localizer import Localizer
    from vpr_edge.loop_closure import LoopClosureConfig
    from vpr_edge.loop_node import LoopClosureNode, NodeConfig
    from vpr_edge.poses import stamp_seconds
    from vpr_edge.ros_messages import ExactStamps, rounded_parts

    rng = np.random.default_rng(3)
    colours = rng.integers(20, 236, (12, 1, 1, 3))
    frames = np.clip(colours + rng.integers(-3, 4, (12, 24, 32, 3)), 0, 255).astype(np.uint8)
    sent: dict[float, tuple[int, int]] = {}

    def run(start_sec: int) -> list:
        config = NodeConfig(model=str(tiny_onnx), map_dir=str(tmp_path / "map"),
                            detector=LoopClosureConfig(min_score=0.999, exclusion_frames=3,
                                                       consistency=1))
        published: list = []
        stamps = ExactStamps()

        def publish(loop) -> None:  # as the nodes' publish() does
            stamps.remember_match(loop)
            published.append((stamps.parts(loop.query_stamp), stamps.parts(loop.match_stamp)))

        node = LoopClosureNode(config, publish, localizer=Localizer(
            tiny_onnx, config.map_dir, backend="onnxruntime-cpu"))
        for i, frame in enumerate(frames):
            parts = (start_sec + i, 200123457 + i)  # float seconds cannot hold these
            header = SimpleNamespace(stamp=SimpleNamespace(sec=parts[0], nanosec=parts[1]))
            sent[stamp_seconds(header)] = parts
            stamps.queue(header, lambda: 0.0, node.on_image, lambda f=frame: f)
            assert node.wait_idle()
        node.shutdown()
        return published

    assert run(1700000100) == []  # every place new
    second = run(1700000200)  # the same places again, after a restart
    assert len(second) == len(frames)
    sent_parts = set(sent.values())
    assert all(query in sent_parts and match in sent_parts for query, match in second)
    assert {match for _, match in second} == {(1700000100 + i, 200123457 + i)
                                               for i in range(len(frames))}
    assert any(rounded_parts(s) != p for s, p in sent.items())  # the test can tell them apart


@pytest.mark.parametrize("seconds, ros, fits", [
    (1.7e9, 2, True), (2.0**31 - 1, 2, True), (2.0**31, 2, False), (-1.5, 2, True),
    (-(2.0**31) - 1, 2, False), (1.7e12, 2, False), (2.0**31, 1, True), (2.0**32, 1, False),
    (-0.5, 1, False), (0.0, 1, True),
])
def test_ros_time_parts_refuse_stamps_a_ros_time_cannot_hold(seconds, ros, fits) -> None:
    """A map stamped in milliseconds made every loop's publish fail inside rclpy ("The 'sec'
    field must be an integer in [-2147483648, 2147483647]"), with no word of the cause."""
    from vpr_edge.errors import InvalidInputError
    from vpr_edge.ros_messages import ros_time_parts, rounded_parts

    parts = rounded_parts(seconds)
    if fits:
        assert ros_time_parts(parts, ros) == parts
    else:
        with pytest.raises(InvalidInputError, match=f"does not fit a ROS {ros} Time.*seconds"):
            ros_time_parts(parts, ros)


@pytest.mark.parametrize("seconds, ros, said", [
    (-0.5, 1, "-0.500000000 s"), (-4.25, 1, "-4.250000000 s"),
    (2.0**32 + 0.5, 1, "4294967296.500000000 s"),
    (-(2.0**31) - 1.75, 2, "-2147483649.750000000 s"),
])
def test_a_stamp_no_ros_time_holds_is_named_as_it_is(seconds, ros, said) -> None:
    """(sec, nanosec) of a stamp before zero count the nanoseconds forward from sec: -0.5 s
    is (-1, 500000000), which the error called -1.500000000 s."""
    from vpr_edge.errors import InvalidInputError
    from vpr_edge.ros_messages import ros_time_parts, rounded_parts

    with pytest.raises(InvalidInputError) as raised:
        ros_time_parts(rounded_parts(seconds), ros)
    assert f"a stamp of {said} does not fit" in str(raised.value)
