"""What every inference backend is: uint8 frames in, L2-normalised float32 descriptors out.

A backend wraps one exported model (an ONNX file or a TensorRT engine file) on one device. The
base class owns the checks that must not differ between backends:

* the input is ``uint8 [N, H, W, 3]`` at the model's size (from its metadata), ``N >= 1``;
  anything else raises :class:`~vpr_edge.errors.InvalidInputError` naming what was wrong;
* a batch larger than :attr:`Backend.max_batch` (the engine's optimisation profile, or a
  user cap) is **split into chunks** of ``max_batch`` frames and the results concatenated, so
  callers never need to know the engine's profile; a chunk smaller than
  :attr:`Backend.min_batch` (static-batch models) is padded with black frames whose outputs
  are dropped (before the NaN check);
* every output row must be finite: NaN or inf (a broken engine, FP16 overflow, a GPU fault)
  raises :class:`~vpr_edge.errors.InferenceError` instead of putting a poisoned descriptor
  into a map.

Subclasses implement :meth:`Backend._infer` for one chunk and :meth:`Backend._release`.
"""

from __future__ import annotations

import abc
import threading
from typing import Any

import numpy as np

from ..errors import InferenceError, InvalidInputError
from ..metadata import ModelMetadata

#: where to turn when a GPU backend cannot run, for command-line and Python users alike
CPU_BACKEND = "the CPU backend (--backend onnxruntime-cpu; backend=\"onnxruntime-cpu\" in Python)"


class Backend(abc.ABC):
    """One exported model, ready to run on one device.

    Attributes (set by the subclass before use):

    ``name``
        The backend's name in :data:`vpr_edge.backends.BACKEND_ORDER` (``"onnxruntime-cpu"``).
    ``metadata``
        The model's :class:`~vpr_edge.metadata.ModelMetadata`.
    ``device``
        ``"cpu"`` or ``"cuda:<index>"``: where the model really runs.
    ``providers``
        What really runs it: the ONNX Runtime session's providers, or the TensorRT module.
    ``max_batch``
        The most frames one inference takes (the engine profile's max, or a memory cap);
        :meth:`run` splits bigger batches, so callers may pass any ``N``.
    ``min_batch``
        The fewest frames the engine accepts in one call (``1`` except for static-batch
        models): :meth:`run` pads smaller chunks with black frames and drops their outputs.
    ``checksum_verified``
        Whether the model file's bytes were checked against the checksum written into it
        (an engine's header always has one; an ONNX file exported before checksums has none).

    ``run`` may be called from several threads; backends whose state is not thread-safe lock.
    Use as a context manager, or call :meth:`close`, to free device memory deterministically.
    """

    name: str
    metadata: ModelMetadata
    device: str
    providers: tuple[str, ...]
    max_batch: int = 1
    min_batch: int = 1
    checksum_verified: bool = False

    _closed: bool = False

    # -- the subclass's part ---------------------------------------------------------------

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one checked, C-contiguous chunk of ``min_batch..max_batch`` frames; return
        ``[len(batch), dim]`` floats (float32 or float16)."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Free sessions, engines and device memory (called once by :meth:`close`)."""

    # -- public API ------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Descriptor length."""
        return self.metadata.dim

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)`` of one frame, from the model metadata."""
        return (self.metadata.input_height, self.metadata.input_width, 3)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Describe a batch of frames.

        ``batch`` is ``uint8 [N, H, W, 3]`` in the model's colour order and size (see
        :attr:`input_shape`); a non-contiguous array is copied once. Returns ``float32
        [N, dim]``, one L2-normalised descriptor per frame, in input order.
        """
        if self._closed:
            raise InvalidInputError(f"{self.name} backend is closed; open the model again")
        batch = self.check_input(batch)
        n = batch.shape[0]
        step = max(1, self.max_batch)
        outs = [self._run_chunk(batch[i : i + step], i) for i in range(0, n, step)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def check_input(self, batch: Any) -> np.ndarray:
        """Return ``batch`` as a C-contiguous ``uint8 [N, H, W, 3]`` array, or raise
        :class:`~vpr_edge.errors.InvalidInputError` saying what is wrong and how to fix it."""
        h, w, c = self.input_shape
        if not isinstance(batch, np.ndarray):
            raise InvalidInputError(
                f"expected a numpy array uint8 [N, {h}, {w}, 3], got {type(batch).__name__}"
            )
        if batch.dtype != np.uint8:
            raise InvalidInputError(
                f"expected uint8 frames (0..255), got dtype {batch.dtype}; the model "
                "normalises inside its graph, so pass the raw pixels (e.g. "
                "np.clip(x, 0, 255).astype(np.uint8))"
            )
        if batch.ndim == 3 and batch.shape == (h, w, c):
            raise InvalidInputError(
                f"got one frame {batch.shape}; run() takes a batch [N, {h}, {w}, 3]: "
                "pass frame[None]"
            )
        if batch.ndim != 4 or batch.shape[1:] != (h, w, c):
            raise InvalidInputError(
                f"expected frames of shape [N, {h}, {w}, 3] (the model's input size, "
                f"{self.metadata.colour_order}), got {batch.shape}; resize the frames to "
                f"{h} rows x {w} columns first (vpr_edge.images.resize(frame, {h}, {w}))"
            )
        if batch.shape[0] == 0:
            raise InvalidInputError("empty batch: pass at least one frame")
        return np.ascontiguousarray(batch)

    def info(self) -> dict[str, Any]:
        """What runs the model, as a JSON-able dict (backend, device, providers, model)."""
        return {
            "backend": self.name,
            "device": self.device,
            "providers": list(self.providers),
            "max_batch": self.max_batch,
            "min_batch": self.min_batch,
            "model_name": self.metadata.model_name,
            "dim": self.metadata.dim,
            "input_shape": list(self.input_shape),
            "precision": self.metadata.precision,
            "fingerprint": self.metadata.fingerprint,
        }

    def close(self) -> None:
        """Free the session/engine and device memory. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._release()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Backend:  # noqa: PYI034 - subclasses need no narrower type
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.device
        return f"<{type(self).__name__} {self.name} {self.metadata.model_name!r} on {state}>"

    # -- helpers ---------------------------------------------------------------------------

    def _run_chunk(self, chunk: np.ndarray, first: int) -> np.ndarray:
        """Run ``1..max_batch`` frames (padded with black frames up to ``min_batch``) and check
        the output: shape, floats, finite. ``first`` is the chunk's offset in the caller's
        batch (for the error message)."""
        n = chunk.shape[0]
        rows = max(n, self.min_batch)
        if rows > n:  # a static-batch model: pad, and drop the padding's outputs
            chunk = np.concatenate([chunk, np.zeros((rows - n, *chunk.shape[1:]), chunk.dtype)])
        dim = self.metadata.dim
        out = np.asarray(self._infer(chunk))
        if out.shape != (rows, dim):
            raise InferenceError(
                f"{self.name}: the model returned shape {out.shape} for {rows} frames, "
                f"expected ({rows}, {dim}) from its metadata; the model file does not match its "
                "metadata: re-export it with vpr-export"
            )
        out = out[:n]
        if not np.issubdtype(out.dtype, np.floating):
            raise InferenceError(f"{self.name}: the model returned {out.dtype}, expected float32")
        out = out.astype(np.float32, copy=False)
        finite = np.isfinite(out).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise InferenceError(
                f"{self.name}: the model produced NaN/inf descriptors for {bad.size} of {n} "
                f"frames (first: frame {first + int(bad[0])}); the model or engine is broken or "
                f"overflowed in {self.metadata.precision.upper()}. Check the frame (e.g. an "
                "all-black or saturated image), then re-export in fp32 or rebuild the engine"
            )
        return out


class LockedBackend(Backend):
    """A backend whose ``_infer`` must not run concurrently (shared buffers): ``run`` holds a
    lock for the whole batch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return super().run(batch)

    def close(self) -> None:
        with self._lock:
            super().close()
