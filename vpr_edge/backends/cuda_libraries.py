"""The NVIDIA libraries ONNX Runtime's GPU providers need: CUDA and cuDNN, loaded once per
process, and whether TensorRT's can be found.

onnxruntime-gpu's CUDA provider needs ``libcudart``, ``libcublas``, ``libcudnn``... at session
creation. Installed from pip (``pip install 'onnxruntime-gpu[cuda,cudnn]'``, or alongside a
CUDA build of torch) they live under ``site-packages/nvidia/``, where the dynamic loader does
not look: without ``LD_LIBRARY_PATH`` the provider fails to load and ONNX Runtime falls back to
the CPU (which the backend then refuses). ``onnxruntime.preload_dlls()`` (onnxruntime-gpu
>= 1.21) loads them from there, or from the default paths (JetPack, ``/usr/local/cuda``);
this module calls it once, before the first GPU session, and keeps what it printed about
libraries it could not load for the error message.

The TensorRT provider is listed by every onnxruntime-gpu, but it needs TensorRT's own library
(``libnvinfer``); without it ONNX Runtime prints a red "EP Error" block and retries on CUDA.
:func:`tensorrt_library_found` lets ``backend="auto"`` skip that provider quietly.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import io
import logging
import os
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_done: list[str] | None = None


def preload_cuda_libraries(ort: Any) -> list[str]:
    """Call ``ort.preload_dlls()`` once per process (nothing when this onnxruntime lacks it);
    returns the lines it printed (libraries it could not load), also on later calls."""
    global _done
    with _lock:
        if _done is not None:
            return _done
        preload = getattr(ort, "preload_dlls", None)
        if preload is None:
            _done = []
            return _done
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                preload()
        except Exception as exc:  # a broken CUDA install: the session then says more
            printed.write(f"onnxruntime.preload_dlls() failed: {exc}\n")
        _done = [line.strip() for line in printed.getvalue().splitlines() if line.strip()]
        if _done:
            logger.info("loading CUDA libraries for ONNX Runtime: %s", " | ".join(_done))
        return _done


def tensorrt_library_found() -> bool:
    """Whether the dynamic loader can find TensorRT's ``libnvinfer``: already loaded in this
    process (``import tensorrt`` loads it), in a folder of ``LD_LIBRARY_PATH``, or in the
    loader's cache (``ldconfig -p``: system installs, JetPack)."""
    try:
        if "libnvinfer.so" in Path("/proc/self/maps").read_text():
            return True
    except OSError:
        pass
    for folder in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep):
        if folder and any(Path(folder).glob("libnvinfer.so*")):
            return True
    return ctypes.util.find_library("nvinfer") is not None
