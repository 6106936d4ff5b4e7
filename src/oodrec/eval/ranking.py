"""Batched full ranking with history masking -> top-K hit matrices."""

from __future__ import annotations

import torch


class CSR:
    """Per-user item lists in CSR form (rows = users).

    Shapes:
        indptr: [U+1]; indices: [N] (item ids, grouped by user).
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor, num_users: int) -> None:
        width = int(items.max()) + 1 if items.numel() else 1
        order = torch.argsort(users * width + items)
        self.indices = items[order]
        counts = torch.bincount(users, minlength=num_users)
        self.indptr = torch.zeros(num_users + 1, dtype=torch.long)
        self.indptr[1:] = counts.cumsum(0)
        self.num_users = num_users

    def to(self, device: torch.device | str) -> CSR:
        self.indices = self.indices.to(device)
        self.indptr = self.indptr.to(device)
        return self

    def counts(self) -> torch.Tensor:
        """Items per user. Shape [U]."""
        return self.indptr[1:] - self.indptr[:-1]

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row positions and item ids of the entries of ``rows``.

        Shapes:
            rows: [B] -> (row_pos [M], items [M]) with row_pos indexing into ``rows``.
        """
        starts = self.indptr[rows]
        lens = self.indptr[rows + 1] - starts
        total = int(lens.sum())
        row_pos = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), lens)
        first = torch.repeat_interleave(starts - (lens.cumsum(0) - lens), lens)
        idx = first + torch.arange(total, device=rows.device)
        return row_pos, self.indices[idx]

    def dense(self, rows: torch.Tensor, num_cols: int) -> torch.Tensor:
        """Boolean indicator [B, num_cols] of the items of ``rows``."""
        out = torch.zeros(rows.numel(), num_cols, dtype=torch.bool, device=rows.device)
        r, c = self.gather(rows)
        out[r, c] = True
        return out


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
    for m in masks:
        r, c = m.gather(users)
        scores[r, c] = -torch.inf
    k = min(k_max, scores.shape[1])
    top = torch.topk(scores, k, dim=1).indices  # [B, k]
    relevant = truth.dense(users, scores.shape[1])  # [B, I]
    hits = torch.gather(relevant, 1, top)  # [B, k]
    return hits, top
