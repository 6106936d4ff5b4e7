"""Recall@K and NDCG@K from a top-K hit matrix, per user, every K at once.

Conventions (docs/protocol.md#metrics): Recall@K = |topK ∩ T_u| / |T_u| (denominator |T_u|, not
min(K, |T_u|)); NDCG@K with binary gains, log2(rank + 1) discounts and IDCG over min(K, |T_u|)
positions.
"""

from __future__ import annotations

import torch


def _discounts(k: int, device: torch.device) -> torch.Tensor:
    """1 / log2(rank + 1) for ranks 1..k. Shape [k]."""
    return 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64, device=device))


def recall_at_k(
    hits: torch.Tensor, num_pos: torch.Tensor, ks: tuple[int, ...]
) -> dict[int, torch.Tensor]:
    """Per-user Recall@K.

    Shapes:
        hits: [B, K_max] bool/float, hits[b, r] = top-(r+1) item of user b is relevant.
        num_pos: [B] number of relevant items (> 0).
        returns: {k: [B] float64}.
    """
    cum = hits.to(torch.float64).cumsum(1)  # [B, K_max]
    denom = num_pos.to(torch.float64)
    return {k: cum[:, min(k, hits.shape[1]) - 1] / denom for k in ks}


def ndcg_at_k(
    hits: torch.Tensor, num_pos: torch.Tensor, ks: tuple[int, ...]
) -> dict[int, torch.Tensor]:
    """Per-user NDCG@K with binary gains.

    Shapes:
        hits: [B, K_max]; num_pos: [B]; returns {k: [B] float64}.
    """
    k_max = hits.shape[1]
    disc = _discounts(k_max, hits.device)  # [K_max]
    dcg = (hits.to(torch.float64) * disc).cumsum(1)  # [B, K_max]
    idcg_table = torch.cat(
        [torch.zeros(1, dtype=torch.float64, device=hits.device), disc.cumsum(0)]
    )
    out = {}
    for k in ks:
        kk = min(k, k_max)
        idcg = idcg_table[num_pos.clamp(max=kk)]  # [B]
        out[k] = dcg[:, kk - 1] / idcg
    return out


def ranking_metrics(
    hits: torch.Tensor, num_pos: torch.Tensor, ks: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """``{"recall@k": [B], "ndcg@k": [B]}`` for every k."""
    out = {f"recall@{k}": v for k, v in recall_at_k(hits, num_pos, ks).items()}
    out.update({f"ndcg@{k}": v for k, v in ndcg_at_k(hits, num_pos, ks).items()})
    return out
