"""What this machine offers vpr-edge: each backend and why it cannot run, the order ``auto``
tries them in, and the versions of the libraries the runtime uses.

For bringing up a robot (``vpr-edge backends [MODEL]``): "why does auto run on the CPU?" is
answered by one command instead of by reading stack traces. The checks are the cheap ones
:func:`~vpr_edge.backends.select.backend_report` makes (imports, provider lists, device
count); nothing loads a model.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import sys
from typing import Any

from .select import auto_skip_reason, backend_report

#: Each library the runtime may use: (label, pip distributions that provide it, module to
#: import for its version when no distribution says: JetPack's TensorRT has no pip metadata).
LIBRARIES: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("numpy", ("numpy",), None),
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu"), None),
    ("hnswlib", ("hnswlib",), None),
    ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"), "tensorrt"),
    ("tensorrt_lean", ("tensorrt-lean", "tensorrt-lean-cu12", "tensorrt-lean-cu13"),
     "tensorrt_lean"),
    ("tensorrt_rtx", ("tensorrt-rtx", "tensorrt-rtx-cu12", "tensorrt-rtx-cu13"), "tensorrt_rtx"),
    ("cuda-python", ("cuda-python", "cuda-bindings"), None),
    ("opencv", ("opencv-python-headless", "opencv-python", "opencv-contrib-python"), None),
    ("pillow", ("pillow",), None),
    ("rosbags", ("rosbags",), None),
)


def library_version(distributions: tuple[str, ...], module: str | None) -> str | None:
    """The installed version: from the first distribution installed, else from ``module``'s
    ``__version__`` (imported), else None."""
    found = []
    for name in distributions:
        try:
            found.append(f"{importlib.metadata.version(name)} ({name})")
        except importlib.metadata.PackageNotFoundError:
            continue
    if found:
        return ", ".join(found)  # two onnxruntime distributions at once: both show
    if module is not None:
        try:
            return f"{importlib.import_module(module).__version__} (no pip metadata)"
        except Exception:  # not installed, or a broken install: reported as absent
            return None
    return None


def onnxruntime_providers() -> list[str] | None:
    """ONNX Runtime's execution providers, or None without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return list(onnxruntime.get_available_providers())


def environment_report(model_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Backends (available, or why not; what ``auto`` passes over), ``auto``'s order, the
    libraries' versions and the machine; with ``model_path``, for that file's type."""
    backends, auto = [], []
    for status in backend_report(model_path):
        skip = auto_skip_reason(status.name) if status.available else None
        backends.append({"backend": status.name, "available": status.available,
                         "auto": status.available and skip is None,
                         "why not": status.reason or (f"auto skips it: {skip}" if skip else "")})
        if status.available and skip is None:
            auto.append(status.name)
    from ..images import resizer_name

    return {
        "model": None if model_path is None else os.fspath(model_path),
        "backends": backends,
        "auto_order": auto,
        "libraries": {label: library_version(dists, module)
                      for label, dists, module in LIBRARIES},
        "onnxruntime_providers": onnxruntime_providers(),
        "resizer": resizer_name(),
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
    }
