#!/usr/bin/env python3
"""ROS 2 (Humble/Jazzy/Kilted) loop-closure node: camera images in, vpr-edge loop closures out.

A thin adapter over ``vpr_edge.loop_node.LoopClosureNode``. Every parameter of
``vpr_edge.node_params.PARAMS`` is declared before any publisher is created.

Topics (relative; remap them in the launch file):
  in   image (sensor_msgs/Image, sensor-data QoS of depth queue_size, reliable with
       image_reliability:=reliable) or image/compressed (CompressedImage)
  in   odom (nav_msgs/Odometry, best effort: any publisher), optional
  out  loop_closure (vpr_edge_msgs/LoopClosure; std_msgs/Float64MultiArray with
       message_type: standard, for when vpr_edge_msgs is not built)
  out  loop_closure/match_pose (geometry_msgs/PoseStamped), when the match has a pose
Services: save_map, reset (std_srvs/Trigger).

    python3 vpr_edge_node.py --ros-args -p model:=model.onnx -p map_dir:=maps/lab \\
        -r image:=/camera/image_raw
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys

import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose as PoseMsg
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.logging import LoggingSeverity
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64MultiArray, Header, MultiArrayDimension
from std_srvs.srv import Trigger

from vpr_edge.errors import VprEdgeError
from vpr_edge.loop_node import LoopClosureNode
from vpr_edge.node_params import (
    PARAMS,
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
    rounded_parts,
)

#: the rclpy severity of each Python logging level
SEVERITIES = {logging.DEBUG: LoggingSeverity.DEBUG, logging.INFO: LoggingSeverity.INFO,
              logging.WARNING: LoggingSeverity.WARN, logging.ERROR: LoggingSeverity.ERROR,
              logging.CRITICAL: LoggingSeverity.FATAL}
#: how often the main thread leaves rclpy's wait to run a signal's Python handler
SIGNAL_CHECK_SECONDS = 0.1


def to_time(seconds: float) -> Time:
    sec, nanosec = ros_time_parts(rounded_parts(seconds), 2)
    return Time(sec=sec, nanosec=nanosec)


class Ros2LoopClosureNode(Node):
    def __init__(self) -> None:
        super().__init__("vpr_edge_loop_closure")
        self.forward_vpr_edge_logs()
        # declared before any publisher exists; with dynamic typing, so that `min_score: 1`
        # reaches node_params' checks (which take an int for a float) instead of failing
        # here; read-only, since they are read once at start (a change would be ignored)
        dynamic = ParameterDescriptor(dynamic_typing=True, read_only=True)
        for param in PARAMS:
            self.declare_parameter(param.name, param.default, dynamic)

        def get(name, _default):
            return self.get_parameter(name).value

        self.config = node_config_from_params(get)
        self.transport = transport_settings(get)
        self.frame_id = ""  # the camera's, from the images
        self.odom_frame_id = ""  # the odometry's, for the matched poses
        self.save_failed = False
        self.stamps = ExactStamps()  # published loops carry the images' stamps exactly
        loop_type = None
        if self.transport["message_type"] == "vpr_edge_msgs":
            try:
                from vpr_edge_msgs.msg import LoopClosure
            except ImportError as exc:
                raise VprEdgeError(
                    "vpr_edge_msgs is not built in this workspace: build "
                    "ros_examples/vpr_edge_msgs with colcon, or set the parameter "
                    "message_type:=standard (std_msgs/Float64MultiArray)") from exc
            loop_type = LoopClosure
        self.messages = MessageTypes(loop_type, Float64MultiArray, MultiArrayDimension, PoseMsg,
                                     PoseStamped)
        self.core = LoopClosureNode(self.config, self.publish)
        # a dead worker: the fatal line, then spin_until_stopped() returns (main: exit code 1)
        self.dead_worker = DeadWorkerStop(self.core, self.get_logger().fatal)
        self.loop_pub = self.create_publisher(loop_type or Float64MultiArray, "loop_closure",
                                              10)
        self.pose_pub = self.create_publisher(PoseStamped, "loop_closure/match_pose", 10)
        sensor = qos_profile_sensor_data
        reliable = self.transport["image_reliability"] == "reliable"
        qos = QoSProfile(history=sensor.history, depth=self.transport["queue_size"],
                         reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT, durability=sensor.durability)
        if self.transport["use_compressed"]:
            topic = compressed_image_topic(
                self.resolve_topic_name,
                lambda name: self.resolve_topic_name(name, only_expand=True))
            kind = CompressedImage
        else:
            topic, kind = "image", Image
        self.create_subscription(kind, topic, self.on_image, qos)
        # best effort takes reliable and sensor-data (best-effort) odometry publishers alike
        self.create_subscription(Odometry, "odom", self.on_odom,
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT))
        self.create_service(Trigger, "save_map", self.on_save)
        self.create_service(Trigger, "reset", self.on_reset)
        source = f"{self.resolve_topic_name(topic)} ({kind.__name__})"
        self.get_logger().info(f"vpr-edge loop closure: images from {source}, model "
                               + json.dumps(self.core.localizer.info()))

    def forward_vpr_edge_logs(self) -> None:
        """vpr_edge's log lines through this node's logger (console and /rosout), not as bare
        text on stderr. One rclpy logger of the node's name per severity: rclpy refuses
        (ValueError) a call site that logs at two severities, and the handler is one."""
        name = self.get_logger().name
        forward_to_ros({level: functools.partial(rclpy.logging.get_logger(name).log,
                                                 severity=severity)
                        for level, severity in SEVERITIES.items()},
                       int(self.get_logger().get_effective_level()))

    def on_image(self, msg) -> None:
        self.frame_id = msg.header.frame_id
        self.dead_worker.queue_image(lambda: self.stamps.queue(
            msg.header, lambda: self.get_clock().now().nanoseconds * 1e-9, self.core.on_image,
            lambda: message_to_frame(msg)))

    def on_odom(self, msg: Odometry) -> None:
        try:
            # unstamped odometry takes the arrival time, as unstamped images do
            stamp = stamp_seconds(msg.header) or self.get_clock().now().nanoseconds * 1e-9
            self.odom_frame_id = msg.header.frame_id
            self.core.on_pose(stamp, pose_from_message(msg))
        except VprEdgeError as exc:
            self.core.report_problem("bad odometry", exc)

    def on_save(self, _request, response):
        try:
            response.success, response.message = True, self.core.save()
        except VprEdgeError as exc:
            response.success, response.message = False, str(exc)
        return response

    def on_reset(self, _request, response):
        self.core.reset()
        self.stamps.clear()
        response.success, response.message = True, "map and detector state cleared"
        return response

    def time_of(self, seconds: float) -> Time:
        sec, nanosec = ros_time_parts(self.stamps.parts(seconds), 2)
        return Time(sec=sec, nanosec=nanosec)

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
        try:
            summary = self.core.shutdown(self.transport["stats_file"])
        except VprEdgeError as exc:  # the statistics are written all the same
            self.save_failed = True
            self.get_logger().error(f"vpr-edge: the map could not be saved at shutdown: {exc}")
            summary = self.core.stats.summary()
        except KeyboardInterrupt:  # a second Ctrl-C while it stopped: it ends the save
            unsaved = self.core.unsaved_changes
            # (with save_on_shutdown off, one Ctrl-C would not have saved them either)
            self.save_failed = unsaved and self.config.save_on_shutdown
            self.core.stop_without_saving()
            if self.save_failed:
                outcome = "the map was not saved; the one on disk holds what its last save did"
            elif unsaved:
                outcome = "nothing is saved at shutdown (save_on_shutdown is false)"
            else:
                outcome = "nothing was lost (the map on disk is current)"
            self.get_logger().warning(f"vpr-edge: interrupted again while stopping: {outcome}")
            return
        self.get_logger().info("vpr-edge loop closure stopped: " + json.dumps(summary))


def spin_until_stopped(node: Ros2LoopClosureNode) -> None:
    """Run the node's callbacks until its worker died, or SIGINT/SIGTERM arrives
    (KeyboardInterrupt). The wait is cut into short ones: a signal's Python handler runs
    only between them."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok() and node.dead_worker.reason is None:
            executor.spin_once(timeout_sec=SIGNAL_CHECK_SECONDS)
    finally:
        executor.remove_node(node)


def main(argv: list[str] | None = None) -> int:
    # Not rclpy's signal handlers: they shut the context down at once, so the statistics
    # logged after it failed to reach /rosout ("Failed to publish log message to rosout").
    # SIGINT and SIGTERM raise KeyboardInterrupt; the context ends after the shutdown.
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    try:
        node = Ros2LoopClosureNode()
    except VprEdgeError as exc:
        print(f"[FATAL] vpr-edge: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    except KeyboardInterrupt:  # while the model loaded or the map opened: nothing changed
        print("[INFO] vpr-edge: interrupted while starting (nothing was changed)",
              file=sys.stderr)
        rclpy.try_shutdown()
        return 0
    try:
        spin_until_stopped(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # as under rclpy's handler: the SIGTERM ros2 launch sends when the node is still up
        # after its SIGINT does not cut the save short (a second Ctrl-C still does)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            node.shutdown()
        finally:  # even when something unexpected failed
            node.destroy_node()
            rclpy.try_shutdown()
    return 1 if node.save_failed or node.dead_worker.reason else 0


if __name__ == "__main__":
    sys.exit(main())
