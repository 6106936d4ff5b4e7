"""The scalable simulator: the confounded-exposure story of the small one, at bounded memory."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from oodrec.config import DataConfig
from oodrec.data.dataset import load_dataset
from oodrec.data.synthetic_large import (
    LargeSyntheticConfig,
    generate_large,
    load_world,
    simulate_large,
)
from oodrec.errors import ConfigError

SMALL = LargeSyntheticConfig(num_users=1500, num_items=1000, num_interactions=30_000, seed=1)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return generate_large(tmp_path_factory.mktemp("sim") / "ds", SMALL)


def test_directory_loads_cleanly_with_the_target_size(generated):
    ds = load_dataset(DataConfig(dataset=str(generated)))
    assert ds.report.notes() == []  # nothing unseen, duplicated or leaked
    assert abs(len(ds.splits["train"]) - SMALL.num_interactions) < 0.05 * SMALL.num_interactions
    stats = json.loads((generated / "stats.json").read_text())
    assert stats["num_users"] == ds.num_users and stats["num_items"] == ds.num_items
    assert ds.num_users == SMALL.num_users  # every user interacts; items may be unexposed
    # The OOD test is logged under uniform exposure: far less popularity-skewed than the IID test.
    splits = stats["splits"]
    ood, iid = splits["ood_test"], splits["iid_test"]
    assert ood["mean_train_item_popularity"] < 0.5 * iid["mean_train_item_popularity"]
    assert stats["tv_train_ood_test"] > 2 * stats["tv_train_iid_test"]


def test_every_logged_pair_is_relevant_and_relevance_has_the_set_share(generated):
    ds = load_dataset(DataConfig(dataset=str(generated)))
    world = load_world(generated)
    for inter in ds.splits.values():
        assert world.is_relevant(inter.users.numpy(), inter.items.numpy()).all()
    rng = np.random.default_rng(0)
    users = rng.integers(0, ds.num_users, 100_000)
    items = rng.integers(0, ds.num_items, 100_000)
    assert abs(world.is_relevant(users, items).mean() - SMALL.relevant_fraction) < 0.01


def test_exposure_follows_the_policy_exactly():
    """With every item relevant, the biased log is the exposure draw itself: item i is logged
    for a user with probability e_i (Poissonised draws), the uniform log with the uniform rate."""
    cfg = LargeSyntheticConfig(
        num_users=4000, num_items=50, num_interactions=20_000, relevant_fraction=1.0, seed=2
    )
    log, world = simulate_large(cfg)
    biased = ~log.unbiased
    rate = np.bincount(log.items[biased], minlength=cfg.num_items) / cfg.num_users
    assert np.abs(rate - world.exposure).max() < 4 * np.sqrt(0.25 / cfg.num_users)
    assert world.exposure.max() > 5 * world.exposure.min()  # popularity really drives exposure
    # uniform policy: exposure rate u among the pairs the biased policy did not log
    uniform_rate = cfg.exposure_rates()[1]
    share = log.unbiased.sum() / (cfg.num_users * cfg.num_items - biased.sum())
    assert abs(share - uniform_rate) < 0.1 * uniform_rate


def test_deterministic_and_memory_bounded(tmp_path):
    a = simulate_large(SMALL)[0]
    b = simulate_large(SMALL)[0]
    assert np.array_equal(a.keys(), b.keys()) and np.array_equal(a.unbiased, b.unbiased)
    cfg = LargeSyntheticConfig(num_users=20_000, num_items=20_000, num_interactions=100_000)
    tracemalloc.start()
    try:
        log, _ = simulate_large(cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A dense users x items bool matrix alone would take 400 MB.
    assert peak < 60e6 and len(log) > 100_000


def test_impossible_rates_and_existing_files_are_refused(generated):
    with pytest.raises(ConfigError, match=r"exposure rate of"):
        LargeSyntheticConfig(num_users=100, num_items=100, num_interactions=5000).exposure_rates()
    with pytest.raises(ConfigError, match=r"already holds train\.txt"):
        generate_large(generated, SMALL)
