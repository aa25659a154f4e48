"""Concurrent adds, removals, queries and saves against an exact model of what was added."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vpr_edge.index import IndexSettings, PlaceIndex
from vpr_edge.index.rwlock import ReadWriteLock

DIM = 24


def vector(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("mode", ["hnsw", "exact"])
def test_writers_readers_and_saver(tmp_path: Path, mode: str) -> None:
    """4 writer threads add (and sometimes remove) places, 4 reader threads query, one thread
    saves; ~3000 operations. Readers check each answer against the model: a permanent place
    queried by its own descriptor is found first with score ~1, and no answer is a place whose
    removal had finished before the query began. At the end the index equals the model, and
    so does the map reopened from disk."""
    index = PlaceIndex(DIM, fingerprint="fp",
                       settings=IndexSettings(mode=mode, ef=100, initial_capacity=8))
    permanent = list(range(100))
    index.add(np.stack([vector(i) for i in permanent]), ids=permanent,
              meta=[{"w": -1}] * len(permanent))
    model_lock = threading.Lock()
    live: dict[int, int] = {i: -1 for i in permanent}  # id -> writer
    removed_done: set[int] = set()
    errors: list[BaseException] = []
    stop = threading.Event()
    counts = {"add": 0, "remove": 0, "query": 0, "save": 0}

    def writer(w: int) -> None:
        try:
            rng = np.random.default_rng(w)
            mine: list[int] = []
            for j in range(250):
                pid = 1000 * (w + 1) + j
                index.add(vector(pid), ids=pid, stamps=float(j), meta={"w": w})
                with model_lock:
                    live[pid] = w
                    counts["add"] += 1
                mine.append(pid)
                if rng.random() < 0.3:
                    victim = mine.pop(int(rng.integers(len(mine))))
                    index.remove(victim)
                    with model_lock:
                        del live[victim]
                        removed_done.add(victim)
                        counts["remove"] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def reader(r: int) -> None:
        try:
            rng = np.random.default_rng(100 + r)
            while not stop.is_set():
                target = int(rng.choice(permanent))
                with model_lock:
                    gone_before = set(removed_done)
                got = index.query(vector(target), k=5, exclude_newest=int(rng.integers(0, 3)))
                assert got[0].place_id == target and got[0].score > 0.999
                assert got[0].meta == {"w": -1}
                assert not gone_before & {m.place_id for m in got}
                assert all(a.score >= b.score for a, b in zip(got, got[1:]))
                with model_lock:
                    counts["query"] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def saver() -> None:
        try:
            while not stop.is_set():
                index.save(tmp_path / "m")
                with model_lock:
                    counts["save"] += 1
                time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    others = [threading.Thread(target=reader, args=(r,)) for r in range(4)]
    others.append(threading.Thread(target=saver))
    start = time.monotonic()
    for t in writers + others:
        t.start()
    for t in writers:
        t.join(timeout=60)
    stop.set()
    for t in others:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in writers + others), "deadlock or hang"
    assert not errors, errors[0]
    assert time.monotonic() - start < 60
    assert counts["add"] == 1000 and counts["query"] >= 200 and counts["save"] >= 1
    assert sum(counts.values()) >= 1500

    assert sorted(index.ids()) == sorted(live) and len(index) == len(live)
    for pid, w in live.items():
        assert index.get(pid).meta == {"w": w}
    index.save(tmp_path / "m")
    reopened = PlaceIndex.open(tmp_path / "m", fingerprint="fp")
    assert sorted(reopened.ids()) == sorted(live)
    for pid in list(live)[::37]:
        assert reopened.query(vector(pid), k=1)[0].place_id == pid


def test_reader_reentry_does_not_deadlock_with_a_waiting_writer() -> None:
    """A query filter that reads the index again while a writer is queued must not hang."""
    index = PlaceIndex(DIM, settings=IndexSettings(mode="hnsw"))
    index.add(np.stack([vector(i) for i in range(50)]))
    writer_waiting = threading.Event()
    done: list[int] = []

    def slow_filter(pid: int) -> bool:
        if not writer_waiting.is_set():
            writer_waiting.set()
            time.sleep(0.2)  # the writer below is now queued behind this query
        return index.get(pid).place_id == pid  # re-entrant read

    def write() -> None:
        writer_waiting.wait()
        index.add(vector(999), ids=999)
        done.append(1)

    t = threading.Thread(target=write)
    t.start()
    got = index.query(vector(3), k=3, filter=slow_filter)
    t.join(timeout=10)
    assert not t.is_alive() and done == [1]
    assert got[0].place_id == 3 and 999 in index


def test_rwlock_excludes_writers_and_lets_readers_share() -> None:
    lock = ReadWriteLock()
    inside = {"readers": 0, "writers": 0, "max_readers": 0}
    guard = threading.Lock()
    violations: list[str] = []

    def read() -> None:
        for _ in range(200):
            with lock.read():
                with guard:
                    inside["readers"] += 1
                    inside["max_readers"] = max(inside["max_readers"], inside["readers"])
                    if inside["writers"]:
                        violations.append("reader with writer")
                time.sleep(0.0001)
                with guard:
                    inside["readers"] -= 1

    def write() -> None:
        for _ in range(100):
            with lock.write():
                with guard:
                    inside["writers"] += 1
                    if inside["writers"] > 1 or inside["readers"]:
                        violations.append("writer not alone")
                with guard:
                    inside["writers"] -= 1

    threads = [threading.Thread(target=read) for _ in range(4)]
    threads += [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert violations == [] and inside["max_readers"] >= 2


def appender(guard, order: list[str], label: str):
    """A thread target that appends ``label`` to ``order`` while holding ``guard``."""
    def run() -> None:
        with guard:
            order.append(label)
    return run


def test_a_long_read_lets_readers_pass_a_waiting_writer() -> None:
    """Queued as usual, a writer waiting for a save (a long read) held back every new reader
    until the save was done."""
    lock = ReadWriteLock()
    order: list[str] = []
    with lock.long_read():
        writer = threading.Thread(target=appender(lock.write(), order, "write"))
        writer.start()
        time.sleep(0.1)  # the writer now waits for the long read
        reader = threading.Thread(target=appender(lock.read(), order, "read"))
        reader.start()
        reader.join(timeout=5)
        assert not reader.is_alive() and order == ["read"]
    writer.join(timeout=5)
    assert not writer.is_alive() and order == ["read", "write"]
    with lock.long_read():  # free again, and the gate with it
        with lock.read():
            pass


def test_queries_go_on_while_a_save_makes_an_add_wait(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The save writes its files under a read lock; an add arriving meanwhile queued for the
    write lock, and every query after it waited for the whole save (up to 1.3 s at 30k
    places)."""
    from vpr_edge.index import map_store

    index = PlaceIndex(DIM, settings=IndexSettings(mode="hnsw"))
    index.add(np.stack([vector(i) for i in range(50)]))
    writing, release = threading.Event(), threading.Event()
    real_write_files = map_store.write_files

    def slow_write_files(*args, **kwargs):
        writing.set()
        release.wait(10)
        return real_write_files(*args, **kwargs)

    monkeypatch.setattr(map_store, "write_files", slow_write_files)
    saver = threading.Thread(target=index.save, args=(tmp_path / "m",))
    adder = threading.Thread(target=index.add, args=(vector(999),), kwargs={"ids": 999})
    saver.start()
    assert writing.wait(10)
    adder.start()
    time.sleep(0.1)  # the add now waits for the save
    answered: list[int] = []
    querier = threading.Thread(target=lambda: answered.append(index.query(vector(7), k=1)[0]
                                                               .place_id))
    querier.start()
    querier.join(timeout=5)
    stalled = querier.is_alive()
    release.set()
    for t in (querier, saver, adder):
        t.join(timeout=10)
    assert not stalled and answered == [7]
    assert 999 in index and len(PlaceIndex.open(tmp_path / "m")) == 50


def test_a_long_read_inside_a_read_does_not_wait_for_a_waiting_writer() -> None:
    """A save from inside a query filter (a read) while an add waited: the writer held the
    gate while it waited for that reader, and the save's long read waited for the gate."""
    lock = ReadWriteLock()
    done: list[str] = []

    def query_that_saves() -> None:
        with lock.read():
            writer = threading.Thread(target=appender(lock.write(), done, "write"), daemon=True)
            writer.start()
            time.sleep(0.1)  # the writer now holds the gate, waiting for this reader
            with lock.long_read():
                done.append("long read")
        writer.join(timeout=5)

    reader = threading.Thread(target=query_that_saves, daemon=True)  # (a hang fails, below)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive() and done == ["long read", "write"]
