"""AHNS: the candidate closest to beta * (s_pos + alpha)^(p + 1) is chosen."""

from __future__ import annotations

import pytest
import torch

from oodrec.samplers import TripletBatch
from oodrec.samplers.ahns import AHNSOptions, AHNSSampler, ahns_target

from .helpers import hand_embeddings, make_context

# Item scores for a user with vector [1, 0]: the first coordinate.
SCORES = torch.tensor([1.0, 3.0, -2.0, -1.0, 0.0, 0.02, 0.04, 0.3, 0.5, 2.0])
NUM_ITEMS = SCORES.numel()


@pytest.fixture
def setup():
    """Users 0..2 like items 0 (s=1), 1 (s=3) and 2 (s=-2) respectively."""
    users, items = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])
    ctx = make_context(users, items, 3, NUM_ITEMS, emb_dim=2)
    item_vecs = torch.stack([SCORES, torch.zeros(NUM_ITEMS)], 1)  # [I, 2]
    emb = hand_embeddings(torch.tensor([[1.0, 0.0]] * 3), item_vecs)
    return ctx, emb


def test_target_formula():
    s = torch.tensor([1.0, 3.0])
    assert torch.allclose(ahns_target(s, p=-2.0, alpha=1.0, beta=0.1), torch.tensor([0.05, 0.025]))
    assert torch.allclose(ahns_target(s, p=-3.0, alpha=0.5, beta=0.4), 0.4 / (s + 0.5) ** 2)


def test_picks_the_candidate_closest_to_the_target(setup):
    ctx, emb = setup
    sampler = AHNSSampler(ctx, AHNSOptions(num_candidates=300))
    batch = TripletBatch(torch.tensor([0, 1]), torch.tensor([0, 1]))
    negs = sampler.sample(batch, emb, torch.Generator().manual_seed(0))
    # Targets 0.1 / 2 = 0.05 and 0.1 / 4 = 0.025: closest scores 0.04 (item 6) and 0.02 (item 5).
    # A better-fitted positive (s_pos = 3) gets the easier negative.
    assert negs.ids.tolist() == [6, 5]
    assert torch.equal(negs.emb, emb.items[negs.ids])


def test_selection_is_not_hardest(setup):
    ctx, emb = setup
    sampler = AHNSSampler(ctx, AHNSOptions(num_candidates=300, alpha=0.0, beta=0.5))
    batch = TripletBatch(torch.tensor([0]), torch.tensor([0]))
    negs = sampler.sample(batch, emb, torch.Generator().manual_seed(0))
    assert negs.ids.tolist() == [8]  # target 0.5 / 1 = 0.5, not the hardest item (s = 3)


def test_nonpositive_base_share_and_reset(setup):
    ctx, emb = setup
    sampler = AHNSSampler(ctx)
    sampler.start_epoch(0)
    assert sampler.diagnostics() == {"ahns_nonpositive_base_share": 0.0}
    batch = TripletBatch(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 2, 2]))
    negs = sampler.sample(batch, emb, torch.Generator().manual_seed(0))
    assert torch.isfinite(negs.emb).all()
    # user 2's positive scores -2: s_pos + alpha = -1 <= 0 in 2 of 4 rows.
    assert sampler.diagnostics()["ahns_nonpositive_base_share"] == pytest.approx(0.5)
    sampler.sample(
        TripletBatch(torch.tensor([0, 1]), torch.tensor([0, 1])),
        emb,
        torch.Generator().manual_seed(1),
    )
    assert sampler.diagnostics()["ahns_nonpositive_base_share"] == pytest.approx(2 / 6)
    sampler.start_epoch(1)
    assert sampler.diagnostics()["ahns_nonpositive_base_share"] == 0.0
