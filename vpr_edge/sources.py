"""Where frames come from for the command line: a folder, a CSV list, or a ROS bag.

Each source yields :class:`SourceFrame` items in order, with a stable ``key`` per frame so an
interrupted ``vpr-edge map build`` can resume without adding a frame twice.

CSV lists (``--list``, UTF-8, an Excel byte-order mark is fine) have a header row with an
``image`` column (paths relative to the CSV file or absolute) and optional ``timestamp``
(seconds) and pose columns: ``x, y`` or ``x, y, z`` (metres) or ``x, y, z, qx, qy, qz, qw``.
Spaces around names and cells are ignored; blank rows are left out; other columns are
ignored with a warning.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import functools
import io
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from .bags import positive_int
from .errors import ImageDecodeError, InvalidInputError
from .images import load_image
from .paths import folder_entries, is_dir, is_file, look
from .poses import stamp_meta

log = logging.getLogger("vpr_edge")

PathLike = Union[str, "os.PathLike[str]"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
#: image files a folder source leaves out with a warning (camera or export formats that are
#: images but not frames it reads; sidecar files such as .pdf or .h5 pass without a word)
OTHER_IMAGE_SUFFIXES = (".jfif", ".jpe", ".gif", ".pbm", ".pnm", ".jp2", ".j2k", ".tga",
                        ".heic", ".heif", ".avif", ".dng", ".cr2", ".nef", ".arw")
POSE_COLUMNS = ("x", "y", "z", "qx", "qy", "qz", "qw")
#: the pose columns a frame list may have: a position (2-D or 3-D), or a position and rotation
POSE_SETS = (POSE_COLUMNS[:2], POSE_COLUMNS[:3], POSE_COLUMNS)
LIST_COLUMNS = ("image", "timestamp", *POSE_COLUMNS)
LIST_COLUMNS_HINT = ("a frame list has the columns image and, optionally, timestamp (seconds) "
                     "and x, y or x, y, z (metres) or x, y, z, qx, qy, qz, qw, in lower case")
SKIP_HINT = "(--skip-damaged leaves such frames out)"


@dataclass(frozen=True)
class SourceFrame:
    """One frame: position in the source, a unique key, the pixels (or their file)."""

    index: int
    key: str
    image: np.ndarray | Path | Callable[[], np.ndarray]  # pixels, their file, their decoder
    stamp: float | None = None
    pose: tuple[float, ...] | None = None
    #: the key with symlinks resolved (what maps stored before keys kept symlinks, Nov 2026;
    #: a resumed map build takes a place stored under either spelling for this frame)
    resolved_key: str | None = None
    #: ``stamp`` exactly, ``(sec, nanosec)`` (a bag's header stamps), kept in the place's
    #: metadata (``ros_stamp``) so that a node's loops to it carry it exactly
    exact_stamp: tuple[int, int] | None = None

    def keys(self) -> tuple[str, ...]:
        """Every key a map may hold this frame under."""
        if self.resolved_key is None or self.resolved_key == self.key:
            return (self.key,)
        return (self.key, self.resolved_key)

    def pixels(self) -> np.ndarray:
        """The frame as ``uint8 HxWx3`` RGB (decoding the file or bag message if needed)."""
        if isinstance(self.image, np.ndarray):
            return self.image
        if isinstance(self.image, Path):
            return load_image(self.image)
        return self.image()


@dataclass(frozen=True)
class FrameSource:
    """A sequence of frames and its length (for progress bars)."""

    description: str
    length: int
    frames: Any  # a callable returning an iterator of SourceFrame
    #: leave out frames that cannot be decoded (see :meth:`pixels`) instead of stopping
    skip_damaged: bool = False
    #: what was wrong with each frame left out in the current pass (with ``skip_damaged``)
    skipped: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[SourceFrame]:
        self.skipped.clear()
        return iter(self.frames())

    def pixels(self, frame: SourceFrame) -> np.ndarray | None:
        """``frame``'s pixels, decoded only now (a resumed ``map build`` never decodes the
        frames its map holds); with ``skip_damaged``, None for a file or bag message that
        cannot be decoded (noted in :attr:`skipped`). A bag message that does not even
        deserialise is left out while the bag is read."""
        try:
            return frame.pixels()
        except ImageDecodeError as exc:
            if not self.skip_damaged:
                raise ImageDecodeError(f"{exc} {SKIP_HINT}") from exc
            self.skipped.append(str(exc))
            log.warning("skipped: %s", exc)
            return None

    def __len__(self) -> int:
        return self.length


def _text(path: str | Path) -> str:
    """A path as text a map can store (a byte that is not UTF-8 in a file name becomes
    ``\\xNN``; other names are unchanged)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _keys(path: Path) -> tuple[str, str]:
    """A frame file's key, its absolute path as listed (symlinks kept: ``--gt names`` reads
    the traversal from its folder), and the key with symlinks resolved (a loop of links stays
    as it is: decoding the frame names it)."""
    return _text(os.path.abspath(path)), _text(os.path.realpath(path))


def place_meta(frame: SourceFrame) -> dict[str, Any]:
    """What a map build stores with a frame's place: its source key and index (a resumed
    build skips the frames its map holds), and its exact stamp when it has one."""
    return {"source": frame.key, "index": frame.index, **(stamp_meta(frame.exact_stamp) or {})}


def stored_keys(keys: Iterable[str | None]) -> set[str]:
    """The source keys a map's places hold, each also with symlinks resolved: a frame given
    now through another spelling of the same file, bag or folder (a link to it, or what a
    link names) is found in the map all the same (keys that maps stored before keys kept
    symlinks are resolved already: a frame's ``resolved_key`` finds them)."""
    known = {key for key in keys if key}
    resolve = _resolver()
    for key in list(known):
        known.add(resolve(key))
        bag, topic, number = key.rsplit(":", 2) if key.count(":") >= 2 else (key, "", "")
        if number.isdigit():  # a bag's frame, "<bag>:<topic>:<n>" (a topic has no ':')
            known.add(f"{resolve(bag)}:{topic}:{number}")
    return known


def _resolver() -> Callable[[str], str]:
    """``os.path.realpath``, remembered: each folder is resolved once (a map holds thousands
    of keys in a few folders), then only the last part of a path is looked at (a link?)."""
    folders = functools.lru_cache(maxsize=None)(os.path.realpath)

    def resolve(path: str) -> str:
        folder, name = os.path.split(path)
        where = os.path.join(folders(folder), name)
        return os.path.realpath(where) if os.path.islink(where) else where

    return functools.lru_cache(maxsize=None)(resolve)


def _file_frame(index: int, path: Path, stamp: float | None = None,
                pose: tuple[float, ...] | None = None) -> SourceFrame:
    key, resolved = _keys(path)
    return SourceFrame(index, key, path, stamp, pose, resolved)


def is_image_file(path: Path) -> bool:
    """A listed image: a known suffix, not a folder, and not hidden (``._Image000.jpg``, the
    AppleDouble files a Mac copies along, are not images). A broken link is listed, so that
    decoding it says what is wrong."""
    return (path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
            and not is_dir(path))


def _files_source(description: str, frames: list[SourceFrame], skip_damaged: bool
                  ) -> FrameSource:
    return FrameSource(description=description, length=len(frames),
                       frames=lambda: iter(frames), skip_damaged=skip_damaged)


def folder_source(folder: PathLike, *, every: int = 1, skip_damaged: bool = False
                  ) -> FrameSource:
    """Image files in ``folder`` sorted by name (natural order for zero-padded frame numbers);
    ``skip_damaged``: files that cannot be decoded are left out (see :attr:`FrameSource.skipped`)
    instead of stopping the run."""
    root = Path(folder)
    if not is_dir(root):
        raise InvalidInputError(not_a_folder(root) + (
            "; for single image files use --list FILE.csv (or vpr-edge query)"
            if look(root) is not None else ""))
    files = list_images(root)
    if not files:
        raise InvalidInputError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}; hidden "
                                "files are left out)")
    _warn_of_unpadded_numbers(root, files)
    files = files[::every]
    return _files_source(f"{root} ({len(files)} images)",
                         [_file_frame(i, p) for i, p in enumerate(files)], skip_damaged)


def not_a_folder(path: Path) -> str:
    """Why ``path``, which is not a folder, cannot be a folder of images."""
    if look(path) is None:
        return f"{path}: no such folder"
    return f"{path} is a file, not a folder of images"


def _warn_of_other_image_types(folder: Path, entries: list[Path]) -> None:
    """Warn of image files among ``entries`` (of ``folder``) that a folder source leaves out
    (:data:`OTHER_IMAGE_SUFFIXES`: a ``.jfif`` or ``.gif`` was dropped without a word, while
    ``vpr-edge query`` read it)."""
    others = sorted(p.name for p in entries
                    if not p.name.startswith(".") and p.suffix.lower() in OTHER_IMAGE_SUFFIXES
                    and is_file(p))
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        log.warning("%s: left out %d image files of other types (%s): a folder source takes %s; "
                    "rename or convert them, or name them in a --list CSV", folder, len(others),
                    shown, ", ".join(IMAGE_SUFFIXES))


def _warn_of_unpadded_numbers(folder: Path, files: list[Path]) -> None:
    """Warn when the file-name order of ``files`` (sorted) is not the order of the numbers in
    their names: frames numbered without zero-padding (``frame_10.jpg`` before
    ``frame_2.jpg``) are taken out of order, and a loop detector that excludes the last
    keyframes takes frames a moment apart for places far apart in the sequence."""
    in_number_order = sorted(files, key=lambda p: _number_order(p.name))
    first = next((i for i, (a, b) in enumerate(zip(files, in_number_order)) if a != b), None)
    if first is not None:
        log.warning("%s: the frames are taken in file-name order, in which %s comes before %s: "
                    "their numbers are not zero-padded; rename them with zero-padded numbers "
                    "(frame_0002.jpg), or give them in order in a --list CSV", folder,
                    files[first].name, in_number_order[first].name)


def _number_order(name: str) -> list:
    """``name`` as a sort key that orders the numbers in it by value, but the digits after a
    number's decimal point as text (``100.25`` before ``100.3``, as file-name order has them)."""
    parts: list = re.split(r"(\d+)", name)
    for i in range(1, len(parts), 2):
        if not (i >= 3 and parts[i - 1] == "."):
            parts[i] = int(parts[i])
    return parts


def list_images(folder: Path) -> list[Path]:
    """The image files of ``folder`` (not of its sub-folders), sorted by name; a warning names
    the image files of other types it leaves out (the folder is listed once, for both)."""
    entries = folder_entries(folder)
    _warn_of_other_image_types(folder, entries)
    return sorted(p for p in entries if is_image_file(p))


def list_source(csv_path: PathLike, *, every: int = 1, skip_damaged: bool = False
                ) -> FrameSource:
    """Frames listed in a CSV file (see the module docstring for the columns);
    ``skip_damaged`` as for :func:`folder_source`."""
    path = Path(csv_path)
    header, rows = _read_list(path)
    pose_cols = _pose_columns(path, header)
    frames = []
    for line, row in rows:
        if not row.get("image"):
            short = (f" (the row has {len(row)} of the header's {len(header)} fields)"
                     if len(row) < len(header) else "")
            raise InvalidInputError(f"{path}:{line}: no image file in the 'image' column"
                                    f"{short}; give each row an image file")
        image = Path(row["image"])
        image = image if image.is_absolute() else path.parent / image
        stamp = _number(row.get("timestamp"), path, line, "timestamp")
        pose = tuple(_number(row.get(c), path, line, c) for c in pose_cols) or None
        if pose is not None and any(v is None for v in pose):
            raise InvalidInputError(f"{path}:{line}: incomplete pose: give each of "
                                    f"{', '.join(pose_cols)}")
        frames.append((image, stamp, pose))
    frames = frames[::every]
    return _files_source(f"{path} ({len(frames)} images)",
                         [_file_frame(i, img, stamp, pose)
                          for i, (img, stamp, pose) in enumerate(frames)], skip_damaged)


def _read_list(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """A frame list's header and its rows, each with its line number: names and cells
    stripped of spaces, blank rows (Excel's rows of commas too) left out."""
    try:
        data = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # Excel's "CSV UTF-8" has one
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read the frame list ({exc})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InvalidInputError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the frame "
            "list as UTF-8 (Excel: CSV UTF-8)") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] = []
    rows = []
    try:
        for cells in reader:
            cells = [cell.strip() for cell in cells]
            if not any(cells):
                continue
            if not header:
                header = cells
                _check_separator(path, header)
            elif any(cells[len(header):]):
                raise InvalidInputError(
                    f"{path}:{reader.line_num}: {len(cells)} fields, but the header has "
                    f"{len(header)} ({', '.join(header)}); quote a path that holds a comma")
            else:
                rows.append((reader.line_num, dict(zip(header, cells))))
    except csv.Error as exc:
        raise InvalidInputError(f"{path}:{reader.line_num}: not a CSV frame list ({exc})"
                                ) from exc
    if not rows:
        raise InvalidInputError(f"{path}: the frame list is empty (a header and rows needed)")
    return header, rows


def _check_separator(path: Path, header: list[str]) -> None:
    """Refuse a list separated by something else than commas (Excel in a comma-decimal
    locale saves ';'), before its rows are read as the wrong number of fields."""
    separator = next((s for s in (";", "\t", "|") if len(header) == 1 and s in header[0]),
                     None)
    if separator is not None:
        raise InvalidInputError(
            f"{path}: the header {header[0]!r} is one column: a frame list is separated by "
            f"commas, not {separator!r} (Excel: save as 'CSV UTF-8 (Comma delimited)'; or "
            "replace the separators, with '.' as the decimal point)")


def _pose_columns(path: Path, header: list[str]) -> tuple[str, ...]:
    """The pose columns of a frame list with this header (checked: see the module
    docstring)."""
    if "image" not in header:
        raise InvalidInputError(f"{path}: needs an 'image' column; found {header} "
                                f"({LIST_COLUMNS_HINT})")
    twice = sorted({name for name in header if name and header.count(name) > 1})
    if twice:
        raise InvalidInputError(f"{path}: the column {twice[0]!r} appears more than once; "
                                "rename or remove the others")
    unknown = [name for name in header if name not in LIST_COLUMNS]
    if unknown:
        log.warning("%s: ignored the columns %s: %s", path, ", ".join(map(repr, unknown)),
                    LIST_COLUMNS_HINT)
    pose_cols = tuple(c for c in POSE_COLUMNS if c in header)
    if pose_cols and pose_cols not in POSE_SETS:
        wanted = next(s for s in POSE_SETS if set(pose_cols) <= set(s))
        missing = [c for c in wanted if c not in pose_cols]
        raise InvalidInputError(
            f"{path}: pose columns {', '.join(pose_cols)} without {', '.join(missing)}; a "
            "pose is x, y or x, y, z (metres) or x, y, z, qx, qy, qz, qw: add the missing "
            "columns or remove the others")
    return pose_cols


def bag_source(bag: PathLike, topic: str, *, every: int = 1,
               pose_topic: str | None = None, max_pose_gap: float = 0.1,
               skip_damaged: bool = False) -> FrameSource:
    """Images on ``topic`` of a ROS 1 or ROS 2 bag (needs ``vpr-edge[ros]``); with
    ``pose_topic``, each frame's pose at its stamp (``bags.read_image_frames``);
    ``skip_damaged`` as for :func:`folder_source` (a damaged bag still stops the run)."""
    from . import bags

    count = bags.count_frames(bag, topic)
    if count == 0:
        raise InvalidInputError(f"{bag}: topic {topic!r} has no messages")
    length = (count + every - 1) // every
    skipped: list[str] = []
    bag_key, bag_resolved = _keys(Path(bag))

    def frames() -> Iterator[SourceFrame]:
        # index: the position in this sequence (after --every), as for folders and lists;
        # the key keeps the frame's number on the topic
        # (decoded only when used: FrameSource.pixels)
        messages = bags.read_image_messages(bag, topic, every_n=every, pose_topic=pose_topic,
                                            max_pose_gap=max_pose_gap, hint=SKIP_HINT,
                                            skipped=skipped if skip_damaged else None)
        for message in messages:
            pose = None if message.pose is None else tuple(message.pose.as_tuple())
            suffix = f":{topic}:{message.index}"
            yield SourceFrame(message.index // every, bag_key + suffix, message.decode,
                              message.stamp, pose, bag_resolved + suffix, message.exact_stamp)

    return FrameSource(description=f"{bag} {topic} ({length} frames)", length=length,
                       frames=frames, skip_damaged=skip_damaged, skipped=skipped)


def concat_sources(sources: list[FrameSource]) -> FrameSource:
    """Several sources one after the other (e.g. two traversals of a route)."""
    if len(sources) == 1:
        return sources[0]
    skipped: list[str] = []

    def frames() -> Iterator[SourceFrame]:
        offset = 0
        for source in sources:
            for frame in source:
                yield dataclasses.replace(frame, index=offset + frame.index)
            skipped.extend(source.skipped)  # (a bag's, left out while it was read)
            offset += len(source)

    return FrameSource(description=" + ".join(s.description for s in sources),
                       length=sum(len(s) for s in sources), frames=frames,
                       skip_damaged=any(s.skip_damaged for s in sources), skipped=skipped)


def open_source(*, images: PathLike | list[PathLike] | None = None,
                frame_list: PathLike | None = None, bag: PathLike | None = None,
                topic: str | None = None, pose_topic: str | None = None,
                every: int = 1, max_pose_gap: float = 0.1,
                skip_damaged: bool = False) -> FrameSource:
    """Exactly one of ``images`` (one folder or several, in order), ``frame_list`` or
    ``bag`` (+ ``topic``, and optionally ``pose_topic`` with ``max_pose_gap`` seconds);
    ``skip_damaged``: frames that cannot be decoded are left out (listed in the source's
    ``skipped`` as it is read) instead of stopping the run."""
    given = [name for name, value in (("--images", images), ("--list", frame_list),
                                      ("--bag", bag)) if value]
    if len(given) != 1:
        raise InvalidInputError(
            f"give exactly one frame source (--images DIR, --list CSV or --bag BAG --topic T); "
            f"got {' and '.join(given) if given else 'none'}"
        )
    if not bag and (topic or pose_topic):
        named = " and ".join(n for n, v in (("--topic", topic), ("--pose-topic", pose_topic))
                             if v)
        raise InvalidInputError(
            f"{named} read a ROS bag, and the frames come from {given[0]}; give the bag "
            "(--bag BAG), or poses in a --list CSV (x, y, ... columns)"
        )
    if not positive_int(every):
        raise InvalidInputError(f"--every must be a positive integer, got {every!r}")
    every = int(every)
    if not (isinstance(max_pose_gap, (int, float)) and math.isfinite(max_pose_gap)
            and max_pose_gap > 0):
        raise InvalidInputError(f"--pose-max-gap must be positive seconds, got {max_pose_gap!r}")
    if not isinstance(skip_damaged, bool):
        raise InvalidInputError(f"skip_damaged must be True or False, got {skip_damaged!r}")
    if images:
        folders = images if isinstance(images, (list, tuple)) else [images]
        real = [os.path.realpath(f) for f in folders]
        twice = next((f for f, r in zip(folders, real) if real.count(r) > 1), None)
        if twice is not None:  # every frame would be a place twice, and a "loop" with itself
            raise InvalidInputError(f"--images names the folder {twice} more than once; give "
                                    "each folder once")
        return concat_sources([folder_source(f, every=every, skip_damaged=skip_damaged)
                               for f in folders])
    if frame_list:
        return list_source(frame_list, every=every, skip_damaged=skip_damaged)
    if topic is None:
        raise InvalidInputError("--bag needs --topic (the sensor_msgs/Image topic)")
    return bag_source(bag, topic, every=every, pose_topic=pose_topic,
                      max_pose_gap=max_pose_gap, skip_damaged=skip_damaged)


def _number(text: str | None, path: Path, line: int, column: str) -> float | None:
    if text is None or text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise InvalidInputError(f"{path}:{line}: {column} {text!r} is not a number") from exc
    if not math.isfinite(value):
        raise InvalidInputError(f"{path}:{line}: {column} is {value}")
    return value
