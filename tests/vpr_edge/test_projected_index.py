"""PlaceIndex with a projected graph (``IndexSettings.search_dim``): exact results, persistence."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from vpr_edge.errors import InvalidInputError, MapCorruptError
from vpr_edge.index import IndexSettings, PlaceIndex
from vpr_edge.index.map_format import canonical_json
from vpr_edge.index.projection import count_sketch, project

DIM, SEARCH = 1024, 64
HNSW = IndexSettings(mode="hnsw", search_dim=SEARCH, ef=64)


def route(n: int, seed: int = 0, rho: float = 0.9) -> np.ndarray:
    """Unit rows along a route: an AR(1) walk, neighbours correlate ~rho (like
    benchmarks/index_scaling_quick.synthetic_route)."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((n, DIM)).astype(np.float32)
    for t in range(1, n):
        e[t] = rho * e[t - 1] + np.sqrt(1 - rho**2) * e[t]
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def revisits(db: np.ndarray, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Noisy copies of random places, cosine about 0.75 to them (another visit)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(db), n)
    noise = rng.standard_normal((n, DIM)).astype(np.float32)
    q = db[picks] + 0.88 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return q / np.linalg.norm(q, axis=1, keepdims=True), picks


def exact_top(db16: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    scores = q @ db16.astype(np.float32).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_the_sketch_is_frozen_and_balanced() -> None:
    # maps store only search_dim: the sketch must never change between vpr-edge versions
    sketch = count_sketch(64, 16)
    assert sketch.order[:6].tolist() == [1, 17, 40, 56, 21, 33]
    assert sketch.signs[:6].tolist() == [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0]
    assert sketch.starts.tolist() == list(range(0, 64, 4))  # 4 coordinates per output
    assert sorted(sketch.order.tolist()) == list(range(64))
    assert not sketch.order.flags.writeable
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    y = project(x, sketch)
    manual = np.zeros((3, 16), np.float32)
    for pos, coord in enumerate(sketch.order):
        output = np.searchsorted(sketch.starts, pos, side="right") - 1
        manual[:, output] += sketch.signs[pos] * x[:, coord]
    np.testing.assert_allclose(y, manual / np.linalg.norm(manual, axis=1, keepdims=True),
                               atol=1e-6)


def test_a_query_sketch_is_the_stored_sketch_unnormalised() -> None:
    # the search skips the query's norm: a positive scale keeps the order of inner products
    sketch = count_sketch(DIM, SEARCH)
    x = route(4)
    raw = project(x, sketch, normalise=False)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True),
                               project(x, sketch), atol=1e-6)
    assert raw.flags.c_contiguous and raw.dtype == np.float32
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)  # really not normed


def test_equal_scores_come_back_in_insertion_order() -> None:
    db = route(300)
    index = PlaceIndex(DIM, settings=HNSW)
    index.add(db)
    twin = db[7]
    index.add(np.stack([twin, twin, twin]), ids=[1000, 500, 700])  # rows 300, 301, 302
    hits = index.query(twin, k=4)
    assert [m.place_id for m in hits] == [7, 1000, 500, 700]
    assert hits[0].score == hits[1].score == hits[2].score == hits[3].score


def test_projected_search_returns_the_exact_results() -> None:
    db = route(3000)
    index = PlaceIndex(DIM, settings=HNSW)
    index.add(db)
    assert index.info()["graph_dim"] == SEARCH
    q, _ = revisits(db, 100)
    truth = exact_top(db.astype(np.float16), q, 5)
    found = [[m.place_id for m in hits] for hits in index.query(q, k=5)]
    recall1 = np.mean([f[0] == t[0] for f, t in zip(found, truth)])
    assert recall1 >= 0.98
    hits = index.query(q[0], k=5)
    expected = db.astype(np.float16).astype(np.float32)[[m.place_id for m in hits]] @ q[0]
    np.testing.assert_allclose([m.score for m in hits], expected, atol=1e-5)  # full-dim scores
    assert [m.score for m in hits] == sorted((m.score for m in hits), reverse=True)


def test_short_descriptors_are_not_projected() -> None:
    index = PlaceIndex(SEARCH, settings=HNSW)
    assert index.info()["graph_dim"] == SEARCH
    assert PlaceIndex(DIM, settings=IndexSettings(search_dim=None)).info()["graph_dim"] == DIM


def test_filters_removal_and_rebuild_with_a_projection() -> None:
    db = route(500)
    index = PlaceIndex(DIM, settings=HNSW)
    index.add(db, stamps=np.arange(500, dtype=float))
    newest = [m.place_id for m in index.query(db[499], k=3, exclude_newest=50)]
    assert newest and all(pid < 450 for pid in newest)
    assert all(m.place_id != 10 for m in index.query(db[10], k=3, exclude_ids=[10]))
    index.remove([200])
    assert all(m.place_id != 200 for m in index.query(db[200], k=5))
    index.rebuild()
    assert index.info()["graph_dim"] == SEARCH
    assert index.query(db[300], k=1)[0].place_id == 300
    few = index.query(db[5], k=3, exclude_after_stamp=2.0)  # 3 allowed places: exact fallback
    assert sorted(m.place_id for m in few) == [0, 1, 2]


def test_exact_mode_of_a_small_projected_map_scores_full_descriptors() -> None:
    index = PlaceIndex(DIM, settings=IndexSettings(search_dim=SEARCH))  # auto: exact at 30
    db = route(30)
    index.add(db)
    hit = index.query(db[7], k=1)[0]
    assert hit.place_id == 7 and hit.score == pytest.approx(1.0, abs=1e-5)


def test_projected_map_round_trip(tmp_path: Path) -> None:
    db = route(400)
    index = PlaceIndex(DIM, fingerprint="fp", settings=HNSW)
    index.add(db)
    target = index.save(tmp_path / "m")
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["search_dim"] == SEARCH and manifest["format_version"] == 2
    # the map's projection wins over the settings it is opened with
    reopened = PlaceIndex.open(target, fingerprint="fp",
                               settings=IndexSettings(mode="hnsw", search_dim=None))
    assert reopened.info()["graph_dim"] == SEARCH
    q, _ = revisits(db, 20)
    assert ([[m.place_id for m in h] for h in reopened.query(q, k=3)]
            == [[m.place_id for m in h] for h in index.query(q, k=3)])
    plain = PlaceIndex(DIM, settings=IndexSettings(mode="hnsw", search_dim=None))
    plain.add(db[:10])
    body = json.loads((plain.save(tmp_path / "plain") / "manifest.json").read_text())
    assert "search_dim" not in body and body["format_version"] == 1  # older readers open it


def resign(path: Path, edit) -> None:
    """Rewrite manifest.json with ``edit(body)`` applied and a valid self-checksum."""
    body = json.loads((path / "manifest.json").read_text())
    body.pop("manifest_sha256")
    edit(body)
    body["manifest_sha256"] = hashlib.sha256(canonical_json(body)).hexdigest()
    (path / "manifest.json").write_text(json.dumps(body))


def test_a_manifest_claiming_another_graph_size_is_refused(tmp_path: Path) -> None:
    index = PlaceIndex(DIM, settings=HNSW)
    index.add(route(50))
    target = index.save(tmp_path / "m")
    resign(target, lambda body: body.update(search_dim=128))
    with pytest.raises(MapCorruptError, match="index.hnsw"):
        PlaceIndex.open(target)
    resign(target, lambda body: body.update(search_dim=DIM))
    with pytest.raises(MapCorruptError, match="search_dim"):
        PlaceIndex.open(target)


@pytest.mark.parametrize("bad", [4, 0, "512", True])
def test_bad_search_dim_is_refused(bad) -> None:
    with pytest.raises(InvalidInputError, match="search_dim"):
        IndexSettings(search_dim=bad)
