"""vpr-edge: NetVLAD visual place recognition for robots.

The runtime package. It imports numpy (and, when used, onnxruntime, hnswlib and the optional
GPU/ROS/OpenCV modules) but never torch: training lives in :mod:`vpr_edge.training` and export
in :mod:`vpr_edge.export`, which are always installed but import their dependencies (torch,
onnx: the ``train`` and ``export`` extras) only when used.
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    BackendUnavailableError,
    CudaError,
    EngineMismatchError,
    ImageDecodeError,
    InferenceError,
    InvalidInputError,
    MapCorruptError,
    MapError,
    MapVersionError,
    MissingDependencyError,
    ModelFormatError,
    ModelMismatchError,
    OutOfMemoryError,
    VprEdgeError,
)
from .metadata import ModelMetadata

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from .index import IndexSettings, PlaceIndex, PlaceMatch, PlaceRecord
    from .localizer import Localizer
    from .loop_closure import LoopClosure, LoopClosureConfig, LoopClosureDetector

_LAZY = {
    "Localizer": ("vpr_edge.localizer", "Localizer"),
    "LoopClosureDetector": ("vpr_edge.loop_closure", "LoopClosureDetector"),
    "LoopClosureConfig": ("vpr_edge.loop_closure", "LoopClosureConfig"),
    "LoopClosure": ("vpr_edge.loop_closure", "LoopClosure"),
    "PlaceIndex": ("vpr_edge.index", "PlaceIndex"),
    "IndexSettings": ("vpr_edge.index", "IndexSettings"),
    "PlaceMatch": ("vpr_edge.index", "PlaceMatch"),
    "PlaceRecord": ("vpr_edge.index", "PlaceRecord"),
}


def __getattr__(name: str) -> Any:
    """``from vpr_edge import Localizer`` without importing hnswlib/onnxruntime up front."""
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'vpr_edge' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The lazy names too (tab completion, ``help(vpr_edge)``)."""
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__",
    "IndexSettings",
    "Localizer",
    "LoopClosure",
    "LoopClosureConfig",
    "LoopClosureDetector",
    "PlaceIndex",
    "PlaceMatch",
    "PlaceRecord",
    "BackendUnavailableError",
    "CudaError",
    "EngineMismatchError",
    "ImageDecodeError",
    "InferenceError",
    "InvalidInputError",
    "MapCorruptError",
    "MapError",
    "MapVersionError",
    "MissingDependencyError",
    "ModelFormatError",
    "ModelMetadata",
    "ModelMismatchError",
    "OutOfMemoryError",
    "VprEdgeError",
]
