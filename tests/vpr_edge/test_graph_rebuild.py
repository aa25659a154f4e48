"""PlaceIndex.rebuild(background=True): the index stays in use while a new graph is built,
and what changed meanwhile is on the new graph when it is swapped in."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from vpr_edge.errors import InvalidInputError, VprEdgeError
from vpr_edge.index import IndexSettings, PlaceIndex, graph_rebuild

DIM = 48


def unit(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def route_index(n: int = 600) -> tuple[PlaceIndex, np.ndarray]:
    """A graph index grown one place at a time, as a robot grows it."""
    db = unit(n)
    index = PlaceIndex(DIM, settings=IndexSettings(mode="hnsw", ef=200))
    for row in db:
        index.add(row)
    return index, db


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch):
    """Hold every background build after it has built its graph, until the test opens it
    (a plain rebuild, on the caller's thread, is not held)."""
    opened = threading.Event()
    built = threading.Event()
    real = graph_rebuild.GraphRebuild.build

    def held(self) -> None:
        real(self)
        if threading.current_thread().name == "vpr-edge-graph-rebuild":
            built.set()
            assert opened.wait(30), "the test never released the rebuild"

    monkeypatch.setattr(graph_rebuild.GraphRebuild, "build", held)
    yield opened, built
    opened.set()


def top1(index: PlaceIndex, queries: np.ndarray) -> list[int]:
    return [hits[0].place_id for hits in index.query(queries, k=1)]


def test_changes_during_the_build_are_on_the_new_graph(gate) -> None:
    opened, built = gate
    index, db = route_index()
    old_graph = index._hnsw
    future = index.rebuild(background=True)
    assert index.rebuild(background=True) is future  # one at a time
    assert built.wait(30) and not future.done()
    assert index.info()["background_rebuild"]
    # the index stays in use: queries, adds, removals, a removed id added again
    assert top1(index, db[:50]) == list(range(50))
    extra = unit(40, seed=1)
    new_ids = index.add(extra)
    index.remove([3, 7, new_ids[0]])
    again = unit(1, seed=2)[0]
    index.add(again, ids=7)
    opened.set()
    assert future.result(timeout=30) == 600
    assert index._hnsw is not old_graph and not index.info()["background_rebuild"]
    assert top1(index, extra[1:]) == new_ids[1:]
    assert top1(index, again[None]) == [7]
    found = {m.place_id for hits in index.query(np.r_[db, extra], k=5) for m in hits}
    assert not found & {3, new_ids[0]}
    live = [i for i in range(600) if i not in (3, 7)]
    assert top1(index, db[live]) == live
    assert len(index) == 600 + 40 - 3 + 1  # 3 removed, 7 back
    assert index.ids() == [i for i in range(600) if i not in (3, 7)] + new_ids[1:] + [7]


def test_a_failed_build_keeps_the_old_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    index, db = route_index(200)
    old_graph = index._hnsw

    def broken(self) -> None:
        raise MemoryError("no room for a second graph")

    monkeypatch.setattr(graph_rebuild.GraphRebuild, "build", broken)
    future = index.rebuild(background=True)
    with pytest.raises(MemoryError, match="no room"):
        future.result(timeout=30)
    assert index._hnsw is old_graph and not index.info()["background_rebuild"]
    assert top1(index, db[:20]) == list(range(20))
    monkeypatch.undo()
    assert index.rebuild(background=True).result(timeout=30) == 200


def test_save_during_the_build_and_after_the_swap(tmp_path: Path, gate) -> None:
    opened, built = gate
    index, db = route_index(300)
    target = index.save(tmp_path / "m")
    segments = {f.name: f.stat().st_ino for f in target.iterdir() if f.name.startswith("seg-")}
    future = index.rebuild(background=True)
    assert built.wait(30)
    index.add(unit(5, seed=3))
    index.save()  # saves the old graph: a complete, consistent map
    assert len(PlaceIndex.open(target)) == 305
    opened.set()
    future.result(timeout=30)
    index.save()
    after = {f.name: f.stat().st_ino for f in target.iterdir() if f.name.startswith("seg-")}
    assert all(after[name] == inode for name, inode in segments.items())  # rows kept: linked
    reopened = PlaceIndex.open(target)
    assert top1(reopened, db) == list(range(300))


def test_removed_places_keep_their_slot_in_the_background_graph(tmp_path: Path) -> None:
    """The records keep removed places until a plain rebuild, so the new graph keeps their
    labels (marked deleted): the map it saves opens, and their ids can be added again."""
    db = unit(50)
    index = PlaceIndex(DIM, fingerprint="fp",
                       settings=IndexSettings(mode="hnsw", refine_adds=False))
    index.add(db)
    index.remove([3, 4, 5])
    assert index.rebuild(background=True).result(timeout=30) == 47
    reopened = PlaceIndex.open(index.save(tmp_path / "m"), fingerprint="fp")
    assert reopened.ids() == index.ids()
    for idx in (index, reopened):
        idx.add(db[3], ids=3)  # the graph had room for it: no hnswlib capacity error
        idx.add(db[[4, 5]], ids=[4, 100])
        assert len(idx) == 50 and 5 not in idx
        assert top1(idx, db[[3, 4, 5, 6]]) == [3, 4, 100, 6]
        assert 5 not in {m.place_id for hits in idx.query(db, k=5) for m in hits}
    assert PlaceIndex.open(index.save(), fingerprint="fp").ids() == index.ids()


@pytest.mark.parametrize("changes_meanwhile", [False, True])
def test_a_plain_rebuild_replaces_a_running_background_one(tmp_path: Path, gate,
                                                           changes_meanwhile: bool) -> None:
    """A background graph from an older snapshot is never swapped in over a plain rebuild
    (it would hold places the plain rebuild dropped: a map that does not open)."""
    opened, built = gate
    index, db = route_index(200)
    future = index.rebuild(background=True)
    assert built.wait(30)
    if changes_meanwhile:
        index.remove([5])
    index.rebuild()
    plain_graph = index._hnsw
    opened.set()
    with pytest.raises(graph_rebuild.RebuildStopped, match="plain rebuild") as stopped:
        future.result(timeout=30)
    assert isinstance(stopped.value, VprEdgeError)  # robot code catching one type sees it
    assert index._hnsw is plain_graph and not index.info()["background_rebuild"]
    live = [i for i in range(200) if not (changes_meanwhile and i == 5)]
    reopened = PlaceIndex.open(index.save(tmp_path / "m"))
    assert reopened.ids() == live and top1(reopened, db[live]) == live


def test_wait_for_rebuild_waits_for_a_stopped_build_s_thread(gate) -> None:
    """wait_for_rebuild() after a plain rebuild() stopped a background one waits until that
    build's future resolves (it returned True at once while the thread still ran)."""
    opened, built = gate
    index, _ = route_index(200)
    stopped = index.rebuild(background=True)
    assert built.wait(30)
    index.rebuild()
    assert not index.wait_for_rebuild(0.2) and not stopped.done()
    built.clear()
    again = index.rebuild(background=True)  # a second one, stopped the same way once built
    assert built.wait(30)
    index.rebuild()
    assert not index.wait_for_rebuild(0.2) and not again.done()
    opened.set()
    assert index.wait_for_rebuild(30) and stopped.done() and again.done()
    with pytest.raises(graph_rebuild.RebuildStopped):
        stopped.result(timeout=0)


def test_a_background_rebuild_asked_for_after_a_plain_one_is_a_new_one(gate) -> None:
    """After a plain rebuild() stopped a background one, rebuild(background=True) starts a
    new build (it used to hand back the stopped one's future, and nothing was rebuilt)."""
    opened, built = gate
    index, db = route_index(200)
    stopped = index.rebuild(background=True)
    assert built.wait(30)
    index.rebuild()
    plain_graph = index._hnsw
    again = index.rebuild(background=True)
    assert again is not stopped and index.info()["background_rebuild"]
    opened.set()
    with pytest.raises(graph_rebuild.RebuildStopped):
        stopped.result(timeout=30)
    assert again.result(timeout=30) == 200
    assert index._hnsw is not plain_graph and not index.info()["background_rebuild"]
    assert top1(index, db) == list(range(200))


def test_background_rebuild_recovers_route_order_recall() -> None:
    """The point of it: a graph rebuilt in a random order finds what the route-order graph
    finds, or more (a real-data measurement is in benchmarks/insertion_order.py)."""
    index, db = route_index(800)
    queries = db + 0.02 * unit(800, seed=5)
    truth = np.argmax(queries @ db.T, axis=1).tolist()
    index.set_ef(16)
    before = np.mean(np.array(top1(index, queries)) == truth)
    index.rebuild(background=True, threads=2).result(timeout=60)
    after = np.mean(np.array(top1(index, queries)) == truth)
    assert after >= before and after >= 0.99


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_bad_thread_counts_are_refused(threads) -> None:
    index, _ = route_index(10)
    with pytest.raises(InvalidInputError, match="threads"):
        index.rebuild(background=True, threads=threads)


def test_one_by_one_growth_starts_background_rebuilds(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    started = []
    real = PlaceIndex._start_background_rebuild

    def spy(self, threads):
        started.append((len(self), threads))
        return real(self, threads)

    monkeypatch.setattr(PlaceIndex, "_start_background_rebuild", spy)
    db = unit(500, seed=9)
    growing = IndexSettings(exact_max_places=50, rebuild_growth=2.0)
    index = PlaceIndex(DIM, settings=growing)
    for row in db[:99]:
        index.add(row)
    assert started == []  # exact search up to 50, then the graph grows to 2 x 50
    index.add(db[99])
    assert started == [(100, 1)]
    assert index.wait_for_rebuild(30)
    for row in db[100:199]:
        index.add(row)
    assert index.wait_for_rebuild(30) and started == [(100, 1)]
    index.add(db[199])  # twice the 100 of the last rebuild
    assert index.wait_for_rebuild(30) and started == [(100, 1), (200, 1)]
    index.add(db[200:450])  # a batch goes in shuffled: no rebuild
    assert started == [(100, 1), (200, 1)]
    index.save(tmp_path / "m")
    opened = PlaceIndex.open(tmp_path / "m", settings=growing)
    for row in db[450:]:
        opened.add(row)  # 500 < 2 x 450 (the size it was opened at)
    assert started == [(100, 1), (200, 1)]
    assert top1(opened, db) == list(range(500))
    never = PlaceIndex(DIM, settings=IndexSettings(exact_max_places=50))  # the default: None
    for row in db[:300]:
        never.add(row)
    assert started == [(100, 1), (200, 1)] and never.wait_for_rebuild(0)


@pytest.mark.parametrize("growth", [1.0, 0.5, True, "2"])
def test_bad_rebuild_growth_is_refused(growth) -> None:
    with pytest.raises(InvalidInputError, match="rebuild_growth"):
        IndexSettings(rebuild_growth=growth)


def test_a_stopped_build_keeps_the_old_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    index, db = route_index(200)
    old_graph = index._hnsw
    real = graph_rebuild.GraphRebuild.build

    def stopped_first(self) -> None:
        self.stop()
        real(self)

    monkeypatch.setattr(graph_rebuild.GraphRebuild, "build", stopped_first)
    future = index.rebuild(background=True)
    with pytest.raises(graph_rebuild.RebuildStopped, match="exiting"):
        future.result(timeout=30)
    assert index._hnsw is old_graph and not index.info()["background_rebuild"]
    assert top1(index, db[:20]) == list(range(20))


def test_the_exit_hook_stops_running_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    index, db = route_index(200)
    old_graph = index._hnsw

    def until_stopped(self) -> None:  # a build that only ends when it is stopped
        while True:
            self.check_stop()
            threading.Event().wait(0.01)

    monkeypatch.setattr(graph_rebuild.GraphRebuild, "build", until_stopped)
    future = index.rebuild(background=True)
    assert graph_rebuild._hook_registered and not future.done()
    graph_rebuild._stop_running_builds()  # what atexit calls
    with pytest.raises(graph_rebuild.RebuildStopped):
        future.result(timeout=0)  # done: the hook waited for the thread
    assert index._hnsw is old_graph and not list(graph_rebuild._running)
    assert top1(index, db[:20]) == list(range(20))


GROW_AND_EXIT = """
import numpy as np
from vpr_edge.index import IndexSettings, PlaceIndex

x = np.random.default_rng(0).standard_normal((30, 64)).astype(np.float32)
index = PlaceIndex(64, settings=IndexSettings(exact_max_places=0, rebuild_growth=2.0))
for row in x / np.linalg.norm(x, axis=1, keepdims=True):
    index.add(row)  # background rebuilds at 2, 4, 8, 16 places
print("exiting", flush=True)
"""


def test_a_process_exits_cleanly_while_rebuilds_run() -> None:
    """Without the exit hook, 2 of 15 such runs aborted: Python shut down under the
    build's thread while it was in hnswlib ("terminate called without an active exception",
    exit status 134)."""
    import subprocess
    import sys

    for _ in range(4):
        done = subprocess.run([sys.executable, "-c", GROW_AND_EXIT], capture_output=True,
                              check=False, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "exiting" and "terminate" not in done.stderr


def test_remove_s_compaction_replaces_a_running_background_rebuild(gate) -> None:
    """remove() drops held removed places with a plain rebuild in a map searched exactly,
    stopping a background rebuild as rebuild() does; the future said "a plain rebuild()
    replaced it" though only remove() was called."""
    from vpr_edge.index.settings import COMPACT_MIN_REMOVED

    opened, built = gate
    index = PlaceIndex(16, settings=IndexSettings(exact_max_places=10 * COMPACT_MIN_REMOVED))
    rng = np.random.default_rng(0)
    db = rng.standard_normal((3 * COMPACT_MIN_REMOVED, 16)).astype(np.float32)
    ids = index.add(db / np.linalg.norm(db, axis=1, keepdims=True))
    future = index.rebuild(background=True)
    assert built.wait(30)
    index.remove(ids[: 2 * COMPACT_MIN_REMOVED])  # compacted here: a plain rebuild
    opened.set()
    with pytest.raises(graph_rebuild.RebuildStopped, match=r"remove\(\) dropped the removed"):
        future.result(timeout=30)
    assert index.info()["removed_rows"] == 0 and len(index) == COMPACT_MIN_REMOVED
