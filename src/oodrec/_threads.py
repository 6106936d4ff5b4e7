"""Intra-op threads that stay fast when another process competes for the cores.

OpenMP worker threads spin at barriers by default. When another process holds one of the cores,
a spinning thread burns its time slice waiting for a thread that is not running: LightGCN + RNS
on Food took 3.1 s per epoch with 2 spinning threads next to one busy process, against 1.4 s with
``OMP_WAIT_POLICY=PASSIVE`` (2-core CPU, ``benchmarks/contention.py``). On an idle machine the
spin is what makes the epoch fast: 0.95 s spinning against 1.19 s passive, where the plain
reference LightGCN (spinning) takes 0.87 s. A bounded spin (``GOMP_SPINCOUNT`` 10^4 or 10^5)
kept the idle speed but was worse than either under contention (4.6 s and 18.2 s). Hence:

* ``default_wait_policy``, called by ``oodrec.cli.main`` before torch (and its OpenMP runtime)
  is loaded, chooses from the measured load: for a command that trains or scores (``train``,
  ``bench``, ``speed``, ``tune``, ``evaluate``, ``recommend``, ``export``) it samples the
  machine's busy cores for 50 ms; on an idle machine it leaves OpenMP spinning, else (or when it
  cannot tell) it sets ``OMP_WAIT_POLICY=PASSIVE``. Other commands get ``PASSIVE`` without a
  sample. A user's own ``OMP_WAIT_POLICY`` wins. The choice is made once: a neighbour that
  starts after a spinning run has started slows that run (3.3x in the measurement above).
* Worker processes of a grid (``bench``, ``tune`` with ``--workers`` > 1) compete with each other
  by design: they get ``PASSIVE`` unless the user set a policy.
* ``train.threads=auto``: as many threads as cores are free (cores minus the 1-minute load
  average, at least 1). ``0`` keeps torch's default (one per core); ``N`` uses N.

Nothing here runs at import time; torch is imported inside the functions that need it.
"""

from __future__ import annotations

import os
from typing import Any

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
DEFAULT_WAIT_POLICY = "PASSIVE"


SAMPLED_COMMANDS = frozenset({"train", "bench", "speed", "tune", "evaluate", "recommend", "export"})
"""CLI commands whose wait policy follows the measured load (``default_wait_policy``)."""
BUSY_THRESHOLD = 0.5
"""Busy cores (other work) from which OpenMP threads are made to sleep instead of spin."""
SPIN = "unset (OpenMP default: spin; the machine was idle at start)"


def busy_cores(sample_s: float = 0.05) -> float | None:
    """Cores busy with other work right now: the non-idle share of all CPU time in
    ``/proc/stat`` over ``sample_s`` seconds, times the cores (the caller sleeps meanwhile, so
    its own share is close to 0). None where ``/proc/stat`` is unreadable."""
    import time

    def snapshot() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as fh:
                fields = [int(x) for x in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        if len(fields) < 5:
            return None
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    first = snapshot()
    time.sleep(sample_s)
    second = snapshot()
    if first is None or second is None or second[0] <= first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return (1.0 - idle / total) * (os.cpu_count() or 1)


def default_wait_policy(command: str | None = None) -> str:
    """Choose the OpenMP wait policy before torch is imported (module docstring); return the
    policy in effect.

    Args:
        command: the CLI command about to run; for one of ``SAMPLED_COMMANDS`` the busy cores
            are sampled (50 ms) and an idle machine keeps OpenMP's spinning default.

    Must run before torch is imported to affect this process (OpenMP reads the variable once,
    when it loads); child processes inherit it either way.
    """
    if WAIT_POLICY_ENV in os.environ:
        return os.environ[WAIT_POLICY_ENV]
    if command in SAMPLED_COMMANDS:
        busy = busy_cores()
        if busy is not None and busy < BUSY_THRESHOLD:
            return SPIN
    os.environ[WAIT_POLICY_ENV] = DEFAULT_WAIT_POLICY
    return DEFAULT_WAIT_POLICY


def worker_wait_policy() -> None:
    """Before spawning competing worker processes: make their OpenMP threads sleep
    (``PASSIVE``) unless the user chose a policy. This process's own OpenMP is already loaded,
    so only the workers are affected."""
    os.environ.setdefault(WAIT_POLICY_ENV, DEFAULT_WAIT_POLICY)


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


ALLOCATOR_ENV = "OODREC_MALLOC"
"""``system`` (or ``off``) keeps the C library's default allocation behaviour."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_allocator = "default"


def tune_allocator() -> str:
    """Let glibc keep freed large blocks in the heap instead of returning them to the system.

    By default glibc serves every block above 32 MiB with a fresh ``mmap`` and unmaps it when
    freed, so a [2048, I] score matrix of a full-ranking loss (51 MiB on Food) page-faults its
    whole size again at every batch. With the mmap threshold at 1 GiB and no trimming, the
    memory is reused: AdvInfoNCE's Food batch 170 -> 110 ms, PSL's 78 -> 63 ms, CNSDiff's
    105 -> 93 ms, LightGCN + RNS unchanged (2-core CPU). The cost: the process keeps its peak
    heap until it exits. Numbers are unchanged (only where memory comes from). Idempotent;
    ``OODREC_MALLOC=system`` turns it off; a no-op outside glibc.

    Returns:
        What is in effect (for records): ``glibc: large blocks reused`` or why not.
    """
    global _allocator
    if _allocator != "default":
        return _allocator
    if os.environ.get(ALLOCATOR_ENV, "").lower() in ("system", "off", "0"):
        _allocator = f"default ({ALLOCATOR_ENV}={os.environ[ALLOCATOR_ENV]})"
        return _allocator
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return _allocator
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1
        ok = ok and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return _allocator
    if ok:
        _allocator = "glibc: large blocks reused (mmap threshold 1 GiB, no trim)"
    return _allocator


def thread_info() -> dict[str, Any]:
    """Threads, OpenMP wait policy, load and cores as this process sees them (for records and
    ``oodrec speed``)."""
    import torch

    load = load_average()
    return {
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get(WAIT_POLICY_ENV, SPIN),
        "load_average": None if load is None else round(load, 2),
        "cores": available_cores(),
        "allocator": _allocator,
    }


__all__ = [
    "apply_threads",
    "available_cores",
    "busy_cores",
    "default_wait_policy",
    "free_cores",
    "load_average",
    "resolve_threads",
    "thread_info",
    "tune_allocator",
    "worker_wait_policy",
]
