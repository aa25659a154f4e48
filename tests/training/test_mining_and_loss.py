from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vpr_edge.errors import InvalidInputError
from vpr_edge.training.datasets.places import PlaceSet, Radii, RetrievalDataset
from vpr_edge.training.loss import triplet_ranking_loss
from vpr_edge.training.mining import DescriptorCache, MiningConfig, TripletMiner


def line_dataset() -> RetrievalDataset:
    """Database every 5 m along a line (0..95 m); queries at 2 m, 51 m and 500 m."""
    db = PlaceSet(tuple(Path(f"d{i}") for i in range(20)),
                  np.stack([np.arange(20) * 5.0, np.zeros(20)], 1))
    q = PlaceSet((Path("q0"), Path("q1"), Path("q2")),
                 np.array([[2.0, 0.0], [51.0, 0.0], [500.0, 0.0]]))
    return RetrievalDataset("line", db, q, radii=Radii(10, 25, 25))


def cache_from(db: np.ndarray, q: np.ndarray) -> DescriptorCache:
    cache = DescriptorCache()
    cache.refresh(lambda: db, lambda: q)
    return cache


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_positives_negatives_and_skips_on_synthetic_positions() -> None:
    miner = TripletMiner(line_dataset(), MiningConfig(num_negatives=3, negative_pool=10))
    assert miner.positives[0].tolist() == [0, 1, 2]          # 0, 5, 10 m from 2 m
    assert miner.positives[1].tolist() == [9, 10, 11, 12]    # 45..60 m from 51 m
    # definite negatives of query 0 are farther than 25 m: database 6 (30 m) onwards
    assert miner.definite_negatives(0).tolist() == list(range(6, 20))
    assert miner.skipped == 1 and miner.usable_queries().tolist() == [0, 1]


def test_best_positive_and_hardest_negatives_under_the_cache() -> None:
    rng = np.random.default_rng(0)
    db = unit(rng.standard_normal((20, 8)))
    q = unit(rng.standard_normal((3, 8)))
    db[2] = unit(q[0] + 0.01)             # the most similar positive of query 0
    db[15] = unit(q[0] + 0.05)            # a definite negative that looks like it
    db[9] = unit(q[0] + 0.08)
    miner = TripletMiner(line_dataset(), MiningConfig(num_negatives=2, negative_pool=14))
    t = miner.triplet(0, cache_from(db, q))
    assert t.positive == 2
    assert set(t.negatives) == {15, 9}
    negatives = miner.definite_negatives(0)
    sims = db[negatives] @ q[0]
    assert list(t.negatives) == negatives[np.argsort(-sims)[:2]].tolist()


def test_previous_hardest_negatives_are_kept_between_refreshes() -> None:
    rng = np.random.default_rng(1)
    db = unit(rng.standard_normal((20, 8)))
    q = unit(rng.standard_normal((3, 8)))
    db[12] = unit(q[0] + 0.01)
    miner = TripletMiner(line_dataset(), MiningConfig(num_negatives=1, negative_pool=1, seed=3))
    first = miner.triplet(0, cache_from(db, q))
    # with a pool of one random negative, 12 is found only if it was in the pool; force it
    miner._previous[0] = np.array([12])
    second = miner.triplet(0, cache_from(db, q))
    assert second.negatives == (12,)
    state = miner.state()
    other = TripletMiner(line_dataset(), MiningConfig(num_negatives=1, negative_pool=1))
    other.load_state(state)
    assert other._previous[0].tolist() == [12] and first.query == 0


def test_mining_needs_a_cache_and_a_positive() -> None:
    miner = TripletMiner(line_dataset(), MiningConfig(num_negatives=2, negative_pool=5))
    with pytest.raises(InvalidInputError, match="refresh"):
        miner.triplet(0, DescriptorCache())
    db = unit(np.ones((20, 4)))
    with pytest.raises(InvalidInputError, match="no positive"):
        miner.triplet(2, cache_from(db, unit(np.ones((3, 4)))))


def test_loss_on_a_hand_computed_example() -> None:
    # q = (1, 0); p = (0.6, 0.8): ||q-p||^2 = 0.16 + 0.64 = 0.8
    # n1 = (0, 1): ||q-n1||^2 = 2 -> max(0, 0.8 + 0.1 - 2) = 0
    # n2 = (0.8, 0.6): ||q-n2||^2 = 0.04 + 0.36 = 0.4 -> 0.8 + 0.1 - 0.4 = 0.5
    # n3 = (0.6, -0.8): ||q-n3||^2 = 0.8 -> 0.8 + 0.1 - 0.8 = 0.1
    # first query: 0 + 0.5 + 0.1 = 0.6; second query (q = p): 0.1 + 0.1 + 0 + ... see below
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    n = torch.tensor([[[0.0, 1.0], [0.8, 0.6], [0.6, -0.8]],
                      # second: ||q-p||^2 = 0; negatives at distance^2 0.4, 2, 4 ->
                      # max(0, 0.1 - 0.4) + 0 + 0 = 0
                      [[0.6, 0.8], [1.0, 0.0], [0.0, -1.0]]])
    loss = triplet_ranking_loss(q, p, n, margin=0.1)
    assert loss.item() == pytest.approx((0.6 + 0.0) / 2)
    with pytest.raises(InvalidInputError, match="negatives"):
        triplet_ranking_loss(q, p, n[:, :, :1])


def test_why_no_query_is_usable_names_the_real_cause() -> None:
    """Too few definite negatives was reported as "no database image within pos_radius"."""
    dataset = line_dataset()
    greedy = TripletMiner(dataset, MiningConfig(num_negatives=50, negative_pool=60))
    assert len(greedy.usable_queries()) == 0
    why = greedy.why_unusable(dataset)
    assert "2 have a positive" in why and "needs 50 definite negatives" in why
    assert "lower --negatives" in why
    far = RetrievalDataset("far", dataset.database, dataset.queries, radii=Radii(0.5, 25, 25))
    why = TripletMiner(far, MiningConfig(num_negatives=3)).why_unusable(far)
    assert "within pos_radius (0.5" in why
