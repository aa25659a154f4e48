"""A new HNSW graph for a :class:`~vpr_edge.index.PlaceIndex`, built in a background thread.

An HNSW graph built in route order (a robot's adds) is weaker than one built in a random order
(``benchmarks/insertion_order.py``). The index re-inserts the places of each small add in
the adds that follow, which repairs that (``IndexSettings.refine_adds``), and
``PlaceIndex.rebuild()`` builds a random-order graph but holds the index's write lock while it
runs (63-71 s at 100k places on two cores). A :class:`GraphRebuild` instead builds the new
graph outside the lock, from a snapshot of the live places, while the old graph keeps
answering queries and taking adds and removals; those are recorded here and replayed on the
new graph, in rounds outside the lock until few are left, then the rest under the write lock
as the new graph is swapped in. hnswlib releases the GIL while it inserts, so queries run at
full speed in the meantime; the build uses ``threads`` cores (default one, leaving the others
to inference).

The snapshot reads float16 descriptor rows that were written before it was taken; record rows
are append-only, so nothing writes those rows again while the build reads them.

A process that exits while a build runs would otherwise abort ("terminate called without an
active exception", exit status 134): the daemon thread is inside hnswlib when Python shuts
down. An exit hook (registered with the first background build) stops running builds between
steps of :data:`STEP` places and waits for their threads; the old graph stays, as it is.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from ..errors import VprEdgeError

log = logging.getLogger(__name__)

#: rows converted to float32 at a time (bounds the temporary memory)
CHUNK = 8192
#: places inserted per hnswlib call; a stop request waits for at most one step
STEP = 1024
#: seconds the exit hook waits for each build's thread
EXIT_WAIT_S = 30.0

_running: weakref.WeakSet[GraphRebuild] = weakref.WeakSet()
_hook_lock = threading.Lock()
_hook_registered = False


class RebuildStopped(VprEdgeError, RuntimeError):
    """A background build stopped before its swap: the process is exiting, or a plain
    ``rebuild()`` replaced it."""


def _stop_running_builds() -> None:
    """Exit hook: stop every background build and wait for its thread (the old graphs stay)."""
    jobs = list(_running)
    for job in jobs:
        job.stop()
    for job in jobs:
        job.join(EXIT_WAIT_S)


def _register_exit_hook() -> None:
    global _hook_registered
    with _hook_lock:
        if not _hook_registered:
            atexit.register(_stop_running_builds)
            _hook_registered = True


class GraphRebuild:
    """One rebuild: snapshot (given), build (:meth:`start`), changes meanwhile, replay.

    Args:
        new_graph: makes an empty hnswlib index for ``capacity`` places.
        to_graph: float32 ``[n, dim]`` descriptors -> the vectors the graph holds.
        desc16: the float16 descriptor array; rows ``rows`` are read.
        rows: the snapshot's live record rows, in the order they will be inserted.
        labels: their place ids (hnswlib labels), aligned with ``rows``.
        threads: hnswlib threads for the build.
        deleted: labels among ``labels`` to mark deleted once inserted (removed places whose
            records the index keeps).
    """

    def __init__(self, new_graph: Callable[[int], Any],
                 to_graph: Callable[[np.ndarray], np.ndarray], desc16: np.ndarray,
                 rows: np.ndarray, labels: np.ndarray, threads: int = 1, *,
                 deleted: np.ndarray | None = None) -> None:
        self._new_graph = new_graph
        self._to_graph = to_graph
        self._desc16 = desc16
        self._rows = rows
        self._labels = labels.astype(np.uint64)
        self._threads = threads
        self._deleted = [] if deleted is None else np.asarray(deleted, dtype=np.uint64).tolist()
        self._changes: list[tuple[str, np.ndarray, np.ndarray | None]] = []
        self._graph: Any = None
        self._stop = threading.Event()
        self._stop_reason = "the process is exiting"
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # why the build failed
        self.future: Future = Future()

    @property
    def places(self) -> int:
        """Live places in the snapshot."""
        return len(self._rows) - len(self._deleted)

    # -- recorded while the build runs (the caller holds the index's write lock) -----------
    def record_add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        self._changes.append(("add", np.asarray(labels, dtype=np.uint64), vectors))

    def record_remove(self, labels: list[int]) -> None:
        self._changes.append(("remove", np.asarray(labels, dtype=np.uint64), None))

    # -- the build -------------------------------------------------------------------------
    def start(self, on_built: Callable[[GraphRebuild], None]) -> None:
        """Build in a daemon thread, then call ``on_built(self)`` (which swaps it in)."""
        def run() -> None:
            try:
                self.build()
            except RebuildStopped as exc:
                log.info("background graph rebuild stopped: %s", exc)
                self.error = exc
            except BaseException as exc:  # reported through the future; the old graph stays
                log.warning("background graph rebuild failed (the old graph stays): %s", exc)
                self.error = exc
            try:
                on_built(self)
            finally:
                _running.discard(self)

        _register_exit_hook()
        _running.add(self)
        self._thread = threading.Thread(target=run, name="vpr-edge-graph-rebuild", daemon=True)
        self._thread.start()

    def stop(self, reason: str = "the process is exiting") -> None:
        """Ask the build (and the catch-up replay) to stop at the next step; its future
        then raises :class:`RebuildStopped` with ``reason``."""
        self._stop_reason = reason
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the build's thread (after :meth:`start`)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def check_stop(self) -> None:
        """Raise :class:`RebuildStopped` once :meth:`stop` was called."""
        if self._stop.is_set():
            raise RebuildStopped(f"{self._stop_reason}; this rebuild's graph is not used")

    def build(self) -> None:
        """Build the graph (in the calling thread; :meth:`start` runs it in another)."""
        graph = self._new_graph(max(1, len(self._rows)))
        for start in range(0, len(self._rows), CHUNK):
            rows = self._rows[start:start + CHUNK]
            vectors = self._to_graph(self._desc16[rows].astype(np.float32))
            labels = self._labels[start:start + CHUNK]
            for step in range(0, len(rows), STEP):
                self.check_stop()
                graph.add_items(vectors[step:step + STEP], labels[step:step + STEP],
                                num_threads=self._threads)
        for label in self._deleted:
            graph.mark_deleted(label)
        self._graph = graph

    def take_changes(self) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
        """The changes recorded so far, forgotten here (caller holds the write lock)."""
        changes, self._changes = self._changes, []
        return changes

    def replay(self, changes: list[tuple[str, np.ndarray, np.ndarray | None]]) -> None:
        """Apply ``changes`` to the built graph. The graph is not in use yet, so this runs
        without the index's lock, except for the last few changes before the swap."""
        graph = self._graph
        adds = sum(len(labels) for kind, labels, _ in changes if kind == "add")
        needed = int(graph.element_count) + adds
        if needed > int(graph.max_elements):
            graph.resize_index(max(needed, 2 * int(graph.max_elements)))
        for kind, labels, vectors in changes:
            self.check_stop()
            if kind == "add":
                graph.add_items(vectors, labels, num_threads=1)
            else:
                for label in labels.tolist():
                    graph.mark_deleted(label)

    @property
    def graph(self) -> Any:
        return self._graph
