#!/usr/bin/env python3
"""ROS 1 (Noetic) loop-closure node: camera images in, vpr-edge loop closures out.

A thin adapter over ``vpr_edge.loop_node.LoopClosureNode``: it reads the parameters in
``vpr_edge.node_params.PARAMS`` (private, ``~name``), converts messages, and publishes.

Topics (relative; remap them in the launch file):
  in   image (sensor_msgs/Image) or image/compressed (sensor_msgs/CompressedImage)
  in   odom (nav_msgs/Odometry), optional: poses for keyframing and for the map
  out  loop_closure (vpr_edge_msgs/LoopClosure, or std_msgs/Float64MultiArray with
       message_type: standard)
  out  loop_closure/match_pose (geometry_msgs/PoseStamped), when the match has a pose
Services: save_map, reset (std_srvs/Trigger).

    rosrun / python3 vpr_edge_node.py _model:=model.onnx _map_dir:=maps/lab image:=/camera/image_raw
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path

import rosgraph.names
import rospy
from geometry_msgs.msg import Pose as PoseMsg
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64MultiArray, Header, MultiArrayDimension
from std_srvs.srv import Trigger, TriggerResponse

from vpr_edge.errors import VprEdgeError
from vpr_edge.loop_node import LoopClosureNode
from vpr_edge.node_params import (
    compressed_image_topic,
    node_config_from_params,
    transport_settings,
)
from vpr_edge.node_stop import DeadWorkerStop
from vpr_edge.poses import pose_from_message, stamp_seconds
from vpr_edge.ros_image import message_to_frame
from vpr_edge.ros_logging import forward_to_ros
from vpr_edge.ros_messages import (
    ExactStamps,
    MessageTypes,
    loop_closure_messages,
    match_pose_header_fields,
    ros_time_parts,
)

MSG_FILE = Path(__file__).resolve().parents[1] / "vpr_edge_msgs" / "msg" / "LoopClosure.msg"
def loop_closure_class():
    """vpr_edge_msgs/LoopClosure: the catkin-built package if installed, else generated at
    run time from ros_examples/vpr_edge_msgs/msg/LoopClosure.msg (same md5, same wire format)."""
    try:
        from vpr_edge_msgs.msg import LoopClosure

        return LoopClosure
    except ImportError:
        import genpy.dynamic

        sep = "\n" + "=" * 80 + "\n"
        text = (MSG_FILE.read_text() + sep + "MSG: std_msgs/Header\n" + Header._full_text
                + sep + "MSG: geometry_msgs/Pose\n" + PoseMsg._full_text)
        return genpy.dynamic.generate_dynamic("vpr_edge_msgs/LoopClosure", text)[
            "vpr_edge_msgs/LoopClosure"]


def forward_vpr_edge_logs() -> None:
    """vpr_edge's log lines to the console and /rosout, as the node's own (rospy sent them
    to the node's log file alone)."""
    forward_to_ros({logging.DEBUG: rospy.logdebug, logging.INFO: rospy.loginfo,
                    logging.WARNING: rospy.logwarn, logging.ERROR: rospy.logerr,
                    logging.CRITICAL: rospy.logfatal},
                   logging.getLogger("rosout").getEffectiveLevel())


class Ros1LoopClosureNode:
    def __init__(self) -> None:
        get = lambda name, default: rospy.get_param("~" + name, default)  # noqa: E731
        self.config = node_config_from_params(get)
        self.transport = transport_settings(get)
        self.frame_id = ""  # the camera's, from the images
        self.odom_frame_id = ""  # the odometry's, for the matched poses
        self.stopped = threading.Event()
        self.shutdown_lock = threading.Lock()
        self.save_failed = False
        self.stamps = ExactStamps()  # published loops carry the images' stamps exactly
        standard = self.transport["message_type"] == "standard"
        loop_type = None if standard else loop_closure_class()
        self.messages = MessageTypes(loop_type, Float64MultiArray, MultiArrayDimension, PoseMsg,
                                     PoseStamped)
        self.core = LoopClosureNode(self.config, self.publish)
        self.dead_worker = DeadWorkerStop(self.core, self.stop_for_good)
        self.loop_pub = rospy.Publisher("loop_closure", loop_type or Float64MultiArray,
                                        queue_size=10)
        self.pose_pub = rospy.Publisher("loop_closure/match_pose", PoseStamped, queue_size=10)
        queue = self.transport["queue_size"]
        if self.transport["use_compressed"]:
            topic = compressed_image_topic(
                rospy.resolve_name, lambda name: rosgraph.names.resolve_name(name,
                                                                             rospy.get_name()))
            kind = CompressedImage
        else:
            topic, kind = "image", Image
        rospy.Subscriber(topic, kind, self.on_image, queue_size=queue, buff_size=2 ** 24)
        rospy.Subscriber("odom", Odometry, self.on_odom, queue_size=100)
        rospy.Service("save_map", Trigger, self.on_save)
        rospy.Service("reset", Trigger, self.on_reset)
        rospy.on_shutdown(self.shutdown)
        rospy.loginfo("vpr-edge loop closure: images from %s (%s), model %s",
                      rospy.resolve_name(topic), kind.__name__,
                      json.dumps(self.core.localizer.info()))

    # -- callbacks -------------------------------------------------------------------------
    def on_image(self, msg) -> None:
        self.frame_id = msg.header.frame_id
        # malformed messages are counted by kind and logged once per kind by the core; other
        # errors but the worker's death reach rospy, which logs them
        self.dead_worker.queue_image(lambda: self.stamps.queue(
            msg.header, rospy.get_time, self.core.on_image, lambda: message_to_frame(msg)))

    def stop_for_good(self, reason: str) -> None:
        """The worker died (called once): log why and shut the node down, so that it exits
        (with code 1) and roslaunch's required/respawn acts. rospy only logs what a callback
        raises and goes on: the node stayed up, dropping every frame with a traceback each."""
        rospy.logfatal(reason)
        rospy.signal_shutdown(reason)  # runs shutdown() (save, statistics) on this thread

    def on_odom(self, msg: Odometry) -> None:
        try:
            # unstamped odometry takes the arrival time, as unstamped images do
            stamp = stamp_seconds(msg.header) or rospy.get_time()
            self.odom_frame_id = msg.header.frame_id
            self.core.on_pose(stamp, pose_from_message(msg))
        except VprEdgeError as exc:
            self.core.report_problem("bad odometry", exc)

    def on_save(self, _request) -> TriggerResponse:
        try:
            return TriggerResponse(success=True, message=self.core.save())
        except VprEdgeError as exc:
            return TriggerResponse(success=False, message=str(exc))

    def on_reset(self, _request) -> TriggerResponse:
        self.core.reset()
        self.stamps.clear()
        return TriggerResponse(success=True, message="map and detector state cleared")

    # -- output (worker thread) ------------------------------------------------------------
    def time_of(self, seconds: float) -> rospy.Time:
        return rospy.Time(*ros_time_parts(self.stamps.parts(seconds), 1))

    def publish(self, loop) -> None:
        self.stamps.remember_match(loop)  # a place of any age, or from a saved map: exact
        header = Header(stamp=self.time_of(loop.query_stamp), frame_id=self.frame_id)
        pose_stamp, pose_frame = match_pose_header_fields(loop, self.odom_frame_id)
        pose_header = Header(stamp=self.time_of(pose_stamp), frame_id=pose_frame)
        message, pose = loop_closure_messages(loop, header, self.time_of, self.messages,
                                              pose_header)
        self.loop_pub.publish(message)
        if pose is not None:
            self.pose_pub.publish(pose)

    def shutdown(self) -> None:
        """Save the map, write the statistics and log them, once (rospy's hook, or main())."""
        with self.shutdown_lock:
            if not self.stopped.is_set():
                self._shut_down()

    def _shut_down(self) -> None:
        try:
            try:
                summary = self.core.shutdown(self.transport["stats_file"])
            except VprEdgeError as exc:  # the statistics are written all the same
                self.save_failed = True
                rospy.logerr(f"vpr-edge: the map could not be saved at shutdown: {exc}")
                summary = self.core.stats.summary()
            rospy.loginfo("vpr-edge loop closure stopped: %s", json.dumps(summary))
        finally:
            self.stopped.set()


def shut_down_on_a_thread() -> None:
    """Run rospy's SIGINT/SIGTERM handler on a thread of its own, not inside the main thread.

    rospy's handler tells the master that the node goes, through the lock that guards its
    calls to the master. A signal that lands while the main thread is inside such a call
    (reading a parameter, or a log line going to /rosout during start-up) made the handler
    wait for a lock its own thread held: the node hung until it was killed, and the places
    added since the last save were lost. On a thread, the handler waits for the call to end.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if callable(handler):
            signal.signal(sig, lambda number, _frame, handler=handler: threading.Thread(
                target=handler, args=(number, None), name="rospy-shutdown").start())


def main() -> int:
    rospy.init_node("vpr_edge_loop_closure")
    shut_down_on_a_thread()
    forward_vpr_edge_logs()
    try:
        node = Ros1LoopClosureNode()
    except VprEdgeError as exc:
        rospy.logfatal(f"vpr-edge: {exc}")
        return 2
    rospy.spin()  # returns once rospy ran its shutdown hooks (on its shutdown thread)
    # unless the signal came while on_shutdown() registered the hook: rospy, running the
    # hooks on another thread then, dropped it (no save, no statistics); run it here
    node.shutdown()
    return 1 if node.save_failed or node.dead_worker.reason else 0


if __name__ == "__main__":
    sys.exit(main())
