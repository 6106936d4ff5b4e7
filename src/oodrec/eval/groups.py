"""Group metrics: Recall@K of held-out pairs grouped by the training degree of their item
(popularity buckets, Figure 1) or by their interaction time (time groups, Figure 6), and the
share of the top-K lists that goes to each popularity bucket (Figure 1's exposure panel).

All use the evaluator's ranking core (``eval.ranking.topk_hits`` with the same history masks as
``Evaluator``), so group figures rank exactly as val / IID test / OOD test do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from oodrec.data.dataset import InteractionDataset
from oodrec.errors import DataValidationError
from oodrec.eval.evaluate import Evaluator, Scorer, as_scorer
from oodrec.eval.ranking import topk_hits
from oodrec.models.base import Embeddings

GroupOf = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``group_of(users [H], items [H]) -> group id [H]`` of held-out pairs."""


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


def _ranked_batches(
    scorer: Scorer, evaluator: Evaluator, split: str, k: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The evaluator's top ``k`` lists of every evaluated user of ``split``, in user batches.

    Yields:
        ``(users [B], hits [B, k] bool, top [B, k] long)``: the ranked items of each user, with
        the same history masks as ``Evaluator``, and whether each is a held-out item of ``split``.
    """
    truth = evaluator.csr[split]
    users_all = evaluator.eval_users[split]
    for start in range(0, users_all.numel(), evaluator.cfg.user_batch_size):
        users = users_all[start : start + evaluator.cfg.user_batch_size]
        scores = scorer(users)  # [B, I]
        hits, top = topk_hits(scores, users, truth, evaluator.masks[split], k)  # [B, k]
        yield users, hits, top


def _group_hits(
    scorer: Scorer, evaluator: Evaluator, split: str, group_of: GroupOf, num_groups: int, k: int
) -> torch.Tensor:
    """Hits in the top ``k`` per group of held-out pairs, over every evaluated user of ``split``.

    Shapes:
        returns: [num_groups] long.
    """
    hits_per = torch.zeros(num_groups, dtype=torch.long, device=evaluator.device)
    for users, hits, top in _ranked_batches(scorer, evaluator, split, k):
        hit_users = users.unsqueeze(1).expand_as(top)[hits]  # [H]
        hits_per += torch.bincount(group_of(hit_users, top[hits]), minlength=num_groups)
    return hits_per


@torch.no_grad()
def bucket_stats(
    scorer: Scorer | Embeddings,
    evaluator: Evaluator,
    split: str,
    bucket_of: torch.Tensor,
    k: int = 20,
) -> dict[str, torch.Tensor]:
    """Per item group, from one ranking pass over the evaluated users of ``split``: Recall@K of
    the group's held-out pairs, and where the recommendations go (the share of all top-``k``
    slots), next to the share of the held-out pairs.

    A split whose held-out items avoid a group (a popularity-shifted OOD test holds few of the
    most popular items) can be hit only by the slots given to the other groups, so the two
    shares side by side show how far a model's lists follow the training popularity.

    Args:
        scorer: a method's scorer (users -> scores over all items), or propagated embeddings.
        evaluator: the dataset's evaluator (held-out items, masks, evaluated users).
        split: ``val``, ``iid_test`` or ``ood_test``: whose users are ranked, with its masks.
        bucket_of: group id of every item (e.g. ``popularity_buckets``).
        k: cut-off.

    Returns:
        ``recall`` (hits / held-out pairs; NaN for a group without held-out pairs), ``count``
        (held-out pairs), ``slot_share`` and ``held_out_share`` (each summing to 1 over the
        groups).

    Shapes:
        bucket_of: [I] long -> each [G] (float64; ``count`` long), G = bucket_of.max() + 1.
    """
    bucket_of = bucket_of.to(evaluator.device)
    num_groups = int(bucket_of.max()) + 1
    hits_per = torch.zeros(num_groups, dtype=torch.long, device=evaluator.device)
    slots = torch.zeros(num_groups, dtype=torch.long, device=evaluator.device)
    for _users, hits, top in _ranked_batches(as_scorer(scorer), evaluator, split, k):
        groups = bucket_of[top]  # [B, k]
        hits_per += torch.bincount(groups[hits], minlength=num_groups)
        slots += torch.bincount(groups.flatten(), minlength=num_groups)
    count = torch.bincount(bucket_of[evaluator.csr[split].indices], minlength=num_groups)  # [G]
    return {
        "recall": (hits_per.double() / count.double()).cpu(),  # NaN where count == 0
        "count": count.cpu(),
        "slot_share": (slots.double() / max(int(slots.sum()), 1)).cpu(),
        "held_out_share": (count.double() / max(int(count.sum()), 1)).cpu(),
    }


def bucket_recall(
    scorer: Scorer | Embeddings,
    evaluator: Evaluator,
    split: str,
    bucket_of: torch.Tensor,
    k: int = 20,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recall@K per item group: ``(recall, count)`` of ``bucket_stats``.

    Shapes:
        bucket_of: [I] long -> recall [G] float64, count [G] long, G = bucket_of.max() + 1.
    """
    stats = bucket_stats(scorer, evaluator, split, bucket_of, k)
    return stats["recall"], stats["count"]


def time_groups(
    timestamps: torch.Tensor, users: torch.Tensor, items: torch.Tensor, num_groups: int = 4
) -> torch.Tensor:
    """Split interactions into ``num_groups`` equal-size groups by timestamp (group 0 the
    earliest; sizes differ by at most one).

    Equal timestamps are ordered by ``(user, item)``, never by position, so the groups do not
    depend on file order; a run of equal times may straddle a group boundary.

    Args:
        timestamps: time of every interaction.
        users, items: the interactions (tie-break).
        num_groups: number of groups (>= 1).

    Returns:
        Group id of every interaction.

    Shapes:
        timestamps, users, items: [N] -> [N] long in ``[0, num_groups)``.
    """
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    n = timestamps.numel()
    width = int(items.max()) + 1 if n else 1
    by_pair = torch.argsort(users * width + items, stable=True)  # [N]
    order = by_pair[torch.argsort(timestamps[by_pair], stable=True)]  # [N], by (time, pair)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(n, device=order.device)
    return ranks * num_groups // max(n, 1)


@torch.no_grad()
def time_group_recall(
    scorer: Scorer | Embeddings,
    evaluator: Evaluator,
    dataset: InteractionDataset,
    split: str = "ood_test",
    num_groups: int = 4,
    k: int = 20,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Recall@K per time group (the paper's Figure 6): the held-out pairs of ``split`` are cut
    into ``num_groups`` equal-size groups by timestamp (``time_groups``), and each group's
    recall is its hits in the top ``k`` / its pairs.

    Args:
        scorer: a method's scorer (users -> scores over all items), or propagated embeddings.
        evaluator: the evaluator of ``dataset``.
        dataset: a dataset with timestamps (``dataset.has_timestamps``).
        split: ``val``, ``iid_test`` or ``ood_test``.
        num_groups: number of time groups.
        k: cut-off.

    Returns:
        ``(recall, count, span)``: recall per group (NaN for an empty group), pairs per group,
        and the first and last timestamp of each group (in ``dataset.report.timestamp_unit``).

    Shapes:
        recall [G] float64, count [G] long, span [G, 2] long.

    Raises:
        DataValidationError: the dataset has no timestamps (file order is never used as time).
        ValueError: ``evaluator`` was built for another dataset.
    """
    inter = dataset.splits[split]
    if inter.timestamps is None:
        raise DataValidationError(
            f"dataset {dataset.name!r} ({dataset.report.source}) has no timestamps: per-time-group "
            "recall needs interaction times, and file order is never used as time. Build the "
            "dataset with `oodrec prepare` from a raw log that has timestamps"
        )
    if len(inter) != evaluator.csr[split].indices.numel():
        raise ValueError(
            f"evaluator holds {evaluator.csr[split].indices.numel()} {split} pairs, the dataset "
            f"{len(inter)}: build the evaluator from this dataset"
        )
    device = evaluator.device
    num_items = dataset.num_items
    group = time_groups(inter.timestamps, inter.users, inter.items, num_groups)  # [N]
    keys = inter.keys(num_items)
    order = torch.argsort(keys)
    sorted_keys, sorted_group = keys[order].to(device), group[order].to(device)

    def group_of(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        # every hit is a held-out pair of the split, so its key is in sorted_keys
        return sorted_group[torch.searchsorted(sorted_keys, users * num_items + items)]

    hits_per = _group_hits(as_scorer(scorer), evaluator, split, group_of, num_groups, k)
    count = torch.bincount(group, minlength=num_groups)  # [G]
    recall = hits_per.cpu().double() / count.double()  # NaN where count == 0
    big = torch.iinfo(torch.long)
    first = torch.full((num_groups,), big.max).scatter_reduce(0, group, inter.timestamps, "amin")
    last = torch.full((num_groups,), big.min).scatter_reduce(0, group, inter.timestamps, "amax")
    return recall, count, torch.stack([first, last], dim=1)


__all__ = [
    "bucket_recall",
    "bucket_stats",
    "popularity_buckets",
    "time_group_recall",
    "time_groups",
]
