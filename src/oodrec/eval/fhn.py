"""Negative diagnostics: false-hard-negative ratio, norms and hardness (CNSDiff paper 4.4).

A negative is a false hard negative when its cosine similarity with one of the user's held-out
positives exceeds a threshold (0.99 in the paper). Held-out positives are the user's val, IID
test and OOD test items.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oodrec.eval.ranking import CSR


def negative_diagnostics(
    users: torch.Tensor,
    pos_items: torch.Tensor,
    neg_emb: torch.Tensor,
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    held_out: CSR,
    threshold: float = 0.99,
) -> dict[str, float]:
    """Diagnostics of one batch of negatives.

    Shapes:
        users, pos_items: [B]; neg_emb: [B, D] or [B, K, D]; user_emb [U, D]; item_emb [I, D].

    Returns:
        ``fhn_ratio`` (share of negatives that are false hard negatives), ``neg_norm``
        (mean L2 norm of negatives), ``item_norm`` (mean norm of real item embeddings),
        ``hardness`` (mean s(u, neg) - s(u, pos)).
    """
    if neg_emb.dim() == 2:
        neg_emb = neg_emb.unsqueeze(1)  # [B, K, D]
    u = user_emb[users]  # [B, D]
    s_pos = (u * item_emb[pos_items]).sum(-1)  # [B]
    s_neg = torch.einsum("bd,bkd->bk", u, neg_emb)  # [B, K]
    cos = torch.einsum(
        "bkd,id->bki", F.normalize(neg_emb, dim=-1), F.normalize(item_emb, dim=-1)
    )  # [B, K, I]
    relevant = held_out.dense(users, item_emb.shape[0])  # [B, I]
    false_hard = ((cos > threshold) & relevant.unsqueeze(1)).any(-1)  # [B, K]
    return {
        "fhn_ratio": float(false_hard.float().mean()),
        "neg_norm": float(neg_emb.norm(dim=-1).mean()),
        "item_norm": float(item_emb.norm(dim=-1).mean()),
        "hardness": float((s_neg - s_pos.unsqueeze(1)).mean()),
    }


def true_fhn(users: torch.Tensor, negs, item_emb: torch.Tensor, relevance: torch.Tensor) -> float:
    """Share of negatives the user truly likes (simulator ground truth).

    Real negatives (``negs.ids`` set) are looked up directly; synthesised negatives are mapped
    to their nearest real item by cosine similarity first.

    Shapes:
        users: [B]; negs.emb [B, D] or [B, K, D]; item_emb [I, D]; relevance [U, I] bool.
    """
    ids = negs.ids
    if ids is None:
        emb = negs.emb if negs.emb.dim() == 3 else negs.emb.unsqueeze(1)  # [B, K, D]
        cos = torch.einsum("bkd,id->bki", F.normalize(emb, dim=-1), F.normalize(item_emb, dim=-1))
        ids = cos.argmax(-1)  # [B, K]
    from oodrec.data.synthetic import true_fhn_ratio

    return true_fhn_ratio(users, ids, relevance)
