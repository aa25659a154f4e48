"""PlaceIndex semantics, checked against a plain numpy model of what was added."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_edge.errors import InvalidInputError
from vpr_edge.index import IndexSettings, PlaceIndex, PlaceMatch, PlaceRecord, place_index, validate

DIM = 32


def unit(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_model(db: np.ndarray, ids: list[int], q: np.ndarray, k: int,
                allowed: set[int] | None = None) -> list[tuple[int, float]]:
    scores = db @ q
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], i))
    out = [(ids[i], float(scores[i])) for i in order if allowed is None or ids[i] in allowed]
    return out[:k]


def make(mode: str, **kw) -> PlaceIndex:
    return PlaceIndex(DIM, fingerprint="fp", settings=IndexSettings(mode=mode, ef=200, **kw))


MODES = ["exact", "hnsw"]
#: how a query with exclusions is answered: exact mode; HNSW, the exclusions handed to hnswlib's
#: filter; HNSW, the places the exclusions leave scored one by one (few of them are)
SEARCH_PATHS = ["exact", "hnsw", "hnsw-scan"]


def make_on(path: str, monkeypatch: pytest.MonkeyPatch, **kw) -> PlaceIndex:
    """:func:`make` for one of :data:`SEARCH_PATHS`."""
    budget = float("inf") if path == "hnsw-scan" else -1.0
    monkeypatch.setattr(place_index, "FILTERED_EXACT_BUDGET", budget)
    monkeypatch.setattr(place_index, "FILTERED_SCAN_PER_EXCLUDED", budget)
    return make("exact" if path == "exact" else "hnsw", **kw)


@pytest.mark.parametrize("mode", MODES)
def test_query_matches_exact_numpy_model(mode: str) -> None:
    db = unit(400)
    index = make(mode)
    ids = index.add(db)
    assert ids == list(range(400)) and len(index) == 400
    for q in unit(20, seed=1):
        got = index.query(q, k=7)
        want = exact_model(db, ids, q, 7)
        assert [m.place_id for m in got] == [i for i, _ in want]
        np.testing.assert_allclose([m.score for m in got], [s for _, s in want], atol=1e-5)
        assert all(a.score >= b.score for a, b in zip(got, got[1:]))


@pytest.mark.parametrize("mode", MODES)
def test_records_single_and_batch(mode: str) -> None:
    index = make(mode)
    db = unit(3)
    (pid,) = index.add(db[0], stamps=12.5, poses=(1, 2, 3, 0, 0, 0, 1), meta={"frame": "a.png"})
    more = index.add(db[1:], stamps=[None, 14.0], poses=[None, [4, 5, 6, 0, 0, 0, 1]],
                     meta=[{"k": [1, (2, 3)]}, None])
    assert (pid, more) == (0, [1, 2])
    match = index.query(db[0], k=1)[0]
    assert isinstance(match, PlaceMatch)
    assert (match.place_id, match.stamp, match.pose, match.meta) == (
        0, 12.5, (1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0), {"frame": "a.png"})
    assert index.get(1) == PlaceRecord(1, None, None, {"k": [1, [2, 3]]})  # tuples -> lists
    assert index.get(2).pose == (4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 1.0)
    batch = index.query(db, k=2)
    assert [[m.place_id for m in row][0] for row in batch] == [0, 1, 2]
    index.get(0).meta["frame"] = "changed"  # callers get copies
    assert index.get(0).meta == {"frame": "a.png"}


def test_ids_given_auto_duplicates_and_reuse() -> None:
    index = make("hnsw")
    db = unit(10)
    assert index.add(db[:2], ids=[100, 7]) == [100, 7]
    assert index.add(db[2]) == [101]  # auto ids continue above the largest id seen
    with pytest.raises(InvalidInputError, match="already in the index"):
        index.add(db[3], ids=7)
    with pytest.raises(InvalidInputError, match="twice"):
        index.add(db[3:5], ids=[5, 5])
    with pytest.raises(InvalidInputError, match="non-negative"):
        index.add(db[3], ids=-1)
    with pytest.raises(InvalidInputError, match="2 ids given for 1"):
        index.add(db[3], ids=[1, 2])
    assert len(index) == 3
    index.remove(7)
    assert 7 not in index
    assert index.add(db[5], ids=7, meta={"v": 2}) == [7]  # a removed id may come back
    assert index.get(7).meta == {"v": 2}
    assert index.query(db[5], k=1)[0].place_id == 7
    assert index.query(db[1], k=1)[0].place_id != 7  # the old descriptor is gone
    assert index.ids() == [100, 101, 7]


@pytest.mark.parametrize("mode", MODES)
def test_remove_semantics(mode: str) -> None:
    db = unit(200)
    index = make(mode)
    ids = index.add(db)
    assert index.remove([3, 4]) == 2
    with pytest.raises(InvalidInputError, match=r"\[3\]"):
        index.remove([5, 3])  # 3 is already removed: nothing is removed
    assert 5 in index and len(index) == 198
    with pytest.raises(InvalidInputError, match="no live place"):
        index.remove(12345)
    with pytest.raises(InvalidInputError):
        index.get(3)
    alive = set(ids) - {3, 4}
    for q in db[:10]:
        got = [m.place_id for m in index.query(q, k=5)]
        assert [i for i, _ in exact_model(db, ids, q, 5, alive)] == got


@pytest.mark.parametrize("bad, match", [
    (np.ones((2, DIM + 1), np.float32), "dimension"),
    (np.ones((2, DIM), np.int32), "dtype"),
    (np.zeros((0, DIM), np.float32), "empty"),
    (np.ones((1, 2, DIM), np.float32), "shape"),
    (np.zeros(DIM, np.float32), "norm"),
    (np.full(DIM, 1.0, np.float32), "norm"),
    ("not an array", "dtype"),
])
def test_bad_descriptors_refused(bad, match) -> None:
    index = make("hnsw")
    with pytest.raises(InvalidInputError, match=match):
        index.add(bad)
    with pytest.raises(InvalidInputError, match=match):
        index.query(bad)
    assert len(index) == 0


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e39])
def test_nan_inf_refused(value: float) -> None:
    index = make("hnsw")
    x = unit(3).astype(np.float64)
    x[1, 5] = value
    with pytest.raises(InvalidInputError, match="descriptor 1 of 3 .0-based. contains NaN or inf"):
        index.add(x)
    assert len(index) == 0


@pytest.mark.parametrize("value, match", [
    (np.nan, ": the descriptor contains NaN or inf"),  # (it said "row 0")
    (np.inf, ": the descriptor contains NaN or inf"),
    (1e20, "L2 norm 1e\\+20, not 1"),  # finite, but its square overflows float32
])
def test_one_bad_descriptor_refused(value: float, match: str) -> None:
    # a single descriptor takes a shorter check (validate.descriptors); same refusals
    index = make("hnsw")
    index.add(unit(3))
    x = unit(1)[0]
    x[5] = value
    for call in (index.add, index.query):
        with pytest.raises(InvalidInputError, match=match):
            call(x)
    assert len(index) == 3


def test_one_near_unit_descriptor_is_renormalised() -> None:
    from vpr_edge.index import validate

    x = unit(1)[0] * 1.009
    out, single = validate.descriptors(x, DIM, 1e-2)
    assert single and out.shape == (1, DIM) and out.dtype == np.float32
    assert abs(float(np.linalg.norm(out.astype(np.float64))) - 1.0) < 1e-6
    with pytest.raises(InvalidInputError, match="L2 norm 1.011"):
        validate.descriptors(x * 1.002, DIM, 1e-2)


def test_near_unit_descriptors_are_renormalised() -> None:
    index = make("exact")
    x = unit(2) * 1.005
    index.add(x.astype(np.float16))  # float16 model output, norm slightly off
    match = index.query(unit(2)[0], k=1)[0]
    assert match.place_id == 0 and abs(match.score - 1.0) < 2e-3


@pytest.mark.parametrize("kwargs, match", [
    ({"stamps": float("nan")}, "not finite"),
    ({"stamps": "yesterday"}, "float seconds"),
    ({"poses": (1.0, float("nan"))}, "NaN"),
    ({"poses": [[1, 2], [3, 4]]}, "flat"),
    ({"meta": {"s": {1, 2}}}, "JSON"),
    ({"meta": {"x": float("nan")}}, "JSON"),
    ({"meta": {1: "int key"}}, "not a string"),
    ({"meta": ["not", "a", "dict"]}, "must be a dict"),
    ({"meta": {"o": object()}}, "JSON"),
    ({"meta": {"image": "frame_\udcff.png"}}, "UTF-8"),  # os.fsdecode of a non-UTF-8 name
    ({"meta": {"k\ud800": 1}}, "UTF-8"),
])
def test_bad_records_refused(kwargs, match) -> None:
    index = make("hnsw")
    with pytest.raises(InvalidInputError, match=match):
        index.add(unit(1)[0], **kwargs)
    assert len(index) == 0


@pytest.mark.parametrize("mode", ["exact", "auto"])
def test_equal_descriptors_come_back_oldest_first(mode: str) -> None:
    """A robot standing still adds the same descriptor again and again: exact search gives
    ties in insertion order (it used to return an arbitrary subset of the tied places; a
    graph search can only order the tied places it visits)."""
    index = make(mode, exact_max_places=5000)
    still = unit(1)[0]
    index.add(np.r_[unit(10, seed=3), np.repeat(still[None], 990, axis=0)])
    assert [m.place_id for m in index.query(still, k=3)] == [10, 11, 12]
    assert [m.place_id for m in index.query(still, k=3, exclude_ids=[11])] == [10, 12, 13]


def test_pose_length_is_fixed_per_map() -> None:
    index = make("hnsw")
    index.add(unit(1)[0], poses=(1, 2, 3))
    with pytest.raises(InvalidInputError, match="3"):
        index.add(unit(1, seed=2)[0], poses=(1, 2))
    assert len(index) == 1


def _top50_excluded(index: PlaceIndex, db: np.ndarray, q: np.ndarray, how: str
                    ) -> list[PlaceMatch]:
    order = np.argsort(-(db @ q))
    if how == "ids":
        return index.query(q, k=5, exclude_ids=order[:50].tolist())
    if how == "stamp":
        return index.query(q, k=5, exclude_after_stamp=999.0)
    if how == "newest":
        return index.query(q, k=5, exclude_newest=50)
    if how == "only":
        return index.query(q, k=5, only_ids=order[50:].tolist())
    return index.query(q, k=5, filter=lambda pid: pid not in set(order[:50].tolist()))


@pytest.mark.parametrize("path", SEARCH_PATHS)
@pytest.mark.parametrize("how", ["ids", "stamp", "newest", "only", "filter"])
def test_exclusion_happens_inside_the_search(path: str, how: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The 50 most similar places are all excluded, and k = 5 results still come back: the
    exact top 5 of the others. Post-filtering a top-k list would return nothing."""
    db = unit(1000, seed=3)
    q = unit(1, seed=4)[0]
    order = np.argsort(-(db @ q))
    top50 = set(order[:50].tolist())
    # add the 50 most similar last, with the latest stamps, so that every kind of exclusion
    # (ids, stamps, newest rows, filter) removes exactly them
    rest = [i for i in range(1000) if i not in top50]
    sequence = rest + order[:50].tolist()
    index = make_on(path, monkeypatch)
    index.add(db[sequence], ids=sequence,
              stamps=[float(i) if i not in top50 else 1000.0 + i for i in sequence])
    got = _top50_excluded(index, db, q, how)
    want = exact_model(db, list(range(1000)), q, 5, set(range(1000)) - top50)
    assert [m.place_id for m in got] == [i for i, _ in want]
    assert not top50 & {m.place_id for m in got}


def test_hnsw_gets_the_filter_and_plain_k(monkeypatch) -> None:
    """The exclusion is handed to hnswlib's knn_query(filter=...) with k itself (no
    over-fetching and trimming afterwards)."""
    db = unit(300)
    index = make_on("hnsw", monkeypatch)
    index.add(db, stamps=np.arange(300.0))
    calls = []
    real = index._hnsw

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def knn_query(self, data, k=1, num_threads=-1, filter=None):
            calls.append((k, filter))
            return real.knn_query(data, k=k, num_threads=num_threads, filter=filter)

    monkeypatch.setattr(index, "_hnsw", Spy())
    got = index.query(db[299], k=3, exclude_after_stamp=200.0)
    assert len(calls) == 1 and calls[0][0] == 3 and callable(calls[0][1])
    assert all(m.stamp <= 200.0 for m in got) and len(got) == 3


class KnnSpy:
    """Forwards to a hnswlib index, counts ``knn_query`` calls and records how many places
    each ``get_items`` call asked for."""

    def __init__(self, graph) -> None:
        self.graph = graph
        self.searches = 0
        self.items: list[int] = []

    def knn_query(self, *args, **kw):
        self.searches += 1
        return self.graph.knn_query(*args, **kw)

    def get_items(self, ids, *args, **kw):
        self.items.append(len(ids))
        return self.graph.get_items(ids, *args, **kw)

    def __getattr__(self, name: str):
        return getattr(self.graph, name)


def test_exclusions_that_leave_few_places_score_them_instead_of_a_graph_search() -> None:
    """A filtered graph search walks past the excluded places until it finds enough allowed
    ones: with 30 of 30k left it visited them all, 24 ms (60 ms below the 32 candidates of
    a projected graph). Exclusions that leave few places score those instead, exactly; ones
    that leave most of the map still search the graph."""
    dim = 512
    db = unit(3000, dim=dim, seed=5)
    index = PlaceIndex(dim, settings=IndexSettings(mode="hnsw", ef=64))
    index.add(db, stamps=np.arange(3000.0))
    spy = KnnSpy(index._hnsw)
    index._hnsw = spy
    q = db[2990]
    cases = [({"exclude_newest": 2950}, range(50)),
             ({"exclude_after_stamp": 99.0}, range(100)),
             ({"exclude_ids": range(60, 3000)}, range(60)),
             ({"exclude_newest": 2000, "exclude_ids": range(500, 1000)}, range(500))]
    for kwargs, allowed in cases:
        got = index.query(q, k=5, **kwargs)
        want = exact_model(db, list(range(3000)), q, 5, set(allowed))
        assert [m.place_id for m in got] == [i for i, _ in want], kwargs
        np.testing.assert_allclose([m.score for m in got], [s for _, s in want], atol=1e-5)
    assert spy.searches == 0
    index.query(q, k=5, exclude_newest=50)  # 2950 of 3000 left: the graph
    index.query(q, k=5, exclude_after_stamp=2699.0)  # 2700
    assert spy.searches == 2


def test_exclusions_of_few_places_search_the_graph_at_any_dimension() -> None:
    """The graph search walks past at most the excluded places (0.2-0.3 us each), so one that
    excludes few, as a loop closure's newest places, stays a graph search on a small-dim map
    too, where scoring the whole map took 4x as long (30k 32-d places, 0.51 ms against 0.14);
    one that excludes no live place is the plain query (0.54 ms scanned against 0.03). Few
    places left are still scored."""
    db = unit(3000, seed=5)
    index = PlaceIndex(DIM, settings=IndexSettings(mode="hnsw", ef=64))
    index.add(db, stamps=np.arange(3000.0))
    spy = KnnSpy(index._hnsw)
    index._hnsw = spy
    q = db[2990]
    for kwargs, allowed in (({"exclude_newest": 50, "exclude_after_stamp": 2970.0}, 2950),
                            ({"exclude_ids": [10**9]}, 3000),
                            ({"exclude_after_stamp": 5000.0}, 3000)):
        got = index.query(q, k=5, **kwargs)
        assert [m.place_id for m in got] == [i for i, _ in exact_model(
            db, list(range(3000)), q, 5, set(range(allowed)))], kwargs
    assert spy.searches == 3
    got = index.query(q, k=5, exclude_after_stamp=99.0)
    assert [m.place_id for m in got] == [i for i, _ in exact_model(db, list(range(3000)), q, 5,
                                                                   set(range(100)))]
    assert spy.searches == 3


@pytest.mark.parametrize("path", SEARCH_PATHS)
def test_only_ids_restricts_the_search(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``only_ids``: an allow-list (places near a pose prior), with the other arguments;
    ids the map does not hold are ignored, an empty list allows nothing."""
    db = unit(600, seed=9)
    index = make_on(path, monkeypatch)
    index.add(db, stamps=np.arange(600.0))
    index.remove([7])
    near = [3, 7, 40, 41, 42, 300, 599, 10**12]
    q = db[41]
    got = index.query(q, k=4, only_ids=near)
    assert [m.place_id for m in got] == [i for i, _ in exact_model(
        db, list(range(600)), q, 4, {3, 40, 41, 42, 300, 599})]
    got = index.query(q, k=10, only_ids=iter(near), exclude_ids=[41], exclude_newest=1,
                      exclude_after_stamp=299.0, filter=lambda pid: pid != 40)
    assert sorted(m.place_id for m in got) == [3, 42]
    assert index.query(q, k=3, only_ids=[]) == [] and index.query(q, k=3, only_ids=[7]) == []
    batch = index.query(db[[3, 42]], k=1, only_ids=near)
    assert [hits[0].place_id for hits in batch] == [3, 42]
    for bad, match in (("41", "iterable"), (5, "iterable"), ([-1], "only_ids"),
                       ([1.5], "only_ids")):
        with pytest.raises(InvalidInputError, match=match):
            index.query(q, k=3, only_ids=bad)


def test_only_ids_of_a_few_places_score_them() -> None:
    """A few candidates out of thousands are scored, not searched for in the graph (a
    ``filter`` passing as few walks the whole graph: 19 ms with 40 of 30k 7168-d places)."""
    dim = 512
    db = unit(3000, dim=dim, seed=5)
    index = PlaceIndex(dim, settings=IndexSettings(mode="hnsw", ef=64))
    index.add(db)
    spy = KnnSpy(index._hnsw)
    index._hnsw = spy
    near = list(range(1000, 1040))
    got = index.query(db[2000], k=5, only_ids=near)
    assert [m.place_id for m in got] == [i for i, _ in exact_model(
        db, list(range(3000)), db[2000], 5, set(near))]
    assert spy.searches == 0


def test_a_filter_with_few_allowed_places_is_asked_in_score_order() -> None:
    """With exclusions that leave few places, the ``filter`` is asked about them best first,
    only until ``k`` passed (a costly filter, reading records, runs a few times)."""
    db = unit(2000, seed=6)
    index = make("hnsw")
    index.add(db, stamps=np.arange(2000.0))
    asked: list[int] = []

    def odd(pid: int) -> bool:
        asked.append(pid)
        return pid % 2 == 1

    got = index.query(db[10], k=3, exclude_after_stamp=199.0, filter=odd)
    want = exact_model(db, list(range(2000)), db[10], 3, set(range(1, 200, 2)))
    assert [m.place_id for m in got] == [i for i, _ in want]
    assert len(asked) < 40 and 10 in asked  # the best place (even) was asked, and refused


@pytest.mark.parametrize("path", SEARCH_PATHS)
def test_near_duplicates_rank_as_in_exact_mode(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A robot standing still adds near-duplicate places, whose scores differ by less than
    float16 rounding moves them (1e-4). Without rerank a graph of float32 vectors ranks them
    by those, as exact mode does; so must a scan of the places that exclusions leave (the
    float16 order is another: the third best place had the 13th best float16 score, and
    the 11 best were scored again)."""
    rng = np.random.default_rng(11)
    spot = unit(1, seed=12)[0]
    still = spot + rng.standard_normal((60, DIM)).astype(np.float32) * 3e-3
    db = np.concatenate([unit(300, seed=13), still / np.linalg.norm(still, axis=1, keepdims=True)])
    want_index = make("exact")
    index = make_on(path, monkeypatch)
    for idx in (index, want_index):
        idx.add(db, stamps=np.arange(360.0))
    for kwargs in ({"exclude_ids": [5]}, {"exclude_after_stamp": 355.0},
                   {"exclude_newest": 3, "filter": lambda pid: pid % 2 == 0}):
        got = index.query(spot, k=3, rerank=False, **kwargs)
        want = want_index.query(spot, k=3, **kwargs)
        assert [m.place_id for m in got] == [m.place_id for m in want], kwargs
        np.testing.assert_allclose([m.score for m in got], [m.score for m in want], atol=1e-6)


def test_a_scan_rescores_a_bounded_number_of_near_duplicates() -> None:
    """A robot standing still for 1000 keyframes: all 1000 are within float16 rounding of the
    k-th best, and hnswlib's get_items costs 20 us a place at 512-d (a scan took 20 ms a
    query). At most RESCORE_MAX_PLACES are re-scored from the graph's vectors."""
    dim = 512
    rng = np.random.default_rng(0)
    spot = unit(1, dim=dim, seed=1)[0]
    still = spot + 1e-3 * rng.standard_normal((1000, dim)).astype(np.float32)
    db = np.concatenate([still / np.linalg.norm(still, axis=1, keepdims=True),
                         unit(3000, dim=dim, seed=2)])
    index = PlaceIndex(dim, settings=IndexSettings(mode="hnsw", ef=64))
    index.add(db, stamps=np.arange(4000.0))
    spy = KnnSpy(index._hnsw)
    index._hnsw = spy
    asked = spy.items
    got = index.query(spot, k=5, exclude_after_stamp=999.0)
    assert index._few_allowed(1000) and len(got) == 5
    assert all(m.place_id < 1000 for m in got) and all(m.score > 0.99 for m in got)
    assert asked == [place_index.RESCORE_MAX_PLACES]
    asked.clear()  # the filter is asked until as many passed
    odd = index.query(spot, k=5, exclude_after_stamp=999.0, filter=lambda pid: pid % 2 == 1)
    assert all(m.place_id % 2 == 1 for m in odd) and asked == [place_index.RESCORE_MAX_PLACES]


def _reference(index: PlaceIndex, rows: list[list], q: np.ndarray, k: int, kwargs: dict,
               float16: bool) -> list[tuple[int, float]]:
    """The exact answer for ``kwargs`` from a model of the index's rows (``[id, stamp,
    removed]`` in add order), scored from the stored float16 descriptors or the graph's
    float32 vectors, ties to the older row (scores clipped as matches' are)."""
    from vpr_edge.index import exact

    newest, cutoff = kwargs.get("exclude_newest", 0), kwargs.get("exclude_after_stamp")
    excluded, user = set(kwargs.get("exclude_ids", ())), kwargs.get("filter")
    only = kwargs.get("only_ids")
    allowed = [r for r, (pid, stamp, removed) in enumerate(rows)
               if not removed and r < len(rows) - newest and pid not in excluded
               and (only is None or pid in only)
               and not (cutoff is not None and stamp > cutoff) and (user is None or user(pid))]
    if not allowed:
        return []
    ids = np.array([rows[r][0] for r in allowed], dtype=np.uint64)
    vectors = (index._records.desc16[allowed].astype(np.float32) if float16
               else np.asarray(index._hnsw.get_items(ids), dtype=np.float32))
    scores = vectors @ q
    order = exact.tie_order(np.array(allowed), scores)[:k]
    return [(int(ids[i]), min(1.0, float(scores[i]))) for i in order]


@pytest.mark.parametrize("dim,search_dim", [(32, 512), (96, 64)])
@pytest.mark.parametrize("seed", [0, 1])
def test_scanned_exclusions_are_exact_after_any_changes(dim: int, search_dim: int, seed: int,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Property: on a graph map (projected or not) changed by adds of ids out of order (up to
    2**63 - 1), removals, removed ids added again, rebuilds in the foreground and in the
    background, every combination of exclusions, filter, rerank, k and batch that the scan
    answers is the exact answer of a model of the rows, ties to the older place (duplicates
    and places without stamps included)."""
    monkeypatch.setattr(place_index, "FILTERED_EXACT_BUDGET", float("inf"))
    monkeypatch.setattr(place_index, "FILTERED_SCAN_PER_EXCLUDED", float("inf"))
    rng = np.random.default_rng(seed)
    index = PlaceIndex(dim, settings=IndexSettings(mode="hnsw", ef=64, search_dim=search_dim))
    rows: list[list] = []
    pool = [int(i) for i in rng.choice(2**63 - 2, size=600, replace=False)] + [2**63 - 1]
    rng.shuffle(pool)
    spots = unit(80, dim=dim, seed=seed)
    live: list[int] = []
    for step in range(6):
        ids = [pool.pop() for _ in range(int(rng.integers(20, 120)))]
        desc = spots[rng.integers(0, 80, len(ids))]  # duplicates
        stamps = [None if rng.random() < 0.1 else float(rng.integers(0, 400)) for _ in ids]
        index.add(desc, ids=ids, stamps=stamps)
        rows += [[pid, np.nan if t is None else t, False] for pid, t in zip(ids, stamps)]
        live += ids
        gone = [live.pop(int(rng.integers(len(live)))) for _ in range(len(live) // 6)]
        index.remove(gone)
        for row in rows:
            row[2] = row[2] or row[0] in gone
        if step % 2:  # some come back, as new rows
            back = gone[: len(gone) // 2]
            again = [float(rng.integers(0, 400)) for _ in back]
            index.add(unit(len(back), dim=dim, seed=100 + step), ids=back, stamps=again)
            rows += [[pid, t, False] for pid, t in zip(back, again)]
            live += back
        if step == 2:
            index.rebuild(background=True)
            index.wait_for_rebuild()
        elif step == 4:
            index.rebuild()
            rows = [row for row in rows if not row[2]]
    assert index._records.ids[: index._records.rows].tolist() == [row[0] for row in rows]
    projected = dim > search_dim
    for trial in range(25):
        kwargs: dict = {}
        if rng.random() < 0.6:
            kwargs["exclude_newest"] = int(rng.integers(1, len(rows) + 3))
        if rng.random() < 0.6:
            kwargs["exclude_after_stamp"] = float(rng.integers(-1, 400))
        if rng.random() < 0.5 or not kwargs:
            known = [row[0] for row in rows]
            kwargs["exclude_ids"] = [known[i] for i in rng.integers(0, len(known), 80)] + [7]
        if rng.random() < 0.3:
            kwargs["filter"] = lambda pid: pid % 3 != 0
        if rng.random() < 0.3:  # a pose prior's candidates (some removed, one unknown)
            known = [row[0] for row in rows]
            kwargs["only_ids"] = [known[i] for i in rng.integers(0, len(known), 40)] + [7]
        rerank = [None, True, False][int(rng.integers(3))]
        k = int(rng.integers(1, 25))
        queries = np.concatenate([spots[rng.integers(0, 80, 2)], unit(1, dim=dim, seed=trial)])
        got = index.query(queries, k=k, rerank=rerank, **kwargs)
        for q, hits in zip(queries, got):
            want = _reference(index, rows, q, k, kwargs, float16=projected or rerank is True)
            assert [m.place_id for m in hits] == [i for i, _ in want], (kwargs, rerank, k)
            np.testing.assert_allclose([m.score for m in hits], [s for _, s in want],
                                       atol=1e-6)


class GraphSpy:
    """Forwards to a hnswlib index and records each ``add_items`` call: ``calls`` holds
    (vectors, labels), ``adds`` the labels as lists."""

    def __init__(self, graph) -> None:
        self.graph = graph
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []
        self.adds: list[list[int]] = []

    def add_items(self, vectors, labels, **kw):
        self.calls.append((np.array(vectors), np.array(labels)))
        self.adds.append([int(label) for label in np.asarray(labels).ravel()])
        return self.graph.add_items(vectors, labels, **kw)

    def __getattr__(self, name: str):
        return getattr(self.graph, name)


def spied(**kw) -> tuple[PlaceIndex, GraphSpy]:
    index = make("hnsw", **kw)
    index._hnsw = GraphSpy(index._hnsw)
    return index, index._hnsw


def test_graph_gets_batches_in_a_seeded_random_order() -> None:
    """Route-order insertion makes a weak HNSW graph, so batch adds and rebuild() insert in
    a random order (the same each time); ids and records keep the caller's order."""
    db = unit(200)
    index, spy = spied(num_threads=1)  # a graph built on one thread is the same every run
    index.add(db[:150])
    index.add(db[150])  # a single add: nothing to shuffle
    (vectors, labels), (_, single), (_, refined) = spy.calls
    # the oldest 64 of the batch (REFINE_PER_ADD), re-inserted in the caller's order
    assert refined.tolist() == list(range(64))
    seed = index.settings.random_seed
    np.testing.assert_array_equal(labels, np.random.default_rng(seed).permutation(150))
    np.testing.assert_allclose(vectors, index._to_graph(db[:150])[labels], atol=1e-6)
    assert single.tolist() == [150]
    assert index.ids() == list(range(151))
    assert [hits[0].place_id for hits in index.query(db[:151], k=1)] == list(range(151))


@pytest.mark.parametrize("path", SEARCH_PATHS)
def test_fewer_allowed_than_k(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    db = unit(300)
    index = make_on(path, monkeypatch)
    index.add(db)
    got = index.query(db[0], k=10, filter=lambda pid: pid in (5, 9, 200))
    assert sorted(m.place_id for m in got) == [5, 9, 200]
    assert [m.place_id for m in got] == [i for i, _ in exact_model(db, list(range(300)), db[0],
                                                                  3, {5, 9, 200})]
    assert index.query(db[0], k=10, exclude_newest=300) == []
    assert len(index.query(db[0], k=1000)) == 300
    assert index.query(db[0], k=10, exclude_newest=295, filter=lambda pid: pid == 3) == [
        index.query(db[0], k=10, filter=lambda pid: pid == 3)[0]]
    assert make_on(path, monkeypatch).query(db[0], k=3) == []  # empty index


@pytest.mark.parametrize("mode", MODES)
def test_min_score(mode: str) -> None:
    db = unit(100)
    index = make(mode)
    index.add(db)
    got = index.query(db[0], k=10, min_score=0.99)
    assert [m.place_id for m in got] == [0]


@pytest.mark.parametrize("path", ["hnsw", "hnsw-scan"])
def test_hnsw_and_exact_agree_with_filters(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    db = unit(600, seed=7)
    a, b = make_on(path, monkeypatch), make("exact")
    for idx in (a, b):
        idx.add(db, stamps=np.arange(600.0), meta=[{"even": i % 2 == 0} for i in range(600)])
        idx.remove(list(range(0, 600, 7)))
    queries = unit(15, seed=8)
    for kwargs in ({}, {"exclude_newest": 40}, {"exclude_after_stamp": 300.0},
                   {"exclude_after_stamp": 100.0},
                   {"exclude_ids": range(100)}, {"filter": lambda pid: pid % 3 != 0},
                   {"exclude_newest": 500, "filter": lambda pid: pid % 3 != 0},
                   {"min_score": 0.2}):
        ra, rb = a.query(queries, k=6, **kwargs), b.query(queries, k=6, **kwargs)
        for x, y in zip(ra, rb):
            assert [m.place_id for m in x] == [m.place_id for m in y], kwargs
            np.testing.assert_allclose([m.score for m in x], [m.score for m in y], atol=1e-5)
            assert [m.meta for m in x] == [m.meta for m in y]


def test_capacity_grows_geometrically() -> None:
    index = PlaceIndex(DIM, settings=IndexSettings(mode="hnsw", initial_capacity=4, ef=100))
    db = unit(700)
    seen = []
    for i in range(300):
        index.add(db[i])
        seen.append(index.info()["capacity"])
    index.add(db[300:])
    assert sorted(set(seen)) == [4, 8, 16, 32, 64, 128, 256, 512]
    assert index.info()["capacity"] >= 700
    for i in (0, 299, 699):
        assert index.query(db[i], k=1)[0].place_id == i


def test_rerank_scores_come_from_the_float16_store() -> None:
    db = unit(500, seed=11)
    index = make("hnsw", rerank_factor=4)
    index.add(db)
    db16 = db.astype(np.float16).astype(np.float32)
    for q in unit(10, seed=12):
        got = index.query(q, k=5, rerank=True)
        want = exact_model(db16, list(range(500)), q, 5)
        assert [m.place_id for m in got] == [i for i, _ in want]
        np.testing.assert_allclose([m.score for m in got], [s for _, s in want], rtol=0,
                                   atol=1e-6)
        plain = index.query(q, k=5)  # float32 scores differ from float16 ones, a little
        assert max(abs(a.score - b.score) for a, b in zip(got, plain)) < 2e-3


def test_auto_mode_switches_and_keeps_results() -> None:
    index = PlaceIndex(DIM, settings=IndexSettings(mode="auto", exact_max_places=50, ef=200))
    db = unit(120)
    index.add(db[:50])
    assert index.info()["search"] == "exact"
    index.add(db[50:])
    assert index.info()["search"] == "hnsw"
    assert index.info()["memory_bytes"]["exact"] == 0
    index.remove(list(range(80)))
    assert index.info()["search"] == "exact"
    got = index.query(db[100], k=3)
    want = exact_model(db[80:], list(range(80, 120)), db[100], 3)
    assert [m.place_id for m in got] == [i for i, _ in want]
    np.testing.assert_allclose([m.score for m in got], [s for _, s in want], atol=1e-5)


def test_rebuild_drops_removed_and_keeps_answers() -> None:
    db = unit(300)
    index = make("hnsw")
    index.add(db, meta=[{"i": i} for i in range(300)])
    index.remove(list(range(0, 300, 2)))
    assert index.info()["rows"] == 300
    index.rebuild()
    info = index.info()
    assert info["rows"] == 150 and info["places"] == 150 and index.ids() == list(range(1, 300, 2))
    for i in (1, 151, 299):
        m = index.query(db[i], k=1)[0]
        assert m.place_id == i and m.meta == {"i": i} and abs(m.score - 1) < 2e-3


def test_filter_may_read_but_not_write() -> None:
    index = make("hnsw")
    db = unit(50)
    index.add(db, meta=[{"ok": i % 2 == 0} for i in range(50)])
    got = index.query(db[1], k=5, filter=lambda pid: index.get(pid).meta["ok"])
    assert got and all(m.place_id % 2 == 0 for m in got)
    with pytest.raises(InvalidInputError, match="inside"):
        index.query(db[1], k=5, filter=lambda pid: bool(index.add(unit(1, seed=9)[0])))
    assert len(index) == 50

    class Boom(Exception):
        pass

    def boom(pid: int) -> bool:
        raise Boom()

    with pytest.raises(Boom):
        index.query(db[1], k=5, filter=boom)
    assert index.query(db[1], k=1)[0].place_id == 1  # still usable


@pytest.mark.parametrize("kwargs", [
    {"k": 0}, {"k": 2.5}, {"min_score": float("nan")}, {"exclude_newest": -1},
    {"exclude_after_stamp": "now"}, {"filter": 3}, {"exclude_ids": "12"}, {"rerank": "yes"},
])
def test_bad_query_arguments(kwargs) -> None:
    index = make("hnsw")
    index.add(unit(5))
    with pytest.raises(InvalidInputError):
        index.query(unit(1)[0], **kwargs)


@pytest.mark.parametrize("ids, expected", [
    ([3, 1, 3], {1, 3}), ((0, 2**63 - 1), {0, 2**63 - 1}), (range(5, 8), {5, 6, 7}),
    (iter([4]), {4}), (np.array([9, 2], dtype=np.uint64), {2, 9}), ([1, np.int32(2)], {1, 2}),
    (frozenset(), set()),
])
def test_id_sets_accept_ints_of_any_kind(ids, expected) -> None:
    got = validate.id_set(ids, "only_ids")
    assert got == expected and all(type(v) is int for v in got)


@pytest.mark.parametrize("ids, match", [
    ([1, True], "True"), ([1, -1], "-1"), ([2**63], "outside"), ([1, 2.0], "2.0"),
    (np.array([2**63], dtype=np.uint64), "outside"), (np.array([1.0]), "1.0"),
    (np.array([True]), "True"), (np.zeros((2, 2), dtype=np.int64), "only_ids"),
    ("12", "iterable"), (7, "iterable"), ([1, "2"], "'2'"),
    (np.array([1, 2], dtype="datetime64[ns]"), "datetime64"),  # tolist(): ints
    (np.ma.array([1, 2], mask=[False, True]), "masked"),  # tolist(): None
])
def test_id_sets_refuse_what_one_id_refuses(ids, match) -> None:
    with pytest.raises(InvalidInputError, match=match):
        validate.id_set(ids, "only_ids")


@pytest.mark.parametrize("count", [3, 10, 100, 400])  # one by one, and in bulk (520 rows)
def test_the_rows_of_ids_are_those_of_live_places(count: int) -> None:
    """Exclusions and ``only_ids`` mark the rows of the ids given, looked up one by one or in
    bulk: removed places, ids added again (a new row) and ids the map never had included."""
    index = make("hnsw")
    index.add(unit(500), ids=range(1000, 1500))
    index.remove(range(1000, 1100))
    index.add(unit(20, seed=3), ids=range(1000, 1020))  # again, in new rows
    rng = np.random.default_rng(count)
    ids = set(rng.integers(900, 1600, count).tolist())
    rows = index._records.rows
    marked = index._rows_of_ids(ids, rows)
    live = ~index._records.removed[:rows]
    expected = np.isin(index._records.ids[:rows], list(ids))
    assert np.array_equal(marked & live, expected & live)
    assert (len(ids) * place_index.IDS_IN_BULK_SHARE > rows) == (count >= 100)


def test_large_id_sets_are_checked_in_bulk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain ints skip the one-at-a-time check (1.3 us each: 10k ids of ``only_ids`` took 6
    ms a query); anything else still gets it."""
    index = make("hnsw")
    index.add(unit(50), ids=range(100, 150))
    calls = []
    real = validate.place_id
    monkeypatch.setattr(validate, "place_id", lambda v, what="id": calls.append(v) or real(v))
    q = unit(1, seed=4)[0]
    assert len(index.query(q, k=60, only_ids=set(range(1000, 11_000)) | {120})) == 1
    assert len(index.query(q, k=60, exclude_ids=np.arange(125, 10_000))) == 25
    assert calls == []
    assert len(index.query(q, k=60, only_ids=[np.int64(120), 121])) == 2
    assert calls == [120, 121]


@pytest.mark.parametrize("kwargs", [
    {"M": 1}, {"ef": 0}, {"mode": "fast"}, {"growth_factor": 1.0}, {"norm_tolerance": 0},
    {"rerank_factor": 0}, {"initial_capacity": 0}, {"ef": 1.5},
    # values beyond hnswlib's or numpy's integers: raw TypeErrors/OverflowErrors later, or
    # (ef) a map that saves but can never be opened again
    {"ef": 2**64}, {"ef_construction": 2**64}, {"random_seed": 2**70}, {"num_threads": 2**70},
    {"growth_factor": float("inf")}, {"growth_factor": 1e300}, {"growth_factor": True},
    {"initial_capacity": 2**40},
])
def test_bad_settings(kwargs) -> None:
    with pytest.raises(InvalidInputError):
        IndexSettings(**kwargs)


def test_set_ef_refuses_what_a_saved_map_could_not_be_opened_with(tmp_path) -> None:
    index = PlaceIndex(DIM)
    index.add(unit(10))
    with pytest.raises(InvalidInputError, match="ef must be in"):
        index.set_ef(2**64)
    index.save(tmp_path / "m")
    assert len(PlaceIndex.open(tmp_path / "m")) == 10


@pytest.mark.parametrize("kwargs, match", [
    ({"stamps": 10**400}, "not finite"),
    ({"poses": (10**400,) * 7}, "beyond float range"),
])
def test_numbers_beyond_float_are_refused_clearly(kwargs, match) -> None:
    """They raised a raw OverflowError."""
    with pytest.raises(InvalidInputError, match=match):
        PlaceIndex(DIM).add(unit(1)[0], **kwargs)
    index = PlaceIndex(DIM)
    index.add(unit(1))
    with pytest.raises(InvalidInputError, match="min_score: 1000.*not finite"):
        index.query(unit(1)[0], min_score=10**400)


def test_circular_meta_is_refused_clearly() -> None:
    """It raised a raw RecursionError (the key check recursed before the guarded dump)."""
    circular: dict = {}
    circular["self"] = circular
    index = PlaceIndex(DIM)
    with pytest.raises(InvalidInputError, match="nested too deeply"):
        index.add(unit(1)[0], meta=circular)
    assert len(index) == 0


@pytest.mark.parametrize("path", [5, b"/tmp/map", object()])
def test_a_path_that_is_not_one_is_refused_clearly(path) -> None:
    """A raw TypeError from os.fspath before."""
    index = PlaceIndex(DIM)
    index.add(unit(1))
    with pytest.raises(InvalidInputError, match="a path must be a str"):
        index.save(path)
    with pytest.raises(InvalidInputError, match="a path must be a str"):
        PlaceIndex.open(path)


def test_set_ef_and_info() -> None:
    index = PlaceIndex(DIM, fingerprint="abc")
    index.add(unit(10))
    index.set_ef(123)
    info = index.info()
    assert info["settings"]["ef"] == 123 and index._hnsw.ef == info["ef_in_use"] == 64
    index.set_ef(48)  # below what the scaling gives: the most it uses
    assert index._hnsw.ef == index.info()["ef_in_use"] == 48
    assert info["fingerprint"] == "abc" and info["places"] == 10 and info["dim"] == DIM
    with pytest.raises(InvalidInputError):
        PlaceIndex(0)
    with pytest.raises(InvalidInputError):
        PlaceIndex(DIM, fingerprint=123)  # type: ignore[arg-type]


def test_each_single_add_refines_the_one_before() -> None:
    db = unit(5, seed=4)
    index, spy = spied()
    for row in db:
        index.add(row)
    assert spy.adds == [[0], [1], [0], [2], [1], [3], [2], [4], [3]]
    np.testing.assert_allclose(spy.graph.get_items([1]), db[1:2], atol=1e-6)  # same vector
    assert [hits[0].place_id for hits in index.query(db, k=1)] == list(range(5))


def test_small_batches_are_refined_by_the_next_add_and_large_ones_are_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from vpr_edge.index import place_index

    monkeypatch.setattr(place_index, "REFINE_MAX_PLACES", 4)
    db = unit(12, seed=4)
    index, spy = spied()
    index.add(db[0])
    index.add(db[1:4])
    index.add(db[4])
    assert spy.adds[0] == [0] and sorted(spy.adds[1]) == [1, 2, 3]  # a batch goes in shuffled
    assert spy.adds[2:] == [[0], [4], [1, 2, 3]]  # and is re-inserted by the next add
    index.add(db[5:10])  # more than REFINE_MAX_PLACES: not refined later
    index.add(db[10])
    assert sorted(spy.adds[5]) == [5, 6, 7, 8, 9] and spy.adds[6] == [4]
    assert spy.adds[7:] == [[10]]
    index.remove([10])
    index.add(db[11])
    assert spy.adds[8:] == [[11]]


def test_an_add_re_inserts_a_bounded_share_of_a_batch_oldest_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A keyframe added after a batch of 1024 places re-inserted the whole batch under the
    write lock (0.45-0.6 s at 7168 dims, queries waiting); an add of n places now re-inserts
    at most max(REFINE_PER_ADD, n) queued places, the oldest first."""
    from vpr_edge.index import place_index

    monkeypatch.setattr(place_index, "REFINE_PER_ADD", 2)
    db = unit(12, seed=4)
    index, spy = spied()
    index.add(db[:5])
    for row in db[5:8]:
        index.add(row)
    assert spy.adds[1:] == [[5], [0, 1], [6], [2, 3], [7], [4], [5]]
    index.add(db[8:12])  # 4 places: re-inserts up to 4 queued ones
    assert spy.adds[9] == [6] and spy.adds[10] == [7] and len(spy.adds) == 11
    index.add(db[0], ids=100)
    index.add(db[1], ids=101)
    assert spy.adds[11:] == [[100], [8, 9], [101], [10, 11]]  # in the batch's order
    assert [hits[0].place_id for hits in index.query(db[1:12], k=1)] == list(range(1, 12))


def test_refinement_never_undeletes_or_reverts_a_place() -> None:
    db = unit(6, seed=4)
    index, spy = spied()
    index.add(db[0])
    index.add(db[1])
    index.remove([1])
    index.add(db[2])
    assert spy.adds == [[0], [1], [0], [2]]  # 1 was removed: re-adding it would undelete it
    labels, _ = spy.graph.knn_query(db[1], k=2)
    assert 1 not in index and 1 not in labels[0].tolist()
    index.remove([2])
    index.add(db[5], ids=2)  # the same id, a new place
    assert spy.adds[4:] == [[2]]  # the old place 2 is not re-added with its old vector
    index.add(db[3])
    assert spy.adds[5:] == [[3], [2]]  # the new place 2 is, with its own
    np.testing.assert_allclose(spy.graph.get_items([2]), db[5:6], atol=1e-6)
    assert index.query(db[5], k=1)[0].place_id == 2


def test_refinement_can_be_switched_off() -> None:
    index, spy = spied(refine_adds=False)
    for row in unit(3, seed=4):
        index.add(row)
    assert spy.adds == [[0], [1], [2]]
    with pytest.raises(InvalidInputError, match="refine_adds"):
        IndexSettings(refine_adds=1)


@pytest.mark.parametrize(("places", "ef"), [(1, 64), (10_000, 64), (20_000, 96), (30_000, 112),
                                            (50_000, 144), (90_000, 192), (10**6, 192)])
def test_the_search_ef_grows_with_the_map(places: int, ef: int) -> None:
    assert IndexSettings().search_ef(places) == ef
    assert IndexSettings(ef_scaling=False).search_ef(places) == 192
    assert IndexSettings(ef=100).search_ef(places) == min(ef, 100)


def test_the_graph_searches_with_the_ef_for_its_size(tmp_path) -> None:
    from vpr_edge.index import settings as index_settings

    small = index_settings.SCALED_EF_PLACES
    try:
        index_settings.SCALED_EF_PLACES = 100  # the same rule, at 1/100 the size
        index = PlaceIndex(DIM, settings=IndexSettings(mode="hnsw", ef=500))
        index.add(unit(100))
        assert index.info()["ef_in_use"] == 64
        for row in unit(300, seed=1):
            index.add(row)
        assert index.info()["ef_in_use"] == 128  # 64 * sqrt(400 / 100)
        index.remove(list(range(300)))
        assert index.info()["ef_in_use"] == 64
        index.add(unit(800, seed=2))
        index.rebuild()
        assert index.info()["ef_in_use"] == 16 * np.ceil(64 * 3 / 16)  # 900 places
        index.save(tmp_path / "m")
        opened = PlaceIndex.open(tmp_path / "m")
        assert opened.info()["ef_in_use"] == 192 and opened.settings.ef == 500
        fixed = PlaceIndex.open(tmp_path / "m",
                                settings=IndexSettings(ef=300, ef_scaling=False))
        assert fixed.info()["ef_in_use"] == 300  # settings= gives the runtime fields
    finally:
        index_settings.SCALED_EF_PLACES = small
    with pytest.raises(InvalidInputError, match="ef_scaling"):
        IndexSettings(ef_scaling=1)


def test_saving_over_another_models_map_is_refused(tmp_path) -> None:
    """It succeeded, and the map (which this model could never open) was gone."""
    from vpr_edge.errors import ModelMismatchError

    ours = PlaceIndex(4, fingerprint="model-a")
    ours.add(np.eye(4, dtype=np.float32))
    ours.save(tmp_path / "map")
    theirs = PlaceIndex(4, fingerprint="model-b")
    theirs.add(np.eye(4, dtype=np.float32)[:1])
    with pytest.raises(ModelMismatchError, match="another model"):
        theirs.save(tmp_path / "map")
    assert len(PlaceIndex.open(tmp_path / "map", fingerprint="model-a")) == 4
    ours.add(np.eye(4, dtype=np.float32)[:1])
    ours.save(tmp_path / "map")  # its own model's map: an update
    assert len(PlaceIndex.open(tmp_path / "map", fingerprint="model-a")) == 5


@pytest.mark.parametrize("mode", ["exact", "hnsw"])
def test_scores_stay_within_minus_one_and_one(mode: str) -> None:
    """float16 storage leaves unit descriptors slightly off norm 1: a place queried with its
    own descriptor scored up to 1.00017 (the documented range is -1..1)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((500, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = PlaceIndex(64, settings=IndexSettings(mode=mode, rerank=True))
    index.add(x)
    index.rebuild()
    scores = [m.score for row in index.query(np.concatenate([x, -x]), k=3) for m in row]
    assert max(scores) <= 1.0 and min(scores) >= -1.0
    assert max(scores) == pytest.approx(1.0, abs=1e-3)


def test_a_sliding_window_map_drops_its_removed_places(caplog) -> None:
    """Removed places were kept for ever (tombstones): a map held at 300 live places while
    thousands were removed and added grew without bound, and exact search scored every
    removed row (29x slower at 1000 live after 9600 churned). Now a map searched exactly
    drops them once they outnumber the live ones (and number COMPACT_MIN_REMOVED)."""
    from vpr_edge.index.settings import COMPACT_MAX_LIVE, COMPACT_MIN_REMOVED

    index = PlaceIndex(DIM)
    window = 300
    data = unit(4 * COMPACT_MIN_REMOVED, seed=5)
    ids = index.add(data[:window], stamps=np.arange(window, dtype=float))
    most_rows = 0
    for i in range(window, len(data)):
        index.remove(ids[0])
        ids = ids[1:] + index.add(data[i], stamps=float(i))
        most_rows = max(most_rows, index.info()["rows"])
    assert index.info()["search"] == "exact" and len(index) == window
    assert most_rows <= window + COMPACT_MIN_REMOVED + 1  # bounded, not 4300
    assert index.info()["removed_rows"] < COMPACT_MIN_REMOVED
    got = index.query(data[-window:], 1)  # every live place still found, with its record
    assert [m[0].place_id for m in got] == ids
    assert index.get(ids[-1]).stamp == float(len(data) - 1)
    # a map of more than COMPACT_MAX_LIVE places searched through its graph only warns: its
    # rebuild holds the index for seconds
    live = COMPACT_MAX_LIVE + 5  # at the end
    big = PlaceIndex(DIM, settings=IndexSettings(mode="hnsw"))
    big_ids = big.add(unit(2 * live + 3, seed=6))
    with caplog.at_level("WARNING", logger="vpr_edge.index.place_index"):
        big.remove(big_ids[:live + 2])  # more removed than live (live + 1): a warning
        big.remove(big_ids[live + 2])  # and not again
    assert big.info()["removed_rows"] == live + 3 and len(big) == live
    assert caplog.text.count("PlaceIndex.rebuild() drops them") == 1  # said once
    big.rebuild()
    assert big.info()["removed_rows"] == 0


@pytest.mark.parametrize("mode", ["hnsw", "auto"])
def test_an_id_added_again_after_a_rebuild_gets_its_new_descriptor(tmp_path, mode) -> None:
    """The next add re-inserts the previous add's places (refine_adds), found by id and row.
    A rebuild renumbers rows but kept that note: an id removed, rebuilt away and added again
    at its old row number was re-inserted with its OLD descriptor (wrong matches in the
    graph, and in a saved map's index.hnsw)."""
    a, b = np.eye(DIM, dtype=np.float32)[:2]
    index = PlaceIndex(DIM, settings=IndexSettings(mode=mode))
    index.add(a, ids=0)
    index.remove(0)
    index.rebuild()
    index.add(b, ids=0)  # (an add refines the previous add's places)
    best = index.query(b, 1)[0]
    assert (best.place_id, round(best.score, 4)) == (0, 1.0)
    reopened = PlaceIndex.open(index.save(tmp_path / "m"), settings=IndexSettings(mode="hnsw"))
    best = reopened.query(b, 1)[0]
    assert (best.place_id, round(best.score, 4)) == (0, 1.0)



def test_a_map_held_at_the_exact_search_limit_does_not_switch_at_every_change() -> None:
    """A sliding window of exactly exact_max_places places (add one, remove the oldest)
    dropped the float32 copy at every add and made it again at every remove (41 ms per
    remove at 7168-d); a map searched exactly keeps it up to 10% beyond the limit."""
    from vpr_edge.index import place_index

    index = PlaceIndex(DIM, settings=IndexSettings(mode="auto", exact_max_places=50))
    db = unit(80)
    index.add(db[:50])
    copy = index._exact
    for i in range(50, 60):  # the window slides: 51 places, then 50 again
        index.add(db[i])
        index.remove([i - 50])
        assert index.info()["search"] == "exact" and index._exact is copy
    index.add(db[60:65])  # 55 places: within the margin
    assert len(index) == int(50 * place_index.EXACT_KEEP_FACTOR)
    assert index.info()["search"] == "exact"
    index.add(db[65])  # 56: beyond it, the graph
    assert index.info()["search"] == "hnsw"
    index.remove([10])  # 55, over the limit and not searched exactly: the graph still
    assert index.info()["search"] == "hnsw"
    index.remove([11, 12, 13, 14, 15])  # 50: exact again
    assert index.info()["search"] == "exact"


def test_a_small_map_searched_through_its_graph_drops_removed_places_by_itself() -> None:
    """Only maps searched exactly were compacted by remove(): once maps of the default
    7168-d model went to HNSW above 285 places, a sliding window of 500 places held every
    place it ever removed (6500 rows after 6000 turned over, 0.72 ms a query instead of
    0.14)."""
    from vpr_edge.index.settings import COMPACT_MAX_LIVE, COMPACT_MIN_REMOVED

    index = PlaceIndex(DIM, settings=IndexSettings(exact_max_places=100))
    db = unit(2000)
    index.add(db[:500])
    for start in range(500, 2000, 50):  # slide: add 50, remove the 50 oldest
        index.add(db[start:start + 50], ids=range(start, start + 50))
        index.remove(range(start - 500, start - 450))
        assert index.info()["search"] == "hnsw"
        assert index.info()["rows"] <= 500 + COMPACT_MIN_REMOVED + 50
    assert len(index) == 500 <= COMPACT_MAX_LIVE
    assert index.query(db[1990], k=1)[0].place_id == 1990


def test_long_descriptors_are_searched_exactly_only_while_that_is_as_fast() -> None:
    """Exact search reads every value: ``auto`` searched 2000 places exactly whatever their
    dimension, and at 7168 dims (the default model) that took 1.0 ms where HNSW took 0.13."""
    from vpr_edge.index.settings import EXACT_MAX_VALUES

    default = IndexSettings()
    assert default.exact_limit(512) == default.exact_limit(1024) == 2000
    assert default.exact_limit(7168) == EXACT_MAX_VALUES // 7168 == 285
    assert IndexSettings(exact_max_places=5000).exact_limit(7168) == 5000
    assert IndexSettings(exact_max_places=0).exact_limit(8) == 0
    with pytest.raises(InvalidInputError, match="exact_max_places must be None or an int"):
        IndexSettings(exact_max_places=-1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((320, 7168)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = PlaceIndex(7168)
    index.add(x[:285])
    assert index.info()["search"] == "exact" and index.info()["exact_limit"] == 285
    index.add(x[285:])  # (beyond the 10% a map searched exactly keeps it)
    assert index.info()["search"] == "hnsw" and index.query(x[290], 1)[0].place_id == 290


@pytest.mark.parametrize("mode", ["exact", "hnsw"])
def test_equal_places_come_back_in_the_order_they_were_added_whatever_their_ids(mode: str
                                                                                ) -> None:
    """hnswlib orders equal scores by label (the place id): with a removed id added again
    after another place, HNSW gave [3, 900, 0] where exact search gave [900, 3, 0]."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = PlaceIndex(32, settings=IndexSettings(mode=mode))
    index.add(x)
    index.remove([3])
    index.add(x[3], ids=900)  # the place seen again, added first
    index.add(x[3], ids=3)  # ... and the old id added again afterwards
    assert [m.place_id for m in index.query(x[3], k=3)][:2] == [900, 3]
    assert [m.place_id for m in index.query(x[3], k=1)] == [900]


def test_scores_a_last_bit_apart_are_ties_ordered_by_row() -> None:
    """The same descriptor added alone and in a batch is normalised in another order, and a
    matrix product sums some rows in another order: equal places scored 1.0 and 0.99999994,
    and came back out of insertion order."""
    from vpr_edge.index import exact

    scores = np.array([0.5, 1.0, np.nextafter(np.float32(1.0), np.float32(0)), 1.0, 0.9],
                      dtype=np.float32)
    assert [row for row, _ in exact.top_k(scores, 4)] == [1, 2, 3, 4]
    assert [row for row, _ in exact.top_k(scores, 2)] == [1, 2]
    assert exact.ranked([7, 3, 5], [1.0, float(scores[2]), 0.2]) == [1, 0, 2]


def test_near_ties_never_chain_results_out_of_score_order() -> None:
    """Runs of ties were chained (each score within 1e-6 of the next), so 200 nearly equal
    places (a robot standing still) came back 2e-5 out of score order, and the top-1 changed
    with k. A tie is a score within 1e-6 of the best one not yet placed."""
    from vpr_edge.index import exact

    scores = (1.0 - np.arange(20)[::-1] * 0.9e-6).astype(np.float64)  # row 19 best
    for k in (1, 3, 20):
        got = exact.top_k(scores, k)
        assert got[0][0] == exact.top_k(scores, 1)[0][0] == 18  # 19 and 18 tie: lower row
        ranked_scores = [s for _, s in got]
        assert all(a - b >= -exact.TIE_TOLERANCE for a, b in zip(ranked_scores,
                                                                  ranked_scores[1:]))
        assert max(ranked_scores) - ranked_scores[0] <= exact.TIE_TOLERANCE
    python = exact.ranked(list(range(20)), scores.tolist())
    assert python == [int(i) for i in exact.tie_order(np.arange(20), scores)]
    assert exact.top_k(np.full(3, np.nan, np.float32), 2) == []
    rng = np.random.default_rng(1)
    db = unit(1, seed=3)[0] + rng.normal(0, 1e-4, (200, DIM)).astype(np.float32)
    index = PlaceIndex(DIM, settings=IndexSettings(mode="exact"))
    index.add(db / np.linalg.norm(db, axis=1, keepdims=True))
    got = index.query(db[0] / np.linalg.norm(db[0]), k=200)
    assert got[0].place_id == index.query(db[0] / np.linalg.norm(db[0]), k=1)[0].place_id
    assert all(a.score - b.score >= -2e-6 for a, b in zip(got, got[1:]))


def test_info_says_when_the_map_was_saved(tmp_path) -> None:
    """After a crash the places added since the last save are gone; the map said nothing of
    when that save was. ``info()["saved_at"]`` is the manifest's time of the save the index
    read or wrote last (None before any); a Localizer opening the map logs it."""
    import json

    index = PlaceIndex(DIM)
    assert index.info()["saved_at"] is None
    index.add(unit(3))
    index.save(tmp_path / "map")
    written = json.loads((tmp_path / "map" / "manifest.json").read_text())["updated_at"]
    assert index.info()["saved_at"] == written
    assert PlaceIndex.open(tmp_path / "map").info()["saved_at"] == written
