"""The simulator: deterministic, consistent with its ground truth, and confounded by exposure."""

from __future__ import annotations

import math

import pytest
import torch

from oodrec.data.stats import gini
from oodrec.data.synthetic import (
    SyntheticConfig,
    exposure_probabilities,
    load_synthetic,
    simulate,
    true_fhn_ratio,
)
from oodrec.errors import ConfigError

SMALL = SyntheticConfig(num_users=300, num_items=200, seed=7)


def _as_tuple(ds):
    return {n: (p.users.tolist(), p.items.tolist()) for n, p in ds.splits.items()}


def test_deterministic_and_seed_dependent():
    a, rel_a = load_synthetic(SMALL)
    b, rel_b = load_synthetic(SMALL)
    assert _as_tuple(a) == _as_tuple(b) and torch.equal(rel_a, rel_b)
    c, _ = load_synthetic(SyntheticConfig(num_users=300, num_items=200, seed=8))
    assert _as_tuple(a) != _as_tuple(c)


def test_dataset_shapes_and_ground_truth():
    ds, rel = load_synthetic(SMALL)
    assert rel.dtype == torch.bool and rel.shape == (300, 200)
    assert (rel.sum(1) == 20).all()  # top 10% of 200 items per user
    assert (ds.num_users, ds.num_items) == (300, 200) and ds.name == "synthetic"
    for name, part in ds.splits.items():
        assert rel[part.users, part.items].all(), name  # every observed pair is relevant
        assert ds.report.sizes[name] == len(part)
    total = sum(len(p) for p in ds.splits.values())
    assert 0.1 < len(ds.splits["ood_test"]) / total < 0.3


def test_higher_exposure_bias_skews_train_popularity():
    ginis = []
    for bias in (0.0, 1.0, 2.0):
        ds, _ = load_synthetic(SyntheticConfig(num_users=300, num_items=200, exposure_bias=bias))
        ginis.append(gini(ds.item_degree().numpy()))
    assert ginis[0] < ginis[1] < ginis[2] and ginis[2] - ginis[0] > 0.2


def test_ood_log_is_uniformly_exposed():
    sim = simulate(SyntheticConfig(num_users=1000, num_items=200, exposure_bias=2.0))
    log = sim.log
    biased = torch.bincount(torch.from_numpy(log.items[~log.unbiased]), minlength=200)
    uniform = torch.bincount(torch.from_numpy(log.items[log.unbiased]), minlength=200)
    assert gini(uniform.numpy()) < gini(biased.numpy()) - 0.2


def test_exposure_probabilities_hit_the_rate():
    w = torch.tensor([1.0, 0.5, 0.1, 0.01, 100.0])
    p = exposure_probabilities(w, 0.3)
    assert float(p.mean()) == pytest.approx(0.3, abs=1e-6) and float(p.max()) <= 1.0
    assert torch.allclose(exposure_probabilities(torch.ones(4), 0.2), torch.full((4,), 0.2))


def test_true_fhn_ratio_by_hand():
    rel = torch.tensor([[True, False, True], [False, False, True]])
    users = torch.tensor([0, 1])
    assert true_fhn_ratio(users, torch.tensor([0, 1]), rel) == 0.5
    assert true_fhn_ratio(users, torch.tensor([[1, 2], [0, 1]]), rel) == 0.25
    assert math.isnan(true_fhn_ratio(users[:0], torch.zeros(0, dtype=torch.long), rel))


def test_config_validation():
    with pytest.raises(ConfigError, match=r"relevant_fraction must be in \(0, 1\]"):
        SyntheticConfig(relevant_fraction=0.0)
    with pytest.raises(ConfigError, match=r"exposure_bias and popularity_skew must be >= 0"):
        SyntheticConfig(exposure_bias=-1.0)
