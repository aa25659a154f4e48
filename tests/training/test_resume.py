"""Resuming ``vpr-train fit``: what continues, what is refused (``training/resume.py``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")

from vpr_edge.errors import InvalidInputError  # noqa: E402
from vpr_edge.training.mining import MiningConfig  # noqa: E402
from vpr_edge.training.resume import resumed_config  # noqa: E402
from vpr_edge.training.train import (  # noqa: E402
    TrainConfig,
    _jsonable,
    dataset_files_digest,
)

RUN = TrainConfig(epochs=2, lr=1e-4, mining=MiningConfig(num_negatives=3, negative_pool=10),
                  train_height=96, train_width=128)
PATH = Path("fit.pt")


def dataset(text: str = "frame_aligned: 20 database, 20 queries, unit frame", first: int = 0):
    def images(folder: str) -> SimpleNamespace:
        return SimpleNamespace(paths=[f"/data/{folder}/Image{first + i:03d}.jpg"
                                      for i in range(20)])

    return SimpleNamespace(describe=lambda: text, database=images("day_left"),
                           queries=images("day_right"))


def checkpoint(done: int = 2, config: TrainConfig = RUN):
    return SimpleNamespace(provenance={"dataset": dataset().describe(),
                                       "dataset_files": dataset_files_digest(dataset())},
                           training_state={"epoch": done, "config": _jsonable(asdict(config))})


def test_the_run_continues_with_its_own_settings_and_more_epochs() -> None:
    """Options left at their defaults take the run's values (it trained with 3 negatives
    and lr 1e-4; the resuming command gives neither)."""
    got = resumed_config(PATH, checkpoint(), TrainConfig(epochs=5), dataset())
    assert got == TrainConfig(**{**asdict(RUN), "epochs": 5, "mining": RUN.mining,
                                 "augment": RUN.augment})
    same = TrainConfig(epochs=4, lr=1e-4, mining=MiningConfig(num_negatives=3,
                                                               negative_pool=10))
    assert resumed_config(PATH, checkpoint(), same, dataset()).epochs == 4


@pytest.mark.parametrize("given, options", [
    (TrainConfig(epochs=3, lr=1e-3), "--lr"),  # was ignored, and recorded as used
    (TrainConfig(epochs=3, optimizer="sgd", lr=0.01), "--lr, --optimizer"),  # KeyError
    (TrainConfig(epochs=3, mining=MiningConfig(num_negatives=5, negative_pool=10)),
     "--negatives"),
])
def test_other_settings_are_refused_naming_the_options(given: TrainConfig, options: str
                                                       ) -> None:
    with pytest.raises(InvalidInputError) as raised:
        resumed_config(PATH, checkpoint(), given, dataset())
    text = str(raised.value)
    assert f"drop {options}, or start a new run from it with --init fit.pt" in text


def test_other_training_data_is_refused() -> None:
    """The miner's saved hardest negatives index the run's data: other data ended in an
    IndexError (or, same size, silently wrong negatives)."""
    with pytest.raises(InvalidInputError, match=r"data it was trained on \(frame_aligned: 20 "
                                                r"database.*this command gives .*12 database"):
        resumed_config(PATH, checkpoint(), TrainConfig(epochs=3),
                       dataset("frame_aligned: 12 database, 12 queries, unit frame"))


def test_a_finished_run_is_refused() -> None:
    """It reported a checkpoint it never wrote."""
    with pytest.raises(InvalidInputError, match="fit.pt has trained 2 of 2 epochs: nothing to "
                                                "resume; give a larger --epochs"):
        resumed_config(PATH, checkpoint(done=2), TrainConfig(epochs=2), dataset())


def test_without_epochs_the_run_keeps_its_own() -> None:
    """A 30-epoch run stopped after 3 and resumed without --epochs went on to the default
    10 (and a finished 30-epoch run was refused with "--epochs is 10")."""
    long_run = TrainConfig(epochs=30)
    got = resumed_config(PATH, checkpoint(done=3, config=long_run), TrainConfig(), dataset(),
                         epochs_given=False)
    assert got.epochs == 30
    with pytest.raises(InvalidInputError, match="trained 30 of 30 epochs"):
        resumed_config(PATH, checkpoint(done=30, config=long_run), TrainConfig(), dataset(),
                       epochs_given=False)


def test_other_images_of_the_same_number_are_refused() -> None:
    """The dataset's description holds only counts: another span of the same length passed."""
    with pytest.raises(InvalidInputError, match="images it was trained on.*others of the same"):
        resumed_config(PATH, checkpoint(), TrainConfig(epochs=3), dataset(first=40))
    old = checkpoint()  # a checkpoint from before file names were recorded: sizes only
    del old.provenance["dataset_files"]
    assert resumed_config(PATH, old, TrainConfig(epochs=3), dataset(first=40)).epochs == 3
