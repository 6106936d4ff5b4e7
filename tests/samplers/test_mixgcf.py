"""MixGCF: positive mixing and hop mixing against hand-computed values and a slow reference."""

from __future__ import annotations

import pytest
import torch

from oodrec.errors import ConfigError
from oodrec.samplers import TripletBatch
from oodrec.samplers.mixgcf import MixGCFOptions, MixGCFSampler, hop_mix

from .helpers import hand_embeddings, make_context


def test_hop_mix_hand_computed():
    # Two layers, three items (0 = positive, 1 and 2 = candidates), D = 2; user [1, 0].
    layers = torch.tensor(
        [
            [[1.0, 1.0], [2.0, 0.0], [0.0, 4.0]],  # layer 0
            [[0.0, 0.0], [-1.0, 0.0], [1.0, 1.0]],  # layer 1
        ]
    )  # [L+1, I, D]
    user = torch.tensor([[1.0, 0.0]])
    alpha = torch.tensor([[0.5], [0.25]])  # [L+1, B]
    mixed = hop_mix(user, layers, torch.tensor([0]), torch.tensor([[1, 2]]), alpha)
    # Layer 0: mixed scores 0.5*1 + 0.5*2 = 1.5 (item 1) vs 0.5*1 + 0.5*0 = 0.5 -> item 1.
    # Layer 1: 0.75*(-1) = -0.75 (item 1) vs 0.75*1 = 0.75 (item 2) -> item 2.
    expected = torch.tensor([[[1.5, 0.5]], [[0.75, 0.75]]])  # [L+1, B, D]
    assert torch.allclose(mixed, expected)


def _slow_reference(user, layers, pos, cand, alpha):
    """Loop-based MixGCF (official code, one row and layer at a time)."""
    out = torch.empty(layers.shape[0], pos.numel(), layers.shape[-1])
    for b in range(pos.numel()):
        for layer in range(layers.shape[0]):
            a = alpha[layer, b]
            best, best_score = None, -float("inf")
            for j in cand[b].tolist():
                e = a * layers[layer, pos[b]] + (1 - a) * layers[layer, j]
                score = float(user[b] @ e)
                if score > best_score:
                    best, best_score = e, score
            out[layer, b] = best
    return out


def test_hop_mix_matches_slow_reference_and_stays_in_the_hull():
    gen = torch.Generator().manual_seed(0)
    layers = torch.randn(3, 12, 4, generator=gen)
    user = torch.randn(5, 4, generator=gen)
    pos = torch.randint(12, (5,), generator=gen)
    cand = torch.randint(12, (5, 6), generator=gen)
    alpha = torch.rand(3, 5, generator=gen)
    mixed = hop_mix(user, layers, pos, cand, alpha)
    assert torch.allclose(mixed, _slow_reference(user, layers, pos, cand, alpha), atol=1e-6)
    # Along each layer the output is alpha * pos + (1 - alpha) * (one of the candidates).
    a = alpha[..., None, None]
    segs = a * layers[:, pos].unsqueeze(2) + (1 - a) * layers[:, cand]  # [L+1, B, N, D]
    dist = (segs - mixed.unsqueeze(2)).norm(dim=-1).min(-1).values  # [L+1, B]
    assert (dist < 1e-5).all()


def test_sampler_output_lies_on_the_positive_negative_segment():
    # User 0 likes every item but item 3, so every candidate is item 3.
    num_items = 5
    users, items = torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 2, 4])
    ctx = make_context(users, items, 1, num_items, emb_dim=2)
    gen = torch.Generator().manual_seed(3)
    layers = torch.randn(3, num_items, 2, generator=gen)  # [L+1, I, D]
    item_vecs = layers.mean(0)
    emb = hand_embeddings(torch.tensor([[1.0, -0.5]]), item_vecs, item_layers=layers)
    batch = TripletBatch(torch.zeros(8, dtype=torch.long), torch.tensor([0, 1, 2, 4] * 2))
    negs = MixGCFSampler(ctx, MixGCFOptions(num_candidates=4)).sample(
        batch, emb, torch.Generator().manual_seed(0)
    )
    assert negs.ids is None and negs.emb.shape == (8, 2) and negs.reg_ego.shape == (8, 2)
    # Layer 0: reg_ego = a * pos + (1 - a) * neg with a in [0, 1).
    pos0, neg0 = layers[0, batch.pos_items], layers[0, 3].expand(8, -1)
    d = pos0 - neg0
    a = ((negs.reg_ego - neg0) * d).sum(-1) / (d * d).sum(-1)
    assert ((a >= 0) & (a < 1)).all()
    assert torch.allclose(
        a.unsqueeze(1) * pos0 + (1 - a.unsqueeze(1)) * neg0, negs.reg_ego, atol=1e-6
    )


def test_gradient_reaches_the_positive_and_the_chosen_candidates_only():
    layers = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(0)).requires_grad_()
    user = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    cand = torch.tensor([[1, 2], [3, 3]])
    mixed = hop_mix(user, layers, torch.tensor([0, 0]), cand, torch.full((3, 2), 0.5))
    mixed.sum().backward()
    touched = layers.grad.abs().sum((0, 2)) > 0  # [I]
    assert touched[0] and touched[3] and not touched[4] and not touched[5]


def test_requires_item_layers():
    ctx = make_context(torch.tensor([0]), torch.tensor([0]), 1, 3, emb_dim=2)
    emb = hand_embeddings(torch.ones(1, 2), torch.ones(3, 2))
    batch = TripletBatch(torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ConfigError, match="item_layers"):
        MixGCFSampler(ctx).sample(batch, emb, torch.Generator().manual_seed(0))
