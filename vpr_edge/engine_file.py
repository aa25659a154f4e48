"""The ``.engine`` file: a small JSON header in front of a serialized TensorRT engine.

Layout::

    b"VPRENGN1"                      8 bytes, magic + format version
    uint32 little-endian             length of the header in bytes
    header                           UTF-8 JSON (see EngineHeader.to_dict)
    engine                           the bytes TensorRT serialized

A TensorRT engine only runs with the TensorRT version (or, built version-compatible, a later
one) and (for ``tensorrt``) the GPU architecture it was built for, and a mismatch fails deep
inside TensorRT, or worse, crashes.
The header lets the runtime refuse such a file first, naming the field that differs. It also
carries the model metadata (:class:`~vpr_edge.metadata.ModelMetadata`) so the runtime knows
the input size and the model fingerprint without touching the engine.

The header carries its own checksum, ``header_sha256``: the sha256 of its canonical JSON
without that key (the rule of a map manifest's ``manifest_sha256``, fixed for all format
versions), so that a changed byte in it (a target GPU, the input's mean) is refused, not
believed. Engines written before it lack it and are read unchecked (older readers ignore
it); one that lacks it but has a field those never wrote (``header_sha256`` with a changed
byte) is refused as damaged.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._optional import install_command
from .atomic_file import atomic_write
from .errors import INSTALL_NEWER, EngineMismatchError, ModelFormatError
from .index.map_format import canonical_json
from .metadata import ModelMetadata

MAGIC = b"VPRENGN1"
FORMAT_NAME = "vpr-edge-engine"
FORMAT_VERSION = 1
_MAX_HEADER = 1 << 20
TENSORRT_MODULES = ("tensorrt", "tensorrt_rtx")
#: The compute capabilities TensorRT-RTX 1.7 targets (its ``ComputeCapability`` values). Its
#: runtime refuses an engine on any GPU not among the engine's own targets, and cannot target
#: data-centre Hopper or Blackwell (9.0, 10.x) or Jetson at all: on an H200 (9.0) it said
#: "TensorRT-RTX does not support this compute capability".
RTX_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
#: The oldest GPU architecture a TensorRT-RTX engine of our graphs can target (Turing, 7.5,
#: has no FP32 GEMM in TensorRT-RTX, which the NetVLAD layer needs).
MIN_RTX_CAPABILITY = (8, 0)
HEADER_SHA256 = "header_sha256"
#: the fields of the headers written before they carried HEADER_SHA256
UNCHECKED_FIELDS = frozenset({"format", "format_version", "model", "tensorrt_module",
                              "tensorrt_version", "compute_capability", "device_name",
                              "builder", "engine_sha256", "engine_size"})


@dataclass(frozen=True)
class EngineHeader:
    """What an engine was built from, with what, and for which GPU.

    Attributes:
        model: the exported model's metadata (same as in its ONNX file).
        tensorrt_module: ``"tensorrt"`` or ``"tensorrt_rtx"`` (engines are not interchangeable).
        tensorrt_version: the builder's version; the runtime must have the same one.
        compute_capability: ``"8.7"`` etc. for engines tied to one GPU architecture, or None
            for portable engines (TensorRT-RTX compiles for the device when it loads them).
        device_name: the GPU the engine was built on (informational).
        builder: builder settings (strongly_typed, profile, workspace, plugin, and
            ``version_compatible: true`` for engines built with ``--version-compatible``).
        engine_sha256, engine_size: checksum and size of the engine bytes.
    """

    model: ModelMetadata
    tensorrt_module: str
    tensorrt_version: str
    compute_capability: str | None
    engine_sha256: str
    engine_size: int
    device_name: str | None = None
    builder: dict[str, Any] = field(default_factory=dict, hash=False)  # (hashable: the rest)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME, "format_version": self.format_version,
            "model": self.model.to_dict(), "tensorrt_module": self.tensorrt_module,
            "tensorrt_version": self.tensorrt_version,
            "compute_capability": self.compute_capability, "device_name": self.device_name,
            "builder": self.builder, "engine_sha256": self.engine_sha256,
            "engine_size": self.engine_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "engine header") -> EngineHeader:
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ModelFormatError(f"{where}: not a vpr-edge engine header")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ModelFormatError(f"{where}: engine header has no valid format_version "
                                   f"({version!r}); the file is damaged: rebuild the engine")
        if version > FORMAT_VERSION:
            raise ModelFormatError(
                f"{where}: engine format version {version!r} is newer than this vpr-edge "
                f"reads ({FORMAT_VERSION}); {INSTALL_NEWER}"
            )
        try:
            return cls(
                model=ModelMetadata.from_dict(data["model"]),
                tensorrt_module=str(data["tensorrt_module"]),
                tensorrt_version=str(data["tensorrt_version"]),
                compute_capability=_stated_capability(data.get("compute_capability")),
                engine_sha256=str(data["engine_sha256"]),
                engine_size=_size(data["engine_size"]),
                device_name=data.get("device_name"),
                builder=dict(data.get("builder") or {}),
                format_version=version,
            )
        except KeyError as exc:
            raise ModelFormatError(f"{where}: engine header lacks {exc}") from exc
        except ModelFormatError as exc:  # the model metadata's own, which names no file
            if str(exc).startswith(str(where)):
                raise
            raise ModelFormatError(f"{where}: engine header: {exc}") from exc
        except (TypeError, ValueError, OverflowError) as exc:  # a field of the wrong type
            raise ModelFormatError(f"{where}: engine header has a malformed field ({exc}); "
                                   "the file is damaged: rebuild or re-wrap the engine") from exc


def _stated_capability(value: Any) -> str | None:
    """A header's compute capability: None (several or any GPU) or ``"major.minor"``."""
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"\d+\.\d+", value):
        raise ValueError(f"compute_capability {value!r} is not 'major.minor'")
    return value


def _size(value: Any) -> int:
    size = int(value)
    if isinstance(value, bool) or size < 0 or size != value:
        raise ValueError(f"engine_size {value!r} is not a byte count")
    return size


def engine_header_for(model: ModelMetadata, engine: bytes, *, tensorrt_module: str,
                      tensorrt_version: str, compute_capability: str | None,
                      device_name: str | None = None,
                      builder: dict[str, Any] | None = None) -> EngineHeader:
    """A header describing ``engine`` (computes its checksum and size)."""
    if tensorrt_module not in TENSORRT_MODULES:
        raise ModelFormatError(f"tensorrt_module must be one of {TENSORRT_MODULES}")
    return EngineHeader(model=model, tensorrt_module=tensorrt_module,
                        tensorrt_version=tensorrt_version,
                        compute_capability=compute_capability,
                        engine_sha256=hashlib.sha256(engine).hexdigest(),
                        engine_size=len(engine), device_name=device_name,
                        builder=dict(builder or {}))


def write_engine_file(path: str | os.PathLike, header: EngineHeader, engine: bytes) -> Path:
    """Write header + engine atomically (temp file, fsync, rename)."""
    if header.engine_size != len(engine) or \
            header.engine_sha256 != hashlib.sha256(engine).hexdigest():
        raise ModelFormatError("engine header does not describe these engine bytes")
    fields = header.to_dict()
    blob = json.dumps({**fields, HEADER_SHA256: _header_digest(fields)},
                      sort_keys=True).encode("utf-8")

    def write(fh) -> None:
        fh.write(MAGIC + struct.pack("<I", len(blob)) + blob)
        fh.write(engine)

    return atomic_write(path, write)


def _header_digest(fields: dict[str, Any]) -> str:
    """The header's checksum (``header_sha256``) of its other ``fields``."""
    return hashlib.sha256(canonical_json(fields)).hexdigest()


#: how to replace a damaged engine file
REBUILD = ("copy it again, or rebuild it on this machine: `vpr-edge engine build "
           "MODEL.fp16.onnx`")


def _read_header(fh, path: Path) -> tuple[EngineHeader, int]:
    prefix = fh.read(len(MAGIC) + 4)
    if len(prefix) < len(MAGIC) + 4 or not prefix.startswith(MAGIC):
        raise ModelFormatError(
            f"{path}: not a vpr-edge engine file (no {MAGIC!r} header). Engines built by "
            "trtexec or polygraphy lack the header the runtime needs to check them; build "
            "with `vpr-edge engine build MODEL.fp16.onnx` (or `vpr-export CHECKPOINT --engine`)"
        )
    (length,) = struct.unpack("<I", prefix[len(MAGIC):])
    if length > _MAX_HEADER:
        raise ModelFormatError(f"{path}: engine header of {length} bytes: the file is "
                               f"damaged; {REBUILD}")
    blob = fh.read(length)
    if len(blob) != length:
        raise ModelFormatError(f"{path}: truncated engine header; {REBUILD}")
    try:
        data = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFormatError(f"{path}: engine header is not JSON ({exc!r:.200})") from exc
    if isinstance(data, dict):
        stated = data.pop(HEADER_SHA256, None)
        damaged = (not data.keys() <= UNCHECKED_FIELDS if stated is None
                   else stated != _header_digest(data))
        if damaged:
            raise ModelFormatError(f"{path}: engine header fails its checksum: the file is "
                                   f"damaged; {REBUILD}")
    return EngineHeader.from_dict(data, str(path)), len(prefix) + length


def read_engine_header(path: str | os.PathLike) -> EngineHeader:
    """Read only the header (the engine bytes are not loaded)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return _read_header(fh, path)[0]
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read engine file ({exc})") from exc


def read_engine_file(path: str | os.PathLike) -> tuple[EngineHeader, bytes]:
    """Header and engine bytes, checked against the header's size and sha256."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            header, _ = _read_header(fh, path)
            engine = fh.read()
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read engine file ({exc})") from exc
    if len(engine) != header.engine_size:
        raise ModelFormatError(
            f"{path}: engine is {len(engine)} bytes, the header says {header.engine_size}: "
            f"the file is truncated or damaged; {REBUILD}"
        )
    if hashlib.sha256(engine).hexdigest() != header.engine_sha256:
        raise ModelFormatError(f"{path}: engine bytes fail their checksum: the file is "
                               f"damaged; {REBUILD}")
    return header, engine


def _capability_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return f"{value // 10}.{value % 10}"
    try:
        major, minor = value
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"compute capability {value!r} is not (major, minor), "
                               "'major.minor' or an int such as 87") from exc
    return f"{major}.{minor}"


def _capability_targets(header: EngineHeader) -> list[tuple[int, ...]]:
    """The compute capabilities a multi-architecture engine was built for (its builder's
    ``compute_capabilities``), as number tuples; [] when it names none."""
    listed = header.builder.get("compute_capabilities")
    if not isinstance(listed, list):
        return []
    parsed = [_version_numbers(text) for text in listed if isinstance(text, str)]
    return [numbers for numbers in parsed if numbers]


def _version_numbers(text: str) -> tuple[int, ...] | None:
    """``"10.3.0.26"`` -> ``(10, 3, 0, 26)``; None when it does not start with a number."""
    numbers = []
    for part in str(text).split("."):
        digits = "".join(itertools.takewhile(str.isdigit, part))
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers) or None


#: The later major versions of TensorRT that run a version-compatible engine of a major
#: version (NVIDIA's documentation: 8 on 9 and 10, 9 on 10, 10 on 11; no other pair).
LATER_MAJORS: dict[int, tuple[int, ...]] = {8: (9, 10), 9: (10,), 10: (11,)}


def is_version_compatible(header: EngineHeader) -> bool:
    """Built with TensorRT's ``VERSION_COMPATIBLE`` flag (``vpr-export --version-compatible``):
    such an engine runs on the TensorRT it was built with and on later ones (across major
    versions as :data:`LATER_MAJORS` says), and it is the only kind the lean runtime
    (``tensorrt_lean``) runs."""
    return header.builder.get("version_compatible") is True


def check_engine_compatible(header: EngineHeader, *, tensorrt_module: str,
                            tensorrt_version: str, compute_capability: Any) -> None:
    """Refuse an engine this machine cannot run, naming the field, both values and the fix.

    An engine runs on the TensorRT module and version it was built with, except that a
    version-compatible engine (:func:`is_version_compatible`) from full TensorRT also runs on
    any later version of it (across major versions only as :data:`LATER_MAJORS` says) and on
    the lean runtime (``tensorrt_lean``) of the version it was built with (NVIDIA: a lean
    runtime runs only its own version's plans; later versions load the lean runtime the
    plan embeds through the full or the dispatch runtime). Engines tied to a GPU architecture
    need that compute capability."""
    fix = ("rebuild the engine on this machine from the exported ONNX: `vpr-edge engine build "
           "MODEL.fp16.onnx` (no torch needed), or `vpr-export CHECKPOINT --engine`")
    flexible = is_version_compatible(header)
    lean_runs_it = header.tensorrt_module == "tensorrt" and tensorrt_module == "tensorrt_lean"
    if header.tensorrt_module != tensorrt_module and not lean_runs_it:
        raise EngineMismatchError(
            f"tensorrt_module: the engine was built with {header.tensorrt_module}, this "
            f"machine runs {tensorrt_module}; {fix}"
        )
    if lean_runs_it and not flexible:
        raise EngineMismatchError(
            "tensorrt_module: this machine has TensorRT's lean runtime (tensorrt_lean), which "
            "runs only version-compatible engines, and this engine was built without "
            "--version-compatible; rebuild it with `vpr-export CHECKPOINT --engine "
            "--version-compatible`, or install full TensorRT here (the vpr-edge[tensorrt] "
            f"extra: {install_command('tensorrt')}; on Jetson, the TensorRT JetPack ships)"
        )
    if lean_runs_it and _version_numbers(header.tensorrt_version) != _version_numbers(
            tensorrt_version):
        raise EngineMismatchError(
            f"tensorrt_version: TensorRT's lean runtime (tensorrt_lean) runs only "
            f"version-compatible engines of its own version; this one was built with "
            f"{header.tensorrt_module} {header.tensorrt_version}, this machine has "
            f"tensorrt_lean {tensorrt_version}; install tensorrt_lean "
            f"{header.tensorrt_version} here, or full TensorRT {tensorrt_version} or later "
            f"(the vpr-edge[tensorrt] extra: {install_command('tensorrt')}), which runs it; "
            f"or {fix}"
        )
    if flexible:
        built, here = _version_numbers(header.tensorrt_version), _version_numbers(tensorrt_version)
        if built is None or here is None or here < built:
            raise EngineMismatchError(
                f"tensorrt_version: the engine was built version-compatible with "
                f"{header.tensorrt_module} {header.tensorrt_version}, which runs on that "
                f"version or a later one; this machine has {tensorrt_module} "
                f"{tensorrt_version}; upgrade TensorRT here, or {fix}"
            )
        if here[0] != built[0] and here[0] not in LATER_MAJORS.get(built[0], ()):
            raise EngineMismatchError(
                f"tensorrt_version: the engine was built version-compatible with "
                f"{header.tensorrt_module} {header.tensorrt_version}, and TensorRT runs such "
                f"engines on a later major version only from 8 on 9 or 10, 9 on 10 and 10 on 11; "
                f"this machine has {tensorrt_module} {tensorrt_version}; {fix}"
            )
    elif str(header.tensorrt_version) != str(tensorrt_version):
        raise EngineMismatchError(
            f"tensorrt_version: the engine was built with {header.tensorrt_module} "
            f"{header.tensorrt_version}, this machine has {tensorrt_version}; {fix} (or build "
            "it with --version-compatible to run it on later TensorRT versions)"
        )
    built_for = _capability_text(header.compute_capability)
    here = _capability_text(compute_capability)
    if built_for is not None and here is not None and built_for != here:
        raise EngineMismatchError(
            f"compute_capability: the engine was built for a GPU of compute capability "
            f"{built_for} ({header.device_name or 'unknown GPU'}), this GPU is {here}; {fix}"
        )
    targets = _capability_targets(header)
    gpu = None if here is None else _version_numbers(here)
    if built_for is None and targets and gpu is not None and gpu not in targets:
        # a TensorRT-RTX engine for several architectures runs on those alone (on an H200,
        # 9.0, an engine for 8.0, 8.6, 8.9 and 12.0 was refused by TensorRT-RTX's runtime)
        listed = ", ".join(header.builder["compute_capabilities"])
        if header.tensorrt_module == "tensorrt_rtx" and (here not in RTX_CAPABILITIES
                                                         or gpu < MIN_RTX_CAPABILITY):
            raise EngineMismatchError(
                f"compute_capability: this GPU is {here}, and TensorRT-RTX engines of this "
                f"model do not run on GPUs of compute capability {here} (TensorRT-RTX runs on "
                f"{', '.join(RTX_CAPABILITIES)}: RTX and A100-class GPUs, not H100/H200, "
                "B200/B300 or Jetson; and on those before 8.0 without the FP32 matrix products "
                "NetVLAD needs); "
                "run the exported .onnx on ONNX Runtime (--backend onnxruntime-cuda), or build "
                "the engine with full TensorRT on this machine: vpr-edge engine build "
                "MODEL.fp16.onnx --tensorrt-module tensorrt"
            )
        raise EngineMismatchError(
            f"compute_capability: the engine was built for GPUs of compute capability "
            f"{listed}, this GPU is {here}; rebuild it for this GPU: `vpr-edge engine build "
            f"MODEL.fp16.onnx --compute-capability {here}` (or `vpr-export CHECKPOINT --engine "
            f"--compute-capability {here}`)"
        )
