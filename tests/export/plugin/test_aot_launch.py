"""The plugin's ahead-of-time PTX, launched on a real GPU the way TensorRT's AOT launcher does.

``aot_impl`` hands TensorRT a PTX string, an entry name and launch parameters (one program
per image, ``threads_per_block`` threads, ``shared_bytes`` of dynamic shared memory) and the
runtime parameters ``x, w, b, c, hw, out``. TensorRT is not installable here, so these tests
do its part with the CUDA driver API (cuda-python): JIT-load the PTX, launch it with exactly
those parameters, and compare with the PyTorch NetVLAD layer. This proves the trimmed
parameter list, the launch facts and the older PTX ISA that Jetson drivers need, on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("triton", reason="AOT compilation needs triton (vpr-edge[plugin])")
torch = pytest.importorskip("torch")

from vpr_edge.export.plugin.aot import compile_ptx  # noqa: E402
from vpr_edge.export.plugin.registration import SHARED_MEMORY_LIMIT  # noqa: E402

#: the FP16 limits of the interpreted and Triton-launched kernel tests (test_kernel.py)
MAX_ABS_ERROR, MIN_COSINE = 2e-3, 0.9999


def _check(result) -> object:
    err, *values = result if isinstance(result, tuple) else (result,)
    from cuda.bindings import driver

    if err != driver.CUresult.CUDA_SUCCESS:
        _, name = driver.cuGetErrorName(err)
        raise RuntimeError(f"CUDA driver call failed: {name.decode() if name else err}")
    return values[0] if len(values) == 1 else values


def launch_like_tensorrt(kernel, tensors: list, hw: int, out) -> None:
    """JIT-load ``kernel.ptx`` and launch it as TensorRT's AOT plugin launcher would."""
    from cuda.bindings import driver

    module = _check(driver.cuModuleLoadData(kernel.ptx.encode() + b"\0"))
    try:
        function = _check(driver.cuModuleGetFunction(module, kernel.name.encode()))
        # kernelParams: an array of pointers, each to one parameter's value
        values = [np.array([t.data_ptr()], dtype=np.uint64) for t in tensors]
        values += [np.array([hw], dtype=np.int32), np.array([out.data_ptr()], dtype=np.uint64)]
        params = np.array([v.ctypes.data for v in values], dtype=np.uint64)
        stream = torch.cuda.current_stream().cuda_stream
        _check(driver.cuLaunchKernel(function, out.shape[0], 1, 1, kernel.threads_per_block,
                                     1, 1, kernel.shared_bytes, stream, params.ctypes.data, 0))
        torch.cuda.synchronize()
    finally:
        _check(driver.cuModuleUnload(module))


@pytest.mark.gpu
@pytest.mark.parametrize("ptx_version", [None, 85])
@pytest.mark.parametrize("height,width", [(15, 20), (30, 40)])
def test_aot_ptx_launched_like_tensorrt_matches_the_layer(ptx_version: int | None,
                                                          height: int, width: int) -> None:
    """FP16 in and out, as the plugin runs in TensorRT (registration.py); ISA 8.5 is what a
    JetPack 6 driver loads."""
    pytest.importorskip("cuda.bindings.driver", reason="needs cuda-python (vpr-edge[tensorrt])")
    from vpr_edge.training.netvlad import NetVLAD

    torch.manual_seed(0)
    layer = NetVLAD(64, 112).eval().cuda()
    x = torch.randn(5, 112, height, width, device="cuda").relu()
    kernel = compile_ptx(None, num_clusters=64, dim=112, dtype="fp16", eps=layer.eps,
                         ptx_version=ptx_version)
    assert kernel.shared_bytes <= SHARED_MEMORY_LIMIT and len(kernel.parameters) == 6
    if ptx_version is not None:
        assert kernel.isa == f"{ptx_version // 10}.{ptx_version % 10}"
    inputs = [t.detach().half().contiguous() for t in (
        x, layer.assignment_weight, layer.assignment_bias, layer.centroids)]
    out = torch.full((5, 64 * 112), float("nan"), device="cuda", dtype=torch.float16)
    launch_like_tensorrt(kernel, inputs, height * width, out)
    with torch.no_grad():
        expected = layer(x.half().float())
    got = out.float()
    assert torch.isfinite(got).all(), "the kernel left outputs unwritten or not finite"
    assert (got - expected).abs().max() <= MAX_ABS_ERROR
    assert torch.nn.functional.cosine_similarity(got, expected).min() >= MIN_COSINE
