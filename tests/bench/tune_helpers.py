"""The grid, studies and killed trials that the `oodrec tune` tests share."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import yaml

from oodrec.bench.grid import parse_grid
from oodrec.bench.tune import open_study, parse_tune, storage_url, study_jobs, study_name

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


def tune_grid(**tune):
    """``GRID`` parsed, its ``tune:`` section updated with ``tune``."""
    data = yaml.safe_load(yaml.safe_dump(GRID))
    data["tune"].update(tune)
    return parse_grid(data, "grid.yaml")


def tune_jobs(tmp_path, trials):
    """``(spec, jobs)`` of ``GRID`` with a budget of ``trials``, stored under ``tmp_path``."""
    spec = tune_grid(trials=trials)
    tune = parse_tune(spec)
    return spec, study_jobs(spec, tune, tmp_path, storage_url(tmp_path))


def zombie_trial(tmp_path, monkeypatch, die_at: int | None):
    """A killed worker's trial: params drawn, run directory named, trained up to epoch
    ``die_at`` (None: to the end, with the process killed before Optuna heard of it) and
    reported, its heartbeat then stale. Returns (job, zombie, run_dir, cfg)."""
    import oodrec.train.loop as loop
    from oodrec.bench.runner import _load_dataset
    from oodrec.bench.tune import study as study_mod
    from oodrec.bench.tune import with_params

    monkeypatch.setattr(study_mod, "HEARTBEAT_S", 1)
    monkeypatch.setattr(study_mod, "GRACE_S", 1)
    _, jobs = tune_jobs(tmp_path, trials=1)
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


def settle_counting_trains(job, monkeypatch):
    """``settle`` the study of ``job``; returns the study and the keyword arguments of each
    ``fit_run`` call it made."""
    import oodrec.bench.tune as tune_mod
    import oodrec.train.loop as loop

    calls, real_train = [], loop.fit_run

    def counting(*args, **kwargs):
        calls.append({"run_dir": args[2].path, **kwargs})
        return real_train(*args, **kwargs)

    monkeypatch.setattr(loop, "fit_run", counting)
    tune_mod.settle([job], wait_s=30)
    monkeypatch.setattr(loop, "fit_run", real_train)
    study = open_study(job.url, study_name("synthetic", "rns"), job.tune)
    return study, calls
