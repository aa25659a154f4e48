"""Output files of the commands (--json, --csv): refused before the work when writing them
would destroy something, and a failed write named, not a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vpr_edge.cli import main


@pytest.fixture
def built(tiny_onnx: Path, tiny, tmp_path: Path, cpu_only: None) -> tuple[Path, Path]:
    """A folder of frames and a map built from it."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(tiny.frames(4, seed=5, h=24, w=32)):
        Image.fromarray(frame).save(frames / f"Image{i:03d}.png")
    map_dir = tmp_path / "map"
    assert main(["map", "build", str(tiny_onnx), str(map_dir), "--images", str(frames),
                 "--no-progress"]) == 0
    return frames, map_dir


def files_of(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}


def test_json_inside_a_map_folder_is_refused(tiny_onnx: Path, built, tmp_path: Path,
                                             capsys) -> None:
    """`info MAP --json MAP/manifest.json` overwrote the map's manifest: the map was lost."""
    frames, map_dir = built
    before = files_of(map_dir)
    assert main(["info", str(map_dir), "--json", str(map_dir / "manifest.json")]) == 2
    assert "inside the map folder" in capsys.readouterr().err
    assert files_of(map_dir) == before
    new_map = tmp_path / "new"  # not made yet: the summary would land in it
    assert main(["map", "build", str(tiny_onnx), str(new_map), "--images", str(frames),
                 "--no-progress", "--json", str(new_map / "summary.json")]) == 2
    assert "inside the map folder" in capsys.readouterr().err and not new_map.exists()


def test_an_output_that_is_an_input_or_named_like_a_model_is_refused(tiny_onnx: Path, built,
                                                                      tmp_path: Path,
                                                                      capsys) -> None:
    frames, _ = built
    model = tiny_onnx.read_bytes()
    assert main(["info", str(frames / "Image000.png"), "--json", str(tmp_path / "x.onnx")]) == 2
    assert "a .onnx name is a model's" in capsys.readouterr().err
    assert main(["loops", str(tiny_onnx), "--images", str(frames), "--no-progress", "--csv",
                 str(frames / "Image001.png")]) == 2
    assert "is an input of this command" in capsys.readouterr().err
    assert main(["info", str(tiny_onnx), "--json", str(tiny_onnx)]) == 2
    assert tiny_onnx.read_bytes() == model
    summary = ["loops", str(tiny_onnx), "--images", str(frames), "--no-progress", "--json",
               str(frames / "loops.json")]  # not an image: a rerun may replace it
    assert main(summary) == 0 and main(summary) == 0


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_failed_write_is_named(tiny_onnx: Path, built, capsys) -> None:
    """A full disk gave a raw OSError traceback after the work."""
    frames, map_dir = built
    assert main(["info", str(map_dir), "--json", "/dev/full"]) == 2
    assert "--json /dev/full: cannot write it (No space left on device)" in \
        capsys.readouterr().err
    assert main(["loops", str(tiny_onnx), "--images", str(frames), "--no-progress",
                 "--csv", "/dev/full"]) == 2
    assert "--csv /dev/full: cannot write it" in capsys.readouterr().err


def test_json_to_a_special_file_and_to_a_file(tiny_onnx: Path, built, tmp_path: Path,
                                              capfd) -> None:
    """A pipe or /dev/stdout is written directly (it cannot be replaced by a rename), a file
    whole (written beside it, then renamed)."""
    _, map_dir = built
    assert main(["info", str(map_dir), "--json", "/dev/stdout"]) == 0
    out = capfd.readouterr().out
    assert json.loads(out[out.index("{"):])["places"] == 4
    target = tmp_path / "out" / "info.json"
    assert main(["info", str(map_dir), "--json", str(target)]) == 0
    assert json.loads(target.read_text())["places"] == 4
    assert [p.name for p in target.parent.iterdir()] == ["info.json"]


def test_a_reader_that_leaves_the_pipe_is_no_error(tiny_onnx: Path) -> None:
    """`vpr-edge info model | head -1` printed a BrokenPipeError traceback."""
    child = subprocess.Popen([sys.executable, "-m", "vpr_edge.cli", "info", str(tiny_onnx)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # the reader leaves before the first line (`| head -0`)
    assert child.wait(timeout=60) == 141
    assert b"Traceback" not in child.stderr.read()


def test_json_outputs_are_strict_json(tmp_path: Path) -> None:
    """json.dumps writes NaN and Infinity, which jq and other strict parsers refuse; an
    unknown number is null (numpy floats too)."""
    import numpy as np

    from vpr_edge.cli.output import write_json

    def refuse(name: str):
        raise ValueError(name)

    target = tmp_path / "out.json"
    write_json(target, {"stamp": float("nan"), "pose": (1.0, float("inf")),
                        "score": np.float32(0.5), "gone": np.float32("nan"), "n": 3})
    assert json.loads(target.read_text(), parse_constant=refuse) == {
        "stamp": None, "pose": [1.0, None], "score": 0.5, "gone": None, "n": 3}
