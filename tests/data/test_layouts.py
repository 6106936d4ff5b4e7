"""Published splits as they are: adjacency lists and RecBole benchmark files, and the rules that
tell them from the default ``user item [value]`` pairs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from oodrec.config import DataConfig
from oodrec.data.dataset import Interactions, _carve, load_dataset
from oodrec.data.io import read_adjacency
from oodrec.data.layouts import find_layout, looks_like_adjacency
from oodrec.errors import DataValidationError


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _pairs(ds, split: str) -> set[tuple[int, int]]:
    inter = ds.splits[split]
    return set(zip(inter.users.tolist(), inter.items.tolist()))


# LightGCN-style train file: users with 1 to 6 items, so line lengths vary.
ADJ_TRAIN = (
    "0 0 1 2 3\n1 1 2 3 4 5\n2 2 3 4\n3 3 4 5 6 7 8\n4 4 5 0 1\n5 5 6 7 0 1 2\n6 6\n7 0 8 1\n"
)


def test_adjacency_layout_detected_and_applied_to_every_file(tmp_path):
    d = tmp_path / "lightgcn"
    _write(d / "train.txt", ADJ_TRAIN)
    _write(d / "valid_iid.txt", "0 4\n1 6\n")
    _write(d / "test_iid.txt", "2 5 6\n3 0\n")  # `u i j` is two items, not an item and a value
    _write(d / "test_ood.txt", "4 2 3\n5 8\n6 7\n")
    ds = load_dataset(DataConfig(dataset=str(d)))
    assert ds.report.layout == "adjacency" and ds.report.files["train"].layout == "adjacency"
    assert len(ds.splits["train"]) == 32 and (ds.num_users, ds.num_items) == (8, 9)
    assert _pairs(ds, "iid_test") == {(2, 5), (2, 6), (3, 0)}
    assert _pairs(ds, "ood_test") == {(4, 2), (4, 3), (5, 8), (6, 7)}
    assert ds.report.notes() == []


def test_marker_file_names_the_layout(tmp_path):
    d = tmp_path / "uniform"
    # Every user has exactly three items: the content rule stays with pairs, the marker decides.
    _write(d / "train.txt", "".join(f"{u} {u % 5} {(u + 1) % 5} {(u + 2) % 5}\n" for u in range(6)))
    _write(d / "test_ood.txt", "0 3\n1 4\n")
    assert find_layout(d).layout == "pairs"
    with pytest.raises(DataValidationError, match=r"put a file layout\.txt holding `adjacency`"):
        load_dataset(DataConfig(dataset=str(d)))
    _write(d / "layout.txt", "adjacency\n")
    ds = load_dataset(DataConfig(dataset=str(d), split_seed=1))
    assert ds.report.layout == "adjacency" and ds.report.carved_from_train
    dropped = ds.report.dropped_unseen
    carved = sum(len(ds.splits[s]) + dropped[s] for s in ("val", "iid_test"))
    assert len(ds.splits["train"]) + carved == 18
    _write(d / "layout.txt", "lists\n")
    with pytest.raises(DataValidationError, match=r"layout\.txt: expected `pairs` or `adjacency`"):
        load_dataset(DataConfig(dataset=str(d)))


@pytest.mark.parametrize(
    ("text", "adjacency"),
    [
        (ADJ_TRAIN, True),
        ("0 1\n0 2 1\n1 3 1\n", False),  # pairs with a value column
        ("".join(f"{u} {u} 5 {978300760 + u}\n" for u in range(20)), False),  # u i rating ts
        ("0\n0 1\n" + "".join(f"{u} {u} 4 {u + 7}\n" for u in range(20)), False),  # mostly 4
        (ADJ_TRAIN.replace("3 3 4", "3 x 4"), False),  # not all integers
        (ADJ_TRAIN.replace("7 0 8 1", "7 0 -8 1"), False),  # negative id
        ("0 1 2 3\n1 2 3 4\n2 3\n", False),  # two lines of four fields out of three: one count
    ],
)
def test_content_rule_is_conservative(tmp_path, text, adjacency):
    assert looks_like_adjacency(_write(tmp_path / "train.txt", text)) is adjacency


def test_pairs_with_a_stray_long_line_stay_pairs_and_fail_loudly(tmp_path):
    d = tmp_path / "pairs"
    _write(d / "train.txt", "0 0 1\n0 1 1\n1 1 1\n1 2 1 7\n2 2 1\n")
    _write(d / "test_ood.txt", "0 2\n")
    with pytest.raises(DataValidationError, match=r"train\.txt, line 4: malformed line '1 2 1 7'"):
        load_dataset(DataConfig(dataset=str(d)))


def test_adjacency_reader_bad_lines_and_user_without_items(tmp_path):
    f = _write(tmp_path / "a.txt", "0 1 2\n3\n4 5 x\n6 7 7\n\n8 9\n")
    with pytest.raises(DataValidationError, match=r"a\.txt, line 3: malformed line '4 5 x'"):
        read_adjacency(f)
    users, items, rep = read_adjacency(f, on_bad_lines="skip")
    assert list(zip(users.tolist(), items.tolist())) == [(0, 1), (0, 2), (6, 7), (8, 9)]
    assert (rep.skipped_bad_lines, rep.duplicates_removed, rep.kept) == (2, 1, 4)
    assert rep.bad_line_examples == ["line 3: '4 5 x'", "line 5: ''"]


# ------------------------------------------------------------------ RecBole benchmark files

HEAD = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def _inter(rows: list[tuple[str, str]]) -> str:
    return HEAD + "".join(f"{u}\t{i}\t5\t{978300760 + k}\n" for k, (u, i) in enumerate(rows))


def test_recbole_trio_loads_with_shared_ids_and_a_carved_iid_test(tmp_path):
    d = tmp_path / "ml"
    train = [(f"u{u}", f"m{(u + k) % 12}") for u in range(10) for k in range(6)]
    _write(d / "ml.train.inter", _inter(train + [("u0", "m0")]))  # one repeated pair
    _write(d / "ml.valid.inter", _inter([("u1", "m9"), ("u2", "m10")]))
    _write(d / "ml.test.inter", _inter([("u3", "m11"), ("u4", "m0"), ("u99", "m1"), ("u5", "zz")]))
    ds = load_dataset(DataConfig(dataset=str(d), split_seed=3))
    rep = ds.report
    assert rep.layout == "recbole" and rep.files["ood_test"].path.endswith("ml.test.inter")
    assert rep.carved_splits == ["iid_test"] and rep.files["train"].duplicates_removed == 1
    assert "iid_test carved from train 7:2 with split_seed=3" in rep.notes()
    assert (ds.num_users, ds.num_items) == (10, 12)
    assert rep.dropped_unseen["ood_test"] == 2  # unseen user u99 and unseen item zz
    assert len(ds.splits["val"]) == 2 and len(ds.splits["ood_test"]) == 2
    assert len(ds.splits["train"]) == 60 - round(60 * 2 / 9)
    assert len(ds.splits["iid_test"]) + rep.dropped_unseen["iid_test"] == round(60 * 2 / 9)


def test_recbole_with_explicit_iid_and_ood_tests(tmp_path):
    d = tmp_path / "rb"
    train = [(str(u), str((u * 3 + k) % 9)) for u in range(8) for k in range(5)]
    _write(d / "rb.train.inter", _inter(train))
    _write(d / "rb.valid.inter", _inter([("0", "8")]))
    _write(d / "rb.test_iid.inter", _inter([("1", "8")]))
    _write(d / "rb.test_ood.inter", _inter([("2", "3")]))
    ds = load_dataset(DataConfig(dataset=str(d)))
    assert not ds.report.carved_from_train and len(ds.splits["train"]) == 40
    assert [len(ds.splits[s]) for s in ("val", "iid_test", "ood_test")] == [1, 1, 1]
    (d / "rb.test_ood.inter").unlink()
    with pytest.raises(DataValidationError, match=r"no \.test\.inter or \.test_ood\.inter"):
        load_dataset(DataConfig(dataset=str(d)))


def test_three_way_carve_is_unchanged():
    """The generalised carve gives exactly the former 7:1:2 split."""
    gen = torch.Generator().manual_seed(0)
    train = Interactions(torch.randint(0, 50, (997,), generator=gen), torch.arange(997))
    got = _carve(train, 11, ["val", "iid_test"])
    perm = torch.randperm(997, generator=torch.Generator().manual_seed(11))
    n_train, n_val = int(round(0.7 * 997)), int(round(0.1 * 997))
    former = (perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :])
    for role, idx in zip(("train", "val", "iid_test"), former):
        assert got[role].items.equal(train.items[idx.sort().values])
