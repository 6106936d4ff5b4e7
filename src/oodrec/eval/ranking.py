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


BLOCK = 64
"""Items per block of ``top_items_by_blocks``."""


def block_buffer(rows: int, num_items: int, device: torch.device) -> torch.Tensor:
    """A [rows, I'] score buffer for ``top_items_by_blocks``: I' is ``num_items`` rounded up to
    a multiple of ``BLOCK`` and the padding columns hold ``-inf``; write scores into
    ``buffer[:, :num_items]``."""
    width = -(-num_items // BLOCK) * BLOCK
    buf = torch.empty(rows, width, device=device)
    buf[:, num_items:] = -torch.inf
    return buf


def top_items_by_blocks(buffer: torch.Tensor, k_max: int, num_items: int) -> torch.Tensor:
    """``top_items(buffer[:, :num_items], k_max)`` in about half the time on the CPU.

    The row is cut into blocks of ``BLOCK`` items; only the ``k`` blocks with the largest maxima
    can hold a top-``k`` item (any other block's maximum is beaten by ``k`` items of the chosen
    blocks), so a max per block, a top-``k`` over the block maxima and a top-``k`` over the
    chosen blocks' ``k * BLOCK`` items replace the top-``k`` over all ``I``. The selected values
    are exactly ``top_items``'s; only which of several exactly tied items is returned may
    differ.

    Shapes:
        buffer: [B, I'] from ``block_buffer`` (padding ``-inf``) -> [B, k] item ids, best first.
    """
    n, width = buffer.shape
    k = min(k_max, num_items)
    blocks = width // BLOCK
    if blocks < 2 * k:  # nothing to gain on narrow matrices
        return top_items(buffer[:, :num_items], k)
    maxima = buffer.view(n, blocks, BLOCK).amax(-1)  # [B, W]
    chosen = torch.topk(maxima, k, dim=1).indices  # [B, k]
    rows = torch.arange(n, device=buffer.device).unsqueeze(1) * blocks + chosen
    cand = buffer.view(n * blocks, BLOCK).index_select(0, rows.view(-1)).view(n, k * BLOCK)
    best = torch.topk(cand, k, dim=1).indices  # [B, k] positions among the candidates
    ids = chosen.unsqueeze(2) * BLOCK + torch.arange(BLOCK, device=buffer.device)
    top = ids.view(n, -1).gather(1, best)
    # a row with fewer than k unmasked items may end in padding (-inf ties -inf): rank it in full
    short = (top >= num_items).any(1)
    if bool(short.any()):
        top[short] = top_items(buffer[short, :num_items], k)
    return top
