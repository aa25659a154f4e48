"""``vpr-edge query``: its table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vpr_edge.cli import main


@pytest.fixture
def two_traversals(tiny_onnx: Path, tiny, tmp_path: Path, cpu_only: None,
                   monkeypatch: pytest.MonkeyPatch) -> Path:
    """day_left/ and day_right/ with the same file names, mapped with epoch stamps (left
    1700000000 + i, right 1700000010 + i); the current directory is their parent."""
    monkeypatch.chdir(tmp_path)
    rows = []
    for side, seed, first in (("day_left", 1, 1_700_000_000), ("day_right", 2, 1_700_000_010)):
        (tmp_path / side).mkdir()
        for i, frame in enumerate(tiny.frames(3, seed=seed, h=24, w=32)):
            image = tmp_path / side / f"Image{i:03d}.jpg"
            Image.fromarray(frame).save(image, quality=95)
            rows.append(f"{image},{first + i}\n")
    (tmp_path / "frames.csv").write_text("image,timestamp\n" + "".join(rows))
    assert main(["map", "build", str(tiny_onnx), "map", "--list", "frames.csv",
                 "--no-progress"]) == 0
    return tmp_path


def test_query_prints_stamps_whole(tiny_onnx: Path, two_traversals: Path, capsys) -> None:
    """The table printed every float with 4 digits: a stamp 1700000002.0 showed as 1.7e+09."""
    capsys.readouterr()
    assert main(["query", str(tiny_onnx), "map", "day_left/Image002.jpg", "-k", "2",
                 "--json", "q.json"]) == 0
    out = capsys.readouterr().out
    header, first, second = out.splitlines()[1:]
    assert header.split() == ["image", "rank", "place_id", "score", "stamp", "source"]
    assert first.split()[3:5] == ["1", "1700000002.000"] and "e+09" not in out
    assert len(second.split()[3]) <= 6  # (scores keep their short form)
    assert json.loads(Path("q.json").read_text())[0]["stamp"] == 1_700_000_002.0


def test_query_tells_images_of_the_same_name_apart(tiny_onnx: Path, two_traversals: Path,
                                                    capsys) -> None:
    """day_left/Image002.jpg and day_right/Image002.jpg both showed as Image002.jpg, in the
    table and in the JSON (image and source)."""
    left, right = "day_left/Image002.jpg", "day_right/Image002.jpg"
    capsys.readouterr()
    assert main(["query", str(tiny_onnx), "map", left, right, "-k", "1", "--json",
                 "q.json"]) == 0
    matches = json.loads(Path("q.json").read_text())
    assert [m["image"] for m in matches] == [left, right]  # as given
    assert [m["source"] for m in matches] == [str(two_traversals / left),
                                               str(two_traversals / right)]  # as mapped
    rows = capsys.readouterr().out.splitlines()[2:]
    assert rows[0].split()[0] == left and rows[1].split()[0] == right
    assert rows[0].split()[-1] == str(two_traversals / left)
    assert rows[1].split()[-1] == str(two_traversals / right)
    assert main(["query", str(tiny_onnx), "map", left, "-k", "1"]) == 0  # no name repeated
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row[0] == row[-1] == "Image002.jpg"
