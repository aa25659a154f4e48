"""Build a TensorRT engine from our ONNX, with one code path for TensorRT 10.x, 11.x and RTX.

Used by ``vpr-export`` and by ``vpr-edge engine build`` (which builds on the robot from an
exported ONNX, so it is part of the runtime: it needs TensorRT, not torch).

- **Strongly typed** network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): every tensor
  keeps the type the ONNX gives it, so the FP16 graph runs FP16 where it says and FP32 where
  it says. TensorRT 11 removed the FP16 builder flag; this works on 10.x (Jetson: 10.3),
  11.x and TensorRT-RTX alike.
- An optimisation profile for the batch (min/opt/max), a workspace limit, and a timing cache
  kept next to the outputs and reused by later builds.
- ``tensorrt`` (full TensorRT) builds for the GPU it runs on and needs one. ``tensorrt_rtx``
  (PyPI ``tensorrt-rtx-cu13``) builds without a GPU for the compute capabilities asked
  (RTX GPUs: 7.5 to 12.1; not Jetson): that is how CI proves our graphs build.

Equivalent commands for users with full TensorRT::

    trtexec --onnx=model.fp16.onnx --stronglyTyped --minShapes=image:1x240x320x3 \\
            --optShapes=image:1x240x320x3 --maxShapes=image:8x240x320x3 \\
            --memPoolSize=workspace:1024M --timingCacheFile=timing.cache --saveEngine=raw.plan
    polygraphy run model.fp16.onnx --trt --strongly-typed --onnxrt \\
            --input-shapes image:[1,240,320,3]

(``trtexec`` writes a bare plan; ``vpr-edge`` needs the header, so build with ``vpr-export``,
or from an exported ONNX without torch: ``vpr-edge engine build MODEL.fp16.onnx``.)
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ._optional import install_command
from .backends.tensorrt_logger import process_logger
from .engine_file import MIN_RTX_CAPABILITY
from .errors import BackendUnavailableError, CudaError, MissingDependencyError, ModelFormatError
from .metadata import ModelMetadata

log = logging.getLogger("vpr_edge.export")

BUILDER_MODULES = ("tensorrt", "tensorrt_rtx")
#: RTX builds without a GPU target these by default (Turing, 7.5, cannot run FP32 GEMMs
#: in TensorRT-RTX, which our NetVLAD needs).
RTX_DEFAULT_TARGETS = ("8.0", "8.6", "8.9", "12.0")


#: Jetson GPU architectures (Xavier, Orin, Thor): TensorRT-RTX runs on none of them.
JETSON_CAPABILITIES = ("7.2", "8.7", "10.1", "11.0")
#: how to build an engine on the GPU that will run it, without torch
BUILD_ON_DEVICE = ("build the engine on that machine with the TensorRT it has (on a Jetson, "
                   "JetPack's): vpr-edge engine build MODEL.fp16.onnx")


def engine_request_problems(batch: tuple[int, int, int], tensorrt_module: str | None,
                            compute_capabilities: tuple[str, ...] | None,
                            version_compatible: bool) -> list[str]:
    """What is wrong with an engine request (``vpr-export`` and ``vpr-edge engine build``
    options); [] when it can be built."""
    problems = []
    if not 1 <= batch[0] <= batch[1] <= batch[2]:
        problems.append(f"--batch needs 1 <= min <= opt <= max, got {' '.join(map(str, batch))}")
    if version_compatible and tensorrt_module == "tensorrt_rtx":
        problems.append("--version-compatible needs full TensorRT (tensorrt); TensorRT-RTX "
                        "engines are portable across GPUs but not across RTX versions")
    if tensorrt_module != "tensorrt":  # (full TensorRT builds for the GPU it runs on)
        problems += _rtx_capability_problems(compute_capabilities)
    if compute_capabilities and (tensorrt_module or _default_builder()) == "tensorrt":
        chosen = ("" if tensorrt_module else
                  " (the builder chosen here, before tensorrt_rtx; --tensorrt-module "
                  "tensorrt_rtx builds for the GPUs you name)")
        problems.append("--compute-capability is for TensorRT-RTX: full TensorRT"
                        f"{chosen} builds for the GPU it runs on")
    return problems


def _default_builder() -> str | None:
    """The module :func:`find_builder` builds with when none is named."""
    found = find_builder()
    return None if found is None else found[1]


def _rtx_capability_problems(capabilities: tuple[str, ...] | None) -> list[str]:
    """What is wrong with TensorRT-RTX targets (``--compute-capability``); [] when fine."""
    problems = []
    for capability in capabilities or ():
        numbers = str(capability).split(".")
        if len(numbers) != 2 or not all(n.isdigit() for n in numbers):
            problems.append(f"--compute-capability {capability!r}: give MAJOR.MINOR, e.g. 8.9")
        elif str(capability) in JETSON_CAPABILITIES:
            problems.append(f"--compute-capability {capability} is a Jetson GPU, and "
                            f"TensorRT-RTX engines do not run on Jetson: {BUILD_ON_DEVICE}")
        elif (int(numbers[0]), int(numbers[1])) < MIN_RTX_CAPABILITY:
            problems.append(
                f"--compute-capability {capability}: TensorRT-RTX runs no FP32 matrix "
                f"products on GPUs before {'.'.join(map(str, MIN_RTX_CAPABILITY))}, and "
                f"NetVLAD needs them; for such a GPU, {BUILD_ON_DEVICE}")
    return problems


@dataclass(frozen=True)
class EngineBuildConfig:
    """Attributes:
        batch: (min, opt, max) batch of the optimisation profile.
        workspace_mib: builder workspace limit.
        timing_cache: file to read and update (None: no cache).
        compute_capabilities: TensorRT-RTX targets (e.g. ("8.9",)); ignored by full
            TensorRT, which builds for its GPU.
        module: force ``tensorrt`` or ``tensorrt_rtx`` (None: whichever is installed).
        plugin: the plugin the graph uses (recorded in the settings), or None.
        version_compatible: set ``BuilderFlag.VERSION_COMPATIBLE`` (full TensorRT only): the
            engine also runs on later TensorRT versions and on the lean runtime of its
            version. It embeds
            the lean runtime, which the runtime must be allowed to load
            (``engine_host_code_allowed``; :class:`vpr_edge.backends.TensorRTBackend` does).
    """

    batch: tuple[int, int, int] = (1, 1, 8)
    workspace_mib: int = 1024
    timing_cache: Path | None = None
    compute_capabilities: tuple[str, ...] | None = None
    module: str | None = None
    plugin: dict[str, Any] | None = None
    version_compatible: bool = False


@dataclass
class BuiltEngine:
    engine: bytes
    module: str
    version: str
    compute_capability: str | None
    device_name: str | None
    settings: dict[str, Any] = field(default_factory=dict)


def find_builder(preferred: str | None = None) -> tuple[ModuleType, str] | None:
    """The TensorRT module to build with, or None when none is installed."""
    names = (preferred,) if preferred else BUILDER_MODULES
    for name in names:
        try:
            return importlib.import_module(name), name
        except ImportError:
            continue
        except Exception as exc:  # a broken install (missing CUDA libraries, ...)
            log.warning("cannot import %s: %s", name, exc)
    return None


#: each builder module, as users know it, and how to install it (``{tensorrt}``: the pip
#: command of the vpr-edge[tensorrt] extra, ``_optional.install_command``)
INSTALL_BUILDER = {
    "tensorrt": ("full TensorRT (tensorrt)", "the vpr-edge[tensorrt] extra, {tensorrt}, on a "
                 "machine with NVIDIA's libraries (on a Jetson, the TensorRT JetPack ships)"),
    "tensorrt_rtx": ("TensorRT-RTX (tensorrt_rtx)", "`pip install tensorrt-rtx-cu13`"),
}


def _install_builder(name: str) -> tuple[str, str]:
    wanted, install = INSTALL_BUILDER[name]
    return wanted, install.format(tensorrt=install_command("tensorrt"))


def builder_available(preferred: str | None = None) -> tuple[bool, str]:
    """(True, "MODULE VERSION") for the module :func:`find_builder` would build with, else
    (False, what is missing, how to install it and, for a ``preferred`` one, what is here)."""
    found = find_builder(preferred)
    if found is not None:
        problem = _no_gpu_to_build_on(found[1])
        if problem is not None:
            return False, f"{found[1]} {found[0].__version__} is installed, but {problem}"
        return True, f"{found[1]} {found[0].__version__}"
    if preferred not in INSTALL_BUILDER:
        full, rtx = (" with ".join(_install_builder(name)) for name in BUILDER_MODULES)
        return False, f"no TensorRT module: install {full}, or {rtx} to build RTX engines"
    wanted, install = _install_builder(preferred)
    other = find_builder(next(name for name in BUILDER_MODULES if name != preferred))
    here = ("no other TensorRT module is installed either" if other is None else
            f"this machine has {other[1]} {other[0].__version__}: build with it "
            f"(--tensorrt-module {other[1]}, or leave the option out)")
    return False, f"{wanted} is not importable here: install it with {install}; {here}"


def _no_gpu_to_build_on(module: str) -> str | None:
    """Why full TensorRT cannot build here (it builds for the GPU it runs on): no CUDA
    driver or GPU that cuda-python can reach; None when it can (and for TensorRT-RTX, which
    builds without a GPU)."""
    if module != "tensorrt":
        return None
    from .backends import cuda_memory

    try:
        if cuda_memory.device_count() > 0:
            return None
        return "it builds for the GPU it runs on, and this machine has none"
    except (CudaError, MissingDependencyError) as exc:
        return f"it builds for the GPU it runs on, and none can be used here ({exc})"


def _capability_enum(trt: ModuleType, text: str) -> Any:
    name = "SM" + text.replace(".", "")
    value = getattr(trt.ComputeCapability, name, None)
    if value is None:
        known = [(int(m[2:-1]), int(m[-1])) for m in dir(trt.ComputeCapability)
                 if m.startswith("SM") and m[2:].isdigit()]
        usable = [f"{major}.{minor}" for major, minor in sorted(known)
                  if (major, minor) >= MIN_RTX_CAPABILITY]
        raise ModelFormatError(f"{trt.__name__} cannot target compute capability {text}; "
                               f"give one of {', '.join(usable)}")
    return value


def build_engine(onnx_path: Path, config: EngineBuildConfig, *, shown_as: str | None = None
                 ) -> BuiltEngine:
    """Parse ``onnx_path`` and build a serialized engine (see module docstring); ``shown_as``:
    the file to name in errors (the ONNX's final name, when ``onnx_path`` is a temporary)."""
    shown = shown_as or onnx_path.name
    found = find_builder(config.module)
    if found is None:
        raise MissingDependencyError(builder_available(config.module)[1])
    trt, name = found
    if config.version_compatible and name != "tensorrt":
        raise ModelFormatError(f"--version-compatible needs full TensorRT (tensorrt); {name} "
                               "cannot build version-compatible engines")
    problem = _no_gpu_to_build_on(name)  # (before TensorRT finds out, as a TypeError)
    if problem is not None:
        raise BackendUnavailableError(f"{name} cannot build an engine: {problem}")
    recorder = process_logger(trt)
    mark = recorder.mark()
    try:
        builder = trt.Builder(recorder)
    except TypeError as exc:  # "factory function returned nullptr": CUDA failed to start
        raise BackendUnavailableError(
            f"{name} cannot create a builder here ({exc}: "
            + ("; ".join(recorder.errors_since(mark, last=5)) or "no detail from TensorRT")
            + "); check the GPU driver (nvidia-smi) and that this process may use the GPU "
            "(a container needs --gpus)") from exc
    flag = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flag)
    parser = trt.OnnxParser(network, recorder)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
        raise ModelFormatError(f"{name} cannot parse {shown}: {'; '.join(errors)}")
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE,
                                         config.workspace_mib << 20)
    lo, opt, hi = config.batch
    image = network.get_input(0)
    _, height, width, channels = image.shape
    profile = builder.create_optimization_profile()
    profile.set_shape(image.name, (lo, height, width, channels), (opt, height, width, channels),
                      (hi, height, width, channels))
    builder_config.add_optimization_profile(profile)
    if config.version_compatible:
        builder_config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    cache_used = False
    # TensorRT-RTX has no timing cache (its operations are deprecated no-ops there).
    use_cache = config.timing_cache is not None and name != "tensorrt_rtx"
    if use_cache:
        blob = config.timing_cache.read_bytes() if config.timing_cache.is_file() else b""
        cache = builder_config.create_timing_cache(blob)
        builder_config.set_timing_cache(cache, ignore_mismatch=True)
        cache_used = bool(blob)
    capability, device, targets = None, None, None
    if name == "tensorrt_rtx":
        targets = tuple(config.compute_capabilities or RTX_DEFAULT_TARGETS)
        builder_config.num_compute_capabilities = len(targets)
        for i, text in enumerate(targets):
            builder_config.set_compute_capability(_capability_enum(trt, text), i)
        capability = targets[0] if len(targets) == 1 else None
    else:
        from .backends import cuda_memory

        major, minor = cuda_memory.compute_capability(0)
        capability, device = f"{major}.{minor}", cuda_memory.device_name(0)
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise ModelFormatError(f"{name} failed to build an engine from {shown}: "
                               + "; ".join(recorder.errors_since(mark, last=5)))
    if use_cache:
        config.timing_cache.write_bytes(
            memoryview(builder_config.get_timing_cache().serialize()).tobytes())
    settings = {"strongly_typed": True, "profile": {"min": lo, "opt": opt, "max": hi},
                "workspace_mib": config.workspace_mib, "timing_cache_reused": cache_used,
                "compute_capabilities": list(targets) if targets else [capability],
                "plugin": config.plugin}
    if config.version_compatible:
        settings["version_compatible"] = True
    return BuiltEngine(memoryview(serialized).tobytes(), name, str(trt.__version__),
                       capability, device, settings)


def write_engine(onnx_path: Path, output: Path, metadata: ModelMetadata,
                 config: EngineBuildConfig, *, shown_as: str | None = None) -> BuiltEngine:
    """Build an engine from ``onnx_path`` (:func:`build_engine`) and write it to ``output``
    with the header the runtime checks (atomically). ``metadata``: the model the ONNX holds
    (its precision and plugin are the engine's); ``shown_as``: the ONNX's name for errors and
    for the header's record of it (default: ``onnx_path``'s)."""
    from .engine_file import engine_header_for, write_engine_file

    built = build_engine(onnx_path, config, shown_as=shown_as)
    header = engine_header_for(
        metadata, built.engine, tensorrt_module=built.module, tensorrt_version=built.version,
        compute_capability=built.compute_capability, device_name=built.device_name,
        builder={**built.settings, "precision": metadata.precision,
                 "onnx": shown_as or onnx_path.name})
    write_engine_file(output, header, built.engine)
    return built
