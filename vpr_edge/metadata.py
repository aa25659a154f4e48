"""The model metadata schema shared by training, export and the runtime.

One JSON object describes an exported model. It is written into the ONNX file
(``metadata_props``, key :data:`ONNX_METADATA_KEY`) and into the header of a TensorRT engine
file, and it is what the runtime reads to preprocess frames and to refuse a map made with
another model. It is parsed with :mod:`json` only (never ``eval``) and validated field by
field, so a damaged or foreign file gives a clear :class:`~vpr_edge.errors.ModelFormatError`.

The **fingerprint** identifies what makes two descriptors comparable: the weights, the
preprocessing and the output dimension. FP32 and FP16 exports of one checkpoint share it
(their descriptors agree to cosine >= 0.999); a map records it and refuses other models.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import INSTALL_NEWER, ModelFormatError
from .model_checksum import check_onnx_file

#: Key of the JSON blob in ONNX ``metadata_props``.
ONNX_METADATA_KEY = "vpr_edge"
#: Version of this schema. Readers accept this version and older ones they know.
SCHEMA_VERSION = 1

_PRECISIONS = ("fp32", "fp16")
_COLOUR_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class PluginInfo:
    """The fused NetVLAD TensorRT plugin a graph uses (``None`` in metadata when plain ops)."""

    name: str
    version: str
    namespace: str = "vpr_edge"


@dataclass(frozen=True)
class ModelMetadata:
    """Everything the runtime needs to know about an exported model.

    ``input_height``/``input_width`` are the size frames are resized to; the graph takes
    ``uint8 [N, H, W, 3]`` in ``colour_order`` and normalises inside with ``mean``/``std``
    (on 0..1 values). ``dim`` is the output descriptor length: ``num_clusters * local_dim``
    without whitening, the whitening output size with it.
    """

    model_name: str
    backbone: str
    num_clusters: int
    local_dim: int
    dim: int
    input_height: int
    input_width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_sha256: str
    package_version: str
    whitening_dim: int | None = None
    precision: str = "fp32"
    plugin: PluginInfo | None = None
    input_layout: str = "NHWC"
    input_dtype: str = "uint8"
    colour_order: str = "RGB"
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict, hash=False)  # (hashable: the rest)

    def __post_init__(self) -> None:
        problems = []
        if not _positive_int(self.schema_version):
            problems.append(f"schema_version must be a positive integer, got "
                            f"{self.schema_version!r}")
        elif self.schema_version > SCHEMA_VERSION:
            problems.append(
                f"schema_version {self.schema_version} is newer than this vpr-edge reads "
                f"({SCHEMA_VERSION}); {INSTALL_NEWER}"
            )
        for name in ("model_name", "backbone", "package_version"):
            if not isinstance(getattr(self, name), str):
                problems.append(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.plugin is not None and not (isinstance(self.plugin.name, str)
                                            and isinstance(self.plugin.version, str)):
            problems.append(f"plugin name and version must be strings, got {self.plugin!r}")
        for name in ("num_clusters", "local_dim", "dim", "input_height", "input_width"):
            value = getattr(self, name)
            if not _positive_int(value):
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if self.precision not in _PRECISIONS:
            problems.append(f"precision must be one of {_PRECISIONS}, got {self.precision!r}")
        if self.colour_order not in _COLOUR_ORDERS:
            problems.append(
                f"colour_order must be one of {_COLOUR_ORDERS}, got {self.colour_order!r}"
            )
        if self.input_layout != "NHWC" or self.input_dtype != "uint8":
            problems.append(
                f"input must be uint8 NHWC, got {self.input_dtype} {self.input_layout}"
            )
        for name in ("mean", "std"):
            value = getattr(self, name)
            if (not isinstance(value, (tuple, list)) or len(value) != 3
                    or not all(_finite_number(v) for v in value)):
                problems.append(f"{name} must be three finite numbers, got {value!r}")
        if any(v <= 0 for v in self.std if _finite_number(v)):
            problems.append(f"std must be positive, got {self.std!r}")
        if (not isinstance(self.weights_sha256, str) or len(self.weights_sha256) != 64
                or any(c not in "0123456789abcdef" for c in self.weights_sha256)):
            problems.append("weights_sha256 must be a 64-character lower-case hex sha256")
        if not isinstance(self.extra, dict):
            problems.append(f"extra must be a JSON object, got {type(self.extra).__name__}")
        if self.whitening_dim is not None and not _positive_int(self.whitening_dim):
            problems.append(f"whitening_dim must be a positive integer or null, got "
                            f"{self.whitening_dim!r}")
        elif self.whitening_dim is not None and self.whitening_dim != self.dim:
            problems.append(
                f"whitening_dim ({self.whitening_dim}) must equal dim ({self.dim})"
            )
        if self.whitening_dim is None and self.dim != self.num_clusters * self.local_dim:
            problems.append(
                f"without whitening dim must be num_clusters*local_dim = "
                f"{self.num_clusters * self.local_dim}, got {self.dim}"
            )
        if problems:
            raise ModelFormatError("invalid model metadata: " + "; ".join(problems))

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(height, width)`` frames are resized to."""
        return (self.input_height, self.input_width)

    @property
    def fingerprint(self) -> str:
        """sha256 of weights + preprocessing + output dim: equal means comparable descriptors."""
        return model_fingerprint(self.weights_sha256, self.preprocessing(), self.dim)

    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing contract as a plain dict (part of the fingerprint)."""
        return {
            "input_height": self.input_height,
            "input_width": self.input_width,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "colour_order": self.colour_order,
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        data["fingerprint"] = self.fingerprint
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetadata:
        if not isinstance(data, dict):
            raise ModelFormatError(
                f"model metadata must be a JSON object, got {type(data).__name__}"
            )
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        missing = sorted(
            f.name
            for f in fields(cls)
            if f.name not in values and f.default is MISSING and f.default_factory is MISSING
        )
        if missing:
            raise ModelFormatError(
                f"model metadata lacks {', '.join(missing)}: the file was not exported by "
                "vpr-export, or by an incompatible version; re-export it with vpr-export"
            )
        if values.get("plugin") is not None:
            plugin = values["plugin"]
            if not isinstance(plugin, dict) or not {"name", "version"} <= plugin.keys():
                raise ModelFormatError(f"plugin metadata must name name+version, got {plugin!r}")
            keys = ("name", "version", "namespace")
            values["plugin"] = PluginInfo(**{k: plugin[k] for k in keys if k in plugin})
        for name in ("mean", "std"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        try:
            meta = cls(**values)
        except ModelFormatError:
            raise
        except (TypeError, ValueError, AttributeError) as exc:  # fields of the wrong type
            raise ModelFormatError(f"invalid model metadata: {exc}; re-export the model "
                                   "with vpr-export") from exc
        stated = data.get("fingerprint")
        if stated is not None and stated != meta.fingerprint:
            raise ModelFormatError(
                "model metadata fingerprint does not match its fields: the metadata was "
                "edited or damaged; re-export the model"
            )
        return meta

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelMetadata:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ModelFormatError(f"model metadata is not valid JSON: {exc!r:.200}") from exc
        return cls.from_dict(data)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _finite_number(value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int beyond float range
        return False


def model_fingerprint(weights_sha256: str, preprocessing: dict[str, Any], dim: int) -> str:
    """sha256 over the weights hash, the canonical preprocessing JSON and the output dim."""
    payload = json.dumps(
        {"weights_sha256": weights_sha256, "preprocessing": preprocessing, "dim": int(dim)},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def onnx_load_error(path: Any, exc: BaseException) -> ModelFormatError:
    """What to raise when ONNX Runtime cannot load ``path``: our plugin graph (which only
    TensorRT runs), or a damaged / non-ONNX file."""
    text = str(exc).strip() or type(exc).__name__
    if _names_the_plugin(text):
        return ModelFormatError(
            f"{path}: this is a plugin graph (NetVLAD as the vpr_edge::NetVLAD TensorRT "
            "plugin node), which ONNX Runtime cannot run; use the plain NAME.onnx or "
            "NAME.fp16.onnx, or the engine built from it")
    return ModelFormatError(
        f"{path}: not a loadable ONNX model ({text.splitlines()[0][:300]}); the file is "
        "truncated, damaged or not ONNX: export it again with vpr-export")


def _names_the_plugin(text: str) -> bool:
    """Whether ONNX Runtime's load error is about our NetVLAD plugin node."""
    return "vpr_edge" in text and "NetVLAD" in text


def read_onnx_metadata(path: str, *, verify: bool = True) -> ModelMetadata:
    """Read :class:`ModelMetadata` from an ONNX file.

    Uses ``onnxruntime`` (the runtime's own dependency), so it needs no ``onnx`` package. A
    plugin graph (``NAME.plugin.onnx``: NetVLAD as the ``vpr_edge::NetVLAD`` node, which
    ONNX Runtime cannot load) has its metadata read from the file's bytes instead.
    ``verify``: first check the file's checksum (``model_checksum.check_onnx_file``); False
    for a caller that has just checked it.
    """
    from ._optional import require

    ort = require("onnxruntime", extra="cpu", purpose="reading an ONNX model")
    if verify and Path(path).is_file():  # (ONNX Runtime names a missing one)
        check_onnx_file(path)  # bits changed since the export
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        meta = _plugin_graph_metadata(path) if _names_the_plugin(str(exc)) else None
        if meta is None:
            raise onnx_load_error(path, exc) from exc
        return meta
    props = session.get_modelmeta().custom_metadata_map
    if ONNX_METADATA_KEY not in props:
        raise ModelFormatError(
            f"{path}: ONNX model has no '{ONNX_METADATA_KEY}' metadata: it was not exported "
            "by vpr-export; export your checkpoint with `vpr-export model.pt`"
        )
    return ModelMetadata.from_json(props[ONNX_METADATA_KEY])


def _plugin_graph_metadata(path: str) -> ModelMetadata | None:
    """The metadata of a plugin graph, which ONNX Runtime cannot load (its NetVLAD node is
    TensorRT's), read from the file's bytes; None where the file holds no metadata naming
    the plugin (it is then no vpr-export plugin graph)."""
    try:
        text = onnx_metadata_props(Path(path).read_bytes()).get(ONNX_METADATA_KEY)
    except OSError:
        return None
    if text is None:
        return None
    meta = ModelMetadata.from_json(text)
    return meta if meta.plugin is not None else None


#: ``ModelProto.metadata_props`` and, inside each entry, its key and value (protobuf fields)
_METADATA_PROPS, _KEY, _VALUE = 14, 1, 2


def onnx_metadata_props(data: bytes) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` read from its protobuf wire format (the top-level
    fields only: the graph is skipped by its length), with no ONNX or protobuf package.
    Raises :class:`ModelFormatError` where the bytes are no well-formed protobuf message."""
    props = {}
    for number, value in _protobuf_fields(memoryview(data)):
        if number == _METADATA_PROPS and isinstance(value, memoryview):
            entry = {n: v for n, v in _protobuf_fields(value) if isinstance(v, memoryview)}
            try:
                props[bytes(entry.get(_KEY, b"")).decode()] = bytes(
                    entry.get(_VALUE, b"")).decode()
            except UnicodeDecodeError as exc:
                raise ModelFormatError(f"ONNX metadata that is not UTF-8 text ({exc})") from exc
    return props


def _protobuf_fields(view: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """``(field number, value)`` of each field of a protobuf message: an int for a varint or
    fixed-size field, a memoryview of the bytes of a length-delimited one."""
    pos, end = 0, len(view)
    while pos < end:
        tag, pos = _varint(view, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(view, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(view[pos:pos + size], "little"), pos + size
        elif wire == 2:
            size, pos = _varint(view, pos)
            value, pos = view[pos:pos + size], pos + size
        else:
            raise ModelFormatError(f"not an ONNX file: protobuf wire type {wire} at byte {pos}")
        if pos > end:
            raise ModelFormatError("not an ONNX file: truncated (a field runs past its end)")
        yield number, value


def _varint(view: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(view) and shift < 64:
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ModelFormatError("not an ONNX file: truncated or malformed protobuf varint")
