from __future__ import annotations

import numpy as np
import pytest
import torch

from vpr_edge.errors import InvalidInputError
from vpr_edge.training.whitening import PCAWhitening


def correlated(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dim, dim)) * np.linspace(5, 0.1, dim)
    return rng.standard_normal((n, dim)) @ mixing.T + 3.0


@pytest.mark.parametrize("n,in_dim", [(2000, 16), (40, 100)])  # covariance and Gram paths
def test_projection_whitens_the_training_data(n: int, in_dim: int) -> None:
    data = correlated(n, in_dim)
    dims = 8 if n > in_dim else 20
    layer = PCAWhitening(in_dim, dims)
    layer.fit(data)
    projected = (torch.from_numpy(data).float() - layer.mean) @ layer.components.t()
    cov = np.cov(projected.numpy().T)
    np.testing.assert_allclose(cov, np.eye(dims), atol=0.02)
    out = layer(torch.from_numpy(data).float())
    np.testing.assert_allclose(out.norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_projection_only_keeps_the_principal_directions_unscaled() -> None:
    data = correlated(2000, 16)
    layer = PCAWhitening(16, 16)
    layer.fit(data, whiten=False)
    components = layer.components.numpy().astype(np.float64)
    np.testing.assert_allclose(components @ components.T, np.eye(16), atol=1e-5)  # a rotation
    centred = data - data.mean(axis=0)
    projected = centred @ components.T
    variance = projected.var(axis=0)
    assert np.all(np.diff(variance) <= 1e-6 * variance[0])  # strongest direction first
    np.testing.assert_allclose(projected @ projected.T, centred @ centred.T, rtol=1e-4,
                               atol=1e-3)  # all dims kept: inner products unchanged


def test_smaller_dims_are_a_prefix_of_the_same_fit() -> None:
    data = correlated(500, 12, seed=1)
    layer = PCAWhitening(12, 8)
    layer.fit(data)
    x = torch.from_numpy(data[:5]).float()
    full = ((x - layer.mean) @ layer.components.t())
    layer.select_dim(3)
    small = layer(x)
    expected = torch.nn.functional.normalize(full[:, :3], dim=1)
    np.testing.assert_allclose(small.numpy(), expected.numpy(), atol=1e-6)
    assert small.shape == (5, 3)
    with pytest.raises(InvalidInputError, match=r"\[1, 8\]"):
        layer.select_dim(9)


def test_too_few_descriptors_is_a_clear_error() -> None:
    layer = PCAWhitening(7168, 512)
    with pytest.raises(InvalidInputError, match="more images than output dims"):
        layer.fit(np.random.default_rng(0).standard_normal((111, 7168)))


def test_nan_and_wrong_width_are_refused() -> None:
    layer = PCAWhitening(4, 2)
    bad = np.ones((10, 4))
    bad[3, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        layer.fit(bad)
    with pytest.raises(InvalidInputError, match=r"\[n, 4\]"):
        layer.fit(np.ones((10, 5)))
