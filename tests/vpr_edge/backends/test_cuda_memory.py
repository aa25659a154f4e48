"""cuda_memory: the error translator (no GPU needed) and, on a GPU, real buffers and copies."""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest

from vpr_edge.errors import CudaError, MissingDependencyError, VprEdgeError

cudart = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python not installed")

from vpr_edge.backends import cuda_memory


def _gpu_present() -> bool:
    err, count = cudart.cudaGetDeviceCount()
    return err == cudart.cudaError_t.cudaSuccess and count > 0


no_gpu_only = pytest.mark.skipif(_gpu_present(), reason="this machine has a usable CUDA GPU")


@no_gpu_only
def test_failing_runtime_call_is_translated() -> None:
    raw_err, _ = cudart.cudaGetDeviceCount()
    expected_name = cudart.cudaGetErrorName(raw_err)[1].decode()
    expected_text = cudart.cudaGetErrorString(raw_err)[1].decode()
    with pytest.raises(CudaError) as info:
        cuda_memory.cuda_call(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    exc = info.value
    assert isinstance(exc, RuntimeError) and isinstance(exc, VprEdgeError)
    assert exc.code == int(raw_err) and exc.error_name == expected_name
    assert str(exc).startswith(f"cudaGetDeviceCount failed: {expected_name} ({expected_text})")
    assert "--backend onnxruntime-cpu" in str(exc)  # no GPU: says what to do instead


@no_gpu_only
def test_device_queries_and_allocations_fail_cleanly_without_gpu() -> None:
    with pytest.raises(CudaError, match="cudaGetDeviceCount failed: cudaError"):
        cuda_memory.device_count()
    with pytest.raises(CudaError, match=r"cudaMalloc\(64 B\) failed"):
        cuda_memory.DeviceBuffer(64)
    with pytest.raises(CudaError, match=r"cudaHostAlloc\(32 B\) failed"):
        cuda_memory.PinnedHostBuffer((8,), np.float32)
    with pytest.raises(CudaError, match="cudaStreamCreateWithFlags failed"):
        cuda_memory.Stream()
    gc.collect()  # half-built resources must not raise from their finalisers


def test_specific_error_codes_are_named() -> None:
    result = (cudart.cudaError_t.cudaErrorMemoryAllocation, None)
    pattern = r"cudaMalloc failed: cudaErrorMemoryAllocation \(out of memory\)$"
    with pytest.raises(CudaError, match=pattern) as info:
        cuda_memory.cuda_call(result, "cudaMalloc")
    assert info.value.code == 2
    with pytest.raises(CudaError, match="cudaErrorInvalidValue"):
        cuda_memory.cuda_call(cudart.cudaError_t.cudaErrorInvalidValue)


def test_a_driver_older_than_the_bindings_names_both_versions(monkeypatch) -> None:
    """cuda-python 13 (what `pip install cuda-python` picks) on a JetPack 6 driver (CUDA
    12.6): the error said there was no usable GPU, though the GPU was fine."""
    real = cuda_memory.cudart()
    ok = real.cudaError_t.cudaSuccess

    class OldDriver:
        def __getattr__(self, name: str):
            return getattr(real, name)

        @staticmethod
        def cudaDriverGetVersion():
            return ok, 12060

        @staticmethod
        def cudaRuntimeGetVersion():
            return ok, 13020

    monkeypatch.setattr(cuda_memory, "cudart", lambda: OldDriver())
    with pytest.raises(CudaError, match=r"driver here runs CUDA up to 12\.6, these bindings "
                                        r"are for 13\.2: install .*cuda-python~=12\.0") as info:
        cuda_memory.cuda_call((real.cudaError_t.cudaErrorInsufficientDriver, 0),
                              "cudaGetDeviceCount")
    assert "no usable NVIDIA GPU" not in str(info.value)


def test_success_returns_the_values() -> None:
    ok = cudart.cudaError_t.cudaSuccess
    assert cuda_memory.cuda_call((ok,)) is None
    assert cuda_memory.cuda_call((ok, 7)) == 7
    assert cuda_memory.cuda_call((ok, 1, 2)) == (1, 2)
    version = cuda_memory.cuda_call(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
    assert version >= 12000


def test_missing_cuda_python_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)
    with pytest.raises(MissingDependencyError, match=r"vpr-edge\[tensorrt\]"):
        cuda_memory.cudart()
    with pytest.raises(MissingDependencyError, match="cuda.bindings.runtime"):
        cuda_memory.device_count()


@pytest.mark.gpu
def test_pinned_round_trip_through_the_device() -> None:
    data = np.arange(4 * 33, dtype=np.float32).reshape(4, 33)
    with (
        cuda_memory.Stream() as stream,
        cuda_memory.PinnedHostBuffer(data.shape, np.float32) as src,
        cuda_memory.PinnedHostBuffer(data.shape, np.float32) as dst,
        cuda_memory.DeviceBuffer(data.nbytes) as dev,
    ):
        src.array[:] = data
        dst.array[:] = 0
        cuda_memory.memcpy_htod_async(dev.ptr, src.ptr, data.nbytes, stream)
        cuda_memory.memcpy_dtoh_async(dst.ptr, dev.ptr, data.nbytes, stream)
        stream.synchronize()
        np.testing.assert_array_equal(dst.array, data)
    assert dev.closed and src.closed and stream.closed
    with pytest.raises(ValueError, match="closed"):
        _ = src.array


@pytest.mark.gpu
def test_device_facts() -> None:
    assert cuda_memory.device_count() >= 1
    major, minor = cuda_memory.compute_capability(0)
    assert major >= 5 and minor >= 0
    assert cuda_memory.device_name(0)
