"""DeadWorkerStop: a ROS node's image callback stops the node once its worker died."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from vpr_edge.errors import InvalidInputError, VprEdgeError
from vpr_edge.node_stop import DeadWorkerStop


def raises(error: BaseException):
    def queue() -> None:
        raise error

    return queue


def test_the_worker_s_death_stops_the_node_once_with_the_reason() -> None:
    core, stops = SimpleNamespace(failure=RuntimeError("bug")), []
    dead_worker = DeadWorkerStop(core, stops.append)
    died = "the loop-closure worker stopped (...): restart the node"
    threads = [threading.Thread(target=dead_worker.queue_image,
                                args=(raises(VprEdgeError(died)),))
               for _ in range(8)]  # ROS 1: image callbacks on threads of their own
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stops == ["vpr-edge: the loop-closure worker stopped (...): restart the node"]
    assert dead_worker.reason == stops[0]


def test_other_errors_propagate_and_do_not_stop_the_node() -> None:
    core, stops = SimpleNamespace(failure=None), []
    dead_worker = DeadWorkerStop(core, stops.append)
    with pytest.raises(InvalidInputError):  # the worker runs: a bad stamp, not its death
        dead_worker.queue_image(raises(InvalidInputError("stamp must be finite")))
    core.failure = RuntimeError("bug")
    with pytest.raises(ValueError):  # not vpr_edge's error: the middleware reports it
        dead_worker.queue_image(raises(ValueError("a converter's bug")))
    dead_worker.queue_image(lambda: True)
    assert stops == [] and dead_worker.reason is None
