from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vpr_edge.errors import InvalidInputError
from vpr_edge.training.datasets.corridor import corridor_dataset
from vpr_edge.training.datasets.frame_aligned import frame_aligned_dataset, route_splits
from vpr_edge.training.datasets.manifest import read_manifest
from vpr_edge.training.datasets.pittsburgh import read_pittsburgh
from vpr_edge.training.datasets.places import PlaceSet, Radii, RetrievalDataset, within_radius


def _images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 6)).save(folder / name)


def test_radii_give_positives_and_definite_negatives() -> None:
    db = PlaceSet(tuple(Path(f"d{i}.jpg") for i in range(5)),
                  np.array([[0, 0], [5, 0], [12, 0], [20, 0], [40, 0]], float))
    q = PlaceSet((Path("q.jpg"),), np.array([[1.0, 0.0]]))
    ds = RetrievalDataset("t", db, q, radii=Radii(10, 25, 25))
    assert ds.training_positives()[0].tolist() == [0, 1]           # within 10 m
    assert ds.potential_positives()[0].tolist() == [0, 1, 2, 3]    # not definite negatives
    assert ds.positives()[0].tolist() == [0, 1, 2, 3]              # eval within 25 m
    assert within_radius(db.positions, np.array([[100.0, 0.0]]), 10)[0].tolist() == []
    with pytest.raises(InvalidInputError, match="pos_radius <= neg_radius"):
        Radii(30, 25, 25)
    with pytest.raises(InvalidInputError, match="empty dataset"):
        RetrievalDataset("e", db, PlaceSet((), np.zeros((0, 2))))


def test_within_radius_without_scipy_gives_the_kd_trees_answer(monkeypatch) -> None:
    """``vpr-eval`` of an exported model with only the ``cpu`` extra described every image,
    then died on ``ModuleNotFoundError: scipy``: without SciPy the neighbours come from
    NumPy, the same as the KD-tree's."""
    pytest.importorskip("scipy.spatial")
    rng = np.random.default_rng(3)
    database, queries = rng.uniform(0, 100, (700, 2)), rng.uniform(0, 100, (90, 2))
    with_tree = within_radius(database, queries, 7.5)
    monkeypatch.setitem(__import__("sys").modules, "scipy.spatial", None)  # import fails
    without = within_radius(database, queries, 7.5)
    assert sum(len(hits) for hits in with_tree) > 500
    assert [h.tolist() for h in without] == [h.tolist() for h in with_tree]


def test_manifest_with_metres(tmp_path: Path) -> None:
    _images(tmp_path / "img", ["a.png", "b.png", "c.png"])
    (tmp_path / "m.csv").write_text(
        "image,x,y,role,sequence,timestamp\n"
        "img/a.png,0,0,database,run1,1.5\nimg/b.png,30,0,database,run1,2.5\n"
        "img/c.png,2,1,query,run2,9\n")
    ds = read_manifest(tmp_path / "m.csv")
    assert len(ds.database) == 2 and len(ds.queries) == 1
    assert ds.positives()[0].tolist() == [0]
    assert ds.queries.sequences == ("run2",) and ds.queries.timestamps.tolist() == [9.0]
    assert ds.database.paths[1] == tmp_path / "img" / "b.png"


def test_manifest_latlon_is_converted_to_utm_metres(tmp_path: Path) -> None:
    _images(tmp_path, ["a.png", "b.png"])
    # 0.001 degrees of latitude is about 111 m
    (tmp_path / "m.csv").write_text("image,lat,lon,role\na.png,40.4400,-79.99,database\n"
                                    "b.png,40.4410,-79.99,query\n")
    ds = read_manifest(tmp_path / "m.csv")
    gap = np.linalg.norm(ds.database.positions[0] - ds.queries.positions[0])
    assert gap == pytest.approx(111.0, abs=1.0)


@pytest.mark.parametrize("content, words", [
    ("image,x,role\na.png,1,query\n", "either x,y"),
    ("image,x,y,lat,lon,role\na.png,1,2,3,4,query\n", "not both"),
    ("image,x,y\na.png,1,2\n", "missing role"),
    ("image,x,y,role\n", "no rows"),
    ("image,x,y,role\na.png,1,2,query\na.png,1,zz,query\n", "m.csv:3: y 'zz'"),
    ("image,x,y,role\na.png,1,2,reference\n", "role 'reference'"),
    ("image,x,y,role\nmissing.png,1,2,query\n", "1 image files are missing"),
    ("image,lat,lon,role\na.png,95,2,query\n", "out of range"),
    ("image,x,y,role\na.png,nan,2,query\n", "is nan"),
])
def test_bad_manifests_name_the_problem(tmp_path: Path, content: str, words: str) -> None:
    _images(tmp_path, ["a.png"])
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(InvalidInputError, match=words):
        read_manifest(tmp_path / "m.csv")


def test_frame_aligned_spans_and_route_splits(tmp_path: Path) -> None:
    names = [f"Image{i:03d}.jpg" for i in range(20)]
    _images(tmp_path / "left", names)
    _images(tmp_path / "right", names + ["Extra.jpg"])
    train, test = route_splits(tmp_path / "left", tmp_path / "right")
    assert len(train.queries) == 12 and len(test.queries) == 6
    assert train.queries.positions[:, 0].tolist() == list(range(12))
    assert test.database.positions[:, 0].tolist() == list(range(14, 20))
    assert train.queries.paths[3].name == train.database.paths[3].name == "Image003.jpg"
    assert test.positives()[0].tolist() == [0, 1, 2]  # frames 14..16 within 2 frames of 14
    with pytest.raises(InvalidInputError, match="share no file names"):
        _images(tmp_path / "other", ["x.jpg"])
        frame_aligned_dataset(tmp_path / "left", tmp_path / "other")


def test_gardens_point_frame_aligned(gardens_point_dir: Path) -> None:
    ds = frame_aligned_dataset(gardens_point_dir / "day_left", gardens_point_dir / "day_right",
                               span=(0.7, 1.0))
    assert len(ds.queries) == len(ds.database) == 60
    assert ds.queries.paths[0].name == "Image140.jpg"


def test_pittsburgh_mat_round_trip(tmp_path: Path) -> None:
    from scipy.io import savemat

    db = np.array(["images/000.jpg", "images/001.jpg", "images/002.jpg"], dtype=object)
    q = np.array(["queries/q0.jpg"], dtype=object)
    struct = np.array([("train", db.reshape(-1, 1), np.array([[0.0, 8.0, 100.0], [0, 0, 0]]),
                        q.reshape(-1, 1), np.array([[1.0], [0.0]]), 3, 1, 25.0, 625.0, 100.0)],
                      dtype=[(f, object) for f in (
                          "whichSet", "dbImage", "utmDb", "qImage", "utmQ", "numImages",
                          "numQueries", "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr")])
    savemat(tmp_path / "pitts_test.mat", {"dbStruct": struct})
    ds = read_pittsburgh(tmp_path / "pitts_test.mat", tmp_path / "root")
    assert [p.name for p in ds.database.paths] == ["000.jpg", "001.jpg", "002.jpg"]
    assert ds.database.paths[0] == tmp_path / "root" / "images" / "000.jpg"
    assert ds.queries.positions.tolist() == [[1.0, 0.0]]
    assert ds.radii.eval_radius == 25.0 and ds.positives()[0].tolist() == [0, 1]
    assert ds.training_positives()[0].tolist() == [0, 1]
    savemat(tmp_path / "bad.mat", {"other": 1})
    with pytest.raises(InvalidInputError, match="no dbStruct"):
        read_pittsburgh(tmp_path / "bad.mat", tmp_path)


def test_corridor_explicit_ground_truth(corridor_dir: Path) -> None:
    ds = corridor_dataset(corridor_dir)
    assert len(ds.queries) == len(ds.database) == 111
    assert ds.positives()[0].tolist() == [0, 1, 2]
    assert ds.positives()[1].tolist() == [0, 1, 2, 3]


def test_corridor_ground_truth_of_another_split_is_refused(corridor_dir: Path,
                                                           tmp_path: Path) -> None:
    """Reference indices beyond ref/ gave recall 0 without a word."""
    import numpy as np

    from vpr_edge.errors import InvalidInputError

    for name in ("ref", "query"):
        (tmp_path / name).symlink_to(corridor_dir / name)
    table = np.load(corridor_dir / "ground_truth.npy", allow_pickle=True)
    shifted = np.empty(len(table), dtype=object)
    for i, (q, matches) in enumerate(table):
        shifted[i] = [q, [int(m) + 500 for m in matches]]
    np.save(tmp_path / "ground_truth.npy", shifted, allow_pickle=True)
    with pytest.raises(InvalidInputError, match=r"query 0 matches reference index 500, but .*"
                                                r"holds 111 images"):
        corridor_dataset(tmp_path)
