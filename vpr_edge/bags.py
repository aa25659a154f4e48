"""Read camera frames (and optionally poses) from ROS 1 ``.bag`` files and ROS 2 bags.

Uses the pure-Python ``rosbags`` package (``pip install 'vpr-edge[ros]'``), so no ROS install
is needed. ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` topics are supported;
with ``pose_topic`` each frame gets the pose (``nav_msgs/Odometry``, ``PoseStamped``, ...)
at its stamp: interpolated between the poses before and after it when both are within
``max_pose_gap`` seconds, else the nearest within ``max_pose_gap``, else None
(:class:`~vpr_edge.poses.PoseTrack`). Pose messages with NaN or inf values (odometry that
lost track) are skipped, with a warning.

>>> for frame in read_image_frames("run.bag", "/camera/image_raw", every_n=5):  # doctest: +SKIP
...     print(frame.index, frame.stamp, frame.image.shape)
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from .bag_reader import BagReader
from .errors import ImageDecodeError, InvalidInputError, MissingDependencyError
from .paths import folder_entries, is_dir, look
from .poses import (
    Pose,
    PoseTrack,
    jumped_back,
    pose_from_message,
    stamp_parts,
    stamp_seconds,
)
from .ros_image import message_to_rgb

log = logging.getLogger("vpr_edge")

PathLike = Union[str, "os.PathLike[str]"]
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POSE_TYPES = ("nav_msgs/msg/Odometry", "geometry_msgs/msg/PoseStamped",
              "geometry_msgs/msg/PoseWithCovarianceStamped",
              "geometry_msgs/msg/TransformStamped")


@dataclass(frozen=True)
class BagFrame:
    """One image from a bag: its position among the topic's messages, header time, pixels."""

    index: int
    stamp: float
    image: np.ndarray
    pose: Pose | None = None


def count_frames(bag: PathLike, topic: str) -> int:
    """How many messages ``topic`` has in ``bag`` (from the bag's index; no decoding)."""
    with _open(bag) as reader:
        return sum(c.msgcount for c in _connections(reader, bag, topic, IMAGE_TYPES))


def read_image_frames(bag: PathLike, topic: str, *, every_n: int = 1,
                      pose_topic: str | None = None, max_pose_gap: float = 0.1,
                      skipped: list[str] | None = None) -> Iterator[BagFrame]:
    """Every ``every_n``-th image on ``topic`` as RGB, in bag order (see module docstring).

    A frame or pose message that cannot be decoded raises :class:`InvalidInputError` naming
    the bag, topic and message number, so a bad recording is found rather than silently
    skipped; with ``skipped`` (a list), image messages that cannot be decoded are left out
    instead, each described in the list and logged. A damaged bag (its index or chunks) is
    an error either way, and so is a ``pose_topic`` without messages. Frames that get no
    pose from ``pose_topic`` are counted in a warning, which says so when the frames' stamps
    and the poses' do not overlap at all (two clocks).
    """
    hint = "(vpr-edge --skip-damaged, or read_image_frames(..., skipped=[]), leaves such " \
           "frames out)"
    for message in read_image_messages(bag, topic, every_n=every_n, pose_topic=pose_topic,
                                       max_pose_gap=max_pose_gap, skipped=skipped, hint=hint):
        try:
            image = message.decode()
        except ImageDecodeError as exc:
            if skipped is None:
                raise ImageDecodeError(f"{exc} {hint}") from exc.__cause__
            skipped.append(str(exc))
            log.warning("skipped: %s", exc)
            continue
        yield BagFrame(message.index, message.stamp, image, message.pose)


@dataclass(frozen=True)
class BagImage:
    """One image message, read but not yet decoded: :meth:`decode` gives its pixels."""

    index: int
    stamp: float
    pose: Pose | None
    message: Any
    where: str  # "<bag> <topic> message <index>"
    #: ``stamp`` exactly, ``(sec, nanosec)``: float seconds are up to ~120 ns off
    exact_stamp: tuple[int, int] | None = None

    def decode(self) -> np.ndarray:
        """The image as ``uint8 HxWx3`` RGB; :class:`ImageDecodeError` naming the message
        when it cannot be decoded (a missing OpenCV for Bayer images is not that)."""
        try:
            return message_to_rgb(self.message)
        except MissingDependencyError:
            raise
        except InvalidInputError as exc:
            raise ImageDecodeError(f"{self.where}: {exc}") from exc
        except Exception as exc:
            raise ImageDecodeError(f"{self.where} is damaged ({type(exc).__name__}: {exc})"
                                   ) from exc


def read_image_messages(bag: PathLike, topic: str, *, every_n: int = 1,
                        pose_topic: str | None = None, max_pose_gap: float = 0.1,
                        skipped: list[str] | None = None, hint: str = ""
                        ) -> Iterator[BagImage]:
    """:func:`read_image_frames` without decoding the images: each comes as a
    :class:`BagImage` whose ``decode()`` decodes it when (and if) it is needed, so a resumed
    ``vpr-edge map build`` skips the frames its map holds without decoding them. A message
    that does not deserialise is an error (followed by ``hint``), or is described in
    ``skipped`` and left out."""
    if not positive_int(every_n):
        raise InvalidInputError(f"every_n must be a positive integer, got {every_n!r}")
    every_n = int(every_n)
    track = _pose_track(bag, pose_topic, max_pose_gap) if pose_topic else None
    stamps: list[float] = []  # of the frames without a pose
    count = 0
    with _open(bag) as reader:
        for index, conn, bag_time, raw in _messages(reader, bag, topic, IMAGE_TYPES):
            if index % every_n:
                continue
            where = f"{bag} {topic} message {index}"
            try:
                msg = reader.deserialize(raw, conn)
            except Exception as exc:
                problem = f"{where} is damaged ({type(exc).__name__}: {exc})"
                if skipped is None:
                    raise InvalidInputError(f"{problem} {hint}".rstrip()) from exc
                skipped.append(problem)
                log.warning("skipped: %s", problem)
                continue
            stamp, exact = _message_stamp(msg, bag_time)
            pose = track.at(stamp) if track else None
            count += 1
            if track is not None and pose is None:
                stamps.append(stamp)
            yield BagImage(index, stamp, pose, msg, where, exact)
    if stamps:
        _warn_frames_without_pose(stamps, count, pose_topic, max_pose_gap, track)


def _warn_frames_without_pose(stamps: list[float], count: int, pose_topic: str | None,
                              max_gap: float, track: PoseTrack) -> None:
    """``stamps``: of the frames (of ``count``) that got no pose."""
    missing, span = len(stamps), track.span()
    if span is not None and missing == count and (max(stamps) < span[0] or min(stamps) > span[1]):
        log.warning("no frame got a pose from %s: the frames are stamped %.3f-%.3f s and the "
                    "poses %.3f-%.3f s; are the camera and the odometry stamped by different "
                    "clocks? (header stamps are used; the bag's record time only where a "
                    "stamp is 0)", pose_topic, min(stamps), max(stamps), *span)
        return
    log.warning("%d of %d frames got no pose from %s: none within %g s of their stamps (a "
                "slower pose topic needs a larger --pose-max-gap)", missing, count, pose_topic,
                max_gap)


def list_topics(bag: PathLike) -> dict[str, tuple[str, int]]:
    """``{topic: (message type, count)}`` for every topic in the bag."""
    with _open(bag) as reader:
        topics: dict[str, tuple[str, int]] = {}
        for c in reader.connections:
            _, count = topics.get(c.topic, (c.msgtype, 0))
            topics[c.topic] = (c.msgtype, count + c.msgcount)
        return topics


def positive_int(value: Any) -> bool:
    """An int >= 1 (numpy integers too; not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _pose_track(bag: PathLike, topic: str, max_gap: float) -> PoseTrack:
    track = PoseTrack(max_gap=max_gap)
    skipped: list[int] = []
    count = 0
    newest = -math.inf
    with _open(bag) as reader:
        for index, conn, bag_time, raw in _messages(reader, bag, topic, POSE_TYPES):
            count += 1
            try:
                msg = reader.deserialize(raw, conn)
            except Exception as exc:  # a message that does not deserialise
                raise InvalidInputError(f"{bag} {topic} message {index} is damaged "
                                        f"({type(exc).__name__}: {exc})") from exc
            try:
                pose = pose_from_message(msg)
            except InvalidInputError:  # NaN/inf: odometry that lost track
                skipped.append(index)
                continue
            stamp, _ = _message_stamp(msg, bag_time)
            if jumped_back(stamp, newest):  # one track cannot hold two stretches
                raise InvalidInputError(
                    f"{bag} {topic} message {index}: pose stamps jump back by "
                    f"{newest - stamp:.3f} s (the clock restarted while recording: a "
                    "simulator reset?), so frames would take the poses of another stretch of "
                    "the recording; split the bag at the restart, or leave out --pose-topic")
            newest = max(newest, stamp)
            track.add(stamp, pose)
    if count == 0 or len(skipped) == count:
        what = "has no messages" if count == 0 else f"holds only NaN or inf poses ({count})"
        raise InvalidInputError(
            f"{bag}: the pose topic {topic!r} {what}, so no frame can get a pose; give a pose "
            "topic that has usable messages (--pose-topic), or none")
    if skipped:
        log.warning("%s %s: skipped %d of %d pose messages with NaN or inf values (the "
                    "first: message %d); frames near them take the poses around them",
                    bag, topic, len(skipped), count, skipped[0])
    return track


def _messages(reader: Any, bag: PathLike, topic: str, types: tuple[str, ...]
              ) -> Iterator[tuple[int, Any, int, bytes]]:
    """``(number on the topic, connection, bag time, raw bytes)`` of each message on
    ``topic``; a damaged chunk of the bag is an :class:`InvalidInputError`."""
    messages = iter(reader.messages(connections=_connections(reader, bag, topic, types)))
    index = -1
    while True:
        try:
            conn, bag_time, raw = next(messages)
        except StopIteration:
            return
        except Exception as exc:  # rosbags' own errors for damaged chunks
            raise InvalidInputError(f"{bag} {topic}: the bag is damaged after message "
                                    f"{index} ({type(exc).__name__}: {exc})") from exc
        index += 1
        yield index, conn, bag_time, raw


def _message_stamp(msg: Any, bag_time_ns: int) -> tuple[float, tuple[int, int] | None]:
    """Header stamp if set, else the time the bag recorded the message: in seconds, and
    exactly, as ``(sec, nanosec)``."""
    header = getattr(msg, "header", None)
    if header is not None:
        seconds = stamp_seconds(header)
        if seconds > 0:
            return seconds, stamp_parts(header)
    return bag_time_ns * 1e-9, divmod(int(bag_time_ns), 1_000_000_000)


@contextmanager
def _open(bag: PathLike) -> Iterator[BagReader]:
    path = Path(bag)
    if look(path) is None:
        raise InvalidInputError(f"{path}: no such bag file or directory")
    part = _part_of_a_folder(path)
    if part:
        raise InvalidInputError(f"{path}: {part}, so this file alone is not the bag: give the "
                                f"bag's folder, {path.parent}")
    unfinished = _without_metadata(path)
    if unfinished:
        raise InvalidInputError(unfinished)
    try:
        reader = BagReader(path)
        reader.open()
    except MissingDependencyError:
        raise
    except Exception as exc:  # rosbags raises its own reader errors for damaged files
        denied = _permission_error(exc)
        if denied is not None:
            file = "" if denied.filename in (None, str(path)) else f" ({denied.filename})"
            raise InvalidInputError(
                f"{path}: no permission to read this bag{file}; run as a user who may read "
                f"it, or give others read access (chmod -R a+rX {path})") from exc
        repair = ("`mcap recover` repairs an .mcap whose recording was not closed"
                  if path.suffix == ".mcap" else
                  "`rosbag reindex` repairs unclosed ROS 1 bags")
        raise InvalidInputError(
            f"{path}: cannot read this bag ({type(exc).__name__}: {exc}); give a complete "
            f"ROS 1 .bag, a ROS 2 bag directory (with its metadata.yaml) or a ROS 2 .db3/.mcap "
            f"file ({repair})"
        ) from exc
    try:
        yield reader
    finally:
        reader.close()


def _permission_error(exc: BaseException | None) -> PermissionError | None:
    """The PermissionError behind ``exc`` (rosbags wraps some in its own errors), if any."""
    while exc is not None and not isinstance(exc, PermissionError):
        exc = exc.__cause__ or exc.__context__
    return exc


def _without_metadata(path: Path) -> str | None:
    """Why a folder without ``metadata.yaml`` (what a ROS 2 recording stopped hard leaves)
    cannot be read as a bag, and what to give instead; None for any other path."""
    if not is_dir(path) or look(path / "metadata.yaml") is not None:
        return None
    files = sorted(p for p in folder_entries(path)  # (compressed too: .db3.zstd)
                   if {".db3", ".mcap"} & set(p.suffixes))
    if not files:
        return (f"{path}: a folder with no metadata.yaml and no .db3 or .mcap file, so not a "
                "ROS 2 bag; give a ROS 1 .bag file, a ROS 2 bag folder or its .db3/.mcap file "
                "(a folder of images is --images)")
    reindex = f"write it with `ros2 bag reindex {path}` and give the folder"
    if len(files) == 1 and files[0].suffix in (".db3", ".mcap"):
        reindex = f"give its file, {files[0]}, or {reindex}"
    return (f"{path}: no metadata.yaml, so not a whole ROS 2 bag (a recording stopped hard "
            f"leaves none); {reindex}")


def _part_of_a_folder(path: Path) -> str | None:
    """Why a ROS 2 ``.db3``/``.mcap`` file cannot be read alone, from the ``metadata.yaml``
    beside it: it is one of several files (read alone, it silently held part of the
    recording), or the bag compresses each message (read alone, every message looked
    damaged). None otherwise."""
    meta = path.parent / "metadata.yaml"
    if path.suffix not in (".db3", ".mcap") or not meta.is_file():
        return None
    try:
        text = meta.read_text(errors="replace")
    except OSError:
        return None
    listed = re.search(r"relative_file_paths:\s*\n((?:[ \t]*- .*\n?)+)", text)
    files = re.findall(r"- (.+)", listed.group(1)) if listed else []
    if len(files) > 1:
        return f"it is one of the {len(files)} files of the bag in {path.parent}"
    compression = re.search(r"compression_format:[ \t]*['\"]?(\w+)", text)
    if compression:
        return (f"the bag in {path.parent} is compressed ({compression.group(1)}, as its "
                "metadata.yaml says)")
    return None


def _connections(reader: Any, bag: PathLike, topic: str, types: tuple[str, ...]) -> list:
    found = [c for c in reader.connections if c.topic == topic]
    if not found:
        available = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})
        raise InvalidInputError(
            f"{bag}: no topic {topic!r}; the bag has: {', '.join(available) or 'no topics'}"
        )
    wrong = [c.msgtype for c in found if c.msgtype not in types]
    if wrong:
        raise InvalidInputError(
            f"{bag}: topic {topic!r} carries {wrong[0]}, expected one of {', '.join(types)}"
        )
    try:
        reader.check(found)
    except MissingDependencyError:
        raise
    except Exception as exc:  # rosbags' errors for a definition it cannot parse
        raise InvalidInputError(
            f"{bag}: the message definition the bag stores for topic {topic!r} "
            f"({found[0].msgtype}) cannot be read ({type(exc).__name__}: {exc}); play the "
            "bag and record the topic again (rosbag play / ros2 bag play), so that the "
            "recorder stores the type's definition") from exc
    return found
