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
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from oodrec.bench.grid import GridRun, GridSpec, _check_method, _method_config, set_path
from oodrec.config import ExperimentConfig, apply_overrides, from_dict, stored_key, to_dict
from oodrec.errors import ConfigError, RunError

logger = logging.getLogger(__name__)

TUNE_KEYS = ("trials", "seed", "startup_trials", "warmup_evals", "final_epochs", "space", "methods")
PARAM_KEYS = ("low", "high", "log", "type", "choices")
HEARTBEAT_S = 30
ATTEMPTS = 8
GRACE_S = 90
MAX_RETRY = 10
"""Times a trial whose worker was killed is queued again. Each retry continues the same run
directory from its checkpoint, so a long trial survives as many interrupted sittings."""
BASE_ATTR = "base_config"
"""The study user attribute that holds the base config of its trials (a comparable dict)."""
OPTUNA_MISSING = "oodrec tune needs Optuna: pip install 'optuna>=3.4' (or the project's dev extra)"


@dataclass(frozen=True)
class Param:
    """One searched setting.

    Attributes:
        key: dotted config key (``train.lr``, ``sampler.cl_weight``, ``model.tau``).
        low, high: bounds of a numeric range; log: log scale; kind: ``float`` or ``int``.
        choices: the values of a categorical setting (then ``kind`` is ``categorical``).
    """

    key: str
    kind: str = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The trial's value of this setting."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)

    def describe(self) -> str:
        """``train.lr in [0.0001, 0.01] (log)`` or ``x in {a, b}``."""
        if self.kind == "categorical":
            return f"{self.key} in {{{', '.join(map(str, self.choices))}}}"
        scale = " (log)" if self.log else ""
        kind = " int" if self.kind == "int" else ""
        return f"{self.key} in [{self.low:g}, {self.high:g}]{kind}{scale}"


@dataclass(frozen=True)
class TuneSpec:
    """The parsed ``tune:`` section of a grid (see the module docstring)."""

    trials: int = 12
    seed: int = 1
    startup_trials: int = 4
    warmup_evals: int = 2
    space: dict[str, Param] = field(default_factory=dict)
    methods: dict[str, dict[str, Param]] = field(default_factory=dict)
    final_epochs: int | None = None
    """Epoch cap of the final runs (None: the trials' ``train.epochs``)."""

    def space_for(self, method: str) -> dict[str, Param]:
        """The search space of one method: the shared space, updated by the method's own."""
        return {**self.space, **self.methods.get(method, {})}


def _param(key: str, raw: Any, where: str) -> Param:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {key} must be a mapping {{low, high}} or {{choices}}")
    unknown = sorted(set(raw) - set(PARAM_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: {key} has unknown key(s) {', '.join(unknown)}; "
            f"valid: {', '.join(PARAM_KEYS)}"
        )
    if "choices" in raw:
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: {key}.choices must be a non-empty list")
        return Param(key, "categorical", choices=tuple(choices))
    kind = str(raw.get("type", "float"))
    if kind not in ("float", "int"):
        raise ConfigError(f"{where}: {key}.type must be float or int, got {kind!r}")
    try:
        low, high = float(raw["low"]), float(raw["high"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}: {key} needs numeric low and high, got {raw!r}") from None
    log = bool(raw.get("log", False))
    if not low < high or (log and low <= 0) or not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(
            f"{where}: {key} needs low < high (and low > 0 on a log scale), got {low}, {high}"
        )
    return Param(key, kind, low, high, log)


def parse_tune(spec: GridSpec) -> TuneSpec:
    """The grid's ``tune:`` section, checked against the grid's methods and configs.

    Raises:
        ConfigError: no ``tune:`` section, unknown keys, bad ranges, a method name the grid does
            not have, a grid with a ``sweep`` (tuning replaces it), or a searched key the config
            rejects (tried with the range's low end); the message names the grid file.
    """
    where = f"{spec.source}: tune"
    raw = spec.tune
    if not raw:
        raise ConfigError(f"{spec.source}: no 'tune:' section; see `oodrec tune --help`")
    if spec.sweep:
        raise ConfigError(f"{spec.source}: a grid with a 'sweep' cannot be tuned (drop the sweep)")
    unknown = sorted(set(raw) - set(TUNE_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(TUNE_KEYS)}"
        )
    ints = {}
    for key, default, least in (
        ("trials", 12, 1),
        ("seed", 1, 0),
        ("startup_trials", 4, 0),
        ("warmup_evals", 2, 0),
        ("final_epochs", None, 1),  # optional
    ):
        value = raw.get(key, default)
        if value is None and default is None:
            ints[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{where}.{key} must be an integer >= {least}, got {value!r}")
        ints[key] = value
    space_raw = raw.get("space") or {}
    if not isinstance(space_raw, dict):
        raise ConfigError(f"{where}.space must be a mapping of key -> range")
    space = {str(k): _param(str(k), v, f"{where}.space") for k, v in space_raw.items()}
    methods_raw = raw.get("methods") or {}
    if not isinstance(methods_raw, dict):
        raise ConfigError(f"{where}.methods must be a mapping of method name -> space")
    names = {m.name for m in spec.methods}
    methods: dict[str, dict[str, Param]] = {}
    for name, sub in methods_raw.items():
        if name not in names:
            raise ConfigError(
                f"{where}.methods: {name!r} is not a method of the grid "
                f"({', '.join(sorted(names))})"
            )
        if not isinstance(sub, dict):
            raise ConfigError(f"{where}.methods.{name} must be a mapping of key -> range")
        methods[name] = {
            str(k): _param(str(k), v, f"{where}.methods.{name}") for k, v in sub.items()
        }
    tune = TuneSpec(space=space, methods=methods, **ints)
    from oodrec.bench.grid import warn_inert
    from oodrec.methods import inert_settings

    inert: dict[tuple[str, str], str] = {}
    for method in spec.methods:
        if not tune.space_for(method.name):
            raise ConfigError(f"{where}: method {method.name!r} has an empty search space")
        cfg = base_config(spec, spec.datasets[0], method.name, tune)
        inert.update({(method.name, k): why for k, why in inert_settings(cfg).items()})
        for p in tune.space_for(method.name).values():
            probe = p.choices[0] if p.kind == "categorical" else p.low
            try:
                probe_cfg = set_path(cfg, p.key, int(probe) if p.kind == "int" else probe)
                _check_method(probe_cfg)
            except ConfigError as exc:
                raise ConfigError(f"{where}: method {method.name!r}, {p.key}: {exc}") from None
            why = inert_settings(probe_cfg).get(p.key)
            if why:  # a searched dimension that cannot matter spends trials for nothing
                inert[(method.name, f"{p.key} (searched)")] = why
    warn_inert(where, inert)
    return tune


# ---------------------------------------------------------------------------- configs and names


def base_config(
    spec: GridSpec,
    dataset: str,
    method: str,
    tune: TuneSpec,
    extra_overrides: list[str] | None = None,
) -> ExperimentConfig:
    """The config a trial of (dataset, method) starts from: the grid's, at the tuning seed."""
    m = next(x for x in spec.methods if x.name == method)
    cfg = _method_config(set_path(spec.base, "data.dataset", dataset), m)
    cfg = apply_overrides(cfg, list(extra_overrides or []))
    return replace(cfg, seed=tune.seed)


def with_params(cfg: ExperimentConfig, params: dict[str, Any]) -> ExperimentConfig:
    """``cfg`` with the trial's values set (typed values, not strings)."""
    for key, value in sorted(params.items()):
        cfg = set_path(cfg, key, value)
    _check_method(cfg)
    return cfg


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
                # user_attrs, so it resumes the same run directory (see _objective).
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


class _Surplus(Exception):
    """A trial started by a worker after others had already claimed the whole budget."""


class _QuietSurplus(logging.Filter):
    """Drops Optuna's two warnings (one with a traceback) about a trial that ended in
    :class:`_Surplus`. That is the normal way a worker learns the budget is claimed, and the trial
    counts for nothing; other failed trials are still logged."""

    def __init__(self) -> None:
        super().__init__()
        self._numbers: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if not msg.startswith("Trial "):
            return True
        number = msg.split(" ", 2)[1]
        if "_Surplus()" in msg:
            self._numbers.add(number)
            return False
        return number not in self._numbers


# ---------------------------------------------------------------------------- trials


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


def _objective(job: StudyJob):
    from optuna import TrialPruned
    from optuna.trial import TrialState

    from oodrec.bench.runner import BENCH_FILE, _load_dataset, plan_run
    from oodrec.runs import RunDir, atomic_write_text
    from oodrec.train.loop import train

    metric = job.base.train.select_metric

    def objective(trial: Any) -> float:
        objective.surplus = False  # type: ignore[attr-defined]
        claimed = trial.study.get_trials(
            deepcopy=False,
            states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING),
        )
        if sum(t.number < trial.number for t in claimed) >= job.trials:
            trial.set_user_attr("surplus", True)
            objective.surplus = True  # type: ignore[attr-defined]
            raise _Surplus()
        params = {key: p.suggest(trial) for key, p in job.space.items()}
        cfg = with_params(job.base, params)
        # A retry of a trial whose worker was killed inherits its user_attrs (the same params
        # and run directory) and its evaluations, and continues that run from its checkpoint.
        retried = trial_run_dir(job, trial)
        run_dir = retried or job.trial_dir / f"trial-{trial.number:04d}"
        cfg = replace(cfg, out_dir=str(run_dir.parent), name=run_dir.name)
        trial.set_user_attr("run_dir", str(run_dir))
        every = cfg.train.eval_every

        def report(epoch: int, means: dict[str, float]) -> None:
            # pruning steps count evaluations (eval_every may be > 1; the last epoch is always
            # evaluated), numbered from the epoch so that a resumed run continues the count
            step = epoch // every
            with warnings.catch_warnings():  # a step the killed attempt reported already
                warnings.filterwarnings("ignore", message=".*already reported")
                trial.report(means[metric], step=step)
            # the pruner never prunes before warmup_evals; skip its storage reads until then
            if step >= job.tune.warmup_evals and trial.should_prune():
                raise TrialPruned(f"val {metric} {means[metric]:.4f} at epoch {epoch}")

        action = "new"
        if retried:
            run = GridRun(run_dir.name, cfg, job.method, job.dataset, cfg.seed, dict(params))
            action = plan_run(run, run_dir, force=True)
            logger.info("trial %d continues %s (%s)", trial.number, run_dir, action)
        if action == "skip":  # the run finished; only the trial's result was lost
            return float(RunDir(run_dir).read_record()["metrics"]["val"][metric])
        if action == "restart":
            RunDir(run_dir).clear()
        run_dir.mkdir(parents=True, exist_ok=True)
        trial_info = {"study": trial.study.study_name, "number": trial.number, "params": params}
        atomic_write_text(run_dir / BENCH_FILE, json.dumps({"trial": trial_info}, indent=2))
        result = train(
            cfg,
            _load_dataset(cfg),
            run_dir=run_dir,
            resume=action == "resume",
            on_evaluate=report,
            command="tune",
        )
        return float(result.metrics["val"][metric])

    objective.surplus = False  # type: ignore[attr-defined]
    return objective


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


def work_on(job: StudyJob) -> dict[str, Any]:
    """Run trials of one study until its budget is finished or claimed by other workers.

    Returns:
        ``{"study", "finished", "ran"}``: the study's finished trials, and this call's trials.

    Raises:
        RunError: the study was searched with another config (:func:`base_conflict`).
    """
    name = study_name(job.dataset, job.method)
    study = open_study(job.url, name, job.tune)
    problem = _check_and_record(job, study)
    if problem:
        raise RunError(problem)
    objective = _objective(job)
    ran = 0
    optuna_log = logging.getLogger("optuna.study._optimize")
    quiet = _QuietSurplus()
    optuna_log.addFilter(quiet)
    try:
        while len(finished(study)) < job.trials:
            try:
                study.optimize(objective, n_trials=1, catch=(_Surplus,))
            finally:
                surplus = objective.surplus  # type: ignore[attr-defined]
            if surplus:
                break  # the rest of the budget is running in other workers
            ran += 1
    finally:
        optuna_log.removeFilter(quiet)
    return {"study": name, "finished": len(finished(study)), "ran": ran}


def _running(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def settle(jobs: list[StudyJob], wait_s: float | None = None) -> None:
    """Fill the budget of studies that a killed worker left short.

    A worker killed outright (SIGTERM, a lost node) leaves its trial RUNNING. Such a trial counts
    as claimed, so the other workers move on and the study stays one trial short. Here each
    short study waits for its RUNNING trials: they finish (live, in another worker), or their
    heartbeat goes stale after the grace period and Optuna fails them (the retry callback queues
    the same parameters again). Then the worker trains what is missing. Waiting stops after
    ``wait_s`` (default: the grace period plus two heartbeats), when only live trials of other
    workers are left.
    """
    import optuna

    deadline = time.monotonic() + (GRACE_S + 2 * HEARTBEAT_S if wait_s is None else wait_s)
    for job in jobs:
        study = open_study(job.url, study_name(job.dataset, job.method), job.tune)
        while len(finished(study)) < job.trials:
            with warnings.catch_warnings():  # "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            if len(finished(study)) + len(_running(study)) < job.trials:
                work_on(job)  # unclaimed budget: run it here
                continue
            if time.monotonic() > deadline:
                break  # live trials of other workers; `oodrec tune` again picks up the rest
            time.sleep(min(HEARTBEAT_S, 5.0))


def tune_worker(jobs: list[StudyJob], threads: int | None = None) -> list[dict[str, Any]]:
    """One worker: every study in turn (workers share studies through the storage), then
    :func:`settle` for studies a killed worker left short."""
    if threads:
        from oodrec._threads import apply_threads

        apply_threads(threads)
    out = [work_on(job) for job in jobs]
    settle(jobs)
    return out


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


# ----------------------------------------------------------------- summary and final runs


def summarize(jobs: list[StudyJob]) -> list[dict[str, Any]]:
    """Per study: budget, finished / pruned counts, best value and values (None before any), and
    ``best_capped``: where the epoch cap ended the best trial's run (None when it did not)."""
    from optuna.trial import TrialState

    rows = []
    for job in jobs:
        study = open_study(job.url, study_name(job.dataset, job.method), job.tune)
        done = finished(study)
        complete = [t for t in done if t.state == TrialState.COMPLETE]
        best = max(complete, key=lambda t: t.value) if complete else None
        best_dir = trial_run_dir(job, best)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        rows.append(
            {
                "study": study_name(job.dataset, job.method),
                "running": len(running),
                "dataset": job.dataset,
                "method": job.method,
                "budget": job.trials,
                "finished": len(done),
                "pruned": len(done) - len(complete),
                "metric": job.base.train.select_metric,
                "best_value": best.value if best else None,
                "best_params": dict(best.params) if best else None,
                "best_trial": best.number if best else None,
                "best_run_dir": str(best_dir) if best_dir else None,
                "best_capped": _capped_at(best_dir),
                "space": [p.describe() for p in job.space.values()],
            }
        )
    return rows


def trial_run_dir(job: StudyJob, trial: Any) -> Path | None:
    """Where ``trial`` of ``job``'s study trains: the run directory its first attempt recorded,
    by name, under ``job.trial_dir`` (None for no trial, or one that has not recorded it yet).

    The storage keeps the path as that worker saw it, relative to its working directory. Only
    the name is used, so a study still finds its trials when ``oodrec tune`` runs from another
    directory, or after its output directory was moved or restored with ``oodrec archive``."""
    recorded = trial.user_attrs.get("run_dir") if trial is not None else None
    return job.trial_dir / Path(recorded).name if recorded else None


def _trial_epochs(run_dir: str | Path | None) -> list[dict[str, Any]]:
    """The epoch rows a trial's run directory holds so far (none when it has no log yet, or the
    log cannot be read: a status view never fails on one trial)."""
    from oodrec.errors import OodrecError
    from oodrec.runs import RunDir

    if not run_dir or not RunDir(run_dir).epochs_path.is_file():
        return []
    try:
        return RunDir(run_dir).read_epochs()
    except (OSError, OodrecError):
        return []


def running_trials(jobs: list[StudyJob], now: float | None = None) -> list[dict[str, Any]]:
    """The RUNNING trials of each study and how far their runs have got, from their run
    directories: ``study``, ``number``, ``epochs`` done of ``cap``, the last ``val`` of the
    selection metric and the ``best`` so far, median ``epoch_s``, and ``idle_s``, the seconds
    since the run last wrote an epoch (a large value with no live worker means a killed one,
    whose trial the next ``oodrec tune`` continues)."""
    import statistics

    from optuna.trial import TrialState

    from oodrec.runs import RunDir

    now = time.time() if now is None else now
    out = []
    for job in jobs:
        study = open_study(job.url, study_name(job.dataset, job.method), job.tune)
        metric = f"{job.base.train.select_on}/{job.base.train.select_metric}"
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            run_dir = trial_run_dir(job, trial)
            rows = _trial_epochs(run_dir)
            vals = [r[metric] for r in rows if metric in r]
            secs = [r["epoch_seconds"] for r in rows[-5:] if "epoch_seconds" in r]
            out.append(
                {
                    "study": study_name(job.dataset, job.method),
                    "number": trial.number,
                    "epochs": len(rows),
                    "cap": job.base.train.epochs,
                    "metric": job.base.train.select_metric,
                    "val": vals[-1] if vals else None,
                    "best": max(vals) if vals else None,
                    "epoch_s": statistics.median(secs) if secs else None,
                    "idle_s": now - RunDir(run_dir).epochs_path.stat().st_mtime if rows else None,
                }
            )
    return out


TRIAL_COLUMNS = ("study", "trial", "state", "value", "epochs", "best_epoch", "run_dir")


def trial_rows(jobs: list[StudyJob]) -> list[dict[str, Any]]:
    """Every trial of each study, for an audit of the search (``oodrec tune --trials-csv``):
    ``study``, ``trial`` number, ``state`` (complete, pruned, running, fail, waiting), ``value``
    (val selection metric of the selected epoch; the last reported one for a pruned trial),
    ``epochs`` trained, ``best_epoch`` and ``run_dir``, then one column per searched key."""
    from oodrec.runs import RunDir

    out = []
    for job in jobs:
        study = open_study(job.url, study_name(job.dataset, job.method), job.tune)
        for trial in study.get_trials(deepcopy=False):
            if trial.user_attrs.get("surplus"):
                continue  # a worker's claim after the budget was full: it trained nothing
            value = trial.value
            if value is None and trial.intermediate_values:
                value = trial.intermediate_values[max(trial.intermediate_values)]
            run_dir = trial_run_dir(job, trial) or ""
            epochs = best = None
            if run_dir and RunDir(run_dir).epochs_path.is_file():
                rows = _trial_epochs(run_dir)
                epochs = len(rows)
                best = max((r["epoch"] for r in rows if r.get("improved")), default=None)
            row = {
                "study": study_name(job.dataset, job.method),
                "trial": trial.number,
                "state": trial.state.name.lower(),
                "value": value,
                "epochs": epochs,
                "best_epoch": best,
                "run_dir": str(run_dir),
            }
            row.update({key: trial.params.get(key) for key in job.space})
            out.append(row)
    return out


def write_trials_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` (``trial_rows``) as CSV; the searched keys of every study become columns."""
    import csv
    import io

    from oodrec.runs import atomic_write_text

    keys = list(TRIAL_COLUMNS)
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in keys})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, buf.getvalue())
    return out


def search_estimator_tables(jobs: list[StudyJob], split: str = "ood_test") -> list[Any]:
    """Which trial and epoch each val estimator would pick in each study, judged on ``split``
    (``estimator_check.search_rows``), for NDCG@20 and Recall@20. Every trial with an epoch log
    counts (complete, pruned, running). Empty when no trial logged the estimators."""
    from optuna.trial import TrialState

    from oodrec.bench.estimator_check import search_rows, search_table

    studies: dict[str, list[tuple[str, list[dict[str, Any]]]]] = {}
    for job in jobs:
        study = open_study(job.url, study_name(job.dataset, job.method), job.tune)
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        trials = [
            (f"trial {t.number}", _trial_epochs(trial_run_dir(job, t)))
            for t in study.get_trials(deepcopy=False, states=states)
        ]
        studies[study_name(job.dataset, job.method)] = [(n, e) for n, e in trials if e]
    metrics = sorted({job.base.train.select_metric.split("_")[-1] for job in jobs})
    selection = "; ".join(sorted({f"search on val {j.base.train.select_metric}" for j in jobs}))
    tables = []
    for metric in dict.fromkeys(["ndcg@20", "recall@20", *metrics]):
        rows = search_rows(studies, metric, split)
        if rows:
            tables.append(search_table(rows, selection))
    return tables


def write_search_estimators(path: str | Path, jobs: list[StudyJob]) -> Path:
    """``search_estimator_tables`` as Markdown in ``path`` (written atomically)."""
    from oodrec.bench.render import to_markdown
    from oodrec.runs import atomic_write_text

    tables = search_estimator_tables(jobs)
    text = (
        "\n".join(to_markdown(t) for t in tables) if tables else "no trial logged the estimators\n"
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    return out


def format_running(row: dict[str, Any]) -> str:
    """One line of ``oodrec tune --status`` for a running trial."""
    parts = [f"  {row['study']} trial {row['number']}: epoch {row['epochs']} of {row['cap']}"]
    if row["val"] is not None:
        parts.append(f"val {row['metric']} {row['val']:.4f} (best {row['best']:.4f})")
    if row["epoch_s"] is not None:
        sec = row["epoch_s"]
        parts.append(f"{sec:.0f} s/epoch" if sec >= 10 else f"{sec:.2g} s/epoch")
    if row["idle_s"] is not None:
        parts.append(f"last epoch written {row['idle_s']:.0f} s ago")
    return ", ".join(parts)


def _capped_at(run_dir: Path | None) -> str | None:
    """``best epoch B of N`` when the epoch cap ended the trial run in ``run_dir``
    (``RunRecord.capped``), else None (also for no trial, or a run directory that is gone)."""
    from oodrec.bench.records import RunRecord
    from oodrec.errors import RunError
    from oodrec.runs import RunDir

    if run_dir is None:
        return None
    try:
        record = RunDir(run_dir).read_record()
    except (OSError, RunError):
        return None
    if not RunRecord(Path(run_dir), record).capped:
        return None
    return f"best epoch {record['best_epoch']} of {record['config']['train']['epochs']}"


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


def with_epoch_cap(cfg: ExperimentConfig, epochs: int) -> ExperimentConfig:
    """``cfg`` with ``train.epochs = epochs`` and nothing else changed: a sampler schedule whose
    horizon follows ``train.epochs`` (``NegativeSampler.horizon_option`` left at None) is pinned to
    the old cap.

    Raises:
        ConfigError: ``epochs`` below the trials' cap (the final runs would train less).
    """
    old = cfg.train.epochs
    if epochs < old:
        raise ConfigError(
            f"tune.final_epochs={epochs} is below the trials' train.epochs={old}; the final runs "
            "may only get a larger cap"
        )
    if cfg.model.name == "lightgcn":
        from oodrec.samplers import sampler_horizon_option

        option = sampler_horizon_option(cfg.sampler.name)
        if option is not None and cfg.sampler.options.get(option) is None:
            cfg = set_path(cfg, f"sampler.{option}", old)
    return set_path(cfg, "train.epochs", epochs)


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


__all__ = [
    "adopt_best_trials",
    "trial_rows",
    "write_trials_csv",
    "format_running",
    "running_trials",
    "Param",
    "StudyJob",
    "TuneSpec",
    "base_config",
    "final_run_name",
    "final_runs",
    "finals_done",
    "open_study",
    "parse_tune",
    "storage_url",
    "study_jobs",
    "summarize",
    "tune_worker",
    "tuning_info",
    "with_epoch_cap",
    "with_params",
]
