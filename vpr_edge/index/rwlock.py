"""A readers-writer lock: many concurrent readers or one writer, taking turns fairly.

hnswlib's searches are safe with each other but not with inserts, deletes or resizes, so the
place index runs queries under :meth:`ReadWriteLock.read` and changes under
:meth:`ReadWriteLock.write`. Phase-fair: a waiting writer blocks new readers (writers are not
starved by a stream of queries), and the readers that were waiting when a writer finishes go
in before the next writer (readers are not starved by a stream of adds). A thread that already
reads may read again (a query filter may call ``index.get``), but may not start writing: that
would wait for itself forever, so it raises instead.

A long read (:meth:`ReadWriteLock.long_read`: a save writing the map's files, seconds) makes
writers wait before they queue, so queries go on meanwhile: queued as usual, a waiting add
held back every new query until the save was done (queries stalled for up to 1.3 s while a
30k-place map saved and a thread added places).
"""

from __future__ import annotations

import threading

from ..errors import InvalidInputError


class _Guard:
    """``with lock.read():`` / ``with lock.write():`` (a class: cheaper than a generator)."""

    __slots__ = ("_enter", "_exit")

    def __init__(self, enter, exit_) -> None:
        self._enter = enter
        self._exit = exit_

    def __enter__(self) -> None:
        self._enter()

    def __exit__(self, *exc: object) -> None:
        self._exit()


class ReadWriteLock:
    """Phase-fair readers-writer lock; the read side is re-entrant per thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None  # thread id of the writer
        self._writers_waiting = 0
        self._readers_waiting = 0
        self._admitted = 0  # readers let in ahead of waiting writers when a writer finished
        self._local = threading.local()
        self._gate = threading.Lock()  # held by a long read; writers pass it to queue
        self._read_guard = _Guard(self._acquire_read, self._release_read)
        self._write_guard = _Guard(self._acquire_write, self._release_write)
        self._long_read_guard = _Guard(self._acquire_long_read, self._release_long_read)

    def read(self) -> _Guard:
        return self._read_guard

    def long_read(self) -> _Guard:
        """A read that writers wait for without holding back other readers (one at a time;
        the thread must not write inside it)."""
        return self._long_read_guard

    def write(self) -> _Guard:
        return self._write_guard

    def _depth(self) -> int:
        return getattr(self._local, "depth", 0)

    def _acquire_read(self) -> None:
        depth = self._depth()
        if depth == 0 and self._writer != threading.get_ident():
            with self._cond:
                self._readers_waiting += 1
                try:
                    while self._writer is not None or (self._writers_waiting
                                                       and not self._admitted):
                        self._cond.wait()
                finally:
                    self._readers_waiting -= 1
                if self._admitted:
                    self._admitted -= 1
                self._readers += 1
        self._local.depth = depth + 1

    def _release_read(self) -> None:
        depth = self._local.depth - 1
        self._local.depth = depth
        if depth == 0 and self._writer != threading.get_ident():
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    def _acquire_write(self) -> None:
        me = threading.get_ident()
        if self._depth():
            raise InvalidInputError(
                "cannot change the index (add/remove/...) from inside one of its own queries "
                "(e.g. in a query filter); do it after the query returns"
            )
        if self._writer == me:
            raise InvalidInputError("the index is already being changed by this thread")
        with self._gate, self._cond:  # (the gate: after any long read, before queueing)
            self._writers_waiting += 1
            try:
                while (self._writer is not None or self._readers
                       or (self._admitted and self._readers_waiting)):
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = me
            self._admitted = 0

    def _acquire_long_read(self) -> None:
        gated = self._local.__dict__.setdefault("gated", [])
        if self._depth():  # already reading (a save from a query filter): a plain re-entrant
            gated.append(False)  # read; the gate could be held by a writer waiting on it
            self._acquire_read()
            return
        self._gate.acquire()
        try:
            self._acquire_read()
        except BaseException:
            self._gate.release()
            raise
        gated.append(True)

    def _release_long_read(self) -> None:
        try:
            self._release_read()
        finally:
            if self._local.gated.pop():
                self._gate.release()

    def _release_write(self) -> None:
        with self._cond:
            self._writer = None
            self._admitted = self._readers_waiting
            self._cond.notify_all()
