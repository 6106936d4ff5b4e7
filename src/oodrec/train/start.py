"""Starting and resuming a run directory: what ``oodrec train`` and ``oodrec.train`` do around
the Trainer.

A new run (:func:`new_run`) is refused when its directory holds a run (unless ``overwrite``),
checked again under the run's lock, and leaves no empty directory behind when it fails before
writing. A resume (:func:`resume_run`) takes the lock before anything else, may change only
``RESUME_SAFE_KEYS``, and extends a finished run only when epochs are left; the finished run's
``record.json`` is set aside as ``record.prev.json`` only once its checkpoint has loaded, and a
resume that fails puts every file back (``oodrec.runs.ResumeSnapshot``). Everything that can
refuse (the output path, the device, the data and the settings that need it, the method's own
checks) runs before the first write; an ``--overwrite`` clears the old run only then.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oodrec.config import ExperimentConfig, apply_overrides, config_diff, to_dict
from oodrec.errors import ConfigError, OodrecError
from oodrec.experiment import check, check_with_data
from oodrec.paths import check_out_dir
from oodrec.runs import LOCK_FILE, RunDir

logger = logging.getLogger(__name__)

RESUME_SAFE_KEYS = (
    "train.epochs",
    "train.device",
    "train.threads",
    "track.kind",
    "track.uri",
    "track.experiment",
    "data.allow_sparse_ids",
)
"""Settings a resume may change: they do not change what the finished epochs mean (``track.*``:
a resumed run may start, stop or move its tracking; see docs/tracking.md;
``data.allow_sparse_ids``: a permission, so a run started before sparse id spaces were refused
can go on)."""

OnStart = Callable[[RunDir], None]
"""Called with the locked run directory just before training starts (the CLI names it)."""


def exists_message(run_path: Path) -> str:
    return (
        f"run directory {run_path} exists; continue it with `oodrec train --resume "
        f"{run_path}`, choose another --name, or pass --overwrite"
    )


def _log_data_warnings(dataset: Any, changes: Sequence[str] = ()) -> None:
    from oodrec.train.record import data_warnings

    # the data notes are logged once, by the loader; a split that lost > 1% is a warning
    for line in data_warnings(dataset.report):
        logger.warning("data: %s", line)
    if changes:
        logger.warning("resuming with changed settings: %s", "; ".join(changes))


def new_run(
    cfg: ExperimentConfig,
    *,
    overwrite: bool = False,
    show_progress: bool = False,
    dataset: Any = None,
    on_start: OnStart | None = None,
) -> tuple[RunDir, Any]:
    """Train the assembled ``cfg`` into ``cfg.out_dir / cfg.run_name()``.

    Returns:
        The run directory and the ``TrainResult``.

    Raises:
        OodrecError: the directory holds a run and ``overwrite`` is off, another process writes
            it, or training fails (nothing half-made is left in a directory this call created).
    """
    from oodrec.data.dataset import load_dataset
    from oodrec.device import check_device
    from oodrec.train.loop import fit_run
    from oodrec.train.tracking import check_tracking

    check_out_dir(cfg.out_dir, "out_dir (--out)")
    check_device(cfg.train.device)
    check_tracking(cfg.track)
    rd = RunDir(Path(cfg.out_dir) / cfg.run_name())
    if rd.config_path.exists() and not overwrite:
        raise OodrecError(exists_message(rd.path))
    existed = rd.path.exists()
    made = [p for p in (rd.path, *rd.path.parents) if not p.exists()]  # the lock creates them
    dataset = dataset if dataset is not None else load_dataset(cfg.data)
    check_with_data(cfg, dataset)
    with rd.lock("train"):
        try:
            # checked again under the lock: another process may have started the run meanwhile
            if rd.config_path.exists() and not overwrite:
                raise OodrecError(exists_message(rd.path))

            def ready() -> None:  # the method is built: its checks passed; now write
                if overwrite and existed and rd.clear():
                    logger.warning("--overwrite: removed the previous run in %s", rd.path)
                _log_data_warnings(dataset)
                if on_start is not None:
                    on_start(rd)

            return rd, fit_run(cfg, dataset, rd, show_progress=show_progress, on_ready=ready)
        except BaseException:
            if not existed and [p.name for p in rd.path.iterdir()] == [LOCK_FILE]:
                (rd.path / LOCK_FILE).unlink()  # leave no empty run directory behind
            raise
        finally:
            for folder in made:  # the run directory, then the parents this call created
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()


def resume_config(
    saved: ExperimentConfig, settings: Sequence[str]
) -> tuple[ExperimentConfig, list[str]]:
    """A run's saved config with ``settings`` applied, and the changes as ``key (old -> new)``.

    Raises:
        ConfigError: a change outside ``RESUME_SAFE_KEYS``, or an invalid config.
    """
    cfg = apply_overrides(saved, list(settings))
    plain = [json.loads(json.dumps(to_dict(c))) for c in (saved, cfg)]
    changes = config_diff(*plain)
    refused = [c for c in changes if c.split(" ", 1)[0] not in RESUME_SAFE_KEYS]
    if refused:
        raise ConfigError(
            f"--resume cannot change {'; '.join(refused)}: a resumed run keeps its settings "
            f"except {', '.join(RESUME_SAFE_KEYS)}; start a new run (another --name) instead"
        )
    check(cfg)
    return cfg, changes


@dataclass
class ResumeOutcome:
    """What :func:`resume_run` did.

    Attributes:
        rd: the run directory.
        cfg: the config it continued with.
        changes: settings changed (``key (old -> new)``).
        result: the ``TrainResult``, or None when the run had finished and nothing was left.
        record: the finished run's record when nothing was resumed.
        why_not: why a finished run was not resumed (``it stopped early`` / ``nothing is left``).
    """

    rd: RunDir
    cfg: ExperimentConfig
    changes: list[str] = field(default_factory=list)
    result: Any = None
    record: dict[str, Any] | None = None
    why_not: str | None = None


def resume_run(
    path: str | Path,
    settings: Sequence[str] = (),
    *,
    resume_from: str = "last",
    show_progress: bool = False,
    on_start: OnStart | None = None,
) -> ResumeOutcome:
    """Continue the run in ``path`` (its config.yaml, with ``settings`` applied).

    Raises:
        OodrecError: not a run directory, another writer, a refused setting, a damaged
            checkpoint; a refused or failed resume leaves a finished run's record in place.
    """
    from oodrec.data.dataset import load_dataset
    from oodrec.device import check_device
    from oodrec.train.loop import fit_run
    from oodrec.train.tracking import check_tracking

    rd = RunDir(path)
    rd.load_config()  # fails on a directory that is no run before a lock file is created
    with rd.lock("resume"):  # taken before torch loads: a second writer is refused at once
        saved = rd.load_config()
        cfg, changes = resume_config(saved, settings)
        check_device(cfg.train.device)
        check_tracking(cfg.track)
        extending = False
        if rd.is_finished():
            rec = rd.read_record()
            extending = cfg.train.epochs > saved.train.epochs and not rec.get("stopped_early")
            if not extending:
                why = "it stopped early" if rec.get("stopped_early") else "nothing is left"
                return ResumeOutcome(rd, cfg, changes, record=rec, why_not=why)
        dataset = load_dataset(cfg.data)
        check_with_data(cfg, dataset)
        _log_data_warnings(dataset, changes)
        result = fit_run(
            cfg,
            dataset,
            rd,
            resume=True,
            show_progress=show_progress,
            resume_from=resume_from,
            changes=changes,
            extending=extending,
            on_ready=None if on_start is None else lambda: on_start(rd),
        )
        return ResumeOutcome(rd, cfg, changes, result=result)


__all__ = [
    "RESUME_SAFE_KEYS",
    "ResumeOutcome",
    "exists_message",
    "new_run",
    "resume_config",
    "resume_run",
]
