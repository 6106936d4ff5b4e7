"""`oodrec tune`: the tune section, resumable studies, shared studies, final runs, report."""

from __future__ import annotations

import json
import subprocess
import sys
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
from oodrec.errors import ConfigError, RunError  # noqa: E402

GRID = {
    "out_dir": "runs/t",
    "base": {
        "data": {"synthetic": {"num_users": 60, "num_items": 80}},
        "model": {"emb_dim": 8},
        "train": {"epochs": 3, "batch_size": 128, "patience": 0, "threads": 1, "fhn_batches": 1},
        "eval": {"user_batch_size": 64},
    },
    "methods": [{"name": "rns", "sampler": "rns"}],
    "datasets": ["synthetic"],
    "seeds": [1, 2],
    "tune": {
        "trials": 2,
        "startup_trials": 1,
        "warmup_evals": 1,
        "space": {"train.lr": {"low": 0.001, "high": 0.05, "log": True}},
    },
}


def _spec(**tune):
    data = yaml.safe_load(yaml.safe_dump(GRID))
    data["tune"].update(tune)
    return parse_grid(data, "grid.yaml")


def test_parse_tune_errors():
    assert parse_tune(_spec()).space_for("rns")["train.lr"].log
    bad = [
        ({"trials": 0}, "trials must be an integer >= 1"),
        ({"space": {"train.lr": {"low": 0.1, "high": 0.01}}}, "low < high"),
        ({"space": {"train.lr": {"low": 0, "high": 0.1, "log": True}}}, "low > 0"),
        ({"space": {"train.lr": {"low": 0.1, "hi": 1}}}, "unknown key"),
        ({"space": {"train.nope": {"low": 0.1, "high": 1}}}, "train.nope"),
        ({"methods": {"dns": {"train.lr": {"low": 0.1, "high": 1}}}}, "not a method"),
        ({"budget": 3}, "unknown key"),
        ({"final_epochs": 0}, "final_epochs must be an integer >= 1"),
        ({"final_epochs": "120"}, "final_epochs must be an integer >= 1"),
        ({"space": {}}, "empty search space"),
    ]
    for tune, message in bad:
        with pytest.raises(ConfigError, match=message) as info:
            parse_tune(_spec(**tune))
        assert str(info.value).startswith("grid.yaml")
    data = yaml.safe_load(yaml.safe_dump(GRID))
    data["sweep"] = {"train.lr": [0.01]}
    with pytest.raises(ConfigError, match="sweep"):
        parse_tune(parse_grid(data, "grid.yaml"))
    data.pop("tune")
    data.pop("sweep")
    with pytest.raises(ConfigError, match="no 'tune:' section"):
        parse_tune(parse_grid(data, "grid.yaml"))


def _jobs(tmp_path, trials):
    spec = _spec(trials=trials)
    tune = parse_tune(spec)
    return spec, study_jobs(spec, tune, tmp_path, storage_url(tmp_path))


def test_killed_search_resumes_without_repeating_finished_trials(tmp_path, monkeypatch):
    import oodrec.train.loop as loop

    spec, jobs = _jobs(tmp_path, trials=2)
    assert work_on(jobs[0]) == {"study": "synthetic/rns", "finished": 2, "ran": 2}
    study = open_study(jobs[0].url, study_name("synthetic", "rns"), jobs[0].tune)
    first = {t.number: t.params for t in finished(study)}

    # a bigger budget, killed in the middle of its second new trial
    real_train, calls = loop.train, []

    def dying_train(*args, **kwargs):
        calls.append(kwargs["run_dir"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(loop, "train", dying_train)
    _, jobs = _jobs(tmp_path, trials=4)
    with pytest.raises(KeyboardInterrupt):
        work_on(jobs[0])
    assert len(calls) == 2
    monkeypatch.setattr(loop, "train", real_train)

    # the rerun trains only what is missing: 4 - 3 finished = 1 trial
    calls.clear()
    monkeypatch.setattr(loop, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    assert work_on(jobs[0]) == {"study": "synthetic/rns", "finished": 4, "ran": 1}
    assert len(calls) == 1
    study = open_study(jobs[0].url, study_name("synthetic", "rns"), jobs[0].tune)
    done = {t.number: t.params for t in finished(study)}
    assert {n: done[n] for n in first} == first  # the finished trials are kept, not rerun
    assert len(done) == 4
    # a finished study runs nothing
    assert work_on(jobs[0])["ran"] == 0

    # the final runs: the best values over the grid's seeds, with the tuning in bench.json
    runs = final_runs(spec, jobs, tmp_path)
    assert [r.name for r in runs] == ["synthetic-rns-tuned-seed1", "synthetic-rns-tuned-seed2"]
    best = max((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    assert runs[0].config.train.lr == pytest.approx(best.params["train.lr"])
    assert runs[0].method == "rns (tuned, 4 trials)"
    assert runs[0].info["tuning"]["budget"] == 4
    assert runs[0].info["tuning"]["space"] == ["train.lr in [0.001, 0.05] (log)"]
    # trial runs stay out of reports
    assert load_runs(tmp_path) == []


def test_final_runs_need_a_finished_search(tmp_path):
    spec, jobs = _jobs(tmp_path, trials=3)
    with pytest.raises(ConfigError, match="0/3 trials finished"):
        final_runs(spec, jobs, tmp_path)


def test_pruned_trials_count_against_the_budget(tmp_path):
    spec, jobs = _jobs(tmp_path, trials=5)
    job = replace(jobs[0], tune=replace(jobs[0].tune, startup_trials=1, warmup_evals=0))
    work_on(job)
    study = open_study(job.url, study_name("synthetic", "rns"), job.tune)
    assert len(finished(study)) == 5


def test_two_workers_share_one_study(tmp_path):
    grid = tmp_path / "grid.yaml"
    data = yaml.safe_load(yaml.safe_dump(GRID))
    data["tune"]["trials"] = 4
    data["out_dir"] = str(tmp_path / "out")
    grid.write_text(yaml.safe_dump(data))
    cmd = [sys.executable, "-m", "oodrec.cli", "-q", "tune", str(grid), "--no-final"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    spec = parse_grid(data, str(grid))
    tune = parse_tune(spec)
    url = storage_url(Path(data["out_dir"]))
    study = open_study(url, study_name("synthetic", "rns"), tune)
    assert len(finished(study)) == 4  # exactly the budget, not one per worker more
    trial_dirs = sorted((Path(data["out_dir"]) / "tune" / "synthetic-rns").iterdir())
    assert len(trial_dirs) == 4
    # each worker prints the study as it was when it stopped: the first to stop may see the
    # other's last trial still running
    assert all("synthetic/rns" in out for out, _ in outs)
    assert any("4/4" in out for out, _ in outs)


def test_surplus_trials_are_not_logged_as_failures_but_real_failures_are():
    import logging

    from oodrec.bench.tune import _QuietSurplus

    quiet = _QuietSurplus()

    def passes(msg: str) -> bool:
        return quiet.filter(logging.LogRecord("optuna", logging.WARNING, "", 0, msg, None, None))

    assert not passes(
        "Trial 12 failed with parameters: {} because of the following error: _Surplus()."
    )
    assert not passes("Trial 12 failed with value None.")
    assert passes("Trial 13 failed with parameters: {} because of the following error: OSError().")
    assert passes("Trial 13 failed with value None.")
    assert passes("A new study created in RDB with name: x")


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


def test_a_trial_left_running_by_a_killed_worker_does_not_strand_the_budget(tmp_path, monkeypatch):
    """SIGTERM leaves a RUNNING trial behind; once stale it is failed and the budget filled."""
    import time

    from optuna.trial import TrialState

    import oodrec.bench.tune as tune_mod

    monkeypatch.setattr(tune_mod, "HEARTBEAT_S", 1)
    monkeypatch.setattr(tune_mod, "GRACE_S", 60)
    _, jobs = _jobs(tmp_path, trials=2)
    study = open_study(jobs[0].url, study_name("synthetic", "rns"), jobs[0].tune)
    with pytest.warns(UserWarning, match="Heartbeat"):
        zombie = study.ask()  # a worker's trial, its process killed before it could finish
    study._storage.record_heartbeat(zombie._trial_id)
    # a worker restarted at once: the zombie is not stale yet and counts as claimed, so one
    # trial leaves the study one short ...
    assert tune_mod.work_on(jobs[0])["finished"] == 1
    # ... until settle() sees the zombie go stale, fails it and trains the missing trial
    monkeypatch.setattr(tune_mod, "GRACE_S", 1)
    time.sleep(1.5)
    tune_mod.settle(jobs, wait_s=30)
    study = open_study(jobs[0].url, study_name("synthetic", "rns"), jobs[0].tune)
    assert len(finished(study)) == 2
    assert study.trials[zombie.number].state == TrialState.FAIL
    assert not study.get_trials(states=(TrialState.RUNNING,))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_killed_tune_leaves_no_orphan_workers(tmp_path):
    import os
    import signal

    from .test_bench_cli import _orphans, _workers_until

    data = yaml.safe_load(yaml.safe_dump(GRID))
    data["tune"]["trials"] = 50
    data["base"]["train"]["epochs"] = 50
    data["out_dir"] = str(tmp_path / "out")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(data))
    cmd = [sys.executable, "-m", "oodrec.cli", "-q", "tune", str(grid), "--workers", "2"]
    proc = subprocess.Popen(cmd, env=dict(os.environ), stderr=subprocess.PIPE)
    trials = Path(data["out_dir"]) / "tune" / "synthetic-rns"
    workers = _workers_until(proc, lambda: list(trials.glob("trial-*/epochs.jsonl")), "tune")
    assert len(workers) >= 2
    proc.send_signal(signal.SIGTERM)  # `kill PID`: no KeyboardInterrupt reaches the workers
    proc.wait()
    assert not _orphans(workers)


def test_a_best_trial_ended_by_the_epoch_cap_is_named(tmp_path):
    import json

    from oodrec.bench.tune import _capped_at

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
    _, jobs = _jobs(Path("old"), trials=2)  # relative, as `oodrec tune --out old` records it
    work_on(jobs[0])
    shutil.move("old", "moved")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    spec, jobs = _jobs(tmp_path / "moved", trials=2)
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
    spec = _spec(trials=1, final_epochs=7)
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


def _zombie(tmp_path, monkeypatch, die_at: int | None):
    """A killed worker's trial: params drawn, run directory named, trained up to epoch
    ``die_at`` (None: to the end, with the process killed before Optuna heard of it) and
    reported, its heartbeat then stale. Returns (job, zombie, run_dir, cfg)."""
    import time

    import oodrec.bench.tune as tune_mod
    import oodrec.train.loop as loop
    from oodrec.bench.runner import _load_dataset
    from oodrec.bench.tune import with_params

    monkeypatch.setattr(tune_mod, "HEARTBEAT_S", 1)
    monkeypatch.setattr(tune_mod, "GRACE_S", 1)
    _, jobs = _jobs(tmp_path, trials=1)
    job = jobs[0]
    study = open_study(job.url, study_name("synthetic", "rns"), job.tune)
    with pytest.warns(UserWarning, match="Heartbeat"):
        zombie = study.ask()
    params = {k: p.suggest(zombie) for k, p in job.space.items()}
    run_dir = job.trial_dir / f"trial-{zombie.number:04d}"
    zombie.set_user_attr("run_dir", str(run_dir))
    cfg = replace(with_params(job.base, params), out_dir=str(job.trial_dir), name=run_dir.name)

    class Killed(Exception):
        pass

    def report(epoch, means):
        zombie.report(means["ndcg@20"], step=epoch)
        if epoch == die_at:
            raise Killed

    try:
        loop.train(cfg, _load_dataset(cfg), run_dir=run_dir, on_evaluate=report)
    except Killed:
        pass
    study._storage.record_heartbeat(zombie._trial_id)
    time.sleep(1.5)
    return job, zombie, run_dir, cfg


def _settle_counting_trains(job, monkeypatch):
    import oodrec.bench.tune as tune_mod
    import oodrec.train.loop as loop

    calls, real_train = [], loop.train
    monkeypatch.setattr(loop, "train", lambda *a, **k: calls.append(k) or real_train(*a, **k))
    tune_mod.settle([job], wait_s=30)
    monkeypatch.setattr(loop, "train", real_train)
    study = open_study(job.url, study_name("synthetic", "rns"), job.tune)
    return study, calls


def test_a_killed_trial_is_retried_from_its_checkpoint(tmp_path, monkeypatch):
    """A worker killed in the middle of a trial: the retry (same params) continues the trial's
    run directory from its last checkpoint, and ends where an uninterrupted trial ends."""
    from optuna.trial import TrialState

    import oodrec.train.loop as loop
    from oodrec.bench.runner import _load_dataset

    job, zombie, run_dir, cfg = _zombie(tmp_path, monkeypatch, die_at=1)
    study, calls = _settle_counting_trains(job, monkeypatch)
    assert study.trials[zombie.number].state == TrialState.FAIL
    (retry,) = finished(study)
    assert retry.params == zombie.params and retry.user_attrs["run_dir"] == str(run_dir)
    assert len(calls) == 1 and calls[0]["resume"] and calls[0]["run_dir"] == run_dir
    assert sorted(p.name for p in job.trial_dir.iterdir()) == [run_dir.name]  # no new directory
    resumed = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in resumed] == [0, 1, 2]

    # the same trial uninterrupted, elsewhere: the same epochs and the same value
    whole = tmp_path / "whole"
    result = loop.train(replace(cfg, out_dir=str(whole)), _load_dataset(cfg), run_dir=whole / "t")
    uninterrupted = [json.loads(x) for x in (whole / "t" / "epochs.jsonl").read_text().splitlines()]

    def strip(rows):
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]

    assert strip(resumed) == strip(uninterrupted)
    assert retry.value == pytest.approx(result.metrics["val"]["ndcg@20"])
    # every evaluation is a pruning step, the killed attempt's included
    assert retry.intermediate_values == {i: r["val/ndcg@20"] for i, r in enumerate(resumed)}


def test_a_killed_trial_of_a_moved_study_is_retried_where_the_study_now_is(tmp_path, monkeypatch):
    """The worker died mid-trial; the study's directory was then moved (or archived and
    restored elsewhere). The retry continues the trial's run in the new place, from the
    checkpoint that moved with it, not in the path the storage recorded."""
    import shutil

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    job, zombie, run_dir, _ = _zombie(old, monkeypatch, die_at=1)
    shutil.move(old, new)
    _, jobs = _jobs(new, trials=1)
    study, calls = _settle_counting_trains(jobs[0], monkeypatch)
    (retry,) = finished(study)
    moved = new / run_dir.relative_to(old)
    assert retry.params == zombie.params
    assert len(calls) == 1 and calls[0]["run_dir"] == moved and calls[0]["resume"]
    assert not old.exists()
    rows = [json.loads(x) for x in (moved / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]


def test_a_trial_killed_after_its_run_finished_is_not_trained_again(tmp_path, monkeypatch):
    from oodrec.runs import RunDir

    job, zombie, run_dir, _ = _zombie(tmp_path, monkeypatch, die_at=None)
    study, calls = _settle_counting_trains(job, monkeypatch)
    (retry,) = finished(study)
    assert calls == [] and retry.user_attrs["run_dir"] == str(run_dir)
    assert retry.value == RunDir(run_dir).read_record()["metrics"]["val"]["ndcg@20"]


def test_status_shows_how_far_a_running_trial_has_got(tmp_path, monkeypatch):
    from oodrec.bench.tune import format_running, running_trials

    job, zombie, run_dir, _ = _zombie(tmp_path, monkeypatch, die_at=2)
    rows = [json.loads(x) for x in (run_dir / "epochs.jsonl").read_text().splitlines()]
    (row,) = running_trials([job], now=(run_dir / "epochs.jsonl").stat().st_mtime + 7)
    assert row["number"] == zombie.number and row["epochs"] == len(rows) == 2
    assert row["cap"] == 3 and row["val"] == rows[-1]["val/ndcg@20"]
    assert row["best"] == max(r["val/ndcg@20"] for r in rows)
    line = format_running(row)
    assert line.startswith(f"  synthetic/rns trial {zombie.number}: epoch 2 of 3, val ndcg@20 ")
    assert line.endswith("last epoch written 7 s ago")


def test_two_workers_opening_a_study_together_draw_different_values(tmp_path):
    """Both open the study before either has a trial: values seeded per worker would repeat."""

    def two_asks(root):
        _, jobs = _jobs(root, trials=4)
        job = jobs[0]
        studies = [open_study(job.url, study_name("synthetic", "rns"), job.tune) for _ in "ab"]
        with pytest.warns(UserWarning, match="Heartbeat"):
            trials = [s.ask() for s in studies]
        return [{k: p.suggest(t) for k, p in job.space.items()} for t in trials]

    first, second = two_asks(tmp_path / "one")
    assert first != second
    assert two_asks(tmp_path / "two") == [first, second]  # reproducible from the trial numbers


def test_trials_csv_lists_every_trial_with_its_run(tmp_path):
    import csv

    from oodrec.bench.tune import trial_rows, write_trials_csv

    _, jobs = _jobs(tmp_path, trials=2)
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
    from oodrec.bench.records import load_runs
    from oodrec.cli import main
    from oodrec.data.dataset import load_dataset
    from oodrec.runs import RunDir

    data = yaml.safe_load(yaml.safe_dump(GRID))
    data["out_dir"] = str(tmp_path / "out")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(data))
    real_train, trained = loop.train, []

    def counting_train(cfg, *args, **kwargs):
        trained.append(cfg.name)
        return real_train(cfg, *args, **kwargs)

    monkeypatch.setattr(loop, "train", counting_train)
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

    spec, jobs = _jobs(tmp_path, trials=1)
    work_on(jobs[0])
    rows = summarize(jobs)
    capped = study_jobs(spec, replace(jobs[0].tune, final_epochs=5), tmp_path, jobs[0].url)
    assert adopt_best_trials(final_runs(spec, capped, tmp_path), rows) == []
    runs = final_runs(spec, jobs, tmp_path)
    shutil.rmtree(rows[0]["best_run_dir"])
    assert adopt_best_trials(runs, rows) == []
    assert not (tmp_path / runs[0].name / "config.yaml").exists()


def test_a_search_resumed_with_another_config_is_refused_before_it_trains(tmp_path, capsys):
    """A study records its base config; `oodrec tune` with another selection metric (a --set
    forgotten or changed) would rank its new trials against trials selected on another metric.
    Refused, naming the key and both values; other threads are fine; --status shows the study
    as it was searched."""
    from oodrec.bench.tune import BASE_ATTR, summarize
    from oodrec.cli import main

    data = yaml.safe_load(yaml.safe_dump(GRID))
    data["out_dir"] = str(tmp_path / "out")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(data))
    ips = ["--set", "train.select_metric=recall@20"]
    assert main(["-q", "tune", str(grid), "--no-final", *ips]) == 0
    capsys.readouterr()
    trial_dir = tmp_path / "out" / "tune" / "synthetic-rns"
    before = sorted(p.name for p in trial_dir.iterdir())
    assert before == ["trial-0000", "trial-0001"]

    # the --set forgotten, with a larger budget: refused, nothing trains
    assert main(["-q", "tune", str(grid), "--no-final", "--trials", "3"]) == 2
    err = capsys.readouterr().err
    assert "study synthetic/rns was searched with another config" in err
    assert "train.select_metric ('recall@20' -> 'ndcg@20')" in err
    assert sorted(p.name for p in trial_dir.iterdir()) == before
    # the same search with other threads continues
    more = ["--trials", "3", "--set", "train.threads=2", *ips]
    assert main(["-q", "tune", str(grid), "--no-final", *more]) == 0
    assert len(list(trial_dir.iterdir())) == 3
    capsys.readouterr()

    # --status without the --set: the study as it was searched (its metric), with a note
    assert main(["tune", str(grid), "--status", "--trials", "3"]) == 0
    out, err = capsys.readouterr()
    assert "note: synthetic/rns was searched with train.select_metric ('recall@20'" in err
    assert "recall@20 0." in out and "ndcg@20" not in out

    # the record is the study's, read through Optuna
    spec, jobs = _jobs(tmp_path / "out", trials=3)
    study = open_study(jobs[0].url, study_name("synthetic", "rns"), jobs[0].tune)
    assert study.user_attrs[BASE_ATTR]["train"]["select_metric"] == "recall@20"
    with pytest.raises(RunError, match="select_metric"):
        work_on(jobs[0])  # the API refuses too
    assert summarize(jobs)[0]["metric"] == "ndcg@20"  # this command's view, unchanged


def test_a_study_without_a_record_is_checked_against_its_trials_configs(tmp_path, monkeypatch):
    """Studies searched before the record existed: their trials' config.yaml tells."""
    import oodrec.bench.tune as tune_mod

    _, jobs = _jobs(tmp_path, trials=2)
    monkeypatch.setattr(tune_mod, "_check_and_record", lambda job, study: None)
    work_on(jobs[0])
    monkeypatch.undo()
    study = open_study(jobs[0].url, study_name("synthetic", "rns"), jobs[0].tune)
    assert tune_mod.BASE_ATTR not in study.user_attrs
    job = jobs[0]
    other = replace(job, base=replace(job.base, train=replace(job.base.train, epochs=5)))
    with pytest.raises(RunError) as info:
        tune_mod.check_studies([other])
    assert "train.epochs (3 -> 5)" in str(info.value)
    assert "trial-0000/config.yaml" in str(info.value)
    assert tune_mod.BASE_ATTR not in study.user_attrs  # nothing recorded on a conflict
    tune_mod.check_studies(jobs)  # the same config: recorded now
    study = open_study(job.url, study_name("synthetic", "rns"), job.tune)
    assert study.user_attrs[tune_mod.BASE_ATTR]["train"]["epochs"] == 3


def test_searched_sampler_options_may_differ_from_the_base(tmp_path, monkeypatch):
    """A trial's config.yaml holds its searched sampler option under sampler.options; checked
    against the base (which has no such option) it is not a conflict."""
    import oodrec.bench.tune as tune_mod
    from oodrec.config import stored_key

    assert stored_key("sampler.num_candidates") == "sampler.options.num_candidates"
    assert stored_key("sampler.name") == "sampler.name"
    assert stored_key("model.emb_dim") == "model.emb_dim"
    assert stored_key("model.temperature") == "model.options.temperature"
    assert stored_key("train.lr") == "train.lr"

    data = yaml.safe_load(yaml.safe_dump(GRID))
    data["methods"] = [{"name": "dns", "sampler": "dns"}]
    data["tune"]["methods"] = {"dns": {"sampler.num_candidates": {"choices": [2, 4]}}}
    spec = parse_grid(data, "grid.yaml")
    jobs = study_jobs(spec, parse_tune(spec), tmp_path, storage_url(tmp_path))
    monkeypatch.setattr(tune_mod, "_check_and_record", lambda job, study: None)
    work_on(jobs[0])
    monkeypatch.undo()
    study = open_study(jobs[0].url, study_name("synthetic", "dns"), jobs[0].tune)
    saved, where = tune_mod.recorded_base(jobs[0], study)
    assert saved["sampler"]["options"]["num_candidates"] in (2, 4) and "trial-0000" in where
    tune_mod.check_studies(jobs)  # no conflict
