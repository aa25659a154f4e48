"""Inference backends: one exported model in, ``float32 [N, dim]`` descriptors out.

>>> from vpr_edge.backends import open_backend, available_backends, BACKEND_ORDER
>>> backend = open_backend("model.onnx")                 # doctest: +SKIP
>>> backend.name, backend.device, backend.providers     # doctest: +SKIP
('onnxruntime-cpu', 'cpu', ('CPUExecutionProvider',))

Nothing heavy is imported here: ONNX Runtime, TensorRT and cuda-python are imported when a
backend is probed or opened.
"""

from .base import Backend
from .select import (
    BACKEND_ORDER,
    BackendStatus,
    available_backends,
    backend_report,
    open_backend,
)

__all__ = [
    "BACKEND_ORDER",
    "Backend",
    "BackendStatus",
    "available_backends",
    "backend_report",
    "open_backend",
]
