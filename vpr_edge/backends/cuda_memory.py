"""CUDA device memory, pinned host memory and streams, through cuda-python.

The only module in vpr-edge that talks to the CUDA runtime. It uses NVIDIA's ``cuda-python``
bindings (``cuda.bindings.runtime``; the older ``cuda.cudart`` layout is accepted too), which
import on any machine; calls fail without a GPU and driver, and every failure goes through
:func:`cuda_call`, which turns the returned ``cudaError_t`` into a
:class:`~vpr_edge.errors.CudaError` carrying the CUDA error name and text.

Ownership is explicit: :class:`DeviceBuffer`, :class:`PinnedHostBuffer` and :class:`Stream`
free their resource on :meth:`close` (idempotent), on ``with`` exit, and as a last resort when
garbage-collected.

>>> import numpy as np
>>> from vpr_edge.backends.cuda_memory import (DeviceBuffer, PinnedHostBuffer, Stream,
...                                            memcpy_htod_async)
>>> with Stream() as stream, PinnedHostBuffer((4, 8), np.float32) as host, \\
...         DeviceBuffer(host.nbytes) as dev:                            # doctest: +SKIP
...     host.array[:] = 1.0
...     memcpy_htod_async(dev.ptr, host.ptr, host.nbytes, stream)
...     stream.synchronize()
"""

from __future__ import annotations

import ctypes
from types import ModuleType
from typing import Any

import numpy as np

from .._optional import require
from ..errors import CudaError, MissingDependencyError
from .base import CPU_BACKEND

#: Errors that mean "no usable GPU or driver here"; their message says what to do instead.
_NO_GPU_ERRORS = frozenset(
    {
        "cudaErrorNoDevice",
        "cudaErrorInsufficientDriver",
        "cudaErrorCallRequiresNewerDriver",
        "cudaErrorSystemDriverMismatch",
        "cudaErrorCompatNotSupportedOnDevice",
    }
)


#: Of those, the ones that mean "these CUDA bindings are newer than the driver".
_DRIVER_TOO_OLD_ERRORS = frozenset({"cudaErrorInsufficientDriver",
                                    "cudaErrorCallRequiresNewerDriver"})


def _cuda_version_text(version: Any) -> str:
    """``12060`` -> ``"12.6"`` (CUDA's encoding of versions)."""
    return f"{int(version) // 1000}.{int(version) % 1000 // 10}"


def _driver_too_old_hint(rt: ModuleType) -> str:
    """The fix when a driver is older than the CUDA the bindings were made for (a JetPack 6
    driver, CUDA 12.6, with cuda-python 13, which ``pip install cuda-python`` picks); ``""``
    where there is no driver at all (version 0) or the versions cannot be read."""
    try:
        driver_version = int(rt.cudaDriverGetVersion()[1])
        runtime = _cuda_version_text(rt.cudaRuntimeGetVersion()[1])
    except Exception:  # noqa: BLE001 - the hint must not hide the error it explains
        return ""
    if driver_version <= 0:
        return ""
    driver = _cuda_version_text(driver_version)
    return (f"; the driver here runs CUDA up to {driver}, these bindings are for {runtime}: "
            "install the cuda-python of the driver's CUDA, e.g. pip install "
            f"'cuda-python~={driver.split('.')[0]}.0' (on JetPack 6: 'cuda-python~=12.6.0'), "
            "or update the driver")


def cudart() -> ModuleType:
    """The CUDA runtime bindings module, or :class:`MissingDependencyError` naming the
    ``tensorrt`` extra."""
    try:
        return require(
            "cuda.bindings.runtime", extra="tensorrt", purpose="running TensorRT engines"
        )
    except MissingDependencyError as exc:
        try:  # cuda-python < 12.6 (older JetPack images) ships the same API as cuda.cudart
            return require("cuda.cudart", extra="tensorrt", purpose="running TensorRT engines")
        except MissingDependencyError:
            raise exc from None


def _error_text(rt: ModuleType, err: Any) -> tuple[str, str]:
    """``(name, description)`` of a CUDA error code, robust to unknown codes."""
    try:
        name = rt.cudaGetErrorName(err)[1]
        text = rt.cudaGetErrorString(err)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
        text = text.decode() if isinstance(text, bytes) else str(text)
    except Exception:  # noqa: BLE001 - an unknown code or a half-torn-down interpreter
        name, text = getattr(err, "name", str(err)), "unknown CUDA error"
    return name, text


def cuda_call(result: Any, what: str = "CUDA call") -> Any:
    """Check a cuda-python call's result tuple ``(cudaError_t, *values)``.

    Returns ``None``, the single value, or a tuple of values. A non-success code raises
    :class:`~vpr_edge.errors.CudaError` naming ``what``, the CUDA error name and its text
    (and, when there is no usable GPU or driver, what to do instead).

    >>> cuda_call(cudart().cudaRuntimeGetVersion(), "cudaRuntimeGetVersion") > 0  # doctest: +SKIP
    True
    """
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    rt = cudart()
    if err != rt.cudaError_t.cudaSuccess:
        name, text = _error_text(rt, err)
        message = f"{what} failed: {name} ({text})"
        hint = _driver_too_old_hint(rt) if name in _DRIVER_TOO_OLD_ERRORS else ""
        if hint:
            message += hint
        elif name in _NO_GPU_ERRORS:
            message += (
                "; no usable NVIDIA GPU and driver here: run on a machine with one, or run "
                f"the exported .onnx model with {CPU_BACKEND}"
            )
        raise CudaError(message, code=int(err), error_name=name)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# -- devices ---------------------------------------------------------------------------------


def device_count() -> int:
    """Number of CUDA devices visible (raises :class:`CudaError` without a driver)."""
    rt = cudart()
    return int(cuda_call(rt.cudaGetDeviceCount(), "cudaGetDeviceCount"))


def set_device(device: int) -> None:
    rt = cudart()
    cuda_call(rt.cudaSetDevice(int(device)), f"cudaSetDevice({device})")


def compute_capability(device: int = 0) -> tuple[int, int]:
    """``(major, minor)`` of a device: ``(8, 7)`` on Jetson Orin, ``(9, 0)`` on H100."""
    rt = cudart()
    attr = rt.cudaDeviceAttr
    major = cuda_call(
        rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, int(device)),
        "cudaDeviceGetAttribute(major)",
    )
    minor = cuda_call(
        rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, int(device)),
        "cudaDeviceGetAttribute(minor)",
    )
    return int(major), int(minor)


def device_name(device: int = 0) -> str:
    rt = cudart()
    props = cuda_call(rt.cudaGetDeviceProperties(int(device)), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode(errors="replace")
    return str(name)


# -- resources -------------------------------------------------------------------------------


class _Resource:
    """Something freed exactly once: by close(), ``with`` exit or garbage collection."""

    _freed = True

    def _free(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        if not self._freed:
            self._freed = True
            self._free()

    @property
    def closed(self) -> bool:
        return self._freed

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - a finaliser must not raise (interpreter exit)
            pass


class Stream(_Resource):
    """A non-blocking CUDA stream. ``handle`` is the integer TensorRT's
    ``execute_async_v3`` takes."""

    def __init__(self) -> None:
        rt = cudart()
        self._stream = cuda_call(
            rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
        )
        self._freed = False

    @property
    def handle(self) -> int:
        return int(self._stream)

    @property
    def cuda_stream(self) -> Any:
        """The ``cudaStream_t`` object for cuda-python calls."""
        return self._stream

    def synchronize(self) -> None:
        cuda_call(cudart().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def _free(self) -> None:
        cuda_call(cudart().cudaStreamDestroy(self._stream), "cudaStreamDestroy")


class DeviceBuffer(_Resource):
    """``nbytes`` of device memory (``cudaMalloc``); ``ptr`` is its address."""

    def __init__(self, nbytes: int) -> None:
        if nbytes <= 0:
            raise ValueError(f"device buffer size must be positive, got {nbytes}")
        self.nbytes = int(nbytes)
        self.ptr = int(cuda_call(cudart().cudaMalloc(self.nbytes), f"cudaMalloc({nbytes} B)"))
        self._freed = False

    def _free(self) -> None:
        cuda_call(cudart().cudaFree(self.ptr), "cudaFree")
        self.ptr = 0


class PinnedHostBuffer(_Resource):
    """Page-locked host memory (``cudaHostAlloc``) seen as a numpy array of ``shape``/``dtype``.

    Pinned memory lets ``cudaMemcpyAsync`` run truly asynchronously and at full bus speed.
    :attr:`array` is a view of that memory: it becomes invalid after :meth:`close`, so copy
    out of it (``array[:n].copy()``) before handing data to code that may outlive the buffer.
    """

    def __init__(self, shape: int | tuple[int, ...], dtype: Any) -> None:
        self.shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        if self.nbytes <= 0:
            raise ValueError(f"pinned buffer size must be positive, got shape {self.shape}")
        rt = cudart()
        self.ptr = int(
            cuda_call(
                rt.cudaHostAlloc(self.nbytes, rt.cudaHostAllocDefault),
                f"cudaHostAlloc({self.nbytes} B)",
            )
        )
        self._freed = False
        raw = (ctypes.c_byte * self.nbytes).from_address(self.ptr)
        self._array: np.ndarray | None = np.frombuffer(raw, dtype=self.dtype).reshape(self.shape)

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            raise ValueError("pinned host buffer is closed")
        return self._array

    def _free(self) -> None:
        self._array = None
        cuda_call(cudart().cudaFreeHost(self.ptr), "cudaFreeHost")
        self.ptr = 0


# -- copies ----------------------------------------------------------------------------------


def memcpy_htod_async(dst_ptr: int, src_ptr: int, nbytes: int, stream: Stream) -> None:
    """Queue a host-to-device copy of ``nbytes`` on ``stream`` (host memory should be pinned)."""
    rt = cudart()
    cuda_call(
        rt.cudaMemcpyAsync(
            int(dst_ptr), int(src_ptr), int(nbytes),
            rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.cuda_stream,
        ),
        "cudaMemcpyAsync(host to device)",
    )


def memcpy_dtoh_async(dst_ptr: int, src_ptr: int, nbytes: int, stream: Stream) -> None:
    """Queue a device-to-host copy of ``nbytes`` on ``stream`` (host memory should be pinned)."""
    rt = cudart()
    cuda_call(
        rt.cudaMemcpyAsync(
            int(dst_ptr), int(src_ptr), int(nbytes),
            rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.cuda_stream,
        ),
        "cudaMemcpyAsync(device to host)",
    )
