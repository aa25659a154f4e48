"""``Localizer``: describe camera frames, add them to a map, ask where a frame was seen before.

The one class robot code needs::

    from vpr_edge import Localizer

    with Localizer("model.onnx", "maps/lab") as loc:      # opens the map, or starts one
        place_id = loc.add(frame, stamp=t, pose=(x, y, z, qx, qy, qz, qw))
        for match in loc.query(other_frame, k=3, min_score=0.3, exclude_recent=50):
            print(match.place_id, match.score, match.pose)
        loc.save()                                         # atomic: survives a power cut

It owns a backend (``vpr_edge.backends``: ONNX Runtime or a TensorRT engine), the
preprocessing the model's metadata asks for, and a :class:`~vpr_edge.index.PlaceIndex` whose
map records the model's fingerprint, so a map made with another model is refused. It is
thread-safe: queries may run while another thread adds places.
"""

from __future__ import annotations

import array
import logging
import numbers
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import InvalidInputError, MapError
from .images import load_image, prepare_frame, resizer_name
from .index import IndexSettings, PlaceIndex, PlaceMatch, PlaceRecord, atomic_dir, validate
from .metadata import ModelMetadata
from .paths import user_path
from .poses import PoseValues

log = logging.getLogger("vpr_edge")

PathLike = Union[str, "os.PathLike[str]"]
#: What ``describe``/``add``/``query`` accept as frames.
Frame = Union[np.ndarray, PathLike]


class Localizer:
    """Visual place recognition over a map of places.

    Args:
        model: an exported model, ``.onnx`` (ONNX Runtime) or ``.engine`` (TensorRT).
        map_dir: a map directory to open, or where a new map will be saved (a relative path
            is taken from the working directory now). ``None`` keeps the map in memory until
            :meth:`save` is given a path.
        backend: ``"auto"`` (the first that works, in ``vpr_edge.backends.BACKEND_ORDER``)
            or a name such as ``"onnxruntime-cpu"``; a named backend that cannot run here is
            an error listing what can.
        colour_order: the channel order of the colour frames you pass (``"RGB"``, or
            ``"BGR"`` for OpenCV / ROS ``bgr8`` images). Mono frames need none.
        index_settings: :class:`~vpr_edge.index.IndexSettings` for a new map (search-time
            settings such as ``ef`` also apply to an opened one).
        batch_size: frames per inference call when describing many frames.
        backend_options: passed to the backend (e.g. ``{"intra_op_num_threads": 2}``).
        rebuild_if_corrupt: open a map whose ``index.hnsw`` is damaged or missing by
            rebuilding the graph from its stored descriptors (see
            :meth:`PlaceIndex.open <vpr_edge.index.PlaceIndex.open>`); other damage is
            still refused.
    """

    def __init__(
        self,
        model: PathLike,
        map_dir: PathLike | None = None,
        *,
        backend: str = "auto",
        colour_order: str = "RGB",
        index_settings: IndexSettings | None = None,
        batch_size: int = 8,
        backend_options: dict[str, Any] | None = None,
        rebuild_if_corrupt: bool = False,
    ) -> None:
        from .backends import open_backend

        if colour_order not in ("RGB", "BGR"):
            raise InvalidInputError(f"colour_order must be 'RGB' or 'BGR', got {colour_order!r}")
        if (not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool)
                or batch_size < 1):  # (numpy's ints too, as k and the backend options)
            raise InvalidInputError(f"batch_size must be a positive int, got {batch_size!r}")
        if backend_options is not None and not (
                isinstance(backend_options, Mapping)
                and all(isinstance(name, str) for name in backend_options)):
            raise InvalidInputError(
                "backend_options must be a dict of option names and values (e.g. "
                f"{{'intra_op_num_threads': 2}}), got {backend_options!r:.100}")
        self._colour_order = colour_order
        self._batch_size = int(batch_size)
        for name, value in (("model", model), ("map_dir", map_dir)):
            if name == "map_dir" and value is None:  # (no map: an in-memory index)
                continue
            if not isinstance(value, (str, os.PathLike)):
                raise InvalidInputError(f"{name} must be a path (str or Path), got "
                                        f"{type(value).__name__}")
        model = user_path(model)
        self._backend = open_backend(model, backend=backend, **(backend_options or {}))
        self._model_path = model
        self.metadata: ModelMetadata = self._backend.metadata
        self._infer_lock = threading.Lock()
        self._resized = False  # frames were resized here (a map added to records by what)
        # absolute now: a node that changes directory later still saves where it opened
        self._map_dir = None if map_dir is None else user_path(map_dir)
        try:
            self.index = self._open_or_create_index(index_settings, rebuild_if_corrupt)
        except BaseException:  # another model's or a damaged map: free the backend now
            self._backend.close()
            raise

    # -- set-up --------------------------------------------------------------------------
    def _open_or_create_index(self, settings: IndexSettings | None,
                              rebuild_if_corrupt: bool) -> PlaceIndex:
        fingerprint = self.metadata.fingerprint
        target = self._map_dir
        if target is not None and atomic_dir.resolve_for_read(target) is not None:
            index = PlaceIndex.open(target, fingerprint=fingerprint, settings=settings,
                                    rebuild_if_corrupt=rebuild_if_corrupt)
            if index.dim != self.metadata.dim:
                raise MapError(
                    f"{target}: the map holds {index.dim}-d descriptors but the model makes "
                    f"{self.metadata.dim}-d ones; use the model the map was built with"
                )
            # and when it was saved: after a crash, the places added since then are lost
            log.info("opened map %s (%d places, saved %s)", target, len(index),
                     index.info()["saved_at"] or "at an unknown time")
            _warn_of_another_resizer(target, index)
            return index
        if target is not None and (hint := atomic_dir.legacy_map_hint(target)):
            # an empty map here would hide that one, and every query would find nothing
            raise MapError(f"no map at {target}{hint} (or move it away to start a new map "
                           "there)")
        index = PlaceIndex(self.metadata.dim, fingerprint=fingerprint, settings=settings)
        if target is not None:  # (a file there is refused now, not at the first save)
            index.expect_new_map_at(target)
            # said, since a mistyped or relative path on the next day's start would otherwise
            # go unnoticed: the robot would map afresh, with no loops to its earlier runs
            log.info("no map at %s: a new map, saved there at the first save", target)
        return index

    @property
    def colour_order(self) -> str:
        """Channel order assumed for colour frames passed without ``colour_order=``."""
        return self._colour_order

    # -- describe ------------------------------------------------------------------------
    def describe(self, frames: Frame | Sequence[Frame], *,
                 colour_order: str | None = None) -> np.ndarray:
        """Descriptors of one frame (``[dim]``) or of a batch (``[N, dim]``), float32.

        A frame is a ``uint8`` numpy array (``HxWx3`` in ``colour_order``, default the
        Localizer's; ``HxW`` mono) or an image file path. A batch is a list of frames or an
        ``NxHxWx3`` array. Frames of any size are resized to the model's input size. A long
        list is decoded, resized and described ``batch_size`` frames at a time (a static-batch
        model's batch, if larger), so memory does not grow with its length (beyond the
        descriptors).
        """
        order = self._colour_order if colour_order is None else colour_order
        if _is_single(frames) or isinstance(frames, np.ndarray):
            batch, single = self._prepare(frames, order)
            out = self._infer(batch)
            return out[0] if single else out
        items = list(frames)
        # (a static-batch model runs min_batch frames a call: a smaller chunk would be padded)
        step = max(self._batch_size, self._backend.min_batch)
        chunks = [self._infer(self._prepare(items[i:i + step], order)[0])
                  for i in range(0, max(len(items), 1), step)]  # [] -> "empty batch" error
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def _prepare(self, frames: Any, colour_order: str) -> tuple[np.ndarray, bool]:
        single = _is_single(frames)
        items = [frames] if single else list(frames)
        if not items:
            raise InvalidInputError("describe() got an empty batch of frames")
        height, width = self.metadata.input_shape
        prepared = np.empty((len(items), height, width, 3), dtype=np.uint8)
        for i, item in enumerate(items):
            _refuse_image_bytes(item)
            if isinstance(item, (str, os.PathLike)):
                item, order = load_image(item), "RGB"
            else:
                order = colour_order
            if np.shape(item)[:2] != (height, width):
                self._resized = True
            prepare_frame(item, order, height, width, self.metadata.colour_order,
                          out=prepared[i])
        return prepared, single

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        outputs = []
        # a static-batch model pads every call to min_batch frames: fill them with frames
        step = max(min(self._batch_size, self._backend.max_batch), self._backend.min_batch)
        with self._infer_lock:
            for start in range(0, batch.shape[0], step):
                outputs.append(self._backend.run(batch[start:start + step]))
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=0)

    # -- map -----------------------------------------------------------------------------
    def add(self, frame: Frame, *, stamp: float | None = None,
            pose: PoseValues | None = None, meta: dict[str, Any] | None = None,
            place_id: int | None = None, colour_order: str | None = None) -> int:
        """Describe one frame and add it to the map as a place; return its id.

        ``stamp`` (float seconds), ``pose`` (e.g. ``x, y, z, qx, qy, qz, qw``, as a sequence,
        a NumPy array or a :class:`~vpr_edge.poses.Pose`) and ``meta``
        (a JSON-serialisable dict) are stored with the place and come back with matches.
        ``place_id`` gives an explicit id (otherwise ids count up from 0, continuing after
        the largest id the map has held).
        """
        _one_frame(frame, "add", "descriptors = describe(frames); "
                   "index.add(descriptors, stamps=..., poses=..., meta=...)")
        descriptor = self.describe(frame, colour_order=colour_order)
        return self.add_descriptor(descriptor, stamp=stamp, pose=pose, meta=meta,
                                   place_id=place_id)

    def add_descriptor(self, descriptor: np.ndarray, *, stamp: float | None = None,
                       pose: PoseValues | None = None,
                       meta: dict[str, Any] | None = None,
                       place_id: int | None = None) -> int:
        """Add a place from a descriptor :meth:`describe` made (saves describing twice)."""
        _one_descriptor(descriptor, "add_descriptor", "index.add(descriptors, ...)")
        with validate.single_place_names():
            (new_id,) = self.index.add(descriptor, ids=place_id, stamps=stamp, poses=pose,
                                       meta=meta)
        return new_id

    def query(self, frame: Frame, k: int = 5, *, min_score: float | None = None,
              exclude_recent: int = 0, exclude_after_stamp: float | None = None,
              only_ids: Iterable[int] | None = None, colour_order: str | None = None
              ) -> list[PlaceMatch]:
        """The ``k`` places most similar to ``frame``, best first.

        Args:
            k: at most this many matches.
            min_score: drop matches below this cosine similarity.
            exclude_recent: never return the places added by the last ``exclude_recent``
                adds (for loop closure: the frames just seen are trivially similar). They
                are the map's latest adds, those of an earlier session too when the map was
                opened from disk (a robot restarted where it stopped then does not match its
                last places); :class:`~vpr_edge.loop_closure.LoopClosureDetector` counts only
                the frames it added itself.
            exclude_after_stamp: never return places stamped later than this.
            only_ids: return only these places (ids not in the map are ignored): a search
                among a few candidates, e.g. the places near a pose prior (a few are scored
                one by one, in well under a millisecond).

        Returns:
            :class:`~vpr_edge.index.PlaceMatch` items: ``place_id``, ``score``, ``stamp``,
            ``pose``, ``meta``.
        """
        _one_frame(frame, "query", "descriptors = describe(frames); "
                   "index.query(descriptors, k) (one list of matches per frame)")
        descriptor = self.describe(frame, colour_order=colour_order)
        return self.query_descriptor(descriptor, k, min_score=min_score,
                                     exclude_recent=exclude_recent,
                                     exclude_after_stamp=exclude_after_stamp,
                                     only_ids=only_ids)

    def query_descriptor(self, descriptor: np.ndarray, k: int = 5, *,
                         min_score: float | None = None, exclude_recent: int = 0,
                         exclude_after_stamp: float | None = None,
                         only_ids: Iterable[int] | None = None) -> list[PlaceMatch]:
        """:meth:`query` for a descriptor :meth:`describe` made."""
        _one_descriptor(descriptor, "query_descriptor", "index.query(descriptors, k)")
        with validate.single_place_names():
            return self.index.query(descriptor, k, min_score=min_score,
                                    exclude_newest=exclude_recent,
                                    exclude_after_stamp=exclude_after_stamp,
                                    only_ids=only_ids)

    def get(self, place_id: int) -> PlaceRecord:
        """The stored record (stamp, pose, meta) of a place."""
        return self.index.get(place_id)

    def remove(self, place_id: int) -> None:
        """Remove a place from the map."""
        self.index.remove([place_id])

    def save(self, map_dir: PathLike | None = None) -> Path:
        """Save the map atomically to ``map_dir``; by default to the directory given at start
        (a map started in memory: the first one it was saved to). Saving to another
        directory writes a copy there and leaves the default as it was. Refuses to replace a
        map made with another model."""
        target = map_dir if map_dir is not None else self._map_dir
        if target is None:
            raise InvalidInputError(
                "save(): no map directory; pass one here or to Localizer(model, map_dir)"
            )
        start = time.perf_counter()
        if self._resized and self.index.added:  # which library resized the map's frames
            made = set(self.index.provenance.get("resizers", []))
            self.index.set_provenance("resizers", sorted(made | {resizer_name()}))
        path = self.index.save(target)
        if self._map_dir is None:
            self._map_dir = path
        log.info("saved %d places to %s in %.2f s", len(self.index), path,
                 time.perf_counter() - start)
        return path

    def __len__(self) -> int:
        return len(self.index)

    def info(self) -> dict[str, Any]:
        """Model, backend and map facts as a JSON-friendly dict."""
        return {
            "model": {
                "path": str(self._model_path),
                "name": self.metadata.model_name,
                "backbone": self.metadata.backbone,
                "dim": self.metadata.dim,
                "input": [self.metadata.input_height, self.metadata.input_width],
                "precision": self.metadata.precision,
                "colour_order": self.metadata.colour_order,
                "fingerprint": self.metadata.fingerprint,
                "checksum_verified": self._backend.checksum_verified,
            },
            "backend": {
                "name": self._backend.name,
                "device": self._backend.device,
                "providers": list(self._backend.providers),
            },
            "preprocessing": {"resizer": resizer_name(), "colour_order": self._colour_order},
            "map": {**self.index.info(),
                    "dir": None if self._map_dir is None else str(self._map_dir)},
        }

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        """Release the backend (the map is not saved: call :meth:`save`)."""
        self._backend.close()

    def __enter__(self) -> Localizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Localizer(model={str(self._model_path)!r}, backend={self._backend.name!r}, "
                f"places={len(self.index)}, map_dir={self._map_dir})")


def _warn_of_another_resizer(target: Path, index: PlaceIndex) -> None:
    """OpenCV and Pillow resize a frame to slightly different pixels, and NetVLAD
    descriptors follow: the same frame resized by each scored 0.92-0.998 cosine with the
    demo model. A map whose frames were resized by another library than this runtime's gets
    a warning (the model's fingerprint cannot tell: either library runs the same model)."""
    made = index.provenance.get("resizers", [])
    here = resizer_name()
    others = [name for name in made if name != here] if isinstance(made, list) else []
    if others:
        fix = ("install OpenCV here (pip install opencv-python-headless, or vpr-edge[verify])"
               if here == "pillow" else "build the map again here, into a new folder "
               "(`vpr-edge map build MODEL NEW_MAP ...`: one over this map skips the frames it "
               "holds)")
        log.warning("%s: its frames were resized with %s and this runtime resizes with %s: "
                    "the same frame gets a slightly different descriptor (recall may drop); "
                    "%s", target, " and ".join(others), here, fix)


def _one_frame(frame: Any, method: str, batch_way: str) -> None:
    """Refuse a batch where one frame is expected, before anything is described or added."""
    if not _is_single(frame):
        raise InvalidInputError(f"{method}() takes one frame, got a batch; for many frames: "
                                f"{batch_way}")


def _one_descriptor(descriptor: Any, method: str, batch_way: str) -> None:
    if np.ndim(descriptor) != 1:
        raise InvalidInputError(f"{method}() takes one descriptor [dim], got shape "
                                f"{np.shape(descriptor)}; for a batch: {batch_way}")


#: image data as bytes (a ROS CompressedImage's ``data``, a file read into memory): not a
#: frame, nor (array.array and memoryview are sequences) a batch of frames
_BYTE_BUFFERS = (bytes, bytearray, memoryview, array.array)


def _refuse_image_bytes(frame: Any) -> None:
    if isinstance(frame, _BYTE_BUFFERS):
        raise InvalidInputError(
            f"got {len(frame)} bytes ({type(frame).__name__}), not a frame: decode image data "
            "first: vpr_edge.images.decode_image(bytes(data)) for JPEG/PNG bytes, "
            "vpr_edge.ros_image.message_to_rgb(msg) for a ROS Image or CompressedImage")


def _is_single(frames: Any) -> bool:
    _refuse_image_bytes(frames)
    if isinstance(frames, (str, os.PathLike)):
        return True
    if isinstance(frames, np.ndarray):
        if frames.ndim == 4:
            return False
        return True
    if isinstance(frames, Sequence) and not isinstance(frames, (bytes, bytearray)):
        return False  # a list, a tuple, a deque of recent frames...
    raise InvalidInputError(
        f"frames must be a numpy array, an image path, or a list of them; got "
        f"{type(frames).__name__}"
    )
