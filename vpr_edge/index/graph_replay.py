"""Bring a graph kept from an earlier save up to the records of the map it was opened with.

A save may hard-link ``index.hnsw`` from the map it replaces instead of writing the whole
graph again (``map_store``: the rows added since it was written are few). Its manifest then
gives the record rows that graph was written for (``index.rows``). Opening such a map loads
that graph and replays what came after it: each place whose latest row is a later one is
inserted (hnswlib's update for an id the graph holds already: a removed id added again,
which also lifts its deleted mark), and every place without a live row ends up marked
deleted. The graph then holds every id of the records, as one written by the save would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .map_store import damaged
from .records import PlaceRecords


def replay_later_rows(hnsw: Any, records: PlaceRecords, row_of: dict[int, int],
                      graph_rows: int, graph_marks: np.ndarray,
                      to_graph: Callable[[np.ndarray], np.ndarray],
                      insert: Callable[[Any, np.ndarray, np.ndarray], None],
                      reserve: Callable[[int], None], index_path: Path) -> int:
    """Insert into ``hnsw`` (read from ``index_path``, written for the first ``graph_rows``
    record rows, marking ``graph_marks`` deleted) the places of the later rows, and mark
    deleted every place without a live row; return how many places were inserted.

    ``to_graph`` makes graph vectors of float32 descriptors, ``insert(hnsw, vectors,
    labels)`` adds them, ``reserve(elements)`` grows the graph's capacity. A live place the
    file marks deleted and no later row re-inserts is damage (only a writer's bug could make
    it: both files passed their checksums): :class:`~vpr_edge.errors.MapCorruptError`.
    """
    ids = records.ids
    rows = np.arange(graph_rows, records.rows)
    latest = rows[[row_of[int(ids[r])] == r for r in rows.tolist()]] if rows.size else rows
    labels = ids[latest].astype(np.uint64)
    if latest.size:
        fresh = np.isin(labels, ids[:graph_rows].astype(np.uint64), invert=True)
        reserve(int(hnsw.element_count) + int(np.count_nonzero(fresh)))
        insert(hnsw, to_graph(records.desc16[latest].astype(np.float32)), labels)
    live = set(ids[records.live_rows()].tolist())
    still_marked = set(graph_marks.tolist()) - set(labels.tolist())
    wrongly = still_marked & live
    if wrongly:
        raise damaged(index_path, f"it marks {len(wrongly)} live place(s) deleted (e.g. "
                      f"{min(wrongly)}), which removed.npy does not remove")
    for label in sorted(set(ids[: records.rows].tolist()) - live - still_marked):
        hnsw.mark_deleted(label)
    return int(latest.size)
