"""vpr-edge: NetVLAD visual place recognition for robots.

The runtime package. It imports numpy (and, when used, onnxruntime, hnswlib and the optional
GPU/ROS/OpenCV modules) but never torch: training lives in :mod:`vpr_edge.training` and export
in :mod:`vpr_edge.export`, both installed only with their extras.
"""

from ._version import __version__
from .errors import (
    BackendUnavailableError,
    EngineMismatchError,
    ImageDecodeError,
    InvalidInputError,
    MapCorruptError,
    MapError,
    MapVersionError,
    MissingDependencyError,
    ModelFormatError,
    ModelMismatchError,
    VprEdgeError,
)
from .metadata import ModelMetadata

__all__ = [
    "__version__",
    "BackendUnavailableError",
    "EngineMismatchError",
    "ImageDecodeError",
    "InvalidInputError",
    "MapCorruptError",
    "MapError",
    "MapVersionError",
    "MissingDependencyError",
    "ModelFormatError",
    "ModelMetadata",
    "ModelMismatchError",
    "VprEdgeError",
]
