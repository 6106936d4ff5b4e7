"""DNS(M, N): hand-checkable selections."""

from __future__ import annotations

import pytest
import torch

from oodrec.errors import ConfigError
from oodrec.models.losses import bpr_loss
from oodrec.samplers import TripletBatch, build_sampler
from oodrec.samplers.base import uniform_items
from oodrec.samplers.dns import DNSOptions, DNSSampler

from .helpers import hand_embeddings, make_context

NUM_ITEMS = 10


@pytest.fixture
def setup():
    """User 0 likes items 9 and 4, user 1 likes item 0; item j scores j for both users."""
    users, items = torch.tensor([0, 0, 1]), torch.tensor([9, 4, 0])
    ctx = make_context(users, items, 2, NUM_ITEMS, emb_dim=2)
    item_vecs = torch.stack([torch.arange(NUM_ITEMS).float(), torch.zeros(NUM_ITEMS)], 1)  # [I, 2]
    emb = hand_embeddings(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), item_vecs)
    batch = TripletBatch(torch.tensor([0, 1, 0]), torch.tensor([9, 0, 4]))
    return ctx, emb, batch


def _candidates(batch, ctx, num, seed):
    """The candidates the sampler draws from a generator seeded with ``seed`` (same draw order)."""
    gen = torch.Generator().manual_seed(seed)
    return uniform_items(batch.users, NUM_ITEMS, gen, num, ctx.positives)  # [B, N]


def test_plain_dns_keeps_the_highest_scored_non_positive(setup):
    ctx, emb, batch = setup
    # N = 200 candidates over 10 items cover every non-positive item (with this seed).
    sampler = DNSSampler(ctx, DNSOptions(num_candidates=200, num_selected=1))
    negs = sampler.sample(batch, emb, torch.Generator().manual_seed(0))
    assert negs.ids.tolist() == [[8], [9], [8]]  # user 0 likes 9, user 1 likes 0
    assert negs.emb.shape == (3, 1, 2) and negs.weights is None


def test_topm_is_the_top_of_the_drawn_candidates(setup):
    ctx, emb, batch = setup
    sampler = DNSSampler(ctx, DNSOptions(num_candidates=5, num_selected=3))
    negs = sampler.sample(batch, emb, torch.Generator().manual_seed(1))
    cand = _candidates(batch, ctx, 5, seed=1)
    # Item j scores j, so the top 3 are the three largest drawn ids (with replacement, repeats
    # are possible, as in the official sampler).
    expected = cand.sort(1, descending=True).values[:, :3]
    assert torch.equal(negs.ids, expected)
    assert torch.equal(negs.emb, emb.items[expected])


def test_official_fidelity_keeps_positives(setup):
    ctx, emb, batch = setup
    sampler = DNSSampler(
        ctx, DNSOptions(num_candidates=200, num_selected=1, exclude_positives=False)
    )
    negs = sampler.sample(batch, emb, torch.Generator().manual_seed(0))
    assert negs.ids[:, 0].tolist() == [9, 9, 9]  # user 0's positive 9 is the hardest


def test_pick_one_chooses_uniformly_among_the_top_m(setup):
    ctx, emb, _ = setup
    batch = TripletBatch(torch.zeros(400, dtype=torch.long), torch.full((400,), 9))
    sampler = DNSSampler(ctx, DNSOptions(num_candidates=4, num_selected=2, variant="pick_one"))
    negs = sampler.sample(batch, emb, torch.Generator().manual_seed(0))
    assert negs.ids.shape == (400,) and negs.emb.shape == (400, 2)
    top2 = _candidates(batch, ctx, 4, seed=0).sort(1, descending=True).values[:, :2]  # [B, 2]
    assert ((negs.ids.unsqueeze(1) == top2).any(1)).all()
    distinct = top2[:, 0] != top2[:, 1]
    share_first = (negs.ids[distinct] == top2[distinct, 0]).float().mean()
    assert 0.4 < share_first < 0.6


def test_sum_reduction_scales_the_mean_by_the_batch(setup):
    ctx, emb, batch = setup
    u, pos = emb.users[batch.users], emb.items[batch.pos_items]
    losses = {}
    for reduction in ("mean", "sum"):
        opts = DNSOptions(num_candidates=6, num_selected=2, reduction=reduction)
        negs = DNSSampler(ctx, opts).sample(batch, emb, torch.Generator().manual_seed(2))
        losses[reduction] = bpr_loss(u, pos, negs.emb, negs.weights)
    assert torch.allclose(losses["sum"], losses["mean"] * len(batch))


def test_invalid_options():
    ctx = make_context(torch.tensor([0]), torch.tensor([0]), 1, 5, emb_dim=2)
    with pytest.raises(ConfigError, match="num_selected"):
        build_sampler("dns", ctx, {"num_candidates": 2, "num_selected": 3})
    with pytest.raises(ConfigError, match="variant"):
        build_sampler("dns", ctx, {"variant": "top1"})
