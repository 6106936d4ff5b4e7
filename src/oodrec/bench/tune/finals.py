"""The final runs of a search: the best configuration of every finished study over the grid's
seeds, as ordinary resumable grid runs named ``DATASET-METHOD-tuned-seedS`` (with
``final_epochs`` N: ``DATASET-METHOD-tuned-Nep-seedS``), whose ``bench.json`` carries the
budget, the search space and the chosen values. The final run that repeats the best trial (same
config, seed ``tune.seed``) gets a copy of the trial's run instead of a second training
(``adopt_best_trials``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from oodrec.bench.grid import GridRun, GridSpec
from oodrec.bench.tune.inspection import summarize
from oodrec.bench.tune.spec import with_epoch_cap, with_params
from oodrec.bench.tune.study import StudyJob
from oodrec.errors import ConfigError

logger = logging.getLogger(__name__)


def final_runs(spec: GridSpec, jobs: list[StudyJob], out_dir: str | Path) -> list[GridRun]:
    """The best configuration of every finished study over the grid's seeds.

    Raises:
        ConfigError: a study has not finished its budget (run ``oodrec tune`` again).
    """
    runs = []
    for job, row in zip(jobs, summarize(jobs)):
        if row["finished"] < job.trials or row["best_params"] is None:
            raise ConfigError(
                f"study {row['study']}: {row['finished']}/{job.trials} trials finished; run "
                "`oodrec tune` again to finish the search before the final runs"
            )
        cfg = with_params(job.base, row["best_params"])
        label = f"{job.method} (tuned, {job.trials} trials)"
        info = {"tuning": tuning_info(row)}
        if job.tune.final_epochs is not None:
            cfg = with_epoch_cap(cfg, job.tune.final_epochs)
            label = (
                f"{job.method} (tuned, {job.trials} trials, {job.tune.final_epochs}-epoch finals)"
            )
            info["tuning"]["trial_epochs"] = job.base.train.epochs
            info["tuning"]["final_epochs"] = job.tune.final_epochs
        for seed in spec.seeds:
            run_name = final_run_name(job, seed)
            final = replace(cfg, seed=seed, out_dir=str(out_dir), name=run_name)
            runs.append(GridRun(run_name, final, label, job.dataset, seed, {}, info))
    return runs


def adopt_best_trials(
    runs: list[GridRun], rows: list[dict[str, Any]], grid: str = "<grid>"
) -> list[tuple[str, str]]:
    """Give each final run that repeats its study's best trial that trial's finished run.

    The trials train at ``tune.seed``, usually one of the grid's seeds, so one final run per
    study has the best trial's config and seed (when ``final_epochs`` leaves the cap alone).
    Training is deterministic, so retraining it would only repeat the trial epoch for epoch; its
    directory gets the trial's files instead (checkpoints hard-linked where the file system
    allows), and its ``bench.json`` names the trial (``copied_from``).

    A final run is left to train as usual when its directory already has a ``config.yaml``,
    when the trial's run has not finished or is not on this machine, or when the two configs
    differ in anything but the name, ``out_dir``, ``train.device`` and ``train.threads`` (the
    grid runner's rule for counting a finished run as done).

    Args:
        runs: the final runs (``final_runs``).
        rows: ``summarize(jobs)`` of the same studies (their ``best_run_dir``).
        grid: the grid's source, for ``bench.json``.

    Returns:
        ``(final run name, trial run directory)`` of every adopted run.
    """
    by_study = {row["study"]: row.get("best_run_dir") for row in rows}
    adopted = []
    for run in runs:
        trial_dir = by_study.get(run.info.get("tuning", {}).get("study"))
        if trial_dir and _adopt_trial(Path(trial_dir), run, grid):
            adopted.append((run.name, trial_dir))
    return adopted


def _adopt_trial(trial_dir: Path, run: GridRun, grid: str) -> bool:
    """Copy the finished run in ``trial_dir`` into ``run``'s directory (see
    ``adopt_best_trials``). Returns whether it did."""
    import shutil

    from oodrec.bench.runner import Job, result_diff, write_bench_info
    from oodrec.config import to_dict
    from oodrec.errors import OodrecError
    from oodrec.runs import RunDir

    src = RunDir(trial_dir)
    dest = RunDir((Path(run.config.out_dir) / run.name).resolve())
    if dest.config_path.is_file() or not src.is_finished():
        return False
    try:
        saved = src.load_config()
        record = src.read_record()
        if result_diff(to_dict(saved), to_dict(run.config), ignore=("name",)):
            return False
    except (OSError, OodrecError):  # an unreadable trial run: train the final run instead
        return False
    cfg = replace(saved, out_dir=run.config.out_dir, name=run.name)
    header = "".join(
        line
        for line in src.config_path.read_text().splitlines(keepends=True)
        if line.startswith("#")
    )

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)  # checkpoints are replaced, never rewritten in place
        except OSError:
            shutil.copy2(a, b)

    with dest.lock("tune"):
        if dest.config_path.is_file():  # another process started it meanwhile
            return False
        dest.clear()
        for name in ("resolved.yaml", "epochs.jsonl", "resumes.json", "per_user.pt"):
            if (src.path / name).is_file():
                shutil.copy2(src.path / name, dest.path / name)
        if (src.path / "checkpoints").is_dir():
            shutil.copytree(
                src.path / "checkpoints", dest.path / "checkpoints", copy_function=link_or_copy
            )
        record["config"] = to_dict(cfg)
        dest.write_record(record)
        info = {**run.info, "copied_from": str(trial_dir)}
        write_bench_info(Job(replace(run, info=info), dest.path, "new", grid))
        dest.write_config(cfg, header)  # last: until it is there, the directory is a new run
    logger.debug(
        "%s: copied from the best trial's run %s (same config and seed)", run.name, trial_dir
    )
    return True


def final_run_name(job: StudyJob, seed: int) -> str:
    """``DATASET-METHOD-tuned-seedS``, or ``DATASET-METHOD-tuned-Nep-seedS`` with
    ``final_epochs`` N."""
    cap = job.tune.final_epochs
    tag = "tuned" if cap is None else f"tuned-{cap}ep"
    return f"{Path(job.dataset).name}-{job.method}-{tag}-seed{seed}"


def finals_done(job: StudyJob, seeds: list[int], out_dir: str | Path) -> int:
    """How many of the study's final runs (over ``seeds``) have finished (a ``record.json``)."""
    from oodrec.runs import RunDir

    return sum(RunDir(Path(out_dir) / final_run_name(job, s)).is_finished() for s in seeds)


def tuning_info(row: dict[str, Any]) -> dict[str, Any]:
    """What ``bench.json`` records of a tuned run (the report marks the row with it)."""
    return {
        "budget": row["budget"],
        "pruned": row["pruned"],
        "space": row["space"],
        "values": row["best_params"],
        "metric": f"val {row['metric']}",
        "best_value": row["best_value"],
        "study": row["study"],
    }


__all__ = ["adopt_best_trials", "final_run_name", "final_runs", "finals_done", "tuning_info"]
