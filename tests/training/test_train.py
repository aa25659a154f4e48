"""Training end to end on a tiny real set: loss goes down, checkpoints resume, DDP runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vpr_edge.training.augment import AugmentConfig
from vpr_edge.training.checkpoint import load_checkpoint, save_checkpoint
from vpr_edge.training.config import preset
from vpr_edge.training.datasets.frame_aligned import frame_aligned_dataset
from vpr_edge.training.init_model import init_model
from vpr_edge.training.mining import MiningConfig
from vpr_edge.training.train import TrainConfig, train


@pytest.fixture(scope="module")
def tiny_route(gardens_point_dir: Path):
    return frame_aligned_dataset(gardens_point_dir / "day_left", gardens_point_dir / "day_right",
                                 span=(0.0, 0.12))  # 24 frames per side


@pytest.fixture(scope="module")
def start_checkpoint(tiny_route, tmp_path_factory) -> Path:
    config = preset(num_clusters=8, input_size=(64, 96), trainable_stages=1)
    model, _ = init_model(config, tiny_route.database.paths, progress=False)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "init.pt", model)


def quick_config(**changes) -> TrainConfig:
    # a wide margin keeps the loss non-zero: with the paper's 0.1 these easy frames give 0
    base = dict(epochs=3, queries_per_step=4, lr=1e-3, refresh_every=8, margin=0.5,
                mining=MiningConfig(num_negatives=3, negative_pool=20),
                augment=AugmentConfig(enabled=False), seed=0)
    base.update(changes)
    return TrainConfig(**base)


def fixed_triplet_loss(model, dataset, triplets, margin: float) -> float:
    """Loss of ``model`` (eval mode) on given triplets."""
    from vpr_edge.training.image_bank import ImageBank
    from vpr_edge.training.loss import triplet_ranking_loss
    from vpr_edge.training.model import images_to_tensor

    pre = model.config.preprocess
    bank = ImageBank(pre.input_height, pre.input_width)
    db, qs = dataset.database.paths, dataset.queries.paths
    model.eval()
    with torch.no_grad():
        losses = []
        for t in triplets:
            paths = [qs[t.query], db[t.positive], *[db[n] for n in t.negatives]]
            out = model(images_to_tensor(bank.batch(paths).numpy(), pre))
            losses.append(triplet_ranking_loss(out[:1], out[1:2], out[None, 2:], margin).item())
    return float(np.mean(losses))


def test_training_lowers_the_loss_and_checkpoints_every_epoch(tiny_route, start_checkpoint,
                                                               tmp_path: Path) -> None:
    from dataclasses import replace

    from vpr_edge.training.datasets.places import Radii
    from vpr_edge.training.distributed import ProcessGroup
    from vpr_edge.training.train import Trainer

    torch.set_num_threads(2)
    # negatives from 4 frames away: hard enough that the initial model has a loss to lower
    hard = replace(tiny_route, radii=Radii(pos_radius=1, neg_radius=3, eval_radius=2))
    config = quick_config(epochs=2, lr=1e-4)
    model = load_checkpoint(start_checkpoint).build()
    probe = Trainer(model, hard, config, ProcessGroup())
    probe.refresh_cache()
    triplets = [probe.miner.triplet(q, probe.cache) for q in probe.miner.usable_queries()]
    loss_before = fixed_triplet_loss(model, hard, triplets, config.margin)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / "trained.pt"
    result = train(model, hard, config, output=out, progress=False, validation=hard)
    loss_after = fixed_triplet_loss(model, hard, triplets, config.margin)
    assert loss_before > 0.05 and loss_after < 0.8 * loss_before, (loss_before, loss_after)
    assert len(result.history) == 2 and all(np.isfinite(h.loss) for h in result.history)
    assert result.history[-1].recall is not None and result.history[0].images_per_second > 0
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "aggregation.centroids" in changed
    assert any(k.startswith("backbone.stages.5") for k in changed)       # trainable stage
    assert not any(k.startswith("backbone.stages.0.") for k in changed)  # frozen stem
    ckpt = load_checkpoint(out)
    assert ckpt.training_state["epoch"] == 2 and ckpt.provenance["epochs_done"] == 2


def test_resume_continues_where_it_stopped(tiny_route, start_checkpoint,
                                           tmp_path: Path) -> None:
    torch.set_num_threads(2)
    full = tmp_path / "full.pt"
    train(load_checkpoint(start_checkpoint).build(), tiny_route, quick_config(epochs=2),
          output=full, progress=False)
    part = tmp_path / "part.pt"
    train(load_checkpoint(start_checkpoint).build(), tiny_route, quick_config(epochs=1),
          output=part, progress=False)
    ckpt = load_checkpoint(part)
    resumed = train(ckpt.build(), tiny_route, quick_config(epochs=2), output=part,
                    resume=ckpt.training_state, progress=False)
    assert [h.epoch for h in resumed.history] == [1, 2]
    a, b = load_checkpoint(full).state_dict, load_checkpoint(part).state_dict
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-4, worst  # same run, interrupted or not


def test_long_passes_show_progress(tiny_route, start_checkpoint, tmp_path: Path,
                                   capsys) -> None:
    """The descriptor-cache refresh and the validation (about 11 s each on Gardens Point)
    showed no progress: the epoch's bar stood still."""
    torch.set_num_threads(2)
    train(load_checkpoint(start_checkpoint).build(), tiny_route, quick_config(epochs=1),
          output=tmp_path / "m.pt", validation=tiny_route, progress=True)
    err = capsys.readouterr().err
    for what in ("descriptor cache: database", "descriptor cache: queries",
                 "validation: queries", "validation: database"):
        assert what in err
    train(load_checkpoint(start_checkpoint).build(), tiny_route, quick_config(epochs=1),
          output=tmp_path / "m.pt", validation=tiny_route, progress=False)
    assert "descriptor cache" not in capsys.readouterr().err


def test_two_process_ddp_smoke_run(gardens_point_dir: Path, start_checkpoint,
                                   tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    history = tmp_path / "ddp.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "vpr_edge.training.cli_train", "fit",
               "--frame-aligned", str(gardens_point_dir / "day_left"),
               str(gardens_point_dir / "day_right"), "--span", "0", "0.12",
               "--init", str(start_checkpoint), "--output", str(out), "--epochs", "1",
               "--negatives", "3", "--negative-pool", "20", "--no-augment", "--no-progress",
               "--threads", "1", "--json", str(history)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("vpr-train fit") == 1, "only rank 0 reports"
    ckpt = load_checkpoint(out)
    assert ckpt.training_state["epoch"] == 1
    record = json.loads(history.read_text())["history"][0]
    assert np.isfinite(record["loss"]) and record["images_per_second"] > 0
