"""Runs sharing a GPU: how many at a time (``--workers auto``), and what each run used of it.

``choose_workers`` is the policy, a pure function of measured numbers: the GPU's free memory
before any run, the memory one run needs (its peak reserved by torch's caching allocator plus
a CUDA context), the GPU's utilisation while that one run trained, and a cap. The numbers come
from a *probe*: ``oodrec bench`` starts the first run on each GPU alone and reads them from it
(``run_measured`` in the worker, ``PROBE_SECONDS`` into the run or at its end, whichever comes
first), then opens the further workers the policy allows while the probe run goes on.

``run_measured`` also records, for every CUDA run of a grid, its peak GPU memory and the mean
utilisation of its GPU (sampled every ``SAMPLE_SECONDS`` through pynvml or nvidia-smi while it
trains) in the ``gpu`` entry of its ``bench.json``; the report's runtime table shows them.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oodrec.bench.runner import BENCH_FILE, Job, RunOutcome, execute_job
from oodrec.runs import atomic_write_text

logger = logging.getLogger(__name__)

GIB = 1024**3
MAX_PER_GPU = 8
"""Most runs that ``--workers auto`` puts on one GPU (also at most the CPU cores per GPU)."""
CUDA_CONTEXT_BYTES = 512 * 1024**2
"""GPU memory one process's CUDA context takes outside torch's allocator (an estimate: some
300 to 600 MiB with torch's lazy module loading); added to each run's measured peak."""
TARGET_UTILIZATION = 90.0
"""Utilisation (%) that ``choose_workers`` aims the runs of one GPU at together."""
MEMORY_HEADROOM = 0.1
"""Share of the free GPU memory left unplanned (fragmentation, other processes)."""
MEMORY_MARGIN = 1.5
"""Factor on the probe run's memory: later runs of the grid (a larger dataset, another method)
may need more than the first one."""
PROBE_SECONDS = 30.0
"""Seconds into the probe run (or its end, if sooner) at which its numbers are read."""
SAMPLE_SECONDS = 2.0
"""Seconds between two utilisation samples of a run's GPU."""


@dataclass(frozen=True)
class WorkerChoice:
    """The outcome of ``choose_workers``.

    Attributes:
        workers: runs at a time on the GPU (>= 1).
        limit: what bounded it: ``cap``, ``memory``, ``utilisation`` or ``no measurement``.
        reason: one line for the log, e.g. ``4 workers on cuda:0: 61.0 GiB free, ~2.1 GiB per
            run, utilisation 23% with 1 run (memory allows 26, utilisation 4, cap 8)``.
    """

    workers: int
    limit: str
    reason: str


def choose_workers(
    free_bytes: int,
    run_bytes: int | None,
    utilization: float | None,
    cap: int,
    *,
    device: str = "cuda:0",
    target_utilization: float = TARGET_UTILIZATION,
    headroom: float = MEMORY_HEADROOM,
    margin: float = MEMORY_MARGIN,
) -> WorkerChoice:
    """How many runs to put on one GPU at a time, from what one run alone used of it.

    ``workers = max(1, min(cap, by_memory, by_utilisation))`` with
    ``by_memory = floor(free_bytes * (1 - headroom) / (run_bytes * margin))`` and
    ``by_utilisation = ceil(target_utilization / utilization)`` (a run that kept the GPU busy
    23% of the time: 4 runs to reach 90%). An unknown utilisation (no pynvml, no nvidia-smi)
    bounds nothing; an unknown ``run_bytes`` (the probe did not measure) gives 1.

    Args:
        free_bytes: free GPU memory with no run on it (bytes, >= 0).
        run_bytes: memory one run needs (bytes: peak reserved plus its CUDA context), or None.
        utilization: the GPU's utilisation (%) while the one run trained, or None.
        cap: most workers allowed (>= 1).
        device: the GPU's name for the message.
        target_utilization: utilisation (%) the runs should reach together (0 to 100].
        headroom: share of ``free_bytes`` left unplanned, in [0, 1).
        margin: factor (>= 1) on ``run_bytes`` for runs larger than the probe.

    Raises:
        ValueError: a value out of its range (named with the value).
    """
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"cap must be an integer >= 1, got {cap!r}")
    if free_bytes < 0:
        raise ValueError(f"free_bytes must be >= 0, got {free_bytes!r}")
    if run_bytes is not None and run_bytes < 0:
        raise ValueError(f"run_bytes must be >= 0 or None, got {run_bytes!r}")
    if utilization is not None and not 0 <= utilization <= 100:
        raise ValueError(f"utilization must be a percentage in [0, 100], got {utilization!r}")
    if not 0 < target_utilization <= 100:
        raise ValueError(f"target_utilization must be in (0, 100], got {target_utilization!r}")
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must be in [0, 1), got {headroom!r}")
    if margin < 1:
        raise ValueError(f"margin must be >= 1, got {margin!r}")
    seen = [f"{free_bytes / GIB:.1f} GiB free"]
    if run_bytes is None:
        seen.append("no memory measurement of a run")
        return WorkerChoice(1, "no measurement", f"1 worker on {device}: " + ", ".join(seen))
    seen.append(f"~{run_bytes / GIB:.1f} GiB per run")
    by_memory = math.floor(free_bytes * (1 - headroom) / max(run_bytes * margin, 1))
    if utilization is None:
        seen.append("utilisation not measured (no pynvml or nvidia-smi)")
        by_util = None
    else:
        seen.append(f"utilisation {utilization:.0f}% with 1 run")
        by_util = math.ceil(target_utilization / max(utilization, 1.0))
    bounds = {"memory": by_memory, "utilisation": by_util, "cap": cap}
    limit, workers = min(
        ((k, v) for k, v in bounds.items() if v is not None), key=lambda kv: (kv[1], kv[0] != "cap")
    )
    workers = max(1, workers)
    allows = ", ".join(f"{k} {v}" for k, v in bounds.items() if v is not None)
    reason = (
        f"{workers} worker{'s' if workers > 1 else ''} on {device}: {', '.join(seen)} "
        f"(bounds: {allows}; {limit} decides)"
    )
    if by_memory < 1:
        reason += "; one run may not fit in the free memory"
    return WorkerChoice(workers, limit, reason)


def worker_cap(gpus: int, cores: int | None, per_gpu: int = MAX_PER_GPU) -> int:
    """Most runs per GPU: ``per_gpu``, and at most the CPU cores per GPU (each run's Python
    side needs a core to keep its GPU fed)."""
    return max(1, min(per_gpu, (cores or 1) // max(gpus, 1)))


# --------------------------------------------------------------------------- measuring a run


class GpuMonitor:
    """Samples one GPU's utilisation on a daemon thread while a run trains in this process,
    skipping samples before the run has put anything on the GPU (data loading), and calls
    ``on_probe`` once with the numbers so far after ``probe_seconds`` (or at ``stop``).

    Args:
        gpu: the GPU as nvidia-smi names it (physical index or ``GPU-`` UUID).
        interval: seconds between samples.
        probe_seconds: when to call ``on_probe`` (None: never).
        on_probe: receives ``stats()`` once.
        read: the sampler (default ``oodrec.device.gpu_utilization``); tests pass a fake.
    """

    def __init__(
        self,
        gpu: int | str,
        interval: float = SAMPLE_SECONDS,
        probe_seconds: float | None = None,
        on_probe: Callable[[dict[str, Any]], None] | None = None,
        read: Callable[[int | str], float | None] | None = None,
    ) -> None:
        from oodrec.device import gpu_utilization

        self.gpu = gpu
        self.interval = interval
        self.probe_seconds = probe_seconds
        self.on_probe = on_probe
        self.read = read or gpu_utilization
        self.samples: list[float] = []
        self.free_bytes = 0
        self.total_bytes = 0
        self._stop = threading.Event()
        self._probed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> GpuMonitor:
        """Reset torch's peak memory counters, note the free memory and start sampling."""
        import torch

        if torch.cuda.is_available():
            self.free_bytes, self.total_bytes = torch.cuda.mem_get_info()
            torch.cuda.reset_peak_memory_stats()
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def _loop(self) -> None:
        import torch

        while not self._stop.wait(self.interval):
            if torch.cuda.is_available() and torch.cuda.memory_allocated() == 0:
                continue  # still loading data: an idle GPU here says nothing of training
            value = self.read(self.gpu)
            if value is not None:
                self.samples.append(value)
            if self.probe_seconds is not None and time.monotonic() - self.t0 >= self.probe_seconds:
                self._probe()

    def _probe(self) -> None:
        with self._lock:
            if self._probed or self.on_probe is None:
                return
            self._probed = True
        try:
            self.on_probe(self.stats())
        except Exception as exc:  # noqa: BLE001 - a lost probe must not stop the run
            logger.warning("could not report the probe run's GPU numbers: %s", exc)

    def stats(self) -> dict[str, Any]:
        """Peak memory (allocated and reserved, bytes), free and total memory when the run
        started, mean utilisation (%, None without samples), sample count and seconds."""
        import torch

        cuda = torch.cuda.is_available()
        samples = list(self.samples)
        return {
            "peak_memory_allocated_bytes": torch.cuda.max_memory_allocated() if cuda else 0,
            "peak_memory_reserved_bytes": torch.cuda.max_memory_reserved() if cuda else 0,
            "free_bytes_at_start": int(self.free_bytes),
            "total_bytes": int(self.total_bytes),
            "utilization_mean": sum(samples) / len(samples) if samples else None,
            "utilization_samples": len(samples),
            "seconds": time.monotonic() - self.t0,
        }

    def stop(self) -> dict[str, Any]:
        """Stop sampling, send the probe if not yet sent, and return ``stats()``."""
        self._stop.set()
        self._thread.join(timeout=self.interval + 15)
        self._probe()
        return self.stats()


def record_gpu_stats(job: Job, stats: dict[str, Any]) -> None:
    """Add ``stats`` as the ``gpu`` entry of the run's ``bench.json`` (kept as it is when the
    run wrote none)."""
    path = job.path / BENCH_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        logger.warning("%s: GPU numbers not recorded (%s)", path, exc)
        return
    info["gpu"] = {k: v for k, v in stats.items() if k != "seconds"}
    atomic_write_text(path, json.dumps(info, indent=2))


def run_measured(
    job: Job,
    gpu: int | str | None = None,
    on_probe: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[RunOutcome, dict[str, Any] | None]:
    """``execute_job(job)``, measuring its GPU when it trains on CUDA (see ``GpuMonitor``);
    a finished run gets the numbers in its ``bench.json``.

    Args:
        job: the job.
        gpu: its GPU as nvidia-smi names it (None: torch's device 0 of this process, by UUID).
        on_probe: called once with the numbers ``PROBE_SECONDS`` into the run, or at its end.

    Returns:
        The outcome, and the numbers (None for a CPU run).
    """
    if not job.run.config.train.device.startswith("cuda"):
        return execute_job(job), None
    import torch

    if not torch.cuda.is_available():  # execute_job names the problem
        return execute_job(job), None
    from oodrec.device import cuda_uuid

    index = torch.device(job.run.config.train.device).index or 0
    torch.cuda.set_device(index)
    name = gpu if gpu is not None else (cuda_uuid(index) or index)
    monitor = GpuMonitor(name, probe_seconds=PROBE_SECONDS, on_probe=on_probe).start()
    try:
        outcome = execute_job(job)
    finally:
        stats = monitor.stop()
    if outcome.status in ("finished", "resumed"):
        record_gpu_stats(job, stats)
    return outcome, stats


__all__ = [
    "CUDA_CONTEXT_BYTES",
    "MAX_PER_GPU",
    "GpuMonitor",
    "WorkerChoice",
    "choose_workers",
    "record_gpu_stats",
    "run_measured",
    "worker_cap",
]
