"""The ``tune:`` section of a grid, and the configs a search builds from it.

``parse_tune`` checks the section against the grid's methods and configs (the section's keys
are described in :mod:`oodrec.bench.tune`). ``base_config`` is the config a trial of one
(dataset, method) starts from, ``with_params`` sets a trial's searched values on it, and
``with_epoch_cap`` gives the final runs a larger epoch cap than the trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from oodrec.bench.grid import (
    GridSpec,
    entry_config,
    grid_experiment,
    set_path,
    warn_inert,
    with_experiment,
)
from oodrec.config import ExperimentConfig
from oodrec.errors import ConfigError

TUNE_KEYS = ("trials", "seed", "startup_trials", "warmup_evals", "final_epochs", "space", "methods")
PARAM_KEYS = ("low", "high", "log", "type", "choices")


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
    """The parsed ``tune:`` section of a grid (see :mod:`oodrec.bench.tune`)."""

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
                probe_cfg = with_params(cfg, {p.key: int(probe) if p.kind == "int" else probe})
            except ConfigError as exc:
                raise ConfigError(f"{where}: method {method.name!r}, {p.key}: {exc}") from None
            why = inert_settings(probe_cfg).get(p.key)
            if why:  # a searched dimension that cannot matter spends trials for nothing
                inert[(method.name, f"{p.key} (searched)")] = why
    warn_inert(where, inert)
    return tune


def base_config(
    spec: GridSpec,
    dataset: str,
    method: str,
    tune: TuneSpec,
    extra_overrides: list[str] | None = None,
) -> ExperimentConfig:
    """The config a trial of (dataset, method) starts from: the grid's, at the tuning seed.
    Its MLflow experiment (``track.experiment``, unless set) is one per study,
    ``GRID/DATASET/METHOD``: the study's trials and its final runs."""
    m = next(x for x in spec.methods if x.name == method)
    cfg = entry_config(spec.base, dataset, m, list(extra_overrides or []))
    study = f"{Path(dataset).name}/{method}"  # the Optuna study's name (tune.study.study_name)
    grid = grid_experiment(spec)
    cfg = with_experiment(cfg, f"{grid}/{study}" if grid else study)
    return replace(cfg, seed=tune.seed)


def with_params(cfg: ExperimentConfig, params: dict[str, Any]) -> ExperimentConfig:
    """``cfg`` with the trial's values set (typed values, not strings), assembled by
    ``oodrec.experiment.extend``."""
    from oodrec.experiment import extend

    return extend(cfg, sorted(params.items()))


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


__all__ = [
    "PARAM_KEYS",
    "TUNE_KEYS",
    "Param",
    "TuneSpec",
    "base_config",
    "parse_tune",
    "with_epoch_cap",
    "with_params",
]
