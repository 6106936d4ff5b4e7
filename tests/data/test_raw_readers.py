"""Raw readers: one tiny file per format and per bad-input rule, each asserting the message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oodrec.data import raw
from oodrec.data.raw import (
    ColumnMapping,
    read_food_com,
    read_kuairec,
    read_recbole_inter,
    read_table,
    read_yelp_reviews,
)
from oodrec.errors import DataValidationError

MAP = ColumnMapping(user="uid", item="iid", rating="r", timestamp="ts")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------ generic CSV / TSV / Parquet


def test_csv_with_mapping_reads_tokens_ratings_and_timestamps(tmp_path):
    f = _write(tmp_path / "a.csv", "uid,iid,r,ts\na,x,5,2019-01-01\nb,y,3.5,2019-01-02 10:00:00\n")
    r = read_table(f, MAP)
    assert r.users.tolist() == ["a", "b"] and r.items.tolist() == ["x", "y"]
    assert r.ratings.tolist() == [5.0, 3.5]
    assert r.timestamps.tolist() == [1546300800.0, 1546300800.0 + 86400 + 36000]


def test_tsv_unix_timestamps_and_implicit_log(tmp_path):
    f = _write(tmp_path / "a.tsv", "user_id\titem_id\tts\n1\t2\t1600000000.5\n3\t4\t1600000001\n")
    r = read_table(f, ColumnMapping(timestamp="ts"))
    assert r.users.tolist() == ["1", "3"] and np.isnan(r.ratings).all()
    assert r.timestamps.tolist() == [1600000000.5, 1600000001.0]


def test_csv_missing_column(tmp_path):
    f = _write(tmp_path / "a.csv", "uid,iid,r\na,x,5\n")
    with pytest.raises(DataValidationError, match=r"a\.csv: missing column\(s\) 'ts' for CSV"):
        read_table(f, MAP)


def test_csv_non_numeric_rating(tmp_path):
    f = _write(tmp_path / "a.csv", "uid,iid,r,ts\na,x,5,2019-01-01\nb,y,abc,2019-01-02\n")
    with pytest.raises(
        DataValidationError, match=r"a\.csv, row 2 \(line 3\), column 'r': non-numeric rating 'abc'"
    ):
        read_table(f, MAP)


def test_csv_infinite_rating_is_rejected(tmp_path):
    f = _write(tmp_path / "a.csv", "uid,iid,r,ts\na,x,inf,2019-01-01\n")
    with pytest.raises(DataValidationError, match=r"row 1 \(line 2\), column 'r': non-numeric"):
        read_table(f, MAP)


def test_csv_bad_timestamp(tmp_path):
    f = _write(tmp_path / "a.csv", "uid,iid,r,ts\na,x,5,2019-01-01\nb,y,3,yesterday\n")
    with pytest.raises(
        DataValidationError,
        match=r"a\.csv, row 2 \(line 3\), column 'ts': bad timestamp 'yesterday' \(expected Unix",
    ):
        read_table(f, MAP)


def test_csv_impossible_date_and_empty_timestamp(tmp_path):
    f = _write(tmp_path / "a.csv", "uid,iid,r,ts\na,x,5,2019-13-01\n")
    with pytest.raises(DataValidationError, match=r"bad timestamp '2019-13-01'"):
        read_table(f, MAP)
    f = _write(tmp_path / "b.csv", "uid,iid,r,ts\na,x,5,\n")
    with pytest.raises(
        DataValidationError, match=r"row 1 \(line 2\), column 'ts': bad timestamp \(empty\)"
    ):
        read_table(f, MAP)


def test_csv_empty_id_and_ragged_row(tmp_path):
    f = _write(tmp_path / "a.csv", "uid,iid,r,ts\n,x,5,1\n")
    with pytest.raises(DataValidationError, match=r"row 1 \(line 2\), column 'uid': empty uid"):
        read_table(f, MAP)
    f = _write(tmp_path / "b.csv", "uid,iid,r,ts\na,x,5,1\nb,y\n")
    with pytest.raises(
        DataValidationError, match=r"row 2 \(line 3\): 2 field\(s\), the header needs"
    ):
        read_table(f, MAP)


def test_empty_file_and_header_only(tmp_path):
    with pytest.raises(DataValidationError, match=r"file is empty"):
        read_table(_write(tmp_path / "a.csv", ""), MAP)
    with pytest.raises(DataValidationError, match=r"no data rows after the header"):
        read_table(_write(tmp_path / "b.csv", "uid,iid,r,ts\n"), MAP)
    with pytest.raises(DataValidationError, match=r"file not found"):
        read_table(tmp_path / "missing.csv", MAP)


def test_row_numbers_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(raw, "CHUNK_ROWS", 2)
    rows = "".join(f"u{k},i{k},4,{1000 + k}\n" for k in range(4)) + "u9,i9,four,5\n"
    f = _write(tmp_path / "a.csv", "uid,iid,r,ts\n" + rows)
    with pytest.raises(
        DataValidationError, match=r"row 5 \(line 6\), column 'r': non-numeric rating 'four'"
    ):
        read_table(f, MAP)
    ok = read_table(_write(tmp_path / "b.csv", "uid,iid,r,ts\n" + rows[:-14]), MAP)
    assert ok.users.tolist() == ["u0", "u1", "u2", "u3"]


def test_column_mapping_parse():
    m = ColumnMapping.parse("user=uid, item=iid,rating=stars")
    assert (m.user, m.item, m.rating, m.timestamp) == ("uid", "iid", "stars", None)
    with pytest.raises(DataValidationError, match=r"'usr=uid': expected ROLE=COLUMN"):
        ColumnMapping.parse("usr=uid")


def test_parquet_that_is_not_parquet_gives_a_clear_error(tmp_path):
    f = _write(tmp_path / "a.parquet", "not really parquet")
    with pytest.raises(DataValidationError, match=r"a\.parquet: not a readable Parquet file"):
        read_table(f, MAP)


def test_parquet(tmp_path):
    stamps = np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[s]")
    table = {"uid": ["a", "b"], "iid": [1, 2], "r": [5.0, 4.0], "ts": pa.array(stamps)}
    pq.write_table(pa.table(table), tmp_path / "a.parquet")
    r = read_table(tmp_path / "a.parquet", MAP)
    assert r.users.tolist() == ["a", "b"] and r.items.tolist() == ["1", "2"]
    assert r.timestamps.tolist() == [1577836800.0, 1577923200.0]
    table["r"] = [5.0, None]
    pq.write_table(pa.table(table), tmp_path / "b.parquet")
    with pytest.raises(
        DataValidationError, match=r"row 2, column 'r': non-numeric rating \(missing\)"
    ):
        read_table(tmp_path / "b.parquet", MAP)


# ------------------------------------------------------------------ RecBole atomic files


def test_recbole_inter(tmp_path):
    text = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t978300760\n"
    r = read_recbole_inter(_write(tmp_path / "ml.inter", text + "2\t20\t2.5\t978300761\n"))
    assert r.users.tolist() == ["1", "2"] and r.ratings.tolist() == [4.0, 2.5]
    assert r.timestamps.tolist() == [978300760.0, 978300761.0]
    implicit = read_recbole_inter(
        _write(tmp_path / "b.inter", "user_id:token\titem_id:token\n1\t2\n")
    )
    assert np.isnan(implicit.ratings).all() and np.isnan(implicit.timestamps).all()


def test_recbole_header_errors(tmp_path):
    with pytest.raises(DataValidationError, match=r"header field 'user_id' has no ':type' suffix"):
        read_recbole_inter(_write(tmp_path / "a.inter", "user_id\titem_id:token\n1\t2\n"))
    with pytest.raises(DataValidationError, match=r"missing column\(s\) 'item_id'"):
        read_recbole_inter(_write(tmp_path / "b.inter", "user_id:token\tbiz:token\n1\t2\n"))
    with pytest.raises(DataValidationError, match=r"'rating:token' must be declared rating:float"):
        read_recbole_inter(
            _write(tmp_path / "c.inter", "user_id:token\titem_id:token\trating:token\n1\t2\t3\n")
        )


def test_recbole_bad_values(tmp_path):
    head = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    with pytest.raises(DataValidationError, match=r"column 'rating:float': non-numeric rating 'x'"):
        read_recbole_inter(_write(tmp_path / "a.inter", head + "1\t2\tx\t5\n"))
    with pytest.raises(
        DataValidationError, match=r"column 'timestamp:float': bad timestamp 'soon'"
    ):
        read_recbole_inter(_write(tmp_path / "b.inter", head + "1\t2\t3\tsoon\n"))


# ------------------------------------------------------------------ KuaiRec, Yelp, Food.com

KUAI_HEAD = "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio\n"


def test_kuairec(tmp_path):
    rows = (
        "14,148,4381,6067,2020-07-05 05:27:48.378,20200705,1593898068.378,0.722\n"
        "14,183,11635,6100,,,,1.907\n"
    )
    r = read_kuairec(_write(tmp_path / "small_matrix.csv", KUAI_HEAD + rows))
    assert r.users.tolist() == ["14", "14"] and r.items.tolist() == ["148", "183"]
    assert r.ratings.tolist() == [0.722, 1.907]
    assert r.timestamps[0] == 1593898068.378 and np.isnan(r.timestamps[1])


def test_kuairec_errors(tmp_path):
    head = KUAI_HEAD.replace(",watch_ratio", "")
    with pytest.raises(DataValidationError, match=r"missing column\(s\) 'watch_ratio' for KuaiRec"):
        read_kuairec(_write(tmp_path / "a.csv", head + "1,2,3,4,,,5\n"))
    with pytest.raises(
        DataValidationError, match=r"column 'watch_ratio': non-numeric rating 'n/a'"
    ):
        read_kuairec(_write(tmp_path / "b.csv", KUAI_HEAD + "1,2,3,4,,,5,n/a\n"))
    with pytest.raises(DataValidationError, match=r"column 'timestamp': bad timestamp 'x'"):
        read_kuairec(_write(tmp_path / "c.csv", KUAI_HEAD + "1,2,3,4,,,x,1.0\n"))


def test_yelp_reviews(tmp_path):
    lines = [
        '{"review_id":"r1","user_id":"U1","business_id":"B1","stars":5.0,'
        '"date":"2016-07-12 19:47:51","text":"Great"}',
        '{"review_id":"r2","user_id":"U2","business_id":"B1","stars":2,'
        '"date":"2017-01-01 00:00:00"}',
    ]
    r = read_yelp_reviews(_write(tmp_path / "review.json", "\n".join(lines) + "\n"))
    assert r.users.tolist() == ["U1", "U2"] and r.items.tolist() == ["B1", "B1"]
    assert r.ratings.tolist() == [5.0, 2.0]
    assert r.timestamps[1] == 1483228800.0


def test_yelp_errors(tmp_path):
    good = '{"user_id":"U1","business_id":"B1","stars":5,"date":"2016-07-12 19:47:51"}\n'
    with pytest.raises(
        DataValidationError,
        match=r"row 2 \(line 2\): missing column\(s\) 'stars' for a Yelp review",
    ):
        read_yelp_reviews(
            _write(
                tmp_path / "a.json",
                good + '{"user_id":"U","business_id":"B","date":"2016-01-01"}\n',
            )
        )
    with pytest.raises(DataValidationError, match=r"row 2 \(line 2\): invalid JSON"):
        read_yelp_reviews(_write(tmp_path / "b.json", good + "{not json\n"))
    bad_stars = good.replace('"stars":5', '"stars":"five"')
    with pytest.raises(
        DataValidationError, match=r"row 1 \(line 1\), column 'stars': non-numeric rating 'five'"
    ):
        read_yelp_reviews(_write(tmp_path / "c.json", bad_stars))
    bad_date = good.replace("2016-07-12 19:47:51", "last week")
    with pytest.raises(DataValidationError, match=r"column 'date': bad timestamp 'last week'"):
        read_yelp_reviews(_write(tmp_path / "d.json", bad_date))


def test_food_com_with_multiline_quoted_review(tmp_path):
    text = (
        "user_id,recipe_id,date,rating,review\n"
        '38094,40893,2003-02-17,4,"Great with a salad.\nCooked on top of stove, ""really"" good"\n'
        "1293707,40893,2011-12-21,5,So simple\n"
    )
    r = read_food_com(_write(tmp_path / "RAW_interactions.csv", text))
    assert r.users.tolist() == ["38094", "1293707"] and r.ratings.tolist() == [4.0, 5.0]
    assert r.timestamps[0] == 1045440000.0
    bad = text.replace("2011-12-21,5", "2011-12-21,five")
    # The multi-line review shifts the file line: row 2 starts on line 4.
    with pytest.raises(
        DataValidationError, match=r"row 2 \(line 4\), column 'rating': non-numeric"
    ):
        read_food_com(_write(tmp_path / "bad.csv", bad))


def test_food_com_bad_date(tmp_path):
    text = "user_id,recipe_id,date,rating,review\n1,2,2003-02-17,4,ok\n3,4,17/02/2003,5,ok\n"
    with pytest.raises(
        DataValidationError, match=r"row 2 \(line 3\), column 'date': bad timestamp '17/02/2003'"
    ):
        read_food_com(_write(tmp_path / "RAW_interactions.csv", text))


def test_timestamps_with_fractions_and_mixed_formats(tmp_path):
    text = "uid,iid,r,ts\na,x,5,2020-07-05 05:27:48.250\nb,y,4,1593926868.25\n"
    r = read_table(_write(tmp_path / "a.csv", text), MAP)
    assert r.timestamps.tolist() == [1593926868.25, 1593926868.25]


def test_food_com_missing_column(tmp_path):
    with pytest.raises(DataValidationError, match=r"missing column\(s\) 'recipe_id'"):
        read_food_com(_write(tmp_path / "a.csv", "user_id,item_id,date,rating\n1,2,2003-01-01,4\n"))
