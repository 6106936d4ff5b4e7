"""Execute the runs of a grid, resumably: in this process, in local worker processes or on Ray.

``run_grid`` plans every run (``oodrec.bench.runner``: new, resume, restart or skip, each
conflict named before anything runs), checks that the grid's data is there, and executes the
runs in dependency waves (a run whose options name another run's directory waits for it).

``local`` runs in this process with one worker, else in pools of spawned worker processes,
each pinned to its GPU through ``CUDA_VISIBLE_DEVICES`` when the runs use plain ``cuda`` (torch
threads per worker ``max(1, cores // workers)``). For such runs the default is ``auto``: one
probe run per GPU, then as many runs per GPU as its free memory, the probe's memory and the
GPU's utilisation allow (``oodrec.bench.gpus``). A worker whose
parent dies (even by SIGKILL) exits, so a killed ``oodrec bench`` leaves no run being written.
``ray`` submits each job as a Ray task with ``num_cpus`` / ``num_gpus`` resources; Ray is
imported only there.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from oodrec.bench.grid import GridRun
from oodrec.bench.runner import RAY_MISSING, Job, RunOutcome, execute_job, plan_grid
from oodrec.config import to_dict
from oodrec.errors import ConfigError

logger = logging.getLogger(__name__)


class GridProgress:
    """A tqdm bar over the runs of a grid (skipped runs counted as done).

    Args:
        total: number of runs in the grid.
        skipped: runs already finished.
        show: draw the bar (off: counting only).
    """

    def __init__(self, total: int, skipped: int, show: bool) -> None:
        from tqdm import tqdm

        self.counts: Counter[str] = Counter(skipped=skipped)
        self.bar = tqdm(total=total, initial=skipped, desc="runs", unit="run", disable=not show)
        self.bar.set_postfix(self.counts)

    def update(self, outcome: RunOutcome) -> RunOutcome:
        """Count ``outcome`` and advance the bar; returns it."""
        self.counts[outcome.status] += 1
        self.bar.set_postfix(self.counts)
        self.bar.update(1)
        return outcome

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()


def _cuda_devices(jobs: list[Job]) -> list[int]:
    """GPU indices to pin workers to: all GPUs when the runs use plain ``cuda``, else none."""
    devices = {j.run.config.train.device for j in jobs}
    if not any(d.startswith("cuda") for d in devices) or any(
        d.startswith("cuda:") for d in devices
    ):
        return []  # CPU runs, or explicit cuda:N devices that must not be remapped
    import torch

    return list(range(torch.cuda.device_count()))


def _watch_parent(parent_pid: int) -> None:
    # A worker whose parent was killed (even by SIGKILL) exits instead of writing on.
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


def watch_parent(parent_pid: int) -> None:
    """Pool initializer: this worker exits once process ``parent_pid`` is gone, so a killed
    ``oodrec bench`` or ``oodrec tune`` leaves no orphan training on."""
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


_WORKER: dict[str, Any] = {}  # in a worker process: its GPU and the parent's probe queue


def _init_worker(threads: int, gpu_queue: Any, parent_pid: int, probes: Any = None) -> None:
    """Worker set-up: pin one GPU (before CUDA starts), set torch threads, watch the parent."""
    gpu = gpu_queue.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    _WORKER.update(gpu=gpu, probes=probes)
    import torch

    torch.set_num_threads(threads)
    watch_parent(parent_pid)


def _worker_job(job: Job) -> tuple[RunOutcome, dict[str, Any] | None]:
    """A job in a pool worker: ``gpus.run_measured``; the first numbers of the run go to the
    parent's probe queue (with the worker's GPU) when the parent asked for them."""
    from oodrec.bench.gpus import run_measured

    probes, gpu = _WORKER.get("probes"), _WORKER.get("gpu")
    on_probe = None if probes is None else (lambda stats: probes.put((gpu, stats)))
    return run_measured(job, on_probe=on_probe)


Workers = int | Literal["auto"] | None


class _Pool:
    """A process pool pinned to GPUs, with at most ``capacity`` jobs in flight."""

    def __init__(self, ctx: Any, gpus: list[int | None], threads: int, probes: Any) -> None:
        from concurrent.futures import ProcessPoolExecutor

        queue = ctx.Queue()
        for gpu in gpus:
            queue.put(gpu)
        self.capacity = len(gpus)
        self.gpus = gpus
        self.inflight: dict[Any, Job] = {}
        self.executor = ProcessPoolExecutor(
            len(gpus),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(threads, queue, os.getpid(), probes),
        )


def _schedule(
    jobs: list[Job],
    pools: list[_Pool],
    progress: GridProgress,
    on_tick: Callable[[list[_Pool]], None] | None = None,
) -> list[RunOutcome]:
    """Run ``jobs`` in grid order on the pools, each kept at its capacity; ``on_tick`` may add
    pools (it is called about once a second and after each finished run)."""
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    pending = list(reversed(jobs))
    outcomes: list[RunOutcome] = []
    try:
        while True:
            for pool in pools:
                while pending and len(pool.inflight) < pool.capacity:
                    job = pending.pop()
                    try:
                        pool.inflight[pool.executor.submit(_worker_job, job)] = job
                    except BrokenProcessPool as exc:  # a worker died earlier: as before, fail
                        error = f"worker died: {exc}"
                        outcomes.append(
                            progress.update(RunOutcome(job.run.name, "failed", error=error))
                        )
            running = {fut: pool for pool in pools for fut in pool.inflight}
            if not running:
                break
            done, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in done:
                job = running[fut].inflight.pop(fut)
                try:
                    outcome, _stats = fut.result()
                except BrokenProcessPool as exc:
                    outcome = RunOutcome(job.run.name, "failed", error=f"worker died: {exc}")
                outcomes.append(progress.update(outcome))
            if on_tick is not None:
                on_tick(pools)
    finally:
        for pool in pools:
            pool.executor.shutdown(wait=True, cancel_futures=True)
    return outcomes


def _auto_tick(probes: Any, ctx: Any, threads: int, cap: int, decided: set[int]) -> Callable:
    """An ``on_tick`` that reads the probe runs' numbers and opens, per GPU, the further
    workers ``gpus.choose_workers`` allows (once per GPU)."""
    import queue as queue_module

    from oodrec.bench.gpus import CUDA_CONTEXT_BYTES, choose_workers

    def tick(pools: list[_Pool]) -> None:
        while True:
            try:
                gpu, stats = probes.get_nowait()
            except queue_module.Empty:
                return
            if gpu is None or gpu in decided:
                continue  # a later run's numbers: the GPU's workers are decided
            peak = stats.get("peak_memory_reserved_bytes") or 0
            if not peak:  # it failed (or finished) before using the GPU: the next run probes
                logger.info("--workers auto: no GPU memory measured on cuda:%s yet", gpu)
                continue
            decided.add(gpu)
            choice = choose_workers(
                stats.get("free_bytes_at_start") or 0,
                peak + CUDA_CONTEXT_BYTES,
                stats.get("utilization_mean"),
                cap,
                device=f"cuda:{gpu}",
            )
            logger.info("--workers auto: %s", choice.reason)
            if choice.workers > 1:
                pools.append(_Pool(ctx, [gpu] * (choice.workers - 1), threads, None))

    return tick


def run_local(jobs: list[Job], workers: Workers, progress: GridProgress) -> list[RunOutcome]:
    """Run jobs in this process (one worker, no GPU pinning) or in spawned process pools.

    ``auto`` for plain ``cuda`` runs (the default): the first run on each GPU starts alone as
    a probe; ``gpus.PROBE_SECONDS`` into it (or at its end) its peak memory and its GPU's
    utilisation give that GPU's worker count (``gpus.choose_workers``, capped by
    ``gpus.worker_cap``), logged with the reason, and the further workers start. For CPU runs,
    or explicit ``cuda:N`` devices, ``auto`` is one worker. CUDA runs record their peak GPU
    memory and mean utilisation in ``bench.json`` (``gpus.run_measured``).

    Args:
        jobs: planned jobs.
        workers: worker processes: a count, ``auto``, or ``None`` (``auto`` for runs on
            plain ``cuda``, else 1).
        progress: the grid's progress bar.

    Returns:
        One outcome per job, in completion order.
    """
    import multiprocessing

    from oodrec._threads import worker_wait_policy
    from oodrec.bench.gpus import run_measured, worker_cap

    if not jobs:
        return []
    gpus = _cuda_devices(jobs)
    if workers is None:
        workers = "auto" if gpus else 1
    if workers == "auto" and not gpus:
        workers = 1
        logger.info("--workers auto: 1 worker (the runs do not use plain cuda)")
    if workers == 1 and not gpus:
        return [progress.update(run_measured(job)[0]) for job in jobs]
    cores = os.cpu_count() or 1
    worker_wait_policy()  # the workers compete with each other: sleeping OpenMP threads
    ctx = multiprocessing.get_context("spawn")
    if workers == "auto":
        cap = worker_cap(len(gpus), cores)
        threads = max(1, cores // (cap * len(gpus)))
        probes = ctx.Queue()
        logger.info(
            "--workers auto: one probe run per GPU first (GPUs %s, at most %d runs per GPU), "
            "%d torch thread(s) per worker",
            gpus,
            cap,
            threads,
        )
        decided: set[int] = set()
        pools = [_Pool(ctx, list(gpus[: len(jobs)]), threads, probes)]
        return _schedule(jobs, pools, progress, _auto_tick(probes, ctx, threads, cap, decided))
    n = max(1, min(int(workers), len(jobs)))
    threads = max(1, cores // n)
    logger.info("%d worker(s), %d torch thread(s) each, GPUs %s", n, threads, gpus or "none")
    pinned: list[int | None] = [gpus[i % len(gpus)] if gpus else None for i in range(n)]
    return _schedule(jobs, [_Pool(ctx, pinned, threads, None)], progress)


def _ray_task(job: Job, threads: int) -> RunOutcome:
    import torch

    torch.set_num_threads(threads)
    return execute_job(job)


def run_ray(
    jobs: list[Job], address: str | None, cpus_per_run: int, progress: GridProgress
) -> list[RunOutcome]:
    """Submit each job as a Ray task (``num_cpus=cpus_per_run``, one GPU for CUDA runs).

    Connects to ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``) or starts a local
    instance; an already initialised Ray session is reused. Workers must see the same file
    system (run directories and data) as this process and have ``oodrec`` installed.

    Args:
        jobs: planned jobs.
        address: Ray cluster address; ``None`` starts (or reuses) a local instance.
        cpus_per_run: CPUs reserved per run (also its torch threads).
        progress: the grid's progress bar.

    Returns:
        One outcome per job, in completion order.

    Raises:
        ConfigError: Ray is not installed.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    if not jobs:
        return []
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
        if address is None:
            kwargs["include_dashboard"] = False
        ray.init(address=address, **kwargs)
        started = True
    try:
        task = ray.remote(_ray_task)
        refs = {}
        for job in jobs:
            gpus = 1 if job.run.config.train.device.startswith("cuda") else 0
            ref = task.options(num_cpus=cpus_per_run, num_gpus=gpus).remote(job, cpus_per_run)
            refs[ref] = job
        outcomes = []
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a lost worker fails one run
                    outcome = RunOutcome(refs[ref].run.name, "failed", error=repr(exc))
                outcomes.append(progress.update(outcome))
        return outcomes
    finally:
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------- the grid


def _check_data(jobs: list[Job]) -> None:
    """Every dataset the jobs need is present, checked before the first run starts (a grid on
    a machine without the data fails once, naming each dataset, instead of once per run).

    Raises:
        DataValidationError: the messages of every missing dataset, one per line.
    """
    from oodrec.data.dataset import check_available
    from oodrec.errors import DataValidationError

    seen: dict[str, str | None] = {}
    for job in jobs:
        data = job.run.config.data
        key = json.dumps(to_dict(data), sort_keys=True)
        if key in seen:
            continue
        try:
            check_available(data)
            seen[key] = None
        except DataValidationError as exc:
            seen[key] = str(exc)
    errors = sorted({e for e in seen.values() if e})
    if errors:
        raise DataValidationError(
            "the grid's data is not all there (nothing was run):\n  " + "\n  ".join(errors)
        )


def run_grid(
    runs: list[GridRun],
    executor: Literal["local", "ray"] = "local",
    workers: Workers = None,
    address: str | None = None,
    cpus_per_run: int = 1,
    force: bool = False,
    grid: str = "<grid>",
    show_progress: bool = True,
) -> list[RunOutcome]:
    """Plan and execute every run of a grid.

    Args:
        runs: expanded runs (``expand_grid``).
        executor: ``local`` or ``ray``.
        workers: local worker processes: a count, ``auto`` or None (see ``run_local``).
        address: Ray address (``ray`` executor).
        cpus_per_run: CPUs per Ray task.
        force: rerun runs whose saved config differs.
        grid: the grid's source, for ``bench.json``.
        show_progress: draw a progress bar over the grid.

    Returns:
        Outcomes of all runs: skipped ones first, then in completion order.

    Raises:
        RunError: a run directory holds a different config and ``force`` is off.
        ConfigError: unknown executor, or Ray missing.
    """
    if executor not in ("local", "ray"):
        raise ConfigError(f"executor must be 'local' or 'ray', got {executor!r}")
    if executor == "ray":
        try:
            import ray  # noqa: F401 - fail before planning when Ray is missing
        except ImportError:
            raise ConfigError(RAY_MISSING) from None
    todo, skipped = plan_grid(runs, force, grid)
    _check_data(todo)
    if executor == "local":  # a Ray task checks on the machine that trains it
        from oodrec.train.tracking import check_tracking

        for track in {job.run.config.track for job in todo}:
            check_tracking(track)  # once, before the first run, not once per run
    progress = GridProgress(len(runs), len(skipped), show_progress)
    done = [RunOutcome(j.run.name, "skipped") for j in skipped]
    try:
        for wave in dependency_waves(todo):
            if executor == "ray":
                done += run_ray(wave, address, cpus_per_run, progress)
            else:
                done += run_local(wave, workers, progress)
    finally:
        progress.close()
    return done


def _option_paths(job: Job) -> set[Path]:
    """Resolved paths named by the run's model and sampler options (e.g. ``backbone_run``)."""
    cfg = job.run.config
    sampler_options = cfg.sampler.options if cfg.sampler is not None else {}
    values = [*cfg.model.options.values(), *sampler_options.values()]
    return {Path(v).expanduser().resolve() for v in values if isinstance(v, str) and v}


def dependency_waves(jobs: list[Job]) -> list[list[Job]]:
    """The jobs in waves: a job whose options name another job's run directory (HDRM's stage 2
    and its ``backbone_run``) goes in a later wave than that job, so that parallel workers never
    start it before the run it reads has finished. Without such links: one wave, unchanged."""
    paths = {job.path for job in jobs}
    needs = {job.path: _option_paths(job) & (paths - {job.path}) for job in jobs}
    waves: list[list[Job]] = []
    placed: set[Path] = set()
    while len(placed) < len(jobs):
        wave = [j for j in jobs if j.path not in placed and needs[j.path] <= placed]
        if not wave:  # a cycle: run the rest together (each fails with its own clear error)
            wave = [j for j in jobs if j.path not in placed]
        waves.append(wave)
        placed |= {j.path for j in wave}
    return waves


__all__ = ["GridProgress", "dependency_waves", "run_grid", "run_local", "run_ray", "watch_parent"]
