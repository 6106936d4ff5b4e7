"""`oodrec tune`: summaries of a search, its final runs, the report, and the workflow."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

pytest.importorskip("optuna")

from oodrec.bench.grid import parse_grid  # noqa: E402
from oodrec.bench.records import load_runs  # noqa: E402
from oodrec.bench.tune import (  # noqa: E402
    final_runs,
    finished,
    open_study,
    parse_tune,
    storage_url,
    study_jobs,
    study_name,
    work_on,
)
from oodrec.errors import ConfigError  # noqa: E402

from .tune_helpers import GRID, tune_grid, tune_jobs, zombie_trial  # noqa: E402


def test_final_runs_need_a_finished_search(tmp_path):
    spec, jobs = tune_jobs(tmp_path, trials=3)
    with pytest.raises(ConfigError, match="0/3 trials finished"):
        final_runs(spec, jobs, tmp_path)


def test_status_of_part_of_the_studies(tmp_path, capsys):
    from oodrec.cli import main

    data = yaml.safe_load(yaml.safe_dump(GRID))
    data["methods"].append({"name": "dns", "sampler": "dns"})
    # a space for a method left out by --methods must not stop the rest
    data["tune"]["methods"] = {"dns": {"sampler.num_candidates": {"choices": [2, 4]}}}
    data["out_dir"] = str(tmp_path / "out")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(data))
    assert main(["tune", str(grid), "--status"]) == 0
    both = capsys.readouterr().out
    assert "synthetic/rns" in both and "synthetic/dns" in both
    assert main(["tune", str(grid), "--status", "--methods", "dns"]) == 0
    one = capsys.readouterr().out
    assert "synthetic/dns" in one and "synthetic/rns" not in one
    assert main(["tune", str(grid), "--status", "--methods", "rns"]) == 0
    assert "synthetic/rns" in capsys.readouterr().out
    data["tune"]["methods"]["dsn"] = {}  # a typo is still reported under --methods
    grid.write_text(yaml.safe_dump(data))
    assert main(["tune", str(grid), "--status", "--methods", "rns"]) == 2
    assert "'dsn' is not a method of the grid" in capsys.readouterr().err


def test_a_best_trial_ended_by_the_epoch_cap_is_named(tmp_path):
    import json

    from oodrec.bench.tune.inspection import _capped_at

    def trial(best, ran, stopped=False):
        run_dir = tmp_path / f"t{best}-{ran}"
        run_dir.mkdir()
        record = {
            "config": {"train": {"epochs": 60, "patience": 5}},
            "best_epoch": best,
            "epochs_run": ran,
            "stopped_early": stopped,
        }
        (run_dir / "record.json").write_text(json.dumps(record))
        return run_dir

    assert _capped_at(trial(59, 60)) == "best epoch 59 of 60"
    assert _capped_at(trial(20, 26, stopped=True)) is None
    assert _capped_at(tmp_path / "gone") is None
    assert _capped_at(None) is None


def test_a_moved_study_finds_its_trials_under_its_new_directory(tmp_path, monkeypatch):
    """Trials record their run directory as the worker saw it (relative to its working
    directory). A study moved elsewhere, or run from another directory, finds them by name
    under its own output directory: status, the trials CSV and the final run's adoption."""
    import shutil

    from oodrec.bench.tune import adopt_best_trials, summarize, trial_rows, trial_run_dir

    monkeypatch.chdir(tmp_path)
    _, jobs = tune_jobs(Path("old"), trials=2)  # relative, as `oodrec tune --out old` records it
    work_on(jobs[0])
    shutil.move("old", "moved")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    spec, jobs = tune_jobs(tmp_path / "moved", trials=2)
    study = open_study(jobs[0].url, study_name("synthetic", "rns"), jobs[0].tune)
    expected = {jobs[0].trial_dir / f"trial-{t.number:04d}" for t in finished(study)}
    assert {trial_run_dir(jobs[0], t) for t in finished(study)} == expected
    assert all(p.is_dir() for p in expected)
    rows = trial_rows(jobs)
    assert {Path(r["run_dir"]) for r in rows} == expected and all(r["epochs"] for r in rows)
    (row,) = summarize(jobs)
    assert Path(row["best_run_dir"]) in expected
    adopted = adopt_best_trials(final_runs(spec, jobs, tmp_path / "moved"), [row], "grid.yaml")
    assert [name for name, _ in adopted] == ["synthetic-rns-tuned-seed1"]


def test_final_runs_with_a_larger_epoch_cap(tmp_path):
    spec = tune_grid(trials=1, final_epochs=7)
    tune = parse_tune(spec)
    jobs = study_jobs(spec, tune, tmp_path, storage_url(tmp_path))
    work_on(jobs[0])
    runs = final_runs(spec, jobs, tmp_path)
    assert [r.name for r in runs] == [
        "synthetic-rns-tuned-7ep-seed1",
        "synthetic-rns-tuned-7ep-seed2",
    ]
    assert runs[0].method == "rns (tuned, 1 trials, 7-epoch finals)"
    assert runs[0].config.train.epochs == 7
    assert runs[0].info["tuning"]["trial_epochs"] == 3
    assert runs[0].info["tuning"]["final_epochs"] == 7
    # below the trials' cap: an error, not shorter final runs
    jobs = study_jobs(spec, replace(tune, final_epochs=2), tmp_path, storage_url(tmp_path))
    with pytest.raises(ConfigError, match="final_epochs=2 is below the trials' train.epochs=3"):
        final_runs(spec, jobs, tmp_path)


def test_a_larger_cap_changes_only_the_cap_of_a_curriculum(tiny_dir):
    """CNSDiff's curriculum follows train.epochs unless curriculum_epochs is set: the larger cap
    pins it to the trials' cap, so the first epochs of the longer run equal the shorter run's."""
    from oodrec.bench.tune import with_epoch_cap
    from oodrec.config import DataConfig, ExperimentConfig, SamplerConfig, TrainConfig
    from oodrec.data.dataset import load_dataset
    from oodrec.train.loop import train

    cfg = ExperimentConfig(
        data=DataConfig(dataset=str(tiny_dir)),
        sampler=SamplerConfig("cnsdiff", {}),
        train=TrainConfig(epochs=3, batch_size=64, patience=0, fhn_batches=1),
    )
    longer = with_epoch_cap(cfg, 6)
    assert longer.train.epochs == 6
    assert longer.sampler.options["curriculum_epochs"] == 3
    explicit = replace(cfg, sampler=SamplerConfig("cnsdiff", {"curriculum_epochs": 2}))
    assert with_epoch_cap(explicit, 6).sampler.options["curriculum_epochs"] == 2
    rns = replace(cfg, sampler=SamplerConfig("rns", {}))
    assert with_epoch_cap(rns, 6).sampler.options == {}

    def history(c):
        rows = train(c, load_dataset(c.data)).history
        return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]

    short, long = history(cfg), history(longer)
    assert len(long) == 6
    assert long[:3] == short
    # without the pin the curriculum stretches over 6 epochs and the run differs from epoch 2 on
    unpinned = history(replace(cfg, train=replace(cfg.train, epochs=6)))
    assert unpinned[0] == short[0]
    assert unpinned[1:3] != short[1:3]


def test_tune_final_epochs_reaches_the_report(tmp_path, capsys):
    from oodrec.cli import main

    data = yaml.safe_load(yaml.safe_dump(GRID))
    data["tune"]["trials"] = 1
    data["seeds"] = [1]
    data["out_dir"] = str(tmp_path / "out")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(data))
    assert main(["-q", "tune", str(grid), "--final-epochs", "0"]) == 2
    assert "--final-epochs must be >= 1, got 0" in capsys.readouterr().err
    assert main(["-q", "tune", str(grid), "--final-epochs", "5"]) == 0
    record = yaml.safe_load(
        (tmp_path / "out/synthetic-rns-tuned-5ep-seed1/config.yaml").read_text()
    )
    assert record["train"]["epochs"] == 5
    capsys.readouterr()
    # --status counts the finished final runs of the cap it is given
    assert main(["-q", "tune", str(grid), "--status", "--final-epochs", "5"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[4] == "1/1"  # the finals column
    assert main(["-q", "tune", str(grid), "--status"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[4] == "0/1"
    assert (
        main(["report", str(tmp_path / "out"), "--out", str(tmp_path / "rep"), "--no-figures"]) == 0
    )
    table = (tmp_path / "rep/table1.md").read_text()
    assert "rns (tuned, 1 trials, 5-epoch finals)" in table
    assert "final runs capped at 5 epochs, trials at 3" in table


def test_status_shows_how_far_a_running_trial_has_got(tmp_path, monkeypatch):
    from oodrec.bench.tune import format_running, running_trials

    job, zombie, run_dir, _ = zombie_trial(tmp_path, monkeypatch, die_at=2)
    rows = [json.loads(x) for x in (run_dir / "epochs.jsonl").read_text().splitlines()]
    (row,) = running_trials([job], now=(run_dir / "epochs.jsonl").stat().st_mtime + 7)
    assert row["number"] == zombie.number and row["epochs"] == len(rows) == 2
    assert row["cap"] == 3 and row["val"] == rows[-1]["val/ndcg@20"]
    assert row["best"] == max(r["val/ndcg@20"] for r in rows)
    line = format_running(row)
    assert line.startswith(f"  synthetic/rns trial {zombie.number}: epoch 2 of 3, val ndcg@20 ")
    assert line.endswith("last epoch written 7 s ago")


def test_trials_csv_lists_every_trial_with_its_run(tmp_path):
    import csv

    from oodrec.bench.tune import trial_rows, write_trials_csv

    _, jobs = tune_jobs(tmp_path, trials=2)
    work_on(jobs[0])
    study = open_study(jobs[0].url, study_name("synthetic", "rns"), jobs[0].tune)
    path = write_trials_csv(tmp_path / "audit" / "trials.csv", trial_rows(jobs))
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == [
        "study", "trial", "state", "value", "epochs", "best_epoch", "run_dir", "train.lr",
    ]  # fmt: skip
    assert [r["trial"] for r in rows] == ["0", "1"]
    for row, trial in zip(rows, study.trials):
        assert row["state"] == "complete" and float(row["value"]) == trial.value
        assert float(row["train.lr"]) == trial.params["train.lr"]
        lines = (Path(row["run_dir"]) / "epochs.jsonl").read_text().splitlines()
        assert int(row["epochs"]) == len(lines) == 3
        best = max(json.loads(x)["epoch"] for x in lines if json.loads(x).get("improved"))
        assert int(row["best_epoch"]) == best


def test_status_judges_the_estimators_on_the_search(tmp_path, capsys):
    """`oodrec tune --status --estimators FILE`: per study, the trial and epoch each val
    estimator would pick, from the trials' logs, without training anything."""
    from oodrec.cli import main

    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    out, md = tmp_path / "out", tmp_path / "est.md"
    assert main(["-q", "tune", str(grid), "--out", str(out), "--no-final"]) == 0
    logs = {
        f"trial {p.name[-1]}": [
            json.loads(x) for x in (p / "epochs.jsonl").read_text().splitlines()
        ]
        for p in sorted((out / "tune" / "synthetic-rns").iterdir())  # in trial order, as
    }  # the pick is the first maximum
    capsys.readouterr()
    args = ["-q", "tune", str(grid), "--out", str(out), "--status", "--estimators", str(md)]
    assert main(args) == 0
    assert "estimators on the search" in capsys.readouterr().err
    text = md.read_text()
    assert "*search on val ndcg@20; full ranking*" in text
    for metric in ("ndcg@20", "recall@20"):
        assert f"### Which trial each val estimator would pick: ood test {metric}" in text
        # the plain-val pick, recomputed from the logs
        trial, row = max(
            ((t, r) for t, rows in logs.items() for r in rows),
            key=lambda tr: tr[1][f"val/{metric}"],
        )
        line = next(x for x in text.splitlines() if x.startswith("| synthetic/rns | plain val |"))
        assert f"| {trial}, epoch {row['epoch']} | {row[f'ood_test/{metric}']:.4f} |" in line
        text = text.split("- picks:", 1)[1]
    assert sorted(p.name for p in (out / "tune" / "synthetic-rns").iterdir()) == [
        "trial-0000",
        "trial-0001",
    ]  # nothing more trained


def test_the_final_run_at_the_trials_seed_is_the_best_trials_run(tmp_path, monkeypatch, capsys):
    """The trials train at tune.seed (1), one of the grid's seeds: that final run gets a copy of
    the best trial's run instead of a second training, and equals a fresh training of it."""
    import oodrec.train.loop as loop
    from oodrec.cli import main
    from oodrec.data.dataset import load_dataset
    from oodrec.runs import RunDir

    data = yaml.safe_load(yaml.safe_dump(GRID))
    data["out_dir"] = str(tmp_path / "out")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(data))
    real_train, real_fit, trained = loop.train, loop.fit_run, []

    def counting_fit(cfg, *args, **kwargs):  # every training, trials (through train) and runs
        trained.append(cfg.name)
        return real_fit(cfg, *args, **kwargs)

    monkeypatch.setattr(loop, "fit_run", counting_fit)
    assert main(["-q", "tune", str(grid)]) == 0
    # two trials and one final run trained; seed 1's final run was not
    assert trained == ["trial-0000", "trial-0001", "synthetic-rns-tuned-seed2"]
    err = capsys.readouterr().err
    assert "synthetic-rns-tuned-seed1: the best trial's run" in err
    spec = parse_grid(data, str(grid))
    tune = parse_tune(spec)
    study = open_study(storage_url(tmp_path / "out"), study_name("synthetic", "rns"), tune)
    best = max(finished(study), key=lambda t: t.value)
    trial, final = Path(best.user_attrs["run_dir"]), tmp_path / "out/synthetic-rns-tuned-seed1"
    bench = json.loads((final / "bench.json").read_text())
    assert bench["copied_from"] == str(trial)
    assert bench["seed"] == 1 and bench["method"] == "rns (tuned, 2 trials)"
    assert "copied_from" not in json.loads(
        (tmp_path / "out/synthetic-rns-tuned-seed2/bench.json").read_text()
    )
    assert (final / "epochs.jsonl").read_bytes() == (trial / "epochs.jsonl").read_bytes()
    assert (final / "checkpoints/best.pt").is_file()
    cfg = RunDir(final).load_config()
    assert (cfg.name, cfg.out_dir, cfg.seed) == (
        "synthetic-rns-tuned-seed1",
        str(tmp_path / "out"),
        1,
    )
    record = RunDir(final).read_record()
    assert record["config"]["name"] == "synthetic-rns-tuned-seed1"
    # determinism is what makes the copy honest: a fresh training of the final run equals it
    fresh = real_train(cfg, load_dataset(cfg.data), run_dir=tmp_path / "fresh")
    assert fresh.metrics == record["metrics"]
    # the report sees both final runs; a rerun of the command trains nothing
    assert sorted(r.seed for r in load_runs(tmp_path / "out")) == [1, 2]
    trained.clear()
    assert main(["-q", "tune", str(grid)]) == 0
    assert trained == []
    assert "copied, not trained again" not in capsys.readouterr().err


def test_a_final_run_unlike_its_trial_is_trained(tmp_path, monkeypatch):
    """A larger epoch cap, or a trial run that is gone, leaves the final run to train."""
    import shutil

    from oodrec.bench.tune import adopt_best_trials, summarize

    spec, jobs = tune_jobs(tmp_path, trials=1)
    work_on(jobs[0])
    rows = summarize(jobs)
    capped = study_jobs(spec, replace(jobs[0].tune, final_epochs=5), tmp_path, jobs[0].url)
    assert adopt_best_trials(final_runs(spec, capped, tmp_path), rows) == []
    runs = final_runs(spec, jobs, tmp_path)
    shutil.rmtree(rows[0]["best_run_dir"])
    assert adopt_best_trials(runs, rows) == []
    assert not (tmp_path / runs[0].name / "config.yaml").exists()


def test_run_tune_hands_out_each_stage_before_the_final_runs(tmp_path):
    """The workflow in one call: the summary is handed out before the final runs train, and the
    outcome carries what `oodrec tune` prints."""
    from oodrec.bench.tune.workflow import TuneOptions, run_tune

    data = yaml.safe_load(yaml.safe_dump(GRID))
    data["tune"]["trials"] = 1
    data["seeds"] = [1]
    data["out_dir"] = str(tmp_path / "out")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(data))
    seen = []

    def on_stage(stage, outcome):
        seen.append((stage, len(outcome.rows), outcome.outcomes))

    outcome = run_tune(grid, TuneOptions(show_progress=False), on_stage)
    assert seen == [("studies", 0, None), ("summary", 1, None), ("finals", 1, None)]
    assert outcome.exit_code == 0 and outcome.rows[0]["finished"] == 1
    # seed 1 is the trials' seed: its final run is the best trial's, copied, then skipped
    assert [name for name, _ in outcome.adopted] == ["synthetic-rns-tuned-seed1"]
    assert [o.status for o in outcome.outcomes] == ["skipped"]
    seen.clear()
    status = run_tune(grid, TuneOptions(status=True), on_stage)
    assert [s for s, _, _ in seen] == ["studies", "summary"]
    assert status.outcomes is None and status.finals_done == [1] and status.running == []
