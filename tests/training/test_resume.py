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
from vpr_edge.training.train import TrainConfig, _jsonable  # noqa: E402

RUN = TrainConfig(epochs=2, lr=1e-4, mining=MiningConfig(num_negatives=3, negative_pool=10),
                  train_height=96, train_width=128)
PATH = Path("fit.pt")


def dataset(text: str = "frame_aligned: 20 database, 20 queries, unit frame"):
    return SimpleNamespace(describe=lambda: text)


def checkpoint(done: int = 2, config: TrainConfig = RUN):
    return SimpleNamespace(provenance={"dataset": dataset().describe()},
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
    with pytest.raises(InvalidInputError, match="fit.pt has trained 2 epochs, and --epochs is "
                                                "2: nothing to resume"):
        resumed_config(PATH, checkpoint(done=2), TrainConfig(epochs=2), dataset())
