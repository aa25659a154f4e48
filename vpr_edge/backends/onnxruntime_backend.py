"""ONNX Runtime backends: TensorRT EP, CUDA EP or CPU, and a check of what really runs.

One class, :class:`OnnxRuntimeBackend`, three targets:

============  ==========================================================  ===================
target        providers asked for (in order)                              must really be used
============  ==========================================================  ===================
``tensorrt``  ``TensorrtExecutionProvider``, ``CUDAExecutionProvider``,   ``Tensorrt...``
              ``CPUExecutionProvider`` (nodes TensorRT cannot take fall
              back to CUDA, then CPU)
``cuda``      ``CUDAExecutionProvider``, ``CPUExecutionProvider``         ``CUDA...``
``cpu``       ``CPUExecutionProvider``                                    ``CPU...``
============  ==========================================================  ===================

``onnxruntime.get_available_providers()`` is only a hint: a provider whose libraries (CUDA,
cuDNN, TensorRT) fail to load is dropped by ONNX Runtime with a log line, and the session
quietly runs on the CPU. So after creating the session this module reads
``session.get_providers()`` and raises :class:`~vpr_edge.errors.BackendUnavailableError` when
the provider the target needs is not among them: asking for ``cuda`` never runs on the CPU.

The model must carry vpr-edge metadata (``metadata_props`` key ``vpr_edge``, written by
``vpr-export``); its input must be ``image`` uint8 ``[N, H, W, 3]`` and its output
``descriptor`` float32 ``[N, dim]`` as the metadata says.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..errors import (
    BackendUnavailableError,
    InvalidInputError,
    ModelFormatError,
    OutOfMemoryError,
    out_of_memory,
)
from ..metadata import ONNX_METADATA_KEY, ModelMetadata, onnx_load_error
from ..model_checksum import check_onnx_file
from ..plain_numbers import plain_numbers
from .base import CPU_BACKEND, Backend
from .cuda_libraries import preload_cuda_libraries

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "descriptor"

#: target -> (provider that must really be used, providers asked for in order)
PROVIDERS = {
    "tensorrt": (
        "TensorrtExecutionProvider",
        ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    ),
    "cuda": ("CUDAExecutionProvider", ("CUDAExecutionProvider", "CPUExecutionProvider")),
    "cpu": ("CPUExecutionProvider", ("CPUExecutionProvider",)),
}

#: ``graph_optimization`` values and the ONNX Runtime levels they select.
GRAPH_OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}

#: Largest batch per call when the user gives none: bounds the activation memory of one call
#: (bigger batches are chunked, so callers never see the limit).
DEFAULT_MAX_BATCH = 32
#: Max batch of the TensorRT EP optimisation profile when the user gives none.
DEFAULT_TRT_EP_MAX_BATCH = 16


#: session option: the intra-op threads stop spinning when a run returns
FORCE_SPINNING_STOP = "session.force_spinning_stop"

#: the most threads ONNX Runtime's pools are given (far past any core count)
MAX_THREADS = 1024


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """Settings of an ONNX Runtime session (every field is an ``open_backend`` keyword).

    ``intra_op_num_threads``
        Threads for one inference on the CPU (``None``: the physical cores this process may
        use, see :func:`physical_core_count`; hyper-threads rarely help convolutions and steal
        time from the robot's other processes). Also used by GPU targets for the nodes left
        on the CPU.
    ``inter_op_num_threads``
        Threads running independent graph branches; 1 suits these sequential graphs.
    ``graph_optimization``
        ``"all"`` (default), ``"extended"``, ``"basic"`` or ``"disable"``.
    ``device_id``
        CUDA device index for the ``cuda`` and ``tensorrt`` targets.
    ``max_batch``
        Largest batch one inference runs; larger batches are chunked by ``run``. ``None``:
        :data:`DEFAULT_MAX_BATCH` on CPU and CUDA, :data:`DEFAULT_TRT_EP_MAX_BATCH` for the
        TensorRT EP, which builds its optimisation profile for batches ``1..max_batch``.
    ``trt_engine_cache_dir``
        Directory where the TensorRT EP caches the engines it builds (and its timing cache),
        so only the first start of a model pays the build (minutes on a Jetson). ``None``: no
        cache. Use one directory per model version and device.
    ``trt_fp16``
        Let the TensorRT EP use FP16 kernels. ``None`` (default) follows the model: on when
        its metadata says ``precision: fp16``. An FP32 export with ``trt_fp16=True`` runs faster
        but may differ more from the reference; validate it first.
    ``trt_workspace_bytes``
        TensorRT builder workspace limit (``None``: TensorRT's default, the device memory).
    ``log_severity``
        ONNX Runtime log level (0 verbose .. 4 fatal); 3 shows errors only.
    """

    intra_op_num_threads: int | None = None
    inter_op_num_threads: int = 1
    graph_optimization: str = "all"
    device_id: int = 0
    max_batch: int | None = None
    trt_engine_cache_dir: str | None = None
    trt_fp16: bool | None = None
    trt_workspace_bytes: int | None = None
    log_severity: int = 3

    def __post_init__(self) -> None:
        plain_numbers(self)
        if self.graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
            raise InvalidInputError(
                f"graph_optimization must be one of {sorted(GRAPH_OPTIMIZATION_LEVELS)}, got "
                f"{self.graph_optimization!r}"
            )
        for name in ("intra_op_num_threads", "max_batch", "trt_workspace_bytes"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and value >= 1):
                raise InvalidInputError(f"{name} must be a positive integer or None, got {value!r}")
        for name in ("intra_op_num_threads", "inter_op_num_threads"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and 1 <= value <= MAX_THREADS):
                raise InvalidInputError(
                    f"{name} must be an integer in [1, {MAX_THREADS}] (about the cores there "
                    f"are: more threads than cores only wait on each other), got {value!r}")
        if not (_is_int(self.device_id) and 0 <= self.device_id < 2**31):
            raise InvalidInputError(f"device_id must be >= 0, got {self.device_id!r}")
        if not (_is_int(self.log_severity) and 0 <= self.log_severity <= 4):
            raise InvalidInputError(f"log_severity must be 0 (verbose) .. 4 (fatal), got "
                                    f"{self.log_severity!r}")

    @classmethod
    def option_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def physical_core_count() -> int:
    """Physical CPU cores this process may run on (Linux topology; else the logical count).

    Counts distinct (package, core) pairs among the CPUs in the process's affinity mask, so
    a container limited to 2 CPUs gets 2, and an 8-core/16-thread CPU gets 8.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            core = (topology / "core_id").read_text().strip()
            package = (topology / "physical_package_id").read_text().strip()
        except OSError:
            return max(1, len(cpus))
        cores.add((package, core))
    return max(1, len(cores))


def onnxruntime_module(target: str = "cpu") -> Any:
    """onnxruntime, or a MissingDependencyError naming the extra for ``target`` (``gpu`` for
    the CUDA and TensorRT providers: ``[cpu]`` and ``[gpu]`` must not be installed together)."""
    extra = "cpu" if target == "cpu" else "gpu"
    return require("onnxruntime", extra=extra, purpose="running ONNX models")


def _install_hint(provider: str) -> str:
    if provider == "TensorrtExecutionProvider":
        return (
            "install vpr-edge[gpu] (onnxruntime-gpu, which must replace onnxruntime) and the "
            "TensorRT libraries it was built for, on a machine with an NVIDIA GPU"
        )
    return (
        "install vpr-edge[gpu] (onnxruntime-gpu, which must replace onnxruntime) with its "
        "CUDA/cuDNN libraries, on a machine with an NVIDIA GPU"
    )


def provider_missing_reason(target: str) -> str | None:
    """Why ``target`` cannot run here according to ONNX Runtime's hint, or ``None``.

    ``None`` does not promise the provider loads; :class:`OnnxRuntimeBackend` checks that.
    """
    try:
        ort = onnxruntime_module(target)
    except ImportError as exc:
        return str(exc)
    needed, _ = PROVIDERS[target]
    available = ort.get_available_providers()
    if needed in available:
        return None
    if needed == "CUDAExecutionProvider":
        what = "onnxruntime-gpu not installed"
    elif needed == "TensorrtExecutionProvider":
        what = "this onnxruntime has no TensorRT execution provider"
    else:
        what = f"onnxruntime lacks {needed}"
    return f"{what} (available providers: {', '.join(available)}); {_install_hint(needed)}"


def provider_list(
    target: str, metadata: ModelMetadata, options: OnnxRuntimeOptions
) -> list[Any]:
    """The ``providers=`` argument of ``InferenceSession`` for ``target``: provider names, with
    their options for the GPU providers.

    TensorRT EP: FP16 follows the model's precision unless ``options.trt_fp16`` says
    otherwise; one optimisation profile for batches ``1..max_batch`` at the model's input
    size (so the EP builds one engine, not one per batch size); the engine and timing caches
    in ``options.trt_engine_cache_dir`` when given.
    """
    device = str(options.device_id)
    out: list[Any] = []
    for provider in PROVIDERS[target][1]:
        if provider == "TensorrtExecutionProvider":
            fp16 = metadata.precision == "fp16" if options.trt_fp16 is None else options.trt_fp16
            max_batch = options.max_batch or DEFAULT_TRT_EP_MAX_BATCH
            h, w = metadata.input_height, metadata.input_width
            trt = {
                "device_id": device,
                "trt_fp16_enable": "1" if fp16 else "0",
                "trt_profile_min_shapes": f"{INPUT_NAME}:1x{h}x{w}x3",
                "trt_profile_opt_shapes": f"{INPUT_NAME}:1x{h}x{w}x3",
                "trt_profile_max_shapes": f"{INPUT_NAME}:{max_batch}x{h}x{w}x3",
            }
            if options.trt_engine_cache_dir:
                cache = str(Path(options.trt_engine_cache_dir).expanduser())
                trt.update(
                    trt_engine_cache_enable="1", trt_engine_cache_path=cache,
                    trt_timing_cache_enable="1", trt_timing_cache_path=cache,
                )
            if options.trt_workspace_bytes:
                trt["trt_max_workspace_size"] = str(options.trt_workspace_bytes)
            out.append((provider, trt))
        elif provider == "CUDAExecutionProvider" and options.device_id != 0:
            out.append((provider, {"device_id": device}))
        elif provider == "CUDAExecutionProvider":
            # device 0 is the default: with options, onnxruntime-gpu 1.31 logged "No
            # registered plugin EP device found" for every session (seen on an H200)
            out.append(provider)
        else:
            out.append(provider)
    return out


class OnnxRuntimeBackend(Backend):
    """An ONNX model in an ONNX Runtime session on the CPU, CUDA or TensorRT EP.

    Raises :class:`~vpr_edge.errors.ModelFormatError` for a missing, damaged or foreign file
    and :class:`~vpr_edge.errors.BackendUnavailableError` when ``target``'s provider does not
    really run here.
    """

    def __init__(
        self, model_path: str | os.PathLike[str], target: str = "cpu",
        options: OnnxRuntimeOptions | None = None,
    ) -> None:
        if target not in PROVIDERS:
            raise InvalidInputError(f"target must be one of {sorted(PROVIDERS)}, got {target!r}")
        self.name = f"onnxruntime-{target}"
        self.target = target
        self.options = options or OnnxRuntimeOptions()
        self.path = Path(model_path)
        ort = onnxruntime_module(target)
        self._ort_version = ort.__version__
        if not self.path.is_file():
            raise ModelFormatError(f"{self.path}: ONNX model file not found")
        self.checksum_verified = check_onnx_file(self.path)  # bits changed since the export

        reason = provider_missing_reason(target)
        if reason is not None:
            raise BackendUnavailableError(f"{self.name}: {reason}")
        # CUDA/cuDNN from NVIDIA's pip packages, which the loader does not find by itself
        self._library_notes = [] if target == "cpu" else preload_cuda_libraries(ort)

        # The TensorRT EP needs the input size (its optimisation profile) and precision
        # before the session exists, so it reads the metadata from a light CPU session
        # first; the other targets read it from their own session (one load).
        self.metadata = self._probe_metadata(ort) if target == "tensorrt" else None
        self._session = self._create_session(ort)
        if self.metadata is None:
            self.metadata = self._metadata_from(self._session)
        self._check_io()

        needed, _ = PROVIDERS[target]
        self.providers = tuple(self._session.get_providers())
        if needed not in self.providers:
            raise BackendUnavailableError(
                f"{self.name}: ONNX Runtime did not load {needed} and would run on "
                f"{', '.join(self.providers)} instead ({self._fallback_detail()}); "
                f"{_install_hint(needed)}, or pick {CPU_BACKEND}"
            )
        self.device = "cpu" if target == "cpu" else f"cuda:{self.options.device_id}"
        if self.options.max_batch is not None:
            self.max_batch = self.options.max_batch
        elif target == "tensorrt":
            self.max_batch = DEFAULT_TRT_EP_MAX_BATCH
        else:
            self.max_batch = DEFAULT_MAX_BATCH
        static = self._session.get_inputs()[0].shape[0]
        if isinstance(static, int) and static > 0:  # exported with a fixed batch: pad to it
            self.min_batch = self.max_batch = static

    # -- construction ----------------------------------------------------------------------

    def _cpu_probe(self, ort: Any) -> Any:
        """A CPU session without graph optimisation: loads fast, proves the file is ONNX."""
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            return ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise onnx_load_error(self.path, exc) from exc

    def _probe_metadata(self, ort: Any) -> ModelMetadata:
        return self._metadata_from(self._cpu_probe(ort))

    def _metadata_from(self, session: Any) -> ModelMetadata:
        props = session.get_modelmeta().custom_metadata_map
        if ONNX_METADATA_KEY not in props:
            raise ModelFormatError(
                f"{self.path}: this ONNX model has no '{ONNX_METADATA_KEY}' metadata, so "
                "vpr-edge cannot know its input size, preprocessing or descriptor: export with "
                "vpr-export (`vpr-export model.pt`)"
            )
        try:
            return ModelMetadata.from_json(props[ONNX_METADATA_KEY])
        except ModelFormatError as exc:
            raise ModelFormatError(f"{self.path}: {exc}") from exc

    def _session_options(self, ort: Any) -> Any:
        opts = self.options
        so = ort.SessionOptions()
        so.log_severity_level = opts.log_severity
        self.intra_op_num_threads = opts.intra_op_num_threads or physical_core_count()
        so.intra_op_num_threads = self.intra_op_num_threads
        so.inter_op_num_threads = opts.inter_op_num_threads
        # Its threads spin between the graph's nodes (faster inference) but stop when run()
        # returns: spinning on, they took a core from the ORB features and RANSAC checked
        # after each inference (LoopClosureDetector with verify: 13% a frame, benchmarks/README)
        so.add_session_config_entry(FORCE_SPINNING_STOP, "1")
        level = GRAPH_OPTIMIZATION_LEVELS[opts.graph_optimization]
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        return so

    def _create_session(self, ort: Any) -> Any:
        if self.target == "tensorrt" and self.options.trt_engine_cache_dir:
            Path(self.options.trt_engine_cache_dir).expanduser().mkdir(parents=True, exist_ok=True)
        self._ort_warnings: list[str] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                session = ort.InferenceSession(
                    str(self.path), self._session_options(ort),
                    providers=provider_list(self.target, self.metadata, self.options),
                )
            except Exception as exc:
                # Tell a broken file (ModelFormatError, from the CPU probe) from a GPU
                # provider that failed (BackendUnavailableError).
                self._cpu_probe(ort)
                raise BackendUnavailableError(
                    f"{self.name}: ONNX Runtime failed to create a session for {self.path} "
                    f"({_first_line(exc)})"
                    + ("" if self.target == "cpu" else
                       f"; pick {CPU_BACKEND}, or fix the GPU installation")
                ) from exc
        self._ort_warnings = [str(w.message) for w in caught]
        return session

    def _fallback_detail(self) -> str:
        said = []
        if self._library_notes:
            said.append("loading CUDA libraries: " + " | ".join(self._library_notes))
        if self._ort_warnings:
            said.append("ONNX Runtime said: " + " | ".join(self._ort_warnings))
        return "; ".join(said) or "see ONNX Runtime's log for why the provider failed to load"

    def _check_io(self) -> None:
        meta = self.metadata
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        problems = []
        if [i.name for i in inputs] != [INPUT_NAME]:
            problems.append(f"inputs {[i.name for i in inputs]} (expected ['{INPUT_NAME}'])")
        else:
            inp = inputs[0]
            if inp.type != "tensor(uint8)":
                problems.append(f"input type {inp.type} (expected tensor(uint8))")
            expected = [None, meta.input_height, meta.input_width, 3]
            if len(inp.shape) != 4 or any(
                e is not None and s != e for s, e in zip(inp.shape, expected, strict=True)
            ):
                problems.append(
                    f"input shape {inp.shape} (metadata says [N, {meta.input_height}, "
                    f"{meta.input_width}, 3])"
                )
        if OUTPUT_NAME not in [o.name for o in outputs]:
            problems.append(f"outputs {[o.name for o in outputs]} (expected '{OUTPUT_NAME}')")
        else:
            out = next(o for o in outputs if o.name == OUTPUT_NAME)
            if out.type != "tensor(float)":
                problems.append(f"output type {out.type} (expected tensor(float))")
            if len(out.shape) != 2 or (
                isinstance(out.shape[1], int) and out.shape[1] != meta.dim
            ):
                problems.append(f"output shape {out.shape} (metadata says [N, {meta.dim}])")
        if problems:
            raise ModelFormatError(
                f"{self.path}: the graph does not match the vpr-edge model contract: "
                + "; ".join(problems)
                + ". Export it with vpr-export"
            )

    # -- Backend ---------------------------------------------------------------------------

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        session = self._session  # close() in another thread leaves this run its session
        if session is None:
            raise InvalidInputError(f"{self.name} backend was closed while running; open the "
                                    "model again")
        try:
            (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        except Exception as exc:  # onnxruntime's own types (Fail, RuntimeException)
            if out_of_memory(exc):
                raise OutOfMemoryError(
                    f"{self.name}: not enough memory to run the model on a batch of "
                    f"{len(batch)} ({exc}); free memory, raise the process's limit "
                    "(ulimit -v), or describe fewer frames at once") from exc
            raise
        return out

    def _release(self) -> None:
        self._session = None

    def info(self) -> dict[str, Any]:
        data = super().info()
        data.update(
            runtime=f"onnxruntime {self._ort_version}",
            model_path=str(self.path),
            intra_op_num_threads=self.intra_op_num_threads,
            graph_optimization=self.options.graph_optimization,
        )
        return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
