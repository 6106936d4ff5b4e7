"""`oodrec tune`: the tune section, resumable and shared studies, workers and retries."""

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

from .tune_helpers import GRID, settle_counting_trains, tune_grid, tune_jobs, zombie_trial  # noqa: E402


def test_parse_tune_errors():
    assert parse_tune(tune_grid()).space_for("rns")["train.lr"].log
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
            parse_tune(tune_grid(**tune))
        assert str(info.value).startswith("grid.yaml")
    data = yaml.safe_load(yaml.safe_dump(GRID))
    data["sweep"] = {"train.lr": [0.01]}
    with pytest.raises(ConfigError, match="sweep"):
        parse_tune(parse_grid(data, "grid.yaml"))
    data.pop("tune")
    data.pop("sweep")
    with pytest.raises(ConfigError, match="no 'tune:' section"):
        parse_tune(parse_grid(data, "grid.yaml"))


def test_killed_search_resumes_without_repeating_finished_trials(tmp_path, monkeypatch):
    import oodrec.train.loop as loop

    spec, jobs = tune_jobs(tmp_path, trials=2)
    assert work_on(jobs[0]) == {"study": "synthetic/rns", "finished": 2, "ran": 2}
    study = open_study(jobs[0].url, study_name("synthetic", "rns"), jobs[0].tune)
    first = {t.number: t.params for t in finished(study)}

    # a bigger budget, killed in the middle of its second new trial
    real_train, calls = loop.fit_run, []

    def dying_train(*args, **kwargs):
        calls.append(args[2].path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(loop, "fit_run", dying_train)
    _, jobs = tune_jobs(tmp_path, trials=4)
    with pytest.raises(KeyboardInterrupt):
        work_on(jobs[0])
    assert len(calls) == 2
    monkeypatch.setattr(loop, "fit_run", real_train)

    # the rerun trains only what is missing: 4 - 3 finished = 1 trial
    calls.clear()
    monkeypatch.setattr(loop, "fit_run", lambda *a, **k: calls.append(1) or real_train(*a, **k))
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


def test_pruned_trials_count_against_the_budget(tmp_path):
    spec, jobs = tune_jobs(tmp_path, trials=5)
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

    from oodrec.bench.tune.workers import _QuietSurplus

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


def test_a_trial_left_running_by_a_killed_worker_does_not_strand_the_budget(tmp_path, monkeypatch):
    """SIGTERM leaves a RUNNING trial behind; once stale it is failed and the budget filled."""
    import time

    from optuna.trial import TrialState

    import oodrec.bench.tune as tune_mod
    from oodrec.bench.tune import study as study_mod

    monkeypatch.setattr(study_mod, "HEARTBEAT_S", 1)
    monkeypatch.setattr(study_mod, "GRACE_S", 60)
    _, jobs = tune_jobs(tmp_path, trials=2)
    study = open_study(jobs[0].url, study_name("synthetic", "rns"), jobs[0].tune)
    with pytest.warns(UserWarning, match="Heartbeat"):
        zombie = study.ask()  # a worker's trial, its process killed before it could finish
    study._storage.record_heartbeat(zombie._trial_id)
    # a worker restarted at once: the zombie is not stale yet and counts as claimed, so one
    # trial leaves the study one short ...
    assert tune_mod.work_on(jobs[0])["finished"] == 1
    # ... until settle() sees the zombie go stale, fails it and trains the missing trial
    monkeypatch.setattr(study_mod, "GRACE_S", 1)
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


def test_a_killed_trial_is_retried_from_its_checkpoint(tmp_path, monkeypatch):
    """A worker killed in the middle of a trial: the retry (same params) continues the trial's
    run directory from its last checkpoint, and ends where an uninterrupted trial ends."""
    from optuna.trial import TrialState

    import oodrec.train.loop as loop
    from oodrec.bench.runner import _load_dataset

    job, zombie, run_dir, cfg = zombie_trial(tmp_path, monkeypatch, die_at=1)
    study, calls = settle_counting_trains(job, monkeypatch)
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
    job, zombie, run_dir, _ = zombie_trial(old, monkeypatch, die_at=1)
    shutil.move(old, new)
    _, jobs = tune_jobs(new, trials=1)
    study, calls = settle_counting_trains(jobs[0], monkeypatch)
    (retry,) = finished(study)
    moved = new / run_dir.relative_to(old)
    assert retry.params == zombie.params
    assert len(calls) == 1 and calls[0]["run_dir"] == moved and calls[0]["resume"]
    assert not old.exists()
    rows = [json.loads(x) for x in (moved / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]


def test_a_trial_killed_after_its_run_finished_is_not_trained_again(tmp_path, monkeypatch):
    from oodrec.runs import RunDir

    job, zombie, run_dir, _ = zombie_trial(tmp_path, monkeypatch, die_at=None)
    study, calls = settle_counting_trains(job, monkeypatch)
    (retry,) = finished(study)
    assert calls == [] and retry.user_attrs["run_dir"] == str(run_dir)
    assert retry.value == RunDir(run_dir).read_record()["metrics"]["val"]["ndcg@20"]


def test_two_workers_opening_a_study_together_draw_different_values(tmp_path):
    """Both open the study before either has a trial: values seeded per worker would repeat."""

    def two_asks(root):
        _, jobs = tune_jobs(root, trials=4)
        job = jobs[0]
        studies = [open_study(job.url, study_name("synthetic", "rns"), job.tune) for _ in "ab"]
        with pytest.warns(UserWarning, match="Heartbeat"):
            trials = [s.ask() for s in studies]
        return [{k: p.suggest(t) for k, p in job.space.items()} for t in trials]

    first, second = two_asks(tmp_path / "one")
    assert first != second
    assert two_asks(tmp_path / "two") == [first, second]  # reproducible from the trial numbers


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
    spec, jobs = tune_jobs(tmp_path / "out", trials=3)
    study = open_study(jobs[0].url, study_name("synthetic", "rns"), jobs[0].tune)
    assert study.user_attrs[BASE_ATTR]["train"]["select_metric"] == "recall@20"
    with pytest.raises(RunError, match="select_metric"):
        work_on(jobs[0])  # the API refuses too
    assert summarize(jobs)[0]["metric"] == "ndcg@20"  # this command's view, unchanged


def test_a_study_without_a_record_is_checked_against_its_trials_configs(tmp_path, monkeypatch):
    """Studies searched before the record existed: their trials' config.yaml tells."""
    import oodrec.bench.tune as tune_mod

    _, jobs = tune_jobs(tmp_path, trials=2)
    monkeypatch.setattr(tune_mod.workers, "_check_and_record", lambda job, study: None)
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
    monkeypatch.setattr(tune_mod.workers, "_check_and_record", lambda job, study: None)
    work_on(jobs[0])
    monkeypatch.undo()
    study = open_study(jobs[0].url, study_name("synthetic", "dns"), jobs[0].tune)
    saved, where = tune_mod.recorded_base(jobs[0], study)
    assert saved["sampler"]["options"]["num_candidates"] in (2, 4) and "trial-0000" in where
    tune_mod.check_studies(jobs)  # no conflict
