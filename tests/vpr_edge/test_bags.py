"""Reading frames and poses from ROS bags: real Spot bag, real Gardens Point frames in a bag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vpr_edge import bags
from vpr_edge.errors import InvalidInputError
from vpr_edge.images import load_image

pytest.importorskip("rosbags")
SPOT_TOPIC = "/spot/camera/hand_color/image"


def test_real_spot_bag(rosbag_path: Path) -> None:
    assert bags.list_topics(rosbag_path) == {SPOT_TOPIC: ("sensor_msgs/msg/Image", 1)}
    assert bags.count_frames(rosbag_path, SPOT_TOPIC) == 1
    (frame,) = bags.read_image_frames(rosbag_path, SPOT_TOPIC)
    assert frame.index == 0 and frame.image.shape == (480, 640, 3)
    assert frame.stamp == pytest.approx(1648052479.6165664)
    assert 20 < frame.image.mean() < 235 and frame.image.std() > 10  # a real photo


@pytest.fixture
def gp_frames(gardens_point_dir: Path) -> list[np.ndarray]:
    files = sorted((gardens_point_dir / "day_left").iterdir())[:6]
    return [load_image(f) for f in files]


@pytest.mark.parametrize("encoding,pad", [("rgb8", 0), ("bgr8", 5)])
def test_frames_roundtrip_with_poses(tmp_path, bag_writer, gp_frames, encoding, pad) -> None:
    bag = bag_writer.write_bag(tmp_path / "gp.bag", gp_frames, encoding=encoding, pad=pad,
                               odometry=True)
    got = list(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC, every_n=2,
                                      pose_topic=bag_writer.ODOM_TOPIC))
    assert [f.index for f in got] == [0, 2, 4]
    for f in got:
        np.testing.assert_array_equal(f.image, gp_frames[f.index])
        assert f.pose.x == f.index  # odometry x = frame index at the frame's stamp
        assert f.stamp == pytest.approx(1000.0 + f.index / 10)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_ros2_bags_db3_and_mcap(tmp_path, bag_writer, gp_frames, storage) -> None:
    bag = bag_writer.write_bag(tmp_path / f"gp_{storage}", gp_frames[:4], encoding="bgr8",
                               odometry=True, ros2_storage=storage)
    assert bags.count_frames(bag, bag_writer.IMAGE_TOPIC) == 4
    got = list(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC,
                                      pose_topic=bag_writer.ODOM_TOPIC))
    for f in got:
        np.testing.assert_array_equal(f.image, gp_frames[f.index])
        assert f.pose.x == pytest.approx(f.index)


def test_poses_are_interpolated_to_the_frame_stamp(tmp_path, bag_writer, gp_frames) -> None:
    # odometry every 0.05 s with x = 0, 0.5, 1, ...; images stamped 0.025 s after a pose
    bag = bag_writer.write_bag(tmp_path / "late.bag", gp_frames[:3], odometry=True,
                               image_delay=0.025)
    got = list(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC,
                                      pose_topic=bag_writer.ODOM_TOPIC))
    assert [f.pose.x for f in got] == pytest.approx([0.25, 1.25, 2.25])


def test_compressed_images(tmp_path, bag_writer, gp_frames) -> None:
    bag = bag_writer.write_bag(tmp_path / "c.bag", gp_frames[:2], compressed=True)
    got = list(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC))
    assert len(got) == 2
    error = np.abs(got[1].image.astype(int) - gp_frames[1].astype(int)).mean()
    assert error < 4  # JPEG quality 95


def test_wrong_topic_type_and_missing_bag(tmp_path, bag_writer, gp_frames) -> None:
    bag = bag_writer.write_bag(tmp_path / "o.bag", gp_frames[:1], odometry=True)
    with pytest.raises(InvalidInputError, match="no topic '/nope'.*/camera/image_raw"):
        bags.count_frames(bag, "/nope")
    with pytest.raises(InvalidInputError, match="carries nav_msgs/msg/Odometry"):
        list(bags.read_image_frames(bag, bag_writer.ODOM_TOPIC))
    with pytest.raises(InvalidInputError, match="no such bag"):
        bags.count_frames(tmp_path / "absent.bag", "/x")
    with pytest.raises(InvalidInputError, match="every_n"):
        next(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC, every_n=0))


def test_truncated_bag_is_a_clear_error(tmp_path, rosbag_path) -> None:
    cut = tmp_path / "cut.bag"
    cut.write_bytes(rosbag_path.read_bytes()[:5000])
    with pytest.raises(InvalidInputError, match="cannot read this bag"):
        bags.count_frames(cut, SPOT_TOPIC)
