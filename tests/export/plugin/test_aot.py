"""Ahead-of-time PTX for Jetson Orin (sm_87), Hopper (sm_90) and the newest target, no GPU.

Each PTX is also assembled by the ptxas bundled with Triton: proof that it is valid for that
architecture, not just text.
"""

from __future__ import annotations

import subprocess

import pytest

pytest.importorskip("triton", reason="AOT compilation needs triton (vpr-edge[plugin])")

from vpr_edge.export.plugin.aot import PTX_TARGETS, RUNTIME_PARAMETERS, compile_ptx


def test_targets_are_orin_hopper_and_the_newest() -> None:
    assert PTX_TARGETS[:2] == (87, 90) and PTX_TARGETS[-1] >= 120


@pytest.mark.parametrize("arch", PTX_TARGETS)
def test_ptx_for_each_target(arch: int, tmp_path) -> None:
    from triton.backends.nvidia.compiler import get_ptxas

    kernel = compile_ptx(arch, num_clusters=64, dim=112, dtype="fp16")
    assert kernel.target in (f"sm_{arch}", f"sm_{arch}a")
    assert f".target {kernel.target}" in kernel.ptx
    assert kernel.name == "netvlad_kernel" and f".entry {kernel.name}(" in kernel.ptx
    # TensorRT passes inputs, the extra scalar and the output: exactly six parameters
    assert len(kernel.parameters) == len(RUNTIME_PARAMETERS) == 6
    assert ".u32" in kernel.parameters[4]  # hw, a 32-bit scalar
    assert kernel.threads_per_block == 128 and 0 < kernel.shared_bytes <= 48 * 1024
    ptx = tmp_path / "netvlad.ptx"
    ptx.write_text(kernel.ptx)
    ptxas = get_ptxas(arch).path
    done = subprocess.run([ptxas, "--gpu-name", kernel.target, str(ptx), "-o",
                           str(tmp_path / "netvlad.cubin")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_older_ptx_isa_for_older_drivers() -> None:
    kernel = compile_ptx(87, num_clusters=16, dim=40, dtype="fp32", ptx_version=85)
    assert kernel.isa == "8.5" and ".version 8.5" in kernel.ptx
    assert ".f32" in kernel.ptx


def test_bad_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="dtypes"):
        compile_ptx(87, num_clusters=16, dim=40, dtype="bf16")
