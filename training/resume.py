"""Resuming ``vpr-train fit``: the settings an interrupted run continues with.

A checkpoint written by ``fit`` holds the optimiser, its schedule and the miner's state
(``training_state``), so a resumed run must go on as the run was: same training data (the
miner's state holds indices into it), same settings; only ``--epochs`` may grow.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from vpr_edge.errors import InvalidInputError

from .augment import AugmentConfig
from .datasets.places import RetrievalDataset
from .mining import MiningConfig
from .train import TrainConfig, _jsonable, dataset_files_digest

#: ``vpr-train fit`` options of the TrainConfig fields (dotted: nested configs)
_FIT_OPTIONS = {
    "queries_per_step": "--queries-per-step", "optimizer": "--optimizer", "lr": "--lr",
    "weight_decay": "--weight-decay", "lr_step_epochs": "--lr-step", "lr_gamma": "--lr-gamma",
    "margin": "--margin", "refresh_every": "--refresh-every", "train_height": "--train-size",
    "train_width": "--train-size", "seed": "--seed", "mining.num_negatives": "--negatives",
    "mining.negative_pool": "--negative-pool", "mining.seed": "--seed",
    "augment.enabled": "--no-augment",
}


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _train_config(saved: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from its JSON form (a checkpoint's ``training_state["config"]``)."""
    top = {k: v for k, v in saved.items() if k not in ("mining", "augment")}
    augment = {k: tuple(v) if isinstance(v, list) else v
               for k, v in saved.get("augment", {}).items()}
    return TrainConfig(**top, mining=MiningConfig(**saved.get("mining", {})),
                       augment=AugmentConfig(**augment))


def resumed_config(path: Path, ckpt: Any, config: TrainConfig, dataset: RetrievalDataset,
                   *, epochs_given: bool = True) -> TrainConfig:
    """The settings a resumed run continues with: the checkpoint's, with ``config.epochs``
    when ``epochs_given`` (else the run's own).

    The optimiser, its schedule and the miner's state are restored as they were, so a
    resumed run must train on the same data with the same settings: options given with
    another value than the run had are refused (naming them), as are other training data
    (the miner's state holds indices into it; told apart by size, and by the images' file
    names for checkpoints that record them) and a run that already did its epochs. Options
    at their defaults take the run's values (so one given at its default value is not
    noticed: the run's value is kept).
    """
    fresh = f"or start a new run from it with --init {path}"
    saved_data = ckpt.provenance.get("dataset")
    if saved_data is not None and saved_data != dataset.describe():
        raise InvalidInputError(
            f"--resume continues {path} on the data it was trained on ({saved_data}); this "
            f"command gives {dataset.describe()}: give the same data (folders, --span, "
            f"manifest), {fresh}")
    saved_files = ckpt.provenance.get("dataset_files")
    if saved_files is not None and saved_files != dataset_files_digest(dataset):
        raise InvalidInputError(
            f"--resume continues {path} on the images it was trained on, and this command "
            f"gives others of the same number ({dataset.describe()}): give the same data "
            f"(folders, --span, manifest), {fresh}")
    try:
        saved = _train_config(ckpt.training_state["config"])
    except (KeyError, TypeError, InvalidInputError) as exc:
        raise InvalidInputError(f"{path}: its training settings cannot be read ({exc}); "
                                f"{fresh}") from exc
    given, before = _flat(_jsonable(asdict(config))), _flat(_jsonable(asdict(saved)))
    default = _flat(_jsonable(asdict(TrainConfig())))
    changed = sorted({_FIT_OPTIONS.get(key, key) for key, value in given.items()
                      if key != "epochs" and value != before.get(key)
                      and value != default.get(key)})
    if changed:
        was = ", ".join(f"{key} {before.get(key)!r}" for key, value in given.items()
                        if _FIT_OPTIONS.get(key, key) in changed and value != before.get(key))
        raise InvalidInputError(
            f"--resume continues {path} with the settings it was trained with ({was}); drop "
            f"{', '.join(changed)}, {fresh}")
    epochs = config.epochs if epochs_given else saved.epochs
    done = int(ckpt.training_state.get("epoch", 0))
    if done >= epochs:
        raise InvalidInputError(
            f"{path} has trained {done} of {epochs} epochs: nothing to resume; give a larger "
            f"--epochs to train on")
    return replace(saved, epochs=epochs)
