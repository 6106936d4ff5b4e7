"""The shipped datasets load with the counts of shared/data/README.md."""

from __future__ import annotations

import pytest

from oodrec.config import DataConfig
from oodrec.data.dataset import load_dataset
from oodrec.data.registry import DATASETS, dataset_status
from oodrec.errors import DataValidationError


def test_food_counts(real_data):
    ds = load_dataset(DataConfig(dataset="food", data_dir=str(real_data)))
    assert (ds.num_users, ds.num_items) == (7732, 6293)
    assert ds.report.sizes == {"train": 106253, "val": 20468, "iid_test": 43183, "ood_test": 46149}
    assert ds.report.notes() == []


def test_yelp_strict_fails_on_its_two_bad_lines(real_data):
    with pytest.raises(
        DataValidationError, match=r"yelp2018/train\.txt, line 1: malformed line '0'"
    ):
        load_dataset(DataConfig(dataset="yelp2018", data_dir=str(real_data)))
    ds = load_dataset(DataConfig(dataset="yelp2018", data_dir=str(real_data), on_bad_lines="skip"))
    assert ds.report.files["train"].skipped_bad_lines == 2
    assert ds.report.sizes["train"] == 238514
    assert (ds.num_users, ds.num_items) == (8093, 13879)


def test_status_of_shipped_data(real_data):
    status = {n: dataset_status(s, real_data).status for n, s in DATASETS.items()}
    assert status == {
        "food": "present",
        "yelp2018": "present",
        "kuairec": "incomplete",
        "food_drgnn": "present",
        "coat": "present",
        "yahoo_r3": "present",
    }
