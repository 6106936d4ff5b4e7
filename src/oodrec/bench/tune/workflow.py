"""The ``oodrec tune`` workflow in one call: search, summary, final runs, adoption of the best
trials' runs.

``run_tune`` opens (or creates) the studies of a grid's ``tune:`` section, runs the search
until every study has its budget, summarizes the studies (and writes the trials CSV and the
estimator tables when asked), then runs the best configuration of each study over the grid's
seeds, the final run that repeats a best trial being a copy of that trial's run. With
``status`` it only summarizes, each study as it was searched. It returns a :class:`TuneOutcome`
and prints nothing; ``on_stage`` hands the outcome out as each stage completes, so that a
caller can show the summary before the final runs train.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from oodrec.bench.executors import run_grid
from oodrec.bench.grid import GridRun, load_grid
from oodrec.bench.runner import RunOutcome
from oodrec.bench.tune.finals import adopt_best_trials, final_runs, finals_done
from oodrec.bench.tune.inspection import (
    running_trials,
    summarize,
    trial_rows,
    write_search_estimators,
    write_trials_csv,
)
from oodrec.bench.tune.spec import parse_tune
from oodrec.bench.tune.study import StudyJob, as_searched, check_studies, storage_url, study_jobs
from oodrec.bench.tune.workers import run_workers
from oodrec.bench.workflow import Subset
from oodrec.errors import ConfigError

Stage = Literal["studies", "summary", "finals"]
"""``studies``: the studies are known (``url``, ``jobs``, ``notes``), before the search;
``summary``: the search is over and summarized (``rows`` to ``running``); ``finals``: the final
runs are made and the best trials' runs adopted, before any final run trains."""


@dataclass(frozen=True)
class TuneOptions:
    """The options of ``oodrec tune``.

    Attributes:
        subset: the studies (datasets, methods) and the final runs' seeds to work on.
        trials: budget per study (None: the grid's ``tune.trials``).
        final_epochs: epoch cap of the final runs (None: the grid's ``tune.final_epochs``).
        out: directory of the trials and final runs (None: the grid's ``out_dir``).
        storage: Optuna storage URL (None: ``sqlite:///OUT/tune.db``).
        overrides: dotted ``KEY=VALUE`` overrides applied to every trial and final run.
        status: only summarize the studies, each as it was searched; nothing trains.
        no_final: search only, no final runs.
        executor: ``local`` or ``ray``, for the search's workers and the final runs.
        workers: workers sharing the studies, then the final runs.
        address: Ray address.
        cpus_per_worker: CPUs per Ray task.
        trials_csv: also write every trial to this CSV file.
        estimators: also write which trial each val estimator would pick to this Markdown file.
        show_progress: draw a progress bar over the final runs.
    """

    subset: Subset = field(default_factory=Subset)
    trials: int | None = None
    final_epochs: int | None = None
    out: str | None = None
    storage: str | None = None
    overrides: tuple[str, ...] = ()
    status: bool = False
    no_final: bool = False
    executor: Literal["local", "ray"] = "local"
    workers: int = 1
    address: str | None = None
    cpus_per_worker: int = 1
    trials_csv: str | None = None
    estimators: str | None = None
    show_progress: bool = True


@dataclass
class TuneOutcome:
    """What ``run_tune`` did, filled in stage by stage (:data:`Stage`).

    Attributes:
        out_dir: directory of the trials and final runs.
        url: the studies' storage.
        budget: finished trials per study.
        seeds: the final runs' seeds.
        jobs: one per study, in grid order (with ``status``: as each study was searched).
        notes: with ``status``, one per study shown as it was searched rather than with this
            call's config.
        rows: ``inspection.summarize`` of the studies.
        finals_done: per study, its final runs that have finished, of ``len(seeds)``.
        trials_csv: the trials CSV written, else None.
        estimators: the estimator tables written, else None.
        running: with ``status``, the running trials (``inspection.running_trials``).
        final_runs: the final runs (none with ``status`` or ``no_final``).
        adopted: ``(final run name, trial run directory)`` of each final run copied from its
            study's best trial.
        outcomes: the final runs' outcomes; None when no final runs were run.
        interrupted: Ctrl-C stopped the search (rerunning the command continues it).
    """

    out_dir: str
    url: str
    budget: int
    seeds: list[int]
    jobs: list[StudyJob]
    notes: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    finals_done: list[int] = field(default_factory=list)
    trials_csv: Path | None = None
    estimators: Path | None = None
    running: list[dict[str, Any]] = field(default_factory=list)
    final_runs: list[GridRun] = field(default_factory=list)
    adopted: list[tuple[str, str]] = field(default_factory=list)
    outcomes: list[RunOutcome] | None = None
    interrupted: bool = False

    @property
    def capped(self) -> list[tuple[str, str]]:
        """``(study, where)`` of each study whose best trial the epoch cap ended."""
        return [(r["study"], r["best_capped"]) for r in self.rows if r["best_capped"]]

    @property
    def failed(self) -> list[RunOutcome]:
        """The final runs that failed."""
        return [o for o in self.outcomes or [] if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        """130 when interrupted, 1 when a final run failed, else 0."""
        return 130 if self.interrupted else 1 if self.failed else 0


def run_tune(
    grid_path: str | Path,
    options: TuneOptions,
    on_stage: Callable[[Stage, TuneOutcome], None] | None = None,
) -> TuneOutcome:
    """Search the grid file's ``tune:`` section, summarize it, then run the final runs.

    Args:
        grid_path: the grid file (it needs a ``tune:`` section).
        options: see :class:`TuneOptions`.
        on_stage: called with the stage's name and the outcome as each stage completes.

    Returns:
        The outcome. The search stops at Ctrl-C (``interrupted``); finished trials are kept.

    Raises:
        ConfigError: a bad grid, ``tune:`` section or option; a final run asked of a study that
            has not finished its budget.
        RunError: a study was searched with another config (nothing trains), or a final run's
            directory holds another config.
    """
    from oodrec.paths import check_out_dir

    counts = {
        "--workers": options.workers,
        "--trials": options.trials,
        "--final-epochs": options.final_epochs,
        "--cpus-per-worker": options.cpus_per_worker,
    }
    bad = {k: v for k, v in counts.items() if v is not None and v < 1}
    if bad:
        raise ConfigError(", ".join(f"{k} must be >= 1, got {v}" for k, v in bad.items()))
    spec = options.subset.of(load_grid(grid_path))
    tune = parse_tune(spec)
    if options.trials is not None:
        tune = replace(tune, trials=options.trials)
    if options.final_epochs is not None:
        tune = replace(tune, final_epochs=options.final_epochs)
    out_dir = options.out or spec.out_dir
    check_out_dir(out_dir, "--out" if options.out else f"{grid_path}: out_dir")
    url = storage_url(out_dir, options.storage)
    jobs = study_jobs(spec, tune, out_dir, url, list(options.overrides))
    outcome = TuneOutcome(out_dir, url, tune.trials, list(spec.seeds), jobs)

    def stage(name: Stage) -> None:
        if on_stage is not None:
            on_stage(name, outcome)

    if options.status:  # a view: each study as it was searched, whatever this call's overrides
        outcome.jobs, outcome.notes = as_searched(jobs)
        stage("studies")
    else:
        stage("studies")
        if options.executor == "local":  # a Ray worker checks on the machine that trains
            from oodrec.train.tracking import check_tracking

            for track in {job.base.track for job in jobs}:
                check_tracking(track)
        # create the storage and the studies once, before any worker starts, and refuse to add
        # trials to a study searched with another config
        check_studies(jobs)
        try:
            run_workers(
                jobs, options.executor, options.workers, options.address, options.cpus_per_worker
            )
        except KeyboardInterrupt:
            outcome.interrupted = True
            return outcome
    jobs = outcome.jobs
    outcome.rows = summarize(jobs)
    outcome.finals_done = [finals_done(job, spec.seeds, out_dir) for job in jobs]
    if options.trials_csv:
        outcome.trials_csv = write_trials_csv(options.trials_csv, trial_rows(jobs))
    if options.estimators:
        outcome.estimators = write_search_estimators(options.estimators, jobs)
    if options.status:
        outcome.running = running_trials(jobs)
    stage("summary")
    if options.status or options.no_final:
        return outcome
    outcome.final_runs = final_runs(spec, jobs, out_dir)
    outcome.adopted = adopt_best_trials(outcome.final_runs, outcome.rows, grid=str(grid_path))
    stage("finals")
    # the final runs use the search's workers: local processes, or Ray tasks on the cluster
    outcome.outcomes = run_grid(
        outcome.final_runs,
        executor=options.executor,
        workers=options.workers,
        address=options.address,
        cpus_per_run=options.cpus_per_worker,
        grid=str(grid_path),
        show_progress=options.show_progress,
    )
    return outcome


__all__ = ["Stage", "TuneOptions", "TuneOutcome", "run_tune"]
