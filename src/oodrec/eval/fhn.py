"""Negative diagnostics: false-hard-negative ratio, norms and hardness (CNSDiff paper 4.4).

A negative is a false hard negative when its cosine similarity with one of the user's held-out
positives exceeds a threshold (0.99 in the paper). Held-out positives are the user's val, IID
test and OOD test items.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oodrec.data.csr import CSR

# Elements per intermediate chunk (similarities or gathered negatives): bounds the memory of
# the diagnostics whatever the number of items.
CHUNK_ELEMENTS = 1 << 23


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
    false_hard = _false_hard(users, neg_emb, item_emb, held_out, threshold)  # [B, K]
    return {
        "fhn_ratio": float(false_hard.float().mean()),
        "neg_norm": float(neg_emb.norm(dim=-1).mean()),
        "item_norm": float(item_emb.norm(dim=-1).mean()),
        "hardness": float((s_neg - s_pos.unsqueeze(1)).mean()),
    }


def _false_hard(
    users: torch.Tensor,
    neg_emb: torch.Tensor,
    item_emb: torch.Tensor,
    held_out: CSR,
    threshold: float,
    budget: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Whether each negative is within ``threshold`` cosine of one of its user's held-out items.

    Compares every negative with its own user's held-out items only (M pairs of the batch),
    in chunks of at most ``budget`` elements: O(M K D) work, no [B, ., I] tensor.

    Shapes:
        users: [B]; neg_emb: [B, K, D]; item_emb: [I, D] -> [B, K] bool.
    """
    b, k, d = neg_emb.shape
    neg_n = F.normalize(neg_emb, dim=-1)  # [B, K, D]
    item_n = F.normalize(item_emb, dim=-1)  # [I, D]
    row, col = held_out.gather(users)  # [M], [M]
    count = torch.zeros(b, k, dtype=torch.long, device=neg_emb.device)
    step = max(1, budget // max(k * d, 1))
    for start in range(0, row.numel(), step):
        r, c = row[start : start + step], col[start : start + step]
        cos = torch.bmm(neg_n[r], item_n[c].unsqueeze(2)).squeeze(2)  # [m, K]
        count.index_add_(0, r, (cos > threshold).long())
    return count > 0


def nearest_items(emb: torch.Tensor, item_emb: torch.Tensor, budget: int = CHUNK_ELEMENTS):
    """Id of the real item with the highest cosine similarity to each embedding.

    Items are scanned in chunks of at most ``budget`` similarities (one chunk when the whole
    [B, K, I] fits); ties go to the lowest id, as ``argmax`` over all items.

    Shapes:
        emb: [B, K, D]; item_emb: [I, D] -> [B, K] long.
    """
    emb_n = F.normalize(emb, dim=-1)
    item_n = F.normalize(item_emb, dim=-1)
    num_items = item_n.shape[0]
    step = max(1, budget // max(emb.shape[0] * emb.shape[1], 1))
    if step >= num_items:
        return torch.einsum("bkd,id->bki", emb_n, item_n).argmax(-1)
    best_val = best_idx = None
    for start in range(0, num_items, step):
        cos = torch.einsum("bkd,id->bki", emb_n, item_n[start : start + step])  # [B, K, C]
        val, idx = cos.max(-1)
        idx = idx + start
        if best_val is None:
            best_val, best_idx = val, idx
            continue
        # strictly better wins (earlier chunk keeps ties); NaN counts as maximal, as in argmax
        better = (val > best_val) | (val.isnan() & ~best_val.isnan())
        best_val = torch.where(better, val, best_val)
        best_idx = torch.where(better, idx, best_idx)
    return best_idx


def true_fhn(users: torch.Tensor, negs, item_emb: torch.Tensor, relevance: torch.Tensor) -> float:
    """Share of negatives the user truly likes (simulator ground truth).

    Real negatives (``negs.ids`` set) are looked up directly; synthesised negatives are mapped
    to their nearest real item by cosine similarity first (items scanned in bounded chunks).

    Shapes:
        users: [B]; negs.emb [B, D] or [B, K, D]; item_emb [I, D]; relevance [U, I] bool.
    """
    ids = negs.ids
    if ids is None:
        emb = negs.emb if negs.emb.dim() == 3 else negs.emb.unsqueeze(1)  # [B, K, D]
        ids = nearest_items(emb, item_emb)  # [B, K]
    from oodrec.data.synthetic import true_fhn_ratio

    return true_fhn_ratio(users, ids, relevance)
