"""`vpr-edge map build` refusals that must come before any frame is described."""

from __future__ import annotations

from pathlib import Path

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
