"""Run a vpr-edge TensorRT engine file with TensorRT's Python runtime and cuda-python.

The engine file (written by ``vpr-export ... --engine``) is a small JSON header followed by
the serialized engine; see :mod:`vpr_edge.engine_file`. Opening one goes:

1. read the **header only** and import a TensorRT runtime module: the one the header names
   when installed, else the first of ``tensorrt``, ``tensorrt_lean``, ``tensorrt_rtx``;
2. query the GPU's compute capability (cuda-python) and compare the header with this
   machine: TensorRT module and version, compute capability. A difference raises
   :class:`~vpr_edge.errors.EngineMismatchError` naming the field, **before** TensorRT sees
   the bytes (deserialising a foreign engine can crash or run silently wrong);
3. deserialize, check the IO tensors against the metadata (``image`` uint8
   ``[N, H, W, 3]``, ``descriptor`` float ``[N, dim]``), read the optimisation profile of
   ``image`` (its min/max batch);
4. allocate once, for the profile's max batch: pinned host buffers and device buffers for
   ``image`` and ``descriptor``, one CUDA stream, one execution context; bind the device
   buffers to the tensors by name.

Each chunk then runs as: copy into the pinned input, ``set_input_shape``, async H2D copy,
``execute_async_v3``, async D2H copy, synchronise. A batch larger than the profile's max is
split into chunks by :meth:`~vpr_edge.backends.base.Backend.run`, and a batch smaller than the
profile's min (a static-batch engine) is padded there with black frames whose outputs are
dropped.
Calls are serialised by a lock (the buffers and context are shared).
"""

from __future__ import annotations

import importlib
import logging
import numbers
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .._optional import install_command
from ..errors import (
    BackendUnavailableError,
    CudaError,
    EngineMismatchError,
    InferenceError,
    InvalidInputError,
    MissingDependencyError,
    ModelFormatError,
    OutOfMemoryError,
    out_of_memory,
)
from ..metadata import ModelMetadata
from . import cuda_memory
from .base import LockedBackend
from .tensorrt_logger import process_logger

logger = logging.getLogger(__name__)

#: TensorRT runtime modules, in the order they are tried (after the one the header names).
TENSORRT_MODULES = ("tensorrt", "tensorrt_lean", "tensorrt_rtx")

INPUT_NAME = "image"
OUTPUT_NAME = "descriptor"

_REBUILD_HINT = (
    "rebuild the engine on this machine from the exported ONNX: `vpr-edge engine build "
    "MODEL.fp16.onnx` (no torch needed; an engine from trtexec lacks the header vpr-edge "
    "checks), or run the .onnx file with an onnxruntime backend"
)


def engine_file_api() -> ModuleType:
    """The engine file module (header read/check); a seam for tests."""
    return importlib.import_module("vpr_edge.engine_file")


def import_tensorrt(preferred: str | None = None) -> tuple[ModuleType, str]:
    """Import a TensorRT runtime: ``preferred`` first when given, then :data:`TENSORRT_MODULES`.

    Returns ``(module, module_name)``; raises :class:`MissingDependencyError` naming the
    ``tensorrt`` extra when none imports.
    """
    order = [preferred] if preferred in TENSORRT_MODULES else []
    order += [name for name in TENSORRT_MODULES if name not in order]
    failures = []
    for name in order:
        try:
            return importlib.import_module(name), name
        except ImportError as exc:  # includes a module whose shared libraries fail to load
            failures.append(f"{name}: {exc}")
    raise MissingDependencyError(
        "running a TensorRT engine needs one of the Python modules "
        f"{', '.join(TENSORRT_MODULES)} ({'; '.join(failures)}). Install the vpr-edge[tensorrt] "
        f"extra: {install_command('tensorrt')} (on Jetson, use the TensorRT that JetPack "
        "ships)"
    )


def _capability_like(stated: Any, major: int, minor: int) -> Any:
    """This device's compute capability in the representation the header uses."""
    if isinstance(stated, str):
        return f"{major}.{minor}"
    if isinstance(stated, int) and not isinstance(stated, bool):
        return major * 10 + minor
    if isinstance(stated, list):
        return [major, minor]
    return (major, minor)


def _whole(value: Any) -> bool:
    """An int, Python's or numpy's, but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _np_dtype(trt: ModuleType, dtype: Any) -> np.dtype:
    """numpy dtype of a TensorRT ``DataType`` (``trt.nptype`` when the module has it)."""
    nptype = getattr(trt, "nptype", None)
    if nptype is not None:
        try:
            return np.dtype(nptype(dtype))
        except TypeError:
            pass
    name = str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1].upper()
    table = {"FLOAT": np.float32, "HALF": np.float16, "UINT8": np.uint8, "INT8": np.int8,
             "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}
    if name not in table:
        raise ModelFormatError(f"unsupported TensorRT tensor type {dtype}")
    return np.dtype(table[name])


class TensorRTBackend(LockedBackend):
    """A vpr-edge engine file on one CUDA device.

    ``max_batch`` caps the buffers below the profile's max (saves device memory); ``None``
    uses the profile's max. Raises :class:`~vpr_edge.errors.EngineMismatchError` for an engine
    built for another TensorRT or GPU, :class:`~vpr_edge.errors.ModelFormatError` for a damaged
    or foreign file, :class:`~vpr_edge.errors.MissingDependencyError` without TensorRT or
    cuda-python and :class:`~vpr_edge.errors.BackendUnavailableError` without a usable GPU.
    """

    name = "tensorrt"

    def __init__(
        self, engine_path: str | os.PathLike[str], *, device_id: int = 0,
        max_batch: int | None = None,
    ) -> None:
        super().__init__()
        self.path = Path(engine_path)
        self._resources: list[Any] = []
        self._context = self._engine = self._runtime = None
        if not self.path.is_file():
            raise ModelFormatError(f"{self.path}: TensorRT engine file not found")
        # (numpy's ints too, as the ONNX Runtime backends take them: np.argmax(free_memory))
        if not _whole(device_id) or device_id < 0:
            raise InvalidInputError(f"device_id must be an integer >= 0, got {device_id!r}")
        if max_batch is not None and (not _whole(max_batch) or max_batch < 1):
            raise InvalidInputError(f"max_batch must be a positive integer, got {max_batch!r}")
        device_id = int(device_id)
        max_batch = None if max_batch is None else int(max_batch)
        api = self._api = engine_file_api()

        # 1. the header, before anything touches the engine bytes
        header = api.read_engine_header(self.path)
        self.header = header
        self.metadata: ModelMetadata = header.model
        trt, module_name = import_tensorrt(getattr(header, "tensorrt_module", None))
        self._trt = trt
        self.tensorrt_module = module_name
        self.tensorrt_version = str(trt.__version__)

        # 2. this machine against the header
        cuda_memory.cudart()  # MissingDependencyError (extra 'tensorrt') without cuda-python
        try:
            cuda_memory.set_device(device_id)
            major, minor = cuda_memory.compute_capability(device_id)
        except CudaError as exc:
            raise BackendUnavailableError(
                f"tensorrt: no usable CUDA device {device_id}: {exc}"
            ) from exc
        self.compute_capability = (major, minor)
        self.device = f"cuda:{device_id}"
        self._device_id = device_id
        try:
            api.check_engine_compatible(
                header,
                tensorrt_module=module_name,
                tensorrt_version=self.tensorrt_version,
                compute_capability=_capability_like(
                    getattr(header, "compute_capability", None), major, minor
                ),
            )
        except EngineMismatchError as exc:
            text = str(exc)
            if str(self.path) not in text:
                text = f"{self.path}: {text}"
            if "rebuild" not in text.lower():
                text = f"{text}. To fix: {_REBUILD_HINT}"
            raise EngineMismatchError(text) from exc
        self.providers = (f"{module_name} {self.tensorrt_version}",)

        # 3. deserialize and check the IO tensors
        _, blob = api.read_engine_file(self.path)  # (checked against the header's sha256)
        self.checksum_verified = True
        try:
            self._deserialize(blob)
            self._inspect_tensors(max_batch)
            # 4. buffers, stream, context
            self._allocate()
        except BaseException:
            self._release()
            raise

    # -- construction ----------------------------------------------------------------------

    def _deserialize(self, blob: bytes) -> None:
        trt = self._trt
        self._trt_logger = process_logger(trt)
        mark = self._trt_logger.mark()
        init_plugins = getattr(trt, "init_libnvinfer_plugins", None)
        if init_plugins is not None:
            init_plugins(self._trt_logger, "")
        try:
            self._runtime = trt.Runtime(self._trt_logger)
        except TypeError as exc:  # "factory function returned nullptr": CUDA failed to start
            raise BackendUnavailableError(
                f"{self.path}: {self.tensorrt_module} cannot create its runtime here ({exc}: "
                + ("; ".join(self._trt_logger.errors_since(mark)) or "no detail from TensorRT")
                + "); check the GPU driver (nvidia-smi) and that this process may use the GPU "
                "(a container needs --gpus)") from exc
        if self._api.is_version_compatible(self.header):
            # A version-compatible engine from full TensorRT carries the lean runtime it was
            # built with, which is host code; the file's sha256 was checked on reading, and
            # such engines are what `vpr-export --version-compatible` writes.
            self._runtime.engine_host_code_allowed = True
        self._engine = self._runtime.deserialize_cuda_engine(blob)
        if self._engine is None:
            detail = "; ".join(self._trt_logger.errors_since(mark)) or "no detail from TensorRT"
            plugin = self.metadata.plugin
            hint = (
                f" The engine uses the {plugin.namespace}::{plugin.name} v{plugin.version} "
                "plugin: it needs TensorRT >= 10.9 and the plugin registered." if plugin else ""
            )
            if out_of_memory(RuntimeError(detail)):  # (not a damaged file)
                raise OutOfMemoryError(
                    f"{self.path}: not enough GPU memory to load the engine ({detail}); free "
                    "GPU memory (other processes on it: nvidia-smi, or tegrastats on a "
                    "Jetson) and try again")
            # the runtime refuses this GPU (TensorRT-RTX's words, then full TensorRT's)
            if "cannot run on this GPU" in detail or "incompatible device" in detail:
                raise EngineMismatchError(
                    f"{self.path}: {self.tensorrt_module} {self.tensorrt_version} cannot run "
                    f"this engine on this GPU ({detail}); {_REBUILD_HINT}"
                )
            raise ModelFormatError(
                f"{self.path}: TensorRT could not deserialize the engine ({detail}).{hint} "
                f"The file may be damaged; {_REBUILD_HINT}"
            )

    def _inspect_tensors(self, max_batch: int | None) -> None:
        trt, engine, meta = self._trt, self._engine, self.metadata
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        h, w = meta.input_height, meta.input_width
        problems = []
        if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
            problems.append(
                f"IO tensors in={inputs} out={outputs} (expected in=['{INPUT_NAME}'] "
                f"out=['{OUTPUT_NAME}'])"
            )
        else:
            in_dtype = _np_dtype(trt, engine.get_tensor_dtype(INPUT_NAME))
            in_shape = tuple(engine.get_tensor_shape(INPUT_NAME))
            out_dtype = _np_dtype(trt, engine.get_tensor_dtype(OUTPUT_NAME))
            out_shape = tuple(engine.get_tensor_shape(OUTPUT_NAME))
            if in_dtype != np.uint8:
                problems.append(f"input dtype {in_dtype} (expected uint8)")
            if len(in_shape) != 4 or in_shape[1:] != (h, w, 3):
                problems.append(f"input shape {in_shape} (metadata says [N, {h}, {w}, 3])")
            if out_dtype not in (np.float32, np.float16):
                problems.append(f"output dtype {out_dtype} (expected float32 or float16)")
            if len(out_shape) != 2 or out_shape[1] != meta.dim:
                problems.append(f"output shape {out_shape} (metadata says [N, {meta.dim}])")
        if problems:
            raise ModelFormatError(
                f"{self.path}: the engine does not match the vpr-edge contract: "
                + "; ".join(problems) + f". {_REBUILD_HINT}"
            )
        self._out_dtype = out_dtype
        if in_shape[0] >= 0:  # static batch
            lo = hi = int(in_shape[0])
        else:
            lo_shape, _, hi_shape = engine.get_tensor_profile_shape(INPUT_NAME, 0)
            lo, hi = int(lo_shape[0]), int(hi_shape[0])
        self.profile_batch = (lo, hi)
        if max_batch is not None:
            if max_batch > hi:
                logger.warning(
                    "%s: max_batch=%d exceeds the engine profile's max batch %d; using %d "
                    "(bigger batches are chunked)", self.path, max_batch, hi, hi,
                )
            elif max_batch < lo:
                logger.warning(
                    "%s: max_batch=%d is below the engine profile's min batch %d; the buffers "
                    "hold %d frames (smaller batches are padded). To use less device memory, "
                    "rebuild the engine with a smaller profile (vpr-export --batch MIN OPT MAX)",
                    self.path, max_batch, lo, lo,
                )
            hi = max(lo, min(hi, max_batch))
        self.min_batch, self.max_batch = lo, hi

    def _allocate(self) -> None:
        h, w, _ = self.input_shape
        n = self.max_batch
        self._stream = self._own(cuda_memory.Stream())
        self._host_in = self._own(cuda_memory.PinnedHostBuffer((n, h, w, 3), np.uint8))
        self._dev_in = self._own(cuda_memory.DeviceBuffer(self._host_in.nbytes))
        self._host_out = self._own(
            cuda_memory.PinnedHostBuffer((n, self.metadata.dim), self._out_dtype)
        )
        self._dev_out = self._own(cuda_memory.DeviceBuffer(self._host_out.nbytes))
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendUnavailableError(
                f"tensorrt: could not create an execution context for {self.path} (out of "
                "device memory?); free GPU memory, or rebuild the engine with a smaller batch "
                "profile (vpr-export --batch MIN OPT MAX): the context reserves memory for the "
                "largest one, whatever max_batch is"
            )
        ok = self._context.set_tensor_address(INPUT_NAME, self._dev_in.ptr)
        ok = self._context.set_tensor_address(OUTPUT_NAME, self._dev_out.ptr) and ok
        if ok is False:
            raise InferenceError(f"tensorrt: binding the buffers of {self.path} failed")

    def _own(self, resource: Any) -> Any:
        self._resources.append(resource)
        return resource

    # -- Backend ---------------------------------------------------------------------------

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        # the current CUDA device is per host thread: a ROS callback or a worker thread
        # starts on device 0, and the engine's stream lives on device_id
        cuda_memory.set_device(self._device_id)
        rows = batch.shape[0]  # min_batch..max_batch: run() chunks and pads
        self._host_in.array[:rows] = batch
        h, w, c = self.input_shape
        if not self._context.set_input_shape(INPUT_NAME, (rows, h, w, c)):
            raise InferenceError(
                f"tensorrt: batch {rows} rejected by the engine profile {self.profile_batch}"
            )
        frame_bytes = h * w * c
        out_row_bytes = self.metadata.dim * self._out_dtype.itemsize
        stream = self._stream
        mark = self._trt_logger.mark()
        cuda_memory.memcpy_htod_async(self._dev_in.ptr, self._host_in.ptr, rows * frame_bytes,
                                      stream)
        if not self._context.execute_async_v3(stream.handle):
            stream.synchronize()
            detail = "; ".join(self._trt_logger.errors_since(mark)) or "see the TensorRT log"
            raise InferenceError(f"tensorrt: execute_async_v3 failed ({detail})")
        cuda_memory.memcpy_dtoh_async(self._host_out.ptr, self._dev_out.ptr,
                                      rows * out_row_bytes, stream)
        stream.synchronize()
        return self._host_out.array[:rows].astype(np.float32)  # a copy: the buffer is reused

    def _release(self) -> None:
        # Copies or a launch still queued after a failed run may write to the buffers: let
        # the stream finish first. The context goes before the engine, the engine before
        # the runtime, all before the memory they point at.
        stream, self._stream = getattr(self, "_stream", None), None
        if stream is not None:
            try:
                stream.synchronize()
            except CudaError as exc:
                logger.warning("tensorrt: synchronising the stream before freeing: %s", exc)
        self._context = None
        self._engine = None
        self._runtime = None
        errors = []
        for resource in reversed(self._resources):
            try:
                resource.close()
            except CudaError as exc:
                errors.append(str(exc))
        self._resources = []
        if errors:
            logger.warning("tensorrt: freeing device memory reported: %s", "; ".join(errors))

    def info(self) -> dict[str, Any]:
        data = super().info()
        data.update(
            runtime=f"{self.tensorrt_module} {self.tensorrt_version}",
            compute_capability=".".join(map(str, self.compute_capability)),
            profile_batch=list(self.profile_batch),
            model_path=str(self.path),
        )
        return data
