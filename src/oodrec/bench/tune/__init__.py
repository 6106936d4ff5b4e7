"""``oodrec tune``: equal-budget hyperparameter search on validation, with Optuna.

Every (dataset, method) of a grid gets one Optuna study (TPE sampler, median pruner on the val
selection metric) of the same number of finished trials, stored in one SQLite file by default
(``OUT/tune.db``), so a killed search resumes where it stopped and several workers (local
processes, or Ray tasks) share a study. Then the best configuration of each study runs over the
grid's seeds, as ordinary resumable grid runs named ``DATASET-METHOD-tuned-seedN``, whose
``bench.json`` carries the budget, the search space and the chosen values for the report. The
final run that repeats the best trial (same config, seed ``tune.seed``) is a copy of the trial's
run, not a second training (``adopt_best_trials``).

The grid's ``tune:`` section::

    tune:
      trials: 12            # finished (complete or pruned) trials per study, the budget
      seed: 1               # training seed of every trial (the final runs use the grid seeds)
      startup_trials: 4     # random trials before TPE models the space; no pruning before
      warmup_evals: 2       # evaluations of a trial before it may be pruned
      final_epochs: 120     # optional: a larger epoch cap for the final runs only (below)
      space:                # every method
        train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
        train.l2: {low: 1.0e-6, high: 1.0e-3, log: true}
      methods:              # per method name, added to (or replacing keys of) ``space``
        cnsdiff: {sampler.cl_weight: {low: 0.03, high: 1.0, log: true}}

A parameter is ``{low, high}`` (float; ``log: true`` for a log scale; ``type: int`` for
integers) or ``{choices: [...]}``. Selection inside each trial, and the value a trial reports,
is the run's own ``train.select_metric`` on val: tuning never reads a test split.

``final_epochs`` (or ``oodrec tune --final-epochs``) gives the final runs a larger epoch cap than
the trials, for methods whose best trials ran into it; early stopping on val still ends them. Only
the cap changes: a sampler schedule that follows ``train.epochs`` (CNSDiff's curriculum) keeps the
trials' horizon. Those runs are named ``DATASET-METHOD-tuned-Nep-seedS`` and labelled
``METHOD (tuned, T trials, N-epoch finals)``, next to (not over) the runs at the trials' cap.

Trial run directories: ``OUT/tune/DATASET-METHOD/trial-NNNN``. A trial whose process died is
failed by Optuna's heartbeat after ``GRACE_S`` seconds and retried with the same values.

A study records the config its trials start from (``BASE_ATTR``). A later ``oodrec tune`` whose
grid or ``--set`` options change a result-bearing key of it (the selection metric, the epoch
cap, a fixed option) is refused before anything trains (``check_studies``): its trials would be
ranked against trials of another search. ``--status`` shows such a study as it was searched.

The modules: ``spec`` (the ``tune:`` section and the configs built from it), ``study`` (the
studies, their storage and the config each was searched with), ``workers`` (the trials and the
workers that run them), ``inspection`` (summaries and other views of a search), ``finals`` (the
final runs) and ``workflow`` (``run_tune``: all of it in one call, what ``oodrec tune`` runs).
"""

from __future__ import annotations

from oodrec.bench.tune.finals import (
    adopt_best_trials,
    final_run_name,
    final_runs,
    finals_done,
    tuning_info,
)
from oodrec.bench.tune.inspection import (
    TRIAL_COLUMNS,
    format_running,
    running_trials,
    search_estimator_tables,
    summarize,
    trial_rows,
    write_search_estimators,
    write_trials_csv,
)
from oodrec.bench.tune.spec import (
    Param,
    TuneSpec,
    base_config,
    parse_tune,
    with_epoch_cap,
    with_params,
)
from oodrec.bench.tune.study import (
    BASE_ATTR,
    StudyJob,
    as_searched,
    base_conflict,
    check_studies,
    finished,
    open_study,
    recorded_base,
    storage_url,
    study_jobs,
    study_name,
    trial_run_dir,
)
from oodrec.bench.tune.workers import run_workers, settle, tune_worker, work_on
from oodrec.bench.tune.workflow import TuneOptions, TuneOutcome, run_tune

__all__ = [
    "BASE_ATTR",
    "TRIAL_COLUMNS",
    "Param",
    "StudyJob",
    "TuneOptions",
    "TuneOutcome",
    "TuneSpec",
    "adopt_best_trials",
    "as_searched",
    "base_config",
    "base_conflict",
    "check_studies",
    "final_run_name",
    "final_runs",
    "finals_done",
    "finished",
    "format_running",
    "open_study",
    "parse_tune",
    "recorded_base",
    "run_tune",
    "run_workers",
    "running_trials",
    "search_estimator_tables",
    "settle",
    "storage_url",
    "study_jobs",
    "study_name",
    "summarize",
    "trial_rows",
    "trial_run_dir",
    "tune_worker",
    "tuning_info",
    "with_epoch_cap",
    "with_params",
    "work_on",
    "write_search_estimators",
    "write_trials_csv",
]
