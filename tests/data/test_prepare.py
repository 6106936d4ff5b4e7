"""prepare_dataset end to end: raw release files -> each shift type -> a loadable directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oodrec.config import DataConfig
from oodrec.data.dataset import load_dataset
from oodrec.data.prepare import PrepareOptions, dataset_stats, prepare_dataset
from oodrec.data.raw import ColumnMapping, read_food_com
from oodrec.data.splits import ExposureSplitConfig, PopularitySplitConfig
from oodrec.data.stats import gini, split_stats, total_variation
from oodrec.errors import ConfigError, DataValidationError

FILES = ("train.txt", "valid_iid.txt", "test_iid.txt", "test_ood.txt")


def _check_directory(out: Path) -> dict:
    """The directory loads without any drop, its files are user-sorted with the columns that
    prepare.json declares (a timestamp third column only with timestamps), and stats.json
    agrees with what the loader sees."""
    split_format = json.loads((out / "prepare.json").read_text())["split_format"]
    for name in FILES:
        rows = np.loadtxt(out / name, dtype=np.int64, ndmin=2)
        assert rows.shape[1] == len(split_format["columns"])
        assert (np.diff(rows[:, 0]) >= 0).all()
    ds = load_dataset(DataConfig(dataset=str(out), verify_checksums=False))
    assert ds.has_timestamps == (split_format["timestamp_unit"] is not None)
    assert ds.report.notes() == []  # nothing unseen, duplicated or leaked
    stats = json.loads((out / "stats.json").read_text())
    assert stats["num_users"] == ds.num_users and stats["num_items"] == ds.num_items
    assert {k: v["interactions"] for k, v in stats["splits"].items()} == ds.report.sizes
    loaded = dataset_stats(ds)
    assert loaded["splits"] == stats["splits"]
    users = (out / "user_ids.txt").read_text().split("\n")[:-1]
    assert len(users) == ds.num_users
    return json.loads((out / "prepare.json").read_text())


def test_temporal_from_food_com(food_raw, tmp_path):
    out = prepare_dataset(
        food_raw,
        "foodcom",
        "temporal",
        tmp_path / "food",
        PrepareOptions(min_user_interactions=5, min_item_interactions=5),
    )
    rec = _check_directory(out)
    pre = rec["preprocess"]
    assert rec["positive_threshold"] == 4.0 and pre["below_threshold"] > 0
    assert pre["interactions"] == sum(rec["split"]["sizes"].values()) + rec["dropped_after_split"]
    # The OOD test holds each user's latest interactions: check against the raw dates.
    raw = read_food_com(food_raw)
    users = (out / "user_ids.txt").read_text().split()
    items = (out / "item_ids.txt").read_text().split()
    when = {(u, i): t for u, i, t in zip(raw.users, raw.items, raw.timestamps)}
    latest_history = {}
    for name in FILES[:3]:
        for u, i, _ in np.loadtxt(out / name, dtype=np.int64, ndmin=2):
            key = users[u]
            latest_history[key] = max(latest_history.get(key, -np.inf), when[(key, items[i])])
    for u, i, t in np.loadtxt(out / "test_ood.txt", dtype=np.int64, ndmin=2):
        assert when[(users[u], items[i])] > latest_history[users[u]]
        assert t == when[(users[u], items[i])]  # the third column is the raw time, in seconds
    assert rec["split_format"] == {
        "columns": ["user", "item", "timestamp"],
        "timestamp_unit": "s",
        "missing_timestamps": 0,
    }


def test_popularity_from_yelp(yelp_raw, tmp_path):
    out = prepare_dataset(
        [yelp_raw],
        "yelp",
        "popularity",
        tmp_path / "yelp",
        PrepareOptions(split=PopularitySplitConfig(ood_fraction=0.2), seed=1),
    )
    _check_directory(out)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["tv_train_ood_test"] > 2 * stats["tv_train_iid_test"]
    s = stats["splits"]
    assert s["ood_test"]["mean_train_item_popularity"] < s["iid_test"]["mean_train_item_popularity"]


def test_exposure_from_kuairec(kuairec_raw, tmp_path):
    big, small = kuairec_raw
    out = prepare_dataset(
        big,
        "kuairec",
        "exposure",
        tmp_path / "kuai",
        PrepareOptions(split=ExposureSplitConfig(overlap_keep="ood_test")),
        unbiased_files=small,
    )
    rec = _check_directory(out)
    assert rec["positive_threshold"] == 2.0  # KuaiRec default: watch ratio >= 2
    # some big-matrix rows have no timestamp: no part gets a time column, and the count says why
    assert rec["split_format"]["timestamp_unit"] is None
    assert rec["split_format"]["missing_timestamps"] > 0
    assert rec["preprocess"]["unbiased_input"] == 30 * 30
    assert rec["split"]["overlap_pairs"] > 0  # some big-matrix pairs are also in the small one
    assert rec["dropped_after_split"] == (
        rec["split"]["overlap_pairs"] + rec["split"]["dropped_unseen"]["ood_test"]
    )


def test_generic_csv_implicit_log_and_rerun_protection(tmp_path):
    rng = np.random.default_rng(0)
    users = rng.integers(0, 40, 900)
    items = (rng.zipf(1.6, 900) - 1) % 30
    lines = ["uid;sku;when"] + [f"{u};{i};{k}" for k, (u, i) in enumerate(zip(users, items))]
    raw = tmp_path / "clicks.csv"
    raw.write_text("\n".join(lines) + "\n")
    cols = ColumnMapping(user="uid", item="sku", timestamp="when")
    with pytest.raises(ConfigError, match=r"exposure protocol needs an unbiased log"):
        prepare_dataset(raw, "csv", "exposure", tmp_path / "x", PrepareOptions(columns=cols))
    # A semicolon file read as a comma file has one column: a clear schema error.
    with pytest.raises(DataValidationError, match=r"missing column\(s\) 'uid', 'sku', 'when'"):
        prepare_dataset(raw, "csv", "temporal", tmp_path / "x", PrepareOptions(columns=cols))
    raw.write_text(raw.read_text().replace(";", ","))
    out = prepare_dataset(raw, "csv", "temporal", tmp_path / "clicks", PrepareOptions(columns=cols))
    rec = _check_directory(out)
    assert rec["positive_threshold"] is None and rec["preprocess"]["below_threshold"] == 0
    with pytest.raises(ConfigError, match=r"already holds train\.txt"):
        prepare_dataset(raw, "csv", "temporal", out, PrepareOptions(columns=cols))
    with pytest.raises(ConfigError, match=r"unknown raw format 'xlsx'"):
        prepare_dataset(raw, "xlsx", "temporal", out)
    with pytest.raises(ConfigError, match=r"needs a TemporalSplitConfig"):
        prepare_dataset(raw, "csv", "temporal", out, PrepareOptions(split=PopularitySplitConfig()))


def test_stats_helpers_by_hand():
    assert gini(np.array([1, 1, 1, 1])) == 0.0
    assert gini(np.array([0, 0, 0, 4])) == pytest.approx(0.75)
    assert total_variation(np.array([1, 1, 0]), np.array([0, 1, 1])) == pytest.approx(0.5)
    stats = split_stats(
        {
            "train": (np.array([0, 0, 1]), np.array([0, 1, 0])),
            "ood_test": (np.array([1]), np.array([1])),
        },
        2,
        2,
    )
    assert stats["interactions"] == 4 and stats["density"] == 1.0
    assert stats["splits"]["ood_test"]["mean_train_item_popularity"] == 1.0
    assert stats["tv_train_ood_test"] == pytest.approx(2 / 3)


def test_ips_exponent_follows_a_prepared_popularity_split(yelp_raw, tmp_path):
    """A popularity split records its exponent; a run on it weights the IPS val estimator by the
    same exponent unless the config names its own; other directories keep the default."""
    from oodrec.config import EvalConfig
    from oodrec.data.layouts import popularity_exponent
    from oodrec.experiment import assemble

    out = prepare_dataset(
        [yelp_raw],
        "yelp",
        "popularity",
        tmp_path / "yelp",
        PrepareOptions(split=PopularitySplitConfig(exponent=1.5), seed=1),
    )
    assert popularity_exponent(out) == 1.5
    base = [f"data.dataset={out}", "data.verify_checksums=false"]
    assert assemble(None, base).eval.ips_gamma == 1.5
    assert assemble(None, [*base, "eval.ips_gamma=0.25"]).eval.ips_gamma == 0.25
    meta = json.loads((out / "prepare.json").read_text())
    meta["protocol"] = "temporal"
    (out / "prepare.json").write_text(json.dumps(meta))
    assert popularity_exponent(out) is None
    assert assemble(None, base).eval.ips_gamma == EvalConfig().ips_gamma
    meta["protocol"] = "popularity"
    meta["options"]["split"]["exponent"] = "high"
    (out / "prepare.json").write_text(json.dumps(meta))
    with pytest.raises(DataValidationError, match=r"prepare.json: options.split.exponent"):
        popularity_exponent(out)
