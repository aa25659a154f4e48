"""The index when memory runs out (a Jetson's 8 GB, ``ulimit -v``): a clear error, nothing
changed in memory or on disk, and no more memory asked for than the map needs."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from vpr_edge.errors import MapCorruptError, MapError, OutOfMemoryError
from vpr_edge.index import IndexSettings, PlaceIndex, place_index, records

DIM = 512


def unit(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_an_add_that_runs_out_of_memory_changes_nothing(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The records grew inside the part of add() that cannot be undone, and their columns one
    by one: a MemoryError left the index broken (every later query raised KeyError, every add
    IndexError) and the places added since the last save could not be saved."""
    index = PlaceIndex(DIM, settings=IndexSettings(mode="hnsw", initial_capacity=64))
    db = unit(100)
    index.add(db[:64], stamps=np.arange(64.0), poses=[(0.0, 0.0)] * 64)
    index.save(tmp_path / "map")
    real_grow = records._grow

    def grow(arr, capacity, rows, fill=0):
        if arr.ndim == 2 and arr.dtype == np.float16:  # the descriptors: the big column
            raise MemoryError(f"Unable to allocate {capacity * DIM * 2} bytes")
        return real_grow(arr, capacity, rows, fill)

    monkeypatch.setattr(records, "_grow", grow)
    with pytest.raises(OutOfMemoryError, match="add.. of 1 place.*not enough memory"):
        index.add(db[64], stamps=64.0)
    assert len(index) == 64 and index._records.capacity == 64
    assert index.query(db[3], k=1)[0].place_id == 3
    monkeypatch.setattr(records, "_grow", real_grow)
    index.add(db[64:], stamps=np.arange(64.0, 100.0), poses=[(1.0, 1.0)] * 36)
    index.save()
    reopened = PlaceIndex.open(tmp_path / "map")
    assert len(reopened) == 100 and reopened.get(99).pose == (1.0, 1.0)


@pytest.mark.parametrize("failure", [
    RuntimeError("Not enough memory: loadIndex failed to allocate level0"),
    MemoryError("Unable to allocate 1.00 GiB"),
])
def test_a_map_too_large_for_memory_is_not_called_damaged(tmp_path: Path, failure,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Out of memory on open said "the map is damaged" and advised `vpr-edge map repair`
    (code that discards damaged maps would have discarded a sound one)."""
    index = PlaceIndex(DIM, settings=IndexSettings(mode="hnsw"))
    index.add(unit(50))
    index.save(tmp_path / "map")

    class Graph:
        def __init__(self, *args, **kwargs):
            pass

        def load_index(self, *args, **kwargs):
            raise failure

    monkeypatch.setattr(place_index.hnswlib, "Index", Graph)
    with pytest.raises(OutOfMemoryError, match="opening the map .*not enough memory") as info:
        PlaceIndex.open(tmp_path / "map")
    assert not isinstance(info.value, MapCorruptError)
    assert isinstance(info.value, MemoryError)  # `except MemoryError` still catches it


def test_opening_a_map_holds_its_descriptors_once(tmp_path: Path) -> None:
    """Opening read the descriptors into room for a quarter more places, then allocated that
    room a second time; the manifest (2 KB) was read into a 64 MiB buffer. Under a limit on
    address space (ulimit -v) a map that fitted failed to open, and saves failed."""
    index = PlaceIndex(DIM, settings=IndexSettings(mode="hnsw"))
    index.add(unit(3000))
    index.save(tmp_path / "map")
    descriptors = records.open_capacity(3000) * DIM * 2  # float16, with the room to grow
    tracemalloc.start()
    try:
        reopened = PlaceIndex.open(tmp_path / "map")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        reopened.save(tmp_path / "copy")
        _, save_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * descriptors, (peak, descriptors)
    assert save_peak < 16 << 20, save_peak



@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux's VmHWM")
def test_opening_a_map_reads_its_graph_file_without_mapping_it(tmp_path: Path) -> None:
    """The graph checks at open memory-mapped index.hnsw and touched every page of it: the
    open peaked a whole graph file above the open map (a 100k map: 197 MiB, on a Jetson)."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    places = rng.standard_normal((5000, 2048)).astype(np.float32)
    places /= np.linalg.norm(places, axis=1, keepdims=True)
    index = PlaceIndex(2048, settings=IndexSettings(mode="hnsw", search_dim=None, M=8,
                                                    ef_construction=32))
    index.add(places)
    index.save(tmp_path / "map")
    graph = (tmp_path / "map" / "index.hnsw").stat().st_size  # 41 MB
    probe = ("from vpr_edge.index import PlaceIndex; import sys; "
             "index = PlaceIndex.open(sys.argv[1]); "
             "kb = {l.split(':')[0]: int(l.split()[1]) for l in open('/proc/self/status') "
             "if l.startswith(('VmHWM', 'VmRSS'))}; print(kb['VmHWM'] - kb['VmRSS'])")
    above = int(subprocess.run([sys.executable, "-c", probe, str(tmp_path / "map")],
                               capture_output=True, text=True, check=True).stdout) << 10
    assert above < graph / 4, (above, graph)


def test_graph_threads_follow_the_cpu_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    """num_threads=0 became hnswlib's -1, which counts every core of the machine, not the
    ones `taskset` or a cgroup CPU set leave the process."""
    monkeypatch.setattr(place_index.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    index = PlaceIndex(DIM, settings=IndexSettings(mode="hnsw"))
    assert index._threads(500) == 1 and index._threads(1) == 1
    assert PlaceIndex(DIM, settings=IndexSettings(num_threads=4))._threads(500) == 4


def test_an_add_whose_own_arrays_do_not_fit_changes_nothing(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """The batch's own arrays (its graph sketch, its float16 copy) were made inside the part
    of add() that cannot be undone: running out there left the index unsaveable."""
    x = np.random.default_rng(1).standard_normal((40, 1024)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = PlaceIndex(1024, settings=IndexSettings(mode="hnsw", search_dim=512))
    index.add(x[:30])
    real_project = place_index.project

    def project(*args, **kwargs):
        raise MemoryError("Unable to allocate the sketch")

    monkeypatch.setattr(place_index, "project", project)
    with pytest.raises(OutOfMemoryError, match="nothing was changed"):
        index.add(x[30:])
    monkeypatch.setattr(place_index, "project", real_project)
    assert len(index) == 30 and index.query(x[5], k=1)[0].place_id == 5
    index.add(x[30:])
    index.save(tmp_path / "map")
    assert len(PlaceIndex.open(tmp_path / "map")) == 40


class InsertFailingHalfway:
    """An hnswlib graph whose insert runs out of memory after ``entered`` places of the
    batch are in (as hnswlib's does: the failing place's label is in the graph, half made,
    and with several threads places after it may be in too)."""

    def __init__(self, graph, entered: int) -> None:
        self._graph = graph
        self._entered = entered

    def add_items(self, vectors, labels, num_threads=-1):
        if self._entered:
            self._graph.add_items(vectors[:self._entered], labels[:self._entered])
        raise RuntimeError("Not enough memory: addPoint failed to allocate linklist")

    def __getattr__(self, name):
        return getattr(self._graph, name)


@pytest.mark.parametrize(("failed", "entered"), [
    ([100], 1), ([7], 1), ([7, 100, 101, 102, 103, 104], 3), ([100, 101, 102, 103], 0)],
    ids=["one place", "a removed id again", "a batch halfway", "a batch before any place"])
def test_an_add_that_hnswlib_stops_halfway_leaves_the_map_saveable(
        tmp_path: Path, failed: list[int], entered: int) -> None:
    """hnswlib's insert ran out of memory with some of the batch's places in the graph:
    add() marked the index broken and save() refused from then on, so every place added
    since the last save was lost at shutdown."""
    db = unit(60, seed=3)
    index = PlaceIndex(DIM, settings=IndexSettings(mode="hnsw"))
    index.add(db[:40], ids=range(40), stamps=np.arange(40.0))
    index.save(tmp_path / "map")
    index.add(db[40:50], ids=range(40, 50))  # not saved yet: must survive the failure
    index.remove([7])
    live = set(range(50)) - {7}
    batch = db[50:50 + len(failed)]
    index._hnsw = InsertFailingHalfway(index._hnsw, entered)
    with pytest.raises(OutOfMemoryError, match=r"add\(\) of .*not enough memory"):
        index.add(batch, ids=failed)
    rebuilt = not isinstance(index._hnsw, InsertFailingHalfway)
    assert rebuilt == (entered > 0 or 7 in failed)  # untouched: kept as it is
    if not rebuilt:
        index._hnsw = index._hnsw._graph
    for found in (index, PlaceIndex.open(index.save())):
        assert len(found) == 49 and set(found.ids()) == live
        assert [found.query(db[i], k=1)[0].place_id for i in sorted(live)] == sorted(live)
        for q in batch:
            assert {m.place_id for m in found.query(q, k=10)} <= live
    assert index.add(batch, ids=failed) == failed  # the same ids, now whole
    assert [index.query(q, k=1)[0].place_id for q in batch] == failed
    assert set(PlaceIndex.open(index.save()).ids()) == live | set(failed)


def test_an_add_that_hnswlib_stops_halfway_without_memory_to_rebuild_is_never_saved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph of an add that hnswlib stopped halfway is rebuilt from the places before it;
    when that rebuild runs out of memory too, the index cannot be restored: save() refuses
    rather than write a map that does not open."""
    db = unit(30, seed=5)
    index = PlaceIndex(DIM, settings=IndexSettings(mode="hnsw"))
    index.add(db[:20])
    target = index.save(tmp_path / "map")
    index._hnsw = InsertFailingHalfway(index._hnsw, 2)

    def build(self):
        raise MemoryError("Unable to allocate the new graph")

    monkeypatch.setattr(place_index.GraphRebuild, "build", build)
    with pytest.raises(MapError, match="insert failed halfway.*rebuilding.*failed too"):
        index.add(db[20:25])
    with pytest.raises(MapError, match="not saved: add.*failed halfway.*unchanged"):
        index.save()
    assert len(PlaceIndex.open(target)) == 20


def test_re_inserting_earlier_places_out_of_memory_still_adds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of memory while an add re-inserted the places of earlier adds (refine_adds): the
    add raised after its records were in, the index was marked broken, save() refused."""
    db = unit(30, seed=4)
    index = PlaceIndex(DIM, settings=IndexSettings(mode="hnsw"))
    for i in range(20):
        index.add(db[i], ids=i)
    index.save(tmp_path / "map")

    def reinsert(*args):
        raise MemoryError("std::bad_alloc")

    monkeypatch.setattr(place_index.PlaceIndex, "_reinsert", reinsert)
    assert index.add(db[20], ids=20) == [20]
    assert len(index) == 21 and index.query(db[20], k=1)[0].place_id == 20
    index.save()
    assert len(PlaceIndex.open(tmp_path / "map")) == 21
