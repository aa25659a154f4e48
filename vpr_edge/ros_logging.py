"""vpr_edge's log records through a ROS node's own logger, without ROS (shared by the nodes).

rospy prints only its own loggers on the console and /rosout: vpr_edge's warnings (bad input,
time jumping back, a failed autosave, the worker stopping) went to the node's log file alone.
On ROS 2 they reached stderr as bare text, never /rosout (rqt_console). A node calls
:func:`forward_to_ros` at start-up with its ROS's log functions; the records then go out as
the node's own lines do, once (``vpr_edge`` no longer propagates to the root logger, whose
file handler rospy's logger writes to already).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

LOGGER_NAME = "vpr_edge"
LogFunction = Callable[[str], None]


class RosLogHandler(logging.Handler):
    """Hands each record, formatted as ``logger: message`` (with its traceback, if any), to
    the log function of the highest level at or below the record's (the lowest one for
    records below every level)."""

    def __init__(self, log_functions: Mapping[int, LogFunction]) -> None:
        super().__init__()
        self._levels = sorted(log_functions.items())
        self._inside = threading.local()  # this thread is handing a record to ROS
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def function_for(self, level: int) -> LogFunction:
        chosen = self._levels[0][1]
        for threshold, function in self._levels:
            if threshold <= level:
                chosen = function
        return chosen

    def emit(self, record: logging.LogRecord) -> None:
        # a record logged while ROS logs one of ours (a ROS logger set up to go through
        # vpr_edge's) would come back here without end: it is dropped instead
        if getattr(self._inside, "active", False):
            return
        self._inside.active = True
        try:
            self.function_for(record.levelno)(self.format(record))
        except Exception:
            self.handleError(record)
        finally:
            self._inside.active = False


def forward_to_ros(log_functions: Mapping[int, LogFunction], level: int) -> RosLogHandler:
    """Send the ``vpr_edge`` logger's records to ``log_functions`` (logging level -> the ROS
    function of that severity, e.g. ``{logging.WARNING: rospy.logwarn, ...}``), and only there.

    ``level`` is the ROS logger's threshold: ``vpr_edge``'s becomes that unless it was set
    already, so its info lines show when the node's do. Calling it again replaces the handler
    (one line per record)."""
    logger = logging.getLogger(LOGGER_NAME)
    for old in [h for h in logger.handlers if isinstance(h, RosLogHandler)]:
        logger.removeHandler(old)
    handler = RosLogHandler(log_functions)
    logger.addHandler(handler)
    logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(level)
    return handler
