"""`vpr-edge map build` refusals that must come before any frame is described."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vpr_edge.cli import main


def test_a_map_folder_holding_other_files_is_refused_before_any_frame(
        tiny_onnx: Path, tiny, tmp_path: Path, cpu_only: None, monkeypatch, capsys) -> None:
    """New frames copied into the map folder and added from there were deleted by the
    build's own save (a save replaces the whole folder)."""
    from vpr_edge import localizer

    map_dir = tmp_path / "map"
    first = tmp_path / "first"
    first.mkdir()
    Image.fromarray(tiny.frames(1, seed=3, h=24, w=32)[0]).save(first / "a.png")
    assert main(["map", "build", str(tiny_onnx), str(map_dir), "--images", str(first),
                 "--no-progress"]) == 0
    new = map_dir / "new_frames"
    new.mkdir()
    Image.fromarray(tiny.frames(1, seed=4, h=24, w=32)[0]).save(new / "b.png")
    described = []
    monkeypatch.setattr(localizer.Localizer, "describe",
                        lambda self, *a, **k: described.append(1))
    assert main(["map", "build", str(tiny_onnx), str(map_dir), "--images", str(new),
                 "--no-progress"]) == 2
    assert "not part of the map (new_frames/)" in capsys.readouterr().err
    assert described == [] and (new / "b.png").is_file()


def test_every_frame_damaged_writes_no_map(tiny_onnx: Path, tmp_path: Path, cpu_only: None,
                                           capsys) -> None:
    """With --skip-damaged it wrote a map of no places and said nothing was wrong (exit 0)."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("a.png", "b.jpg"):
        (frames / name).write_bytes(b"not an image")
    map_dir = tmp_path / "map"
    assert main(["map", "build", str(tiny_onnx), str(map_dir), "--images", str(frames),
                 "--skip-damaged", "--no-progress"]) == 2
    assert "every frame was damaged (2 skipped" in capsys.readouterr().err
    assert not map_dir.exists()


def test_the_first_damaged_message_is_named_and_the_frames_before_it_kept(
        tiny_onnx: Path, tiny, tmp_path: Path, cpu_only: None, bag_writer, capsys) -> None:
    """Messages are deserialised a batch ahead of decoding: a message that does not
    deserialise (5) was named instead of the first damaged frame (3, an encoding no one
    decodes), and the good frames of that batch (0-2) were not kept."""
    store = bag_writer._store()
    frames = tiny.frames(5, seed=6, h=24, w=32)
    messages = [(10.0 + i, bag_writer.image_message(store, frames[i], 10.0 + i))
                for i in range(5)]
    odd = messages[3][1]
    messages[3] = (13.0, store.types["sensor_msgs/msg/Image"](
        header=odd.header, height=odd.height, width=odd.width, encoding="yuv422",
        is_bigendian=0, step=odd.step, data=odd.data))
    messages.append((15.0, b"\x01\x02"))  # does not even deserialise
    bag = bag_writer.write_messages(tmp_path / "mixed.bag", messages)
    map_dir = tmp_path / "map"
    assert main(["map", "build", str(tiny_onnx), str(map_dir), "--bag", str(bag), "--topic",
                 bag_writer.IMAGE_TOPIC, "--no-progress"]) == 2
    assert "message 3: image encoding 'yuv422'" in capsys.readouterr().err
    assert main(["info", str(map_dir), "--json", str(tmp_path / "info.json")]) == 0
    assert json.loads((tmp_path / "info.json").read_text())["places"] == 3


@pytest.mark.parametrize("frames, rebuilt", [(10, False), (13, True), (30, True)])
def test_a_new_map_searched_through_its_graph_is_rebuilt_in_random_order(
        tiny_onnx: Path, tmp_path: Path, cpu_only: None, frames: int, rebuilt: bool) -> None:
    """A new map of 2001-2200 places was searched exactly while it was built (a map searched
    exactly keeps that up to 10% beyond exact_max_places), so the random-order rebuild was
    skipped, and every later open searched its route-order graph."""
    from PIL import Image

    from vpr_edge.cli.map_build import build_map
    from vpr_edge.index import IndexSettings
    from vpr_edge.sources import folder_source

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(frames):
        Image.new("RGB", (32, 24), (8 * i, 255 - 8 * i, 3 * i)).save(folder / f"{i:03d}.png")
    summary = build_map(tiny_onnx, tmp_path / "map", folder_source(folder), progress=False,
                        backend="onnxruntime-cpu",
                        index_settings=IndexSettings(exact_max_places=12))
    assert (summary["graph_rebuild_seconds"] is not None) == rebuilt


def test_a_frame_the_model_fails_on_is_named_and_the_frames_before_it_saved(
        tiny_onnx: Path, tiny, tmp_path: Path, cpu_only: None, monkeypatch, capsys,
        caplog) -> None:
    """NaN descriptors (an FP16 overflow, a broken engine) in the middle of a build lost every
    place added since the last save, and the error named "frame 2": its place in the batch."""
    import numpy as np

    from vpr_edge.backends.onnxruntime_backend import OnnxRuntimeBackend
    from vpr_edge.index import PlaceIndex

    frames = tmp_path / "frames"
    frames.mkdir()
    pictures = tiny.frames(12, seed=5, h=24, w=32)
    pictures[10] = 255  # the frame the model "overflows" on: the second batch's third
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(frames / f"f{i:02d}.png")
    real_infer = OnnxRuntimeBackend._infer

    def overflowing(self, chunk):
        out = np.array(real_infer(self, chunk))
        out[chunk.reshape(len(chunk), -1).min(axis=1) == 255] = np.nan
        return out

    monkeypatch.setattr(OnnxRuntimeBackend, "_infer", overflowing)
    map_dir = tmp_path / "map"
    assert main(["map", "build", str(tiny_onnx), str(map_dir), "--images", str(frames),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"error: {frames / 'f10.png'}: onnxruntime-cpu: the model produced NaN/inf" in err
    assert "saved the 10 places this run added before the error" in caplog.text
    saved = PlaceIndex.open(map_dir)
    assert sorted(saved.get(p).meta["source"] for p in saved.ids()) == [
        str(frames / f"f{i:02d}.png") for i in range(10)]
    (frames / "f10.png").unlink()  # the rerun resumes after the saved places
    assert main(["map", "build", str(tiny_onnx), str(map_dir), "--images", str(frames),
                 "--no-progress", "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["added"], summary["already_in_map"], summary["places"]) == (1, 10, 11)


def test_a_frame_given_twice_in_one_run_is_one_place(tiny_onnx: Path, tiny, tmp_path: Path,
                                                    cpu_only: None) -> None:
    """A link to a frame of an earlier folder of the same run was added again, as a second
    place of that frame, though a rerun (or a run resumed after an interruption) skips it
    as already in the map."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    frames = tiny.frames(3, seed=8, h=24, w=32)
    for i in range(2):
        Image.fromarray(frames[i]).save(first / f"{i}.png")
    (second / "link.png").symlink_to(first / "0.png")
    Image.fromarray(frames[2]).save(second / "2.png")
    out = tmp_path / "build.json"
    args = ["map", "build", str(tiny_onnx), str(tmp_path / "map"), "--images", str(first),
            str(second), "--no-progress", "--json", str(out)]
    assert main(args) == 0
    summary = json.loads(out.read_text())
    assert (summary["added"], summary["already_in_map"], summary["places"]) == (3, 1, 3)
    assert main(args) == 0
    assert json.loads(out.read_text())["places"] == 3
