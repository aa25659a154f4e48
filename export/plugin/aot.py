"""Ahead-of-time compilation of the NetVLAD kernel to PTX, without a GPU.

Triton compiles for an explicit target (``GPUTarget("cuda", arch, 32)``) on a machine with no
CUDA driver; the PTX goes into the TensorRT engine through the plugin's ``aot_impl``. The
kernel is specialised on K, D, the block sizes, eps, input normalisation and the I/O dtypes.

Two things TensorRT's AOT launcher needs that Triton does not give by default:

- **The parameter list.** Triton 3.x appends two pointer parameters (global and profile
  scratch) to every kernel; TensorRT passes only inputs, extra scalars and outputs. Our kernel
  uses no scratch (checked: both sizes are 0), so the two trailing parameters are removed from
  the ``.entry`` declaration; a kernel that needed scratch is refused.
- **The PTX ISA version.** Triton's bundled ptxas writes a recent ISA (``.version``); a driver
  loads only ISAs up to its CUDA version (JetPack 6 / CUDA 12.6: ISA 8.5). ``ptx_version``
  asks for an older one.

>>> kernel = compile_ptx(87, num_clusters=64, dim=112, dtype="fp16")  # doctest: +SKIP
>>> kernel.target, kernel.name, kernel.shared_bytes, len(kernel.parameters)
('sm_87', 'netvlad_kernel', 45056, 6)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .kernel import BLOCK_HW, netvlad_kernel, padded

#: Jetson Orin (sm_87), Hopper (sm_90) and the newest architecture this Triton's bundled
#: ptxas accepts here (Triton 3.8: sm_121, DGX Spark / GB10).
PTX_TARGETS = (87, 90, 121)
DTYPES = ("fp16", "fp32")
#: the kernel's runtime parameters, in TensorRT's order: inputs, extra scalars, outputs
RUNTIME_PARAMETERS = ("x_ptr", "w_ptr", "b_ptr", "c_ptr", "hw", "out_ptr")


@dataclass(frozen=True)
class CompiledKernel:
    """What ``aot_impl`` hands TensorRT: the entry name, PTX, and launch facts."""

    name: str
    ptx: str
    target: str  # the PTX .target line, e.g. sm_87 or sm_90a
    isa: str  # the PTX .version line, e.g. 8.7
    num_warps: int
    shared_bytes: int

    @property
    def threads_per_block(self) -> int:
        return self.num_warps * 32

    @property
    def parameters(self) -> list[str]:
        """The ``.param`` declarations of the entry point."""
        return _entry_parameters(self.ptx, self.name)[1]


def compile_ptx(arch: int | None, *, num_clusters: int, dim: int, dtype: str = "fp16",
                out_dtype: str | None = None, eps: float = 1e-12,
                normalize_input: bool = True, ptx_version: int | None = None
                ) -> CompiledKernel:
    """Compile the kernel for ``sm_<arch>`` (None: the GPU of this process, as TensorRT's
    builder wants); ``dtype`` is the features' and weights' type; ``ptx_version`` e.g. 85
    for ISA 8.5 (None: Triton's default)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if dtype not in DTYPES or (out_dtype or dtype) not in DTYPES:
        raise ValueError(f"NetVLAD plugin dtypes are {DTYPES}, got {dtype}/{out_dtype}")
    pointer = f"*{dtype}"
    signature = {"x_ptr": pointer, "w_ptr": pointer, "b_ptr": pointer, "c_ptr": pointer,
                 "hw": "i32", "out_ptr": f"*{out_dtype or dtype}"}
    constexprs = {"K": num_clusters, "D": dim, "K_PAD": padded(num_clusters),
                  "D_PAD": padded(dim), "BLOCK_HW": BLOCK_HW, "EPS": eps,
                  "NORMALIZE_INPUT": normalize_input}
    signature.update({name: "constexpr" for name in constexprs})
    source = ASTSource(fn=netvlad_kernel, signature=signature, constexprs=constexprs)
    if arch is None:
        target = triton.runtime.driver.active.get_current_target()
    else:
        target = GPUTarget("cuda", arch, 32)
    options = {} if ptx_version is None else {"ptx_version": ptx_version}
    compiled = triton.compile(source, target=target, options=options)
    meta = compiled.metadata
    scratch = (getattr(meta, "global_scratch_size", 0) or 0,
               getattr(meta, "profile_scratch_size", 0) or 0)
    if any(scratch):
        raise RuntimeError(f"the NetVLAD kernel needs Triton scratch memory {scratch}, which "
                           "TensorRT's AOT plugin launch cannot provide")
    ptx = _keep_parameters(compiled.asm["ptx"], meta.name, len(RUNTIME_PARAMETERS))
    line = re.search(r"^\.target\s+(\S+)", ptx, re.MULTILINE)
    isa = re.search(r"^\.version\s+(\S+)", ptx, re.MULTILINE)
    return CompiledKernel(name=meta.name, ptx=ptx, target=line.group(1) if line else "?",
                          isa=isa.group(1) if isa else "?", num_warps=meta.num_warps,
                          shared_bytes=meta.shared)


def _entry_parameters(ptx: str, name: str) -> tuple[re.Match | None, list[str]]:
    match = re.search(r"\.entry\s+" + re.escape(name) + r"\s*\(([^)]*)\)", ptx)
    if match is None:
        return None, []
    return match, [p.strip() for p in match.group(1).split(",") if p.strip()]


def _keep_parameters(ptx: str, name: str, count: int) -> str:
    """The PTX with the entry's parameter list cut to its first ``count`` parameters."""
    match, params = _entry_parameters(ptx, name)
    if match is None:
        raise RuntimeError(f"no .entry {name} in the compiled PTX")
    if len(params) < count:
        raise RuntimeError(f"{name} has {len(params)} parameters, expected {count}")
    kept = "(\n\t" + ",\n\t".join(params[:count]) + "\n)"
    start, end = match.span(1)
    return ptx[:start - 1] + kept + ptx[end + 1:]
