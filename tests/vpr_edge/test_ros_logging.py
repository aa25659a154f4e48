"""vpr_edge's log records through a ROS node's logger (the nodes themselves: tests/ros)."""

from __future__ import annotations

import logging

import pytest

from vpr_edge.ros_logging import RosLogHandler, forward_to_ros


@pytest.fixture
def vpr_logger():
    """The ``vpr_edge`` logger, put back as it was after the test."""
    logger = logging.getLogger("vpr_edge")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield logger
    logger.handlers[:], logger.propagate = handlers, propagate
    logger.setLevel(level)  # (clears the level cache of its children)


class Root(logging.Handler):
    """What reaches the root logger (rospy's log file, or bare text on stderr)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def root():
    handler = Root()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


def ros_functions(lines: list[tuple[str, str]]) -> dict:
    return {level: (lambda text, name=logging.getLevelName(level): lines.append((name, text)))
            for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR,
                          logging.CRITICAL)}


def test_records_go_to_the_ros_function_of_their_level_and_only_there(vpr_logger,
                                                                      root) -> None:
    lines: list[tuple[str, str]] = []
    forward_to_ros(ros_functions(lines), logging.INFO)
    log = logging.getLogger("vpr_edge.loop_node")
    log.debug("not shown at the ROS logger's INFO")
    log.info("opened map %s", "lab")
    log.warning("unsupported encoding: yuv422")
    log.error("autosave of the map failed")
    try:
        raise RuntimeError("simulated bug")
    except RuntimeError:
        log.critical("the loop-closure worker stopped", exc_info=True)
    assert [name for name, _ in lines] == ["INFO", "WARNING", "ERROR", "CRITICAL"]
    assert lines[0][1] == "vpr_edge.loop_node: opened map lab"
    assert lines[1][1] == "vpr_edge.loop_node: unsupported encoding: yuv422"
    assert "Traceback" in lines[3][1] and "RuntimeError: simulated bug" in lines[3][1]
    assert root.records == []  # rospy's file handler has it through rospy's own logger


def test_levels_between_go_to_the_function_below_and_a_set_level_stays(vpr_logger) -> None:
    lines: list[tuple[str, str]] = []
    vpr_logger.setLevel(logging.DEBUG)  # set by the user: kept
    forward_to_ros({logging.INFO: lambda text: lines.append(("info", text)),
                    logging.WARNING: lambda text: lines.append(("warn", text))}, logging.ERROR)
    vpr_logger.log(logging.WARNING + 5, "between")
    vpr_logger.debug("below every level")
    assert vpr_logger.level == logging.DEBUG
    assert lines == [("warn", "vpr_edge: between"), ("info", "vpr_edge: below every level")]


def test_a_record_logged_while_forwarding_one_does_not_come_back(vpr_logger) -> None:
    lines: list[str] = []

    def logs_through_vpr_edge(text: str) -> None:  # a ROS logger wired back into vpr_edge
        lines.append(text)
        logging.getLogger("vpr_edge.ros").warning("again: %s", text)

    forward_to_ros({logging.DEBUG: logs_through_vpr_edge}, logging.DEBUG)
    logging.getLogger("vpr_edge").warning("once")
    assert lines == ["vpr_edge: once"]


def test_forwarding_again_replaces_the_handler(vpr_logger) -> None:
    lines: list[tuple[str, str]] = []
    forward_to_ros(ros_functions(lines), logging.INFO)
    forward_to_ros(ros_functions(lines), logging.INFO)
    logging.getLogger("vpr_edge").warning("one line")
    assert len(lines) == 1
    assert sum(isinstance(h, RosLogHandler) for h in vpr_logger.handlers) == 1
