"""Intra-op threads that stay fast when another process competes for the cores.

OpenMP worker threads spin at barriers by default. When another process holds one of the cores,
a spinning thread burns its time slice waiting for a thread that is not running: LightGCN + RNS
on Food took 8.8 s per epoch with 2 threads next to one busy process, against 2.0 s with one
thread or with ``OMP_WAIT_POLICY=PASSIVE`` (2-core CPU). Hence two settings:

* ``OMP_WAIT_POLICY=PASSIVE`` by default: ``oodrec.cli.main`` calls ``default_wait_policy``
  before torch (and its OpenMP runtime) is loaded. A user's own ``OMP_WAIT_POLICY`` wins.
* ``train.threads=auto``: as many threads as cores are free (cores minus the 1-minute load
  average, at least 1). ``0`` keeps torch's default (one per core); ``N`` uses N.

Nothing here runs at import time; torch is imported inside the functions that need it.
"""

from __future__ import annotations

import os
from typing import Any

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
DEFAULT_WAIT_POLICY = "PASSIVE"


def default_wait_policy() -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is already set; return the policy in effect.

    Must run before torch is imported to affect this process (OpenMP reads the variable once,
    when it loads); child processes inherit it either way.
    """
    return os.environ.setdefault(WAIT_POLICY_ENV, DEFAULT_WAIT_POLICY)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores not busy with other work: ``cores - load`` rounded, between 1 and ``cores``.

    Args:
        cores: usable cores (default ``available_cores()``).
        load: 1-minute load average (default ``load_average()``; unknown counts as 0).
    """
    cores = available_cores() if cores is None else cores
    load = load_average() if load is None else load
    return max(1, min(cores, round(cores - (load or 0.0))))


def resolve_threads(setting: int | str) -> int | None:
    """The thread count ``train.threads`` asks for: None (torch's default) for 0, the free cores
    for ``auto``, else the number itself."""
    if setting == "auto":
        return free_cores()
    return int(setting) if int(setting) > 0 else None


def apply_threads(setting: int | str) -> int:
    """Set torch's intra-op threads from ``train.threads``; return the count in effect."""
    import torch

    n = resolve_threads(setting)
    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def thread_info() -> dict[str, Any]:
    """Threads, OpenMP wait policy, load and cores as this process sees them (for records and
    ``oodrec speed``)."""
    import torch

    load = load_average()
    return {
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get(WAIT_POLICY_ENV, "unset (OpenMP default)"),
        "load_average": None if load is None else round(load, 2),
        "cores": available_cores(),
    }


__all__ = [
    "apply_threads",
    "available_cores",
    "default_wait_policy",
    "free_cores",
    "load_average",
    "resolve_threads",
    "thread_info",
]
