"""The content of the nodes' output messages, without ROS (shared by the ROS 1 and 2 nodes).

``loop_closure_fields`` gives the fields of ``vpr_edge_msgs/LoopClosure`` (the caller supplies
its ROS's time and pose types); ``loop_closure_row`` the ``std_msgs/Float64MultiArray`` row of
``message_type: standard`` (columns :data:`LOOP_ROW_FIELDS`, NaN where unknown, -1 for "not
checked").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .loop_closure import LoopClosure

LOOP_ROW_FIELDS = ("query_stamp", "query_id", "match_stamp", "match_id", "score", "verified",
                   "inliers", "consistent_frames", "match_x", "match_y", "match_z")


def loop_closure_row(loop: LoopClosure) -> list[float]:
    pose = loop.match_pose or (math.nan,) * 3
    return [float(v) for v in (
        loop.query_stamp, -1 if loop.query_id is None else loop.query_id,
        math.nan if loop.match_stamp is None else loop.match_stamp, loop.match_id, loop.score,
        -1 if loop.verified is None else int(loop.verified),
        -1 if loop.inliers is None else loop.inliers, loop.consistent_frames, *pose[:3])]


def fill_pose(msg: Any, pose) -> Any:
    """Set a ``geometry_msgs/Pose``-shaped message from ``(x, y, z, qx, qy, qz, qw)``."""
    values = [float(v) for v in pose[:7]] + [0.0, 0.0, 0.0, 1.0][len(pose) - 3:]
    (msg.position.x, msg.position.y, msg.position.z, msg.orientation.x, msg.orientation.y,
     msg.orientation.z, msg.orientation.w) = values[:7]
    return msg


def loop_closure_fields(loop: LoopClosure, to_time: Callable[[float], Any],
                        make_pose: Callable[[], Any]) -> dict[str, Any]:
    """Keyword arguments for ``vpr_edge_msgs/LoopClosure`` (header excluded)."""
    return {
        "query_stamp": to_time(loop.query_stamp or 0.0),
        "query_id": -1 if loop.query_id is None else loop.query_id,
        "match_stamp": to_time(loop.match_stamp or 0.0), "match_id": loop.match_id,
        "score": float(loop.score),
        "verified": -1 if loop.verified is None else int(loop.verified),
        "inliers": -1 if loop.inliers is None else loop.inliers,
        "consistent_frames": loop.consistent_frames,
        "has_match_pose": loop.match_pose is not None,
        "match_pose": fill_pose(make_pose(), loop.match_pose) if loop.match_pose
        else make_pose(),
    }
