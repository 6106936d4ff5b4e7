from __future__ import annotations

import torch

from oodrec.data.graph import normalized_adjacency
from oodrec.models.lightgcn import LightGCN, symmetric_spmm


def _graph():
    users = torch.tensor([0, 0, 1, 2, 2, 2])
    items = torch.tensor([0, 1, 1, 0, 2, 3])
    return users, items, normalized_adjacency(users, items, 4, 5)  # user 3, item 4 isolated


def test_adjacency_is_symmetric_normalised():
    users, items, adj = _graph()
    dense = adj.to_dense()
    assert torch.allclose(dense, dense.T)
    # entry (u, U+i) = 1 / sqrt(deg_u * deg_i)
    assert torch.isclose(dense[0, 4 + 1], torch.tensor(1 / (2 * 2) ** 0.5))
    assert dense[3].abs().sum() == 0 and dense[4 + 4].abs().sum() == 0  # zero degree -> 0


def test_symmetric_backward_matches_dense_autograd():
    _, _, adj = _graph()
    x = torch.randn(9, 3, requires_grad=True)
    w = torch.randn(9, 3)
    (symmetric_spmm(adj, symmetric_spmm(adj, x)) * w).sum().backward()
    g_fast = x.grad.clone()
    x2 = x.detach().clone().requires_grad_(True)
    dense = adj.to_dense()
    ((dense @ (dense @ x2)) * w).sum().backward()
    assert torch.allclose(g_fast, x2.grad, atol=1e-6)


def test_propagate_is_mean_of_layers():
    _, _, adj = _graph()
    model = LightGCN(4, 5, 3, 2, adj, generator=torch.Generator().manual_seed(0))
    emb = model.propagate()
    ego = torch.cat([model.user_emb, model.item_emb])
    dense = adj.to_dense()
    expect = (ego + dense @ ego + dense @ dense @ ego) / 3
    assert torch.allclose(torch.cat([emb.users, emb.items]), expect, atol=1e-6)
    assert emb.item_layers.shape == (3, 5, 3)
