#!/usr/bin/env python3
"""Publish image folders as a camera stream and record the loop closures that come back.

For trying the node on your own images and for the end-to-end test:

    python3 play_images.py --images day_left day_right --rate 30 --size 480 640 --out run.json

publishes every image (folders one after the other, file-name order) on ``image`` as
``sensor_msgs/Image`` at ``--rate`` Hz, listens on ``loop_closure`` (vpr_edge_msgs), waits
``--linger`` seconds after the last frame, and writes a JSON with, per published frame, its
index, stamp and publish time, and per loop closure the query/match frame indices, score and
image-to-loop-closure latency (receipt time minus the query frame's publish time).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import rospy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from player_common import Recorder, jpeg_bytes, load_frames, player_arguments  # noqa: E402
from vpr_edge_node import loop_closure_class  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = player_arguments(__doc__.splitlines()[0])
    args = parser.parse_args(rospy.myargv(argv if argv is not None else sys.argv)[1:])
    frames = load_frames(args.images, tuple(args.size))
    rospy.init_node("vpr_edge_image_player", anonymous=True)
    record = Recorder()

    def on_loop(msg) -> None:
        record.loop(msg.query_stamp.to_sec(), msg.match_stamp.to_sec(), msg.score,
                    time.monotonic(), verified=msg.verified,
                    consistent_frames=msg.consistent_frames)

    if args.compressed:
        jpegs = [jpeg_bytes(rgb) for rgb in frames]
        pub = rospy.Publisher("image/compressed", CompressedImage, queue_size=1)
    else:
        pub = rospy.Publisher("image", Image, queue_size=1)
    rospy.Subscriber("loop_closure", loop_closure_class(), on_loop, queue_size=100)
    deadline = time.monotonic() + args.wait_subscriber
    while pub.get_num_connections() == 0:
        if time.monotonic() > deadline or rospy.is_shutdown():
            print("no subscriber on image: is the node running?", file=sys.stderr)
            return 1
        time.sleep(0.05)
    time.sleep(0.5)  # let the node's loop_closure publisher connect too
    period = 1.0 / args.rate
    start = time.monotonic()
    for i, rgb in enumerate(frames):
        time.sleep(max(0.0, start + i * period - time.monotonic()))
        stamp = rospy.Time.now()
        header = Header(stamp=stamp, frame_id="camera")
        if args.compressed:
            msg = CompressedImage(header=header, format="jpeg", data=jpegs[i])
        else:
            pixels = rgb if args.encoding == "rgb8" else rgb[..., ::-1]
            msg = Image(header=header, height=rgb.shape[0], width=rgb.shape[1],
                        encoding=args.encoding, is_bigendian=0, step=rgb.shape[1] * 3,
                        data=np.ascontiguousarray(pixels).tobytes())
        record.sent(i, stamp.to_sec(), time.monotonic())
        pub.publish(msg)
    achieved = len(frames) / (time.monotonic() - start)
    time.sleep(args.linger)
    record.write(args.out, rate=args.rate, achieved=achieved, size=args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
