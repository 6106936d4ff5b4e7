"""Timestamps through the data pipeline: ``oodrec prepare`` writes them as a third column and
declares them in ``prepare.json``; the loader keeps them aligned through its drops; a third
column without that declaration (the shipped DRGO files' constant ``1``) is never a time; the
run record and the report state the order; per-time-group recall (Figure 6) by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from oodrec.config import DataConfig, EvalConfig, ExperimentConfig, TrainConfig
from oodrec.data.dataset import load_dataset
from oodrec.data.interactions import ORDER_NONE, ORDER_TIMESTAMPS
from oodrec.data.io import read_pairs
from oodrec.data.prepare import PrepareOptions, prepare_dataset
from oodrec.data.raw import ColumnMapping, read_food_com
from oodrec.errors import DataValidationError
from oodrec.eval.evaluate import Evaluator
from oodrec.eval.groups import time_group_recall, time_groups
from oodrec.models.base import Embeddings

FILES = {
    "train": "train.txt",
    "val": "valid_iid.txt",
    "iid_test": "test_iid.txt",
    "ood_test": "test_ood.txt",
}
TIMED = {"split_format": {"columns": ["user", "item", "timestamp"], "timestamp_unit": "s"}}


def _write_dir(root: Path, files: dict[str, list[tuple]], meta: dict | None = TIMED) -> Path:
    """A dataset directory: ``files[role]`` are line tuples; ``meta`` becomes prepare.json."""
    root.mkdir(parents=True)
    for role, rows in files.items():
        (root / FILES[role]).write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
    if meta is not None:
        (root / "prepare.json").write_text(json.dumps(meta))
    return root


def _load(path: Path):
    return load_dataset(DataConfig(dataset=str(path), verify_checksums=False))


def _triples(inter) -> list[tuple[int, int, int]]:
    return list(zip(inter.users.tolist(), inter.items.tolist(), inter.timestamps.tolist()))


# --------------------------------------------------------------------------- prepare


def _raw_times(out: Path, raw_users, raw_items, raw_times) -> dict[str, dict]:
    """Each split file's rows as ``(user token, item token) -> written time``, and the raw
    ``(user token, item token) -> time``."""
    users = (out / "user_ids.txt").read_text().split()
    items = (out / "item_ids.txt").read_text().split()
    written = {}
    for role, name in FILES.items():
        rows = np.loadtxt(out / name, dtype=np.int64, ndmin=2)
        assert rows.shape[1] == 3, name
        written[role] = {(users[u], items[i]): int(t) for u, i, t in rows}
    raw = dict(zip(zip(map(str, raw_users), map(str, raw_items)), raw_times))
    return {"written": written, "raw": raw}


def test_prepare_writes_times_in_seconds_in_every_split_file(food_raw, tmp_path):
    opts = PrepareOptions(min_user_interactions=5, min_item_interactions=5)
    out = prepare_dataset(food_raw, "foodcom", "temporal", tmp_path / "food", opts)
    meta = json.loads((out / "prepare.json").read_text())["split_format"]
    assert meta == {
        "columns": ["user", "item", "timestamp"],
        "timestamp_unit": "s",
        "missing_timestamps": 0,
    }
    raw = read_food_com(food_raw)
    got = _raw_times(out, raw.users, raw.items, raw.timestamps)
    for role, rows in got["written"].items():
        assert rows, role
        for pair, t in rows.items():
            assert t == got["raw"][pair]  # the raw date of this very pair, in seconds
    # the loader keeps them, in file order, aligned with the pairs (prepare leaves no drop)
    ds = _load(out)
    assert ds.has_timestamps and ds.report.timestamp_unit == "s"
    assert ds.report.order() == ORDER_TIMESTAMPS
    for role, name in FILES.items():
        rows = np.loadtxt(out / name, dtype=np.int64, ndmin=2)
        inter = ds.splits[role]
        assert inter.timestamps.dtype == torch.int64
        assert np.array_equal(np.stack([inter.users, inter.items, inter.timestamps], 1), rows)


CSV_COLUMNS = ColumnMapping(user="uid", item="iid", timestamp="ts")


def _write_csv_log(path: Path, n: int = 600, seed: int = 3) -> tuple[np.ndarray, ...]:
    """An implicit log ``uid,iid,ts`` with millisecond timestamps (repeated pairs possible).

    Returns:
        ``(users, items, stamps)`` as written.
    """
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 30, n)
    items = rng.integers(0, 25, n)
    stamps = 1.6e9 + rng.integers(0, 10**7, n) / 1000.0
    lines = ["uid,iid,ts"] + [f"u{u},i{i},{t:.3f}" for u, i, t in zip(users, items, stamps)]
    path.write_text("\n".join(lines) + "\n")
    return users, items, stamps


def test_prepare_writes_milliseconds_when_times_have_fractions(tmp_path):
    users, items, stamps = _write_csv_log(tmp_path / "log.csv")
    opts = PrepareOptions(columns=CSV_COLUMNS)
    out = prepare_dataset(tmp_path / "log.csv", "csv", "temporal", tmp_path / "ms", opts)
    assert json.loads((out / "prepare.json").read_text())["split_format"]["timestamp_unit"] == "ms"
    # repeated raw pairs keep their earliest time (preprocess.drop_duplicates)
    earliest: dict[tuple[str, str], int] = {}
    for u, i, t in zip(users, items, stamps):
        key = (f"u{u}", f"i{i}")
        earliest[key] = min(earliest.get(key, 2**62), int(round(t * 1000)))
    got = _raw_times(out, [k[0] for k in earliest], [k[1] for k in earliest], earliest.values())
    for rows in got["written"].values():
        assert all(t == got["raw"][pair] for pair, t in rows.items())
    assert _load(out).report.timestamp_unit == "ms"


# --------------------------------------------------------------------------- loader


def test_load_keeps_times_aligned_through_every_drop(tmp_path):
    d = _write_dir(
        tmp_path / "timed",
        {
            "train": [(0, 0, 100), (0, 1, 101), (1, 0, 102), (0, 0, 999)]  # a repeated pair
            + [(1, 2, 103), (2, 1, 104), (2, 3, 105)],
            "val": [(0, 2, 200), (0, 9, 201), (1, 1, 202)],  # item 9 unseen in train
            "iid_test": [(0, 0, 300), (1, 1, 301), (2, 0, 302), (2, 2, 303)],  # in train, in val
            "ood_test": [(1, 1, 401), (1, 3, 402), (0, 3, 403), (5, 0, 404)],  # in val, unseen
        },
    )
    ds = _load(d)
    assert ds.has_timestamps
    # duplicates keep the first line's time; every drop keeps the rest in file order
    assert _triples(ds.train) == [
        (0, 0, 100), (0, 1, 101), (1, 0, 102), (1, 2, 103), (2, 1, 104), (2, 3, 105)
    ]  # fmt: skip
    assert _triples(ds.splits["val"]) == [(0, 2, 200), (1, 1, 202)]
    assert _triples(ds.splits["iid_test"]) == [(2, 0, 302), (2, 2, 303)]
    assert _triples(ds.splits["ood_test"]) == [(1, 3, 402), (0, 3, 403)]
    rep = ds.report
    assert rep.files["train"].duplicates_removed == 1
    assert rep.dropped_unseen == {"val": 1, "iid_test": 0, "ood_test": 1}
    assert rep.dropped_in_train["iid_test"] == 1 and rep.dropped_in_val == {
        "iid_test": 1,
        "ood_test": 1,
    }


def test_carved_and_absent_splits_keep_times(tmp_path):
    rng = np.random.default_rng(0)
    train = [(u, i, int(t)) for (u, i), t in zip(
        [(u, i) for u in range(12) for i in range(10)], rng.permutation(120) + 1000
    )]  # fmt: skip
    ood = [(u, 10 + u % 2, 5000 + u) for u in range(12)]
    train += [(0, 10, 900), (1, 11, 901)]  # cover the OOD items
    carved = _load(_write_dir(tmp_path / "carve", {"train": train, "ood_test": ood}))
    when = {(u, i): t for u, i, t in train}
    for split in ("train", "val", "iid_test"):
        rows = _triples(carved.splits[split])
        assert rows and all(when[(u, i)] == t for u, i, t in rows)
    val = [(u, 10 + (u + 1) % 2, 6000 + u) for u in range(12)]
    absent = _load(_write_dir(tmp_path / "absent", {"train": train, "val": val, "ood_test": ood}))
    assert absent.report.absent_splits == ["iid_test"]
    assert absent.splits["iid_test"].timestamps.shape == (0,)


def test_third_column_without_metadata_is_not_a_time(tmp_path, tiny_dataset_factory):
    """The shipped DRGO files hold `user item 1`: without split metadata that `1` is a value."""
    d = tiny_dataset_factory(tmp_path)
    for name in FILES.values():  # DRGO style: a constant third column
        path = d / name
        path.write_text("".join(f"{ln} 1\n" for ln in path.read_text().splitlines()))
    ds = _load(d)
    assert ds.report.files["train"].columns == 3
    assert not ds.has_timestamps and ds.report.timestamp_unit is None
    assert all(inter.timestamps is None for inter in ds.splits.values())
    assert ds.report.order() == ORDER_NONE
    assert ORDER_NONE == "none (no timestamps; file order is not used as time)"
    # an older prepare.json without split_format, or one declaring `user item`, changes nothing
    (d / "prepare.json").write_text(json.dumps({"protocol": "temporal"}))
    assert not _load(d).has_timestamps
    (d / "prepare.json").write_text(json.dumps({"split_format": {"columns": ["user", "item"]}}))
    assert not _load(d).has_timestamps
    evaluator = Evaluator(ds, EvalConfig(), torch.device("cpu"))
    emb = Embeddings(*(torch.zeros(n, 2) for n in (ds.num_users, ds.num_items) * 2))
    with pytest.raises(DataValidationError, match=r"'tiny' .* has no timestamps: .*file order"):
        time_group_recall(emb, evaluator, ds)


def test_registered_drgo_dataset_has_no_times(real_data):
    ds = load_dataset(DataConfig(dataset="food", data_dir=str(real_data)))
    assert ds.report.files["train"].columns == 3 and not ds.has_timestamps
    assert ds.train.timestamps is None


def test_bad_timestamp_files_are_clear_errors(tmp_path):
    pairs = {"train": [(0, 0), (1, 1)], "ood_test": [(0, 1)]}
    with pytest.raises(
        DataValidationError, match=r"train\.txt: .*prepare\.json.*timestamps.* 2 columns"
    ):
        _load(_write_dir(tmp_path / "two", pairs))
    rows = {"train": [(0, 0, 5), (1, 1, "12.5")], "ood_test": [(0, 1, 7), (1, 0, 8)]}
    with pytest.raises(
        DataValidationError, match=r"train\.txt, line 2: .*timestamp '12\.5' is not an integer"
    ):
        _load(_write_dir(tmp_path / "frac", rows))
    users, items, times, rep = read_pairs(tmp_path / "frac" / "train.txt", "skip", True)
    assert rep.skipped_bad_lines == 1
    assert (users.tolist(), items.tolist(), times.tolist()) == ([0], [0], [5])
    bad_unit = {"split_format": {"columns": ["user", "item", "timestamp"], "timestamp_unit": "d"}}
    with pytest.raises(DataValidationError, match=r"prepare\.json: .*timestamp_unit .* got \"d\""):
        _load(_write_dir(tmp_path / "unit", rows, bad_unit))


# --------------------------------------------------------------------------- time groups


def test_time_groups_equal_sizes_ties_by_pair_not_position():
    times = torch.tensor([5, 1, 3, 1, 9, 7])
    users = torch.tensor([0, 1, 0, 0, 1, 1])
    items = torch.tensor([0, 0, 1, 2, 1, 2])
    # order by (time, user, item): (1: u0 i2), (1: u1 i0), 3, 5, 7, 9
    assert time_groups(times, users, items, 3).tolist() == [1, 0, 1, 0, 2, 2]
    flipped = time_groups(times.flip(0), users.flip(0), items.flip(0), 3)
    assert flipped.tolist() == [2, 2, 0, 1, 0, 1]  # the same groups: file order plays no part
    with pytest.raises(ValueError, match="num_groups"):
        time_groups(times, users, items, 0)


def test_time_group_recall_by_hand(tmp_path):
    """Scores: user 0 prefers low item ids, user 1 high ones; user 2 covers every item in train.

    After masking train + val, user 0's top 2 are items 2, 3 and user 1's are items 3, 2. OOD
    pairs by time: 10 (u0 i2) hit, 20 (u0 i5) miss | 30 (u1 i3) hit, 40 (u0 i3) hit |
    50 (u1 i0) miss, 60 (u1 i1) miss  ->  recall 1/2, 2/2, 0/2 in three groups of two.
    """
    d = _write_dir(
        tmp_path / "hand",
        {
            "train": [(0, 0, 1), (1, 5, 1), *[(2, i, 2) for i in range(6)]],
            "val": [(0, 1, 3), (1, 4, 3)],
            "iid_test": [(0, 4, 7)],
            # file order is not time order
            "ood_test": [(0, 2, 10), (0, 3, 40), (0, 5, 20), (1, 0, 50), (1, 1, 60), (1, 3, 30)],
        },
    )
    ds = _load(d)
    scores = torch.tensor(
        [[6.0, 5, 4, 3, 2, 1], [1.0, 2, 3, 4, 5, 6], [0.0] * 6]
    )  # [U, I]; scores = users @ eye(I)
    emb = Embeddings(scores, torch.eye(6), scores, torch.eye(6))
    evaluator = Evaluator(ds, EvalConfig(ks=(2,), user_batch_size=1), torch.device("cpu"))
    recall, count, span = time_group_recall(emb, evaluator, ds, "ood_test", num_groups=3, k=2)
    assert recall.tolist() == [0.5, 1.0, 0.0]
    assert count.tolist() == [2, 2, 2]
    assert span.tolist() == [[10, 20], [30, 40], [50, 60]]
    # one group: plain Recall@2 over all OOD pairs (3 of 6)
    assert time_group_recall(emb, evaluator, ds, num_groups=1, k=2)[0].tolist() == [0.5]


# --------------------------------------------------------------------------- record and report


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """One trained run on a prepared dataset with timestamps and one on DRGO-style files."""
    from oodrec.train.loop import train

    root = tmp_path_factory.mktemp("order")
    _write_csv_log(root / "log.csv")
    opts = PrepareOptions(columns=CSV_COLUMNS)
    timed = prepare_dataset(root / "log.csv", "csv", "temporal", root / "timed", opts)
    untimed = _write_dir(
        root / "untimed",
        {
            # 24 items: at least the largest K of eval.ks (20)
            "train": [(u, i, 1) for u in range(6) for i in range(24) if (u + i) % 3],
            "val": [(u, (u * 3) % 24, 1) for u in range(6)],
            "ood_test": [(u, (u * 3 + 3) % 24, 1) for u in range(6)],
        },
        meta=None,
    )
    for data in (timed, untimed):
        cfg = ExperimentConfig(
            data=DataConfig(dataset=str(data)),
            train=TrainConfig(epochs=1, batch_size=64, patience=0),
            seed=1,
        )
        train(cfg, load_dataset(cfg.data), run_dir=root / "runs" / data.name)
    return root / "runs"


def test_run_record_and_report_state_the_order(two_runs, tmp_path):
    from oodrec.bench.report import write_report

    records = {p.name: json.loads((p / "record.json").read_text()) for p in two_runs.iterdir()}
    assert records["timed"]["order"] == "timestamps"
    assert records["timed"]["data_report"]["has_timestamps"] is True
    assert records["untimed"]["order"] == "none (no timestamps; file order is not used as time)"
    assert records["untimed"]["data_report"]["timestamp_unit"] is None
    write_report(two_runs, tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    section = text.split("## Interaction order", 1)[1]
    assert "- timed: timestamps" in section
    assert "- untimed: none (no timestamps; file order is not used as time)" in section


def test_figure6_draws_datasets_with_timestamps_only(two_runs, tmp_path):
    pytest.importorskip("matplotlib")
    from oodrec.bench.plots import figure6
    from oodrec.bench.records import load_runs

    written = figure6(load_runs(two_runs), tmp_path)
    assert sorted(p.name for p in written) == ["fig6_timed.pdf", "fig6_timed.png"]
