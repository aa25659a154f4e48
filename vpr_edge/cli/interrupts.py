"""Ctrl-C and SIGTERM for the command line: SIGTERM raised as Ctrl-C is (so long commands
keep their work on the way out), and both held back while the map is changed (so that what
is saved on the way out is whole)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``docker stop``, systemd), raised as Ctrl-C is, so that a long
    command keeps its work on the way out (``map build`` saves the places it added)."""


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Raise :class:`Terminated` on SIGTERM while the command runs (main thread only, and
    only where nobody else handles SIGTERM)."""
    if not _in_main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminated(signum, frame) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block ends, then raise what arrived. Python
    raises a signal's exception between any two bytecodes, so one arriving inside
    ``PlaceIndex.add`` (between hnswlib's insert and the records' append) would leave the
    index's parts disagreeing, and the save on the way out refused. Main thread only."""
    if not _in_main_thread():
        yield
        return
    arrived: list[int] = []

    def note(signum, frame) -> None:
        arrived.append(signum)

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if arrived:  # the first one, as the handler in place before would have taken it
        handler = previous[arrived[0]]
        if callable(handler):
            handler(arrived[0], None)
        elif handler != signal.SIG_IGN:  # the default: the process would have ended
            raise KeyboardInterrupt if arrived[0] == signal.SIGINT else Terminated()
