"""One test per bad-input rule, each asserting the message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from oodrec.config import DataConfig
from oodrec.data.dataset import load_dataset
from oodrec.data.io import read_interactions
from oodrec.errors import DataValidationError


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_malformed_line_names_file_line_and_content(tmp_path):
    f = _write(tmp_path / "a.txt", "0\n0 1\n0 2 1\n1 3 1\n2 4 1\n")
    with pytest.raises(DataValidationError, match=r"a\.txt, line 1: malformed line '0'"):
        read_interactions(f)


def test_skip_bad_lines_counts_them(tmp_path):
    f = _write(tmp_path / "a.txt", "0\n0 1\n0 2 1\n1 3 1\n2 4 1\n")
    users, items, rep = read_interactions(f, on_bad_lines="skip")
    assert rep.skipped_bad_lines == 2 and rep.kept == 3
    assert rep.bad_line_examples[0] == "line 1: '0'"
    assert users.tolist() == [0, 1, 2] and items.tolist() == [2, 3, 4]


def test_non_integer_id(tmp_path):
    f = _write(tmp_path / "b.txt", "0 1\n1 x\n2 3\n")
    with pytest.raises(DataValidationError, match=r"b\.txt, line 2: malformed line '1 x'"):
        read_interactions(f)


def test_negative_id(tmp_path):
    f = _write(tmp_path / "b.txt", "0 1\n1 2\n-2 3\n")
    with pytest.raises(DataValidationError, match=r"line 3: malformed line '-2 3'"):
        read_interactions(f)


def test_empty_file(tmp_path):
    f = _write(tmp_path / "empty.txt", "\n\n")
    with pytest.raises(DataValidationError, match=r"empty\.txt: file is empty"):
        read_interactions(f)


def test_missing_file(tmp_path):
    with pytest.raises(DataValidationError, match=r"nope\.txt: file not found"):
        read_interactions(tmp_path / "nope.txt")


def test_duplicates_removed_and_counted(tmp_path):
    f = _write(tmp_path / "d.txt", "0 1\n0 1\n1 2\n0 1\n")
    users, items, rep = read_interactions(f)
    assert rep.duplicates_removed == 2
    assert list(zip(users.tolist(), items.tolist())) == [(0, 1), (1, 2)]


def test_unseen_ids_dropped_and_counted(tmp_path):
    d = tmp_path / "ds"
    _write(d / "train.txt", "0 0\n0 1\n1 1\n1 2\n")
    _write(d / "valid_iid.txt", "0 2\n")
    _write(d / "test_iid.txt", "1 0\n5 1\n")  # user 5 unseen
    _write(d / "test_ood.txt", "0 9\n1 0\n")  # item 9 unseen; (1,0) also in iid
    ds = load_dataset(DataConfig(dataset=str(d)))
    assert ds.report.dropped_unseen == {"val": 0, "iid_test": 1, "ood_test": 1}
    assert ds.report.dropped_in_val == {"iid_test": 0, "ood_test": 0}
    notes = "\n".join(ds.report.notes())
    assert "iid_test: 1 pair(s) with a user or item unseen in train dropped" in notes
    assert "ood_test: 1 pair(s) with a user or item unseen in train dropped" in notes


def test_pairs_also_in_train_dropped_and_counted(tmp_path):
    d = tmp_path / "ds"
    _write(d / "train.txt", "0 0\n0 1\n1 1\n1 2\n")
    _write(d / "valid_iid.txt", "0 2\n")
    _write(d / "test_iid.txt", "1 0\n")
    _write(d / "test_ood.txt", "0 0\n1 0\n")
    ds = load_dataset(DataConfig(dataset=str(d)))
    assert ds.report.dropped_in_train["ood_test"] == 1
    assert len(ds.splits["ood_test"]) == 1


def test_checksum_mismatch(tmp_path, real_data):
    d = tmp_path / "data" / "coat"
    shutil.copytree(real_data / "coat", d)
    with open(d / "train.txt", "a") as fh:
        fh.write("0 5\n")
    with pytest.raises(DataValidationError, match=r"coat/train\.txt: checksum mismatch"):
        load_dataset(DataConfig(dataset="coat", data_dir=str(tmp_path / "data")))
    # Asked for on purpose, the modified copy loads.
    ds = load_dataset(
        DataConfig(dataset="coat", data_dir=str(tmp_path / "data"), verify_checksums=False)
    )
    assert ds.num_users == 290


def test_missing_dataset_file_suggests_download(tmp_path):
    with pytest.raises(DataValidationError, match=r"oodrec download food"):
        load_dataset(DataConfig(dataset="food", data_dir=str(tmp_path)))


def test_kuairec_has_no_train(tmp_path):
    with pytest.raises(DataValidationError, match=r"no train .* file"):
        load_dataset(DataConfig(dataset="kuairec", data_dir=str(tmp_path)))


def test_unknown_dataset_lists_names():
    with pytest.raises(DataValidationError, match=r"unknown dataset 'fod'.*food"):
        load_dataset(DataConfig(dataset="fod"))


def test_carving_is_deterministic_and_disjoint(tmp_path):
    d = tmp_path / "ds"
    lines = "".join(f"{u} {i}\n" for u in range(30) for i in range(20) if (u + i) % 3 == 0)
    _write(d / "train.txt", lines)
    _write(d / "test_ood.txt", "0 1\n1 0\n")
    a = load_dataset(DataConfig(dataset=str(d), split_seed=7))
    b = load_dataset(DataConfig(dataset=str(d), split_seed=7))
    c = load_dataset(DataConfig(dataset=str(d), split_seed=8))
    assert a.report.carved_from_train
    for s in ("train", "val", "iid_test"):
        assert a.splits[s].users.equal(b.splits[s].users) and a.splits[s].items.equal(
            b.splits[s].items
        )
    assert not a.splits["val"].items.equal(c.splits["val"].items)
    keys = [set(a.splits[s].keys(a.num_items).tolist()) for s in ("train", "val", "iid_test")]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    n = sum(len(k) for k in keys) + sum(a.report.dropped_unseen[s] for s in ("val", "iid_test"))
    assert n == 200
