"""TensorRT registration of ``vpr_edge::NetVLAD`` through ``tensorrt.plugin`` (TensorRT >= 10.9).

UNTESTED WITH TENSORRT: full TensorRT is not installable on the development machine and the
``tensorrt_rtx.plugin`` module there is a stub without its bindings. Each call below follows
NVIDIA's ``tensorrt.plugin`` documentation (``register``, ``autotune``, ``aot_impl``, the
``TensorDesc``/``ShapeExprs``/``KernelLaunchParams``/``SymIntExprs`` classes); the logic is
exercised in tests/export/plugin/test_registration.py against a recording stand-in of that
module, which checks shapes, types and launch parameters but not TensorRT itself.

- ``register``: the output is ``[N, K*D]`` in the features' type (shape inference uses
  symbolic expressions, so the batch may be dynamic).
- ``autotune``: FP16 everywhere, linear layout. FP16 only: the kernel's FP32 build needs
  60 KB of shared memory at the default K=64, D=112 (measured with Triton 3.6 and 3.8 for
  sm_87/sm_90), over the 48 KB an AOT launch gets, so the exporter builds an FP32 engine
  from the plain graph (``vpr-export --plugin`` without ``--fp16``).
- ``aot_impl``: compiles the Triton kernel to PTX for the GPU TensorRT builds on
  (:func:`.aot.compile_ptx`), one program per image (``grid_x = N``), ``hw = H*W`` as the one
  extra scalar. Attributes are baked into the PTX (TensorRT does not serialize attributes of
  AOT plugins), so the engine needs neither Python nor Triton at run time.

No ``from __future__ import annotations`` here: ``tensorrt.plugin`` validates the decorated
functions' annotations as objects.
"""

import re

from vpr_edge.errors import MissingDependencyError

from .onnx_node import PLUGIN_ID

MIN_TENSORRT = (10, 9)
#: shared memory a kernel may use without an opt-in attribute, which AOT plugins cannot set
SHARED_MEMORY_LIMIT = 48 * 1024
ATTRIBUTES = ("num_clusters", "dim", "eps", "normalize_input")
_registered = set()


def tensorrt_supports_plugin(version: str) -> tuple[bool, str]:
    """(ok, reason): AOT Python plugins need TensorRT >= 10.9."""
    found = re.match(r"(\d+)\.(\d+)", version or "")
    if found is None:
        return False, f"cannot read the TensorRT version {version!r}"
    if (int(found.group(1)), int(found.group(2))) < MIN_TENSORRT:
        return False, (f"TensorRT {version} has no ahead-of-time Python plugins (they came in "
                       f"{MIN_TENSORRT[0]}.{MIN_TENSORRT[1]}; JetPack 6 ships 10.3)")
    return True, f"TensorRT {version}"


def prepare_builder(module: str = "tensorrt") -> tuple[bool, str]:
    """Register the plugin with TensorRT module ``module`` (``tensorrt``) for an engine build;
    (False, why) when that TensorRT cannot take it (then build from the plain graph)."""
    if module != "tensorrt":
        return False, (f"{module} is not supported for the plugin (vpr-edge registers it "
                       "with full TensorRT's tensorrt.plugin only)")
    try:
        register_plugin()
    except MissingDependencyError as exc:
        return False, str(exc)
    return True, "registered"


def register_plugin(trt=None, trtp=None) -> None:
    """Register the plugin with TensorRT once per process (before parsing the plugin graph).

    ``trt``/``trtp`` default to ``tensorrt`` and ``tensorrt.plugin``.
    """
    if trt is None or trtp is None:
        try:
            import tensorrt as trt
            import tensorrt.plugin as trtp
        except ImportError as exc:
            raise MissingDependencyError(
                f"the NetVLAD TensorRT plugin needs TensorRT >= 10.9 with tensorrt.plugin "
                f"({exc}); install vpr-edge[tensorrt] or build without --plugin") from exc
    if id(trtp) in _registered:
        return
    ok, reason = tensorrt_supports_plugin(str(getattr(trt, "__version__", "")))
    if not ok:
        raise MissingDependencyError(reason)
    dtypes = {trt.float16: "fp16"}

    @trtp.register(PLUGIN_ID)
    def netvlad_description(features: trtp.TensorDesc, weight: trtp.TensorDesc,
                            bias: trtp.TensorDesc, centroids: trtp.TensorDesc,
                            num_clusters: int, dim: int, eps: float,
                            normalize_input: int) -> trtp.TensorDesc:
        out = features.like()
        out.shape_expr = trtp.ShapeExprs.from_tuple(
            (features.shape_expr[0], weight.shape_expr[0] * weight.shape_expr[1]))
        return out

    @trtp.autotune(PLUGIN_ID)
    def netvlad_autotune(features: trtp.TensorDesc, weight: trtp.TensorDesc,
                         bias: trtp.TensorDesc, centroids: trtp.TensorDesc,
                         outputs: tuple[trtp.TensorDesc]) -> list[trtp.AutoTuneCombination]:
        # all five tensors FP16 (the FP32 kernel does not fit an AOT launch's shared memory)
        return [trtp.AutoTuneCombination(", ".join(["FP16"] * 5), "LINEAR")]

    @trtp.aot_impl(PLUGIN_ID)
    def netvlad_aot(features: trtp.TensorDesc, weight: trtp.TensorDesc,
                    bias: trtp.TensorDesc, centroids: trtp.TensorDesc, num_clusters: int,
                    dim: int, eps: float, normalize_input: int,
                    outputs: tuple[trtp.TensorDesc]
                    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams,
                               trtp.SymExprs]:
        from .aot import compile_ptx

        if features.dtype not in dtypes or outputs[0].dtype not in dtypes:
            raise ValueError(f"{PLUGIN_ID} runs FP16 in TensorRT, got {features.dtype} -> "
                             f"{outputs[0].dtype}; export with --fp16")
        kernel = compile_ptx(None, num_clusters=int(num_clusters), dim=int(dim),
                             dtype=dtypes[features.dtype], out_dtype=dtypes[outputs[0].dtype],
                             eps=float(eps), normalize_input=bool(normalize_input))
        if kernel.shared_bytes > SHARED_MEMORY_LIMIT:
            raise ValueError(
                f"{PLUGIN_ID}: K={num_clusters}, D={dim} needs {kernel.shared_bytes} bytes of "
                f"shared memory, over the {SHARED_MEMORY_LIMIT} a plugin launch gets; export "
                "without --plugin (K*D up to 64*128 fits)")
        launch = trtp.KernelLaunchParams()
        launch.grid_x = features.shape_expr[0]
        launch.block_x = kernel.threads_per_block
        launch.shared_mem = kernel.shared_bytes
        extra = trtp.SymIntExprs(1)
        extra[0] = trtp.SymInt32(features.shape_expr[2] * features.shape_expr[3])
        return kernel.name, kernel.ptx, launch, extra

    _registered.add(id(trtp))
