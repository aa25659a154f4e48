"""Settings of a :class:`~vpr_edge.index.PlaceIndex` (one frozen dataclass)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InvalidInputError
from ..plain_numbers import plain_numbers

#: The only similarity the index uses: inner product of L2-normalised descriptors (= cosine).
SPACE = "ip"
#: Search strategies: ``auto`` = exact below ``exact_max_places`` live places, HNSW above.
MODES = ("auto", "hnsw", "exact")
#: ``exact_max_places=None`` (default): search exactly while a map holds at most this many
#: values (places x dim), and at most :data:`EXACT_MAX_PLACES` places. Exact search reads
#: every value, so its cost grows with both: on the development VM (k=5) it matched HNSW at
#: 300 places of 7168 dims (0.09 vs 0.10 ms) and 2000 of 1024 dims (0.08 vs 0.09 ms), and took
#: 1.0 ms at 2000 places of 7168 dims, where HNSW took 0.13 ms.
EXACT_MAX_VALUES = 2000 * 1024
EXACT_MAX_PLACES = 2000
#: With ``ef_scaling``, the search uses ``ef = SCALED_EF * sqrt(places / SCALED_EF_PLACES)``
#: (rounded up to a multiple of 16), at least SCALED_EF and at most ``IndexSettings.ef``.
SCALED_EF = 64
SCALED_EF_PLACES = 10_000
#: The largest ``ef`` / ``ef_construction`` taken (far past any useful one: exact search is
#: the mode for that); hnswlib refuses values beyond its integers, and a map saved with one
#: could never be opened again.
MAX_EF = 1 << 20
#: The largest hnswlib ``M`` taken.
MAX_M = 2048
#: Most the capacity grows at once (beyond, one growth would ask for absurd memory).
MAX_GROWTH_FACTOR = 16.0
#: Places an index can hold: hnswlib numbers its elements with 32-bit unsigned ints.
MAX_INDEX_CAPACITY = 2**32 - 1
#: With ``refine_adds``, adds of at most this many places are re-inserted by later adds;
#: larger ones go in shuffled, which left little to repair (blocks of 1024 places shuffled
#: within reached recall@1 0.998 of exact search at 10k places, ef 192).
REFINE_MAX_PLACES = 1024
#: With ``refine_adds``, an add of ``n`` places re-inserts at most ``max(REFINE_PER_ADD, n)``
#: places of earlier adds (the oldest first; the rest wait for the following adds): a keyframe
#: added after a batch of 1024 places re-inserts 64 of them (about 30 ms at 7168 dims), not
#: all 1024 (0.45-0.6 s under the write lock, with queries waiting).
REFINE_PER_ADD = 64
#: Removed places are tombstones until a plain rebuild drops them. Once at least
#: COMPACT_MIN_REMOVED are held, and more than the live places, a map of at most
#: COMPACT_MAX_LIVE live places (or one searched exactly) is compacted by the remove() that
#: crossed the line (its rebuild takes under a second: 0.2 s at 1000 live 7168-d places); a
#: larger map warns (its rebuild holds the index for seconds to minutes).
COMPACT_MIN_REMOVED = 1000
COMPACT_MAX_LIVE = 2000
#: ``graph_resave``: a save may leave at least this many new places out of the graph file
#: (opening the map inserts them: 0.15 s on 2 cores at 7168 dims, 30k places)
GRAPH_RESAVE_MIN_ROWS = 256
#: the largest ``graph_resave`` taken (opening a map inserts up to that share of its places)
MAX_GRAPH_RESAVE = 1.0


@dataclass(frozen=True)
class IndexSettings:
    """How the place index is built and searched.

    ``M``, ``ef_construction`` and ``ef`` are hnswlib's parameters; the defaults were chosen by
    ``benchmarks/index_scaling_quick.py`` (figures in docs/index.md): places added in
    route order (as a robot adds them) make a weaker graph than shuffled ones, so batch adds
    and :meth:`PlaceIndex.rebuild` insert in a random order, and a place added on its own (or
    in a small batch) is re-inserted by the adds that follow (``refine_adds``). In
    ``benchmarks/insertion_order.py`` (100k 7168-d places added one by one) recall@1 at
    ef 192 was 0.982 with plain inserts and 1.000 refined, the same as a random-order
    ``rebuild()``. On descriptors synthesised from real
    NetVLAD ones (512-d, 2-core x86 VM), ``ef_construction=400, ef=192`` was the cheapest pair
    keeping recall@1 >= 0.99 of exact search at 100k and at 1M places, with a query under
    1 ms (``ef=128`` gave 0.988 / 0.984). Small maps need far less
    (``ef=32`` reached 0.99 at 10k), and ``mode="auto"`` searches maps under
    ``exact_max_places`` exactly anyway.

    Attributes:
        M: graph degree (links per node per layer); more = better recall, more memory.
        ef_construction: candidate-list size while inserting; more = better graph, slower adds.
        ef: candidate-list size while searching (hnswlib uses ``max(ef, k)``); more = better
            recall, slower queries. Saved in the map's manifest (hnswlib files do not hold it).
            With ``ef_scaling`` it is the most the search uses, reached at about 76k places.
        ef_scaling: search smaller maps with a smaller ef (:meth:`search_ef`): 64 up to 10k
            places, growing with the square root of the map's size (112 at 30k, 144 at 50k)
            up to ``ef``. The measured need grows that way: with refined or random-order
            graphs, recall@1 of exact search was 1.000 at ef 64 with 10k places and 0.954-0.976
            at 100k, where ef 192 gave 1.000 (``benchmarks/insertion_order.py``); at 10k, ef 64
            instead of 192 saved 0.2 ms per query. False: always ``ef``.
        mode: ``"auto"`` searches exactly (one matrix product over float32 descriptors)
            while the map holds at most ``exact_max_places`` live places and with HNSW above;
            ``"hnsw"`` and ``"exact"`` force one. Results have the same meaning in every mode.
        exact_max_places: the ``auto`` threshold; None (default): it follows the dimension
            (:meth:`exact_limit`: 2000 places up to 1024 dims, 285 at 7168, where exact
            search stops being as fast as HNSW). Exact mode keeps a float32 copy of the
            descriptors in memory (4 x dim bytes per place) while it is used; a map searched
            exactly goes on so up to 10% beyond it (``EXACT_KEEP_FACTOR``), so that a map
            held at the threshold does not switch at every add and remove.
        initial_capacity: places the index is first sized for; it grows by itself.
        growth_factor: capacity multiplier when the index is full (geometric growth, so
            ``n`` adds cost ``O(n)`` copying in total).
        rerank: re-rank query candidates by default (``query(rerank=...)`` overrides).
        rerank_factor: with re-ranking, ``k * rerank_factor`` candidates are fetched from
            HNSW and re-scored exactly from the stored float16 descriptors.
        norm_tolerance: descriptors must have an L2 norm within ``1 +- norm_tolerance``
            (they are then re-normalised exactly); others are refused.
        num_threads: hnswlib threads for batch adds/queries; 0 = the CPUs this process may
            run on (its affinity: taskset, cgroup CPU sets). Single adds and
            queries always run on the calling thread.
        random_seed: hnswlib's level-generator seed (graphs are reproducible for
            single-threaded adds).
        search_dim: for descriptors longer than this, the HNSW graph holds a fixed random
            sketch of them in ``search_dim`` dims (``vpr_edge.index.projection``) and every
            graph query re-scores its candidates exactly from the stored float16 descriptors:
            7168-d NetVLAD maps at 10k places are searched 1.4x faster warm and 2.4x
            faster right after an inference, with a 13x smaller graph
            (benchmarks/latency.py). None: the graph holds the full descriptors. Fixed when a
            map is created (saved in its manifest).
        search_candidates: graph candidates re-scored per query with a projection (at least
            ``k * rerank_factor``); more = closer to exact search, slower.
        rebuild_growth: when places added one at a time have grown the graph to this many
            times its size at its last random-order build (counting from
            ``exact_max_places``; a map opened from disk counts from its size then), start
            :meth:`PlaceIndex.rebuild` in the background on one thread (2.0: at 4k, 8k, 16k,
            ... places). None (default): never; ``refine_adds`` already gives graphs
            grown one by one the recall of a random-order build, without a core busy for
            minutes (100 s at 64k places) and a pause of up to 1 s at each swap.
        refine_adds: re-insert the places of each add of at most :data:`REFINE_MAX_PLACES`
            places (a place added on its own, a small batch) in the adds that follow, which
            is hnswlib's update: their links and their neighbours' are chosen again now that
            their successors exist. Graphs grown a place or a small batch at a time in route
            order otherwise miss exact best matches: one place at a time, recall@1 at ef 192
            0.980 (10k) / 0.982 (100k) without, 1.000 / 1.000 with, for adds about 2.5x
            slower (p50 1.5 ms at 10k, 2.2 ms at 100k; 0.6-0.7 / 0.9 ms without),
            ``benchmarks/insertion_order.py``; in batches of 8 (shuffled within), 10k places,
            ef 64: 0.952 without, 1.000 with. Larger adds go in shuffled and are not refined.
            An add of ``n`` places re-inserts at most ``max(REFINE_PER_ADD, n)`` queued
            places, the oldest first, so a keyframe after a large batch waits 23-27 ms, not
            0.4-0.6 s (7168 dims, 10k places).
        graph_resave: a save writes the graph file (``index.hnsw``: about 2.2 kB a place
            with the 512-d sketch, 220 MB at 100k places) only once the places added since
            it was last written exceed this share of its rows (at least
            :data:`GRAPH_RESAVE_MIN_ROWS`), or the graph was rebuilt; until then it keeps the
            file and opening the map inserts those places into it: at 100k 7168-d places,
            a save after adding 1000 took 0.02-0.06 s instead of 0.5-0.8 s and wrote 15 MB
            instead of 235 MB, and opening the map took 0.4-0.9 s longer (2.6 s instead of
            2.2 s with its files in the page cache; 2 cores). 0: write
            it on every save (as before 2026-11-28; the map stays readable by vpr-edge from
            before then).
    """

    M: int = 16
    ef_construction: int = 400
    ef: int = 192
    ef_scaling: bool = True
    mode: str = "auto"
    exact_max_places: int | None = None
    initial_capacity: int = 1024
    growth_factor: float = 2.0
    rerank: bool = False
    rerank_factor: int = 4
    norm_tolerance: float = 1e-2
    num_threads: int = 0
    random_seed: int = 100
    search_dim: int | None = 512
    search_candidates: int = 32
    rebuild_growth: float | None = None
    refine_adds: bool = True
    graph_resave: float = 0.01

    def __post_init__(self) -> None:
        plain_numbers(self)
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise InvalidInputError(f"IndexSettings: {what}")

        for name in ("M", "ef_construction", "ef", "initial_capacity",
                     "rerank_factor", "num_threads", "random_seed", "search_candidates"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool),
                 f"{name} must be an int, got {value!r}")
        need(2 <= self.M <= MAX_M, f"M must be in [2, {MAX_M}], got {self.M}")
        for name in ("ef_construction", "ef"):
            need(1 <= getattr(self, name) <= MAX_EF,
                 f"{name} must be in [1, {MAX_EF}], got {getattr(self, name)}")
        need(self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}")
        need(self.exact_max_places is None or (isinstance(self.exact_max_places, int)
                                               and not isinstance(self.exact_max_places, bool)
                                               and self.exact_max_places >= 0),
             f"exact_max_places must be None or an int >= 0, got {self.exact_max_places!r}")
        need(1 <= self.initial_capacity <= MAX_INDEX_CAPACITY,
             f"initial_capacity must be in [1, {MAX_INDEX_CAPACITY}], got "
             f"{self.initial_capacity}")
        need(isinstance(self.growth_factor, (int, float)) and not isinstance(
            self.growth_factor, bool) and 1.0 < self.growth_factor <= MAX_GROWTH_FACTOR,
             f"growth_factor must be in (1, {MAX_GROWTH_FACTOR}], got {self.growth_factor!r}")
        need(isinstance(self.rerank, bool), "rerank must be True or False")
        need(isinstance(self.ef_scaling, bool), "ef_scaling must be True or False")
        need(isinstance(self.refine_adds, bool), "refine_adds must be True or False")
        need(self.rerank_factor >= 1, "rerank_factor must be >= 1")
        need(isinstance(self.norm_tolerance, (int, float)) and 0 < self.norm_tolerance < 1,
             f"norm_tolerance must be in (0, 1), got {self.norm_tolerance!r}")
        need(0 <= self.num_threads <= 4096,
             "num_threads must be in [0, 4096] (0 = the CPUs this process may run on)")
        need(0 <= self.random_seed < 2**32, "random_seed must be in [0, 2**32)")
        need(self.search_dim is None or (isinstance(self.search_dim, int)
                                         and not isinstance(self.search_dim, bool)
                                         and self.search_dim >= 8),
             f"search_dim must be None or an int >= 8, got {self.search_dim!r}")
        need(self.search_candidates >= 1, "search_candidates must be >= 1")
        need(self.rebuild_growth is None or (isinstance(self.rebuild_growth, (int, float))
                                             and not isinstance(self.rebuild_growth, bool)
                                             and self.rebuild_growth > 1.0),
             f"rebuild_growth must be None or > 1, got {self.rebuild_growth!r}")
        need(isinstance(self.graph_resave, (int, float)) and not isinstance(
            self.graph_resave, bool) and 0 <= self.graph_resave <= MAX_GRAPH_RESAVE,
             f"graph_resave must be in [0, {MAX_GRAPH_RESAVE}], got {self.graph_resave!r}")

    def search_ef(self, places: int) -> int:
        """The ef a graph search uses in a map of ``places`` live places."""
        if not self.ef_scaling:
            return self.ef
        scaled = SCALED_EF * math.sqrt(max(places, 1) / SCALED_EF_PLACES)
        return min(self.ef, max(SCALED_EF, 16 * math.ceil(scaled / 16)))

    def exact_limit(self, dim: int) -> int:
        """The most live places ``mode="auto"`` searches exactly, for ``dim``-d descriptors:
        ``exact_max_places``, or when None, :data:`EXACT_MAX_VALUES` / ``dim`` (at most
        :data:`EXACT_MAX_PLACES`): 2000 up to 1024 dims, 285 at 7168."""
        if self.exact_max_places is not None:
            return self.exact_max_places
        return min(EXACT_MAX_PLACES, EXACT_MAX_VALUES // max(1, dim))

    def searches_exactly(self, places: int, dim: int, margin: float = 1.0) -> bool:
        """Whether a map of ``places`` live ``dim``-d places is searched exactly: the mode,
        or in ``auto`` at most ``margin`` times :meth:`exact_limit` places."""
        if self.mode != "auto":
            return self.mode == "exact"
        return places <= math.floor(self.exact_limit(dim) * margin)

    def graph_slack(self, graph_rows: int) -> int:
        """How many rows a save may add to a map whose graph file was written for
        ``graph_rows`` rows before it writes the graph again (``graph_resave``)."""
        if self.graph_resave == 0:
            return 0
        return max(GRAPH_RESAVE_MIN_ROWS, math.floor(self.graph_resave * graph_rows))

    def graph_dim(self, dim: int) -> int:
        """Dimension of the vectors the HNSW graph holds for ``dim``-d descriptors."""
        return dim if self.search_dim is None or dim <= self.search_dim else self.search_dim
