"""Metrics against hand-computed values and a slow, obviously correct reference."""

from __future__ import annotations

import math

import numpy as np
import torch

from oodrec.config import EvalConfig
from oodrec.data.dataset import DataReport, InteractionDataset, Interactions
from oodrec.eval.evaluate import Evaluator
from oodrec.eval.metrics import ndcg_at_k, ranking_metrics, recall_at_k
from oodrec.models.base import Embeddings


def test_hand_computed():
    # user 0: hits at ranks 1 and 3 of 2 relevant; user 1: hit at rank 2 of 4 relevant
    hits = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=torch.bool)
    num_pos = torch.tensor([2, 4])
    rec = recall_at_k(hits, num_pos, (2, 4))
    assert torch.allclose(rec[2], torch.tensor([0.5, 0.25], dtype=torch.float64))
    assert torch.allclose(rec[4], torch.tensor([1.0, 0.25], dtype=torch.float64))
    nd = ndcg_at_k(hits, num_pos, (2, 4))
    idcg2 = 1 + 1 / math.log2(3)
    assert math.isclose(nd[2][0].item(), 1 / idcg2)
    assert math.isclose(nd[4][0].item(), (1 + 0.5) / idcg2)
    idcg4 = 1 + 1 / math.log2(3) + 0.5 + 1 / math.log2(5)
    assert math.isclose(nd[4][1].item(), (1 / math.log2(3)) / idcg4)
    # Recall denominator is |T_u|, not min(K, |T_u|): 1 hit of 4 relevant at K=2 gives 0.25.
    assert math.isclose(rec[2][1].item(), 0.25)


def _reference(scores, train, truth, k):
    """Per-user Python reference: mask train, sort, count."""
    out_r, out_n = [], []
    for u in range(scores.shape[0]):
        if not truth[u]:
            continue
        s = scores[u].copy()
        s[list(train[u])] = -np.inf
        order = np.argsort(-s, kind="stable")[:k]
        rel = [1 if i in truth[u] else 0 for i in order]
        out_r.append(sum(rel) / len(truth[u]))
        dcg = sum(r / math.log2(p + 2) for p, r in enumerate(rel))
        idcg = sum(1 / math.log2(p + 2) for p in range(min(k, len(truth[u]))))
        out_n.append(dcg / idcg)
    return np.array(out_r), np.array(out_n)


def test_vectorised_matches_reference_on_random_inputs():
    rng = np.random.default_rng(0)
    num_users, num_items, dim = 37, 50, 8
    users_emb = torch.tensor(rng.normal(size=(num_users, dim)), dtype=torch.float32)
    items_emb = torch.tensor(rng.normal(size=(num_items, dim)), dtype=torch.float32)
    pairs = {s: ([], []) for s in ("train", "val", "iid_test", "ood_test")}
    train_sets, val_sets, ood_sets = (
        [set() for _ in range(num_users)],
        [set() for _ in range(num_users)],
        [set() for _ in range(num_users)],
    )
    for u in range(num_users):
        perm = rng.permutation(num_items)
        cuts = {
            "train": perm[:10],
            "val": perm[10:12],
            "iid_test": perm[12:13],
            "ood_test": perm[13 : 13 + rng.integers(1, 6)],
        }
        for s, its in cuts.items():
            pairs[s][0].extend([u] * len(its))
            pairs[s][1].extend(its.tolist())
        train_sets[u] = set(cuts["train"].tolist())
        val_sets[u] = set(cuts["val"].tolist())
        ood_sets[u] = set(cuts["ood_test"].tolist())
    splits = {s: Interactions(torch.tensor(a), torch.tensor(b)) for s, (a, b) in pairs.items()}
    ds = InteractionDataset("rand", num_users, num_items, splits, DataReport("rand", ""))
    ev = Evaluator(ds, EvalConfig(ks=(5, 10), user_batch_size=8), torch.device("cpu"))
    emb = Embeddings(users_emb, items_emb, users_emb, items_emb)
    res = ev.evaluate(emb)
    scores = (users_emb @ items_emb.T).numpy().astype(np.float64)
    for k in (5, 10):
        r_val, n_val = _reference(scores, train_sets, val_sets, k)
        assert np.allclose(res["val"].per_user[f"recall@{k}"].numpy(), r_val)
        assert np.allclose(res["val"].per_user[f"ndcg@{k}"].numpy(), n_val)
        masked = [train_sets[u] | val_sets[u] for u in range(num_users)]
        r_ood, n_ood = _reference(scores, masked, ood_sets, k)
        assert np.allclose(res["ood_test"].per_user[f"recall@{k}"].numpy(), r_ood)
        assert np.allclose(res["ood_test"].per_user[f"ndcg@{k}"].numpy(), n_ood)
        assert math.isclose(res["ood_test"].means[f"ndcg@{k}"], n_ood.mean(), rel_tol=1e-9)


def test_perfect_ranking_scores_one():
    hits = torch.ones(3, 20, dtype=torch.bool)
    m = ranking_metrics(hits, torch.tensor([20, 25, 20]), (10, 20))
    assert torch.allclose(m["ndcg@20"], torch.ones(3, dtype=torch.float64))
    assert torch.allclose(m["recall@20"], torch.tensor([1.0, 0.8, 1.0], dtype=torch.float64))
