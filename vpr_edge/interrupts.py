"""Ctrl-C and SIGTERM held back while a map changes.

Python runs a signal's handler between any two bytecodes of the main thread, so Ctrl-C
arriving inside ``PlaceIndex.add`` (between hnswlib's insert and the records' append) would
leave the index's parts disagreeing. :func:`signals_held` delays SIGINT and SIGTERM until the
change is whole, then delivers them again to the handlers that were in place (Python's
``KeyboardInterrupt``, rospy's, a command's own), so nothing is lost either.

A handler a C library installed (rclpy's, for one: it shuts the node down, then calls the
handler it replaced, Python's) is held too: its ``struct sigaction`` is read with
``sigaction`` through ctypes before the swap and written back, byte for byte, after it; a
signal that arrived meanwhile is then raised again, so the library sees it. Where handlers
cannot be read this way, nothing is held.
"""

from __future__ import annotations

import ctypes
import functools
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HELD = (signal.SIGINT, signal.SIGTERM)
#: where sigaction writes (only the main thread, which alone may hold signals, uses it)
_BUFFER = ctypes.create_string_buffer(512)


@functools.lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _c_handler(libc, sig: int) -> int | None:
    """The address of ``sig``'s handler as the C library sees it (0: default, 1: ignore),
    or None. ``struct sigaction`` starts with the handler on Linux (glibc, musl) and macOS;
    the buffer is larger than the struct anywhere."""
    buffer = _BUFFER
    if libc.sigaction(int(sig), None, buffer) != 0:
        return None
    return ctypes.c_void_p.from_buffer(buffer).value or 0


@functools.lru_cache(maxsize=1)
def _python_trampoline() -> int | None:
    """The address of the C function Python installs for every signal it handles, found by
    giving a spare real-time signal a Python handler for a moment; None where it cannot be
    found (then nothing is held)."""
    probe = getattr(signal, "SIGRTMAX", None)
    if probe is None:
        return None
    try:
        libc = _libc()
        saved = ctypes.create_string_buffer(len(_BUFFER))
        if libc.sigaction(int(probe), None, saved) != 0:
            return None
        previous = signal.signal(probe, lambda signum, frame: None)
        try:
            found = _c_handler(libc, probe)
        finally:  # Python's table, then the very handler there was (a C library's, maybe)
            signal.signal(probe, previous)
            libc.sigaction(int(probe), saved, None)
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    return found or None


def _how_to_hold(libc, sig: int, trampoline: int) -> bytes | None | bool:
    """How ``sig``'s handler can be swapped and put back exactly: None for Python's own or
    the default (``signal.signal`` puts it back), the raw ``struct sigaction`` for a C
    library's (written back with ``sigaction``), False when it is left alone (SIG_IGN, or a
    handler that cannot be read or put back)."""
    installed = _c_handler(libc, sig)
    if installed is None or installed == 1 or signal.getsignal(sig) is None:
        return False
    if installed in (trampoline, 0):
        return None
    return bytes(_BUFFER.raw)  # what _c_handler just read


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back during the block (main thread only: Python runs handlers
    nowhere else), then deliver those that arrived."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    trampoline = _python_trampoline()
    if trampoline is None:
        yield
        return
    libc = _libc()
    arrived: list[int] = []

    def note(signum, frame) -> None:
        arrived.append(signum)

    how = {sig: _how_to_hold(libc, sig, trampoline) for sig in HELD}
    how = {sig: raw for sig, raw in how.items() if raw is not False}
    previous = {sig: signal.signal(sig, note) for sig in how}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # Python's table as it was
            if how[sig] is not None:  # and the C library's handler in front of it
                libc.sigaction(int(sig), ctypes.create_string_buffer(how[sig], len(_BUFFER)),
                               None)
        for sig in dict.fromkeys(arrived):  # each once, in the order they came
            handler = previous[sig]
            if how[sig] is not None:  # the library's handler first; it calls Python's
                signal.raise_signal(sig)
            elif callable(handler):  # called, not raised again: the signal already reached
                handler(sig, None)  # a set_wakeup_fd listener (asyncio) while it was held
            elif handler == signal.SIG_DFL:
                signal.raise_signal(sig)
