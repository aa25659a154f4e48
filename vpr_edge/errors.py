"""Exception types raised by vpr-edge.

Every error the library raises on purpose is a :class:`VprEdgeError`, so robot code can catch
one type. The subclasses say what went wrong; each also derives from the closest built-in
exception (``ValueError``, ``ImportError``, ``RuntimeError``) so generic handlers still work.
Messages name the problem and the fix.
"""

from __future__ import annotations

import errno

#: how to read a file a later vpr-edge wrote (vpr-edge is installed from a checkout, not PyPI)
INSTALL_NEWER = ("install a newer vpr-edge (in an updated checkout: pip install -U '.[cpu]' "
                 "or '.[gpu]')")


class VprEdgeError(Exception):
    """Base class of every error vpr-edge raises on purpose."""


class InvalidInputError(VprEdgeError, ValueError):
    """A frame, descriptor, argument or dataset that the library cannot use (wrong dtype,
    shape, NaN, empty, unknown id, ...)."""


class ImageDecodeError(InvalidInputError):
    """An image file or buffer that cannot be decoded (missing, truncated, not an image)."""


class MissingDependencyError(VprEdgeError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ModelFormatError(VprEdgeError, ValueError):
    """A checkpoint, ONNX model or engine file that is not ours, is damaged, or carries
    metadata this version cannot read."""


class EngineMismatchError(ModelFormatError):
    """A TensorRT engine built for another TensorRT version or GPU."""


class BackendUnavailableError(VprEdgeError, RuntimeError):
    """A backend the user asked for by name cannot run here; the message lists what can."""


class MapError(VprEdgeError):
    """A problem with a map directory."""


class MapCorruptError(MapError, ValueError):
    """A map file is truncated, damaged, or disagrees with the manifest."""


class ModelMismatchError(MapError, ValueError):
    """A map made with another model: descriptors from two models are not comparable."""


class MapVersionError(MapError, ValueError):
    """A map written by a newer vpr-edge (a format version this one cannot read): upgrade
    vpr-edge. Kept apart from :class:`MapCorruptError` so that code which discards damaged maps
    never discards a good map it merely cannot read yet."""


class OutOfMemoryError(VprEdgeError, MemoryError):
    """Not enough memory (or address space, under ``ulimit -v``) for a map's arrays; the
    message says what needed it and how much. Nothing was changed, on disk or in memory. Kept
    apart from :class:`MapCorruptError`: a map that does not fit is not damaged."""


#: What the C++ libraries say when an allocation fails (hnswlib, ONNX Runtime's arena, std).
OUT_OF_MEMORY_WORDS = ("not enough memory", "failed to allocate", "bad_alloc", "out of memory",
                       "outofmemory")


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory (or address space) ran out: a MemoryError, ENOMEM from a
    read or a memory map, or a library's own exception with :data:`OUT_OF_MEMORY_WORDS`."""
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOMEM
    text = str(exc).lower()
    return any(words in text for words in OUT_OF_MEMORY_WORDS)


class InferenceError(VprEdgeError, RuntimeError):
    """A backend ran but produced an unusable result (NaN/inf descriptors, a failed
    TensorRT enqueue): a broken engine, an FP16 overflow, or a GPU fault."""


class CudaError(VprEdgeError, RuntimeError):
    """A CUDA runtime call failed; the message carries the CUDA error name and text.

    ``code`` is the numeric ``cudaError_t`` and ``error_name`` its name (``cudaErrorNoDevice``).
    """

    def __init__(self, message: str, code: int | None = None, error_name: str | None = None):
        super().__init__(message)
        self.code = code
        self.error_name = error_name
