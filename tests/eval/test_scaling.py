"""Evaluation and diagnostics without [B, I] work, against the former dense implementations.

The references below are the dense code these functions replaced (a [B, I] indicator per split,
one score copy per split, a [B, K, I] similarity tensor), kept here to pin exact equality.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from oodrec.config import SPLITS, EvalConfig
from oodrec.data.csr import CSR
from oodrec.data.dataset import DataReport, InteractionDataset, Interactions
from oodrec.eval.evaluate import Evaluator, SplitResult
from oodrec.eval.fhn import _false_hard, nearest_items, negative_diagnostics, true_fhn
from oodrec.eval.metrics import ranking_metrics
from oodrec.eval.ranking import topk_hits

# ---------------------------------------------------------------------------- references


def _ref_dense(csr: CSR, rows: torch.Tensor, num_cols: int) -> torch.Tensor:
    out = torch.zeros(rows.numel(), num_cols, dtype=torch.bool)
    r, c = csr.gather(rows)
    out[r, c] = True
    return out


def _ref_topk_hits(scores, users, truth, masks, k_max):
    for m in masks:
        r, c = m.gather(users)
        scores[r, c] = -torch.inf
    k = min(k_max, scores.shape[1])
    top = torch.topk(scores, k, dim=1).indices
    relevant = _ref_dense(truth, users, scores.shape[1])
    return torch.gather(relevant, 1, top), top


def _ref_evaluate(ev: Evaluator, scorer, splits) -> dict[str, SplitResult]:
    ks = ev.cfg.ks
    member = torch.stack([ev.csr[s].counts() > 0 for s in splits])
    users_all = torch.nonzero(member.any(0)).squeeze(1)
    per_user = {s: {} for s in splits}
    for start in range(0, users_all.numel(), ev.cfg.user_batch_size):
        users = users_all[start : start + ev.cfg.user_batch_size]
        scores = scorer(users)
        for i, split in enumerate(splits):
            rows = member[i, users]
            if not bool(rows.any()):
                continue
            su = users[rows]
            sub = scores[rows] if len(splits) > 1 or not bool(rows.all()) else scores
            hits, _ = _ref_topk_hits(sub, su, ev.csr[split], ev.masks[split], max(ks))
            num_pos = ev.csr[split].counts()[su]
            for name, vals in ranking_metrics(hits, num_pos, ks).items():
                per_user[split].setdefault(name, []).append(vals)
    out = {}
    for split in splits:
        cat = {k: torch.cat(v) for k, v in per_user[split].items()}
        out[split] = SplitResult(
            {k: float(v.mean()) for k, v in cat.items()}, ev.eval_users[split], cat
        )
    return out


def _ref_negative_diagnostics(users, pos_items, neg_emb, user_emb, item_emb, held_out, thr):
    if neg_emb.dim() == 2:
        neg_emb = neg_emb.unsqueeze(1)
    u = user_emb[users]
    s_pos = (u * item_emb[pos_items]).sum(-1)
    s_neg = torch.einsum("bd,bkd->bk", u, neg_emb)
    cos = torch.einsum("bkd,id->bki", F.normalize(neg_emb, dim=-1), F.normalize(item_emb, dim=-1))
    relevant = _ref_dense(held_out, users, item_emb.shape[0])
    false_hard = ((cos > thr) & relevant.unsqueeze(1)).any(-1)
    stats = {
        "fhn_ratio": float(false_hard.float().mean()),
        "neg_norm": float(neg_emb.norm(dim=-1).mean()),
        "item_norm": float(item_emb.norm(dim=-1).mean()),
        "hardness": float((s_neg - s_pos.unsqueeze(1)).mean()),
    }
    return stats, false_hard


# ---------------------------------------------------------------------------- helpers


def _random_csr(gen, num_users, num_items, max_per_user, empty_every=3):
    """Random CSR with duplicate pairs and some users without entries."""
    us, its = [], []
    for u in range(num_users):
        if u % empty_every == 0:
            continue
        n = int(torch.randint(1, max_per_user + 1, (1,), generator=gen))
        items = torch.randint(0, num_items, (n,), generator=gen)
        us.append(torch.full((n,), u))
        its.append(items)
    if not us:
        return CSR(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), num_users)
    users, items = torch.cat(us), torch.cat(its)
    perm = torch.randperm(users.numel(), generator=gen)
    return CSR(users[perm], items[perm], num_users)


def _random_dataset(seed, num_users=41, num_items=30):
    gen = torch.Generator().manual_seed(seed)
    splits = {}
    for i, name in enumerate(("train", "val", "iid_test", "ood_test")):
        u, it = [], []
        for user in range(num_users):
            # some users miss val, some miss a test split, some have none of them
            if name != "train" and (user + i) % 4 == 0:
                continue
            n = int(torch.randint(1, 8 if name == "train" else 4, (1,), generator=gen))
            u += [user] * n
            it += torch.randint(0, num_items, (n,), generator=gen).tolist()
        splits[name] = Interactions(torch.tensor(u), torch.tensor(it))
    return InteractionDataset("rand", num_users, num_items, splits, DataReport("rand", ""))


def _tied_scorer(seed, num_users, num_items, levels=3):
    """Scores from a few integer levels: many exact ties."""
    gen = torch.Generator().manual_seed(seed)
    table = torch.randint(0, levels, (num_users, num_items), generator=gen).float()
    return lambda users: table[users].clone()


# ---------------------------------------------------------------------------- ranking


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_contains_matches_dense_indicator(seed):
    gen = torch.Generator().manual_seed(seed)
    num_users, num_items = 23, 17
    csr = _random_csr(gen, num_users, num_items, max_per_user=9)
    users = torch.randint(0, num_users, (15,), generator=gen)  # repeats allowed
    cols = torch.randint(0, num_items, (15, 6), generator=gen)
    want = torch.gather(_ref_dense(csr, users, num_items), 1, cols)
    assert torch.equal(csr.contains(users, cols, num_items), want)
    # a cache built for another width is rebuilt
    assert torch.equal(csr.contains(users, cols, num_items + 5), want)
    assert torch.equal(csr.contains(users, cols, num_items), want)


def test_contains_on_empty_csr_and_empty_batch():
    csr = CSR(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 4)
    got = csr.contains(torch.tensor([0, 3]), torch.tensor([[0, 1], [2, 0]]), 3)
    assert got.dtype == torch.bool and not got.any() and got.shape == (2, 2)
    csr = CSR(torch.tensor([1, 1]), torch.tensor([0, 2]), 4)
    empty = csr.contains(torch.zeros(0, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long), 3)
    assert empty.shape == (0, 3)


def test_contains_hand_computed():
    # user 0: {2}; user 1: {}; user 2: {0, 3}
    csr = CSR(torch.tensor([2, 0, 2]), torch.tensor([3, 2, 0]), 3)
    got = csr.contains(torch.tensor([0, 1, 2]), torch.tensor([[2, 3], [0, 2], [3, 0]]), 4)
    assert got.tolist() == [[True, False], [False, False], [True, True]]


@pytest.mark.parametrize("k_max", [1, 5, 40])  # 40 > number of items
def test_topk_hits_matches_dense_reference_with_ties(k_max):
    gen = torch.Generator().manual_seed(k_max)
    num_users, num_items = 19, 13
    truth = _random_csr(gen, num_users, num_items, 4)
    masks = [_random_csr(gen, num_users, num_items, 6, empty_every=5) for _ in range(2)]
    users = torch.randint(0, num_users, (11,), generator=gen)
    scores = torch.randint(0, 3, (11, num_items), generator=gen).float()
    want_s = scores.clone()
    hits, top = topk_hits(scores, users, truth, masks, k_max)
    want_hits, want_top = _ref_topk_hits(want_s, users, truth, masks, k_max)
    assert hits.dtype == torch.bool and hits.shape == (11, min(k_max, num_items))
    assert torch.equal(top, want_top) and torch.equal(hits, want_hits)
    assert torch.equal(scores, want_s)  # same in-place masking


# ---------------------------------------------------------------------------- evaluator


def _plain(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith(("ips_", "strat_"))}


@pytest.mark.parametrize(
    "splits",
    [SPLITS, ("val",), ("iid_test",), ("ood_test", "val"), ("iid_test", "ood_test")],
)
@pytest.mark.parametrize("ks,batch", [((2, 5), 7), ((1,), 64), ((10, 50), 5)])
def test_evaluator_matches_per_split_copy_reference(splits, ks, batch):
    ds = _random_dataset(seed=len(splits) + batch)
    ev = Evaluator(ds, EvalConfig(ks=ks, user_batch_size=batch), torch.device("cpu"))
    for seed in range(2):
        scorer = _tied_scorer(seed, ds.num_users, ds.num_items)
        got = ev.evaluate(scorer, splits)
        want = _ref_evaluate(ev, scorer, splits)
        assert list(got) == list(want)
        for s in splits:
            # val also carries the OOD-aware estimators (tests/eval/test_estimators.py)
            assert _plain(got[s].means) == want[s].means
            assert any(k.startswith("ips_") for k in got[s].means) == (s == "val")
            assert torch.equal(got[s].users, want[s].users)
            assert _plain(got[s].per_user).keys() == want[s].per_user.keys()
            for name, vals in want[s].per_user.items():
                assert torch.equal(got[s].per_user[name], vals), (s, name)
            assert got[s].per_user[f"recall@{ks[0]}"].numel() == got[s].users.numel()


# ---------------------------------------------------------------------------- diagnostics


def _diag_inputs(seed, batch, k, num_items, dim=6, num_users=12):
    gen = torch.Generator().manual_seed(seed)
    held = _random_csr(gen, num_users, num_items, 5)
    user_emb = torch.randn(num_users, dim, generator=gen)
    item_emb = torch.randn(num_items, dim, generator=gen)
    item_emb[1] = item_emb[0]  # duplicate items
    users = torch.randint(0, num_users, (batch,), generator=gen)
    pos = torch.randint(0, num_items, (batch,), generator=gen)
    ids = torch.randint(0, num_items, (batch, k), generator=gen)
    neg = item_emb[ids] + 0.02 * torch.randn(batch, k, dim, generator=gen)  # many near items
    far = torch.rand(batch, k, generator=gen) < 0.4
    neg[far] = torch.randn(int(far.sum()), dim, generator=gen)
    return users, pos, neg, user_emb, item_emb, held


@pytest.mark.parametrize("k,num_items", [(1, 9), (3, 9), (12, 5)])  # K = 1 and K > items
@pytest.mark.parametrize("budget", [1, 37, 1 << 23])
def test_false_hard_matches_dense_reference(k, num_items, budget):
    for seed in range(3):
        users, pos, neg, ue, ie, held = _diag_inputs(seed, 10, k, num_items)
        _, want = _ref_negative_diagnostics(users, pos, neg, ue, ie, held, 0.99)
        got = _false_hard(users, neg, ie, held, 0.99, budget=budget)
        assert torch.equal(got, want)


@pytest.mark.parametrize("k,num_items", [(1, 9), (3, 9), (12, 5)])
def test_negative_diagnostics_matches_dense_reference(k, num_items):
    for seed in range(3):
        users, pos, neg, ue, ie, held = _diag_inputs(seed, 10, k, num_items)
        if k == 1:
            neg = neg[:, 0]  # [B, D] form
        want, _ = _ref_negative_diagnostics(users, pos, neg, ue, ie, held, 0.99)
        got = negative_diagnostics(users, pos, neg, ue, ie, held)
        assert got == want  # bit-identical, fhn_ratio included
        assert 0.0 < got["fhn_ratio"] < 1.0 or k == 1


def test_negative_diagnostics_without_held_out_items():
    users, pos, neg, ue, ie, _ = _diag_inputs(0, 6, 2, 7)
    held = CSR(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 12)
    got = negative_diagnostics(users, pos, neg, ue, ie, held)
    assert got == _ref_negative_diagnostics(users, pos, neg, ue, ie, held, 0.99)[0]
    assert got["fhn_ratio"] == 0.0


def test_false_hard_hand_computed():
    item_emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    held = CSR(torch.tensor([0, 1]), torch.tensor([0, 2]), 3)  # user 0: {0}; user 1: {2}
    neg = torch.tensor([[[2.0, 0.0], [0.0, 3.0]], [[1.0, 0.0], [5.0, 5.0]], [[1.0, 0.0], [0, 1]]])
    got = _false_hard(torch.tensor([0, 1, 2]), neg, item_emb, held, 0.99, budget=1)
    assert got.tolist() == [[True, False], [False, True], [False, False]]


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("budget", [1, 5, 19, 1 << 23])
def test_nearest_items_matches_dense_argmax_with_ties(k, budget):
    gen = torch.Generator().manual_seed(k)
    dim = 5
    # one-hot items make cosine exact, so duplicated items tie exactly across chunk borders
    base = torch.eye(dim)
    item_emb = torch.cat([base, base[[2, 0]], 3 * base[[4]], base[[1]]])  # [9, D]
    emb = torch.randn(6, k, dim, generator=gen)
    emb[0, 0] = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])  # ties between items 2 and 5
    emb[1, 0] = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])  # ties between items 4 and 7
    emb[2, 0] = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])  # ties between 0, 1, 6, 8
    cos = torch.einsum("bkd,id->bki", F.normalize(emb, dim=-1), F.normalize(item_emb, dim=-1))
    want = cos.argmax(-1)
    assert torch.equal(nearest_items(emb, item_emb, budget=budget), want)
    assert want[0, 0] == 2 and want[1, 0] == 4 and want[2, 0] == 0


def test_true_fhn_matches_dense_reference():
    gen = torch.Generator().manual_seed(0)
    num_users, num_items, dim = 8, 11, 4
    item_emb = torch.randn(num_items, dim, generator=gen)
    relevance = torch.rand(num_users, num_items, generator=gen) < 0.5
    users = torch.randint(0, num_users, (7,), generator=gen)
    for k in (None, 1, 3, 20):
        shape = (7, dim) if k is None else (7, k, dim)
        emb = torch.randn(*shape, generator=gen)
        e3 = emb if emb.dim() == 3 else emb.unsqueeze(1)
        cos = torch.einsum("bkd,id->bki", F.normalize(e3, dim=-1), F.normalize(item_emb, dim=-1))
        want = float(relevance[users.unsqueeze(1), cos.argmax(-1)].float().mean())
        assert true_fhn(users, SimpleNamespace(ids=None, emb=emb), item_emb, relevance) == want
