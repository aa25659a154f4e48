from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from vpr_edge.errors import InvalidInputError, ModelFormatError
from vpr_edge.training.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_model,
    save_checkpoint,
    weights_sha256,
)
from vpr_edge.training.config import ModelConfig, preset
from vpr_edge.training.model import ImageInput, build_model
from vpr_edge.training.whitening import PCAWhitening


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = build_model(preset(num_clusters=4, input_size=(64, 96), pretrained=False)).eval()
    whitening = PCAWhitening(model.dim, 16, 8)
    whitening.fit(torch.randn(64, model.dim).numpy())
    model.set_whitening(whitening)
    return model


def test_round_trip_gives_identical_outputs(small_model, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", small_model, provenance={"made_by": "test"})
    ckpt = load_checkpoint(path)
    assert ckpt.config == small_model.config
    assert ckpt.config.whitening_dim == 8 and ckpt.config.whitening_max_dim == 16
    assert ckpt.provenance["made_by"] == "test" and ckpt.provenance["package_version"]
    assert ckpt.preprocessing["input_height"] == 64
    model = load_model(path)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), small_model(x), rtol=0, atol=0)
    assert model.dim == 8
    assert not list(tmp_path.glob(".*.tmp")), "no temp file left behind"


def test_weights_hash_ignores_dict_order_and_device_but_not_values(small_model) -> None:
    state = small_model.state_dict()
    reordered = dict(reversed(list(state.items())))
    assert weights_sha256(reordered) == weights_sha256(state)
    changed = {k: v.clone() for k, v in state.items()}
    key = next(k for k, v in changed.items() if v.is_floating_point())
    changed[key].view(-1)[0] += 1e-3
    assert weights_sha256(changed) != weights_sha256(state)


def test_config_round_trip_and_strictness() -> None:
    config = preset("resnet18", num_clusters=16, pretrained=False)
    assert ModelConfig.from_dict(config.to_dict()) == config
    data = config.to_dict()
    data["backbone"]["colour"] = "red"
    with pytest.raises(ModelFormatError, match="unknown keys"):
        ModelConfig.from_dict(data)
    data = config.to_dict()
    data["aggregation"] = "maxpool"
    with pytest.raises(ModelFormatError, match="aggregation"):
        ModelConfig.from_dict(data)
    with pytest.raises(InvalidInputError):
        preset("alexnet")
    from vpr_edge.training.config import PreprocessConfig

    # training feeds RGB frames: a BGR model's metadata made the runtime swap its channels
    with pytest.raises(InvalidInputError, match="colour_order must be 'RGB'"):
        PreprocessConfig(colour_order="BGR")
    # hand-edited configs: "abc" passed as three values and failed later in torch
    for key, bad in (("mean", "abc"), ("mean", [0.5, "x", 0.5]), ("std", [1.0, float("nan"), 1]),
                     ("std", [1.0, 1.0]), ("std", [1.0, 0.0, 1.0]), ("mean", [True, 0, 0])):
        data = config.to_dict()
        data["preprocess"][key] = bad
        with pytest.raises(ModelFormatError, match=key):
            ModelConfig.from_dict(data)


def _save_raw(path: Path, payload) -> Path:
    torch.save(payload, path)
    return path


def test_bad_checkpoints_are_refused_clearly(small_model, tmp_path: Path) -> None:
    good = save_checkpoint(tmp_path / "good.pt", small_model)
    raw = torch.load(good, weights_only=True)
    cases = {
        "no such checkpoint": tmp_path / "absent.pt",
        "not a vpr-edge checkpoint": _save_raw(tmp_path / "sd.pt", small_model.state_dict()),
        "newer than this vpr-edge": _save_raw(tmp_path / "v9.pt", {**raw, "format_version": 9}),
        "lacks weights_sha256": _save_raw(
            tmp_path / "nosha.pt", {k: v for k, v in raw.items() if k != "weights_sha256"}),
        "unknown keys": _save_raw(
            tmp_path / "cfg.pt", {**raw, "config": {**raw["config"], "extra": 1}}),
    }
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    cases["not a readable"] = truncated
    text = tmp_path / "text.pt"
    text.write_text("hello")
    cases["not a readable "] = text
    tampered = dict(raw)
    tampered["state_dict"] = {k: v.clone() for k, v in raw["state_dict"].items()}
    tampered["state_dict"]["aggregation.centroids"] += 1
    cases["damaged"] = _save_raw(tmp_path / "tampered.pt", tampered)
    missing = dict(raw)
    missing["state_dict"] = {k: v for k, v in raw["state_dict"].items()
                             if k != "aggregation.centroids"}
    missing["weights_sha256"] = weights_sha256(missing["state_dict"])
    cases["do not fit"] = _save_raw(tmp_path / "missing.pt", missing)
    for words, path in cases.items():
        with pytest.raises(ModelFormatError, match=words.strip()) as raised:
            load_model(path)
        assert str(path) in str(raised.value)
    with pytest.raises(ModelFormatError) as raised:  # which weights, not torch's first line
        load_model(cases["do not fit"])
    assert 'Missing key(s) in state_dict: "aggregation.centroids"' in str(raised.value)
    pickled = _save_raw(tmp_path / "object.pt", {"format": object})
    with pytest.raises(ModelFormatError, match="Python objects besides tensors") as raised:
        load_model(pickled)
    assert "weights_only=False" not in str(raised.value)  # torch's advice: load it unsafely
    markdown = tmp_path / "README.pt"  # a text file given as a checkpoint
    markdown.write_text("# vpr-edge\n\nNetVLAD visual place recognition for robots.\n" * 40)
    with pytest.raises(ModelFormatError, match="not a PyTorch file") as raised:
        load_model(markdown)
    assert "Python objects" not in str(raised.value)
    assert raw["format"] == CHECKPOINT_FORMAT
    assert zipfile.is_zipfile(good)


def test_image_input_matches_manual_normalisation(small_model) -> None:
    pre = small_model.config.preprocess
    wrapped = ImageInput(small_model, pre).eval()
    frames = torch.randint(0, 256, (2, 64, 96, 3), dtype=torch.uint8)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    manual = (frames.permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        torch.testing.assert_close(wrapped(frames), small_model(manual), atol=1e-5, rtol=1e-4)


def test_gradients_reach_trainable_backbone_and_netvlad(small_model) -> None:
    model = build_model(preset(num_clusters=4, pretrained=False, trainable_stages=1)).train()
    out = model(torch.randn(2, 3, 64, 64))
    (out * torch.randn_like(out)).sum().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith("backbone.") for n, _ in trainable)
    assert {"aggregation.conv.weight", "aggregation.conv.bias",
            "aggregation.centroids"} <= {n for n, _ in trainable}
    for name, p in trainable:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    frozen = [p for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in frozen)
