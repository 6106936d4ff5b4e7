"""Results that used to be silently wrong (issue "Nothing silently wrong"): each is now an error
or a warning that says what is wrong and what it costs. The refusals themselves are rows of
tests/test_bad_input.py; here are the warnings, counts, labels and file modes."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from oodrec.cli import main
from oodrec.config import DataConfig
from oodrec.data.dataset import load_dataset
from oodrec.errors import DataValidationError

TRAIN = "".join(f"{u} {i}\n" for u in range(40) for i in range(u % 5, 30, 5))
VAL = "".join(f"{u} {(u % 5 + 1) % 5}\n" for u in range(40))
OOD = "".join(f"{u} {(u % 5 + 2) % 5 + 5}\n" for u in range(40))


def _dataset(folder: Path, train: str) -> Path:
    folder.mkdir(parents=True)
    for name, text in (("train", train), ("valid_iid", VAL), ("test_ood", OOD)):
        (folder / f"{name}.txt").write_text(text)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished 1-epoch run, written with umask 022."""
    root = tmp_path_factory.mktemp("silent")
    data = _dataset(root / "data", TRAIN)
    old = os.umask(0o022)
    try:
        args = ["-q", "train", "--dataset", str(data), "--out", str(root / "runs"), "--name", "r"]
        assert main([*args, "--epochs", "1", "--set", "train.batch_size=64"]) == 0
    finally:
        os.umask(old)
    return root / "runs" / "r"


# ------------------------------------------------------------------ sparse id spaces


@pytest.mark.parametrize(
    "line, role, value",
    [("5000000 1\n", "user", "5,000,000"), ("3 10000\n", "item", "10,000")],
)
def test_a_stray_huge_id_is_refused_and_allowed_only_with_a_warning(
    tmp_path, caplog, line, role, value
):
    data = _dataset(tmp_path / "d", TRAIN + line)
    with pytest.raises(DataValidationError) as err:
        load_dataset(DataConfig(dataset=str(data)))
    msg = str(err.value)
    assert msg.startswith(
        f"{data / 'train.txt'}, line {TRAIN.count(chr(10)) + 1}: {role} id {value}"
    )
    assert "lies far beyond the other" in msg and "embedding rows" in msg
    assert "`oodrec prepare`" in msg and "data.allow_sparse_ids=true" in msg
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(DataConfig(dataset=str(data), allow_sparse_ids=True))
    assert f"{role} id {value} lies far beyond" in caplog.text and "x4 in training" in caplog.text
    if role == "item":
        assert ds.num_items == 10_001 and "ranks them as candidates" in caplog.text
    # statistics still describe such data, with the warning
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["-q", "stats", str(data)]) == 0
    assert f"{role} id {value} lies far beyond" in caplog.text


def test_a_moderately_sparse_id_space_is_a_warning(tmp_path, caplog):
    # 3,000 of 8,998 user ids used (every third one): warned, not refused
    train = "".join(f"{3 * u} {u % 7}\n" for u in range(3000))
    data = _dataset(tmp_path / "d", train)
    (data / "valid_iid.txt").write_text("0 1\n3 2\n")
    (data / "test_ood.txt").write_text("6 3\n9 4\n")
    with caplog.at_level(logging.WARNING):
        assert load_dataset(DataConfig(dataset=str(data))).num_users == 8998
    assert "user id 8,997 makes an id space of 8,998 users" in caplog.text


def test_dense_real_layouts_are_not_flagged(tmp_path, caplog):
    data = _dataset(tmp_path / "d", TRAIN)
    with caplog.at_level(logging.WARNING):
        load_dataset(DataConfig(dataset=str(data)))
    assert "id space" not in caplog.text and "far beyond" not in caplog.text


# ------------------------------------------------------------------ report and archive


def test_report_and_archive_warn_about_and_count_every_run_they_skip(run, tmp_path, caplog):
    runs = tmp_path / "runs"
    for name in ("done", "unfinished", "corrupt"):
        shutil.copytree(run, runs / name)
    (runs / "unfinished" / "record.json").unlink()
    (runs / "corrupt" / "record.json").write_text('{"metrics": ')
    with caplog.at_level(logging.WARNING):
        assert (
            main(["-q", "report", str(runs), "--out", str(tmp_path / "rep"), "--no-figures"]) == 0
        )
    text = caplog.text
    assert f"skipping run directory {runs / 'unfinished'}: no record.json (the run has not" in text
    assert f"skipping run directory {runs / 'corrupt'}: record.json is unreadable" in text
    assert "skipped 2 run directories (1 unfinished, 1 unreadable); 1 finished run(s) read" in text
    assert "1 run(s)" in (tmp_path / "rep" / "report.md").read_text()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["-q", "archive", str(runs), str(tmp_path / "kept")]) == 0
    assert "skipping run directory unfinished: no record.json" in caplog.text
    assert "skipped 1 unfinished run directory" in caplog.text


# ------------------------------------------------------------------ labels, tables, modes


def test_evaluate_names_the_method_and_its_sampler(run, capsys):
    assert main(["-q", "evaluate", str(run)]) == 0
    assert "method lightgcn + rns)" in capsys.readouterr().out


def test_an_undefined_correlation_is_a_dash_with_a_note_not_nan(monkeypatch):
    from oodrec.bench import estimator_check

    row = dict(
        table="estimators", dataset="d", estimator="IPS", metric="ndcg@20", split="ood_test",
        runs=1, points=2, rho_pooled=math.nan, rho_within=math.nan, at_pick=0.1, regret=0.0,
    )  # fmt: skip
    monkeypatch.setattr(estimator_check, "estimator_rows", lambda *a, **k: [row])
    table = estimator_check.estimator_table([SimpleNamespace(selection="selected on val")])
    cells = [c.text for c in table.rows[0]]
    assert cells[4:6] == ["–", "–"] and not any("nan" in c for c in cells)
    assert any(n.startswith("rho –: undefined") for n in table.notes)


def test_run_files_follow_the_umask(run):
    """Written with umask 022: readable by the group and others (0644), as a plain ``open``
    would make them, not 0600 (a teammate sharing the runs folder can read them)."""
    for rel in ("config.yaml", "record.json", "resolved.yaml", "checkpoints/last.pt"):
        mode = stat.S_IMODE((run / rel).stat().st_mode)
        assert mode == 0o644, (rel, oct(mode))
    assert json.loads((run / "record.json").read_text())["epochs_run"] == 1
