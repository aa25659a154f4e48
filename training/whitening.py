"""PCA-whitening of descriptors, learned after training, followed by L2 normalisation.

``y = W (x - mean)`` with ``W = diag(1/sqrt(lambda + eps)) U^T``: the principal directions
of the database descriptors, each scaled to unit variance, so that frequent (bursty)
directions stop dominating the inner product. The layer stores ``max_dim`` components; any
``dim <= max_dim`` uses the first ``dim`` (PCA orders them by variance), so 4096/1024/512
are one fit.

PCA-whitening needs many more descriptors than output dimensions (111 Corridor images cannot
fit 512 components): fit it on a separate, larger set of images from the deployment domain.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vpr_edge.errors import InvalidInputError


class PCAWhitening(nn.Module):
    """Projection ``[N, in_dim] -> [N, dim]`` then L2; buffers, not trained by the loss."""

    def __init__(self, in_dim: int, max_dim: int, dim: int | None = None,
                 eps: float = 1e-12) -> None:
        super().__init__()
        if not 1 <= max_dim:
            raise InvalidInputError(f"max_dim must be >= 1, got {max_dim}")
        self.in_dim = in_dim
        self.max_dim = max_dim
        self.eps = eps
        self.register_buffer("components", torch.zeros(max_dim, in_dim))
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("explained_variance", torch.zeros(max_dim))
        self.dim = max_dim
        self.select_dim(max_dim if dim is None else dim)

    def select_dim(self, dim: int) -> None:
        """Use the first ``dim`` whitened components (``dim <= max_dim``)."""
        if not isinstance(dim, int) or not 1 <= dim <= self.max_dim:
            raise InvalidInputError(
                f"whitening dim must be an int in [1, {self.max_dim}] (the components this "
                f"layer holds), got {dim!r}"
            )
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projection = self.components[: self.dim]
        y = torch.matmul(x - self.mean, projection.t())
        return F.normalize(y, p=2.0, dim=1, eps=self.eps)

    @torch.no_grad()
    def fit(self, descriptors: np.ndarray | torch.Tensor, *, regularisation: float = 1e-6,
            whiten: bool = True) -> None:
        """Fit on ``[n, in_dim]`` descriptors (n must exceed ``max_dim``).

        Eigenvalues get ``regularisation * largest`` added before the inverse square root,
        so near-empty directions are not blown up into noise. ``whiten=False`` keeps the
        principal directions unscaled (a PCA projection: ``y = U^T (x - mean)``): it only
        drops the weakest directions, which is safer when the fitting set is small (whitening
        then amplifies directions the few images estimate badly; see benchmarks/README.md).
        """
        x = np.asarray(descriptors, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise InvalidInputError(
                f"whitening is fitted on [n, {self.in_dim}] descriptors, got {x.shape}"
            )
        n = x.shape[0]
        if n <= self.max_dim:
            raise InvalidInputError(
                f"PCA-whitening to {self.max_dim} dims needs more than {self.max_dim} "
                f"descriptors (got {n}); it needs many more images than output dims. Fit it "
                "on a separate, larger set of images, or choose fewer dims"
            )
        if not np.isfinite(x).all():
            raise InvalidInputError("whitening descriptors contain NaN or inf")
        mean = x.mean(axis=0)
        centred = x - mean
        if n >= self.in_dim:  # covariance is small enough: eigen-decompose it
            values, vectors = np.linalg.eigh(centred.T @ centred / (n - 1))
            order = np.argsort(values)[::-1][: self.max_dim]
            values, vectors = values[order], vectors[:, order]
        else:  # Gram trick: n x n instead of in_dim x in_dim
            gram_values, gram_vectors = np.linalg.eigh(centred @ centred.T / (n - 1))
            order = np.argsort(gram_values)[::-1][: self.max_dim]
            values = gram_values[order]
            vectors = centred.T @ gram_vectors[:, order]
            vectors /= np.linalg.norm(vectors, axis=0, keepdims=True).clip(1e-300)
        values = np.clip(values, 0.0, None)
        scale = 1.0 / np.sqrt(values + regularisation * values.max()) if whiten else 1.0
        self.components.copy_(torch.from_numpy((vectors * scale).T.astype(np.float32)))
        self.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
        self.explained_variance.copy_(torch.from_numpy(values.astype(np.float32)))
