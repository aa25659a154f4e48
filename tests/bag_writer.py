"""Write small ROS 1 bags for tests (images and odometry), with the pure-Python ``rosbags``.

Loaded through the ``bag_writer`` fixture in conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_TOPIC = "/camera/image_raw"
ODOM_TOPIC = "/odom"


def _store(ros2: bool = False):
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE if ros2 else Stores.ROS1_NOETIC)


def _header(store, seconds: float, frame_id: str = "camera"):
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    sec = int(seconds)
    stamp = Time(sec=sec, nanosec=int(round((seconds - sec) * 1e9)))
    if "seq" in Header.__dataclass_fields__:  # ROS 1
        return Header(seq=0, stamp=stamp, frame_id=frame_id)
    return Header(stamp=stamp, frame_id=frame_id)


def image_message(store, rgb: np.ndarray, seconds: float, encoding: str = "rgb8",
                  pad: int = 0):
    """A sensor_msgs/Image of ``rgb`` in ``encoding`` (rgb8, bgr8 or mono8), rows padded by
    ``pad`` bytes."""
    Image = store.types["sensor_msgs/msg/Image"]
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1],
              "mono8": rgb.mean(axis=2, keepdims=True).astype(np.uint8)}[encoding]
    h, w, c = pixels.shape
    rows = np.zeros((h, w * c + pad), np.uint8)
    rows[:, : w * c] = pixels.reshape(h, w * c)
    return Image(header=_header(store, seconds), height=h, width=w, encoding=encoding,
                 is_bigendian=0, step=w * c + pad, data=rows.ravel())


def odometry_message(store, seconds: float, x: float, y: float,
                     orientation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)):
    t = store.types
    qx, qy, qz, qw = orientation
    pose = t["geometry_msgs/msg/Pose"](
        position=t["geometry_msgs/msg/Point"](x=x, y=y, z=0.0),
        orientation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
    twist = t["geometry_msgs/msg/Twist"](
        linear=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
        angular=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0))
    return t["nav_msgs/msg/Odometry"](
        header=_header(store, seconds, "odom"), child_frame_id="base_link",
        pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=pose,
                                                       covariance=np.zeros(36)),
        twist=t["geometry_msgs/msg/TwistWithCovariance"](twist=twist,
                                                         covariance=np.zeros(36)))


def write_bag(path: Path, frames: list[np.ndarray], *, rate_hz: float = 10.0,
              start: float = 1000.0, encoding: str = "rgb8", pad: int = 0,
              odometry: bool = False, compressed: bool = False,
              ros2_storage: str | None = None, image_delay: float = 0.0) -> Path:
    """Frames at ``rate_hz`` on IMAGE_TOPIC (and, with ``odometry``, poses at 2x the rate on
    ODOM_TOPIC with x = frame index metres). ``compressed`` writes JPEG CompressedImage.
    ``ros2_storage`` ("sqlite3" or "mcap") writes a ROS 2 bag directory instead of ROS 1.
    ``image_delay`` shifts the image stamps (not the odometry) by that many seconds."""
    store = _store(ros2=ros2_storage is not None)
    if ros2_storage is None:
        from rosbags.rosbag1 import Writer

        writer_cm, serialize = Writer(path), store.serialize_ros1
    else:
        from rosbags.rosbag2 import StoragePlugin
        from rosbags.rosbag2 import Writer as Writer2

        plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[ros2_storage]
        writer_cm = Writer2(path, version=9, storage_plugin=plugin)
        serialize = store.serialize_cdr
    with writer_cm as writer:
        kind = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
        images = writer.add_connection(IMAGE_TOPIC, kind, typestore=store)
        odom = (writer.add_connection(ODOM_TOPIC, "nav_msgs/msg/Odometry", typestore=store)
                if odometry else None)
        for i, frame in enumerate(frames):
            seconds = start + i / rate_hz
            stamp = seconds + image_delay
            if compressed:
                msg = store.types["sensor_msgs/msg/CompressedImage"](
                    header=_header(store, stamp), format="jpeg",
                    data=np.frombuffer(_jpeg(frame), np.uint8))
            else:
                msg = image_message(store, frame, stamp, encoding, pad)
            writer.write(images, int(seconds * 1e9), serialize(msg, images.msgtype))
            if odom is not None:
                for half in (0.0, 0.5):
                    t = seconds + half / rate_hz
                    writer.write(odom, int(t * 1e9), serialize(
                        odometry_message(store, t, i + half, 0.0), odom.msgtype))
    return path


def _jpeg(rgb: np.ndarray) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=95)
    return out.getvalue()


def compressed_message(store, data: bytes, seconds: float, fmt: str = "png"):
    """A sensor_msgs/CompressedImage holding ``data`` (encoded image bytes)."""
    return store.types["sensor_msgs/msg/CompressedImage"](
        header=_header(store, seconds), format=fmt, data=np.frombuffer(data, np.uint8))


def write_messages(path: Path, images: list, poses: list = (), *,
                   image_type: str = "sensor_msgs/msg/Image") -> Path:
    """A ROS 1 bag of ``(seconds, message)`` items on IMAGE_TOPIC (of ``image_type``) and
    ODOM_TOPIC (odometry), written at those times; a message given as ``bytes`` is written
    as it is (a damaged message). Both connections exist even when their list is empty."""
    from rosbags.rosbag1 import Writer

    store = _store()
    with Writer(path) as writer:
        for topic, kind, items in ((IMAGE_TOPIC, image_type, images),
                                   (ODOM_TOPIC, "nav_msgs/msg/Odometry", poses)):
            connection = writer.add_connection(topic, kind, typestore=store)
            for seconds, msg in items:
                raw = msg if isinstance(msg, bytes) else store.serialize_ros1(msg, kind)
                writer.write(connection, int(seconds * 1e9), raw)
    return path
