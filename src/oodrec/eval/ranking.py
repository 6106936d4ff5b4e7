"""Batched full ranking with history masking -> top-K hit matrices."""

from __future__ import annotations

import torch

from oodrec.data.csr import CSR


def mask_history(scores: torch.Tensor, users: torch.Tensor, masks: list[CSR]) -> None:
    """Set the entries of ``masks`` (items of each user in ``users``) to -inf, in place.

    Shapes:
        scores: [B, I]; users: [B].
    """
    for m in masks:
        r, c = m.gather(users)
        scores[r, c] = -torch.inf


def top_items(scores: torch.Tensor, k_max: int) -> torch.Tensor:
    """Top-``min(k_max, I)`` item ids per row. Shapes: scores [B, I] -> [B, k]."""
    return torch.topk(scores, min(k_max, scores.shape[1]), dim=1).indices


def topk_hits(
    scores: torch.Tensor,
    users: torch.Tensor,
    truth: CSR,
    masks: list[CSR],
    k_max: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask history, take top-``k_max`` once and gather the hit matrix.

    Shapes:
        scores: [B, I] (modified in place: masked entries set to -inf); users: [B].
        returns: (hits [B, k_max] bool, topk item ids [B, k_max]).
    """
    mask_history(scores, users, masks)
    top = top_items(scores, k_max)  # [B, k]
    hits = truth.contains(users, top, scores.shape[1])  # [B, k]
    return hits, top
