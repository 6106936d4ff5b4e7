"""The trials of a search: the objective, the workers that run trials until each study has its
budget, and where those workers run (this process, local processes or Ray tasks).

Workers share the studies through the storage, so any number of them may work on one search;
a worker stops once every budget is finished or claimed by others, then waits for trials that
a killed worker left behind (``settle``).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import replace
from typing import Any

from oodrec.bench.grid import GridRun
from oodrec.bench.tune import study as _study  # HEARTBEAT_S, GRACE_S: read when used
from oodrec.bench.tune.spec import with_params
from oodrec.bench.tune.study import (
    StudyJob,
    _check_and_record,
    finished,
    open_study,
    study_name,
    trial_run_dir,
)
from oodrec.errors import ConfigError, RunError

logger = logging.getLogger(__name__)


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


def _objective(job: StudyJob):
    """The Optuna objective of ``job``'s study: train one trial (or continue the run of a
    retried one) and return its val selection metric; ``objective.surplus`` tells whether the
    last trial found the budget already claimed (:class:`_Surplus`)."""
    from optuna import TrialPruned
    from optuna.trial import TrialState

    from oodrec.bench.runner import BENCH_FILE, _load_dataset, plan_run
    from oodrec.device import check_device
    from oodrec.runs import RunDir, atomic_write_text
    from oodrec.train.loop import fit_run
    from oodrec.train.tracking import check_tracking

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

        check_device(cfg.train.device)
        check_tracking(cfg.track)
        dataset = _load_dataset(cfg)  # and its checks, before the trial's directory is written
        rd = RunDir(run_dir)
        with rd.lock("tune"):  # one writer per trial directory, as for bench and train
            action = "new"
            if retried:
                run = GridRun(run_dir.name, cfg, job.method, job.dataset, cfg.seed, dict(params))
                action = plan_run(run, run_dir, force=True)
                logger.info("trial %d continues %s (%s)", trial.number, run_dir, action)
            if action == "skip":  # the run finished; only the trial's result was lost
                return float(rd.read_record()["metrics"]["val"][metric])
            trial_info = {"study": trial.study.study_name, "number": trial.number, "params": params}

            def ready() -> None:  # the method is built (its checks passed): now write
                if action == "restart":
                    rd.clear()
                atomic_write_text(run_dir / BENCH_FILE, json.dumps({"trial": trial_info}, indent=2))

            result = fit_run(
                cfg, dataset, rd, resume=action == "resume", on_evaluate=report, on_ready=ready
            )
        return float(result.metrics["val"][metric])

    objective.surplus = False  # type: ignore[attr-defined]
    return objective


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

    stale_s = _study.GRACE_S + 2 * _study.HEARTBEAT_S
    deadline = time.monotonic() + (stale_s if wait_s is None else wait_s)
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
            time.sleep(min(_study.HEARTBEAT_S, 5.0))


def tune_worker(jobs: list[StudyJob], threads: int | None = None) -> list[dict[str, Any]]:
    """One worker: every study in turn (workers share studies through the storage), then
    :func:`settle` for studies a killed worker left short."""
    if threads:
        from oodrec._threads import apply_threads

        apply_threads(threads)
    out = [work_on(job) for job in jobs]
    settle(jobs)
    return out


def run_workers(
    jobs: list[StudyJob],
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    cpus_per_worker: int = 1,
) -> None:
    """Run ``workers`` times :func:`tune_worker` on ``jobs``: in this process (one local
    worker), in spawned local processes (torch threads ``max(1, cores // workers)`` each, each
    exiting once this process is gone), or as Ray tasks of ``cpus_per_worker`` CPUs each.

    Raises:
        ConfigError: the ``ray`` executor without Ray installed.
    """
    if executor == "local" and workers == 1:
        tune_worker(jobs)
        return
    if executor == "local":
        import multiprocessing
        import os
        from concurrent.futures import ProcessPoolExecutor

        from oodrec._threads import worker_wait_policy
        from oodrec.bench.executors import watch_parent

        threads = max(1, (os.cpu_count() or 1) // workers)
        worker_wait_policy()  # the workers compete with each other: sleeping OpenMP threads
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=watch_parent, initargs=(os.getpid(),)
        ) as pool:
            for fut in [pool.submit(tune_worker, jobs, threads) for _ in range(workers)]:
                fut.result()
        return
    try:
        import ray
    except ImportError:
        from oodrec.bench.runner import RAY_MISSING

        raise ConfigError(RAY_MISSING) from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False if address is None else None)
    task = ray.remote(tune_worker).options(num_cpus=cpus_per_worker)
    ray.get([task.remote(jobs, cpus_per_worker) for _ in range(workers)])


__all__ = ["run_workers", "settle", "tune_worker", "work_on"]
