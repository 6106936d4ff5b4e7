"""The Optuna studies of a search: where they are stored, how they are opened, and the config
each was searched with.

Every (dataset, method) of a grid has one study, named ``DATASET/METHOD``, in one storage
(``OUT/tune.db`` by default). A :class:`StudyJob` holds what every trial of a study needs. A
study records the config its trials start from (:data:`BASE_ATTR`); ``check_studies`` refuses
a search whose config differs from it in a key that can change results, and ``as_searched``
shows each study as it was searched.
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from oodrec.bench.grid import GridSpec
from oodrec.bench.tune.spec import Param, TuneSpec, base_config
from oodrec.config import ExperimentConfig, from_dict, stored_key, to_dict
from oodrec.errors import ConfigError, RunError

logger = logging.getLogger(__name__)

HEARTBEAT_S = 30
ATTEMPTS = 8
GRACE_S = 90
MAX_RETRY = 10
"""Times a trial whose worker was killed is queued again. Each retry continues the same run
directory from its checkpoint, so a long trial survives as many interrupted sittings."""
BASE_ATTR = "base_config"
"""The study user attribute that holds the base config of its trials (a comparable dict)."""
OPTUNA_MISSING = "oodrec tune needs Optuna: pip install 'optuna>=3.4' (or the project's dev extra)"


def study_name(dataset: str, method: str) -> str:
    """``DATASET/METHOD``."""
    return f"{Path(dataset).name}/{method}"


def storage_url(out_dir: str | Path, storage: str | None = None) -> str:
    """``storage``, else the SQLite file ``OUT/tune.db``."""
    if storage:
        return storage
    path = Path(out_dir) / "tune.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def _stable_int(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def open_study(url: str, name: str, tune: TuneSpec) -> Any:
    """Create or load the study ``name`` (TPE, median pruner, heartbeat-retried trials).

    Each trial's TPE draws are seeded by the tuning seed, the study name and the trial's number
    (``_trial_seeded_tpe``): a resumed search does not replay the random start of the first
    session, and two workers that open the study at the same moment draw different values.
    """
    try:
        import optuna
    except ImportError:
        raise ConfigError(OPTUNA_MISSING) from None
    from optuna import storages

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Workers started together race to create the schema and the study; the loser retries.
    for attempt in range(ATTEMPTS):
        try:
            with warnings.catch_warnings():
                # heartbeats are "experimental" in every Optuna since 2.8; the retry callback
                # was renamed in 4.9 (both names are handled)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # A retry keeps the killed trial's evaluations (pruning steps) and its
                # user_attrs, so it resumes the same run directory (``workers``).
                if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):
                    cb = storages.RetryHeartbeatStaleTrialCallback(
                        MAX_RETRY, inherit_intermediate_values=True
                    )
                    retry = {"heartbeat_stale_trial_callback": cb}
                else:
                    cb = storages.RetryFailedTrialCallback(
                        MAX_RETRY, inherit_intermediate_values=True
                    )
                    retry = {"failed_trial_callback": cb}
                storage = storages.RDBStorage(
                    url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, **retry
                )
            probe = optuna.create_study(
                storage=storage, study_name=name, direction="maximize", load_if_exists=True
            )
            break
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy / Optuna errors of a creation race
            if attempt + 1 == ATTEMPTS:
                raise ConfigError(f"cannot open Optuna study {name!r} in {url}: {exc}") from exc
            logger.debug("opening study %s, attempt %d: %s", name, attempt + 1, exc)
            time.sleep(0.2 * (attempt + 1))
    sampler = _trial_seeded_tpe(
        (tune.seed * 1_000_003 + _stable_int(name)) % 2**31, tune.startup_trials
    )
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=tune.startup_trials, n_warmup_steps=tune.warmup_evals
    )
    probe.sampler, probe.pruner = sampler, pruner
    return probe


_SAMPLER_CLASS: list[type] = []


def _trial_seeded_tpe(seed: int, startup_trials: int) -> Any:
    """A TPE sampler whose random state is set from ``seed`` and the trial's number before each
    trial.

    One seeded ``TPESampler`` per worker would give every worker that opens a study at the
    same moment the same random start-up values: two workers of one search each trained the
    same values (a budget of 12 held 10 distinct trials). Trial numbers are unique in the
    storage, so values seeded by them differ between workers, and a one-worker search stays
    reproducible.
    """
    import optuna

    if not _SAMPLER_CLASS:

        class TrialSeededTPE(optuna.samplers.BaseSampler):
            def __init__(self, seed: int, startup_trials: int) -> None:
                self._seed, self._startup = seed, startup_trials
                self._tpe = self._make(seed)

            def _make(self, seed: int) -> Any:
                return optuna.samplers.TPESampler(n_startup_trials=self._startup, seed=seed)

            def before_trial(self, study: Any, trial: Any) -> None:
                self._tpe = self._make((self._seed + 7919 * (trial.number + 1)) % 2**31)
                self._tpe.before_trial(study, trial)

            def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
                return self._tpe.infer_relative_search_space(study, trial)

            def sample_relative(self, study: Any, trial: Any, space: Any) -> Any:
                return self._tpe.sample_relative(study, trial, space)

            def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
                return self._tpe.sample_independent(study, trial, name, dist)

            def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
                self._tpe.after_trial(study, trial, state, values)

            def reseed_rng(self) -> None:
                self._tpe.reseed_rng()

        _SAMPLER_CLASS.append(TrialSeededTPE)
    return _SAMPLER_CLASS[0](seed, startup_trials)


def finished(study: Any) -> list[Any]:
    """Trials that count against the budget: complete or pruned."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


@dataclass(frozen=True)
class StudyJob:
    """One study to work on: what every trial needs."""

    dataset: str
    method: str
    base: ExperimentConfig
    space: dict[str, Param]
    trials: int
    trial_dir: Path
    url: str
    tune: TuneSpec


def study_jobs(
    spec: GridSpec,
    tune: TuneSpec,
    out_dir: str | Path,
    url: str,
    extra_overrides: list[str] | None = None,
) -> list[StudyJob]:
    """One job per (dataset, method) of the grid, in grid order."""
    out = Path(out_dir)
    return [
        StudyJob(
            dataset=ds,
            method=m.name,
            base=base_config(spec, ds, m.name, tune, extra_overrides),
            space=tune.space_for(m.name),
            trials=tune.trials,
            trial_dir=out / "tune" / f"{Path(ds).name}-{m.name}",
            url=url,
            tune=tune,
        )
        for ds in spec.datasets
        for m in spec.methods
    ]


def trial_run_dir(job: StudyJob, trial: Any) -> Path | None:
    """Where ``trial`` of ``job``'s study trains: the run directory its first attempt recorded,
    by name, under ``job.trial_dir`` (None for no trial, or one that has not recorded it yet).

    The storage keeps the path as that worker saw it, relative to its working directory. Only
    the name is used, so a study still finds its trials when ``oodrec tune`` runs from another
    directory, or after its output directory was moved or restored with ``oodrec archive``."""
    recorded = trial.user_attrs.get("run_dir") if trial is not None else None
    return job.trial_dir / Path(recorded).name if recorded else None


def recorded_base(job: StudyJob, study: Any) -> tuple[dict[str, Any] | None, str]:
    """The config ``job``'s study was searched with, and where it was read: the study's record
    (:data:`BASE_ATTR`), else, for a study from before the record, the ``config.yaml`` of its
    first trial run that has one (its searched keys hold that trial's values). ``(None, "")``
    for a study with neither."""
    import yaml

    from oodrec.runs import RunDir

    saved = study.user_attrs.get(BASE_ATTR)
    if saved is not None:
        return saved, f"the study's record in {job.url}"
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        run_dir = trial_run_dir(job, trial)
        path = RunDir(run_dir).config_path if run_dir else None
        if path is None or not path.is_file():
            continue
        try:
            saved = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(saved, dict):
            return saved, str(path)
    return None, ""


def _base_diff(job: StudyJob, saved: dict[str, Any] | None) -> str:
    """The keys, with both values, in which a study's searched config ``saved`` (from
    :func:`recorded_base`) and ``job.base`` differ in a way that can change results (joined;
    "" for none, or for no ``saved``). The searched keys, the run name and the execution keys
    (device, threads) may differ."""
    from oodrec.bench.runner import result_diff

    if saved is None:
        return ""
    try:
        diff = result_diff(saved, to_dict(job.base), ignore=(*map(stored_key, job.space), "name"))
    except ConfigError as exc:
        diff = [f"unreadable config: {exc}"]
    return "; ".join(diff[:4]) + (f"; ... ({len(diff)} keys)" if len(diff) > 4 else "")


def base_conflict(job: StudyJob, study: Any) -> str | None:
    """Why ``job`` may not add trials to ``study`` (:func:`_base_diff`), or None."""
    saved, where = recorded_base(job, study)
    shown = _base_diff(job, saved)
    if not shown:
        return None
    return (
        f"study {study_name(job.dataset, job.method)} was searched with another config than "
        f"this command's: {shown} (searched -> now; read from {where}). Its trials would be "
        "ranked against trials of another search: repeat the search's grid and --set options, "
        "or give a new search another --out"
    )


def _check_and_record(job: StudyJob, study: Any) -> str | None:
    """:func:`base_conflict`; without one, record ``job.base`` in a study that has no record."""
    problem = base_conflict(job, study)
    if problem is None and BASE_ATTR not in study.user_attrs:
        from oodrec.bench.runner import _comparable

        study.set_user_attr(BASE_ATTR, _comparable(to_dict(job.base)))
    return problem


def check_studies(jobs: list[StudyJob]) -> None:
    """Create or open every study, refuse the search if any was searched with another config
    (every conflict in one error), and record the config of those that have no record yet.

    Raises:
        RunError: a study's recorded config differs from its job's.
    """
    problems = []
    for job in jobs:
        study = open_study(job.url, study_name(job.dataset, job.method), job.tune)
        problem = _check_and_record(job, study)
        if problem:
            problems.append(problem)
    if problems:
        raise RunError("\n".join(problems))


def as_searched(jobs: list[StudyJob]) -> tuple[list[StudyJob], list[str]]:
    """For views of a search (``--status``): each job with its study's searched config where
    that differs from the job's, and a note per such study. Nothing is written."""
    out, notes = [], []
    for job in jobs:
        study = open_study(job.url, study_name(job.dataset, job.method), job.tune)
        saved, _ = recorded_base(job, study)
        shown = _base_diff(job, saved)
        if saved is None or not shown:
            out.append(job)
            continue
        note = f"{study_name(job.dataset, job.method)} was searched with {shown} (searched -> now)"
        try:
            base = from_dict(ExperimentConfig, saved)
        except ConfigError:
            out.append(job)
            notes.append(f"{note}; shown with this command's config")
            continue
        out.append(replace(job, base=replace(base, out_dir=job.base.out_dir)))
        notes.append(f"{note}; shown as it was searched")
    return out, notes


__all__ = [
    "BASE_ATTR",
    "GRACE_S",
    "HEARTBEAT_S",
    "StudyJob",
    "as_searched",
    "base_conflict",
    "check_studies",
    "finished",
    "open_study",
    "recorded_base",
    "storage_url",
    "study_jobs",
    "study_name",
    "trial_run_dir",
]
