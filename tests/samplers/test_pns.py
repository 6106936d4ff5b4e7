"""PNS: popularity^beta negatives with rejection of training positives."""

from __future__ import annotations

import pytest
import torch

from oodrec.errors import ConfigError
from oodrec.samplers import TripletBatch, build_sampler
from oodrec.samplers.popularity import PopularityOptions, PopularitySampler, popularity_cdf

from .helpers import hand_embeddings, make_context

NUM_ITEMS = 8


@pytest.fixture
def ctx():
    """Items 0 and 1 have degree 10, items 2..5 degree 1, items 6, 7 degree 0.

    User 0 likes item 0 (not 1), user 10 likes item 1 (not 0), user 11 likes neither."""
    users = torch.cat([torch.arange(0, 10), torch.arange(1, 11), torch.tensor([11, 12, 13, 14])])
    items = torch.cat([torch.zeros(10), torch.ones(10), torch.tensor([2, 3, 4, 5])]).long()
    return make_context(users, items, 15, NUM_ITEMS, emb_dim=2)


def _draw(ctx, user, n, seed=0, **opts):
    sampler = PopularitySampler(ctx, PopularityOptions(**opts))
    emb = hand_embeddings(torch.zeros(15, 2), torch.zeros(NUM_ITEMS, 2))
    batch = TripletBatch(torch.full((n,), user), torch.zeros(n, dtype=torch.long))
    return sampler.sample(batch, emb, torch.Generator().manual_seed(seed)).ids


def test_large_beta_draws_the_most_popular_non_positive(ctx):
    assert set(_draw(ctx, 0, 500, beta=10.0).tolist()) == {1}
    assert set(_draw(ctx, 10, 500, beta=10.0).tolist()) == {0}
    assert set(_draw(ctx, 11, 500, beta=10.0).tolist()) == {0, 1}


def test_beta_one_frequencies_follow_degree(ctx):
    ids = _draw(ctx, 11, 40_000, beta=1.0, exclude_positives=False)
    freq = torch.bincount(ids, minlength=NUM_ITEMS).double() / ids.numel()
    expected = torch.tensor([10, 10, 1, 1, 1, 1, 0, 0], dtype=torch.float64) / 24
    assert (freq - expected).abs().max() < 0.01
    assert freq[6] == 0 and freq[7] == 0  # never-seen items are never drawn


def test_beta_zero_is_uniform_over_all_items(ctx):
    ids = _draw(ctx, 11, 40_000, beta=0.0, exclude_positives=False)
    freq = torch.bincount(ids, minlength=NUM_ITEMS).double() / ids.numel()
    assert (freq - 1 / NUM_ITEMS).abs().max() < 0.01


def test_cdf_table():
    cdf = popularity_cdf(torch.tensor([0, 2, 0, 2]), beta=1.0)
    assert torch.allclose(cdf, torch.tensor([0.0, 0.5, 0.5, 1.0], dtype=torch.float64))
    with pytest.raises(ConfigError, match="mass"):
        popularity_cdf(torch.zeros(3, dtype=torch.long), beta=1.0)


def test_invalid_beta(ctx):
    with pytest.raises(ConfigError, match="beta"):
        build_sampler("pns", ctx, {"beta": -0.5})
