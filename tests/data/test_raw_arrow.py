"""The pyarrow fast path of the raw readers: large files, errors deep inside them, and agreement
with the exact slow path (the reference implementation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from oodrec.data import raw, raw_slow
from oodrec.data.raw import ColumnMapping, read_kuairec, read_table, read_yelp_reviews
from oodrec.data.raw_fixtures import kuairec_like, write_kuairec_like
from oodrec.errors import DataValidationError

MAP = ColumnMapping(user="uid", item="iid", rating="r", timestamp="ts")


def _check_equal(got: raw.RawInteractions, table: pa.Table) -> None:
    assert len(got) == table.num_rows
    assert np.array_equal(got.users, table["user_id"].to_numpy().astype(str))
    assert np.array_equal(got.items, table["video_id"].to_numpy().astype(str))
    assert np.array_equal(got.ratings, table["watch_ratio"].to_numpy())
    stamps = table["timestamp"].to_numpy(zero_copy_only=False)
    assert np.array_equal(got.timestamps, stamps, equal_nan=True)
    assert np.isnan(stamps).any()  # the rows without a time are really there


@pytest.fixture(scope="module")
def million(tmp_path_factory) -> tuple[pa.Table, Path]:
    table = kuairec_like(1_000_000, seed=3)
    return table, write_kuairec_like(tmp_path_factory.mktemp("kuai") / "big.csv", table)


def test_kuairec_million_rows(million):
    table, path = million
    _check_equal(read_kuairec(path), table)


def test_bad_value_deep_inside_a_million_rows(million, tmp_path):
    table, _ = million
    bad = write_kuairec_like(tmp_path / "bad.csv", table, {987_654: ("watch_ratio", "n/a")})
    with pytest.raises(
        DataValidationError,
        match=r"bad\.csv, row 987654 \(line 987655\), column 'watch_ratio': non-numeric rating "
        r"'n/a'",
    ):
        read_kuairec(bad)


def test_short_row_deep_inside_a_million_rows(million, tmp_path):
    table, _ = million
    short = write_kuairec_like(tmp_path / "short.csv", table, {765_432: ("user_id", "7\n")})
    with pytest.raises(
        DataValidationError, match=r"row 765432 \(line 765433\): 1 field\(s\), the header needs"
    ):
        read_kuairec(short)


def test_rows_with_extra_fields_are_read_as_before(tmp_path):
    table = kuairec_like(3000, seed=6)
    # pyarrow refuses rows with 9 fields; the csv-module path reads them, as it always did.
    path = write_kuairec_like(tmp_path / "k.csv", table, {2345: ("timestamp", "1,2")})
    got = read_kuairec(path)
    assert got.timestamps[2344] == 1.0 and len(got) == table.num_rows
    assert got.users[:5].tolist() == table["user_id"].to_numpy()[:5].astype(str).tolist()


@pytest.mark.slow
def test_kuairec_full_size_12_5_million_rows(tmp_path):
    table = kuairec_like(12_500_000, seed=4)
    path = write_kuairec_like(tmp_path / "big_matrix.csv", table)
    _check_equal(read_kuairec(path), table)


# ------------------------------------------------------------------ blocks and line numbers


@pytest.mark.parametrize(
    ("column", "text", "message"),
    [
        ("timestamp", "soon", r"column 'timestamp': bad timestamp 'soon'"),
        ("user_id", "", r"column 'user_id': empty user_id value"),
        ("watch_ratio", "inf", r"column 'watch_ratio': non-numeric rating 'inf'"),
        ("watch_ratio", "", r"column 'watch_ratio': non-numeric rating ''"),
    ],
)
def test_bad_value_is_located_in_its_block(tmp_path, monkeypatch, column, text, message):
    monkeypatch.setattr(raw, "CHUNK_ROWS", 1000)
    table = kuairec_like(5000, seed=5)
    path = write_kuairec_like(tmp_path / "k.csv", table, {4321: (column, text)})
    with pytest.raises(DataValidationError, match=r"k\.csv, row 4321 \(line 4322\), " + message):
        read_kuairec(path)


def test_blank_lines_are_skipped_and_lines_still_counted(tmp_path):
    body = "uid,iid,r,ts\n\na,x,5,1\n\n\nb,y,4,2\r\n\r\nc,z,x,3\n"
    f = tmp_path / "a.csv"
    f.write_text(body)
    with pytest.raises(DataValidationError, match=r"row 3 \(line 8\), column 'r': non-numeric"):
        read_table(f, MAP)
    f.write_text(body.replace("c,z,x", 'c,"z",x'))  # quotes: lines counted with the csv module
    with pytest.raises(DataValidationError, match=r"row 3 \(line 8\), column 'r': non-numeric"):
        read_table(f, MAP)
    f.write_text(body.replace("c,z,x", "c,z,3.5"))
    ok = read_table(f, MAP)
    assert ok.users.tolist() == ["a", "b", "c"] and ok.ratings.tolist() == [5.0, 4.0, 3.5]


def test_fast_path_agrees_with_the_slow_path(tmp_path, monkeypatch):
    """Random values in every format the readers accept, some of which pyarrow cannot cast
    (mixed timestamp formats, padded numbers, month dates): both paths give the same arrays."""
    monkeypatch.setattr(raw, "CHUNK_ROWS", 64)
    rng = np.random.default_rng(0)
    n = 1000
    stamps = [
        "1593898068.378",
        "2020-07-05 05:27:48.250",
        "2019-05-01",
        "2019-05",
        "",
        "1600000000",
        " 1600000001",
    ]
    rows = [
        (
            f"u{rng.integers(50)}",
            f'"i,{rng.integers(80)}"' if k % 97 == 0 else f"i{rng.integers(80)}",
            rng.choice(["4", "3.5", " 2", "1e0", "+5", "0.25"]),
            stamps[rng.integers(len(stamps))] if k >= 500 else stamps[k % 3],
        )
        for k in range(n)
    ]
    f = tmp_path / "mixed.csv"
    f.write_text("uid,iid,r,ts\n" + "".join(",".join(r) + "\n" for r in rows))
    names = MAP.roles()
    fast = raw.read_delimited(f, names, allow_missing_timestamp=True)
    header = raw_slow.read_header(f, ",")
    slow = raw_slow.read_delimited_slow(f, header, names, ",", True, 64)
    assert fast.users.tolist() == slow["user"].tolist()
    assert fast.items.tolist() == slow["item"].tolist() and any("," in t for t in fast.items)
    assert np.array_equal(fast.ratings, slow["rating"])
    assert np.array_equal(fast.timestamps, slow["timestamp"], equal_nan=True)
    assert np.isnan(fast.timestamps).sum() > 50


# ------------------------------------------------------------------ JSON lines


def _review(k: int, **over) -> str:
    obj = {"user_id": f"U{k % 7}", "business_id": f"B{k % 5}", "stars": 4.0 + k % 2}
    obj["date"] = "2016-07-12 19:47:51"
    obj.update(over)
    return json.dumps(obj) + "\n"


def test_yelp_blank_lines_and_a_deep_missing_key(tmp_path, monkeypatch):
    monkeypatch.setattr(raw, "CHUNK_ROWS", 100)
    lines = [_review(k) for k in range(500)]
    lines.insert(10, "\n")
    lines.insert(20, "   \n")
    f = tmp_path / "review.json"
    f.write_text("".join(lines))
    got = read_yelp_reviews(f)
    assert len(got) == 500 and got.users[:3].tolist() == ["U0", "U1", "U2"]
    lines[400] = json.dumps({"user_id": "U", "business_id": "B", "date": "2016-01-01"}) + "\n"
    f.write_text("".join(lines))
    with pytest.raises(
        DataValidationError,
        match=r"row 399 \(line 401\): missing column\(s\) 'stars' for a Yelp review",
    ):
        read_yelp_reviews(f)


def test_yelp_text_stars_fall_back_to_the_json_module(tmp_path):
    f = tmp_path / "review.json"
    f.write_text(_review(0) + _review(1, stars="5"))  # pyarrow refuses a string in a number
    assert read_yelp_reviews(f).ratings.tolist() == [4.0, 5.0]
    f.write_text(_review(0) + _review(1, date="someday"))
    with pytest.raises(DataValidationError, match=r"row 2 \(line 2\), column 'date': bad"):
        read_yelp_reviews(f)


def test_bytes_that_are_not_utf8_are_located(tmp_path):
    f = tmp_path / "a.csv"
    f.write_bytes(b"uid,iid,r,ts\na,x,5,1\n\nb\xff,y,4,2\n")
    with pytest.raises(DataValidationError, match=r"a\.csv, line 4: not UTF-8 text"):
        read_table(f, MAP)
    f.write_bytes(b"u\xffid,iid\n")
    with pytest.raises(DataValidationError, match=r"a\.csv, line 1: not UTF-8 text"):
        read_table(f, MAP)
    j = tmp_path / "review.json"
    j.write_bytes(_review(0).encode() + _review(1).encode().replace(b'"U1"', b'"U\xe9"'))
    with pytest.raises(DataValidationError, match=r"review\.json, line 2: not UTF-8 text"):
        read_yelp_reviews(j)
