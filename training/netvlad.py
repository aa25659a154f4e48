"""The NetVLAD layer (Arandjelovic et al., CVPR 2016) and its k-means initialisation.

For local descriptors ``x_i`` (``D`` channels at each of ``H*W`` positions)::

    x_i   <- x_i / ||x_i||                            (optional input normalisation)
    a_k(x_i) = softmax_k(w_k . x_i + b_k)            (1x1 conv with bias, softmax over K)
    V[k]  = sum_i a_k(x_i) (x_i - c_k)                (residuals to learnable centroids)
    V[k]  <- V[k] / ||V[k]||                          (intra-normalisation)
    v     = flatten(V) / ||flatten(V)||               (K x D layout: index k*D + d; final L2)

``V[k] = (sum_i a_ik x_i) - (sum_i a_ik) c_k``, so the forward is two matrix products and
plain ONNX ops; the fused TensorRT plugin computes the same thing from :attr:`assignment_weight`,
:attr:`assignment_bias` and :attr:`centroids`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vpr_edge.errors import InvalidInputError


class NetVLAD(nn.Module):
    """NetVLAD pooling of ``[N, D, H, W]`` features into ``[N, K*D]`` descriptors."""

    def __init__(self, num_clusters: int, dim: int, *, normalize_input: bool = True,
                 eps: float = 1e-12) -> None:
        super().__init__()
        self.num_clusters = num_clusters
        self.dim = dim
        self.normalize_input = normalize_input
        self.eps = eps
        self.conv = nn.Conv2d(dim, num_clusters, kernel_size=1, bias=True)
        self.centroids = nn.Parameter(torch.rand(num_clusters, dim))
        nn.init.normal_(self.conv.weight, std=1.0 / math.sqrt(dim))
        nn.init.zeros_(self.conv.bias)

    @property
    def output_dim(self) -> int:
        return self.num_clusters * self.dim

    @property
    def assignment_weight(self) -> torch.Tensor:
        """The soft-assignment weight as ``[K, D]``."""
        return self.conv.weight.detach().reshape(self.num_clusters, self.dim)

    @property
    def assignment_bias(self) -> torch.Tensor:
        return self.conv.bias.detach()

    def soft_assignment(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, K, H*W]`` assignment of each (normalised) local descriptor to each cluster."""
        if self.normalize_input:
            x = F.normalize(x, p=2.0, dim=1, eps=self.eps)
        return F.softmax(self.conv(x).flatten(2), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise InvalidInputError(
                f"NetVLAD expects [N, {self.dim}, H, W] features, got {tuple(x.shape)}"
            )
        if self.normalize_input:
            x = F.normalize(x, p=2.0, dim=1, eps=self.eps)
        assignment = F.softmax(self.conv(x).flatten(2), dim=1)          # [N, K, HW]
        features = x.flatten(2)                                          # [N, D, HW]
        vlad = torch.matmul(assignment, features.transpose(1, 2))        # [N, K, D]
        vlad = vlad - assignment.sum(dim=2, keepdim=True) * self.centroids
        vlad = F.normalize(vlad, p=2.0, dim=2, eps=self.eps)             # intra-normalisation
        vlad = vlad.flatten(1)                                           # K x D layout
        return F.normalize(vlad, p=2.0, dim=1, eps=self.eps)

    @torch.no_grad()
    def init_from_clusters(self, centroids: torch.Tensor | np.ndarray,
                           descriptors: torch.Tensor | np.ndarray) -> float:
        """Set centroids and the assignment conv from k-means, with the paper's alpha.

        ``alpha = -log(0.01) / mean(d2_second - d2_first)`` over ``descriptors`` (squared
        distances to their two nearest centroids), so a typical descriptor gives its nearest
        centroid 100x the weight of the second. Then ``w_k = 2 alpha c_k`` and
        ``b_k = -alpha ||c_k||^2`` (the softmax of ``-alpha ||x - c_k||^2``). Returns alpha.
        """
        c = torch.as_tensor(centroids, dtype=torch.float32)
        x = torch.as_tensor(descriptors, dtype=torch.float32)
        if c.shape != (self.num_clusters, self.dim) or x.dim() != 2 or x.shape[1] != self.dim:
            raise InvalidInputError(
                f"need centroids [{self.num_clusters}, {self.dim}] and descriptors "
                f"[n, {self.dim}], got {tuple(c.shape)} and {tuple(x.shape)}"
            )
        if self.num_clusters < 2:
            alpha = 1.0
        else:
            alpha = paper_alpha(c, x)
        self.centroids.copy_(c)
        self.conv.weight.copy_((2.0 * alpha * c).reshape(self.num_clusters, self.dim, 1, 1))
        self.conv.bias.copy_(-alpha * (c * c).sum(dim=1))
        return alpha


def paper_alpha(centroids: torch.Tensor, descriptors: torch.Tensor) -> float:
    """The NetVLAD paper's alpha from squared distances to the two nearest centroids."""
    d2 = torch.cdist(descriptors.double(), centroids.double()).pow(2)
    nearest = torch.topk(d2, 2, dim=1, largest=False).values
    gap = (nearest[:, 1] - nearest[:, 0]).mean().item()
    if not gap > 0:
        raise InvalidInputError("cannot set alpha: descriptors are equidistant to centroids")
    return -math.log(0.01) / gap


def kmeans(data: torch.Tensor | np.ndarray, k: int, *, iterations: int = 30, seed: int = 0,
           chunk: int = 65536) -> torch.Tensor:
    """k-means (k-means++ seeding, Lloyd iterations) on ``[n, d]`` float data.

    Deterministic for a seed; distances are computed in chunks so memory stays bounded.
    Empty clusters are re-seeded with the points farthest from their centroid.
    """
    x = torch.as_tensor(data, dtype=torch.float32)
    n = x.shape[0]
    if n < k:
        raise InvalidInputError(f"k-means needs at least k={k} descriptors, got {n}")
    gen = torch.Generator().manual_seed(seed)
    centres = torch.empty(k, x.shape[1])
    centres[0] = x[torch.randint(n, (1,), generator=gen)]
    closest = _sq_dist_to(x, centres[:1], chunk).min(dim=1).values
    for j in range(1, k):
        total = closest.sum()
        if total <= 0:
            pick = torch.randint(n, (1,), generator=gen)
        else:
            pick = torch.multinomial(closest / total, 1, generator=gen)
        centres[j] = x[pick]
        closest = torch.minimum(closest, _sq_dist_to(x, centres[j:j + 1], chunk)[:, 0])
    for _ in range(iterations):
        labels, dist = _assign(x, centres, chunk)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).float()
        empty = counts == 0
        new = sums / counts.clamp_min(1)[:, None]
        if empty.any():
            far = torch.topk(dist, int(empty.sum()), largest=True).indices
            new[empty] = x[far]
        if torch.allclose(new, centres, atol=1e-7):
            centres = new
            break
        centres = new
    return centres


def _sq_dist_to(x: torch.Tensor, centres: torch.Tensor, chunk: int) -> torch.Tensor:
    return torch.cat([torch.cdist(x[i:i + chunk], centres).pow(2)
                      for i in range(0, x.shape[0], chunk)])


def _assign(x: torch.Tensor, centres: torch.Tensor, chunk: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    labels, dists = [], []
    for i in range(0, x.shape[0], chunk):
        d = torch.cdist(x[i:i + chunk], centres)
        value, index = d.min(dim=1)
        labels.append(index)
        dists.append(value)
    return torch.cat(labels), torch.cat(dists)
