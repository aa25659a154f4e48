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


def _odometry(bag_writer, times_and_x, orientation=(0.0, 0.0, 0.0, 1.0)) -> list:
    store = bag_writer._store()
    return [(t, bag_writer.odometry_message(store, t, x, 0.0, orientation))
            for t, x in times_and_x]


def _images(bag_writer, frames, times) -> list:
    store = bag_writer._store()
    return [(t, bag_writer.image_message(store, f, t)) for f, t in zip(frames, times)]


def test_a_slow_pose_topic_needs_a_larger_gap(tmp_path, bag_writer, gp_frames, caplog) -> None:
    """Odometry at 2 Hz, frames at 10 Hz: within the default 0.1 s only the frames next to a
    pose get one; ``max_pose_gap`` (``--pose-max-gap``) gives every frame its interpolated
    pose, and a source that left frames without a pose says so."""
    from vpr_edge.sources import open_source

    times = [10.0 + i / 10 for i in range(6)]
    bag = bag_writer.write_messages(
        tmp_path / "slow.bag", _images(bag_writer, gp_frames, times),
        _odometry(bag_writer, [(10.0, 0.0), (10.5, 5.0), (11.0, 10.0)]))
    read = lambda **kw: [None if f.pose is None else round(f.pose.x, 6)  # noqa: E731
                         for f in bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC,
                                                         pose_topic=bag_writer.ODOM_TOPIC,
                                                         **kw)]
    assert read() == [0.0, 0.0, None, None, 5.0, 5.0]
    assert read(max_pose_gap=0.5) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    source = open_source(bag=bag, topic=bag_writer.IMAGE_TOPIC,
                         pose_topic=bag_writer.ODOM_TOPIC, max_pose_gap=0.5)
    assert [f.pose[0] for f in source] == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    with caplog.at_level("WARNING", logger="vpr_edge"):
        list(open_source(bag=bag, topic=bag_writer.IMAGE_TOPIC,
                         pose_topic=bag_writer.ODOM_TOPIC))
    assert "2 of 6 frames got no pose" in caplog.text and "--pose-max-gap" in caplog.text
    with pytest.raises(InvalidInputError, match="pose-max-gap"):
        open_source(bag=bag, topic=bag_writer.IMAGE_TOPIC, max_pose_gap=0)


def test_odometry_that_lost_track_or_has_no_orientation(tmp_path, bag_writer, gp_frames,
                                                        caplog) -> None:
    """A NaN pose message is skipped with a warning (it used to end the read), and a pose
    without orientation (ROS 1's zero quaternion) keeps its position."""
    nan = float("nan")
    poses = (_odometry(bag_writer, [(10.0, 0.0), (10.1, nan), (10.2, 2.0)])
             + _odometry(bag_writer, [(10.3, 3.0), (10.4, 4.0)], orientation=(0, 0, 0, 0)))
    times = [10.05, 10.15, 10.35]
    bag = bag_writer.write_messages(tmp_path / "odd.bag",
                                    _images(bag_writer, gp_frames[:3], times), poses)
    with caplog.at_level("WARNING", logger="vpr_edge"):
        got = list(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC,
                                          pose_topic=bag_writer.ODOM_TOPIC, max_pose_gap=0.2))
    assert "skipped 1 of 5 pose messages with NaN" in caplog.text
    assert [f.pose.x for f in got] == pytest.approx([0.5, 1.5, 3.5])
    assert got[1].pose.qw == pytest.approx(1.0)  # between two poses with orientation
    assert got[2].pose.as_tuple()[3:] == (0.0, 0.0, 0.0, 0.0)  # between two without


def test_a_damaged_pose_message_is_a_clear_error(tmp_path, bag_writer, gp_frames) -> None:
    poses = _odometry(bag_writer, [(10.0, 0.0)]) + [(10.1, b"\x01\x02")]
    bag = bag_writer.write_messages(tmp_path / "bad.bag",
                                    _images(bag_writer, gp_frames[:1], [10.0]), poses)
    with pytest.raises(InvalidInputError, match=r"/odom message 1 is damaged"):
        list(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC,
                                    pose_topic=bag_writer.ODOM_TOPIC))


def test_a_16bit_png_compressed_image_is_scaled_like_a_mono16_image(tmp_path,
                                                                     bag_writer) -> None:
    """What ROS's compressed transport makes of a mono16 (thermal, depth) camera: the top 8
    bits, as for a raw 16-bit Image message (it used to be refused)."""
    import io

    from PIL import Image

    wide = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16)
    png = io.BytesIO()
    Image.fromarray(wide).save(png, format="PNG")
    store = bag_writer._store()
    bag = bag_writer.write_messages(
        tmp_path / "thermal.bag", [(10.0, bag_writer.compressed_message(store, png.getvalue(),
                                                                         10.0))],
        image_type="sensor_msgs/msg/CompressedImage")
    (frame,) = bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC)
    expected = (wide >> 8).astype(np.uint8)
    np.testing.assert_array_equal(frame.image, np.repeat(expected[:, :, None], 3, axis=2))


def test_an_empty_image_topic_is_refused_and_every_takes_numpy_ints(tmp_path, bag_writer,
                                                                     gp_frames) -> None:
    from vpr_edge.sources import open_source

    empty = bag_writer.write_messages(tmp_path / "empty.bag", [],
                                      _odometry(bag_writer, [(10.0, 0.0)]))
    with pytest.raises(InvalidInputError, match="topic '/camera/image_raw' has no messages"):
        open_source(bag=empty, topic=bag_writer.IMAGE_TOPIC)
    bag = bag_writer.write_bag(tmp_path / "gp.bag", gp_frames[:4])
    got = bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC, every_n=np.int64(3))
    assert [f.index for f in got] == [0, 3]
    with pytest.raises(InvalidInputError, match="every_n"):
        next(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC, every_n=True))


def test_damaged_image_messages_stop_the_read_or_are_skipped(tmp_path, bag_writer,
                                                             gp_frames, caplog) -> None:
    """One truncated JPEG in the middle of a bag: an error naming the message and the way
    past it, or (``skipped=[]``) every other frame, with the skipped one described."""
    from vpr_edge.sources import open_source

    store = bag_writer._store()
    jpegs = [bag_writer._jpeg(f) for f in gp_frames[:4]]
    jpegs[2] = jpegs[2][: len(jpegs[2]) // 3]
    bag = bag_writer.write_messages(
        tmp_path / "bad.bag",
        [(10.0 + i, bag_writer.compressed_message(store, data, 10.0 + i, "jpeg"))
         for i, data in enumerate(jpegs)] + [(14.0, b"\x01\x02")],  # and one not a message
        image_type="sensor_msgs/msg/CompressedImage")
    with pytest.raises(InvalidInputError, match=r"/camera/image_raw message 2: .*(skip-damaged"
                                                r".*skipped=\[\])"):
        list(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC))
    skipped: list[str] = []
    with caplog.at_level("WARNING", logger="vpr_edge"):
        got = list(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC, skipped=skipped))
    assert [f.index for f in got] == [0, 1, 3]
    assert len(skipped) == 2 and "message 2: " in skipped[0]
    assert "message 4 is damaged" in skipped[1] and "skipped: " in caplog.text
    source = open_source(bag=bag, topic=bag_writer.IMAGE_TOPIC, skip_damaged=True)
    for _ in range(2):  # a second pass starts its own list of skipped frames (not 4)
        kept = [f.index for f in source if source.pixels(f) is not None]
        assert kept == [0, 1, 3] and len(source.skipped) == 2
    strict = open_source(bag=bag, topic=bag_writer.IMAGE_TOPIC)
    with pytest.raises(InvalidInputError, match=r"message 2: .*\(--skip-damaged leaves"):
        [strict.pixels(f) for f in strict]


def test_a_bag_source_decodes_only_the_frames_used(tmp_path, bag_writer, gp_frames,
                                                   monkeypatch) -> None:
    """Reading a bag source decodes no image (a resumed `map build` skips the frames its map
    holds without decoding them: it decoded every message); pixels() decodes one."""
    from vpr_edge.sources import open_source

    store = bag_writer._store()
    bag = bag_writer.write_messages(
        tmp_path / "run.bag",
        [(10.0 + i, bag_writer.compressed_message(store, bag_writer._jpeg(f), 10.0 + i, "jpeg"))
         for i, f in enumerate(gp_frames[:4])],
        image_type="sensor_msgs/msg/CompressedImage")
    decoded: list[int] = []
    real = bags.message_to_rgb
    monkeypatch.setattr(bags, "message_to_rgb",
                        lambda msg: decoded.append(msg.header.stamp.sec) or real(msg))
    source = open_source(bag=bag, topic=bag_writer.IMAGE_TOPIC)
    frames = list(source)
    assert [f.stamp for f in frames] == [10.0, 11.0, 12.0, 13.0] and decoded == []
    np.testing.assert_array_equal(source.pixels(frames[2]), real(
        next(m for m in bags.read_image_messages(bag, bag_writer.IMAGE_TOPIC)
             if m.index == 2).message))
    assert decoded == [12]


def test_frames_and_poses_on_different_clocks_are_named(tmp_path, bag_writer, gp_frames,
                                                        caplog) -> None:
    """Camera stamped by its own clock (10 s), odometry by ROS time (1000 s): no frame gets a
    pose, and the warning says why instead of suggesting a larger gap."""
    bag = bag_writer.write_messages(
        tmp_path / "clocks.bag", _images(bag_writer, gp_frames[:3], [10.0, 10.1, 10.2]),
        _odometry(bag_writer, [(1000.0, 0.0), (1000.1, 1.0), (1000.2, 2.0)]))
    with caplog.at_level("WARNING", logger="vpr_edge"):
        got = list(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC,
                                          pose_topic=bag_writer.ODOM_TOPIC, max_pose_gap=5.0))
    assert [f.pose for f in got] == [None, None, None]
    assert "stamped 10.000-10.200 s and the poses 1000.000-1000.200 s" in caplog.text
    assert "different clocks" in caplog.text and "--pose-max-gap" not in caplog.text


def test_a_missing_dependency_is_not_a_damaged_frame(tmp_path, bag_writer, monkeypatch) -> None:
    """Bayer frames without OpenCV: with skipped=[] every frame was dropped as "damaged" and
    the run went on with nothing."""
    import sys

    from vpr_edge.errors import MissingDependencyError

    store = bag_writer._store()
    raw = np.random.default_rng(0).integers(0, 256, (8, 12), dtype=np.uint8)
    messages = [(10.0 + i, store.types["sensor_msgs/msg/Image"](
        header=bag_writer._header(store, 10.0 + i), height=8, width=12,
        encoding="bayer_rggb8", is_bigendian=0, step=12, data=raw.ravel()))
        for i in range(3)]
    bag = bag_writer.write_messages(tmp_path / "bayer.bag", messages)
    monkeypatch.setitem(sys.modules, "cv2", None)  # OpenCV not installed
    with pytest.raises(MissingDependencyError, match="verify"):
        list(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC, skipped=[]))


def test_a_pose_topic_without_messages_is_refused(tmp_path, bag_writer) -> None:
    """An /odom topic with no messages gave only "4 of 4 frames got no pose ... a slower
    pose topic needs a larger --pose-max-gap", and `loops --gt positions` then asked for
    the --pose-topic that had been given."""
    from vpr_edge.sources import open_source

    frames = list(np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
    bag = bag_writer.write_messages(tmp_path / "no_odom.bag",
                                    _images(bag_writer, frames, [10.0, 10.1]), [])
    message = r"no_odom\.bag: the pose topic '/odom' has no messages, so no frame can get a pose"
    with pytest.raises(InvalidInputError, match=message):
        list(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC,
                                    pose_topic=bag_writer.ODOM_TOPIC))
    with pytest.raises(InvalidInputError, match=message):
        list(open_source(bag=bag, topic=bag_writer.IMAGE_TOPIC,
                         pose_topic=bag_writer.ODOM_TOPIC))
    assert len(list(open_source(bag=bag, topic=bag_writer.IMAGE_TOPIC))) == 2
    # every pose NaN: "N frames got no pose ... a slower pose topic needs a larger
    # --pose-max-gap", which no gap mends
    nan = float("nan")
    bag = bag_writer.write_messages(tmp_path / "nan_odom.bag",
                                    _images(bag_writer, frames, [10.0, 10.1]),
                                    _odometry(bag_writer, [(10.0, nan), (10.1, nan)]))
    with pytest.raises(InvalidInputError, match=r"'/odom' holds only NaN or inf poses \(2\)"):
        list(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC,
                                    pose_topic=bag_writer.ODOM_TOPIC))


def test_pose_stamps_that_restart_within_a_bag_are_refused(tmp_path, bag_writer) -> None:
    """A simulator reset mid-recording: both stretches are stamped 10-12 s, and frames of
    the first took the poses of the second (x 500 for x 0), silently. (A jump back of up to
    JUMP_BACK_SECONDS is taken as messages out of order, which the track sorts.)"""
    store = bag_writer._store()
    poses = [(record, bag_writer.odometry_message(store, stamp, x, 0.0))
             for record, stamp, x in ((20.0, 10.0, 0.0), (22.0, 12.0, 2.0),
                                      (30.0, 10.0, 500.0), (32.0, 12.0, 502.0))]
    frames = list(np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
    images = [(record, bag_writer.image_message(store, frame, stamp))
              for record, stamp, frame in ((20.2, 10.2, frames[0]), (30.2, 10.2, frames[1]))]
    bag = bag_writer.write_messages(tmp_path / "restart.bag", images, poses)
    with pytest.raises(InvalidInputError, match=r"message 2: pose stamps jump back by 2\.000 s"):
        list(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC,
                                    pose_topic=bag_writer.ODOM_TOPIC))


def test_a_file_of_a_ros2_bag_that_is_not_the_whole_bag_is_refused(tmp_path, bag_writer,
                                                                    gp_frames) -> None:
    """One .db3 of a split bag read as if it were all of it (half the frames, silently); the
    .mcap of a bag compressed per message read as if every message were damaged."""
    folder = bag_writer.write_bag(tmp_path / "run", gp_frames[:2], ros2_storage="sqlite3")
    (part,) = folder.glob("*.db3")
    meta = folder / "metadata.yaml"
    text = meta.read_text()
    assert len(list(bags.read_image_frames(part, bag_writer.IMAGE_TOPIC))) == 2  # the whole
    meta.write_text(text.replace(f"- {part.name}", f"- {part.name}\n  - {part.stem}_1.db3"))
    with pytest.raises(InvalidInputError, match="one of the 2 files of the bag in .*give the "
                                                "bag's folder"):
        list(bags.read_image_frames(part, bag_writer.IMAGE_TOPIC))
    meta.write_text(text.replace("compression_format: ''", "compression_format: zstd"))
    with pytest.raises(InvalidInputError, match=r"is compressed \(zstd"):
        list(bags.read_image_frames(part, bag_writer.IMAGE_TOPIC))


def test_a_frame_s_exact_stamp_is_its_header_s_or_its_record_time(tmp_path, bag_writer,
                                                                  gp_frames) -> None:
    """Float seconds of about 1.7e9 are up to ~120 ns off the header's stamp; a bag frame
    also carries it exactly, for the map's metadata (``ros_stamp``): the header's, or the
    record time where the header is unstamped (as ``stamp`` is)."""
    from vpr_edge.sources import open_source, place_meta

    store = bag_writer._store()
    stamped = bag_writer.image_message(store, gp_frames[0], 0.0)
    stamped.header.stamp.sec, stamped.header.stamp.nanosec = 1700000100, 200123457
    unstamped = bag_writer.image_message(store, gp_frames[1], 0.0)
    bag = bag_writer.write_messages(tmp_path / "run.bag", [(1700000100.3, stamped),
                                                           (1700000101.5, unstamped)])
    messages = list(bags.read_image_messages(bag, bag_writer.IMAGE_TOPIC))
    record_ns = int(1700000101.5 * 1e9)
    assert [m.exact_stamp for m in messages] == [
        (1700000100, 200123457), (record_ns // 10**9, record_ns % 10**9)]
    assert [m.stamp for m in messages] == [1700000100.200123457, record_ns * 1e-9]
    frame = next(iter(open_source(bag=bag, topic=bag_writer.IMAGE_TOPIC)))
    assert place_meta(frame) == {"source": frame.key, "index": 0,
                                 "ros_stamp": [1700000100, 200123457]}


def _with_a_foreign_topic(path: Path, bag_writer, frames, msgdef: str, digest: str,
                          ros2_storage: str | None = None) -> Path:
    """A bag of ``frames`` (10 Hz from 10 s), odometry, and a topic ``/arduino`` whose stored
    message definition is ``msgdef`` with the digest ``digest``."""
    store = bag_writer._store(ros2=ros2_storage is not None)
    if ros2_storage is None:
        from rosbags.rosbag1 import Writer

        writer, serialize, digest_key = Writer(path), store.serialize_ros1, "md5sum"
    else:
        from rosbags.rosbag2 import StoragePlugin
        from rosbags.rosbag2 import Writer as Writer2

        plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[ros2_storage]
        writer = Writer2(path, version=9, storage_plugin=plugin)
        serialize, digest_key = store.serialize_cdr, "rihs01"
    with writer:
        images = writer.add_connection(bag_writer.IMAGE_TOPIC, "sensor_msgs/msg/Image",
                                       typestore=store)
        odom = writer.add_connection(bag_writer.ODOM_TOPIC, "nav_msgs/msg/Odometry",
                                     typestore=store)
        other = writer.add_connection("/arduino", "std_msgs/msg/Int8", msgdef=msgdef,
                                      **{digest_key: digest})
        for i, frame in enumerate(frames):
            t = 10.0 + i / 10
            writer.write(images, int(t * 1e9), serialize(
                bag_writer.image_message(store, frame, t), images.msgtype))
            writer.write(odom, int(t * 1e9), serialize(
                bag_writer.odometry_message(store, t, float(i), 0.0), odom.msgtype))
            writer.write(other, int(t * 1e9), b"\x00\x01\x00\x00\x07")
    return path


@pytest.mark.parametrize("msgdef,digest", [
    ("", "27ffa0c9c4b8fb8492252bcad9e5c57b"),  # rosserial_server: no definition, real md5
    ("int8 data\nmy_msgs/Unknown extra\n", "0" * 32),  # a type the bag does not define
])
def test_a_topic_of_another_kind_that_rosbags_cannot_type_does_not_hide_the_camera(
        tmp_path, bag_writer, msgdef, digest) -> None:
    """A ROS 1 bag with one topic whose stored message definition rosbags cannot use (a
    rosserial topic records none, with its type's real md5sum) could not be read at all:
    "cannot read this bag (AnyReaderError: Message type 'std_msgs/msg/Int8' hash mismatch
    ...); give a complete ROS 1 .bag", though the camera and odometry topics were intact.
    Only the definitions of the topics read matter."""
    frames = list(np.random.default_rng(0).integers(0, 256, (3, 6, 8, 3), dtype=np.uint8))
    bag = _with_a_foreign_topic(tmp_path / "rosserial.bag", bag_writer, frames, msgdef, digest)
    assert bags.list_topics(bag)["/arduino"] == ("std_msgs/msg/Int8", 3)
    assert bags.count_frames(bag, bag_writer.IMAGE_TOPIC) == 3
    got = list(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC,
                                      pose_topic=bag_writer.ODOM_TOPIC))
    for frame, pixels in zip(got, frames):
        np.testing.assert_array_equal(frame.image, pixels)
    assert [f.pose.x for f in got] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_a_ros2_topic_whose_definition_rosbags_cannot_parse_does_not_hide_the_camera(
        tmp_path, bag_writer, storage) -> None:
    frames = list(np.random.default_rng(1).integers(0, 256, (2, 6, 8, 3), dtype=np.uint8))
    bag = _with_a_foreign_topic(tmp_path / f"run_{storage}", bag_writer, frames,
                                "int8 data\nmy_msgs/Unknown extra\n", "RIHS01_" + "0" * 64,
                                ros2_storage=storage)
    got = list(bags.read_image_frames(bag, bag_writer.IMAGE_TOPIC,
                                      pose_topic=bag_writer.ODOM_TOPIC))
    assert len(got) == 2 and [f.pose.x for f in got] == [0.0, 1.0]
    np.testing.assert_array_equal(got[1].image, frames[1])


def test_bags_that_store_no_definition_are_read_with_the_standard_types(tmp_path, bag_writer,
                                                                         gp_frames) -> None:
    """A ROS 2 bag of Humble or before stores no message definitions (its types are
    Humble's); a ROS 1 topic recorded without one (rosserial) is typed as Noetic's."""
    import sqlite3

    folder = bag_writer.write_bag(tmp_path / "humble", gp_frames[:2], ros2_storage="sqlite3",
                                  odometry=True)
    (db,) = folder.glob("*.db3")
    with sqlite3.connect(db) as con:  # as rosbag2 of Humble writes it: schema 3
        con.execute("DROP TABLE message_definitions")
        con.execute("UPDATE schema SET schema_version = 3")
    con.close()
    got = list(bags.read_image_frames(folder, bag_writer.IMAGE_TOPIC,
                                      pose_topic=bag_writer.ODOM_TOPIC))
    assert [f.pose.x for f in got] == [0.0, 1.0]
    np.testing.assert_array_equal(got[1].image, gp_frames[1])

    from rosbags.rosbag1 import Writer

    store = bag_writer._store()
    with Writer(tmp_path / "serial.bag") as writer:
        images = writer.add_connection(bag_writer.IMAGE_TOPIC, "sensor_msgs/msg/Image",
                                       msgdef="", md5sum="060021388200f6f0f447d0fcd9c64743")
        writer.write(images, int(10e9), store.serialize_ros1(
            bag_writer.image_message(store, gp_frames[0], 10.0), images.msgtype))
    (frame,) = bags.read_image_frames(tmp_path / "serial.bag", bag_writer.IMAGE_TOPIC)
    np.testing.assert_array_equal(frame.image, gp_frames[0])


def test_a_topic_whose_own_definition_cannot_be_read_is_named(tmp_path, bag_writer) -> None:
    """A definition of the camera topic itself that names a type it does not define: named
    before any frame is read (not every message "damaged")."""
    from rosbags.rosbag1 import Writer

    frames = list(np.random.default_rng(2).integers(0, 256, (1, 6, 8, 3), dtype=np.uint8))

    store = bag_writer._store()
    with Writer(tmp_path / "custom.bag") as writer:
        images = writer.add_connection(bag_writer.IMAGE_TOPIC, "sensor_msgs/msg/Image",
                                       msgdef="std_msgs/Header header\nmy_msgs/Unknown x\n",
                                       md5sum="0" * 32)
        writer.write(images, int(10e9), store.serialize_ros1(
            bag_writer.image_message(store, frames[0], 10.0), images.msgtype))
    with pytest.raises(InvalidInputError, match=r"custom\.bag: the message definition the bag "
                                                r"stores for topic '/camera/image_raw' \(sensor"
                                                r"_msgs/msg/Image\) cannot be read .*record the "
                                                r"topic again"):
        list(bags.read_image_frames(tmp_path / "custom.bag", bag_writer.IMAGE_TOPIC,
                                    skipped=[]))


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_an_unfinished_ros2_recording_is_named_with_its_repair(tmp_path, bag_writer, gp_frames,
                                                               storage) -> None:
    """A ROS 2 recording stopped hard leaves no metadata.yaml (and an .mcap without its
    end): the error said "Expected metadata file '<the folder>' does not exist ... give a
    ROS 2 bag directory ... (`rosbag reindex` repairs unclosed ROS 1 bags)"."""
    folder = bag_writer.write_bag(tmp_path / "run", gp_frames[:2], ros2_storage=storage)
    (folder / "metadata.yaml").unlink()
    (part,) = folder.glob("*.db3" if storage == "sqlite3" else "*.mcap")
    with pytest.raises(InvalidInputError) as caught:
        bags.count_frames(folder, bag_writer.IMAGE_TOPIC)
    text = str(caught.value)
    assert f"{folder}: no metadata.yaml" in text and "ros2 bag reindex" in text
    assert f"give its file, {part}" in text and "rosbag reindex" not in text
    assert bags.count_frames(part, bag_writer.IMAGE_TOPIC) == 2  # the file alone reads
    if storage == "mcap":  # its end cut off too
        part.write_bytes(part.read_bytes()[:-100])
        with pytest.raises(InvalidInputError, match=r"cannot read this bag .*mcap recover"):
            bags.count_frames(part, bag_writer.IMAGE_TOPIC)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInputError, match="no metadata.yaml and no .db3 or .mcap file"):
        bags.count_frames(empty, bag_writer.IMAGE_TOPIC)
