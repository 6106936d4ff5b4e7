"""Per-popularity-bucket recall and slot shares (eval.groups) against a slow, obviously correct
reference."""

from __future__ import annotations

import pytest
import torch

from oodrec.config import DataConfig, EvalConfig
from oodrec.data.dataset import load_dataset
from oodrec.eval.evaluate import Evaluator
from oodrec.eval.groups import bucket_recall, bucket_stats, popularity_buckets
from oodrec.models.base import Embeddings


def test_popularity_buckets_equal_sizes_least_popular_first():
    degree = torch.tensor([5, 1, 9, 1, 3, 7, 0, 2])
    buckets = popularity_buckets(degree, 4)
    assert buckets.tolist() == [2, 0, 3, 1, 2, 3, 0, 1]
    assert torch.bincount(buckets).tolist() == [2, 2, 2, 2]


def _random_case(tiny_dir, seed: int, user_batch_size: int):
    """The tiny dataset, random embeddings, its evaluator, 3 popularity buckets, and a slow
    reference ranker: ``top(u, k)`` is user ``u``'s k best items outside train and val."""
    ds = load_dataset(DataConfig(dataset=str(tiny_dir)))
    gen = torch.Generator().manual_seed(seed)
    users = torch.randn(ds.num_users, 4, generator=gen)
    items = torch.randn(ds.num_items, 4, generator=gen)
    emb = Embeddings(users, items, users, items)
    evaluator = Evaluator(ds, EvalConfig(user_batch_size=user_batch_size), torch.device("cpu"))
    seen = {}
    for split in ("train", "val"):
        for u, i in zip(ds.splits[split].users.tolist(), ds.splits[split].items.tolist()):
            seen.setdefault(u, set()).add(i)

    def top(u: int, k: int) -> list[int]:
        scores = (users[u] @ items.T).tolist()
        ranked = sorted(range(ds.num_items), key=lambda i: -scores[i])
        return [i for i in ranked if i not in seen.get(u, set())][:k]

    return ds, emb, evaluator, popularity_buckets(ds.item_degree(), 3), top


def test_bucket_recall_matches_reference(tiny_dir):
    ds, emb, evaluator, buckets, top = _random_case(tiny_dir, seed=0, user_batch_size=7)
    k = 5
    recall, count = bucket_recall(emb, evaluator, "ood_test", buckets, k)
    held = {}
    for u, i in zip(ds.splits["ood_test"].users.tolist(), ds.splits["ood_test"].items.tolist()):
        held.setdefault(u, set()).add(i)
    hits, total = [0, 0, 0], [0, 0, 0]
    for u, targets in held.items():
        listed = top(u, k)
        for i in targets:
            total[int(buckets[i])] += 1
            hits[int(buckets[i])] += i in listed
    assert count.tolist() == total
    assert recall.tolist() == [h / t for h, t in zip(hits, total)]


def test_bucket_shares_match_reference(tiny_dir):
    ds, emb, evaluator, buckets, top = _random_case(tiny_dir, seed=1, user_batch_size=5)
    k = 4
    stats = bucket_stats(emb, evaluator, "ood_test", buckets, k)
    slot_share, held_share = stats["slot_share"], stats["held_out_share"]
    slots, held = [0, 0, 0], [0, 0, 0]
    for u in sorted(set(ds.splits["ood_test"].users.tolist())):
        for i in top(u, k):
            slots[int(buckets[i])] += 1
    for i in ds.splits["ood_test"].items.tolist():
        held[int(buckets[i])] += 1
    assert slot_share.tolist() == pytest.approx([s / sum(slots) for s in slots])
    assert held_share.tolist() == pytest.approx([h / sum(held) for h in held])
    assert sum(slots) > 0 and len(set(slots)) > 1  # a case that can tell the buckets apart
