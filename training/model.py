"""``VPRModel``: backbone -> aggregation (NetVLAD, average or GeM pooling) -> optional whitening.

``build_model(config)`` makes one from a :class:`~vpr_edge.training.config.ModelConfig`;
``forward`` takes normalised float ``NCHW`` images and returns L2-normalised descriptors.
:class:`ImageInput` wraps a model so it takes what robots have, ``uint8 NHWC`` frames, and
does cast, scaling, normalisation and the transpose inside the network (it is what the
exported ONNX graph contains).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vpr_edge.errors import InvalidInputError

from .backbones import TruncatedBackbone, build_backbone
from .config import ModelConfig, PreprocessConfig
from .netvlad import NetVLAD
from .whitening import PCAWhitening


class GlobalPooling(nn.Module):
    """Average pooling (``p=1``) or GeM (learnable ``p``) of ``[N, D, H, W]``, then L2."""

    def __init__(self, dim: int, kind: str = "avg", p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.kind = kind
        self.output_dim = dim
        self.eps = eps
        self.p = nn.Parameter(torch.tensor(float(p))) if kind == "gem" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p is None:
            pooled = x.mean(dim=(2, 3))
        else:
            pooled = x.clamp_min(self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)
        return F.normalize(pooled, p=2.0, dim=1)


class VPRModel(nn.Module):
    """A place-recognition network: ``forward(images) -> [N, dim]`` unit-norm descriptors."""

    def __init__(self, config: ModelConfig, backbone: TruncatedBackbone,
                 aggregation: nn.Module, whitening: PCAWhitening | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.aggregation = aggregation
        self.whitening = whitening

    @property
    def dim(self) -> int:
        """Output descriptor length."""
        if self.whitening is not None:
            return self.whitening.dim
        return int(self.aggregation.output_dim)

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.config.preprocess

    def local_features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features ``[N, D, h, w]`` of normalised images."""
        return self.backbone(images)

    def aggregate(self, features: torch.Tensor) -> torch.Tensor:
        """Descriptors from backbone features (aggregation + whitening)."""
        out = self.aggregation(features)
        return out if self.whitening is None else self.whitening(out)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.aggregate(self.backbone(images))

    def set_whitening(self, whitening: PCAWhitening | None) -> None:
        """Attach (or remove) a fitted whitening layer; the config follows."""
        self.whitening = whitening
        self.config = self.config.replace(
            whitening_dim=None if whitening is None else whitening.dim,
            whitening_max_dim=None if whitening is None else whitening.max_dim,
        )

    def set_whitening_dim(self, dim: int) -> None:
        """Select the whitened output size (any size up to the stored components)."""
        if self.whitening is None:
            raise InvalidInputError(
                "this model has no whitening layer: fit one first (`vpr-train whiten "
                "MODEL.pt --images DIR --dim N -o whitened.pt`), or drop the whitening dim")
        self.whitening.select_dim(dim)
        self.config = self.config.replace(whitening_dim=dim)


class ImageInput(nn.Module):
    """``uint8 [N, H, W, 3]`` frames -> ``model``: cast, /255, normalise, NHWC -> NCHW."""

    def __init__(self, model: nn.Module, preprocess: PreprocessConfig) -> None:
        super().__init__()
        self.model = model
        mean = torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1)
        # (x/255 - mean)/std == x * scale + shift, one multiply-add per pixel
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # Cast first: TensorRT accepts uint8 only as a network input feeding a Cast
        x = image.to(torch.float32).permute(0, 3, 1, 2)
        return self.model(x * self.scale + self.shift)


def build_model(config: ModelConfig) -> VPRModel:
    """A model with the config's architecture (pretrained backbone if the config says so).

    A whitening layer is created (empty) when ``config.whitening_dim`` is set, so a
    checkpoint's state dict can be loaded into it.
    """
    backbone = build_backbone(config.backbone)
    channels = backbone.out_channels
    if config.aggregation == "netvlad":
        nv = config.netvlad
        aggregation: nn.Module = NetVLAD(nv.num_clusters, channels,
                                         normalize_input=nv.normalize_input, eps=nv.eps)
    else:
        aggregation = GlobalPooling(channels, config.aggregation, p=config.gem_p)
    whitening = None
    if config.whitening_dim is not None:
        whitening = PCAWhitening(int(aggregation.output_dim), config.whitening_max_dim,
                                 config.whitening_dim)
    return VPRModel(config, backbone, aggregation, whitening)


def images_to_tensor(batch, preprocess: PreprocessConfig) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` numpy/tensor -> normalised float ``[N, 3, H, W]`` tensor."""
    x = torch.as_tensor(batch)
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] != 3:
        raise InvalidInputError(f"expected uint8 [N, H, W, 3] images, got {x.dtype} "
                                f"{tuple(x.shape)}")
    mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
    return (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
