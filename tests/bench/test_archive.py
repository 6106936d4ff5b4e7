"""`oodrec archive`: finished runs' results (no checkpoints) copied to another directory, and
back, so that a grid resumed on a fresh machine skips them and a report covers them."""

from __future__ import annotations

import json
import sqlite3

import pytest
import yaml

from oodrec.bench.archive import RESULT_FILES, archive_runs, plan_archive
from oodrec.bench.records import load_runs
from oodrec.cli import main
from oodrec.errors import ConfigError, RunError

from .helpers import write_run

GRID = {
    "out_dir": "runs/a",
    "base": {
        "data": {"synthetic": {"num_users": 60, "num_items": 80}},
        "model": {"emb_dim": 8},
        "train": {"epochs": 2, "batch_size": 128, "patience": 0, "threads": 1, "fhn_batches": 1},
        "eval": {"user_batch_size": 64},
    },
    "methods": [{"name": "rns", "sampler": "rns"}],
    "datasets": ["synthetic"],
    "seeds": [1, 2],
}


def _runs(root):
    """Two finished runs with checkpoints and per-user vectors, one unfinished run."""
    for name, seed, value in [("food-rns-seed1", 1, 0.1), ("food-rns-seed2", 2, 0.2)]:
        path = write_run(root, name, seed=seed, value=value, method="rns")
        (path / "config.yaml").write_text(f"seed: {seed}\n")
        (path / "checkpoints").mkdir()
        (path / "checkpoints" / "best.pt").write_bytes(b"x" * 1000)
        (path / "per_user.pt").write_bytes(b"y" * 1000)
    (root / "food-rns-seed3" / "checkpoints").mkdir(parents=True)
    (root / "food-rns-seed3" / "config.yaml").write_text("seed: 3\n")


def test_copies_the_results_of_finished_runs_only(tmp_path):
    src, dest = tmp_path / "runs", tmp_path / "kept"
    _runs(src)
    plan = archive_runs(src, dest)
    assert plan.copy == ["food-rns-seed1", "food-rns-seed2"]
    assert plan.unfinished == ["food-rns-seed3"] and not plan.same
    for name in plan.copy:
        copied = sorted(p.name for p in (dest / name).iterdir())
        assert copied == sorted(n for n in RESULT_FILES if (src / name / n).is_file())
        assert "checkpoints" not in copied and "per_user.pt" not in copied
        for n in copied:
            assert (dest / name / n).read_bytes() == (src / name / n).read_bytes()
    assert not (dest / "food-rns-seed3").exists()
    assert [r.metric("ood_test", "recall@20") for r in load_runs(dest)] == [0.1, 0.2]
    # again: everything is there already, nothing is written
    again = archive_runs(src, dest)
    assert again.same == ["food-rns-seed1", "food-rns-seed2"] and not again.copy
    assert again.summary().startswith(f"{src} -> {dest}: 0 run(s) copied, 2 already there")


def test_a_conflict_stops_the_copy_before_anything_is_written(tmp_path):
    src, dest = tmp_path / "runs", tmp_path / "kept"
    _runs(src)
    archive_runs(src, dest)
    record = json.loads((dest / "food-rns-seed2" / "record.json").read_text())
    record["best_epoch"] = 7  # the same name holds another result
    (dest / "food-rns-seed2" / "record.json").write_text(json.dumps(record))
    write_run(src, "food-rns-seed4", seed=4)
    with pytest.raises(RunError, match=r"1 run\(s\) there differ .*food-rns-seed2.*nothing"):
        archive_runs(src, dest)
    assert not (dest / "food-rns-seed4").exists()
    (dest / "food-rns-seed5").mkdir()  # an unfinished run of DEST's is a conflict too
    (dest / "food-rns-seed5" / "config.yaml").write_text("seed: 5\n")
    write_run(src, "food-rns-seed5", seed=5)
    with pytest.raises(RunError, match=r"2 run\(s\) there differ"):
        archive_runs(src, dest)
    with pytest.raises(RunError, match="lies inside it"):
        archive_runs(src, src / "copy")
    with pytest.raises(ConfigError, match="nothing: does not exist"):
        archive_runs(tmp_path / "nothing", dest)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="no run directory and no tune.db"):
        archive_runs(tmp_path / "empty", dest)


def test_a_copy_cut_off_midway_is_invisible_and_replaced(tmp_path):
    src, dest = tmp_path / "runs", tmp_path / "kept"
    _runs(src)
    partial = dest / ".food-rns-seed1.archive-partial"
    partial.mkdir(parents=True)
    (partial / "record.json").write_text((src / "food-rns-seed1" / "record.json").read_text())
    assert load_runs(dest) == []  # a hidden directory is no run
    assert archive_runs(src, dest).copy == ["food-rns-seed1", "food-rns-seed2"]
    assert not partial.exists()
    assert len(load_runs(dest)) == 2


def test_the_study_file_is_backed_up_unless_dest_has_one(tmp_path):
    src, dest = tmp_path / "runs", tmp_path / "kept"
    src.mkdir()
    con = sqlite3.connect(src / "tune.db")
    con.execute("create table trials (n int)")
    con.executemany("insert into trials values (?)", [(1,), (2,)])
    con.commit()  # left open, as a tune worker would
    plan = archive_runs(src, dest)
    assert plan.study == "copy" and "tune.db copied" in plan.summary()
    copy = sqlite3.connect(dest / "tune.db")
    assert copy.execute("select count(*) from trials").fetchone() == (2,)
    copy.close()
    con.execute("insert into trials values (3)")
    con.commit()
    con.close()
    plan = archive_runs(src, dest)
    assert plan.study == "kept" and "not copied" in plan.summary()
    copy = sqlite3.connect(dest / "tune.db")
    assert copy.execute("select count(*) from trials").fetchone() == (2,)  # not overwritten
    copy.close()


def test_restored_runs_are_skipped_by_a_resumed_grid_and_reported(tmp_path, capsys):
    """The round trip of the issue: a grid part-run on one machine, its results archived, then
    restored on a fresh one, where the grid trains only what is missing."""
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    first, kept, fresh = tmp_path / "m1", tmp_path / "kept", tmp_path / "m2"
    assert main(["-q", "bench", str(grid), "--out", str(first), "--seeds", "1"]) == 0
    assert main(["archive", str(first), str(kept)]) == 0
    assert "1 run(s) copied, 0 already there" in capsys.readouterr().out
    assert main(["archive", str(kept), str(fresh), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "copy     synthetic-rns-seed1"
    assert not fresh.exists()
    assert main(["archive", str(kept), str(fresh)]) == 0
    capsys.readouterr()
    assert main(["-q", "bench", str(grid), "--out", str(fresh), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        "skip     synthetic-rns-seed1",
        "new      synthetic-rns-seed2",
    ]
    assert main(["-q", "bench", str(grid), "--out", str(fresh)]) == 0
    assert "1 finished, 1 skipped" in capsys.readouterr().out
    assert not (fresh / "synthetic-rns-seed1" / "checkpoints").exists()
    report = tmp_path / "report"
    assert main(["-q", "report", str(fresh), "--out", str(report), "--no-figures"]) == 0
    rows = [r for r in load_runs(fresh)]
    assert [r.seed for r in rows] == [1, 2]
    original = load_runs(first)[0]
    assert rows[0].record["metrics"] == original.record["metrics"]
    assert "| rns |" in (report / "table1.md").read_text()
    # evaluating a restored run says what is missing
    assert main(["evaluate", str(fresh / "synthetic-rns-seed1")]) == 2
    assert "no best checkpoint" in capsys.readouterr().err
    # a conflict through the CLI: exit 2, a message, no traceback
    (first / "synthetic-rns-seed1" / "record.json").write_text('{"best_epoch": 99}')
    assert main(["archive", str(first), str(kept)]) == 2
    assert "differ from" in capsys.readouterr().err


def test_a_search_archived_as_it_grows_and_resumed_from_its_copy(tmp_path, capsys):
    """`oodrec tune` output: trials, final runs and the study. Archiving again updates the
    copy's study (an earlier state of the same search); a copy restored elsewhere resumes the
    search without training its finished trials again."""
    optuna = pytest.importorskip("optuna")

    tuned = {
        **GRID,
        "tune": {
            "trials": 2,
            "startup_trials": 1,
            "warmup_evals": 1,
            "space": {"train.lr": {"low": 0.001, "high": 0.05, "log": True}},
        },
    }
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(tuned))
    first, kept, fresh = tmp_path / "m1", tmp_path / "kept", tmp_path / "m2"

    def tune(out, trials):
        args = ["-q", "tune", str(grid), "--out", str(out), "--trials", str(trials)]
        assert main([*args, "--no-final"]) == 0
        capsys.readouterr()

    def trials(out):
        study = optuna.load_study(study_name="synthetic/rns", storage=f"sqlite:///{out}/tune.db")
        return {t.number: (t.state.name, t.params) for t in study.trials}

    def trial_dirs(out):
        return sorted(p.name for p in (out / "tune" / "synthetic-rns").iterdir())

    tune(first, 2)
    assert archive_runs(first, kept).study == "copy"
    tune(first, 3)
    plan = archive_runs(first, kept)
    assert plan.copy == ["tune/synthetic-rns/trial-0002"]
    assert plan.study == "update" and "tune.db updated" in plan.summary()
    assert trials(kept) == trials(first) and len(trials(kept)) == 3
    assert archive_runs(first, kept).study == "same"

    # restored elsewhere: a bigger budget trains one new trial only
    archive_runs(kept, fresh)
    tune(fresh, 4)
    done = trials(fresh)
    assert {n: done[n] for n in range(3)} == trials(first) and done[3][0] == "COMPLETE"
    assert trial_dirs(fresh) == [f"trial-000{n}" for n in range(4)]
    assert not (fresh / "tune" / "synthetic-rns" / "trial-0000" / "checkpoints").exists()
    assert (fresh / "tune" / "synthetic-rns" / "trial-0003" / "checkpoints").is_dir()

    # another search's study in DEST is kept, and the summary says why
    plan = archive_runs(fresh, kept)
    assert plan.study == "update"  # fresh extends kept: trials 0-2, then 3
    other = tmp_path / "other"
    tune(other, 2)
    with sqlite3.connect(other / "tune.db") as con:  # another search: other values
        con.execute("update trial_params set param_value = param_value * 2")
    plan = plan_archive(first, other)  # its trial runs differ too (timings): a conflict
    assert plan.study == "kept" and plan.conflicts
    assert "holds trial 0 of synthetic/rns with other values than" in plan.summary()
    plan = plan_archive(first, tmp_path / "m2")  # trial 3 is only in m2
    assert plan.study == "kept" and "holds trial 3 of synthetic/rns, which" in plan.summary()
