"""DR-GNN pieces against hand calculations: DRO edge weights, the augmented adjacency, the
nearest-item augmentation and the temperature BPR."""

from __future__ import annotations

import math

import pytest
import torch

from oodrec.config import ExperimentConfig, apply_overrides
from oodrec.methods import MethodContext, TrainData
from oodrec.methods.drgnn import DRGNN, DRGNNOptions, dro_edge_weights, nearest_items


def test_dro_weights_hand_case_without_augmentation():
    # user 0 has two edges with scores s = e_u . e_i of 1 and 0, degrees d_u = 2, d_i = 1, 2
    ego_u = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    ego_i = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    deg_u, deg_i = torch.tensor([2.0, 2.0]), torch.tensor([1.0, 2.0])
    ones = torch.ones(2)
    alpha = 0.5
    got = dro_edge_weights(ego_u, ego_i, deg_u, deg_i, ones, ones, torch.tensor([0, 0]),
                           torch.tensor([2.0]), alpha)  # fmt: skip
    f = [math.exp(-1 / (math.sqrt(2) * alpha)), math.exp(0.0)]
    mean = sum(f) / 2
    assert got.tolist() == pytest.approx([f[0] / mean, f[1] / mean], rel=1e-6)
    # the edge the model fits worse (lower score) gets the larger weight
    assert got[1] > got[0]


def test_dro_weights_with_an_added_edge_mix_original_and_added_scores():
    ego = torch.tensor([[1.0, 0.0]] * 2)
    deg_u, deg_i = torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])
    c = 0.25
    coef = torch.tensor([1 - c, c])
    coef2 = torch.tensor([1 - c, c * 1.0])  # c * d_u for the added edge
    got = dro_edge_weights(ego, ego, deg_u, deg_i, coef, coef2, torch.tensor([0, 0]),
                           torch.tensor([1.0]), 1.0)  # fmt: skip
    f = math.exp(-1.0)
    denom = ((1 - c) * f + c * f) / 1.0
    assert got.tolist() == pytest.approx([f * (1 - c) / denom, f * c / denom], rel=1e-6)


def test_nearest_items_in_blocks():
    users = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    items = torch.tensor([[1.0, 0.0], [9.0, 0.0], [0.0, 0.5]])
    assert nearest_items(users, items, torch.tensor([0, 1])).tolist() == [0, 1]
    assert nearest_items(users, items, torch.tensor([1, 2])).tolist() == [2, 1]


def _method(**kw) -> DRGNN:
    users = torch.tensor([0, 0, 1, 2])
    items = torch.tensor([0, 1, 1, 2])
    data = TrainData("t", 3, 4, users, items)
    cfg = apply_overrides(ExperimentConfig(), ["model.name=drgnn", "model.emb_dim=4"])
    return DRGNN(MethodContext(data, cfg, torch.device("cpu")), DRGNNOptions(**kw))


def test_weighted_adjacency_is_symmetric_a_hat_times_l():
    m = _method(dro=False)
    plain = m.weighted_adjacency().to_dense()
    assert torch.allclose(plain, m.model.adj.to_dense())  # no DRO, no augmentation: A_hat
    m = _method()
    adj = m.weighted_adjacency().to_dense()
    assert torch.allclose(adj, adj.T)
    assert ((adj != 0) == (plain != 0)).all()  # same support, re-weighted values


def test_augmentation_adds_one_new_edge_per_user_and_survives_resume():
    m = _method(aug_ratio=1.0)
    m.rebuild_augmentation(torch.Generator().manual_seed(0))
    pairs = set(zip(m.aug_users.tolist(), m.aug_items.tolist()))
    train = {(0, 0), (0, 1), (1, 1), (2, 2)}
    assert pairs and not pairs & train and len({u for u, _ in pairs}) == len(pairs)
    adj = m.weighted_adjacency().to_dense()
    for u, i in pairs:
        assert adj[u, 3 + i] > 0 and adj[3 + i, u] > 0
    fresh = _method(aug_ratio=1.0)
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.aug_users, m.aug_users) and torch.equal(fresh.aug_items, m.aug_items)


def test_bpr_with_temperature(monkeypatch):
    m = _method(tau=0.5)
    from oodrec.samplers import TripletBatch

    batch = TripletBatch(torch.tensor([0]), torch.tensor([0]))
    monkeypatch.setattr(
        "oodrec.methods.drgnn.uniform_items",
        lambda users, n, gen, positives=None: torch.tensor([3]),
    )
    terms = m.loss(batch, torch.Generator().manual_seed(0))
    u, i = m._propagate(m.weighted_adjacency())
    want = torch.nn.functional.softplus((u[0] @ i[3] - u[0] @ i[0]) / 0.5)
    assert terms["bpr"].item() == pytest.approx(want.item(), rel=1e-5)
