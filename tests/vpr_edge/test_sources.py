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
    truth = truth_from_names([f.key for f in frames], 0)
    assert [[j for j in range(6) if truth.is_match(q, j)] for q in range(6)] == \
        [[3], [4], [5], [0], [1], [2]]
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
    # a link to the file, or to the bag itself (a ROS 2 bag is a folder), resolves too
    (tmp_path / "file.png").symlink_to(real / "Image000.png")
    assert direct.key in stored_keys([str(tmp_path / "file.png")])
    (tmp_path / "bag").symlink_to(real)
    assert f"{real}:/camera/image_raw:7" in stored_keys([f"{tmp_path / 'bag'}:/camera/image_raw:7"])


def _frames_of_list(csv_path: Path) -> list[tuple[str, float | None, tuple | None]]:
    from vpr_edge.sources import list_source

    return [(Path(f.key).name, f.stamp, f.pose) for f in list_source(csv_path)]


def test_a_frame_list_takes_spaces_an_excel_bom_and_blank_rows(tmp_path: Path) -> None:
    """``image, timestamp, x, y`` (spaces after the commas) dropped every stamp and pose
    without a word; Excel's byte-order mark made the 'image' column '\\ufeffimage', refused;
    a blank row (or Excel's row of commas) became a frame of the list's own folder."""
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    spaced = tmp_path / "spaced.csv"
    spaced.write_text("image, timestamp, x, y\n a.png , 0.5, 1, 2\n\n,,,\nb.png,1.5,3,4\n")
    assert _frames_of_list(spaced) == [("a.png", 0.5, (1.0, 2.0)), ("b.png", 1.5, (3.0, 4.0))]
    excel = tmp_path / "excel.csv"
    excel.write_bytes(b"\xef\xbb\xbfimage,timestamp\r\na.png,7\r\n")
    assert _frames_of_list(excel) == [("a.png", 7.0, None)]


@pytest.mark.parametrize("content, message", [
    (b"image\na.png\ncaf\xe9.png\n", r"bad\.csv:3: not UTF-8 text \(byte 0xe9\); save the "
                                     r"frame list as UTF-8"),
    (b"timestamp,image\n1.0\n", r"bad\.csv:2: no image file in the 'image' column \(the row "
                                r"has 1 of the header's 2 fields\)"),
    (b"image,timestamp\na.png,0\n,1\n", r"bad\.csv:3: no image file in the 'image' column; "),
    (b"image,timestamp\na.png,0,1\n", r"bad\.csv:2: 3 fields, but the header has 2 \(image, "
                                      r"timestamp\); quote a path that holds a comma"),
    (b"image,x\na.png,1\n", r"bad\.csv: pose columns x without y; a pose is x, y or x, y, z"),
    (b"image,x,y,qw\na.png,1,2,1\n", r"pose columns x, y, qw without z, qx, qy, qz;"),
    (b"image,x,y,x\na.png,1,2,3\n", r"the column 'x' appears more than once"),
    (b"Image,Timestamp\na.png,1\n", r"needs an 'image' column; found \['Image', 'Timestamp'\]"
                                    r" \(a frame list has the columns image and, optionally"),
    (b"image;timestamp\na.png;1,5\n", r"bad\.csv: the header 'image;timestamp' is one column: "
                                      r"a frame list is separated by commas, not ';'"),
    (b"image\ttimestamp\na.png\t1\n", r"separated by commas, not '\\t'"),
])
def test_a_bad_frame_list_is_refused_naming_the_file_and_line(tmp_path: Path, content: bytes,
                                                              message: str) -> None:
    """A Latin-1 list gave a raw UnicodeDecodeError, a short row a TypeError about None, an
    empty image cell "a folder, not an image file"; an ``x`` column alone was a 1-number
    pose and a column given twice kept its last value."""
    from vpr_edge.sources import list_source

    _png(tmp_path / "a.png")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    with pytest.raises(InvalidInputError, match=message):
        list_source(bad)


def test_unknown_frame_list_columns_are_named_in_a_warning(tmp_path: Path, caplog) -> None:
    """``X,Y``, ``stamp`` or ``lat,lon`` columns were ignored without a word, so a map got
    no stamps or poses; they are still ignored (a list may carry notes of its own), and the
    warning names them and the columns a frame list has."""
    _png(tmp_path / "a.png")
    listed = tmp_path / "list.csv"
    listed.write_text("image,stamp,X,Y,lat\na.png,1,2,3,4\n")
    with caplog.at_level("WARNING", logger="vpr_edge"):
        assert _frames_of_list(listed) == [("a.png", None, None)]
    assert "list.csv: ignored the columns 'stamp', 'X', 'Y', 'lat'" in caplog.text
    assert "x, y, z, qx, qy, qz, qw, in lower case" in caplog.text


def test_a_symlink_loop_in_a_folder_is_a_damaged_frame(tmp_path: Path, caplog) -> None:
    """A link to itself stopped folder_source with pathlib's "RuntimeError: Symlink loop",
    --skip-damaged or not; it is a frame that cannot be decoded, named as such."""
    from vpr_edge.errors import ImageDecodeError
    from vpr_edge.sources import folder_source

    _png(tmp_path / "Image000.png")
    (tmp_path / "Image001.png").symlink_to("Image001.png")
    frames = list(folder_source(tmp_path))
    assert [Path(f.key).name for f in frames] == ["Image000.png", "Image001.png"]
    with pytest.raises(ImageDecodeError, match=r"Image001\.png: a loop of symbolic links.*"
                                               r"--skip-damaged"):
        folder_source(tmp_path).pixels(frames[1])
    source = folder_source(tmp_path, skip_damaged=True)
    kept = [f for f in source if source.pixels(f) is not None]
    assert [Path(f.key).name for f in kept] == ["Image000.png"]
    assert len(source.skipped) == 1 and "a loop of symbolic links" in source.skipped[0]


def test_a_folder_given_twice_is_refused(tmp_path: Path) -> None:
    """`map build --images run1 run1` stored every frame twice."""
    folder = tmp_path / "run1"
    folder.mkdir()
    (tmp_path / "same").symlink_to(folder)
    with pytest.raises(InvalidInputError, match="more than once"):
        open_source(images=[folder, tmp_path / "same"])


def test_image_files_of_other_types_in_a_folder_are_named_in_a_warning(tmp_path: Path,
                                                                       caplog) -> None:
    """A .jfif, .jpe or .gif beside the .jpg frames was left out without a word (map build
    said "1 images"), while `vpr-edge query` read those very files."""
    from PIL import Image

    from vpr_edge.sources import folder_source

    _png(tmp_path / "f000.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "f001.jfif", format="JPEG")
    Image.new("RGB", (8, 8)).save(tmp_path / "f002.gif")
    (tmp_path / "notes.txt").write_text("not an image: no warning")
    (tmp_path / "calibration.pdf").write_bytes(b"%PDF-1.4")  # Pillow writes PDFs, reads none
    with caplog.at_level("WARNING", logger="vpr_edge"):
        assert len(list(folder_source(tmp_path).frames())) == 1
    assert "left out 2 image files of other types (f001.jfif, f002.gif)" in caplog.text
    assert "calibration.pdf" not in caplog.text


def test_frames_numbered_without_zero_padding_are_named_in_a_warning(tmp_path: Path,
                                                                     caplog) -> None:
    """frame_1 ... frame_12 (ffmpeg's %d): file-name order took frame_10, frame_11 and
    frame_12 between frame_1 and frame_2 without a word, so a loop detector excluding the
    last keyframes saw frames seconds apart as far apart in the sequence."""
    from vpr_edge.sources import folder_source

    unpadded = tmp_path / "unpadded"
    unpadded.mkdir()
    for i in range(1, 13):
        _png(unpadded / f"frame_{i}.png")
    with caplog.at_level("WARNING", logger="vpr_edge"):
        names = [Path(f.key).name for f in folder_source(unpadded)]
    assert names[:3] == ["frame_1.png", "frame_10.png", "frame_11.png"]  # (as documented)
    assert "frame_10.png comes before frame_2.png" in caplog.text
    assert "zero-padded" in caplog.text and "--list" in caplog.text
    caplog.clear()
    for name, names in (("padded", [f"frame_{i:04d}.png" for i in range(1, 13)]),
                        ("seconds", ["100.25.png", "100.3.png", "101.png", "102.5.png"]),
                        ("words", ["a1.png", "a10.png", "b2.png"])):
        (tmp_path / name).mkdir()
        for file in names:
            _png(tmp_path / name / file)
        with caplog.at_level("WARNING", logger="vpr_edge"):
            list(folder_source(tmp_path / name))
    assert "zero-padded" not in caplog.text
