"""Plan and execute the runs of a grid, one run at a time, into ``out_dir/run_name``.

Every run is trained exactly as ``oodrec train`` does (same run directory layout) and gets a
``bench.json`` beside its ``config.yaml`` naming its method, grid, dataset entry, seed and sweep
point. Before anything runs, each run directory is checked against the run's resolved config:

* no ``config.yaml``: a new run;
* same config (``out_dir`` and ``track`` aside), ``record.json`` present: skipped; also when only
  ``train.device`` or ``train.threads`` differ (:data:`EXECUTION_KEYS`);
* same config, no ``record.json``: resumed from its last checkpoint (``train(resume=True)``);
* different config: an error naming the differing keys, unless ``force`` (then it is rerun).

A run directory has one writer: each run holds its lock (``oodrec.runs.RunLock``) while it runs,
so a second bench or ``oodrec train`` on the same directory fails naming the holder's PID. Each
run is planned again under its lock, so two benches of one grid (say on two machines sharing
the run directories) split its runs without retraining what the other finished.

``oodrec.bench.executors.run_grid`` runs a whole grid with these, in this process, in local
worker processes or on Ray.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from oodrec.bench.grid import GridRun
from oodrec.config import ExperimentConfig, config_diff, from_dict, to_dict
from oodrec.errors import ConfigError, OodrecError, RunError
from oodrec.runs import LOCK_FILE, RunDir, atomic_write_text

logger = logging.getLogger(__name__)

BENCH_FILE = "bench.json"
IGNORED_KEYS = ("out_dir", "track")
"""Config keys that do not change a run's results and are not compared: ``track`` (run
tracking) is not even a conflict for an unfinished run, which may resume with other tracking;
config.yaml files written before it existed compare equal to its defaults."""
EXECUTION_KEYS = ("train.device", "train.threads")
"""Where and how a run executes. A finished run that differs from the grid only in these keys
counts as done (a grid finished partly on a GPU machine, or run again without ``--set
train.threads=1``); its record names the device and threads it used. An unfinished one is still a
conflict: resuming it elsewhere would mix two devices or thread counts in one run."""
RAY_MISSING = "the ray executor needs Ray: pip install 'oodrec[ray]'"

Action = Literal["new", "resume", "restart", "skip"]


class ConfigConflict(RunError):
    """A run directory holds a run of another config; ``keys`` names the differing keys."""

    def __init__(self, message: str, keys: str) -> None:
        super().__init__(message)
        self.keys = keys


@dataclass(frozen=True)
class Job:
    """A run to execute: where, and whether it starts, resumes or restarts.

    Attributes:
        run: the grid run.
        path: absolute run directory.
        action: ``new``, ``resume``, ``restart`` (``force``: wipe and rerun) or ``skip``.
        grid: the grid's source (written into ``bench.json``).
    """

    run: GridRun
    path: Path
    action: Action
    grid: str = "<grid>"


@dataclass(frozen=True)
class RunOutcome:
    """What happened to one run.

    Attributes:
        name: run name.
        status: ``finished``, ``resumed`` (finished after a resume), ``skipped`` or ``failed``.
        seconds: wall time in the executor.
        error: traceback text of a failed run.
    """

    name: str
    status: Literal["finished", "resumed", "skipped", "failed"]
    seconds: float = 0.0
    error: str | None = None


# --------------------------------------------------------------------------- planning


def _comparable(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """A normalised plain dict of a config (through the dataclasses, JSON types only)."""
    from oodrec.methods import METHODS

    norm = json.loads(json.dumps(to_dict(from_dict(ExperimentConfig, cfg_dict))))
    for key in IGNORED_KEYS:
        norm.pop(key, None)
    model = (norm.get("model") or {}).get("name")
    if model in METHODS and not METHODS.get(model).takes_sampler:
        # a method without a sampler: runs written with the default sampler section compare
        # equal to runs that have none
        norm.pop("sampler", None)
    return norm


def _without(cfg: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A copy of a nested config dict without the dotted ``keys``."""
    out = copy.deepcopy(cfg)
    for key in keys:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return out


def result_diff(
    saved: dict[str, Any], wanted: dict[str, Any], ignore: tuple[str, ...] = ()
) -> list[str]:
    """The keys, with both values, in which two config dicts differ in a way that can change a
    run's results: ``out_dir`` (:data:`IGNORED_KEYS`), the execution keys
    (:data:`EXECUTION_KEYS`) and the dotted keys in ``ignore`` are left out.

    Raises:
        ConfigError: a dict is not a valid config.
    """
    left_out = EXECUTION_KEYS + tuple(ignore)
    return config_diff(
        _without(_comparable(saved), left_out), _without(_comparable(wanted), left_out)
    )


def plan_run(run: GridRun, path: Path, force: bool = False) -> Action:
    """Decide what to do with ``run`` given what its directory holds.

    Args:
        run: the grid run.
        path: its run directory.
        force: rerun a run whose saved config differs.

    Returns:
        ``new``, ``skip``, ``resume`` or ``restart``.

    Raises:
        ConfigConflict: the saved config differs (or cannot be read) and ``force`` is off.
    """
    rd = RunDir(path)
    if not rd.config_path.is_file():
        return "new"
    state = "finished" if rd.is_finished() else "unfinished"
    try:
        saved = _comparable(yaml.safe_load(rd.config_path.read_text()))
        wanted = _comparable(to_dict(run.config))
        diff = config_diff(saved, wanted)
        differs = result_diff(saved, wanted)
    except (ConfigError, yaml.YAMLError) as exc:
        diff = differs = [f"unreadable config.yaml: {exc}"]
    if not diff:
        return "skip" if state == "finished" else "resume"
    if state == "finished" and not force and not differs:
        logger.info(
            "%s: finished with other execution settings (%s); skipped", path.name, "; ".join(diff)
        )
        return "skip"
    if force:
        return "restart"
    shown = "; ".join(diff[:4]) + (f"; ... ({len(diff)} keys)" if len(diff) > 4 else "")
    raise ConfigConflict(
        f"{path}: {state} run with a different config: {shown}. Pass --force to rerun it, or "
        f"write the grid to another --out",
        shown,
    )


def plan_grid(
    runs: list[GridRun], force: bool = False, grid: str = "<grid>"
) -> tuple[list[Job], list[Job]]:
    """Plan every run; conflicts are collected and raised together before anything runs.

    Args:
        runs: expanded grid runs (``config.out_dir`` is their parent directory).
        force: rerun runs whose saved config differs.
        grid: the grid's source, for ``bench.json``.

    Returns:
        ``(to_run, skipped)`` jobs.

    Raises:
        RunError: one or more run directories hold a different config (``force`` off).
    """
    todo: list[Job] = []
    skipped: list[Job] = []
    errors: list[str] = []
    for run in runs:
        path = (Path(run.config.out_dir) / run.name).resolve()
        try:
            action = plan_run(run, path, force)
        except RunError as exc:
            errors.append(str(exc))
            continue
        (skipped if action == "skip" else todo).append(Job(run, path, action, grid))
    if errors:
        raise RunError("\n".join(errors))
    return todo, skipped


@dataclass(frozen=True)
class Preview:
    """What a run of a grid would do (``oodrec bench --dry-run``).

    Attributes:
        name: run name.
        action: ``new``, ``resume``, ``restart``, ``skip`` or ``CONFLICT`` (another config).
        note: the epochs a resumed run has done, or a conflict's differing keys ("" for none).
    """

    name: str
    action: str
    note: str = ""


def preview_grid(runs: list[GridRun], out_dir: str | Path, force: bool = False) -> list[Preview]:
    """What each run would do in ``out_dir``, in grid order; writes nothing.

    Args:
        runs: expanded grid runs.
        out_dir: parent directory of their run directories.
        force: rerun runs whose saved config differs (then they are ``restart``).
    """
    out = []
    for run in runs:
        path = Path(out_dir) / run.name
        note = ""
        try:
            action: str = plan_run(run, path, force)
        except ConfigConflict as exc:
            action, note = "CONFLICT", f"differs: {exc.keys}"
        if action == "resume":
            note = f"{len(RunDir(path).read_epochs())} epoch(s) done"
        out.append(Preview(run.name, action, note))
    return out


# --------------------------------------------------------------------------- executing one run

_DATASET_CACHE: dict[str, Any] = {}


def _load_dataset(cfg: ExperimentConfig):
    """Load the run's dataset, reusing the previous one when the data config is the same, and
    run the checks that need it (``experiment.check_with_data``) before anything is written."""
    from oodrec.data.dataset import load_dataset
    from oodrec.experiment import check_with_data

    key = json.dumps(to_dict(cfg.data), sort_keys=True)
    if key not in _DATASET_CACHE:
        _DATASET_CACHE.clear()  # keep one dataset in memory per process
        _DATASET_CACHE[key] = load_dataset(cfg.data)
    check_with_data(cfg, _DATASET_CACHE[key])
    return _DATASET_CACHE[key]


def write_bench_info(job: Job) -> None:
    """Write ``bench.json`` (method, grid, dataset entry, seed, sweep point) into the run dir."""
    info = {
        "method": job.run.method,
        "grid": job.grid,
        "dataset": job.run.dataset,
        "seed": job.run.seed,
        "sweep": job.run.sweep,
        **job.run.info,
    }
    job.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(job.path / BENCH_FILE, json.dumps(info, indent=2))


def execute_job(job: Job) -> RunOutcome:
    """Train one job into its run directory (as ``oodrec train``); never raises on run errors.

    Args:
        job: the planned job (``new``, ``resume`` or ``restart``).

    Returns:
        The outcome; a failed run carries its error (the traceback of an unexpected one).
    """
    from oodrec.device import check_device
    from oodrec.train.loop import fit_run
    from oodrec.train.tracking import check_tracking

    t0 = time.perf_counter()
    try:
        check_device(job.run.config.train.device)  # on the machine that trains it
        check_tracking(job.run.config.track)
        dataset = _load_dataset(job.run.config)
        rd = RunDir(job.path)
        made = [p for p in (job.path, *job.path.parents) if not p.exists()]  # the lock makes them
        # one writer per run directory: a second bench or train on it fails with the holder's PID
        with rd.lock("bench"):
            # planned when the grid started; another bench on the same grid may have finished or
            # started this run since, so decide again under the lock (never retrain a finished run)
            action = plan_run(job.run, job.path, force=job.action == "restart")
            if action == "skip":
                logger.info("run %s: finished meanwhile by another process; skipped", job.run.name)
                return RunOutcome(job.run.name, "skipped", time.perf_counter() - t0)
            resume = action == "resume"

            def ready() -> None:  # the method is built (its checks passed): now write
                if action == "restart":
                    rd.clear()
                write_bench_info(job)

            try:
                fit_run(job.run.config, dataset, rd, resume=resume, on_ready=ready)
            except BaseException:
                if made and [p.name for p in job.path.iterdir()] == [LOCK_FILE]:
                    (job.path / LOCK_FILE).unlink()  # a refused run leaves no directory behind
                    for folder in made:
                        if folder.is_dir() and not any(folder.iterdir()):
                            folder.rmdir()
                raise
        status = "resumed" if resume else "finished"
        return RunOutcome(job.run.name, status, time.perf_counter() - t0)
    except OodrecError as exc:  # a clear message (a busy run, bad data or config): no traceback
        logger.error("run %s failed: %s", job.run.name, exc)
        return RunOutcome(job.run.name, "failed", time.perf_counter() - t0, str(exc))
    except Exception:  # noqa: BLE001 - one failed run must not stop the grid
        text = traceback.format_exc()
        logger.error("run %s failed:\n%s", job.run.name, text)
        return RunOutcome(job.run.name, "failed", time.perf_counter() - t0, text)


__all__ = [
    "BENCH_FILE",
    "RAY_MISSING",
    "ConfigConflict",
    "Job",
    "Preview",
    "RunOutcome",
    "config_diff",
    "execute_job",
    "plan_grid",
    "plan_run",
    "preview_grid",
    "result_diff",
    "write_bench_info",
]
