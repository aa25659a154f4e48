"""Ctrl-C and SIGTERM held back while a map changes.

Python runs a signal's handler between any two bytecodes of the main thread, so Ctrl-C
arriving inside ``PlaceIndex.add`` (between hnswlib's insert and the records' append) would
leave the index's parts disagreeing. :func:`signals_held` delays SIGINT and SIGTERM until the
change is whole, then delivers them again to the handlers that were in place (Python's
``KeyboardInterrupt``, a ROS client library's, a command's own), so nothing is lost either.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back during the block (main thread only: signals reach no
    other), then deliver those that arrived."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def note(signum, frame) -> None:
        arrived.append(signum)

    previous = {}
    for sig in HELD:
        handler = signal.getsignal(sig)
        if handler is None:  # installed outside Python: it could not be put back
            continue
        previous[sig] = signal.signal(sig, note)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(arrived):  # each once, in the order they came
            signal.raise_signal(sig)
