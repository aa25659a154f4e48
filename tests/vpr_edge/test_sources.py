"""Choosing the frame source (``vpr_edge.sources.open_source``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vpr_edge.errors import InvalidInputError
from vpr_edge.sources import open_source


def test_an_empty_frame_list_argument_is_no_source(tmp_path: Path) -> None:
    """``frame_list=""`` passed the one-source check as "not given", then was read as a CSV
    (the current directory): the bag the caller gave was never looked at."""
    with pytest.raises(InvalidInputError) as raised:
        open_source(frame_list="", bag=tmp_path / "missing.bag", topic="/camera/image_raw")
    assert "missing.bag" in str(raised.value) and "frame list" not in str(raised.value)
    with pytest.raises(InvalidInputError, match="exactly one frame source"):
        open_source(frame_list="")


def _png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (8, 6), (90, 120, 30)).save(path, format="PNG")
    return path


def test_a_folder_lists_image_files_only_not_hidden_ones_or_folders(tmp_path: Path) -> None:
    """A folder copied from a Mac holds ``._Image000.jpg`` (AppleDouble) files: they sorted
    first and stopped the build as undecodable; a hidden thumbnail became place 0, and a
    folder named like an image was counted as one."""
    from vpr_edge.sources import folder_source

    for name in ("Image000.png", "Image001.PNG", "._Image000.png", ".thumbnail.png"):
        _png(tmp_path / name)
    (tmp_path / "extra.jpg").mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "Image002.png").symlink_to(tmp_path / "gone.png")  # broken: listed, so that
    source = folder_source(tmp_path)                                # decoding names it
    assert [Path(f.key).name for f in source] == ["Image000.png", "Image001.PNG",
                                                  "Image002.png"]
    assert "(3 images)" in source.description


def test_keys_keep_the_folders_of_symlinked_traversals(tmp_path: Path) -> None:
    """Two traversals whose files are links into one pool: the keys resolved every link, so
    both traversals had the pool's folder, and ``--gt names`` (which pairs frames of
    different folders) found no ground truth at all."""
    from vpr_edge.loop_metrics import truth_from_names
    from vpr_edge.sources import concat_sources, folder_source

    pool = tmp_path / "pool"
    pool.mkdir()
    for side in ("left", "right"):
        (tmp_path / side).mkdir()
        for i in range(3):
            target = _png(pool / f"{side}{i}.png")
            (tmp_path / side / f"Image{i:03d}.png").symlink_to(target)
    frames = list(concat_sources([folder_source(tmp_path / "left"),
                                  folder_source(tmp_path / "right")]))
    assert [Path(f.key).parent.name for f in frames] == ["left"] * 3 + ["right"] * 3
    assert truth_from_names([f.key for f in frames], 0) == [{3}, {4}, {5}, {0}, {1}, {2}]
    # the resolved key, which earlier versions stored in maps, still names each frame
    assert [Path(f.resolved_key).name for f in frames] == \
        [f"{side}{i}.png" for side in ("left", "right") for i in range(3)]
    plain = next(iter(folder_source(pool)))
    assert plain.keys() == (plain.key,)


def test_stored_keys_know_each_place_under_both_spellings(tmp_path: Path) -> None:
    """A map built through a link, resumed through the folder it names (a relative path from
    inside it: the working directory is the physical path), added every frame again."""
    from vpr_edge.sources import folder_source, stored_keys

    real = tmp_path / "real"
    real.mkdir()
    _png(real / "Image000.png")
    (tmp_path / "link").symlink_to(real)
    through_link = next(iter(folder_source(tmp_path / "link")))
    direct = next(iter(folder_source(real)))
    assert through_link.key != direct.key
    for stored, rerun in ((through_link, direct), (direct, through_link)):
        assert not stored_keys([stored.key, None]).isdisjoint(rerun.keys())
    bag_key = f"{tmp_path / 'link' / 'run.bag'}:/camera/image_raw:7"
    assert f"{real / 'run.bag'}:/camera/image_raw:7" in stored_keys([bag_key])
