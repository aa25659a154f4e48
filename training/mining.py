"""Weakly supervised mining (NetVLAD paper, section 4): best positives and hard negatives.

For each training query: *potential positives* are database images within ``pos_radius``
(GPS is noisy: we do not know which one really shows the place), *definite negatives* are
farther than ``neg_radius``. The loss uses the best positive under the current model and the
hardest negatives among a random pool of definite negatives, plus the query's previous
hardest negatives; similarities come from a descriptor cache refreshed during training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vpr_edge.errors import InvalidInputError

from .datasets.places import RetrievalDataset


@dataclass(frozen=True)
class MiningConfig:
    """Attributes:
        num_negatives: negatives per triplet (10 in the paper).
        negative_pool: definite negatives sampled per query before picking the hardest.
        keep_previous: keep the query's previous hardest negatives in its next pool.
        seed: makes pool sampling repeatable.
    """

    num_negatives: int = 10
    negative_pool: int = 1000
    keep_previous: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_negatives < 1 or self.negative_pool < self.num_negatives:
            raise InvalidInputError("need 1 <= num_negatives <= negative_pool")


@dataclass(frozen=True)
class Triplet:
    """Indices: ``query`` into queries, ``positive`` and ``negatives`` into the database."""

    query: int
    positive: int
    negatives: tuple[int, ...]


class DescriptorCache:
    """Descriptors of every database and query image under the current model (float16).

    ``refresh(describe_database, describe_queries)`` recomputes them; the training loop
    calls it every N queries.
    """

    def __init__(self) -> None:
        self.database: np.ndarray | None = None
        self.queries: np.ndarray | None = None
        self.refreshes = 0

    def refresh(self, describe_database: Callable[[], np.ndarray],
                describe_queries: Callable[[], np.ndarray]) -> None:
        self.database = np.asarray(describe_database(), dtype=np.float16)
        self.queries = np.asarray(describe_queries(), dtype=np.float16)
        self.refreshes += 1

    @property
    def ready(self) -> bool:
        return self.database is not None and self.queries is not None


class TripletMiner:
    """Chooses the triplets of a training dataset from a :class:`DescriptorCache`."""

    def __init__(self, dataset: RetrievalDataset, config: MiningConfig = MiningConfig()) -> None:
        self.config = config
        self.positives = dataset.training_positives()
        potential = dataset.potential_positives()
        n_db = len(dataset.database)
        self.usable = np.array([len(p) > 0 and n_db - len(q) >= config.num_negatives
                                for p, q in zip(self.positives, potential)])
        self._potential = potential
        self._n_db = n_db
        self._previous: dict[int, np.ndarray] = {}
        self._rng = np.random.default_rng(config.seed)

    @property
    def skipped(self) -> int:
        """Queries without a positive (or without enough negatives): never trained on."""
        return int((~self.usable).sum())

    def usable_queries(self) -> np.ndarray:
        return np.flatnonzero(self.usable)

    def why_unusable(self, dataset: RetrievalDataset) -> str:
        """What keeps the queries from training (for the error when none is usable)."""
        with_positive = sum(len(p) > 0 for p in self.positives)
        if with_positive == 0:
            return (f"none has a database image within pos_radius ({dataset.radii.pos_radius} "
                    f"{dataset.unit}); check positions and radii")
        most = max(self._n_db - len(q) for p, q in zip(self.positives, self._potential)
                   if len(p) > 0)
        return (f"{with_positive} have a positive, but each needs {self.config.num_negatives} "
                f"definite negatives (database images beyond neg_radius "
                f"{dataset.radii.neg_radius} {dataset.unit}) and the most any has is {most}; "
                "lower --negatives, or give a longer route")

    def definite_negatives(self, query: int) -> np.ndarray:
        """Database images farther than ``neg_radius`` from the query."""
        mask = np.ones(self._n_db, dtype=bool)
        mask[self._potential[query]] = False
        return np.flatnonzero(mask)

    def triplet(self, query: int, cache: DescriptorCache) -> Triplet:
        """The best positive and hardest negatives of ``query`` under the cached model."""
        if not cache.ready:
            raise InvalidInputError("refresh the descriptor cache before mining")
        if not self.usable[query]:
            raise InvalidInputError(f"query {query} has no positive within pos_radius")
        cfg = self.config
        q = cache.queries[query].astype(np.float32)
        positives = self.positives[query]
        pos_scores = cache.database[positives].astype(np.float32) @ q
        best_positive = int(positives[int(np.argmax(pos_scores))])
        negatives = self.definite_negatives(query)
        pool_size = min(cfg.negative_pool, len(negatives))
        pool = self._rng.choice(negatives, size=pool_size, replace=False)
        if cfg.keep_previous and query in self._previous:
            pool = np.unique(np.concatenate([pool, self._previous[query]]))
        scores = cache.database[pool].astype(np.float32) @ q
        hardest = pool[np.argsort(-scores, kind="stable")[: cfg.num_negatives]]
        self._previous[query] = hardest
        return Triplet(query, best_positive, tuple(int(i) for i in hardest))

    def state(self) -> dict:
        """Mining state for checkpoints (previous hardest negatives, RNG)."""
        return {"previous": {int(k): v.tolist() for k, v in self._previous.items()},
                "rng": self._rng.bit_generator.state}

    def load_state(self, state: dict) -> None:
        self._previous = {int(k): np.asarray(v, dtype=int)
                          for k, v in state.get("previous", {}).items()}
        if "rng" in state:
            self._rng.bit_generator.state = state["rng"]
