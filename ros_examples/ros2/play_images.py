#!/usr/bin/env python3
"""Publish image folders as a camera stream (ROS 2) and record the loop closures that come back.

The ROS 2 twin of ros_examples/ros1/play_images.py (same arguments, same JSON). It listens for
``message_type: standard`` loop closures (std_msgs/Float64MultiArray), which need no message
package to be built:

    python3 play_images.py --images day_left day_right --rate 30 --out run.json
"""

from __future__ import annotations

import array
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64MultiArray, Header

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from player_common import Recorder, jpeg_bytes, load_frames, player_arguments  # noqa: E402

from vpr_edge.ros_messages import LOOP_ROW_FIELDS  # noqa: E402

COLUMN = {name: i for i, name in enumerate(LOOP_ROW_FIELDS)}


def main(argv: list[str] | None = None) -> int:
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv if argv is None else argv)
    args = player_arguments(__doc__.splitlines()[0]).parse_args(remove_ros_args(argv)[1:])
    frames = load_frames(args.images, tuple(args.size))
    rclpy.init(args=argv)
    node = rclpy.create_node("vpr_edge_image_player")
    record = Recorder()

    def on_loop(msg: Float64MultiArray) -> None:
        row = list(msg.data)
        record.loop(row[COLUMN["query_stamp"]], row[COLUMN["match_stamp"]],
                    row[COLUMN["score"]], time.monotonic(),
                    verified=int(row[COLUMN["verified"]]),
                    consistent_frames=int(row[COLUMN["consistent_frames"]]))

    if args.compressed:
        jpegs = [array.array("B", jpeg_bytes(rgb)) for rgb in frames]
        pub = node.create_publisher(CompressedImage, "image/compressed", qos_profile_sensor_data)
    else:
        pub = node.create_publisher(Image, "image", qos_profile_sensor_data)
    node.create_subscription(Float64MultiArray, "loop_closure", on_loop, 100)
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin_until(deadline: float) -> None:  # callbacks run here, in this thread
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            executor.spin_once(timeout_sec=min(left, 0.005))

    try:
        deadline = time.monotonic() + args.wait_subscriber
        while pub.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                print("no subscriber on image: is the node running?", file=sys.stderr)
                return 1
            spin_until(time.monotonic() + 0.05)
        spin_until(time.monotonic() + 1.0)  # discovery of the node's loop_closure publisher
        period = 1.0 / args.rate
        start = time.monotonic()
        for i, rgb in enumerate(frames):
            spin_until(start + i * period)
            now = node.get_clock().now().nanoseconds
            stamp = Time(sec=now // 1_000_000_000, nanosec=now % 1_000_000_000)
            header = Header(stamp=stamp, frame_id="camera")
            if args.compressed:
                msg = CompressedImage(header=header, format="jpeg")
                msg.data = jpegs[i]
            else:
                pixels = rgb if args.encoding == "rgb8" else rgb[..., ::-1]
                msg = Image(header=header, height=rgb.shape[0], width=rgb.shape[1],
                            encoding=args.encoding, is_bigendian=0, step=rgb.shape[1] * 3)
                # an array('B') is taken as is; bytes would be checked element by element
                msg.data = array.array("B", np.ascontiguousarray(pixels).tobytes())
            record.sent(i, stamp.sec + stamp.nanosec * 1e-9, time.monotonic())
            pub.publish(msg)
        achieved = len(frames) / (time.monotonic() - start)
        spin_until(time.monotonic() + args.linger)
        record.write(args.out, rate=args.rate, achieved=achieved, size=args.size)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
