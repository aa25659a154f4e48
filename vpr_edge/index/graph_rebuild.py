"""A new HNSW graph for a :class:`~vpr_edge.index.PlaceIndex`, built in a background thread.

A robot adds places one at a time along its route, and an HNSW graph built in that order is
weaker than one built in a random order (``benchmarks/insertion_order.py``: recall@1 of exact
search 0.98 instead of 1.000 at 10k and 100k places). ``PlaceIndex.rebuild()`` fixes that but
holds the index's write lock while it runs (63-71 s at 100k places on two cores). A
:class:`GraphRebuild` instead builds the new graph outside the lock, from a snapshot of the
live places, while the old graph keeps answering queries and taking adds and removals; those
are recorded here and replayed on the new graph, in rounds outside the lock until few are left,
then the rest under the write lock as the new graph is swapped in. hnswlib releases the GIL
while it inserts, so queries run at full speed in the meantime; the build uses ``threads``
cores (default one, leaving the others to inference).

The snapshot reads float16 descriptor rows that were written before it was taken; record rows
are append-only, so nothing writes those rows again while the build reads them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: rows converted to float32 and inserted at a time (bounds the temporary memory)
CHUNK = 8192


class GraphRebuild:
    """One rebuild: snapshot (given), build (:meth:`start`), changes meanwhile, replay.

    Args:
        new_graph: makes an empty hnswlib index for ``capacity`` places.
        to_graph: float32 ``[n, dim]`` descriptors -> the vectors the graph holds.
        desc16: the float16 descriptor array; rows ``rows`` are read.
        rows: the snapshot's live record rows, in the order they will be inserted.
        labels: their place ids (hnswlib labels), aligned with ``rows``.
        threads: hnswlib threads for the build.
    """

    def __init__(self, new_graph: Callable[[int], Any],
                 to_graph: Callable[[np.ndarray], np.ndarray], desc16: np.ndarray,
                 rows: np.ndarray, labels: np.ndarray, threads: int = 1) -> None:
        self._new_graph = new_graph
        self._to_graph = to_graph
        self._desc16 = desc16
        self._rows = rows
        self._labels = labels.astype(np.uint64)
        self._threads = threads
        self._changes: list[tuple[str, np.ndarray, np.ndarray | None]] = []
        self._graph: Any = None
        self.error: BaseException | None = None  # why the build failed
        self.future: Future = Future()

    @property
    def places(self) -> int:
        """Places in the snapshot."""
        return len(self._rows)

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
            except BaseException as exc:  # reported through the future; the old graph stays
                log.warning("background graph rebuild failed (the old graph stays): %s", exc)
                self.error = exc
            on_built(self)

        threading.Thread(target=run, name="vpr-edge-graph-rebuild", daemon=True).start()

    def build(self) -> None:
        """Build the graph (in the calling thread; :meth:`start` runs it in another)."""
        graph = self._new_graph(max(1, len(self._rows)))
        for start in range(0, len(self._rows), CHUNK):
            rows = self._rows[start:start + CHUNK]
            vectors = self._to_graph(self._desc16[rows].astype(np.float32))
            graph.add_items(vectors, self._labels[start:start + CHUNK],
                            num_threads=self._threads)
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
            if kind == "add":
                graph.add_items(vectors, labels, num_threads=1)
            else:
                for label in labels.tolist():
                    graph.mark_deleted(label)

    @property
    def graph(self) -> Any:
        return self._graph
