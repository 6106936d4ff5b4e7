"""Seconds per training epoch and per evaluation of one configuration (``oodrec speed``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from oodrec.config import ExperimentConfig


@dataclass
class SpeedResult:
    """Timings of :func:`measure_speed`.

    Attributes:
        dataset: the dataset's name.
        epochs: seconds of each timed training epoch.
        evals: seconds of each evaluation (val + IID test + OOD test).
        load: the 1-minute load average before the process added its own (None: unknown).
        threads: ``oodrec._threads.thread_info()`` while timing.
    """

    dataset: str
    epochs: list[float] = field(default_factory=list)
    evals: list[float] = field(default_factory=list)
    load: float | None = None
    threads: dict[str, Any] = field(default_factory=dict)


def measure_speed(cfg: ExperimentConfig, repeats: int) -> SpeedResult:
    """Time ``repeats`` training epochs and evaluations of the assembled ``cfg`` after one
    warm-up epoch, without the false-hard-negative probe (``train.fhn_batches=0``), writing
    nothing.

    Raises:
        ConfigError: ``repeats`` below 1 or a device this machine lacks.
    """
    from oodrec._threads import load_average, thread_info
    from oodrec.data.dataset import load_dataset
    from oodrec.device import check_device
    from oodrec.errors import ConfigError
    from oodrec.experiment import check_with_data
    from oodrec.train.loop import Trainer

    if repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {repeats}")
    check_device(cfg.train.device)
    load = load_average()  # before this process adds its own load
    cfg = replace(cfg, train=replace(cfg.train, fhn_batches=0))
    dataset = load_dataset(cfg.data)
    check_with_data(cfg, dataset)  # eval.ks against the number of items
    trainer = Trainer(cfg, dataset)
    trainer.train_epoch(0)  # warm-up
    out = SpeedResult(dataset.name, load=load)
    for i in range(repeats):
        t0 = time.perf_counter()
        trainer.train_epoch(i + 1)
        out.epochs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        trainer.evaluate()
        out.evals.append(time.perf_counter() - t0)
    out.threads = thread_info()
    return out


__all__ = ["SpeedResult", "measure_speed"]
