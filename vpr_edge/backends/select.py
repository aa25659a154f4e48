"""Pick the backend that runs a model: an explicit ordered list, never a silent fallback.

:data:`BACKEND_ORDER` is the preference, fastest first. A file's type limits it: a TensorRT
engine file (``.engine``, ``.plan``, ``.trt``) runs only on ``tensorrt``; an ``.onnx`` file on
the three ONNX Runtime backends.

* ``open_backend(path)`` (``backend="auto"``) tries the backends the file allows, in order, and
  logs (logger ``vpr_edge.backends.select``, INFO) the one it chose and why each earlier one
  was skipped.
* ``open_backend(path, backend="onnxruntime-cuda")`` opens exactly that backend or raises
  :class:`~vpr_edge.errors.BackendUnavailableError` saying why not and listing what is
  available; it never runs on something else.

A damaged or foreign model file, or an engine built for another GPU/TensorRT, raises its own
error (:class:`~vpr_edge.errors.ModelFormatError`, :class:`~vpr_edge.errors.EngineMismatchError`)
even under ``auto``: another backend would not fix the file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailableError, InvalidInputError, ModelFormatError, VprEdgeError
from ..paths import user_path
from .base import Backend

logger = logging.getLogger(__name__)

#: Every backend, in the order ``backend="auto"`` tries them.
BACKEND_ORDER = ("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")

#: Short names accepted for ``backend=``.
ALIASES = {"trt": "tensorrt", "cuda": "onnxruntime-cuda", "cpu": "onnxruntime-cpu"}

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
ONNX_SUFFIXES = (".onnx",)

#: Which backends run which file type.
BACKENDS_FOR = {
    "engine": ("tensorrt",),
    "onnx": ("onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu"),
}

#: Options each backend accepts as ``open_backend`` keywords.
_TRT_OPTIONS = frozenset({"device_id", "max_batch"})


def _ort_options() -> frozenset[str]:
    from .onnxruntime_backend import OnnxRuntimeOptions

    return OnnxRuntimeOptions.option_names()


def accepted_options(backend: str) -> frozenset[str]:
    return _TRT_OPTIONS if backend == "tensorrt" else _ort_options()


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run here (and the given model), and if not, why."""

    name: str
    available: bool
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {'available' if self.available else self.reason}"


def model_kind(model_path: str | os.PathLike[str]) -> str:
    """``"engine"`` or ``"onnx"`` from the file name; anything else is refused."""
    suffix = Path(model_path).suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    checkpoint = ("; a .pt file is a vpr-train checkpoint: export it first with "
                  "`vpr-export MODEL.pt`" if suffix == ".pt" else "")
    raise ModelFormatError(
        f"{model_path}: unknown model file type {suffix or '(none)'!r}: vpr-edge runs ONNX "
        f"models ({', '.join(ONNX_SUFFIXES)}) and TensorRT engine files "
        f"({', '.join(ENGINE_SUFFIXES)}) written by vpr-export{checkpoint}"
    )


def canonical_name(backend: str) -> str:
    name = ALIASES.get(backend, backend)
    if name not in BACKEND_ORDER:
        raise InvalidInputError(
            f"unknown backend {backend!r}: choose 'auto' or one of {', '.join(BACKEND_ORDER)} "
            f"(aliases: {', '.join(f'{k}={v}' for k, v in ALIASES.items())})"
        )
    return name


def _probe(name: str) -> str | None:
    """Why ``name`` cannot run on this machine (cheap checks only), or ``None``."""
    if name == "tensorrt":
        from . import cuda_memory
        from .tensorrt_backend import import_tensorrt

        try:
            import_tensorrt()
            cuda_memory.cudart()
        except ImportError as exc:
            return str(exc)
        try:
            if cuda_memory.device_count() < 1:
                return "no CUDA device visible"
        except VprEdgeError as exc:
            return f"no usable CUDA GPU ({exc})"
        return None
    from .onnxruntime_backend import provider_missing_reason

    return provider_missing_reason(name.removeprefix("onnxruntime-"))


def auto_skip_reason(name: str) -> str | None:
    """Why ``auto`` passes over ``name`` although the cheap checks allow it, or ``None``: ONNX
    Runtime's TensorRT provider without TensorRT's library (ONNX Runtime would print an error
    block and retry on CUDA, which ``auto`` tries next anyway). A backend named by the caller
    is always tried."""
    if name != "onnxruntime-tensorrt":
        return None
    from .cuda_libraries import tensorrt_library_found

    if tensorrt_library_found():
        return None
    return ("TensorRT's library (libnvinfer) is not on the loader's path (LD_LIBRARY_PATH, "
            "ldconfig): install TensorRT for this onnxruntime-gpu, or name the backend to try "
            "it anyway")


def backend_report(model_path: str | os.PathLike[str] | None = None) -> list[BackendStatus]:
    """Every backend in :data:`BACKEND_ORDER` with whether it can run here and why not.

    With ``model_path``, backends that cannot run that file type are unavailable too. The
    checks are cheap (imports, provider lists, device count): an available backend can still
    fail when the model is opened (:func:`open_backend` says why).
    """
    kind = model_kind(model_path) if model_path is not None else None
    report = []
    for name in BACKEND_ORDER:
        if kind is not None and name not in BACKENDS_FOR[kind]:
            report.append(BackendStatus(name, False, _wrong_file_type(kind, model_path)))
            continue
        reason = _probe(name)
        report.append(BackendStatus(name, reason is None, reason or ""))
    return report


def _wrong_file_type(kind: str, model_path: str | os.PathLike[str]) -> str:
    """Why a backend that does not run ``kind`` files cannot run ``model_path``."""
    other = "an .onnx model" if kind == "engine" else "a TensorRT engine file (.engine)"
    return f"runs {other}, not {Path(model_path).name}"


def available_backends(model_path: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the backends that can run here (and run ``model_path``'s file type), in
    preference order. :func:`backend_report` gives the reasons for the others."""
    return [s.name for s in backend_report(model_path) if s.available]


def _open(name: str, model_path: str | os.PathLike[str], options: dict[str, Any]) -> Backend:
    if name == "tensorrt":
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(model_path, **options)
    from .onnxruntime_backend import OnnxRuntimeBackend, OnnxRuntimeOptions

    return OnnxRuntimeBackend(
        model_path, target=name.removeprefix("onnxruntime-"), options=OnnxRuntimeOptions(**options)
    )


def _summary(report: list[BackendStatus]) -> str:
    return "; ".join(str(s) for s in report)


def _missing_model(path: Path) -> str:
    """Why ``path``, which is not a file, cannot be a model."""
    if path.is_dir():
        return (f"{path} is a folder, not a model file: give the exported .onnx or .engine "
                "file in it")
    return f"{path}: model file not found"


def open_backend(
    model_path: str | os.PathLike[str], backend: str = "auto", **options: Any
) -> Backend:
    """Open ``model_path`` (``.onnx`` or ``.engine``) on ``backend``.

    ``backend`` is ``"auto"`` (the first of :data:`BACKEND_ORDER` that runs this file here;
    the choice is logged), a name from :data:`BACKEND_ORDER`, or an alias (``"cpu"``,
    ``"cuda"``, ``"trt"``). ``options`` are the chosen backend's settings
    (:class:`~vpr_edge.backends.onnxruntime_backend.OnnxRuntimeOptions` fields for ONNX
    Runtime; ``device_id``, ``max_batch`` for TensorRT); an option no candidate accepts is an
    error, and under ``auto`` each backend gets the options it accepts.

    >>> with open_backend("model.onnx", backend="cpu", intra_op_num_threads=2) as b:
    ...     descriptors = b.run(frames)  # uint8 [N, H, W, 3] -> float32 [N, dim]
    ... # doctest: +SKIP
    """
    path = user_path(model_path)
    if not path.is_file():  # (a folder has no suffix to go by: say what it is first)
        raise ModelFormatError(_missing_model(path))
    kind = model_kind(path)
    if not os.access(path, os.R_OK):
        raise ModelFormatError(f"{path}: no permission to read the model file (owned by uid "
                               f"{path.stat().st_uid}, mode {path.stat().st_mode & 0o777:o}): "
                               "run as a user who may read it, or chmod a+r it")
    candidates = BACKENDS_FOR[kind] if backend == "auto" else (canonical_name(backend),)
    if candidates[0] not in BACKENDS_FOR[kind]:  # (before its options: the real problem)
        raise BackendUnavailableError(_unavailable_message(
            candidates[0], _wrong_file_type(kind, path), path))
    known = frozenset().union(*(accepted_options(c) for c in candidates))
    unknown = sorted(set(options) - known)
    if unknown:
        threads = ("; intra_op_num_threads (vpr-edge --threads) sets ONNX Runtime's CPU "
                   "threads, and a TensorRT engine runs on the GPU without them"
                   if "intra_op_num_threads" in unknown and kind == "engine" else "")
        raise InvalidInputError(
            f"unknown option(s) {', '.join(unknown)} for backend {backend!r}; accepted: "
            f"{', '.join(sorted(known)) or 'none'}{threads}"
        )

    if backend != "auto":
        name = candidates[0]
        status = next(s for s in backend_report(path) if s.name == name)
        if not status.available:
            raise BackendUnavailableError(_unavailable_message(name, status.reason, path))
        try:
            chosen = _open(name, path, options)
        except (BackendUnavailableError, ImportError) as exc:
            raise BackendUnavailableError(
                _unavailable_message(name, _reason(name, exc), path)
            ) from exc
        logger.info("vpr-edge backend: %s on %s (asked for by name) for %s",
                    chosen.name, chosen.device, path.name)
        return chosen

    skipped: list[str] = []
    for name in candidates:
        reason = _probe(name) or auto_skip_reason(name)
        if reason is None:
            accepted = accepted_options(name)
            try:
                chosen = _open(name, path, {k: v for k, v in options.items() if k in accepted})
            except (BackendUnavailableError, ImportError) as exc:
                reason = _reason(name, exc)
            else:
                logger.info(
                    "vpr-edge backend: chose %s on %s (providers: %s) for %s%s",
                    chosen.name, chosen.device, ", ".join(chosen.providers), path.name,
                    f"; skipped {'; '.join(skipped)}" if skipped else "",
                )
                return chosen
        skipped.append(f"{name} ({reason})")
    fix = (". A TensorRT engine runs only with TensorRT on an NVIDIA GPU: install "
           "vpr-edge[tensorrt] there (on Jetson, the TensorRT JetPack ships), or run the .onnx "
           "model vpr-export wrote next to it (vpr-edge[cpu]: ONNX Runtime on the CPU)"
           if kind == "engine" else ". Install vpr-edge[cpu] for ONNX Runtime on the CPU")
    raise BackendUnavailableError(f"no backend can run {path}: " + "; ".join(skipped) + fix)


def _reason(name: str, exc: BaseException) -> str:
    """The exception's text without a leading ``"<name>: "`` (the caller names the backend)."""
    text = str(exc)
    return text[len(name) + 2 :] if text.startswith(f"{name}: ") else text


def _unavailable_message(name: str, reason: str, path: Path) -> str:
    report = [s for s in backend_report(path) if s.name != name]
    usable = [s.name for s in report if s.available]
    others = [s for s in report if not s.available]
    return (
        f"backend {name!r} cannot run {path.name} here: {reason}. "
        "Available for this model (by a quick check of packages and providers): "
        f"{', '.join(usable) if usable else 'none'}"
        + (f" (not available: {_summary(others)})" if others else "")
    )
