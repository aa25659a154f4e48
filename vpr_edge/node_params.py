"""The ROS nodes' parameters: one table (name, type, default, range, meaning) for ROS 1 and 2.

Both nodes declare exactly these parameters (ROS 2 before creating publishers), read them with
``get(name, default)`` and build a :class:`~vpr_edge.loop_node.NodeConfig` with
:func:`node_config_from_params`. ros_examples/README.md shows the same table.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic_file import unwritable_folder
from .errors import InvalidInputError
from .geometric import VerifyConfig
from .index import map_store
from .keyframes import KeyframeConfig
from .loop_closure import LoopClosureConfig
from .loop_node import NodeConfig


@dataclass(frozen=True)
class NodeParam:
    name: str
    default: Any
    range: str
    meaning: str

    @property
    def type_name(self) -> str:
        return type(self.default).__name__


PARAMS: tuple[NodeParam, ...] = (
    NodeParam("model", "", "path", "exported model, .onnx or .engine (required)"),
    NodeParam("map_dir", "", "path or ''",
              "map directory to open/extend (~ expanded); '' keeps it in memory"),
    NodeParam("backend", "auto", "auto, onnxruntime-cpu, onnxruntime-cuda, "
              "onnxruntime-tensorrt, tensorrt", "inference backend"),
    NodeParam("min_score", 0.3, "-1..1", "ignore candidates below this cosine similarity"),
    NodeParam("exclusion_frames", 50, ">= 0", "most recent keyframes never matched"),
    NodeParam("exclusion_seconds", 0.0, ">= 0 (0: off)",
              "also exclude the keyframes less than this many seconds old (one exactly that "
              "old is a candidate; stamps jumping back by more than 1 s start it afresh, "
              "unless they go on from before one stamp far ahead: a corrupt stamp)"),
    NodeParam("consistency", 3, ">= 1", "successive keyframes that must agree"),
    NodeParam("consistency_radius", 3, ">= 0", "keyframes apart two agreeing candidates may be"),
    NodeParam("candidates", 5, ">= 1", "places searched per keyframe"),
    NodeParam("verify", False, "bool", "ORB + RANSAC geometric verification (needs OpenCV)"),
    NodeParam("min_inliers", 15, ">= 8", "RANSAC inliers a verified loop needs"),
    NodeParam("report_unverifiable", False, "bool",
              "with verify: also report loops to places it cannot check (from a map on disk), "
              "as unverified"),
    NodeParam("keyframe_every_n", 1, ">= 1", "keep every n-th frame (without odometry)"),
    NodeParam("keyframe_min_distance", 0.0, ">= 0 m (0: off)",
              "with odometry: keep a frame after this much travel"),
    NodeParam("keyframe_min_rotation", 0.0, ">= 0 rad (0: off)",
              "with odometry: keep a frame after this much turning"),
    NodeParam("keyframe_max_interval", 0.0, ">= 0 s (0: off)",
              "with odometry and a min distance/rotation: keep a frame at least this often"),
    NodeParam("pose_max_gap", 0.1, "> 0 s", "odometry older/newer than this is not the frame's"),
    NodeParam("queue_size", 1, ">= 1", "subscriber queue (the node keeps only the newest frame)"),
    NodeParam("use_compressed", False, "bool", "subscribe to image/compressed instead of image"),
    NodeParam("image_reliability", "best_effort", "best_effort, reliable",
              "ROS 2: the image subscription's QoS (best_effort takes any publisher; reliable "
              "only reliable ones, and gets every raw frame of theirs)"),
    NodeParam("message_type", "vpr_edge_msgs", "vpr_edge_msgs, standard",
              "loop_closure as vpr_edge_msgs/LoopClosure, or std_msgs/Float64MultiArray"),
    NodeParam("save_on_shutdown", True, "bool",
              "save the map when the node stops (false: map_dir may be read-only)"),
    NodeParam("autosave_seconds", 60.0, ">= 0 s, finite (0: off)",
              "with map_dir and save_on_shutdown: also save the map this often while it "
              "changes (a power cut loses at most this much)"),
    NodeParam("stats_file", "", "path or ''",
              "on shutdown, write frame/drop/latency statistics here as JSON (outside the "
              "map folder)"),
)
DEFAULTS = {p.name: p.default for p in PARAMS}


def node_config_from_params(get: Callable[[str, Any], Any]) -> NodeConfig:
    """Read every parameter through ``get(name, default)`` and check it: its type here, and
    its range here or, for the fields of :class:`~vpr_edge.loop_node.NodeConfig` and the
    configs in it (named as the parameters), where those are made."""
    values = {p.name: get(p.name, p.default) for p in PARAMS}
    for p in PARAMS:  # ROS may hand ints for floats (e.g. min_score: 1)
        value = values[p.name]
        if isinstance(p.default, float) and isinstance(value, int) \
                and not isinstance(value, bool):
            values[p.name] = value = float(value)
        if type(value) is not type(p.default):
            raise InvalidInputError(f"parameter {p.name} must be {p.type_name} "
                                    f"({p.range}), got {value!r}")
    if values["message_type"] not in ("vpr_edge_msgs", "standard"):
        raise InvalidInputError("parameter message_type must be 'vpr_edge_msgs' or 'standard', "
                                f"got {values['message_type']!r}")
    if values["image_reliability"] not in ("best_effort", "reliable"):
        raise InvalidInputError("parameter image_reliability must be 'best_effort' or "
                                f"'reliable', got {values['image_reliability']!r}")
    if values["queue_size"] < 1:
        raise InvalidInputError(f"parameter queue_size must be >= 1, got {values['queue_size']}")
    for name in ("model", "map_dir", "stats_file"):  # no shell expands a parameter's ~
        if values[name]:
            values[name] = os.path.expanduser(values[name])
    if values["map_dir"] and values["save_on_shutdown"]:
        # a save writes a temp folder beside the map, then renames it (a map only read
        # may sit in a read-only place)
        _refuse_if("map_dir", values["map_dir"], map_store.save_problem, "the map")
    if values["stats_file"]:
        _refuse_if("stats_file", values["stats_file"], unwritable_folder, "the statistics")
        _refuse_stats_in_a_map(values["stats_file"], values["map_dir"])

    def off_if_zero(name: str) -> float | None:
        return values[name] or None

    try:
        detector = LoopClosureConfig(
            exclusion_frames=values["exclusion_frames"],
            exclusion_seconds=off_if_zero("exclusion_seconds"),
            min_score=values["min_score"], consistency=values["consistency"],
            consistency_radius=values["consistency_radius"], candidates=values["candidates"],
            verify=values["verify"],
            verify_config=VerifyConfig(min_inliers=values["min_inliers"]),
            report_unverifiable=values["report_unverifiable"])
    except InvalidInputError as exc:  # as parameters: 0 is off, there is no None
        named = re.sub(r"^(LoopClosureConfig|VerifyConfig): ", "", str(exc))
        raise InvalidInputError(f"parameter {_zero_for_off(named)}") from exc
    try:
        keyframes = KeyframeConfig(
            every_n=values["keyframe_every_n"],
            min_distance=off_if_zero("keyframe_min_distance"),
            min_rotation=off_if_zero("keyframe_min_rotation"),
            max_interval=off_if_zero("keyframe_max_interval"))
    except InvalidInputError as exc:  # named as the parameters are ("min_distance" -> ...)
        named = re.sub(r"\b(every_n|min_distance|min_rotation|max_interval)\b",
                       r"keyframe_\1", str(exc))
        raise InvalidInputError(f"parameter {_zero_for_off(named)}") from exc
    return NodeConfig(model=values["model"], map_dir=values["map_dir"] or None,
                      backend=values["backend"], detector=detector, keyframes=keyframes,
                      pose_max_gap=values["pose_max_gap"],
                      save_on_shutdown=values["save_on_shutdown"],
                      autosave_seconds=values["autosave_seconds"])


def _zero_for_off(message: str) -> str:
    """A config's message in a parameter's terms: what None turns off, 0 does."""
    return message.replace(", or None", " (0: off)").replace(" or None", " (0: off)")


def _refuse_if(name: str, value: str, problem_of: Callable[[str], str | None], what: str
               ) -> None:
    """Refuse at start a path where ``what`` could not be saved (a folder that cannot be
    made or written, a mount point): found at shutdown, the whole run's map or statistics
    would be lost."""
    problem = problem_of(value)
    if problem is not None:
        raise InvalidInputError(f"parameter {name} {value!r}: {problem}, so {what} could not "
                                "be saved; choose another path")


def _refuse_stats_in_a_map(stats_file: str, map_dir: str) -> None:
    """Refuse at start a ``stats_file`` inside the map folder (``map_dir``, made at the first
    save, or any folder holding a map): written there at shutdown, it was a file the map does
    not list, so the next start on that map refused the folder (and ``vpr-edge map build``
    and saves refused it too), or the map's next save replaced the folder and deleted it."""
    real = Path(os.path.realpath(stats_file))
    folder = Path(os.path.realpath(map_dir)) if map_dir else None
    if folder is None or (folder != real and folder not in real.parents):
        folder = map_store.enclosing_map(real)
    if folder is not None:
        raise InvalidInputError(
            f"parameter stats_file {stats_file!r}: inside the map folder {folder}, which a "
            "save replaces whole and which holds the map's files alone (the next start on "
            "that map would refuse the folder): choose a stats_file outside the map folder")


def transport_settings(get: Callable[[str, Any], Any]) -> dict[str, Any]:
    """The parameters that shape subscriptions and messages rather than the detector."""
    settings = {name: get(name, DEFAULTS[name])
                for name in ("queue_size", "use_compressed", "image_reliability",
                             "message_type", "stats_file")}
    if settings["stats_file"]:
        settings["stats_file"] = os.path.expanduser(settings["stats_file"])
    return settings



def compressed_image_topic(resolve: Callable[[str], str], expand: Callable[[str], str]) -> str:
    """The topic name a node with ``use_compressed`` subscribes to for ``CompressedImage``,
    as image_transport names it: the ``image`` topic after remapping plus ``/compressed``, so
    ``image:=/camera/image_raw`` alone is enough. A remap of ``image/compressed`` itself wins
    (the relative name is returned, for the middleware to remap).

    ``resolve(name)``: the name after namespaces and remaps; ``expand(name)``: after
    namespaces only (rclpy's ``resolve_topic_name`` with and without ``only_expand``)."""
    if resolve("image/compressed") != expand("image/compressed"):
        return "image/compressed"
    return resolve("image").rstrip("/") + "/compressed"
