"""`dataset_stats` on the shipped data reproduces the counts of shared/data/README.md.

Uses the ``real_data`` fixture: skipped when the data is missing, a failure under CI=true.
"""

from __future__ import annotations

from oodrec.data.stats import dataset_stats

# (interactions, users, items) per split, from the README tables.
FOOD = {
    "train": (106253, 7732, 6293),
    "val": (20468, 6511, 5629),
    "iid_test": (43183, 7595, 6190),
    "ood_test": (46149, 7724, 6159),
}
YELP = {
    "train": (238514, 8093, 13879),
    "val": (47570, 7953, 10854),
    "iid_test": (95173, 8090, 12508),
    "ood_test": (16346, 6212, 6360),
}


def _counts(stats: dict) -> dict:
    return {n: (s["interactions"], s["users"], s["items"]) for n, s in stats["splits"].items()}


def test_food_stats_match_readme(real_data):
    stats = dataset_stats("food", data_dir=real_data)
    assert (stats["num_users"], stats["num_items"], stats["interactions"]) == (7732, 6293, 216053)
    assert _counts(stats) == FOOD
    assert round(stats["density"], 5) == 0.00444 and stats["notes"] == []


def test_yelp2018_stats_match_readme(real_data):
    stats = dataset_stats("yelp2018", data_dir=real_data, on_bad_lines="skip")
    assert (stats["num_users"], stats["num_items"], stats["interactions"]) == (8093, 13879, 397603)
    assert _counts(stats) == YELP
    # README: mean train popularity of test_ood items 6.2, of test_iid items 45.0.
    assert round(stats["splits"]["ood_test"]["mean_train_item_popularity"], 1) == 6.2
    assert round(stats["splits"]["iid_test"]["mean_train_item_popularity"], 1) == 45.0
    assert stats["tv_train_ood_test"] > 0.5 > stats["tv_train_iid_test"]
    assert stats["notes"] == ["train: skipped 2 malformed line(s)"]
