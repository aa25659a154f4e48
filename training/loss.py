"""The NetVLAD paper's weakly supervised triplet ranking loss.

For a query ``q``, its best positive ``p`` and negatives ``n_j`` (all L2-normalised)::

    L = sum_j max(0, ||q - p||^2 + m - ||q - n_j||^2),   m = 0.1

averaged over the queries of a batch.
"""

from __future__ import annotations

import torch

from vpr_edge.errors import InvalidInputError


def triplet_ranking_loss(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                         margin: float = 0.1) -> torch.Tensor:
    """``query`` [B, D], ``positive`` [B, D], ``negatives`` [B, J, D] -> scalar loss.

    Summed over the J negatives, averaged over the B queries.
    """
    if query.dim() != 2 or positive.shape != query.shape or negatives.dim() != 3 \
            or negatives.shape[0] != query.shape[0] or negatives.shape[2] != query.shape[1]:
        raise InvalidInputError(
            f"expected query [B, D], positive [B, D], negatives [B, J, D]; got "
            f"{tuple(query.shape)}, {tuple(positive.shape)}, {tuple(negatives.shape)}"
        )
    d_pos = (query - positive).pow(2).sum(dim=1, keepdim=True)            # [B, 1]
    d_neg = (query.unsqueeze(1) - negatives).pow(2).sum(dim=2)            # [B, J]
    return torch.clamp(d_pos + margin - d_neg, min=0.0).sum(dim=1).mean()
