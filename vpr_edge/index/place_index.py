"""``PlaceIndex``: the places a robot has seen, searchable by descriptor, saved as a map.

An hnswlib graph (inner product on L2-normalised float32 descriptors) plus per-place records
(id, stamp, pose, metadata, float16 descriptor). Descriptors longer than
``IndexSettings.search_dim`` enter the graph randomly projected, and graph candidates are then
re-scored from the float16 descriptors. Exact numpy search replaces the graph for small maps,
and the same query semantics hold in every mode. Queries run concurrently with each
other; adds, removals and rebuilds take turns with them (a readers-writer lock), because
hnswlib's search is not safe against inserts.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import logging
import math
import numbers
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union

import hnswlib
import numpy as np

from ..errors import (
    InvalidInputError,
    MapCorruptError,
    MapError,
    OutOfMemoryError,
    out_of_memory,
)
from ..interrupts import signals_held
from ..paths import user_path
from . import atomic_dir, exact, float16_scores, float32_scores, map_store, validate
from .graph_rebuild import GraphRebuild, RebuildStopped
from .graph_replay import replay_later_rows
from .map_format import MAX_DIM, MAX_PROVENANCE_CHARS, MAX_PROVENANCE_DEPTH
from .projection import count_sketch, project
from .records import PlaceRecords
from .results import PlaceMatch, PlaceRecord
from .rwlock import ReadWriteLock
from .settings import (
    COMPACT_MAX_LIVE,
    COMPACT_MIN_REMOVED,
    REFINE_MAX_PLACES,
    REFINE_PER_ADD,
    SPACE,
    IndexSettings,
)

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
IdFilter = Callable[[int], bool]
#: what ``PlaceIndex._seen`` holds for a path that held no map when the index was made for it
NO_MAP = "<no map>"
#: a background rebuild replays the changes made meanwhile outside the lock, round after
#: round, until at most CATCH_UP_LEFT are left (or after CATCH_UP_ROUNDS rounds), then swaps
CATCH_UP_ROUNDS = 8
CATCH_UP_LEFT = 16
#: ``mode="auto"``: a map searched exactly keeps its float32 copy up to this many times
#: ``IndexSettings.exact_limit``. Without the margin a map held at the limit (a sliding window
#: of the last 2000 places: add one, remove one) dropped the copy at every add and made it again at
#: every remove (57 MB at 7168-d, 41 ms per remove instead of 0.05)
EXACT_KEEP_FACTOR = 1.1
#: exclusions (``exclude_newest``, ``exclude_after_stamp``, ``exclude_ids``, ``only_ids``) that
#: leave few places are answered by scoring those places, not by a graph search, which walks past
#: the excluded places until it has found enough allowed ones (the whole graph, asking the filter
#: at each, when there are fewer). Scoring ``allowed`` places costs about ``allowed * dim``; the
#: graph search about ``1 / share`` (``share = allowed / live``), up to the whole graph: so they
#: are scored when ``allowed * dim * share`` is at most this. 30k places, 7168-d: 2000 allowed 3.5
#: ms instead of 6.8, 40 allowed 0.10 ms instead of 27 (docs/index.md).
FILTERED_EXACT_BUDGET = 1_000_000
#: and only when ``allowed * dim`` is at most this many times the excluded live places: a
#: filtered graph search walks past at most those (past every one when they are near the query,
#: as a loop closure's newest places), 0.2-0.3 us each (hnswlib asks the filter at each),
#: while scoring costs 0.25-0.5 ns a value (32 to 4096 dims, the development VM). So a graph
#: search that excludes few places stays one at any dimension: at 30k 32-d places, with the
#: newest 50 and the last 1% excluded, 0.13 ms searched against 0.51 ms scored (3500 256-d:
#: 0.06 against 0.28), and excluding no live place it is the plain query
FILTERED_SCAN_PER_EXCLUDED = 600
#: exclude_ids / only_ids of more than 1/IDS_IN_BULK_SHARE of the map's rows are looked up in
#: bulk (np.isin over the map's ids), fewer one by one: the two cost the same at about 1000 ids
#: of 20k places and 3000 of 100k
IDS_IN_BULK_SHARE = 25
#: a scan without rerank re-scores at most this many of the places float16 rounding could have
#: moved past the k-th from the graph's float32 vectors (hnswlib's get_items: 20 us a place at
#: 512-d): a robot standing still for 1000 keyframes left 1000 within the margin, 20 ms a query.
#: Beyond it, near-duplicates keep their float16 order (they differ by under 1e-3).
RESCORE_MAX_PLACES = 64
#: an opened graph's vectors are compared with the stored descriptors of this many places
GRAPH_SAMPLE = 32
#: float16 storage keeps a graph vector's cosine to its descriptor's above 0.9999
GRAPH_MIN_COSINE = 0.99


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _new_hnsw(dim: int, settings: IndexSettings, capacity: int) -> Any:
    index = hnswlib.Index(space=SPACE, dim=dim)
    index.init_index(max_elements=max(1, capacity), M=settings.M,
                     ef_construction=settings.ef_construction,
                     random_seed=settings.random_seed)
    index.set_ef(settings.ef)
    return index


def _save_failed(target: Path, exc: OSError) -> MapError:
    """The error for a save that failed writing its temp folder (deleted by then): the cause
    without that folder's path, what the save left, and the fix for the cause."""
    what = exc.strerror or str(exc)
    if isinstance(exc.filename, (str, bytes)):
        what += f", writing {Path(os.fsdecode(exc.filename)).name}"
    fix = atomic_dir.SAVE_FIXES.get(exc.errno, "fix the cause and save again")
    return MapError(f"{target}: saving the map failed ({what}); {_previous(target)} ({fix})")


def _previous(target: Path) -> str:
    """What a failed save left at ``target``: the map saved before, or nothing."""
    return ("the map saved before is unchanged" if atomic_dir.resolve_for_read(target)
            else "nothing was written there")


@contextlib.contextmanager
def _save_step(target: Path) -> Iterator[None]:
    """Steps of a save before its temp folder exists (taking the lock, repairing what an
    interrupted save left, making the temp folder): an OSError there (no permission, a
    read-only file system) is a :class:`MapError`."""
    try:
        yield
    except OSError as exc:
        raise MapError(f"{target}: cannot save the map there ({exc}); {_previous(target)} "
                       "(fix the cause and save again)") from exc


def _finite_or_none(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{what}: expected a float or None, got {value!r}")
    return validate.finite_float(value, what)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _memory_for(what: str) -> Iterator[None]:
    """Turn running out of memory (numpy's MemoryError, hnswlib's "Not enough memory")
    into :class:`OutOfMemoryError` naming ``what`` needed it."""
    try:
        yield
    except (MemoryError, RuntimeError, OSError) as exc:
        if not out_of_memory(exc):
            raise
        raise OutOfMemoryError(f"{what}: not enough memory ({exc}); nothing was changed, in "
                               "memory or on disk: free memory or raise the process's limit "
                               "(ulimit -v), or keep a smaller map") from exc


class PlaceIndex:
    """Places searchable by descriptor, with records, filters and crash-safe persistence.

    >>> import numpy as np
    >>> index = PlaceIndex(4, fingerprint="model-sha256")
    >>> ids = index.add(np.eye(4, dtype=np.float32), stamps=[0.0, 1.0, 2.0, 3.0])
    >>> [m.place_id for m in index.query(np.eye(4, dtype=np.float32)[2], k=1)]
    [2]
    """

    def __init__(self, dim: int, *, fingerprint: str | None = None,
                 settings: IndexSettings | None = None) -> None:
        if (not isinstance(dim, numbers.Integral) or isinstance(dim, bool)
                or not 1 <= dim <= MAX_DIM):  # a longer one could be saved, never opened
            raise InvalidInputError(f"dim must be an int in [1, {MAX_DIM}], got {dim!r}")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise InvalidInputError(f"fingerprint must be a string (the model's), got "
                                    f"{type(fingerprint).__name__}")
        settings = settings if settings is not None else IndexSettings()
        if not isinstance(settings, IndexSettings):
            raise InvalidInputError("settings must be an IndexSettings")
        self._dim = int(dim)
        self._fingerprint = fingerprint
        self._settings = settings
        self._lock = ReadWriteLock()
        self._save_mutex = threading.Lock()
        self._records = PlaceRecords(self._dim, settings.initial_capacity)
        self._row_of: dict[int, int] = {}  # id -> latest row (live or removed)
        self._live = 0
        self._next_id = 0
        self._added = 0  # places added to this object (made or opened), see `added`
        self._graph_dim = settings.graph_dim(self._dim)
        self._projection = (None if self._graph_dim == self._dim
                            else count_sketch(self._dim, self._graph_dim))
        self._hnsw = _new_hnsw(self._graph_dim, settings, settings.initial_capacity)
        self._graph_epoch = 0  # bumped when the graph is replaced: a saved one is no base then
        self._exact: np.ndarray | None = None  # float32 rows, kept only while exact search is used
        self._background: GraphRebuild | None = None  # a graph being rebuilt in a thread
        self._stopped: list[GraphRebuild] = []  # those plain rebuilds stopped, still running
        self._broken: str | None = None  # what left the index inconsistent (never saved then)
        self._rebuilt_at = 0  # places in the graph at its last random-order build
        # places of small adds not yet re-inserted: (ids, first row, graph vectors), oldest first
        self._unrefined: deque[tuple[list[int], int, np.ndarray]] = deque()
        self._warned_tombstones = False  # said that many removed places are held
        self._layout = 0  # bumped when rows are renumbered (rebuild): saved files are stale
        self._disk: tuple[int, map_store.DiskState] | None = None
        self._path: Path | None = None
        # real map path -> manifest_digest of the save this index read or wrote there: a
        # different one on disk means another writer saved since (its places would be lost)
        self._seen: dict[Path, str | None] = {}
        self._created_at = _now()
        self._saved_at: str | None = None  # the manifest time of the save read or written last
        self._provenance: dict[str, Any] = {}
        self._sync_exact()
        self._apply_ef()

    # -- properties ----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str | None:
        return self._fingerprint

    @property
    def settings(self) -> IndexSettings:
        return self._settings

    @property
    def path(self) -> Path | None:
        """Where the map was last opened from or saved to (the default for :meth:`save`)."""
        return self._path

    @property
    def added(self) -> int:
        """How many places were added to this index since it was made or opened."""
        return self._added

    @property
    def provenance(self) -> dict[str, Any]:
        """What made the descriptors besides the model (a copy), saved with the map: e.g.
        ``Localizer`` records ``{"resizers": ["opencv"]}``, the library that resized the
        frames (the model's fingerprint covers the rest)."""
        with self._lock.read():
            return copy.deepcopy(self._provenance)

    def set_provenance(self, key: str, value: Any) -> None:
        """Record ``value`` (JSON: numbers, strings, lists, dicts) under ``key`` in
        :attr:`provenance`; saved by the next :meth:`save`."""
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"provenance key must be a non-empty string, got {key!r}")
        if validate.nested_deeper_than(value, MAX_PROVENANCE_DEPTH):  # (json recurses)
            raise InvalidInputError(f"provenance {key!r} is nested more than "
                                    f"{MAX_PROVENANCE_DEPTH} levels deep (or circular)")
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"provenance {key!r} must be plain JSON ({exc})") from exc
        if len(text) > MAX_PROVENANCE_CHARS:  # every save writes it in the manifest
            raise InvalidInputError(
                f"provenance {key!r} is {len(text)} characters of JSON, more than "
                f"{MAX_PROVENANCE_CHARS}: provenance is for a few facts about the map (keep "
                "bulk data in a file next to it and record its name)")
        with self._lock.write():
            self._provenance[key] = json.loads(text)

    @property
    def pose_dim(self) -> int:
        """How many values each pose of this map has (0 until the first pose is added);
        :meth:`add` refuses poses of another length."""
        return self._records.pose_dim

    def __len__(self) -> int:
        return self._live

    def __contains__(self, place_id: object) -> bool:
        if not isinstance(place_id, numbers.Integral) or isinstance(place_id, bool):
            return False
        with self._lock.read():
            row = self._row_of.get(int(place_id))
            return row is not None and not self._records.removed[row]

    def __repr__(self) -> str:
        return (f"PlaceIndex(dim={self._dim}, places={self._live}, "
                f"fingerprint={self._fingerprint!r}, path={self._path})")

    # -- change --------------------------------------------------------------------------
    def add(self, descriptors: Any, *, ids: Any = None, stamps: Any = None, poses: Any = None,
            meta: Any = None) -> list[int]:
        """Add places; return their ids.

        Args:
            descriptors: ``(dim,)`` for one place or ``(n, dim)`` for a batch; float,
                L2-normalised (norm within ``1 +- settings.norm_tolerance``), finite.
            ids: None to number places automatically (from ``next_id``, never reused), or an
                int (one place) / a sequence of ``n`` distinct non-negative ints. An id that is
                live already is refused; a removed id may be added again.
            stamps: float seconds or None, one per place (a scalar for one place).
            poses: a sequence of floats (e.g. ``x, y, z, qx, qy, qz, qw``) or None per place;
                all poses in a map have the same length.
            meta: a JSON-serialisable dict (string keys, no NaN) or None per place; stored
                as JSON, so tuples come back as lists.

        Raises:
            InvalidInputError: bad descriptors, ids, stamps, poses or metadata; nothing added.
            OutOfMemoryError: no memory for the new places; nothing added. When hnswlib's
                own insert runs out halfway, the graph is first rebuilt from the places
                before the add (the index holds still meanwhile: 5 s at 10k places), so the
                map saves as before; only if that rebuild fails too is a :class:`MapError`
                raised, and :meth:`save` refuses from then on.
        """
        s = self._settings
        desc, single = validate.descriptors(descriptors, self._dim, s.norm_tolerance)
        n = desc.shape[0]
        given = None if ids is None else validate.id_list(ids, n)
        st = validate.stamps(stamps, n, single)
        ps = validate.poses(poses, n, single)
        ms = validate.metas(meta, n, single)
        with self._lock.write():
            self._records.check_poses(ps)
            if given is None:
                if self._next_id + n - 1 > validate.MAX_ID:
                    raise InvalidInputError("automatic ids exhausted (2**63 - 1); pass ids=")
                new_ids = list(range(self._next_id, self._next_id + n))
            else:
                removed = self._records.removed
                clash = [i for i in given
                         if (r := self._row_of.get(i)) is not None and not removed[r]]
                if clash:
                    raise InvalidInputError(
                        f"ids: {clash[:10]} already in the index (ids are unique; remove() "
                        "the old place first to replace it)"
                    )
                new_ids = given
            fresh = sum(1 for i in new_ids if i not in self._row_of)
            rec = self._records
            width = 0 if rec.poses is not None else next(
                (len(p) for p in ps if p is not None), 0)
            what = f"add() of {n} place(s) to a map of {rec.rows} rows"
            with _memory_for(what):
                # memory first, before any change: out of it, nothing has changed
                vectors, desc16 = self._to_graph(desc), desc.astype(np.float16)
                self._reserve(self._hnsw.element_count + fresh)
                rec.reserve(rec.rows + n, s.growth_factor, width)
                if self._exact is not None and self._exact.shape[0] < rec.capacity:
                    grown = np.zeros((rec.capacity, self._dim), dtype=np.float32)
                    grown[:rec.rows] = self._exact[:rec.rows]
                    self._exact = grown
            labels = np.asarray(new_ids, dtype=np.uint64)
            with signals_held():  # (see _all_or_broken)
                with _memory_for(what):
                    self._insert_or_restore(vectors, labels, fresh == n, what)
                with self._broken_if_raised("add()"):
                    start = self._add_locked(desc, desc16, vectors, labels, st, ps, ms)
                self._refine_previous((new_ids, start) if n <= REFINE_MAX_PLACES else None,
                                      vectors, n)
            reorder = n == 1 and self._graph_outgrew_its_order()
        if reorder:
            log.info("the graph grew to %d places one by one: rebuilding it in the background "
                     "(IndexSettings.rebuild_growth)", self._live)
            self._start_background_rebuild(1)
        return new_ids

    @contextlib.contextmanager
    def _all_or_broken(self, what: str) -> Iterator[None]:
        """Around a change of several structures (caller holds the write lock). Ctrl-C and
        SIGTERM wait until it is whole (:func:`~vpr_edge.interrupts.signals_held`); an
        exception raised halfway all the same (MemoryError, an interrupt in another way)
        leaves them disagreeing, so :meth:`save` then refuses, instead of replacing a sound
        map on disk with one that does not open."""
        with signals_held(), self._broken_if_raised(what):
            yield

    @contextlib.contextmanager
    def _broken_if_raised(self, what: str) -> Iterator[None]:
        """:meth:`_all_or_broken` without holding the signals (the caller holds them)."""
        try:
            yield
        except BaseException as exc:
            self._broken = f"{what} was interrupted halfway ({type(exc).__name__})"
            raise

    def _insert_or_restore(self, vectors: np.ndarray, labels: np.ndarray, all_fresh: bool,
                           what: str) -> None:
        """Insert an add's places into the graph (caller holds the write lock and the
        signals, before the records change). hnswlib's insert can fail halfway: a malloc
        inside it runs out of memory ("Not enough memory: addPoint failed to allocate
        linklist", a MemoryError) after the place's label is in the graph, half made, and
        with several threads other places of the batch may be in too. A label cannot be
        taken out of an hnswlib graph again, and saving a half-made place would read links
        that do not exist; so unless the graph is certainly untouched (no new label in it,
        and no removed id of the batch that the insert could have marked live again), it is
        rebuilt from the records, which hold the places before this add, and the error is
        raised: the index is as before the add (the graph's vectors rounded to float16, as
        after :meth:`rebuild`) and saves. Only if that rebuild fails too does :meth:`save`
        refuse."""
        held = int(self._hnsw.element_count)
        try:
            self._insert(self._hnsw, vectors, labels)
        except BaseException as exc:
            if int(self._hnsw.element_count) != held or not all_fresh:
                self._restore_graph(what, exc)
            raise

    def _restore_graph(self, what: str, cause: BaseException) -> None:
        """Replace the graph with one built from the records (see
        :meth:`_insert_or_restore`): their live places, and their removed ones marked
        deleted, rows unchanged (the saved files stay valid)."""
        rec = self._records
        failure = f"{type(cause).__name__}: {cause}"
        log.warning("%s: hnswlib's insert failed halfway (%s); rebuilding the graph from the "
                    "%d places before it", what, failure, self._live)
        job = self._rebuild_job(rec, self._threads(rec.rows), removed_too=True)
        try:
            job.build()
        except BaseException as exc:
            self._broken = (f"{what} failed halfway in hnswlib's insert, and rebuilding the "
                            f"graph without it failed too ({type(exc).__name__})")
            raise MapError(f"{what}: hnswlib's insert failed halfway ({failure}), and rebuilding "
                           f"the graph from the places before it failed too ({exc}): this "
                           "index cannot be saved; the map saved before is unchanged (free "
                           "memory and open it again; the places added since its last save "
                           "are lost)") from exc
        self._use_graph(job.graph)
        self._rebuilt_at = job.places
        self._unrefined.clear()  # every place was just inserted, in a random order
        self._apply_ef()

    def _add_locked(self, desc: np.ndarray, desc16: np.ndarray, vectors: np.ndarray,
                    labels: np.ndarray, st: Any, ps: Any, ms: Any) -> int:
        """:meth:`add`'s change of the index after the graph's insert of ``labels`` (caller
        holds the write lock, in :meth:`_broken_if_raised`, and made room: the records and
        the exact copy hold ``n`` more, ``desc16`` and the graph's ``vectors`` are made);
        returns the first new row."""
        n = len(labels)
        new_ids = labels.tolist()
        if self._background is not None:
            self._background.record_add(labels, vectors)
        start = self._records.append(new_ids, desc16, st, ps, ms, self._settings.growth_factor)
        for j, pid in enumerate(new_ids):
            self._row_of[pid] = start + j
        self._live += n
        self._added += n
        self._next_id = max(self._next_id, max(new_ids) + 1)
        if self._exact is not None:
            self._exact[start:start + n] = desc
        self._sync_exact()
        self._apply_ef()
        return start

    def remove(self, ids: Any) -> int:
        """Remove places by id (an int or a sequence); return how many were removed.

        All or nothing: an id that is not a live place raises :class:`InvalidInputError`
        and nothing is removed. Removal is a tombstone (hnswlib ``mark_deleted``): the place's
        row and graph node stay, searched past, until a plain :meth:`rebuild` drops them.
        Held tombstones slow queries and take memory (a map kept at 1000 live places while
        9600 were removed and added searched 29x slower). So once at least
        :data:`~vpr_edge.index.settings.COMPACT_MIN_REMOVED` (1000) removed places are held,
        more than the live ones, a map of at most
        :data:`~vpr_edge.index.settings.COMPACT_MAX_LIVE` (2000) live places, or one searched
        exactly, is rebuilt by this call (0.2 s at 1000 live 7168-d places; it stops a
        background rebuild, as a plain :meth:`rebuild` does), and a larger one logs a
        warning: call :meth:`rebuild` at a quiet moment (it holds the index: 5 s at 10k
        places).
        """
        wanted = validate.id_list(ids, None)
        if not wanted:
            return 0
        with self._lock.write():
            removed = self._records.removed
            unknown = [i for i in wanted
                       if (r := self._row_of.get(i)) is None or removed[r]]
            if unknown:
                raise InvalidInputError(f"remove: no live place with id(s) {unknown[:10]} "
                                        "(never added, or already removed); nothing removed")
            with self._all_or_broken("remove()"):
                for pid in wanted:
                    self._hnsw.mark_deleted(pid)
                    removed[self._row_of[pid]] = True
                if self._background is not None:
                    self._background.record_remove(wanted)
                self._live -= len(wanted)
            self._drop_tombstones_if_many()
            self._sync_exact()
            self._apply_ef()
        return len(wanted)

    def _drop_tombstones_if_many(self) -> None:
        """See :meth:`remove` (caller holds the write lock)."""
        held = self._records.rows - self._live
        if held < COMPACT_MIN_REMOVED or held <= self._live:
            return
        if self._wants_exact() or self._live <= COMPACT_MAX_LIVE:
            log.info("dropping %d removed places (%d live) from the index", held, self._live)
            self._plain_rebuild_locked("remove() dropped the removed places (a plain rebuild)")
        elif not self._warned_tombstones:
            self._warned_tombstones = True
            log.warning("the index holds %d removed places beside %d live ones: queries walk "
                        "past them and slow down, and memory grows, until PlaceIndex.rebuild() "
                        "drops them (it holds the index while it runs: call it at a quiet "
                        "moment)", held, self._live)

    def rebuild(self, *, background: bool = False, threads: int = 1) -> Future | None:
        """Rebuild the graph from the stored float16 descriptors, inserting the places in a
        random order, which makes a stronger graph than places added one by one along a route
        (``vpr-edge map build`` rebuilds a map it created). Vectors in the graph become the
        float16-rounded descriptors (scores move by about 1e-3).

        Args:
            background: False (default): rebuild now, holding the index (adds and queries
                wait: 5 s at 10k places, 71 s at 100k on two cores), and drop removed places
                for good (the next save then rewrites every file; otherwise only the graph).
                True: build the new graph in a daemon thread while the index stays in use,
                and swap it in when done (adds and removals made meanwhile are replayed on
                it); returns a :class:`~concurrent.futures.Future` that resolves to the
                number of places rebuilt (the one already running, if any). Removed places
                keep their records (and a deleted slot in the new graph) until a plain
                ``rebuild()``; a plain ``rebuild()`` called meanwhile replaces it, and its
                future then raises ``RebuildStopped``.
            threads: hnswlib threads for a background build (default 1: the other cores stay
                with inference).
        """
        if background:
            if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
                raise InvalidInputError(f"threads must be a positive int, got {threads!r}")
            return self._start_background_rebuild(threads)
        with self._lock.write():
            self._plain_rebuild_locked()
        return None

    def _plain_rebuild_locked(self, why: str = "a plain rebuild() replaced it") -> None:
        if self._background is not None:  # its snapshot would undo this rebuild's rows
            self._background.stop(why)
            # its thread may run on a little while (wait_for_rebuild waits for it)
            self._stopped = [job for job in self._stopped if not job.future.done()]
            self._stopped.append(self._background)
            self._background = None  # a background rebuild asked for next is a new one
        self._rebuild_locked()

    def wait_for_rebuild(self, timeout: float | None = None) -> bool:
        """Wait for a background rebuild, if one runs, and for the thread of one a plain
        ``rebuild()`` stopped, until its future resolves; False if ``timeout`` (s) ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for job in (*self._stopped, self._background):
            if job is None:
                continue
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                job.future.exception(left)
            except FutureTimeoutError:
                return False
        return True

    def _graph_outgrew_its_order(self) -> bool:
        """True when places added one by one have grown the graph past ``rebuild_growth``
        times its last random-order size (caller holds the write lock)."""
        growth = self._settings.rebuild_growth
        if growth is None or self._background is not None or self._wants_exact():
            return False
        base = max(self._rebuilt_at, self._settings.exact_limit(self._dim), 1)
        return self._live >= growth * base

    def _rebuild_job(self, rec: PlaceRecords, threads: int, *, removed_too: bool = False
                     ) -> GraphRebuild:
        """A new graph of the live places of ``rec``, in :meth:`_insertion_order`.
        ``removed_too`` (a background rebuild, which keeps the records as they are): also
        the removed places the records still hold, marked deleted, so that the graph keeps
        a label for every id the records know, as :meth:`add` (which counts the new labels
        it needs room for) and opening a saved map expect."""
        if removed_too:
            rows = np.fromiter(self._row_of.values(), dtype=np.int64, count=len(self._row_of))
        else:
            rows = rec.live_rows()
        rows = rows[self._insertion_order(len(rows))]
        settings, graph_dim = self._settings, self._graph_dim
        return GraphRebuild(lambda n: _new_hnsw(graph_dim, settings, n), self._to_graph,
                            rec.desc16, rows, rec.ids[rows], threads,
                            deleted=rec.ids[rows[rec.removed[rows]]])

    def _start_background_rebuild(self, threads: int) -> Future:
        with self._lock.write():
            if self._background is not None:
                return self._background.future
            job = self._rebuild_job(self._records, threads, removed_too=True)
            self._background = job
        job.start(self._swap_in)
        return job.future

    def _swap_in(self, job: GraphRebuild) -> None:
        """Called by the rebuild's thread when its graph is built (or its build failed):
        catch up with the changes made meanwhile, in rounds outside the lock while many
        arrive, then swap the new graph in under the write lock."""
        error = job.error
        try:
            for _ in range(CATCH_UP_ROUNDS):
                if error is not None:
                    break
                with self._lock.write():
                    changes = job.take_changes()
                if len(changes) <= CATCH_UP_LEFT:
                    with self._lock.write():
                        job.replay(changes + job.take_changes())
                        self._swap_locked(job)
                    break
                job.replay(changes)
            else:
                with self._lock.write():
                    job.replay(job.take_changes())
                    self._swap_locked(job)
        except RebuildStopped as exc:  # exiting, or replaced by a plain rebuild()
            error = exc
        except BaseException as exc:  # the old graph stays
            log.warning("background graph rebuild could not be swapped in: %s", exc)
            error = exc
        finally:
            with self._lock.write():
                if self._background is job:  # not a newer one started after a plain rebuild
                    self._background = None
        if error is not None:
            job.future.set_exception(error)
            return
        log.info("background graph rebuild of %d places swapped in", job.places)
        job.future.set_result(job.places)

    def _swap_locked(self, job: GraphRebuild) -> None:
        job.check_stop()  # a plain rebuild() may have replaced it while it waited for the lock
        self._use_graph(job.graph)  # sized for what it holds; add() grows it as the old one
        self._apply_ef()
        self._rebuilt_at = job.places

    def set_ef(self, ef: int) -> None:
        """Change the search candidate-list size (saved in the manifest on the next save).
        With ``settings.ef_scaling`` it is the most the search uses (smaller maps use less,
        :meth:`IndexSettings.search_ef`); ``info()["ef_in_use"]`` says what it uses now."""
        settings = dataclasses.replace(self._settings, ef=ef)
        with self._lock.write():
            self._settings = settings
            self._apply_ef()

    # -- read ----------------------------------------------------------------------------
    def get(self, place_id: int) -> PlaceRecord:
        """The record of a live place; :class:`InvalidInputError` for an unknown id."""
        pid = validate.place_id(place_id, "place_id")
        with self._lock.read():
            row = self._row_of.get(pid)
            if row is None or self._records.removed[row]:
                raise InvalidInputError(f"no live place with id {pid}")
            return self._records.record(row)

    def ids(self) -> list[int]:
        """Ids of the live places, in the order they were added."""
        with self._lock.read():
            return self._records.ids[self._records.live_rows()].tolist()

    def query(self, descriptors: Any, k: int = 5, *, min_score: float | None = None,
              exclude_ids: Iterable[int] | None = None,
              exclude_after_stamp: float | None = None, exclude_newest: int = 0,
              only_ids: Iterable[int] | None = None, filter: IdFilter | None = None,
              rerank: bool | None = None) -> list[PlaceMatch] | list[list[PlaceMatch]]:
        """The ``k`` most similar live places, best first.

        Args:
            descriptors: ``(dim,)`` (returns a list of matches) or ``(n, dim)`` (returns one
                list per row); validated like :meth:`add`.
            k: at most this many matches (fewer when fewer places pass the filters).
            min_score: drop matches scoring below this (cosine similarity).
            exclude_ids: place ids never returned.
            exclude_after_stamp: places stamped later than this are never returned (places
                without a stamp are kept). For loop closure: ``now - window_seconds``.
            exclude_newest: the places added by the last ``exclude_newest`` add rows are
                never returned (a frame-count window; removed places still count, until a
                plain :meth:`rebuild` drops their rows: the window then reaches back over as
                many older places, so it never excludes less).
            only_ids: only these places may be returned (ids not in the map are ignored): a
                search restricted to a few candidates, e.g. those near a pose prior. Few
                places are scored one by one, in well under a millisecond, where a ``filter``
                passing as few takes a graph search that walks the whole map.
            filter: ``filter(place_id) -> bool``; False excludes the place. It may call
                :meth:`get`, not :meth:`add`/:meth:`remove`. It is asked about each place the
                graph search examines: one that passes few places is slow (``only_ids``).
            rerank: fetch ``k * settings.rerank_factor`` HNSW candidates and re-score them
                from the stored float16 descriptors (None = ``settings.rerank``; ignored by
                exact search; always on when the graph is projected, ``settings.search_dim``).

        Exclusions happen inside the search (hnswlib's ``filter``, or a mask in exact mode,
        or, when ``exclude_*``/``only_ids`` leave few places, a scan of those):
        ``k`` allowed places come back even when the most similar ones are all excluded.
        """
        q, single = validate.descriptors(descriptors, self._dim, self._settings.norm_tolerance,
                                         "query descriptors")
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
            raise InvalidInputError(f"k must be a positive int, got {k!r}")
        k = int(k)
        min_score = _finite_or_none(min_score, "min_score")
        cutoff = _finite_or_none(exclude_after_stamp, "exclude_after_stamp")
        if (not isinstance(exclude_newest, numbers.Integral) or isinstance(exclude_newest, bool)
                or exclude_newest < 0):
            raise InvalidInputError(f"exclude_newest must be an int >= 0, got {exclude_newest!r}")
        excluded = (None if exclude_ids is None
                    else validate.id_set(exclude_ids, "exclude_ids") or None)
        only = None if only_ids is None else validate.id_set(only_ids, "only_ids")
        if filter is not None and not callable(filter):
            raise InvalidInputError("filter must be a callable place_id -> bool")
        if rerank is not None and not isinstance(rerank, bool):
            raise InvalidInputError("rerank must be True, False or None")
        use_rerank = self._settings.rerank if rerank is None else rerank
        with self._lock.read():
            found = self._search(q, k, excluded, cutoff, int(exclude_newest), only, filter,
                                 use_rerank)
            rec = self._records
            out = [[PlaceMatch(*rec.fields(row, score))
                    for row, score in hits if min_score is None or score >= min_score]
                   for hits in found]
        return out[0] if single else out

    def info(self) -> dict[str, Any]:
        """Sizes, settings and memory use, as a JSON-friendly dict."""
        with self._lock.read():
            rec = self._records
            per_element = self._graph_dim * 4 + (2 * self._settings.M) * 4 + 4 + 8
            hnsw_bytes = int(self._hnsw.max_elements) * per_element
            rec_bytes = rec.capacity * (2 * self._dim + 17 + 8 * rec.pose_dim)
            exact_bytes = 0 if self._exact is None else int(self._exact.nbytes)
            return {
                "dim": self._dim,
                "graph_dim": self._graph_dim,
                "space": SPACE,
                "places": self._live,
                "rows": rec.rows,
                "removed_rows": rec.rows - self._live,
                "next_id": self._next_id,
                "capacity": int(self._hnsw.max_elements),
                "search": "exact" if self._exact is not None else "hnsw",
                "exact_limit": self._settings.exact_limit(self._dim),
                "ef_in_use": int(self._hnsw.ef),
                "background_rebuild": self._background is not None,
                "provenance": copy.deepcopy(self._provenance),
                "fingerprint": self._fingerprint,
                "path": None if self._path is None else str(self._path),
                "saved_at": self._saved_at,
                # the rows the map's index.hnsw on disk was written for (fewer than "rows":
                # a save kept it, IndexSettings.graph_resave); None: not saved as it is now
                "graph_file_rows": None if self._disk is None else self._disk[1].graph_rows,
                "pose_dim": rec.pose_dim,
                "settings": dataclasses.asdict(self._settings),
                "memory_bytes": {
                    "hnsw": hnsw_bytes, "records": rec_bytes, "exact": exact_bytes,
                    "total": hnsw_bytes + rec_bytes + exact_bytes,
                    # per place at full capacity, without Python objects (ids dict, metadata)
                    "per_place": per_element + 2 * self._dim + 17 + 8 * rec.pose_dim
                    + (4 * self._dim if self._exact is not None else 0),
                },
            }

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: PathLike | None = None) -> Path:
        """Save the map atomically to ``path`` (default: where it was opened/saved).

        A crash at any moment leaves the previous or the new map complete on disk (see
        ``atomic_dir``). Queries continue during a save; adds wait while the data files are
        written (not while they are hashed, fsynced and swapped in). Refuses to replace a
        directory that is not a vpr-edge map (:class:`MapError`), or the map of another
        model (:class:`ModelMismatchError`). Returns the map's path.
        """
        if path is None:
            if self._path is None:
                raise InvalidInputError("save(): no path given, and this index was neither "
                                        "opened from nor saved to one")
            target = self._path
        else:
            target = user_path(path)
        real = atomic_dir.real_target(target)  # through a symbolic link: replace what it names
        if self._broken is not None:
            raise MapError(f"{target}: not saved: {self._broken}, so this index's parts "
                           "disagree; the map saved before is unchanged (open it again; the "
                           "places added since its last save are lost)")
        try:  # before the lock file (or a folder) is made (a file, a folder of other things)
            self._check_replaceable(target, real)
        except FileNotFoundError:  # another save is swapping the folders: see under the lock
            pass
        if not atomic_dir.is_dir(real.parent):
            try:
                real.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a file where a folder of the path should be, no right
                raise MapError(f"{target}: cannot make the folder {real.parent} for the map "
                               f"({exc}); choose another path") from exc
            atomic_dir.fsync_dir(real.parent.parent)
        with self._save_mutex, contextlib.ExitStack() as held:
            with _save_step(target):
                held.enter_context(atomic_dir.exclusive_lock(real))
            # again, now that no other save can be swapping the folders
            current = self._check_replaceable(target, real)
            seen = self._seen.get(real)
            now = map_store.manifest_digest(current)
            if seen is None and now is not None:
                raise MapError(
                    f"{target} holds a map that this index was not opened from; saving would "
                    "replace it and drop its places: open that map and add to it "
                    "(Localizer(model, path)), save to another path, or delete it first")
            if seen == NO_MAP and now is not None:
                raise MapError(
                    f"{target}: a map was saved there by another writer (a process, or another "
                    "PlaceIndex) after this index was made for that path, which held no map "
                    "then; saving now would replace it and drop its places: save to another "
                    "path, or open that map and add to it")
            if seen not in (None, NO_MAP) and now not in (None, seen):
                raise MapError(
                    f"{target} was saved by another writer (a process, or another PlaceIndex) "
                    "since this index opened or saved it; saving now would drop the places "
                    "that writer added: save to another path, or open the map again")
            with _save_step(target):
                atomic_dir.recover(real)
                tmp = atomic_dir.make_temp(real)
            digest = None
            try:
                with self._lock.long_read():  # adds wait; queries go on
                    layout = self._layout
                    previous = self._disk[1] if self._disk and self._disk[0] == layout else None
                    contents = map_store.MapContents(
                        records=self._records, hnsw=self._hnsw, dim=self._dim,
                        M=self._settings.M, ef_construction=self._settings.ef_construction,
                        ef=self._settings.ef, fingerprint=self._fingerprint, count=self._live,
                        next_id=self._next_id, created_at=self._created_at,
                        search_dim=None if self._projection is None else self._graph_dim,
                        provenance=dict(self._provenance), graph_epoch=self._graph_epoch,
                        graph_slack=0 if previous is None else self._settings.graph_slack(
                            previous.graph_rows))
                    pending = map_store.write_files(tmp, contents, real, previous)
                saved_at = _now()
                disk = map_store.finish(pending, real, saved_at)
                digest = map_store.manifest_digest(tmp)
                atomic_dir.commit(tmp, real)
                self._saved_as(target, real, (layout, disk), digest)
                self._saved_at = saved_at
            except BaseException as exc:
                if digest is not None and map_store.manifest_digest(real) == digest:
                    # renamed into place before the error (Ctrl-C, say): this save is done,
                    # and the next one must know the map as this index's own
                    self._saved_as(target, real, (layout, disk), digest)
                    self._saved_at = saved_at
                    raise
                atomic_dir.discard(tmp)
                if isinstance(exc, OSError):  # a full disk, no right to write, an I/O error
                    raise _save_failed(target, exc) from exc
                raise
            try:
                atomic_dir.settle(real)
            except OSError as exc:
                raise MapError(
                    f"{target}: the map was saved, but flushing the folder or deleting the "
                    f"previous save ({real.name}{atomic_dir.OLD_SUFFIX}) failed ({exc}); a power "
                    "cut now could bring back the previous save: fix the cause and save "
                    "again") from exc
        return target

    def _check_replaceable(self, target: Path, real: Path) -> Path:
        """Refuse a save to ``real`` that could not or must not replace what is there; return
        the map there now (``<map>``, or ``<map>.vpr-edge-old`` after an interrupted save),
        or ``real`` when none is."""
        problem = atomic_dir.replace_problem(real)
        current = atomic_dir.resolve_for_read(real)
        if problem:
            kept = "; the map saved before is unchanged" if current is not None else ""
            raise MapError(f"{target}: cannot save the map there: {problem}{kept}")
        outer = map_store.enclosing_map(real)  # (the next save of that map would refuse)
        if outer is not None:
            raise MapError(f"{target}: {map_store.inside_a_map(outer)}")
        if real.name.endswith(atomic_dir.OLD_SUFFIX) or atomic_dir.TMP_INFIX in real.name:
            raise MapError(f"{target}: a name vpr-edge keeps for what an interrupted save "
                           "leaves (the next save deletes such a folder); choose another")
        map_store.check_replaceable(current or real, self._fingerprint)
        return current or real

    def _saved_as(self, target: Path, real: Path, disk: tuple, digest: str) -> None:
        """The new map is in place: this index's own from here on, whatever follows."""
        self._disk = disk
        self._path = target
        self._seen[real] = digest

    def expect_new_map_at(self, path: PathLike) -> None:
        """Note that this index is to be saved at ``path``, which holds no map now (what
        :class:`~vpr_edge.Localizer` does for a map folder it starts). Should a map appear
        there before this index's first save there (another process building one at the same
        path), that save is refused instead of replacing it and dropping its places."""
        real = atomic_dir.real_target(user_path(path))
        map_store.check_replaceable(real, self._fingerprint)
        if atomic_dir.resolve_for_read(real) is None:
            self._seen.setdefault(real, NO_MAP)

    @classmethod
    def open(cls, path: PathLike, *, fingerprint: str | None = None,
             settings: IndexSettings | None = None, rebuild_if_corrupt: bool = False
             ) -> PlaceIndex:
        """Open a saved map, checking it completely first; nothing on disk is changed but
        ``<map>.lock``, created when missing (it makes a save starting meanwhile wait).

        Args:
            path: the map directory (or a symbolic link to it). If it is missing but
                ``<path>.vpr-edge-old`` exists (a save was interrupted between its two
                renames), that previous complete map is read.
            fingerprint: the model's fingerprint; a map made with another model raises
                :class:`ModelMismatchError`. None skips the check.
            settings: runtime settings (ef, mode, rerank, ...). ``M``, ``ef_construction``
                and ``search_dim`` always come from the map; ``ef`` too when None.
            rebuild_if_corrupt: rebuild a damaged/missing ``index.hnsw`` from the stored
                descriptors instead of refusing the map (the records must be intact).

        Raises:
            MapError: no map there. MapCorruptError: a file is missing, truncated, damaged or
            inconsistent (the message names it). MapVersionError: written by a newer
            vpr-edge. ModelMismatchError: another model's map.
        """
        target = user_path(path)
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise InvalidInputError("fingerprint must be a string")
        real = atomic_dir.real_target(target)
        with _memory_for(f"opening the map {target}"):  # not damage: it may be sound
            loaded = map_store.read_map(
                real, fingerprint=fingerprint, rebuild_if_corrupt=rebuild_if_corrupt,
                hnsw_factory=lambda dim: hnswlib.Index(space=SPACE, dim=dim))
        m = loaded.manifest
        if loaded.source != real:
            log.warning("%s is missing; opened %s, the complete map an interrupted save left "
                        "behind (the next save puts it back in place)", target, loaded.source)
        base = settings if settings is not None else IndexSettings(ef=m.ef)
        resolved = dataclasses.replace(base, M=m.M, ef_construction=m.ef_construction,
                                       search_dim=m.search_dim)
        self = cls(m.dim, fingerprint=m.fingerprint,
                   settings=dataclasses.replace(resolved, initial_capacity=1))
        self._settings = resolved
        self._records = loaded.records
        self._row_of = dict(zip(loaded.records.ids[: loaded.records.rows].tolist(),
                                range(loaded.records.rows)))
        self._live = m.count
        self._next_id = m.next_id
        self._created_at = m.created_at or self._created_at
        self._saved_at = m.updated_at or None
        self._provenance = dict(m.provenance)
        self._path = target
        self._seen[real] = loaded.manifest_digest
        problem = loaded.index_problem
        if loaded.hnsw is not None:
            self._hnsw = loaded.hnsw
            problem = self._replay_later_rows(loaded, target, rebuild_if_corrupt)
            if problem is None:
                problem = self._graph_disagreement(loaded.source)
            if problem is not None and not rebuild_if_corrupt:
                raise map_store.damaged(loaded.source / map_store.INDEX_NAME, problem)
        if problem is not None:
            log.warning("rebuilding index.hnsw of %s from the stored descriptors (%s)",
                        target, problem)
            self._rebuild_locked()
        else:
            self._disk = (self._layout, dataclasses.replace(loaded.disk,
                                                            graph_epoch=self._graph_epoch))
            self._rebuilt_at = m.count  # unknown order: count growth from here
        self._exact = None
        self._sync_exact()
        self._apply_ef()
        return self

    def _replay_later_rows(self, loaded: map_store.LoadedMap, target: Path,
                           rebuild_if_corrupt: bool) -> str | None:
        """Insert into the graph just read the places of the rows saved after it, if any
        (``graph_replay``; ``IndexSettings.graph_resave``); return why that graph is
        damaged when ``rebuild_if_corrupt`` (else raise), None when it is sound."""
        if loaded.graph_marks is None:
            return None
        tic = time.perf_counter()
        try:
            with _memory_for(f"opening the map {target}"):
                inserted = replay_later_rows(
                    self._hnsw, self._records, self._row_of, loaded.disk.graph_rows,
                    loaded.graph_marks, self._to_graph, self._insert, self._reserve,
                    loaded.source / map_store.INDEX_NAME)
        except MapCorruptError as exc:
            if not rebuild_if_corrupt:
                raise
            return getattr(exc, "cause", str(exc))
        if inserted:
            log.info("%s: inserted the %d places saved after its graph file (%.2f s)",
                     target, inserted, time.perf_counter() - tic)
        return None

    def _graph_disagreement(self, where: Path) -> str | None:
        """Why the opened graph's vectors are not those of the stored descriptors (None if
        they are), from up to :data:`GRAPH_SAMPLE` live places spread over the map: an
        ``index.hnsw`` of another map (its checksum made to match) opened cleanly and found
        the right place for 1 query in 50."""
        rec = self._records
        live = rec.live_rows()
        if live.size == 0:
            return None
        rows = live[np.linspace(0, live.size - 1, min(GRAPH_SAMPLE, live.size)).astype(int)]
        stored = rec.desc16[rows].astype(np.float32)
        norms = np.linalg.norm(stored, axis=1)
        if not (np.abs(norms - 1) < 0.01).all():  # (NaN and inf fail it too)
            raise map_store.damaged(where / "*.descriptors.npy", "a stored descriptor is not "
                                    "a unit vector (NaN, inf or zero values)")
        expected = self._to_graph(stored / norms[:, None])
        held = np.asarray(self._hnsw.get_items(rec.ids[rows].astype(np.uint64)), np.float32)
        cosines = np.einsum("ij,ij->i", held, expected) / np.maximum(
            np.linalg.norm(held, axis=1) * np.linalg.norm(expected, axis=1), 1e-12)
        if not (cosines >= GRAPH_MIN_COSINE).all():
            worst = int(np.argmin(np.nan_to_num(cosines, nan=-2.0)))
            return (f"its vectors are not those of the stored descriptors (cosine "
                    f"{cosines[worst]:.3f} for place {int(rec.ids[rows[worst]])}: the graph "
                    "of another map?)")
        return None

    # -- internals (callers hold the lock) -----------------------------------------------
    def _threads(self, rows: int) -> int:
        """hnswlib threads for a batch of ``rows``: ``settings.num_threads``, 0 = the CPUs
        this process may run on (hnswlib's own -1 counts every core, ignoring ``taskset``
        and cgroup CPU sets)."""
        return 1 if rows == 1 else (self._settings.num_threads or usable_cpus())

    def _insertion_order(self, n: int) -> np.ndarray:
        """The order in which ``n`` places enter the graph: seeded random. Places arrive in
        route order, and an HNSW graph built in route order is weaker: on 10k real-derived
        7168-d places, recall@1 of exact search at ef 192 was 0.980 added one by one in route
        order and 1.000 rebuilt (benchmarks/insertion_order.py). Ids and records keep the
        caller's order."""
        return np.random.default_rng(self._settings.random_seed).permutation(n)

    def _insert(self, hnsw: hnswlib.Index, vectors: np.ndarray, labels: np.ndarray) -> None:
        """Add a batch of graph vectors in :meth:`_insertion_order`."""
        if len(labels) > 1:
            order = self._insertion_order(len(labels))
            vectors, labels = vectors[order], labels[order]
        hnsw.add_items(vectors, labels, num_threads=self._threads(len(labels)))

    def _refine_previous(self, added: tuple[list[int], int] | None, vectors: np.ndarray,
                         count: int) -> None:
        """Re-insert places of earlier adds, now that their successors are in the graph
        (``settings.refine_adds``), oldest first: at most ``max(REFINE_PER_ADD, count)`` for
        an add of ``count`` places, so one keyframe added after a batch of 1024 does not hold
        the write lock for the whole batch's re-insertion. Then queue ``added`` (the ids of
        this add and its first row, None for a large add) with their graph ``vectors``.

        Re-adding a label is hnswlib's update: the place's links, and its neighbours' links,
        are chosen again from their neighbourhoods. A graph built a place (or a small batch)
        at a time in route order otherwise keeps links chosen before the places that follow
        existed, and misses exact best matches: on 10k real-derived 7168-d places added one
        by one, recall@1 of exact search at ef 64 went from 0.964 to 1.000, as good as a
        random-order build (``benchmarks/insertion_order.py``), for 0.9-1.3 ms more per
        place (10k-100k places).
        """
        if not self._settings.refine_adds:
            self._unrefined.clear()
            return
        budget = max(REFINE_PER_ADD, count)
        try:
            while self._unrefined and budget > 0:
                ids, start, prev_vectors = self._unrefined.popleft()
                if len(ids) > budget:  # the rest waits for the next add
                    self._unrefined.appendleft((ids[budget:], start + budget,
                                                prev_vectors[budget:]))
                    ids, prev_vectors = ids[:budget], prev_vectors[:budget]
                budget -= len(ids)
                self._reinsert(ids, start, prev_vectors)
        except (MemoryError, RuntimeError) as exc:
            # the add is whole by now, and an update that stops halfway leaves every place
            # in the graph with its vector and valid links: only this refinement is lost
            if not out_of_memory(exc):
                raise
            log.warning("re-inserting earlier places into the graph ran out of memory (%s): "
                        "they keep the links they have (rebuild() renews every link)", exc)
            self._unrefined.clear()
            return
        if added is not None:
            self._unrefined.append((*added, vectors))

    def _reinsert(self, ids: list[int], start: int, vectors: np.ndarray) -> None:
        """hnswlib's update of the places ``ids`` (rows from ``start``) that are still
        those places and live: re-adding a removed label would undelete it, and a removed id
        added again has a new row and its own vector."""
        removed, row_of = self._records.removed, self._row_of
        keep = [j for j, pid in enumerate(ids)
                if row_of.get(pid) == start + j and not removed[start + j]]
        if keep:
            labels = np.asarray([ids[j] for j in keep], dtype=np.uint64)
            again = vectors[keep]
            self._hnsw.add_items(again, labels, num_threads=self._threads(len(keep)))
            if self._background is not None:
                self._background.record_add(labels, again)

    def _use_graph(self, graph: Any) -> None:
        """Replace the graph by a rebuilt one: the graph file on disk is no base for it (the
        next save writes it, see ``map_store``)."""
        self._hnsw = graph
        self._graph_epoch += 1

    def _apply_ef(self) -> None:
        """Give the graph the ef for the map's size (``IndexSettings.search_ef``)."""
        self._hnsw.set_ef(self._settings.search_ef(self._live))

    def _reserve(self, elements: int) -> None:
        current = int(self._hnsw.max_elements)
        if elements > current:
            grown = max(elements, math.ceil(current * self._settings.growth_factor))
            self._hnsw.resize_index(grown)

    def _to_graph(self, descriptors: np.ndarray, *, query: bool = False) -> np.ndarray:
        """What the graph holds for ``[n, dim]`` unit descriptors (projected or as they are);
        ``query``: what it is searched with (a projection without its norm, same order)."""
        if self._projection is None:
            return descriptors
        return project(descriptors, self._projection, normalise=not query)

    def _wants_exact(self) -> bool:
        # searched exactly: it stays so a little beyond the limit
        margin = 1.0 if self._exact is None else EXACT_KEEP_FACTOR
        return self._settings.searches_exactly(self._live, self._dim, margin)

    def _sync_exact(self) -> None:
        """Keep the float32 copy for exact search exactly while exact search is in use."""
        if not self._wants_exact():
            self._exact = None
            return
        if self._exact is not None:
            return
        rec = self._records
        mirror = np.zeros((rec.capacity, self._dim), dtype=np.float32)
        rows = rec.live_rows()
        if rows.size and self._projection is not None:  # the graph holds projections
            mirror[rows] = rec.desc16[rows].astype(np.float32)
        elif rows.size:
            mirror[rows] = self._hnsw.get_items(rec.ids[rows].astype(np.uint64))
        self._exact = mirror

    def _rebuild_locked(self) -> None:
        compact = self._live != self._records.rows  # removed rows to drop (renumbers rows)
        rec = self._records.compacted() if compact else self._records
        job = self._rebuild_job(rec, self._threads(rec.rows))
        job.build()  # (interrupted: the index is as it was)
        with self._all_or_broken("rebuild()"):
            self._swap_rebuilt(rec, job, compact)

    def _swap_rebuilt(self, rec: PlaceRecords, job: GraphRebuild, compact: bool) -> None:
        self._records = rec
        self._use_graph(job.graph)
        self._row_of = dict(zip(rec.ids[: rec.rows].tolist(), range(rec.rows)))
        self._live = rec.rows
        self._rebuilt_at = rec.rows
        self._warned_tombstones = False
        # every place is in the new graph, and the last add's rows may be renumbered: a
        # removed id added again at its old row number would be "refined" with its old vector
        self._unrefined.clear()
        if compact:  # saved record and descriptor files no longer match the rows
            self._layout += 1
            self._disk = None
        self._exact = None
        self._sync_exact()
        self._apply_ef()

    def _allowed_mask(self, excluded: set[int] | None, cutoff: float | None, newest: int,
                      only: set[int] | None) -> np.ndarray:
        rec = self._records
        rows = rec.rows
        mask = ~rec.removed[:rows]
        if only is not None:
            mask &= self._rows_of_ids(only, rows)
        if newest:
            mask[max(0, rows - newest):] = False
        if cutoff is not None:
            mask &= ~(rec.stamps[:rows] > cutoff)
        if excluded:
            mask &= ~self._rows_of_ids(excluded, rows)
        return mask

    def _rows_of_ids(self, ids: set[int], rows: int) -> np.ndarray:
        """A mask of the first ``rows`` rows, True where a live place has one of ``ids``
        (removed rows may be True too). One dict lookup per id, or, for more than
        ``rows / IDS_IN_BULK_SHARE`` ids, ``np.isin`` over the map's ids: 10k ids of a 20k-place
        map took 0.6 ms one by one, 0.24 ms in bulk (100 ids: 10 us against 60)."""
        if len(ids) * IDS_IN_BULK_SHARE > rows:
            return np.isin(self._records.ids[:rows], np.fromiter(ids, np.int64, len(ids)))
        marked = np.zeros(rows, dtype=bool)
        for pid in ids:
            row = self._row_of.get(pid)
            if row is not None:
                marked[row] = True
        return marked

    def _hnsw_filter(self, mask: np.ndarray | None, allowed: int, user: IdFilter | None
                     ) -> IdFilter | None:
        """hnswlib's filter for the ``allowed`` places ``mask`` allows (None: all) that
        ``user`` accepts. A set of the ids of the allowed places or of the excluded live ones,
        whichever is smaller: hnswlib asks the filter about every place it examines, and a
        set lookup is the cheapest Python call (removed places it skips itself)."""
        if mask is not None and allowed < self._live:
            rec = self._records
            if allowed <= self._live - allowed:
                ok = set(rec.ids[np.flatnonzero(mask)].tolist())
                if user is None:
                    return ok.__contains__
                return lambda label: label in ok and bool(user(label))
            out = set(rec.ids[np.flatnonzero(~mask & ~rec.removed[: rec.rows])].tolist())
            if user is None:
                return lambda label: label not in out
            return lambda label: label not in out and bool(user(label))
        return None if user is None else (lambda label: bool(user(label)))

    def _search(self, q: np.ndarray, k: int, excluded: set[int] | None, cutoff: float | None,
                newest: int, only: set[int] | None, user: IdFilter | None, rerank: bool
                ) -> list[list[tuple[int, float]]]:
        if self._live == 0:
            return [[] for _ in range(q.shape[0])]
        rec = self._records
        ids = rec.ids
        accept = None if user is None else (lambda row: bool(user(int(ids[row]))))
        if self._exact is not None:
            mask = self._allowed_mask(excluded, cutoff, newest, only)
            scores = float32_scores.scores(self._exact[: rec.rows], q)  # (not on all cores)
            return [exact.top_k(scores[:, j], k, mask, accept) for j in range(q.shape[0])]

        s = self._settings
        if self._projection is not None:
            rerank = True  # graph scores are of projections: re-score from the descriptors
            fetch = min(max(k * s.rerank_factor, s.search_candidates), self._live)
        else:
            fetch = min(k * s.rerank_factor if rerank else k, self._live)
        mask, allowed = None, self._live
        if excluded or cutoff is not None or newest or only is not None:
            mask = self._allowed_mask(excluded, cutoff, newest, only)
            allowed = int(np.count_nonzero(mask))
            if self._few_allowed(allowed):
                # a graph search would walk most of the graph to find them (and ask the
                # filter of every place it passes): scoring them all is faster
                return [self._exact_among(q[j], k, mask, accept, rerank)
                        for j in range(q.shape[0])]
        fn = self._hnsw_filter(mask, allowed, user)
        threads = 1 if fn is not None or q.shape[0] == 1 else (s.num_threads or usable_cpus())
        try:
            labels, dists = self._hnsw.knn_query(self._to_graph(q, query=True), k=fetch,
                                                 num_threads=threads, filter=fn)
        except RuntimeError as exc:
            if "contiguous 2D array" not in str(exc):
                raise
            # Fewer than `fetch` allowed places reachable: answer exactly instead.
            if mask is None:
                mask = self._allowed_mask(excluded, cutoff, newest, only)
            return [self._exact_among(q[j], k, mask, accept, rerank) for j in range(q.shape[0])]
        row_of = self._row_of
        out: list[list[tuple[int, float]]] = []
        for j, found in enumerate(labels.tolist()):
            rows = [row_of[label] for label in found]
            if rerank:  # re-scored from the stored descriptors
                scores = float16_scores.scores(rec.desc16[rows], q[j]).tolist()
            else:  # hnswlib's 'ip' distance is 1 - dot (its ties come ordered by id)
                scores = (np.float32(1.0) - dists[j]).tolist()
            # best first, ties by row, as exact search: in Python (a few dozen items)
            out.append([(rows[i], scores[i]) for i in exact.ranked(rows, scores)[:k]])
        return out

    def _few_allowed(self, allowed: int) -> bool:
        """Whether the ``allowed`` places (those the exclusions leave) are few enough that
        scoring each beats a graph search (:data:`FILTERED_EXACT_BUDGET`,
        :data:`FILTERED_SCAN_PER_EXCLUDED`); never when no live place is excluded."""
        excluded = self._live - allowed
        values = allowed * self._dim
        return (excluded > 0 and values <= FILTERED_SCAN_PER_EXCLUDED * excluded
                and values * (allowed / self._live) <= FILTERED_EXACT_BUDGET)

    def _exact_among(self, q: np.ndarray, k: int, mask: np.ndarray,
                     accept: Callable[[int], bool] | None, rerank: bool
                     ) -> list[tuple[int, float]]:
        """The exact top ``k`` of the rows ``mask`` allows and ``accept`` accepts, scored from
        the float16 descriptors; without ``rerank`` (a graph of the descriptors themselves),
        from the graph's float32 vectors, as a graph search and exact mode score them: those
        of the places whose float16 score is within twice
        :data:`~vpr_edge.index.exact.FLOAT16_SCORE_ERROR` of the ``k``-th best (with
        ``accept``, asked about them too; about the others, in score order until ``k``
        passed), at most :data:`RESCORE_MAX_PLACES` of them."""
        rec = self._records
        rows = np.flatnonzero(mask)
        scores16 = exact.scores_from_float16(rec.desc16, q, rows)
        asked: dict[int, bool] = {}  # (each place is asked once)
        pick = None if accept is None else (
            lambda i: asked[i] if i in asked else asked.setdefault(i, accept(int(rows[i]))))
        hits = exact.top_k(scores16, k, None, pick)
        if rerank or not hits:  # _search sets rerank for a projected graph
            return [(int(rows[i]), s) for i, s in hits]
        # a place outside the float16 top k may be in the float32 one: every place that
        # float16 rounding could have moved past the k-th is scored again
        margin = 2 * (exact.FLOAT16_SCORE_ERROR + exact.TIE_TOLERANCE)
        near = np.flatnonzero(scores16 >= min(s for _, s in hits) - margin)
        near = near[np.argsort(-scores16[near], kind="stable")]
        most = max(k, RESCORE_MAX_PLACES)
        if pick is not None:  # (asked in score order, until as many passed)
            passed = (i for i in near.tolist() if pick(i))
            near = np.fromiter(itertools.islice(passed, most), np.int64)
        near = near[:most]
        found = rows[near]
        vectors = np.asarray(self._hnsw.get_items(rec.ids[found].astype(np.uint64)),
                             dtype=np.float32)
        scores = float32_scores.scores(vectors, q[None, :])[:, 0]
        order = exact.tie_order(found, scores)[:k]
        return [(int(found[i]), float(scores[i])) for i in order]
