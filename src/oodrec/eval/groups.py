"""Per-popularity-group metrics: Recall@K of held-out items grouped by their training degree.

Uses the evaluator's ranking core (``eval.ranking.topk_hits`` with the same history masks as
``Evaluator``), so group figures rank exactly as val / IID test / OOD test do.
"""

from __future__ import annotations

import torch

from oodrec.eval.evaluate import Evaluator, Scorer, as_scorer
from oodrec.eval.ranking import topk_hits
from oodrec.models.base import Embeddings


def popularity_buckets(item_degree: torch.Tensor, num_buckets: int = 4) -> torch.Tensor:
    """Split items into ``num_buckets`` equal-size groups by training degree.

    Items are sorted by degree (stable, ties by id); bucket 0 holds the least popular items.

    Args:
        item_degree: training degree of every item.
        num_buckets: number of groups (>= 1).

    Returns:
        Bucket id of every item.

    Shapes:
        item_degree: [I] -> [I] long in ``[0, num_buckets)``.
    """
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    num_items = item_degree.numel()
    order = torch.argsort(item_degree, stable=True)  # [I], least popular first
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(num_items, device=order.device)
    return ranks * num_buckets // max(num_items, 1)


@torch.no_grad()
def bucket_recall(
    scorer: Scorer | Embeddings,
    evaluator: Evaluator,
    split: str,
    bucket_of: torch.Tensor,
    k: int = 20,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recall@K per item group: hits of the group's held-out pairs / its held-out pairs.

    Args:
        scorer: a method's scorer (users -> scores over all items), or propagated embeddings.
        evaluator: the dataset's evaluator (held-out items, masks, evaluated users).
        split: ``val``, ``iid_test`` or ``ood_test``.
        bucket_of: group id of every item (e.g. ``popularity_buckets``).
        k: cut-off.

    Returns:
        ``(recall, count)``: recall per group (NaN for a group without held-out pairs) and
        the number of held-out pairs per group.

    Shapes:
        bucket_of: [I] long -> recall [G] float64, count [G] long, G = bucket_of.max() + 1.
    """
    scorer = as_scorer(scorer)
    device = evaluator.device
    bucket_of = bucket_of.to(device)
    num_groups = int(bucket_of.max()) + 1
    truth = evaluator.csr[split]
    users_all = evaluator.eval_users[split]
    hits_per = torch.zeros(num_groups, dtype=torch.long, device=device)
    for start in range(0, users_all.numel(), evaluator.cfg.user_batch_size):
        users = users_all[start : start + evaluator.cfg.user_batch_size]
        scores = scorer(users)  # [B, I]
        hits, top = topk_hits(scores, users, truth, evaluator.masks[split], k)  # [B, k]
        hits_per += torch.bincount(bucket_of[top[hits]], minlength=num_groups)
    count = torch.bincount(bucket_of[truth.indices], minlength=num_groups)  # [G]
    recall = hits_per.double() / count.double()  # NaN where count == 0
    return recall.cpu(), count.cpu()


__all__ = ["bucket_recall", "popularity_buckets"]
