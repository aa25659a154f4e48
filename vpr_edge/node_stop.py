"""A ROS node stops itself once its loop-closure worker died, without ROS (shared by the nodes).

Once the worker thread of :class:`~vpr_edge.loop_node.LoopClosureNode` has died, no frame is
processed again and its ``on_image`` raises. rospy logs what an image callback raises and goes
on (the node stayed up, a traceback per frame); rclpy lets it out of ``spin`` (the node ended
with a traceback). :class:`DeadWorkerStop` tells that error from the others, which propagate,
and hands the reason to the node's own stop once, however many frames still arrive.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import VprEdgeError

if TYPE_CHECKING:
    from .loop_node import LoopClosureNode


class DeadWorkerStop:
    """``stop(reason)`` runs once, on the thread of the image callback that found the worker
    dead: it logs the reason as fatal and ends the node (whose exit code is then 1)."""

    def __init__(self, core: LoopClosureNode, stop: Callable[[str], None]) -> None:
        self._core = core
        self._stop = stop
        self._lock = threading.Lock()  # ROS 1 runs each subscription on a thread of its own
        self.reason: str | None = None  # why the node stopped itself; None while it runs

    def queue_image(self, queue: Callable[[], object]) -> None:
        """Call ``queue`` (the image callback's hand-off to the core). The error it raises
        because the worker died stops the node; any other error propagates."""
        try:
            queue()
        except VprEdgeError as exc:
            if self._core.failure is None:
                raise
            self._stop_once(f"vpr-edge: {exc}")

    def _stop_once(self, reason: str) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
        self._stop(reason)
