"""BPR loss and L2 regularisation (docs/methods/lightgcn.md#bpr-and-l2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(
    users: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the batch of softplus(s_neg - s_pos) = -log sigma(s_pos - s_neg).

    With K negatives per row the K terms are summed (optionally weighted).

    Shapes:
        users, pos: [B, D]; neg: [B, D] or [B, K, D]; weights: [K]; returns scalar.
    """
    s_pos = (users * pos).sum(-1)  # [B]
    if neg.dim() == 2:
        return F.softplus((users * neg).sum(-1) - s_pos).mean()
    s_neg = torch.einsum("bd,bkd->bk", users, neg)  # [B, K]
    terms = F.softplus(s_neg - s_pos.unsqueeze(1))  # [B, K]
    if weights is not None:
        terms = terms * weights
    return terms.sum(1).mean()


def l2_loss(*egos: torch.Tensor, batch_size: int, form: str = "squared") -> torch.Tensor:
    """L2 regulariser on the batch's ego embeddings (coefficient applied by the caller).

    ``squared``: (1 / 2B) * sum_x ||x||_F^2 (LightGCN / MixGCF / AHNS form).
    ``selfrec``: (1 / B) * sum_x ||x||_F / rows(x), the CNSDiff code's non-squared form (D10).

    Shapes:
        each ego: [B, D] or [B, K, D]; returns scalar.
    """
    if form == "squared":
        return sum(x.pow(2).sum() for x in egos) / (2 * batch_size)
    if form == "selfrec":
        return sum(x.norm() / x.shape[0] for x in egos) / batch_size
    raise ValueError(f"unknown l2 form {form!r}")
