from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vpr_edge.errors import InvalidInputError, MapError, ModelMismatchError
from vpr_edge.localizer import Localizer


@pytest.fixture
def loc(tiny_onnx: Path, cpu_only: None) -> Localizer:
    with Localizer(tiny_onnx, backend="onnxruntime-cpu") as localizer:
        yield localizer


def test_describe_single_batch_and_colour_orders(loc: Localizer, tiny) -> None:
    frames = tiny.frames(3, h=tiny.H * 3, w=tiny.W * 3)
    batch = loc.describe(list(frames))
    assert batch.shape == (3, tiny.DIM) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(loc.describe(frames), batch, atol=1e-6)
    single = loc.describe(frames[1])
    assert single.shape == (tiny.DIM,)
    np.testing.assert_allclose(single, batch[1], atol=1e-6)
    np.testing.assert_allclose(loc.describe(frames[1][:, :, ::-1], colour_order="BGR"),
                               single, atol=1e-6)
    assert not np.allclose(loc.describe(frames[1][:, :, ::-1]), single, atol=1e-3)


def test_describe_resizes_like_the_model_expects(loc: Localizer, tiny) -> None:
    from vpr_edge.images import resize

    frame = tiny.frames(1, seed=3, h=57, w=91)[0]
    expected = tiny.reference(resize(frame, tiny.H, tiny.W)[None], loc.metadata)[0]
    np.testing.assert_allclose(loc.describe(frame), expected, rtol=1e-4, atol=1e-5)


def test_mono_frames_and_image_paths(loc: Localizer, tmp_path: Path) -> None:
    from PIL import Image

    mono = np.random.default_rng(1).integers(0, 255, (30, 40), dtype=np.uint8)
    path = tmp_path / "frame.png"
    Image.fromarray(np.repeat(mono[:, :, None], 3, axis=2)).save(path)
    np.testing.assert_allclose(loc.describe(mono), loc.describe(path), atol=1e-6)
    np.testing.assert_allclose(loc.describe(str(path)), loc.describe(path), atol=1e-6)


@pytest.mark.parametrize(
    "bad, words",
    [
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        ([], "empty batch"),
        (42, "numpy array"),
    ],
)
def test_bad_frames_are_refused(loc: Localizer, bad: object, words: str) -> None:
    with pytest.raises(InvalidInputError, match=words):
        loc.describe(bad)  # type: ignore[arg-type]


def test_image_bytes_are_refused_naming_the_decoder(loc: Localizer, tmp_path: Path) -> None:
    """A ROS CompressedImage's data (array.array, memoryview) was taken for a batch of
    frames ("a frame must be a numpy array (or a file path), got int"); bytes were refused
    without a word on decoding them."""
    import array
    import io

    from PIL import Image

    encoded = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(encoded, "PNG")
    data = encoded.getvalue()
    for bad in (data, bytearray(data), memoryview(data), array.array("B", data)):
        for call in (loc.describe, loc.add, loc.query):
            with pytest.raises(InvalidInputError, match=r"bytes.*decode_image"):
                call(bad)
    with pytest.raises(InvalidInputError, match=r"bytes.*decode_image"):
        loc.describe([data])  # (in a batch too)
    assert len(loc) == 0


def test_add_and_query_return_records_best_first(loc: Localizer, tiny) -> None:
    frames = tiny.frames(20, seed=5)
    ids = [loc.add(f, stamp=float(i), pose=(i, 0.0, 0.0), meta={"i": i})
           for i, f in enumerate(frames)]
    assert ids == list(range(20)) and len(loc) == 20
    matches = loc.query(frames[7], k=3)
    assert [m.place_id for m in matches][0] == 7
    assert matches[0].score == pytest.approx(1.0, abs=1e-4)
    assert matches[0].stamp == 7.0 and matches[0].pose == (7.0, 0.0, 0.0)
    assert matches[0].meta == {"i": 7}
    assert matches[0].score >= matches[1].score >= matches[2].score
    assert loc.get(3).meta == {"i": 3}


def test_exclude_recent_and_min_score(loc: Localizer, tiny) -> None:
    frames = tiny.frames(10, seed=9)
    for f in frames:
        loc.add(f)
    recent = loc.query(frames[9], k=3, exclude_recent=4)
    assert all(m.place_id < 6 for m in recent) and len(recent) == 3
    assert loc.query(frames[9], k=3, min_score=0.9999)[0].place_id == 9
    assert all(m.score >= 0.9999 for m in loc.query(frames[9], k=5, min_score=0.9999))
    near = loc.query(frames[9], k=3, only_ids=[2, 4, 12345])  # a pose prior's candidates
    assert sorted(m.place_id for m in near) == [2, 4]
    d = loc.describe(frames[9])
    assert loc.query_descriptor(d, k=3, only_ids=[2, 4]) == near


def test_map_survives_save_and_refuses_another_model(tiny_onnx: Path, make_model, tiny,
                                                     tmp_path: Path, cpu_only: None) -> None:
    frames = tiny.frames(6, seed=11)
    map_dir = tmp_path / "map"
    with Localizer(tiny_onnx, map_dir) as loc:
        for i, f in enumerate(frames):
            loc.add(f, stamp=100.0 + i, meta={"name": f"p{i}"})
        assert loc.save() == map_dir
    with Localizer(tiny_onnx, map_dir) as again:
        assert len(again) == 6
        best = again.query(frames[4], k=1)[0]
        assert (best.place_id, best.stamp, best.meta) == (4, 104.0, {"name": "p4"})
        info = again.info()
        assert info["map"]["places"] == 6 and info["backend"]["name"] == "onnxruntime-cpu"
    other = make_model("other.onnx", meta=replace(tiny.metadata(), weights_sha256="cd" * 32))
    with pytest.raises(ModelMismatchError, match="a ROS node: a new map_dir"):  # its fix
        Localizer(other, map_dir)
    # nor may another model's map replace it: save() of a new map there succeeded, and the
    # six places were gone
    with Localizer(other) as stranger:
        stranger.add(frames[0])
        with pytest.raises(ModelMismatchError, match="another model"):
            stranger.save(map_dir)
    with Localizer(tiny_onnx, map_dir) as again:
        assert len(again) == 6



def test_a_map_left_as_map_old_by_an_older_save_is_named(tiny_onnx: Path, tiny, tmp_path: Path,
                                                         cpu_only: None, capsys) -> None:
    """Older vpr-edge left ``<map>.old`` (the whole map) when a save was interrupted between
    its renames, and opened it by itself. The Localizer started an empty map instead (every
    query empty), and the CLI said "build one" or "no such file"; each now says to rename it."""
    from vpr_edge.cli import main

    map_dir = tmp_path / "map"
    with Localizer(tiny_onnx, map_dir) as loc:
        loc.add(tiny.frames(1, seed=2)[0])
        loc.save()
    map_dir.rename(tmp_path / "map.old")
    hint = "map.old holds a map .* rename it to map"
    with pytest.raises(MapError, match=hint):
        Localizer(tiny_onnx, map_dir)
    for argv in (["info", str(map_dir)], ["query", str(tiny_onnx), str(map_dir), str(map_dir)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "rename it to map" in err and "vpr-edge map build" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.lock", "map.old", "tiny.onnx"]

def test_save_goes_where_the_map_was_opened(tiny_onnx: Path, tiny, tmp_path: Path,
                                           cpu_only: None, monkeypatch) -> None:
    """save() after saving a copy went to the copy; a relative map_dir followed the working
    directory of the moment of saving (a node that changes directory wrote a second map)."""
    frames = tiny.frames(4, seed=5)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    with Localizer(tiny_onnx, "main") as loc:
        loc.add(frames[0])
        loc.save()
        loc.add(frames[1])
        assert loc.save("backup") == tmp_path / "backup"
        loc.add(frames[2])
        monkeypatch.chdir(tmp_path / "elsewhere")
        assert loc.save() == tmp_path / "main"
        assert loc.info()["map"]["dir"] == str(tmp_path / "main")
    assert not (tmp_path / "elsewhere" / "main").exists()
    with Localizer(tiny_onnx, tmp_path / "main") as main, \
            Localizer(tiny_onnx, tmp_path / "backup") as backup:
        assert (len(main), len(backup)) == (3, 2)
    with Localizer(tiny_onnx) as fresh:  # started in memory: its first save is its home
        fresh.add(frames[3])
        first = fresh.save(tmp_path / "new")
        fresh.add(frames[0])
        assert fresh.save() == first
    with Localizer(tiny_onnx, first) as again:
        assert len(again) == 2


def test_a_damaged_graph_can_be_rebuilt_from_the_localizer(tiny_onnx: Path, tiny,
                                                           tmp_path: Path,
                                                           cpu_only: None) -> None:
    """The error names rebuild_if_corrupt=True; the Localizer had no such argument."""
    from vpr_edge.errors import MapCorruptError
    from vpr_edge.index import IndexSettings

    frames = tiny.frames(5, seed=8)
    with Localizer(tiny_onnx, tmp_path / "m", index_settings=IndexSettings(mode="hnsw")) as loc:
        for f in frames:
            loc.add(f)
        loc.save()
    graph = tmp_path / "m" / "index.hnsw"
    data = bytearray(graph.read_bytes())
    data[200] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(MapCorruptError, match="rebuild_if_corrupt=True"):
        Localizer(tiny_onnx, tmp_path / "m")
    with Localizer(tiny_onnx, tmp_path / "m", rebuild_if_corrupt=True) as loc:
        assert len(loc) == 5 and loc.query(frames[3], k=1)[0].place_id == 3
    assert graph.read_bytes() == bytes(data)  # opening changed nothing on disk


def test_errors_name_the_arguments_given(loc: Localizer, tiny) -> None:
    frame = tiny.frames(1, seed=1)[0]
    for kwargs, words in (({"stamp": float("nan")}, "stamp: nan is not finite"),
                          ({"pose": ("a",)}, "pose: "),
                          ({"meta": {"x": object()}}, "meta: "),
                          ({"place_id": -1}, "place_id: ")):
        with pytest.raises(InvalidInputError) as raised:
            loc.add(frame, **kwargs)
        assert str(raised.value).startswith(words), raised.value
    assert len(loc) == 0
    for bad in (-1, True, 1.5):
        with pytest.raises(InvalidInputError, match="exclude_recent must be an int"):
            loc.query(frame, exclude_recent=bad)
    with pytest.raises(InvalidInputError, match="colour_order"):
        loc.describe(frame, colour_order="")  # was taken as the default
    with pytest.raises(InvalidInputError, match="batch_size"):
        Localizer(loc._model_path, batch_size=True)
    with Localizer(loc._model_path, batch_size=np.int64(2)) as numpy_sized:  # (was refused)
        assert numpy_sized.describe(tiny.frames(3, seed=2)).shape == (3, loc.metadata.dim)
    for options in ([("intra_op_num_threads", 2)], {2: 2}):  # (were TypeErrors from **)
        with pytest.raises(InvalidInputError, match="backend_options must be a dict"):
            Localizer(loc._model_path, backend_options=options)
    assert loc.info()["model"]["colour_order"] == loc.metadata.colour_order


def test_an_empty_directory_takes_a_new_map(tiny_onnx: Path, tiny, tmp_path: Path,
                                            cpu_only: None) -> None:
    """README: the map is created if new; a directory made for it beforehand is new."""
    map_dir = tmp_path / "maps" / "today"
    map_dir.mkdir(parents=True)
    frames = tiny.frames(3, seed=2)
    with Localizer(tiny_onnx, map_dir) as loc:
        assert len(loc) == 0
        for f in frames:
            loc.add(f)
        loc.save()
    with Localizer(tiny_onnx, map_dir) as again:
        assert len(again) == 3 and again.query(frames[1], k=1)[0].place_id == 1


def test_save_without_a_directory_is_a_clear_error(loc: Localizer) -> None:
    with pytest.raises(InvalidInputError, match="no map directory"):
        loc.save()


def test_queries_run_while_another_thread_adds(loc: Localizer, tiny) -> None:
    frames = tiny.frames(60, seed=13)
    loc.add(frames[0])
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for f in frames[1:]:
                loc.add(f)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    seen = 0
    while thread.is_alive() or seen == 0:
        matches = loc.query(frames[0], k=1)
        assert matches[0].place_id == 0
        seen += 1
    thread.join(timeout=30)
    assert errors == [] and len(loc) == 60 and seen > 0


def test_add_and_query_take_one_frame(loc: Localizer, tiny) -> None:
    """A batch given to add() used to add every frame, then fail unpacking the ids: now it
    is refused before anything is described or added."""
    frames = tiny.frames(3, seed=12)
    for batch in (frames, list(frames)):
        with pytest.raises(InvalidInputError, match="add\\(\\) takes one frame"):
            loc.add(batch)
        with pytest.raises(InvalidInputError, match="query\\(\\) takes one frame"):
            loc.query(batch)
    descriptors = loc.describe(frames)
    with pytest.raises(InvalidInputError, match="add_descriptor\\(\\) takes one descriptor"):
        loc.add_descriptor(descriptors)
    with pytest.raises(InvalidInputError, match="query_descriptor\\(\\) takes one"):
        loc.query_descriptor(descriptors)
    assert len(loc) == 0


def test_long_lists_are_described_a_batch_at_a_time(tiny_onnx: Path, tiny, tmp_path: Path,
                                                    cpu_only: None, monkeypatch) -> None:
    """describe() over many files decodes and infers ``batch_size`` frames at a time (it
    used to hold every decoded frame at once); results are the same."""
    from PIL import Image

    frames = tiny.frames(7, seed=13)
    paths = []
    for i, frame in enumerate(frames):
        paths.append(tmp_path / f"f{i}.png")
        Image.fromarray(frame).save(paths[-1])
    with Localizer(tiny_onnx, backend="onnxruntime-cpu", batch_size=3) as loc:
        whole = loc.describe(frames)  # an array batch: already in memory
        sizes: list[int] = []
        real = Localizer._prepare
        monkeypatch.setattr(Localizer, "_prepare", lambda self, items, order: (
            sizes.append(len(items)), real(self, items, order))[1])
        chunked = loc.describe([str(p) for p in paths])
    assert sizes == [3, 3, 1]
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_a_map_that_cannot_be_opened_frees_the_backend(tiny_onnx: Path, make_model, tiny,
                                                      tmp_path: Path, cpu_only: None,
                                                      monkeypatch) -> None:
    from vpr_edge.backends.base import Backend

    with Localizer(tiny_onnx, tmp_path / "map") as loc:
        loc.add(tiny.frames(1, seed=14)[0])
        loc.save()
    closed: list[Backend] = []
    real_close = Backend.close
    monkeypatch.setattr(Backend, "close",
                        lambda self: closed.append(self) or real_close(self))
    other = make_model("other.onnx", meta=replace(tiny.metadata(), weights_sha256="cd" * 32))
    with pytest.raises(ModelMismatchError):
        Localizer(other, tmp_path / "map")
    assert len(closed) == 1 and closed[0].closed  # not left open until garbage collection


def test_the_plugin_graph_is_named_not_called_damaged(tiny_onnx: Path, tmp_path: Path,
                                                      cpu_only: None) -> None:
    onnx = pytest.importorskip("onnx")
    from vpr_edge.errors import ModelFormatError

    model = onnx.load(str(tiny_onnx))
    for i, node in enumerate(model.graph.node):  # NetVLAD as the TensorRT plugin node
        if node.op_type == "MatMul":
            model.graph.node[i].CopyFrom(onnx.helper.make_node(
                "NetVLAD", list(node.input), list(node.output), domain="vpr_edge"))
    model.opset_import.append(onnx.helper.make_opsetid("vpr_edge", 1))
    path = tmp_path / "m.plugin.onnx"
    onnx.save(model, str(path))
    for backend in ("onnxruntime-cpu", "auto"):
        with pytest.raises(ModelFormatError, match="plugin graph"):
            Localizer(path, backend=backend)


def test_closing_while_another_thread_runs_is_a_clear_error(tiny_onnx: Path, tiny,
                                                           cpu_only: None) -> None:
    """close() from one thread while run() works through its chunks in another: the running
    chunk finishes, the next one says the backend was closed (not an AttributeError)."""
    from vpr_edge.backends import open_backend

    backend = open_backend(tiny_onnx, backend="onnxruntime-cpu", max_batch=1)
    frames = tiny.frames(2, seed=15)
    real = backend._infer

    def infer_then_close(batch):
        out = real(batch)
        backend.close()  # as if another thread closed it between two chunks
        return out

    backend._infer = infer_then_close
    with pytest.raises(InvalidInputError, match="closed while running"):
        backend.run(frames)


def test_a_static_batch_model_is_filled_not_padded(make_model, tiny, cpu_only: None,
                                                   monkeypatch) -> None:
    """A model exported with a fixed batch of 4 runs 4 frames per call even when batch_size
    is 2 (two padded calls would cost twice the inference)."""
    path = make_model("static.onnx", batch=4)
    with Localizer(path, backend="onnxruntime-cpu", batch_size=2) as loc:
        assert loc._backend.min_batch == 4
        calls: list[int] = []
        real = loc._backend.run
        monkeypatch.setattr(loc._backend, "run", lambda b: calls.append(len(b)) or real(b))
        frames = tiny.frames(6, seed=16)
        out = loc.describe(frames)
        assert calls == [4, 2] and out.shape == (6, tiny.DIM)
        calls.clear()  # a list too (it was described 2 frames a call, each padded to 4)
        np.testing.assert_array_equal(loc.describe(list(frames)), out)
    assert calls == [4, 2]


def test_a_map_resized_by_another_library_is_named(tiny_onnx: Path, tiny, tmp_path: Path,
                                                   cpu_only: None, monkeypatch,
                                                   caplog) -> None:
    """OpenCV and Pillow resize a frame to slightly different pixels (the same frame scored
    0.92-0.998 cosine with the demo model), and a map built where OpenCV was installed was
    queried on a robot without it in silence: the map records which library resized its
    frames, and a runtime with the other one says so."""
    from vpr_edge import images
    from vpr_edge.index import PlaceIndex

    pytest.importorskip("cv2")
    big = tiny.frames(3, seed=8, h=2 * tiny.H, w=2 * tiny.W)
    with Localizer(tiny_onnx, tmp_path / "exact") as loc:  # frames of the model's size
        loc.add(tiny.frames(1, seed=8)[0])
        loc.save()
        assert loc.index.provenance == {}
    with Localizer(tiny_onnx, tmp_path / "map") as loc:
        loc.add(big[0])
        loc.save()
        assert loc.index.provenance == {"resizers": ["opencv"]}
    with caplog.at_level("WARNING", logger="vpr_edge"):
        Localizer(tiny_onnx, tmp_path / "map").close()
    assert "resized with" not in caplog.text
    with Localizer(tiny_onnx, tmp_path / "copy") as loc:  # for a query-only session below
        loc.add(big[0])
        loc.save()
    monkeypatch.setattr(images, "_CV2", [None])  # a runtime without OpenCV: Pillow
    with Localizer(tiny_onnx, tmp_path / "copy") as loc:  # queries resize frames too, but
        loc.query(big[2])                                # the map's frames stay OpenCV's
        loc.save()
    assert PlaceIndex.open(tmp_path / "copy").provenance == {"resizers": ["opencv"]}
    with caplog.at_level("WARNING", logger="vpr_edge"):
        with Localizer(tiny_onnx, tmp_path / "map") as loc:
            assert loc.info()["map"]["provenance"] == {"resizers": ["opencv"]}
            loc.add(big[1])
            loc.save()
    assert "frames were resized with opencv and this runtime resizes with pillow" in caplog.text
    assert "opencv-python-headless" in caplog.text
    with Localizer(tiny_onnx, tmp_path / "map") as loc:  # both now: still named
        assert loc.index.provenance == {"resizers": ["opencv", "pillow"]}


def test_paths_of_the_wrong_kind_are_refused_clearly() -> None:
    """Localizer(None) was a TypeError from os.fspath."""
    for args in ((None,), (3,), ("m.onnx", 5)):
        with pytest.raises(InvalidInputError, match="must be a path"):
            Localizer(*args)


def test_a_map_behind_a_link_is_read_after_an_interrupted_save(tiny_onnx: Path, tiny,
                                                               tmp_path: Path, cpu_only: None,
                                                               capsys) -> None:
    """A save through maps/current -> 2024-06-01 killed between its renames leaves
    2024-06-01.vpr-edge-old: Localizer, the node and the CLI looked for current.vpr-edge-old
    and started an empty map (whose saves were then refused)."""
    from vpr_edge.cli import main
    from vpr_edge.loop_node import _read_from_a_crash

    real = tmp_path / "2024-06-01"
    link = tmp_path / "current"
    link.symlink_to(real.name)
    with Localizer(tiny_onnx, link) as first:
        for frame in tiny.frames(3, seed=8):
            first.add(frame)
        first.save()
    real.rename(tmp_path / "2024-06-01.vpr-edge-old")  # the save's "aside" step, then a kill
    assert _read_from_a_crash(str(link))
    assert main(["info", str(link)]) == 0 and "places" in capsys.readouterr().out
    with Localizer(tiny_onnx, link) as again:
        assert len(again) == 3
        again.add(tiny.frames(1, seed=9)[0])
        again.save()  # puts the map back in place, through the link
    assert link.resolve() == real and len(Localizer(tiny_onnx, link)) == 4


def test_poses_as_numpy_arrays_or_pose_objects_and_frames_in_a_deque(loc: Localizer) -> None:
    """The annotations said pose: Sequence[float] (a NumPy array, robot code's usual, then
    failed type-checking) and describe() a Sequence of frames, but a deque of recent frames
    was refused ("got deque"), and vpr_edge's own Pose (a bag's, a PoseTrack's) was not a
    pose ("not a sequence of floats")."""
    from collections import deque

    from vpr_edge.poses import Pose

    frame = np.full((24, 32, 3), 120, np.uint8)
    recent = deque([frame, frame[::-1].copy()], maxlen=8)
    assert loc.describe(recent).shape == (2, loc.metadata.dim)
    first = loc.add(frame, pose=np.array([1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0]))
    second = loc.add(frame, pose=Pose(3.0, 4.0))
    assert loc.get(first).pose == (1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    assert loc.get(second).pose == (3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def test_opening_a_map_logs_when_it_was_saved(tiny_onnx: Path, tiny, tmp_path: Path,
                                              cpu_only: None, caplog) -> None:
    """After a crash (kill -9, a power cut) the node logged only ``opened map ... (N
    places)``, which did not say how old the save it opened was, so how much was lost."""
    with Localizer(tiny_onnx, tmp_path / "map") as loc:
        loc.add(tiny.frames(1, seed=8)[0])
        loc.save()
        saved_at = loc.index.info()["saved_at"]
    with caplog.at_level("INFO", logger="vpr_edge"):
        Localizer(tiny_onnx, tmp_path / "map").close()
    assert f"(1 places, saved {saved_at})" in caplog.text


def test_a_map_dir_that_holds_no_map_yet_is_said_to_start_a_new_one(
        tiny_onnx: Path, tmp_path: Path, cpu_only: None, caplog) -> None:
    """A mistyped or relative map_dir on a robot's second day started an empty map in
    silence (only "places": 0 in a long start-up line): no loops to the first day."""
    with caplog.at_level("INFO", logger="vpr_edge"):
        Localizer(tiny_onnx, tmp_path / "mpa").close()
    assert f"no map at {tmp_path / 'mpa'}: a new map" in caplog.text
