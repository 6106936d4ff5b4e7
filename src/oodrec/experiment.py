"""One way to assemble an experiment: the config a run trains with, checked once.

``oodrec train``, ``oodrec bench`` (each grid entry) and ``oodrec tune`` (each trial and final
run) all build their configs with :func:`assemble`, in this order (later wins):

1. the base: the defaults, a ``--config`` file, or a grid's ``base`` with the entry's dataset
   and method chosen (:func:`choose_method`);
2. the settings the method and its sampler imply (``oodrec.methods.implied_overrides``: DiffRec's
   learning rate and batch size, CNSDiff ``code_faithful``'s L2 form, HDRM's backbone shape), for
   every key not set explicitly;
3. the explicit settings: flags and ``--set`` on the command line; a grid entry's
   ``overrides``, its sweep point and ``bench --set``; a trial's sampled values;
4. then the checks: the method, its options and its sampler's (``check_method_config``), and the
   checks that span sections (``validate_config``). A method that takes no negative sampler
   keeps none (``sampler: null`` in its config.yaml).

What the implied settings are is computed from the config after the explicit settings, so a
sweep or ``--set`` that changes a sampler's mode also changes what that mode implies. The
device is checked where the run starts (``oodrec.device.check_device``), on the machine that
trains it. Nothing here imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from oodrec.config import (
    ExperimentConfig,
    SamplerConfig,
    parse_override,
    set_path,
    validate_config,
)
from oodrec.errors import ConfigError

logger = logging.getLogger(__name__)

Setting = str | tuple[str, Any]
"""A dotted ``key=value`` string (its value parsed as the field's type) or a ``(key, value)``
pair with a typed value."""


def _split(setting: Setting) -> tuple[str, Any]:
    if isinstance(setting, tuple):
        return setting
    return parse_override(setting)


def choose_method(
    cfg: ExperimentConfig,
    model: str,
    sampler: str | None = None,
    options: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """``cfg`` with the method ``model`` chosen: with a ``sampler``, ``options`` are the
    sampler's; without one, they are the method's and the sampler section is reset."""
    options = dict(options or {})
    if sampler is not None:
        base = cfg.sampler or SamplerConfig()
        return replace(
            cfg,
            model=replace(cfg.model, name=model),
            sampler=replace(base, name=sampler, options=options),
        )
    return replace(cfg, model=replace(cfg.model, name=model, options=options), sampler=None)


def assemble(
    base: ExperimentConfig | None = None,
    settings: Sequence[Setting] = (),
    *,
    warn_inert: bool = True,
) -> ExperimentConfig:
    """The checked config of one run (see the module docstring for the order).

    Args:
        base: the config to start from (default: ``ExperimentConfig()``).
        settings: explicit settings, applied in order; they win over implied ones.
        warn_inert: log a warning for each sampler option set that cannot change training
            (``oodrec.methods.inert_settings``); grids collect and warn once per method instead.

    Returns:
        The resolved config; a method without a sampler has ``sampler`` None.

    Raises:
        ConfigError: an unknown key, method, sampler or option, a sampler given to a method that
            takes none, or an inconsistent setting; the message names the key.
    """
    from oodrec.methods import METHODS, implied_overrides, inert_settings

    cfg = base if base is not None else ExperimentConfig()
    explicit: set[str] = set()
    for setting in settings:
        key, value = _split(setting)
        cfg = set_path(cfg, key, value)
        explicit.add(key)
    cls = METHODS.get(cfg.model.name)
    if not cls.takes_sampler:
        given = sorted(k for k in explicit if k == "sampler" or k.startswith("sampler."))
        if given:
            shown = ", ".join(f"{k}={dict(map(_split, settings)).get(k)}" for k in given)
            raise ConfigError(
                f"{shown} was given, but model {cfg.model.name!r} takes no negative sampler; "
                f"drop --sampler / sampler.* (samplers go with --model lightgcn)"
            )
    elif cfg.sampler is None:
        cfg = replace(cfg, sampler=SamplerConfig())
    for key, value in implied_overrides(cfg).items():
        if key not in explicit:
            cfg = set_path(cfg, key, value)
    if not cls.takes_sampler:
        cfg = replace(cfg, sampler=None)
    if "eval.ips_gamma" not in explicit:
        cfg = _split_ips_gamma(cfg)
    check(cfg)
    if warn_inert:
        for key, why in inert_settings(cfg).items():
            value = cfg.sampler.options[key.split(".", 1)[1]] if cfg.sampler else None
            logger.warning("%s=%s has no effect: %s", key, value, why)
    return cfg


def _split_ips_gamma(cfg: ExperimentConfig) -> ExperimentConfig:
    """``eval.ips_gamma`` follows the split's protocol where it is known: a popularity split built
    by ``oodrec prepare --exponent E`` drew its OOD test with weight ``popularity ** -E``, so its
    IPS val estimator reweights by the same exponent. Only the default value is replaced (a
    config that names another value keeps it).

    Raises:
        DataValidationError: the dataset's ``prepare.json`` is unreadable or names a popularity
            exponent that is not a number >= 0.
    """
    from oodrec.config import EvalConfig
    from oodrec.data.dataset import dataset_folder
    from oodrec.data.layouts import popularity_exponent
    from oodrec.errors import DataValidationError

    if cfg.eval.ips_gamma != EvalConfig().ips_gamma:
        return cfg
    try:
        folder = dataset_folder(cfg.data)
    except (DataValidationError, OSError):  # an unknown dataset: the loader reports it
        return cfg
    # a malformed prepare.json is an error here, before any work (never a silent default)
    exponent = None if folder is None else popularity_exponent(folder)
    if exponent is None or exponent == cfg.eval.ips_gamma:
        return cfg
    logger.info(
        "eval.ips_gamma=%g: the exponent of %s's popularity split (prepare.json)",
        exponent,
        folder,
    )
    return replace(cfg, eval=replace(cfg.eval, ips_gamma=exponent))


def _value(cfg: Any, key: str) -> Any:
    """The value at dotted ``key`` (a model or sampler option through ``options``)."""
    from oodrec.config import stored_key

    node = cfg
    for part in stored_key(key).split("."):
        if node is None:
            return None
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
    return node


def extend(cfg: ExperimentConfig, settings: Sequence[Setting]) -> ExperimentConfig:
    """An assembled ``cfg`` with more explicit settings (a tuning trial's values), assembled by
    the same rule: a setting the new values imply differently (a searched sampler mode and its
    L2 form) follows them, unless ``cfg`` had set that key explicitly (its value is not the one
    ``cfg``'s own settings implied) or ``settings`` set it. A key that ``cfg`` set explicitly
    to the value it would have had anyway cannot be told from an unset one: such a key follows
    the new values.

    Raises:
        ConfigError: as :func:`assemble`.
    """
    from oodrec.methods import implied_overrides

    before = implied_overrides(cfg)
    out = cfg
    explicit = set()
    for setting in settings:
        key, value = _split(setting)
        out = set_path(out, key, value)
        explicit.add(key)
    for key, value in implied_overrides(out).items():
        if key in explicit or (key in before and _value(cfg, key) != before[key]):
            continue
        out = set_path(out, key, value)
    check(out)
    return out


def check(cfg: ExperimentConfig) -> None:
    """The checks of :func:`assemble` alone, for a config built another way (a library caller's,
    or a run directory's config.yaml): the method, its options and its sampler's, and the checks
    that span sections. Nothing is implied or changed.

    Raises:
        ConfigError: naming the key.
    """
    from oodrec.methods import check_method_config

    check_method_config(cfg)
    validate_config(cfg)


def check_with_data(cfg: ExperimentConfig, dataset: Any) -> None:
    """The checks that need the loaded dataset, run where it is loaded, before anything is
    written (``oodrec train``, each grid and tuning run, ``oodrec speed``): every K of
    ``eval.ks`` is at most the number of items (a larger K ranks every item, so Recall@K is 1
    and selecting on it means nothing).

    Raises:
        ConfigError: naming the key, the value and the number of items.
    """
    num_items = int(dataset.num_items)
    over = [k for k in cfg.eval.ks if k > num_items]
    if over:
        raise ConfigError(
            f"eval.ks={list(cfg.eval.ks)}: every K must be <= the number of items of dataset "
            f"{dataset.name!r} ({num_items:,}); {', '.join(map(str, over))} would rank every item"
        )


__all__ = ["Setting", "assemble", "check", "check_with_data", "choose_method", "extend"]
