"""Inputs that cannot crash and runs that cannot lose data silently (issue "Runs that cannot be
corrupted, inputs that cannot crash"): each test asserts the message or the preserved data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oodrec.cli import main
from oodrec.config import DataConfig
from oodrec.data import dataset as dataset_module
from oodrec.data.dataset import load_dataset
from oodrec.data.io import MAX_ID, read_adjacency, read_interactions
from oodrec.data.raw import (
    ColumnMapping,
    detect_columns,
    read_food_com,
    read_kuairec,
    read_recbole_inter,
    read_table,
    read_yelp_reviews,
)
from oodrec.data.stats import dataset_stats
from oodrec.errors import DataValidationError

BOM = b"\xef\xbb\xbf"
TRAIN = "0 0\n0 1\n1 1\n1 2\n2 0\n2 2\n"
KUAIREC_HEADER = [
    "user_id", "video_id", "play_duration", "video_duration", "time", "date", "timestamp",
    "watch_ratio",
]  # fmt: skip


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _dataset(folder: Path, **files: str | bytes) -> Path:
    names = {"train": "train.txt", "val": "valid_iid.txt", "iid": "test_iid.txt"}
    names["ood"] = "test_ood.txt"
    for role, data in files.items():
        _write(folder / names[role], data)
    return folder


def _load(folder: Path, **kw) -> object:
    return load_dataset(DataConfig(dataset=str(folder), **kw))


def _pairs(ds, split: str) -> list[tuple[int, int]]:
    inter = ds.splits[split]
    return list(zip(inter.users.tolist(), inter.items.tolist()))


# ------------------------------------------------------------------ BOM and blank lines


@pytest.mark.parametrize("on_bad_lines", ["error", "skip"])
def test_a_utf8_bom_at_the_start_of_split_files_costs_no_row(tmp_path, on_bad_lines):
    plain = _dataset(tmp_path / "plain", train=TRAIN, val="0 2\n", iid="1 0\n", ood="2 1\n")
    with_bom = _dataset(
        tmp_path / "bom",
        train=BOM + TRAIN.encode(),
        val=BOM + b"0 2\n",
        iid=BOM + b"1 0\n",
        ood=BOM + b"2 1\n",
    )
    want, got = _load(plain), _load(with_bom, on_bad_lines=on_bad_lines)
    for split in ("train", "val", "iid_test", "ood_test"):
        assert _pairs(got, split) == _pairs(want, split)
    assert all(rep.skipped_bad_lines == 0 for rep in got.report.files.values())
    assert got.report.notes() == []


def test_a_bom_does_not_hide_an_adjacency_list_or_a_layout_marker(tmp_path):
    adj = _write(tmp_path / "a.txt", BOM + b"0 1 2 3\n1 2 3 4 5\n")
    users, items, rep = read_adjacency(adj)
    assert users.tolist() == [0, 0, 0, 1, 1, 1, 1] and rep.skipped_bad_lines == 0
    d = _dataset(
        tmp_path / "adj", train=BOM + b"0 0 1 2\n1 1 2 3 0\n2 2 3\n3 0 1 2 3 4\n", ood="0 3\n"
    )
    assert _load(d).report.layout == "adjacency"  # detected through the BOM
    _write(d / "layout.txt", BOM + b"adjacency\n")
    assert _load(d).report.layout == "adjacency"


def test_utf16_split_file_is_a_clear_error(tmp_path):
    f = _write(tmp_path / "train.txt", "0 1\n".encode("utf-16"))
    with pytest.raises(DataValidationError, match=r"train\.txt, line 1: the file is UTF-16 text"):
        read_interactions(f)


def test_blank_lines_at_the_end_are_accepted_silently(tmp_path):
    f = _write(tmp_path / "a.txt", "0 1\n1 2\n\n \r\n\n")
    users, items, rep = read_interactions(f)
    assert list(zip(users.tolist(), items.tolist())) == [(0, 1), (1, 2)]
    assert (rep.lines, rep.kept, rep.skipped_bad_lines) == (2, 2, 0)
    users, items, rep = read_adjacency(f)
    assert rep.kept == 2 and rep.skipped_bad_lines == 0


def test_a_blank_line_in_the_middle_is_an_error_or_a_counted_skip(tmp_path, capsys):
    d = _dataset(
        tmp_path / "ds",
        train="0 0\n0 1\n\n1 1\n1 2\n2 0\n2 2\n\n",
        val="1 0\n",
        iid="2 1\n",
        ood="0 2\n",
    )
    with pytest.raises(
        DataValidationError,
        match=r"train\.txt, line 3: blank line before the last interaction \(only blank lines "
        r"at the end of a file are ignored\)\. Use --on-bad-lines skip",
    ):
        _load(d)
    ds = _load(d, on_bad_lines="skip")
    rep = ds.report.files["train"]
    assert (rep.skipped_bad_lines, rep.skipped_blank_lines, rep.kept) == (1, 1, 6)
    assert rep.bad_line_examples == ["line 3: ''"]
    assert "train: skipped 1 malformed line(s) (1 blank)" in ds.report.notes()
    # the same through the CLI: reported, not silent
    assert main(["-q", "stats", str(d), "--on-bad-lines", "skip"]) == 0
    assert "note: train: skipped 1 malformed line(s) (1 blank)" in capsys.readouterr().out
    assert main(["-q", "stats", str(d)]) == 2
    assert "train.txt, line 3: blank line" in capsys.readouterr().err


# ------------------------------------------------------------------ empty split after checks


def test_empty_split_names_the_check_and_every_count(tmp_path):
    d = _dataset(tmp_path / "ds", train=TRAIN, val="0 2\n", iid="1 0\n", ood="9 9\n0 0\n2 2\n")
    with pytest.raises(DataValidationError) as err:
        _load(d)
    assert str(err.value) == (
        f"dataset 'ds': split ood_test ({d / 'test_ood.txt'}) is empty after the checks: of its "
        "3 pair(s) the checks removed unseen users/items 1, also in train 2, also in val 0; the "
        "'also in train' check removed the last ones (each was also a training pair: is it a "
        "copy of train?)"
    )
    _write(d / "test_ood.txt", "7 0\n0 8\n")
    with pytest.raises(DataValidationError, match=r"removed unseen users/items 2, also in train 0"):
        _load(d)
    _write(d / "test_iid.txt", "0 2\n")
    with pytest.raises(DataValidationError, match=r"the 'also in val' check removed the last"):
        _load(d)


def test_empty_carved_split_says_train_is_too_small(tmp_path):
    d = _dataset(tmp_path / "ds", train="0 0\n1 1\n", ood="0 1\n")
    with pytest.raises(
        DataValidationError,
        match=r"split val \(carved from train with split_seed=\d+\) is empty after the checks: "
        r"it got no pair \(train, 2 pair\(s\), is too small",
    ):
        _load(d)


# ------------------------------------------------------------------ absent IID test


def test_a_directory_without_iid_test_loads_and_reports_it_absent(tmp_path, capsys):
    d = _dataset(tmp_path / "ood_only", train=TRAIN, val="0 2\n1 0\n", ood="2 1\n")
    ds = _load(d)
    assert ds.report.absent_splits == ["iid_test"]
    assert len(ds.splits["iid_test"]) == 0  # not invented: no carve, no copy of the OOD test
    assert _pairs(ds, "ood_test") == [(2, 1)] and _pairs(ds, "train") == [
        (0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 2)
    ]  # fmt: skip
    assert ds.report.carved_from_train is False
    assert ds.report.sizes == {"train": 6, "val": 2, "iid_test": 0, "ood_test": 1}
    assert "iid_test" not in ds.report.dropped_unseen
    note = f"iid_test: absent ({d} has no test_iid.txt); it has no metrics"
    assert note in ds.report.notes()
    stats = dataset_stats(ds)
    assert list(stats["splits"]) == ["train", "val", "ood_test"]
    assert "tv_train_iid_test" not in stats
    assert main(["-q", "stats", str(d)]) == 0
    out = capsys.readouterr().out
    assert "iid_test " not in out and f"note: {note}" in out


def test_an_iid_test_without_val_is_refused(tmp_path):
    d = _dataset(tmp_path / "ds", train=TRAIN, iid="0 2\n", ood="2 1\n")
    with pytest.raises(
        DataValidationError,
        match=r"has an IID test file but no valid_iid\.txt / val\.txt / valid\.txt file; val is "
        r"needed to select the epoch",
    ):
        _load(d)


# ------------------------------------------------------------------ ids too large


def test_an_id_above_2_31_fails_at_load_naming_file_line_id_and_size(tmp_path):
    d = _dataset(
        tmp_path / "ds",
        train="0 0\n1 1\n99999999999 3\n2 2\n",
        val="0 1\n",
        iid="1 0\n",
        ood="2 0\n",
    )
    with pytest.raises(DataValidationError) as err:
        _load(d)
    msg = str(err.value)
    assert msg.startswith(f"{d / 'train.txt'}, line 3: user id 99999999999 is too large: ids ")
    assert f"must be at most {MAX_ID:,} (2**31 - 1)" in msg
    assert "100,000,000,000 rows x 64 dims x 4 bytes = 25.6 TB" in msg
    assert "Use --on-bad-lines skip to skip such lines (1 bad line(s) in this file)" in msg
    rep = _load(d, on_bad_lines="skip").report.files["train"]
    assert (rep.skipped_bad_lines, rep.skipped_large_ids, rep.kept) == (1, 1, 3)
    # beyond int64 too: an error, not an OverflowError traceback
    f = _write(tmp_path / "b.txt", "0 1\n1 123456789012345678901234567890\n")
    with pytest.raises(DataValidationError, match=r"b\.txt, line 2: item id 1234567890"):
        read_interactions(f)
    f = _write(tmp_path / "c.txt", "0 1 2\n1 3 4294967296 5\n")
    with pytest.raises(DataValidationError, match=r"c\.txt, line 2: item id 4294967296 is too"):
        read_adjacency(f)


def test_sparse_ids_whose_tables_exceed_memory_fail_before_any_allocation(tmp_path, monkeypatch):
    d = _dataset(
        tmp_path / "ds",
        train="0 0\n1 1\n10000000 2\n2 2\n1 0\n",
        val="0 1\n",
        iid="2 0\n",
        ood="0 2\n",
    )
    monkeypatch.setattr(dataset_module, "physical_memory_bytes", lambda: 10**9)
    with pytest.raises(DataValidationError) as err:
        _load(d)
    assert str(err.value) == (
        f"{d / 'train.txt'}, line 3: user id 10000000 makes an id space of 10,000,001 users x 3 "
        "items: one embedding table row per id (10,000,004 rows x 64 dims x 4 bytes = 2.6 GB, x4 "
        "for gradients and Adam moments = 10.2 GB) exceeds this machine's memory (1.0 GB). The "
        "file uses only 4 distinct user id(s): renumber the ids to 0..N-1 (`oodrec prepare` "
        "does so)"
    )
    monkeypatch.setattr(dataset_module, "physical_memory_bytes", lambda: 10**12)
    # it fits, but is still a sparse id space: refused unless asked for, naming line and cost
    with pytest.raises(DataValidationError) as err:
        _load(d)
    assert str(err.value).startswith(
        f"{d / 'train.txt'}, line 3: user id 10,000,000 lies far beyond the other user ids (the "
        "next largest is 2): only 4 of the 10,000,001 user ids"
    )
    assert "data.allow_sparse_ids=true" in str(err.value) and "`oodrec prepare`" in str(err.value)
    assert _load(d, allow_sparse_ids=True).num_users == 10_000_001


# ------------------------------------------------------------------ raw readers: BOM, UTF-8


def _with_bom(path: Path, text: str) -> tuple[Path, Path]:
    plain = _write(path.with_name("plain_" + path.name), text)
    return plain, _write(path, BOM + text.encode())


@pytest.mark.parametrize(
    "name, text, reader",
    [
        ("a.csv", "user_id,item_id,rating\nu1,i1,5\nu2,i2,4\n", read_table),
        ("a.tsv", "user_id\titem_id\nu1\ti1\nu2\ti2\n", read_table),
        (
            "food.csv",
            'user_id,recipe_id,date,rating,review\nu1,r1,2019-01-01,5,"ok\nfine"\n'
            "u2,r2,2019-01-02,4,ok\n",
            read_food_com,
        ),
        (
            "review.json",
            '{"user_id":"a","business_id":"b","stars":5,"date":"2019-01-01"}\n'
            '{"user_id":"c","business_id":"d","stars":4,"date":"2019-01-02"}\n',
            read_yelp_reviews,
        ),
        ("x.inter", "user_id:token\titem_id:token\trating:float\nu1\ti1\t5\nu2\ti2\t4\n", None),
        (
            "big.csv",
            ",".join(KUAIREC_HEADER) + "\n1,2,3,4,,,1.6e9,2.5\n3,4,5,6,,,1.6e9,0.5\n",
            None,
        ),
    ],
)
def test_raw_readers_accept_a_bom_before_the_header(tmp_path, name, text, reader):
    reader = reader or (read_recbole_inter if name.endswith(".inter") else read_kuairec)
    plain, bom = _with_bom(tmp_path / name, text)
    want, got = reader(plain), reader(bom)
    assert len(got) == 2
    assert got.users.tolist() == want.users.tolist() and got.items.tolist() == want.items.tolist()
    np.testing.assert_array_equal(got.ratings, want.ratings)


def _prepare(raw: Path, out: Path, fmt: str, *extra: str) -> list[str]:
    argv = ["-q", "prepare", str(raw), "--format", fmt, "--protocol", "popularity"]
    return [*argv, "--out", str(out), *extra]


@pytest.mark.parametrize(
    "name, fmt, data, line",
    [
        ("plain.csv", "csv", b"user_id,item_id\nu1,i1\n\nu2,i\xff2\n", 4),
        ("head.csv", "csv", b"user_\xffid,item_id\nu1,i1\n", 1),
        ("clicks.tsv", "tsv", b"user_id\titem_id\nu1\ti1\nu2\ti\xff2\n", 3),
        (
            "RAW_interactions.csv",
            "foodcom",
            b'user_id,recipe_id,date,rating,review\nu1,r1,2019-01-01,5,"ok\nfine"\n'
            b"u\xe92,r2,2019-01-02,4,ok\n",
            4,
        ),
        (
            "review.json",
            "yelp",
            b'{"user_id":"a","business_id":"b","stars":5,"date":"2019-01-01"}\n'
            b'{"user_id":"\xe9","business_id":"b","stars":5,"date":"2019-01-01"}\n',
            2,
        ),
        ("x.inter", "recbole", b"user_id:token\titem_id:token\nu1\ti1\nu\xff\ti2\n", 3),
    ],
)
def test_prepare_cli_names_file_and_line_of_bytes_that_are_not_utf8(
    tmp_path, capsys, name, fmt, data, line
):
    raw = _write(tmp_path / name, BOM + data if fmt == "csv" else data)
    assert main(_prepare(raw, tmp_path / "out", fmt)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {raw}, line {line}: not UTF-8 text")
    assert "Traceback" not in err and not (tmp_path / "out").exists()


# ------------------------------------------------------------------ columns found by name


def _movielens(path: Path, header: list[str]) -> Path:
    """A MovieLens-like ratings.csv: 60 users x 10-25 of 40 items, ratings 1-5, timestamps."""
    rng = np.random.default_rng(0)
    pop = 1.0 / np.arange(1, 41) ** 0.8
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for u in range(60):
            for i in rng.choice(
                40, size=int(rng.integers(10, 26)), replace=False, p=pop / pop.sum()
            ):
                rating = rng.choice([1, 2, 3, 4, 5], p=[0.05, 0.05, 0.1, 0.4, 0.4])
                w.writerow([u, i, rating, 1_500_000_000 + int(rng.integers(0, 400)) * 86_400])
    return path


def test_prepare_uses_rating_and_timestamp_found_by_name_and_says_so(tmp_path, capsys):
    raw = _movielens(tmp_path / "ratings.csv", ["userId", "movieId", "rating", "timestamp"])
    out = tmp_path / "ml"
    argv = ["-q", "prepare", str(raw), "--format", "csv", "--protocol", "temporal"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        f"{raw}: columns found by name: user=userId, item=movieId, rating=rating, "
        "timestamp=timestamp (choose others with --columns)"
    ) in printed
    rec = json.loads((out / "prepare.json").read_text())
    assert rec["columns"] == {
        str(raw): {
            "user": "userId",
            "item": "movieId",
            "rating": "rating",
            "timestamp": "timestamp",
        }
    }
    assert rec["columns_found_by_name"] is True
    assert rec["positive_threshold"] == 4.0 and rec["preprocess"]["below_threshold"] > 0
    # an explicit mapping is used as given and not announced as found
    cols = "user=userId,item=movieId"
    assert main([*argv, "--out", str(tmp_path / "ml2"), "--columns", cols]) == 2  # no timestamps
    assert "found by name" not in capsys.readouterr().out


def test_column_detection_rules_and_errors_that_list_the_header(tmp_path, capsys):
    assert detect_columns("f", KUAIREC_HEADER) == ColumnMapping(
        user="user_id", item="video_id", timestamp="timestamp"
    )  # `timestamp` wins over `time` and `date`
    assert detect_columns("f", ["User ID", "item", "Stars", "date"]) == ColumnMapping(
        user="User ID", item="item", rating="Stars", timestamp="date"
    )
    with pytest.raises(
        DataValidationError,
        match=r"f: columns 'user_id', 'userId' could each be the user column; the header has "
        r"'user_id', 'userId', 'item_id'; pass --columns user=COL,item=COL",
    ):
        detect_columns("f", ["user_id", "userId", "item_id"])
    raw = _write(tmp_path / "odd.csv", "who,what,stars\na,b,5\n")
    assert main(_prepare(raw, tmp_path / "out", "csv")) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: {raw}: no column named like a user (user, userid, ...) / item (item, itemid, "
        "...) id; the header has 'who', 'what', 'stars'; pass --columns"
    )
    pq.write_table(pa.table({"UserId": ["a", "b"], "ItemId": ["x", "y"]}), tmp_path / "p.parquet")
    got = read_table(tmp_path / "p.parquet")
    assert got.columns == {"user": "UserId", "item": "ItemId"} and got.users.tolist() == ["a", "b"]
