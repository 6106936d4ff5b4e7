"""Benchmark grids: a typed spec loaded from YAML and expanded into named experiment configs.

A grid file looks like::

    out_dir: runs/paper            # parent directory of the run directories
    base:                          # an ExperimentConfig mapping, or a list of dotted overrides
      train: {epochs: 120, patience: 10}
    methods:                       # one entry per compared method
      - {name: rns, sampler: rns}
      - {name: cnsdiff-causal, sampler: cnsdiff, options: {mode: causal}}
      - {name: dns-lr, sampler: dns, overrides: [train.lr=0.001]}
      - {name: diffrec, model: diffrec, options: {steps: 10}}   # a method that is not LightGCN
    datasets: [food, yelp2018]
    seeds: [1, 2, 3]
    sweep:                         # optional: cartesian product over every listed value
      sampler.initial_alpha: [1.0, 2.0]

A method entry names a ``sampler`` (the ``lightgcn`` method with that sampler) or a ``model``
(``oodrec models``); its ``options`` belong to the sampler when there is one, else to the model.
A plain string is a sampler name or a model name.

Each run's config is assembled by ``oodrec.experiment.assemble``: ``base``, ``data.dataset`` and
the method's model, sampler and options; then, as explicit settings, the method's ``overrides``,
the sweep values and extra overrides given by the caller (``oodrec bench --set``); the settings
the method implies (``methods.implied_overrides``, e.g. DiffRec's learning rate, or
``code_faithful``'s L2 form) fill every key not set explicitly; then ``seed``, ``out_dir`` and
``name``. Run names are ``{dataset}-{method}-seed{seed}[-{key}={value}...]``.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from oodrec.config import ExperimentConfig, apply_overrides, from_dict, read_yaml, set_path
from oodrec.errors import ConfigError

logger = logging.getLogger(__name__)

GRID_KEYS = ("base", "methods", "datasets", "seeds", "sweep", "out_dir", "tune")
METHOD_KEYS = ("name", "model", "sampler", "options", "overrides")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+\-]")


@dataclass(frozen=True)
class MethodSpec:
    """One compared method: a model (with a sampler for ``lightgcn``), options and optional
    extra overrides."""

    name: str
    """Label used in run names and report rows (unique within a grid)."""
    sampler: str | None
    """Registered sampler name (``oodrec samplers``), for ``lightgcn``; None for other models."""
    options: dict[str, Any] = field(default_factory=dict)
    """Sampler options with a sampler, else model options (checked against their dataclass)."""
    overrides: tuple[str, ...] = ()
    """Dotted ``key=value`` overrides applied after the method settings."""
    model: str = "lightgcn"
    """Registered method name (``oodrec models``)."""


@dataclass(frozen=True)
class GridSpec:
    """A benchmark grid: base config x datasets x methods x sweep values x seeds."""

    base: ExperimentConfig
    """Config every run starts from."""
    methods: tuple[MethodSpec, ...]
    """Compared methods (at least one)."""
    datasets: tuple[str, ...]
    """Dataset names or directories (at least one)."""
    seeds: tuple[int, ...]
    """Run seeds (at least one)."""
    sweep: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    """Dotted key -> values; every combination is run (cartesian product)."""
    out_dir: str = "runs"
    """Parent directory of the run directories."""
    source: str = "<grid>"
    """Where the spec came from (for messages and ``bench.json``)."""
    tune: dict[str, Any] = field(default_factory=dict)
    """The ``tune:`` section (``oodrec tune``; parsed by ``oodrec.bench.tune.parse_tune``)."""


@dataclass(frozen=True)
class GridRun:
    """One expanded run of a grid.

    Attributes:
        name: run directory name.
        config: the fully resolved config (``out_dir`` and ``name`` set).
        method: the method's name.
        dataset: the dataset entry of the grid.
        seed: the run seed.
        sweep: sweep key -> value of this run (empty without a sweep).
        info: more for ``bench.json`` (``tuning`` of an ``oodrec tune`` final run).
    """

    name: str
    config: ExperimentConfig
    method: str
    dataset: str
    seed: int
    sweep: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        """Unpack as ``(name, config)``."""
        return iter((self.name, self.config))


def _fail(source: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {message}")


def _check_keys(data: Any, allowed: tuple[str, ...], where: str, source: str) -> dict:
    if not isinstance(data, dict):
        raise _fail(source, f"{where} must be a mapping, got {data!r}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise _fail(
            source,
            f"unknown key(s) {', '.join(unknown)} in {where}; valid keys: {', '.join(allowed)}",
        )
    return data


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        value = [value]
    return value


def _parse_base(raw: Any, source: str) -> ExperimentConfig:
    if raw is None:
        return ExperimentConfig()
    if isinstance(raw, list):
        if not all(isinstance(x, str) for x in raw):
            raise _fail(source, "base as a list must hold key=value strings")
        return apply_overrides(ExperimentConfig(), raw)
    return from_dict(ExperimentConfig, raw, prefix="base.")


def _parse_method(raw: Any, index: int, source: str) -> MethodSpec:
    from oodrec.methods import METHODS

    if isinstance(raw, str):
        is_model = raw in METHODS and raw != "lightgcn"
        raw = {"name": raw, "model": raw} if is_model else {"name": raw, "sampler": raw}
    where = f"methods[{index}]"
    raw = _check_keys(raw, METHOD_KEYS, where, source)
    model = str(raw.get("model") or "lightgcn")
    if model not in METHODS:
        raise _fail(source, f"{where}: {_unknown_model(model)}")
    takes_sampler = METHODS.get(model).takes_sampler
    if takes_sampler and "sampler" not in raw:
        raise _fail(source, f"{where} needs a 'sampler' (model {model!r} trains with one)")
    if not takes_sampler and raw.get("sampler") is not None:
        raise _fail(source, f"{where}: model {model!r} takes no sampler (drop 'sampler')")
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        raise _fail(source, f"{where}.options must be a mapping, got {options!r}")
    overrides = _as_list(raw.get("overrides"))
    if not all(isinstance(x, str) for x in overrides):
        raise _fail(source, f"{where}.overrides must be key=value strings")
    sampler = str(raw["sampler"]) if takes_sampler else None
    name = str(raw.get("name") or sampler or model)
    if _UNSAFE.search(name):
        raise _fail(source, f"{where}.name {name!r} may use only letters, digits and ._=+-")
    return MethodSpec(name, sampler, dict(options), tuple(overrides), model)


def _unknown_model(name: str) -> str:
    from oodrec.methods import METHODS

    try:
        METHODS.get(name)
    except ConfigError as exc:
        return str(exc)
    return f"unknown model {name!r}"


def parse_grid(data: Any, source: str = "<grid>") -> GridSpec:
    """Build a GridSpec from a parsed YAML mapping.

    Args:
        data: the mapping (keys ``base``, ``methods``, ``datasets``, ``seeds``, ``sweep``,
            ``out_dir``, ``tune``).
        source: name used in error messages (the file path).

    Returns:
        The validated spec.

    Raises:
        ConfigError: unknown keys, missing or empty lists, duplicate method names, bad values;
            the message starts with ``source``.
    """
    data = _check_keys(data, GRID_KEYS, "the grid", source)
    try:
        base = _parse_base(data.get("base"), source)
    except ConfigError as exc:
        raise _fail(source, str(exc)) from None
    methods = tuple(
        _parse_method(m, i, source) for i, m in enumerate(_as_list(data.get("methods")))
    )
    datasets = tuple(str(d) for d in _as_list(data.get("datasets")))
    seeds_raw = _as_list(data.get("seeds"))
    for key, values in (("methods", methods), ("datasets", datasets), ("seeds", seeds_raw)):
        if not values:
            raise _fail(source, f"'{key}' must be a non-empty list")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds_raw):
        raise _fail(source, f"seeds must be integers, got {seeds_raw!r}")
    names = [m.name for m in methods]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _fail(source, f"duplicate method name(s) {', '.join(dupes)}")
    sweep_raw = data.get("sweep") or {}
    if not isinstance(sweep_raw, dict):
        raise _fail(source, f"sweep must be a mapping of key -> list, got {sweep_raw!r}")
    sweep = {str(k): tuple(_as_list(v)) for k, v in sweep_raw.items()}
    empty = [k for k, v in sweep.items() if not v]
    if empty:
        raise _fail(source, f"sweep key(s) {', '.join(empty)} have no values")
    return GridSpec(
        base=base,
        methods=methods,
        datasets=datasets,
        seeds=tuple(int(s) for s in seeds_raw),
        sweep=sweep,
        out_dir=str(data.get("out_dir") or base.out_dir),
        source=source,
        tune=_parse_tune_section(data.get("tune"), source),
    )


def _parse_tune_section(raw: Any, source: str) -> dict[str, Any]:
    """The ``tune:`` mapping, checked in full by ``oodrec.bench.tune.parse_tune``."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(source, f"tune must be a mapping, got {raw!r}")
    return dict(raw)


def load_grid(path: str | Path) -> GridSpec:
    """Load and validate a grid YAML file.

    Args:
        path: the grid file.

    Returns:
        The spec (``source`` is the path).

    Raises:
        ConfigError: missing file, invalid YAML or an invalid spec; the message names the file.
    """
    path = Path(path)
    return parse_grid(read_yaml(path, "grid file"), source=str(path))


def restrict_grid(
    spec: GridSpec,
    datasets: list[str] | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
) -> GridSpec:
    """The part of ``spec`` with only the named datasets, methods (by ``name``) and seeds.

    Run names, configs and out_dir are unchanged, so a grid split this way (across machines, or
    one dataset at a time) writes exactly the run directories the whole grid would.

    Raises:
        ConfigError: a name or seed the grid does not have; the message lists what it has.
    """

    def pick(kind: str, wanted: list | None, have: tuple) -> tuple:
        if wanted is None:
            return have
        missing = [w for w in wanted if w not in have]
        if missing:
            shown = ", ".join(str(h) for h in have)
            raise _fail(
                spec.source, f"--{kind} {missing[0]!r} is not in the grid's {kind}: {shown}"
            )
        return tuple(h for h in have if h in wanted)  # the grid's order

    names = pick("methods", methods, tuple(m.name for m in spec.methods))
    tune = spec.tune
    if isinstance(tune.get("methods"), dict):
        # the search spaces of the methods left out go too; a name the grid never had stays,
        # so that parse_tune still reports it
        dropped = {m.name for m in spec.methods} - set(names)
        tune = {**tune, "methods": {k: v for k, v in tune["methods"].items() if k not in dropped}}
    return replace(
        spec,
        datasets=pick("datasets", datasets, spec.datasets),
        methods=tuple(m for m in spec.methods if m.name in names),
        seeds=pick("seeds", seeds, spec.seeds),
        tune=tune,
    )


def _fmt(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return _UNSAFE.sub("_", text)


def run_name(dataset: str, method: str, seed: int, sweep: dict[str, Any]) -> str:
    """``{dataset}-{method}-seed{seed}[-{key}={value}...]`` with unsafe characters replaced.

    Args:
        dataset: dataset name or directory (only its last path part is used).
        method: method name.
        seed: run seed.
        sweep: sweep key -> value of the run, in grid order.

    Returns:
        The run directory name.
    """
    parts = [_fmt(Path(dataset).name), method, f"seed{seed}"]
    parts += [f"{_fmt(k)}={_fmt(v)}" for k, v in sweep.items()]
    return "-".join(parts)


def _method_config(cfg: ExperimentConfig, method: MethodSpec) -> ExperimentConfig:
    """``cfg`` with the entry's method, sampler and options chosen (nothing implied yet)."""
    from oodrec.experiment import choose_method

    return choose_method(cfg, method.model, method.sampler, method.options)


def entry_config(
    base: ExperimentConfig,
    dataset: str,
    method: MethodSpec,
    settings: list[Any] | tuple[Any, ...] = (),
) -> ExperimentConfig:
    """The assembled config of a grid entry (``oodrec.experiment.assemble``): ``base`` with the
    dataset and the method chosen, then the method's ``overrides`` and ``settings`` (a sweep
    point's ``(key, value)`` pairs, ``bench --set``, a trial's values) as explicit settings."""
    from oodrec.experiment import assemble

    cfg = _method_config(set_path(base, "data.dataset", dataset), method)
    return assemble(cfg, [*method.overrides, *settings], warn_inert=False)


TEMPLATE_KEYS = ("dataset", "seed", "out_dir")


def _fill_templates(cfg: ExperimentConfig, dataset: str, seed: int, out: str) -> ExperimentConfig:
    """Model and sampler option strings with ``{dataset}``, ``{seed}`` or ``{out_dir}`` filled
    in for this run, e.g. HDRM's ``backbone_run: "{out_dir}/{dataset}-hdrm_backbone-seed{seed}"``.

    Raises:
        ConfigError: a placeholder other than these.
    """
    values = {"dataset": dataset, "seed": seed, "out_dir": out}

    def fill(options: dict[str, Any]) -> dict[str, Any]:
        out_opts = {}
        for key, value in options.items():
            if isinstance(value, str) and "{" in value:
                try:
                    value = value.format_map(values)
                except (KeyError, ValueError, IndexError) as exc:
                    raise ConfigError(
                        f"option {key}={value!r}: unknown placeholder {exc}; use "
                        f"{', '.join('{' + k + '}' for k in TEMPLATE_KEYS)}"
                    ) from None
            out_opts[key] = value
        return out_opts

    model = replace(cfg.model, options=fill(dict(cfg.model.options)))
    if cfg.sampler is None:
        return replace(cfg, model=model)
    sampler = replace(cfg.sampler, options=fill(dict(cfg.sampler.options)))
    return replace(cfg, model=model, sampler=sampler)


def expand_grid(
    spec: GridSpec, extra_overrides: list[str] | None = None, out_dir: str | None = None
) -> list[GridRun]:
    """Expand a grid into one resolved config per (dataset, method, sweep point, seed).

    Args:
        spec: the grid.
        extra_overrides: dotted overrides applied to every run after the grid's own settings.
        out_dir: replaces ``spec.out_dir``.

    Returns:
        Runs ordered by dataset, method, sweep point, seed.

    Raises:
        ConfigError: an invalid sampler, option or override (the message names the grid file),
            or two runs with the same name.
    """
    from oodrec.methods import inert_settings

    out = out_dir or spec.out_dir
    keys = list(spec.sweep)
    points = [dict(zip(keys, values)) for values in itertools.product(*spec.sweep.values())]
    runs: list[GridRun] = []
    seen: dict[str, str] = {}
    inert: dict[tuple[str, str], str] = {}
    for dataset in spec.datasets:
        for method in spec.methods:
            where = f"dataset {dataset!r}, method {method.name!r}"
            for point in points:
                try:
                    settings = [*point.items(), *(extra_overrides or [])]
                    pcfg = entry_config(spec.base, dataset, method, settings)
                    for key, why in inert_settings(pcfg).items():
                        inert.setdefault((method.name, key), why)
                except ConfigError as exc:
                    at = f"{where}, sweep {point}" if point else where
                    raise _fail(spec.source, f"{at}: {exc}") from None
                for seed in spec.seeds:
                    name = run_name(dataset, method.name, seed, point)
                    if name in seen:
                        raise _fail(spec.source, f"two runs are both named {name!r}")
                    seen[name] = where
                    final = replace(pcfg, seed=seed, out_dir=out, name=name)
                    final = with_experiment(final, grid_experiment(spec))
                    try:
                        final = _fill_templates(final, Path(dataset).name, seed, out)
                    except ConfigError as exc:
                        raise _fail(spec.source, f"{where}: {exc}") from None
                    runs.append(GridRun(name, final, method.name, dataset, seed, dict(point)))
    warn_inert(spec.source, inert)
    return runs


def grid_experiment(spec: GridSpec) -> str | None:
    """The MLflow experiment of a grid's runs (``track.experiment``): the grid file's name
    without its suffix (``configs/paper.yaml`` -> ``paper``); None for a grid given as data."""
    if spec.source == "<grid>":
        return None
    return Path(spec.source).stem or None


def with_experiment(cfg: ExperimentConfig, name: str | None) -> ExperimentConfig:
    """``cfg`` with ``track.experiment = name``, unless it names one already (the grid's
    ``base``, a method's overrides or ``--set track.experiment=...``) or ``name`` is None."""
    if name is None or cfg.track.experiment is not None:
        return cfg
    return replace(cfg, track=replace(cfg.track, experiment=name))


def warn_inert(source: str, inert: dict[tuple[str, str], str]) -> None:
    """One warning per (method, option) that a grid sets but that cannot change training
    (``oodrec.methods.inert_settings``): runs that differ only in it would be identical."""
    for (method, key), why in sorted(inert.items()):
        logger.warning(
            "%s: method %r sets %s, which has no effect: %s (runs that differ only in it are "
            "identical)",
            source,
            method,
            key,
            why,
        )


__all__ = [
    "GridRun",
    "GridSpec",
    "MethodSpec",
    "expand_grid",
    "grid_experiment",
    "load_grid",
    "parse_grid",
    "run_name",
]
