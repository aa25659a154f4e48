"""TensorRT's logger: one per TensorRT module per process, shared by every builder and runtime.

TensorRT keeps the logger of the first builder or runtime a process creates and ignores the
ones given later, so a second backend that made its own logger would never hear of its own
errors (they would go to the first one). Every vpr-edge builder and runtime therefore asks
:func:`process_logger` for the one logger of its TensorRT module. It forwards messages to
Python logging (logger ``vpr_edge.backends.tensorrt``) and numbers the errors it keeps, so
that each operation reports only the errors logged since it began::

    log = process_logger(trt)
    mark = log.mark()
    engine = runtime.deserialize_cuda_engine(blob)
    if engine is None:
        raise ...(log.errors_since(mark))
"""

from __future__ import annotations

import collections
import logging
import threading
from types import ModuleType
from typing import Any

logger = logging.getLogger("vpr_edge.backends.tensorrt")

#: Errors kept for :meth:`errors_since` (older ones are only in the Python log).
KEPT_ERRORS = 64

_lock = threading.Lock()
_loggers: dict[ModuleType, Any] = {}


def _make_logger(trt: ModuleType) -> Any:
    class ProcessLogger(trt.ILogger):
        """Forwards TensorRT's messages to Python logging; numbers and keeps the errors."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self._errors: collections.deque[tuple[int, str]] = collections.deque(
                maxlen=KEPT_ERRORS)
            self._count = 0
            self._lock = threading.Lock()

        def log(self, severity: Any, msg: str) -> None:
            sev = trt.ILogger.Severity
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                with self._lock:
                    self._errors.append((self._count, str(msg)))
                    self._count += 1
                logger.error("TensorRT: %s", msg)
            elif severity == sev.WARNING:
                logger.warning("TensorRT: %s", msg)
            else:
                logger.debug("TensorRT: %s", msg)

        def mark(self) -> int:
            """A position to pass to :meth:`errors_since`: the number of errors so far."""
            with self._lock:
                return self._count

        def errors_since(self, mark: int, last: int = 3) -> list[str]:
            """The last ``last`` errors logged after ``mark`` (another thread's errors in
            the meantime included: TensorRT does not say which object an error is from)."""
            with self._lock:
                return [msg for number, msg in self._errors if number >= mark][-last:]

    return ProcessLogger()


def process_logger(trt: ModuleType) -> Any:
    """The logger every builder and runtime of the TensorRT module ``trt`` gets in this
    process (made on first use)."""
    with _lock:
        found = _loggers.get(trt)
        if found is None:
            found = _loggers[trt] = _make_logger(trt)
        return found
