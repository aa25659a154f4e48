"""A save that keeps the map's graph file (IndexSettings.graph_resave), and the open that
brings that graph up to the records (vpr_edge.index.graph_replay)."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from vpr_edge.errors import InvalidInputError, MapCorruptError
from vpr_edge.index import IndexSettings, PlaceIndex
from vpr_edge.index.settings import GRAPH_RESAVE_MIN_ROWS


def _map_store_tests():
    """test_map_store.py, for its map helpers (tests are not a package)."""
    path = Path(__file__).with_name("test_map_store.py")
    spec = importlib.util.spec_from_file_location("map_store_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helpers = _map_store_tests()
FP, answers, build, flip_deleted_mark, resign, snapshot, unit = (
    _helpers.FP, _helpers.answers, _helpers.build, _helpers.flip_deleted_mark, _helpers.resign,
    _helpers.snapshot, _helpers.unit)

PROJECTED = 600  # > the default search_dim (512): the graph holds sketches


def manifest(target: Path) -> dict:
    return json.loads((target / "manifest.json").read_text())


def graph_inode(target: Path) -> int:
    return (target / "index.hnsw").stat().st_ino


def test_a_small_append_keeps_the_graph_file_and_open_replays_it(tmp_path: Path) -> None:
    index, db = build(300)
    assert index.info()["graph_file_rows"] is None  # not saved yet
    target = index.save(tmp_path / "m")
    inode = graph_inode(target)
    assert "rows" not in manifest(target)["index"] and manifest(target)["format_version"] == 1
    index.add(unit(20, seed=3), meta=[{"late": i} for i in range(20)])
    index.remove([4, 301])  # one place the graph file holds, one it lacks
    index.add(db[4], ids=4, meta={"again": True})  # a removed id the file holds, added again
    index.add(unit(1, seed=4), ids=[400])
    index.remove([400])  # a place the file lacks, removed in its own later row
    index.save()
    body = manifest(target)
    assert graph_inode(target) == inode  # hard-linked, not written again
    assert body["format_version"] == 3
    assert body["index"]["rows"] == 300 and body["index"]["elements"] == 300
    assert body["rows"] == 322 and body["count"] == 319
    assert index.info()["graph_file_rows"] == 300 and index.info()["rows"] == 322

    opened = PlaceIndex.open(target, fingerprint=FP, settings=index.settings)  # graph search
    assert opened.ids() == index.ids() and 301 not in opened and 400 not in opened
    assert opened.info()["graph_file_rows"] == 300
    queries = np.concatenate([unit(10, seed=77), unit(20, seed=3)[:5], db[4:5]])
    got, want = answers(opened, queries), answers(index, queries)
    assert [[m[0] for m in row] for row in got] == [[m[0] for m in row] for row in want]
    assert np.allclose([[m[1] for m in row] for row in got],
                       [[m[1] for m in row] for row in want], atol=2e-3)
    assert opened.query(db[4], k=1)[0].meta == {"again": True}
    late = opened.query(unit(20, seed=3)[7], k=1)[0]
    assert late.meta == {"late": 7} and late.score == pytest.approx(1.0, abs=2e-3)
    removed_ones = opened.query(unit(1, seed=4)[0], k=len(opened))
    assert 400 not in {m.place_id for m in removed_ones}
    # the opened map keeps linking the same file (still 22 rows past it), and opens again
    opened.add(unit(2, seed=5))
    opened.save()
    assert graph_inode(target) == inode and manifest(target)["index"]["rows"] == 300
    assert PlaceIndex.open(target, fingerprint=FP).ids() == opened.ids()


def test_the_graph_file_is_written_again_past_the_slack(tmp_path: Path) -> None:
    index, _ = build(100)
    target = index.save(tmp_path / "m")
    inode = graph_inode(target)
    slack = index.settings.graph_slack(100)
    assert slack == GRAPH_RESAVE_MIN_ROWS
    index.add(unit(slack, seed=1))
    index.save()
    assert graph_inode(target) == inode and manifest(target)["index"]["rows"] == 100
    index.add(unit(1, seed=2))  # one row past the slack
    index.save()
    body = manifest(target)
    assert graph_inode(target) != inode and "rows" not in body["index"]
    assert body["format_version"] == 1 and body["index"]["elements"] == 100 + slack + 1
    assert len(PlaceIndex.open(target, fingerprint=FP)) == 100 + slack + 1


def test_a_removal_alone_keeps_the_graph_file(tmp_path: Path) -> None:
    index, db = build(300)
    target = index.save(tmp_path / "m")
    inode = graph_inode(target)
    index.remove([7])
    index.save()
    assert graph_inode(target) == inode and manifest(target)["index"]["rows"] == 300
    opened = PlaceIndex.open(target, fingerprint=FP, settings=index.settings)
    assert 7 not in opened and 7 not in {m.place_id for m in opened.query(db[7], k=20)}
    assert answers(opened, unit(8, seed=9)) == answers(index, unit(8, seed=9))


@pytest.mark.parametrize("change", ["rebuild", "graph_resave=0"])
def test_a_rebuilt_graph_or_no_slack_writes_the_graph(tmp_path: Path, change: str) -> None:
    index, _ = build(300, graph_resave=0 if change == "graph_resave=0" else 0.02)
    target = index.save(tmp_path / "m")
    inode = graph_inode(target)
    if change == "rebuild":
        index.rebuild()  # a random-order graph: better than the one on disk, so it is saved
    index.add(unit(3, seed=1))
    index.save()
    assert graph_inode(target) != inode and "rows" not in manifest(target)["index"]


def test_a_background_rebuild_swapped_in_writes_the_graph(tmp_path: Path) -> None:
    index, _ = build(300)
    target = index.save(tmp_path / "m")
    inode = graph_inode(target)
    index.rebuild(background=True).result(timeout=60)
    index.save()
    assert graph_inode(target) != inode


def test_projected_maps_replay_sketches_and_rescore(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    db = rng.standard_normal((400, PROJECTED)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    index = PlaceIndex(PROJECTED, fingerprint=FP, settings=IndexSettings(mode="hnsw"))
    index.add(db[:350])
    target = index.save(tmp_path / "m")
    index.add(db[350:])
    index.save()
    assert manifest(target)["index"]["rows"] == 350
    opened = PlaceIndex.open(target, fingerprint=FP, settings=index.settings)
    # a sketched graph, its candidates re-scored from the float16 descriptors: each place,
    # those in the graph file and those inserted on opening, is found with the same score
    got, want = opened.query(db[300:], k=1), index.query(db[300:], k=1)
    assert [row[0].place_id for row in got] == list(range(300, 400))
    assert [row[0].score for row in got] == [row[0].score for row in want]


@pytest.fixture()
def kept_graph_map(tmp_path: Path) -> Path:
    index, _ = build(200)
    index.remove([1, 2])
    target = index.save(tmp_path / "m")
    index.add(unit(20, seed=1))
    index.remove([3])
    index.save()
    assert manifest(target)["index"]["rows"] == 200
    return target


def test_a_live_place_the_kept_graph_marks_deleted_is_refused(kept_graph_map: Path) -> None:
    """A writer's bug (both files pass their checksums) would hide place 5 for good."""
    flip_deleted_mark(kept_graph_map, 5)
    before = snapshot(kept_graph_map)
    with pytest.raises(MapCorruptError, match=r"index.hnsw: it marks 1 live place\(s\) "
                                              r"deleted \(e.g. 5\).*map repair"):
        PlaceIndex.open(kept_graph_map, fingerprint=FP)
    assert snapshot(kept_graph_map) == before
    repaired = PlaceIndex.open(kept_graph_map, fingerprint=FP, rebuild_if_corrupt=True)
    assert len(repaired) == 217 and repaired.query(unit(200)[5], k=1)[0].place_id == 5


def test_a_removed_place_the_kept_graph_left_unmarked_is_marked(kept_graph_map: Path) -> None:
    """Places removed after the graph file was written (3 here, 1 flipped) are marked on
    opening: they never come back in searches."""
    flip_deleted_mark(kept_graph_map, 1)
    opened = PlaceIndex.open(kept_graph_map, fingerprint=FP)
    found = {m.place_id for m in opened.query(unit(200)[:4], k=30)[0]}
    assert not found & {1, 2, 3} and len(opened) == 217


def test_a_kept_graph_of_other_rows_is_refused(kept_graph_map: Path) -> None:
    resign(kept_graph_map, lambda body: body["index"].update(rows=202))
    with pytest.raises(MapCorruptError, match="index.hnsw.*place ids that differ.*first 202 rows"):
        PlaceIndex.open(kept_graph_map, fingerprint=FP)


@pytest.mark.parametrize("edit, problem", [
    (lambda body: body["index"].update(rows=221), "expected an int in \\[0, 220\\]"),
    (lambda body: body["index"].update(rows=199), "counts disagree"),
    # 217 live places: at most the file's 200 elements and the 20 later rows
    (lambda body: body["index"].update(elements=196), "counts disagree"),
    (lambda body: body.update(format_version=2), "gives rows, which format version 2 has not"),
])
def test_index_rows_the_manifest_cannot_hold_are_refused(kept_graph_map: Path, edit,
                                                         problem: str) -> None:
    resign(kept_graph_map, edit)
    with pytest.raises(MapCorruptError, match=problem):
        PlaceIndex.open(kept_graph_map, fingerprint=FP)


def test_opening_logs_the_places_it_inserted(kept_graph_map: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="vpr_edge"):
        PlaceIndex.open(kept_graph_map, fingerprint=FP)
    assert "inserted the 20 places saved after its graph file" in caplog.text


@pytest.mark.parametrize("value", [-0.1, 1.5, True, "0.1", float("nan")])
def test_graph_resave_out_of_range_is_refused(value) -> None:
    with pytest.raises(InvalidInputError, match="graph_resave"):
        IndexSettings(graph_resave=value)


def test_graph_slack_follows_the_share_with_a_floor() -> None:
    assert IndexSettings().graph_slack(100_000) == 1000
    assert IndexSettings().graph_slack(1000) == GRAPH_RESAVE_MIN_ROWS
    assert IndexSettings(graph_resave=0).graph_slack(100_000) == 0
    assert IndexSettings(graph_resave=0.1).graph_slack(100_000) == 10_000
