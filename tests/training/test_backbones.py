from __future__ import annotations

import numpy as np
import pytest
import torch

from vpr_edge.errors import InvalidInputError
from vpr_edge.training.backbones import _lite0_timm_key, build_backbone
from vpr_edge.training.config import LITE_MEAN, LITE_STD, BackboneConfig


@pytest.mark.parametrize("name, channels", [
    ("efficientnet_lite0", 112), ("resnet18", 256), ("resnet50", 1024), ("vgg16", 512),
    ("mobilenetv3_large_100", 112),
])
def test_cut_at_stride_16(name: str, channels: int) -> None:
    backbone = build_backbone(BackboneConfig(name=name, pretrained=False, trainable_stages=1))
    assert backbone.out_channels == channels and backbone.stride == 16
    with torch.no_grad():
        out = backbone.eval()(torch.zeros(1, 3, 64, 96))
    assert out.shape == (1, channels, 4, 6)


def test_nothing_after_the_cut_is_built_or_run() -> None:
    backbone = build_backbone(BackboneConfig(pretrained=False))
    names = {n for n, _ in backbone.named_modules()}
    assert not any("conv_head" in n or "classifier" in n for n in names)
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in backbone.stages]
    backbone(torch.zeros(1, 3, 32, 32))
    assert len(calls) == len(backbone.stages) == 6  # stem + 5 block stages of 7
    for h in hooks:
        h.remove()
    # stride 32 keeps the last two block stages too
    deeper = build_backbone(BackboneConfig(pretrained=False, stride=32))
    assert len(deeper.stages) == 8 and deeper.out_channels == 320


def test_vgg16_is_cut_at_conv5_3_before_relu() -> None:
    backbone = build_backbone(BackboneConfig(name="vgg16", pretrained=False))
    last = list(backbone.stages[-1])[-1]
    assert isinstance(last, torch.nn.Conv2d) and last.out_channels == 512
    out = backbone.eval()(torch.randn(1, 3, 32, 32))
    assert (out < 0).any(), "conv5_3 without ReLU has negative responses"


def test_trainable_stages_freeze_the_rest_including_batchnorm() -> None:
    backbone = build_backbone(BackboneConfig(pretrained=False, trainable_stages=2))
    stages = list(backbone.stages)
    assert all(not p.requires_grad for s in stages[:-2] for p in s.parameters())
    assert all(p.requires_grad for s in stages[-2:] for p in s.parameters())
    backbone.train()
    frozen_bn = [m for s in stages[:-2] for m in s.modules()
                 if isinstance(m, torch.nn.BatchNorm2d)]
    assert frozen_bn and all(not m.training for m in frozen_bn)
    assert any(m.training for m in stages[-1].modules() if isinstance(m, torch.nn.BatchNorm2d))
    none = build_backbone(BackboneConfig(pretrained=False, trainable_stages=0))
    assert not any(p.requires_grad for p in none.parameters())


def test_unknown_backbone_or_stride_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="unknown backbone"):
        BackboneConfig(name="alexnet")
    with pytest.raises(InvalidInputError, match="available strides"):
        build_backbone(BackboneConfig(name="vgg16", pretrained=False, stride=32))


def test_lite0_key_renaming() -> None:
    assert _lite0_timm_key("_conv_stem.weight") == "conv_stem.weight"
    assert _lite0_timm_key("_bn0.running_mean") == "bn1.running_mean"
    assert _lite0_timm_key("_blocks.0._project_conv.weight") == "blocks.0.0.conv_pw.weight"
    assert _lite0_timm_key("_blocks.1._expand_conv.weight") == "blocks.1.0.conv_pw.weight"
    assert _lite0_timm_key("_blocks.4._bn1.bias") == "blocks.2.1.bn2.bias"
    assert _lite0_timm_key("_blocks.5._bn0.weight") == "blocks.3.0.bn1.weight"
    assert _lite0_timm_key("_blocks.15._project_conv.weight") == "blocks.6.0.conv_pwl.weight"
    assert _lite0_timm_key("_fc.bias") == "classifier.bias"


def test_packaged_lite0_weights_classify_real_photos() -> None:
    """Proof that the renamed ImageNet weights load right: a cat and a cup of coffee."""
    data = pytest.importorskip("skimage.data")
    import timm

    from vpr_edge.images import resize
    from vpr_edge.training.backbones import lite0_imagenet_state_dict

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(lite0_imagenet_state_dict(), strict=True)
    model.eval()
    cats, cups = {281, 282, 283, 284, 285}, {967, 968, 504}
    for image, wanted in ((data.chelsea(), cats), (data.coffee(), cups)):
        x = resize(image, 224, 224).astype(np.float32) / 255.0
        x = (x - np.array(LITE_MEAN, np.float32)) / np.array(LITE_STD, np.float32)
        with torch.no_grad():
            probs = model(torch.from_numpy(x).permute(2, 0, 1)[None]).softmax(-1)[0]
        top5 = set(probs.topk(5).indices.tolist())
        assert probs.argmax().item() in wanted, top5
        assert probs.max() > 0.4
