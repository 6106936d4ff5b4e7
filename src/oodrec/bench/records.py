"""Finished runs as data: read ``record.json``, ``epochs.jsonl`` and ``bench.json`` of run dirs.

Reports and figures read only these files (and, for per-item-bucket figures, the best
checkpoint), so they can be rebuilt without retraining.

Method labels: the ``method`` of ``bench.json`` when the grid wrote one, else, for ``lightgcn``,
the sampler name plus the options that differ from the sampler's defaults, e.g.
``cnsdiff[mode=causal]``, and for any other model its name plus its non-default options, e.g.
``diffrec[steps=10]`` (never a sampler the run does not use).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from oodrec.runs import RunDir

logger = logging.getLogger(__name__)

ABLATION_KEYS = ("mixup", "align", "causal")
"""CNSDiff ablation switches (False = the component is removed)."""
BETA_KEYS = ("initial_alpha", "initial_beta", "final_alpha", "final_beta")
"""CNSDiff mix-ratio Beta schedule endpoints."""


def option_defaults(sampler: str) -> dict[str, Any] | None:
    """Default option values of a registered sampler (``None`` for an unknown name)."""
    from oodrec.samplers import SAMPLERS

    if sampler not in SAMPLERS:
        return None
    return _dataclass_defaults(SAMPLERS.get(sampler).Options)


def _dataclass_defaults(cls: type) -> dict[str, Any]:
    if cls is type(None):
        return {}
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def model_defaults(model: str) -> dict[str, Any] | None:
    """Default option values of a registered method (``None`` for an unknown name)."""
    from oodrec.methods import METHODS

    if model not in METHODS:
        return None
    return _dataclass_defaults(METHODS.get(model).Options)


def non_default_options(
    sampler: str, options: dict[str, Any], defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The options whose value differs from the default (the sampler's unless ``defaults``)."""
    defaults = (option_defaults(sampler) if defaults is None else defaults) or {}
    return {
        k: options[k] for k in sorted(options) if k not in defaults or defaults[k] != options[k]
    }


def derived_label(
    name: str, options: dict[str, Any], defaults: dict[str, Any] | None = None
) -> str:
    """``name[key=value,...]`` with the non-default options (just ``name`` if none)."""
    extra = non_default_options(name, options, defaults)
    if not extra:
        return name
    return f"{name}[{','.join(f'{k}={v}' for k, v in extra.items())}]"


@dataclass
class RunRecord:
    """One finished run.

    Attributes:
        path: the run directory.
        record: ``record.json``.
        bench: ``bench.json`` (empty when the run was not made by a grid).
    """

    path: Path
    record: dict[str, Any]
    bench: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        """The run's resolved config (a plain dict)."""
        return self.record.get("config", {})

    @property
    def dataset(self) -> str:
        """Dataset name."""
        return str(self.record.get("dataset") or self.config.get("data", {}).get("dataset"))

    @property
    def sampler(self) -> str:
        """Sampler name (``none`` for a method that takes no sampler)."""
        section = self.config.get("sampler") or {}
        return str(section.get("name") or self.record.get("sampler") or "none")

    @property
    def options(self) -> dict[str, Any]:
        """Sampler options as given (mode defaults not filled in)."""
        return dict((self.config.get("sampler") or {}).get("options") or {})

    @property
    def model(self) -> str:
        """Method (model) name; runs from before methods existed are ``lightgcn``."""
        return str(self.config.get("model", {}).get("name", "lightgcn"))

    @property
    def model_options(self) -> dict[str, Any]:
        """Method options as given."""
        return dict(self.config.get("model", {}).get("options", {}))

    @property
    def seed(self) -> int:
        """Run seed."""
        return int(self.record.get("seed", self.config.get("seed", 0)))

    @property
    def sweep(self) -> dict[str, Any]:
        """Sweep point of the run (``bench.json``; empty otherwise)."""
        return dict(self.bench.get("sweep") or {})

    @property
    def selection(self) -> str:
        """The record's selection label, e.g. ``selected on val``."""
        return str(self.record.get("selection", {}).get("label", "selection unknown"))

    @property
    def method(self) -> str:
        """``bench.json`` method, else the derived sampler (lightgcn) or model label."""
        if self.bench.get("method"):
            return str(self.bench["method"])
        if self.model != "lightgcn":
            return derived_label(self.model, self.model_options, model_defaults(self.model))
        return derived_label(self.sampler, self.options)

    @property
    def label(self) -> str:
        """Method label plus the run's sweep point, e.g. ``cnsdiff[train.lr=0.001]``."""
        if not self.sweep:
            return self.method
        return f"{self.method}[{','.join(f'{k}={v}' for k, v in self.sweep.items())}]"

    @property
    def order(self) -> str:
        """How the run's data orders interactions: the record's ``order`` (``timestamps`` or
        ``none (no timestamps; ...)``); for records written before it existed, derived from
        ``data_report.has_timestamps``, else ``not recorded``."""
        if self.record.get("order"):
            return str(self.record["order"])
        report = self.record.get("data_report") or {}
        if "has_timestamps" not in report:
            return "not recorded"
        from oodrec.data.interactions import ORDER_NONE, ORDER_TIMESTAMPS

        return ORDER_TIMESTAMPS if report["has_timestamps"] else ORDER_NONE

    def metric(self, split: str, name: str) -> float | None:
        """A metric of the selected epoch, or None."""
        value = self.record.get("metrics", {}).get(split, {}).get(name)
        return None if value is None else float(value)

    @property
    def capped(self) -> bool:
        """Whether the epoch cap, not early stopping, ended the run: it ran all ``train.epochs``
        before its patience ran out (without early stopping, patience 0: its best epoch is the
        last), so more epochs might have found a better one."""
        train = self.config.get("train", {})
        cap, ran = train.get("epochs"), self.record.get("epochs_run")
        best = self.record.get("best_epoch")
        if not isinstance(cap, int) or not isinstance(ran, int) or not isinstance(best, int):
            return False
        if self.record.get("stopped_early") or ran < cap or self.record.get("trains") is False:
            return False  # (a method with nothing to train, MostPop, has no cap to bind)
        return bool(train.get("patience")) or best == ran - 1

    @cached_property
    def epochs(self) -> list[dict[str, Any]]:
        """Rows of ``epochs.jsonl`` (a truncated last line is ignored)."""
        return RunDir(self.path).read_epochs()

    def family_key(self, free_options: tuple[str, ...]) -> str:
        """Everything of the config except seed, names, dataset and ``free_options``.

        Runs with equal keys differ only in those (an ablation or sensitivity family).
        """
        cfg = json.loads(json.dumps(self.config))
        for key in ("seed", "name", "out_dir"):
            cfg.pop(key, None)
        cfg.get("data", {}).pop("dataset", None)
        if self.model != "lightgcn":
            cfg.pop("sampler", None)  # none, or the unused default of runs that kept one
        opts = (cfg.get("sampler") or {}).get("options", {})
        defaults = option_defaults(self.sampler) or {}
        for key in list(opts):
            if key in free_options or (key in defaults and defaults[key] == opts[key]):
                opts.pop(key)
        sweep = {k: v for k, v in self.sweep.items() if k.split(".")[-1] not in free_options}
        return json.dumps([cfg, sweep], sort_keys=True)


def find_runs(root: str | Path) -> tuple[list[Path], list[Path]]:
    """Run directories below ``root`` (at any depth, or ``root`` itself), sorted: finished ones
    (a ``record.json``) and unfinished ones (a ``config.yaml`` only). Symbolic links are
    followed; hidden directories (a copy in progress, see ``bench.archive``) are not
    searched."""
    finished, unfinished = [], []
    for here, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if "record.json" in files:
            finished.append(Path(here))
        elif "config.yaml" in files:
            unfinished.append(Path(here))
    return sorted(finished), sorted(unfinished)


def _read_json(path: Path) -> tuple[Any, str | None]:
    """The JSON in ``path``, or None and why it cannot be read."""
    try:
        return json.loads(path.read_text()), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path.name} is unreadable ({exc})"


def load_runs(runs_dir: str | Path, warn: bool = True) -> list[RunRecord]:
    """Every finished run below ``runs_dir`` (recursively), sorted by path.

    Args:
        runs_dir: a directory holding run directories (at any depth, symbolic links followed,
            so a report can be assembled from links to runs of several grids; hidden
            directories skipped) or one run directory.
        warn: log a warning for each run directory skipped (no ``record.json``: unfinished;
            an unreadable ``record.json`` or ``bench.json``), with the reason, and their count.

    Returns:
        The runs with a readable ``record.json``; search trials of ``oodrec tune`` are left out
        (counted in an info line: their final runs are the results).
    """
    runs = []
    trials = 0
    finished, unfinished = find_runs(runs_dir)
    skipped = [(path, "no record.json (the run has not finished)") for path in unfinished]
    for path in finished:
        record, why = _read_json(path / "record.json")
        bench: Any = {}
        if why is None and (path / "bench.json").is_file():
            bench, why = _read_json(path / "bench.json")
        if why is None and not (isinstance(record, dict) and isinstance(bench, dict)):
            why = "record.json or bench.json does not hold a JSON object"
        if why is not None:
            skipped.append((path, why))
            continue
        if bench.get("trial"):
            trials += 1  # a search trial of `oodrec tune`: its final runs are the results
            continue
        runs.append(RunRecord(path, record, bench))
    if trials:
        logger.info("%s: %d oodrec tune trial run(s) left out of the tables", runs_dir, trials)
    if skipped and warn:
        for path, why in sorted(skipped):
            logger.warning("skipping run directory %s: %s", path, why)
        logger.warning(
            "%s: skipped %d run director%s (%d unfinished, %d unreadable); %d finished run(s) read",
            runs_dir,
            len(skipped),
            "y" if len(skipped) == 1 else "ies",
            len(unfinished),
            len(skipped) - len(unfinished),
            len(runs),
        )
    return runs


def by_selection(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Runs split by selection label (val-selected first), so tables never mix the two."""
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(run.selection, []).append(run)
    if len(groups) > 1:
        logger.warning(
            "runs use %d selection rules (%s): each gets its own tables",
            len(groups),
            "; ".join(sorted(groups)),
        )
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] != "selected on val", kv[0])))


def is_main_run(run: RunRecord) -> bool:
    """True for Table-1 runs: no sweep point and every ablation switch on."""
    return not run.sweep and all(run.options.get(k, True) is not False for k in ABLATION_KEYS)


__all__ = [
    "ABLATION_KEYS",
    "BETA_KEYS",
    "RunRecord",
    "by_selection",
    "derived_label",
    "find_runs",
    "is_main_run",
    "load_runs",
    "non_default_options",
    "option_defaults",
]
