"""Typed, frozen experiment configuration. YAML is only a serialisation of these dataclasses.

Loading YAML fails on unknown keys; command-line overrides use dotted keys (``train.lr=1e-3``)
and are converted with the field's declared type (no ``eval``).
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from oodrec.errors import ConfigError
from oodrec.paths import check_run_name, read_input_text
from oodrec.ranges import check_ranges, ranged
from oodrec.track import TrackConfig

SPLITS = ("val", "iid_test", "ood_test")


@dataclass(frozen=True)
class DataConfig:
    """Where the interactions come from and how strictly they are read."""

    dataset: str = "synthetic"
    """A registered dataset name (``oodrec datasets``), ``synthetic`` (the built-in simulator with
    known true preferences) or a directory in the same layout."""
    data_dir: str | None = None
    """Data directory; ``None`` means ``$OODREC_DATA``, else the user cache directory."""
    on_bad_lines: Literal["error", "skip"] = "error"
    """``error``: a malformed line raises; ``skip``: skipped, counted and reported."""
    split_seed: int = ranged(2025, ge=0, le=2**63 - 1)
    """Seed for carving val / IID test out of train where a dataset ships only train + OOD test."""
    verify_checksums: bool = True
    """Check the shipped files' SHA-256 before loading."""
    synthetic: dict[str, Any] = field(default_factory=dict)
    """Simulator options for ``dataset=synthetic`` (fields of ``data.synthetic.SyntheticConfig``,
    e.g. ``data.synthetic.exposure_bias=2``)."""
    allow_sparse_ids: bool = False
    """Train on an id space far larger than the ids used (a stray huge id makes one embedding row
    per id up to it); refused by default: ``oodrec prepare`` renumbers ids to 0..N-1."""

    def __post_init__(self) -> None:
        check_ranges(self, "data.")
        if self.on_bad_lines not in ("error", "skip"):
            raise ConfigError(
                f"data.on_bad_lines must be 'error' or 'skip', got {self.on_bad_lines!r}"
            )


@dataclass(frozen=True)
class ModelConfig:
    """Which method (a recommender with its training rule), and its hyperparameters.

    ``emb_dim``, ``num_layers`` and ``init`` are the LightGCN backbone's (methods built on
    LightGCN share them); every other method option lives in ``options`` and is validated against
    the method's own options dataclass (``oodrec models``).
    """

    name: str = "lightgcn"
    """Registered method name (``oodrec models``)."""
    emb_dim: int = ranged(64, ge=1)
    """Embedding dimension d (LightGCN-based methods)."""
    num_layers: int = ranged(2, ge=0)
    """Number of propagation layers L (the CNSDiff code uses 2)."""
    init: Literal["xavier_uniform", "xavier_normal", "normal"] = "xavier_uniform"
    """Ego-embedding initialisation (``normal`` is N(0, 0.1^2))."""
    options: dict[str, Any] = field(default_factory=dict)
    """Method-specific options (``model.steps=5``); unknown keys fail when the method is built."""

    def __post_init__(self) -> None:
        check_ranges(self, "model.")
        if self.init not in ("xavier_uniform", "xavier_normal", "normal"):
            raise ConfigError(
                f"model.init {self.init!r} is not one of xavier_uniform, xavier_normal, normal"
            )


@dataclass(frozen=True)
class SamplerConfig:
    """Which negative sampler, and its options (validated against the sampler's own config)."""

    name: str = "rns"
    """Registered sampler name (``oodrec train --help`` lists them)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Sampler-specific options; unknown keys fail when the sampler is built."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, early stopping and model selection."""

    epochs: int = ranged(120, ge=1)
    """Maximum number of epochs."""
    batch_size: int = ranged(2048, ge=1)
    """Training triplets per batch."""
    lr: float = ranged(0.01, gt=0)
    """Adam learning rate of the backbone (CNSDiff trainer setting)."""
    l2: float = ranged(1e-4, ge=0)
    """L2 coefficient on the batch's ego embeddings."""
    l2_form: Literal["squared", "selfrec"] = "squared"
    """``squared``: lambda/(2B) sum ||e||^2 (docs/methods/lightgcn.md#bpr-and-l2); ``selfrec``:
    CNSDiff code's form (D10)."""
    drop_last: bool = False
    """Drop the last partial batch of an epoch."""
    patience: int = ranged(10, ge=0)
    """Stop after this many evaluations without improvement of the selection metric (0: never)."""
    select_on: Literal["val", "iid_test", "ood_test"] = "val"
    """Split used to pick the best epoch. Anything but ``val`` is labelled test-selected."""
    select_metric: str = "ndcg@20"
    """Metric used to pick the best epoch: ``recall@K`` / ``ndcg@K``, or an OOD-aware val
    estimator, ``ips_ndcg@K`` (inverse-popularity-weighted) or ``strat_ndcg@K`` (mean over
    equal-mass popularity buckets); see ``eval.ips_gamma``, ``eval.strata``."""
    select_rule: Literal["metric", "all_four"] = "metric"
    """``all_four``: the CNSDiff code's rule (all of R@10, N@10, R@20, N@20 must not drop)."""
    eval_every: int = ranged(1, ge=1)
    """Evaluate every this many epochs."""
    device: str = "cpu"
    """Torch device (``cpu``, ``cuda``, ``cuda:1``)."""
    deterministic: bool = True
    """Request deterministic kernels."""
    threads: int | Literal["auto"] = ranged(0, ge=0)
    """Torch intra-op threads: 0 keeps torch's default (one per core), ``auto`` takes the cores
    not busy with other work (cores minus the 1-minute load average, at least 1), N uses N.
    May be changed when a run is resumed."""
    fhn_batches: int = ranged(2, ge=0)
    """Fixed batches (1024 pairs each) on which negative diagnostics run every epoch; 0 disables."""
    eval_all_splits: bool = True
    """Evaluate val, IID test and OOD test every epoch (curves); False evaluates the test splits
    only when the selection split improves (same reported figures, less time)."""
    sync_free: bool | Literal["auto"] = "auto"
    """No host synchronisation in the batch loop: negatives are redrawn in a fixed number of
    device-side rounds (docs/gpu.md#sync-free-training). ``auto``: on for CUDA, off on the CPU."""

    def __post_init__(self) -> None:
        if self.threads != "auto" and (isinstance(self.threads, bool) or self.threads < 0):
            raise ConfigError(
                f"train.threads must be 0 (torch's default), 'auto' or a positive count, "
                f"got {self.threads!r}"
            )
        check_ranges(self, "train.")
        if self.select_on not in SPLITS:
            raise ConfigError(f"train.select_on must be one of {SPLITS}, got {self.select_on!r}")
        if self.l2_form not in ("squared", "selfrec"):
            raise ConfigError(f"train.l2_form must be 'squared' or 'selfrec', got {self.l2_form!r}")
        if self.select_rule not in ("metric", "all_four"):
            raise ConfigError(
                f"train.select_rule must be 'metric' or 'all_four', got {self.select_rule!r}"
            )
        if self.sync_free not in (True, False, "auto"):
            raise ConfigError(
                f"train.sync_free must be true, false or 'auto', got {self.sync_free!r}"
            )

    @property
    def test_selected(self) -> bool:
        """True when the best epoch is chosen on a test split (only for reproducing papers)."""
        return self.select_on != "val"


@dataclass(frozen=True)
class EvalConfig:
    """Full-ranking evaluation."""

    ks: tuple[int, ...] = ranged((10, 20), ge=1)
    """Cut-offs K of Recall@K and NDCG@K (each at most the number of items: checked when the
    dataset is loaded)."""
    user_batch_size: int = ranged(2048, ge=1)
    """Users scored per batch."""
    ips_gamma: float = ranged(0.5, ge=0)
    """OOD-aware selection (val only): exponent of the IPS weights ``1 / p(item) ** gamma`` of the
    ``ips_*`` val metrics (0: plain metrics). See ``oodrec.eval.estimators``. On a popularity
    split built by ``oodrec prepare --exponent E`` the default follows the split (``E``, read
    from its ``prepare.json``); elsewhere it is 0.5."""
    ips_clip: float = ranged(100.0, ge=1, finite=False)
    """Largest IPS weight, relative to the most popular item's weight of 1."""
    strata: int = ranged(4, ge=1)
    """Equal-mass item-popularity buckets of the ``strat_*`` val metrics."""
    adjust_gammas: tuple[float, ...] = ()
    """Popularity-adjusted scoring: every evaluation also ranks val by ``s - gamma * log(1 +
    d_i)`` (``d_i`` the item's training degree) for each gamma here (either sign: > 0 favours
    the tail, < 0 the head), and selection picks the (epoch, gamma) pair, gamma 0 included, on
    ``train.select_metric``; the test splits are then ranked with that gamma, and the record,
    the table and ``recommend`` name it. Empty (default): plain scores only."""
    protocol: Literal["full", "candidates"] = "full"
    """How the test splits rank: ``full`` (every item the user has not interacted with) or
    ``candidates`` (only the user's logged candidates: the items shown to them, liked or not,
    from ``test_ood_candidates.txt`` / ``test_iid_candidates.txt``, as the publishers of
    random-exposure logs such as Yahoo! R3 and Coat evaluate). Val always ranks in full."""

    def __post_init__(self) -> None:
        if not self.ks:
            raise ConfigError(f"eval.ks must be non-empty positive integers, got {self.ks}")
        check_ranges(self, "eval.")
        if self.protocol not in ("full", "candidates"):
            raise ConfigError(
                f"eval.protocol must be 'full' or 'candidates', got {self.protocol!r}"
            )
        object.__setattr__(self, "ks", tuple(sorted(set(int(k) for k in self.ks))))
        bad = [g for g in self.adjust_gammas if not math.isfinite(g)]
        if bad:
            raise ConfigError(f"eval.adjust_gammas must be finite numbers, got {bad}")
        # gamma 0 (plain scores) is always a candidate; the grid keeps its order otherwise
        grid = tuple(dict.fromkeys(float(g) for g in self.adjust_gammas if g))
        object.__setattr__(self, "adjust_gammas", grid)


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one training run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig | None = field(default_factory=SamplerConfig)
    """The negative sampler of ``lightgcn``; None for a method that takes none (DiffRec, CDR, ...:
    ``oodrec.experiment.assemble`` drops it, so their config.yaml and record name no sampler)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = ranged(2025, ge=0, le=2**63 - 1)
    """Run seed: initialisation, sampling, shuffling."""
    out_dir: str = "runs"
    """Parent directory of run directories."""
    name: str | None = None
    """Run directory name (one directory: no ``/`` or ``..``); ``None`` derives one from
    dataset, sampler and seed."""
    track: TrackConfig = field(default_factory=TrackConfig)

    def __post_init__(self) -> None:
        check_ranges(self)
        check_run_name(self.name)

    def run_name(self) -> str:
        """``{dataset}-{label}-seed{seed}``; the label is ``method_label`` (model or sampler)."""
        if self.name:
            return self.name
        ds = Path(self.data.dataset).name
        return f"{ds}-{self.method_label()}-seed{self.seed}"

    def method_label(self) -> str:
        """What the run compares: the sampler for LightGCN (``rns``, ``cnsdiff``: the names of
        existing run directories), else the model (``diffrec``). A method that takes no sampler
        is never named after one."""
        return self.sampler.name if self.model.name == "lightgcn" else self.model.name


SELECTION_METRICS = ("recall", "ndcg")
"""Metric families computed at every K of ``eval.ks`` (``recall@20``, ``ndcg@10``, ...)."""
ESTIMATORS = ("ips", "strat")
"""Prefixes of the OOD-aware val estimators (``ips_ndcg@20``, ``strat_recall@10``; see
``oodrec.eval.estimators``)."""


def validate_config(cfg: ExperimentConfig) -> None:
    """Checks that span several sections, run once all overrides are applied (a single field is
    checked when its dataclass is built).

    Raises:
        ConfigError: ``train.select_metric`` is not computed (valid: recall@K / ndcg@K for K in
            ``eval.ks``, or an estimator ``ips_*`` / ``strat_*`` on val), or
            ``select_rule=all_four`` without K = 10 and 20 in ``eval.ks``.
    """
    if cfg.eval.adjust_gammas and (
        cfg.train.select_on != "val" or cfg.train.select_rule != "metric"
    ):
        raise ConfigError(
            f"eval.adjust_gammas={list(cfg.eval.adjust_gammas)} chooses gamma on val by one "
            f"metric: it needs train.select_on=val and train.select_rule=metric, got "
            f"{cfg.train.select_on} / {cfg.train.select_rule} (gamma is never chosen on a test "
            f"split)"
        )
    valid = [f"{m}@{k}" for m in SELECTION_METRICS for k in cfg.eval.ks]
    estimators = [f"{e}_{name}" for e in ESTIMATORS for name in valid]
    if cfg.train.select_metric in estimators:
        if cfg.train.select_on != "val":
            raise ConfigError(
                f"train.select_metric={cfg.train.select_metric} is an OOD-aware val estimator; "
                f"it needs train.select_on=val, got {cfg.train.select_on}"
            )
        if cfg.train.select_rule != "metric":
            raise ConfigError(
                f"train.select_metric={cfg.train.select_metric} needs train.select_rule=metric"
            )
        return
    if cfg.train.select_metric not in valid:
        raise ConfigError(
            f"train.select_metric {cfg.train.select_metric!r} is not computed; valid with "
            f"eval.ks={list(cfg.eval.ks)}: {', '.join(valid)}; OOD-aware val estimators: "
            f"{', '.join(estimators)}"
        )
    if cfg.train.select_rule == "all_four" and not {10, 20} <= set(cfg.eval.ks):
        raise ConfigError(
            f"train.select_rule=all_four needs 10 and 20 in eval.ks, got {list(cfg.eval.ks)}"
        )


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts.

    Args:
        old, new: plain nested dicts (or values).
        prefix: key prefix of this level.

    Returns:
        Sorted differing keys (``old=... new=...`` appended for leaves).
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += config_diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    if old != new:
        return [f"{prefix.rstrip('.')} ({old!r} -> {new!r})"]
    return []


# --------------------------------------------------------------------------- (de)serialisation


def to_dict(cfg: Any) -> Any:
    """A plain (YAML-safe) dict of a dataclass tree."""
    if is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in fields(cfg)}
    if isinstance(cfg, tuple):
        return [to_dict(x) for x in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _describe(tp: Any) -> str:
    """``an integer``, ``one of ['auto']``: what a value of type ``tp`` is, for messages."""
    if typing.get_origin(tp) is Literal:
        return f"one of {list(typing.get_args(tp))}"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(tp, getattr(tp, "__name__", None) or str(tp).replace("typing.", ""))


def convert_value(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a CLI string) to the declared type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert_value(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        kinds = " or ".join(_describe(a) for a in args if a is not type(None))
        raise ConfigError(f"{key} must be {kinds}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(convert_value(v, args[0], key) for v in value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    if is_dataclass(tp):
        return from_dict(tp, value, prefix=key + ".")
    return value


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, failing on unknown keys."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys under {prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(known))}"
        )
    kwargs = {k: convert_value(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


def parse_override(text: str) -> tuple[str, str]:
    """Split ``key=value``."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. train.lr=0.001)")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def apply_overrides(cfg: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Apply dotted ``key=value`` overrides, converting with the declared field types.

    ``sampler.<option>=value`` sets a sampler option (checked later against the sampler's config);
    its value is parsed as YAML scalar (``0.1`` -> float, ``true`` -> bool).
    """
    for text in overrides:
        key, raw = parse_override(text)
        cfg = set_path(cfg, key, raw)
    return cfg


def _is_option(cls: type, head: str) -> bool:
    """Whether :func:`set_path` stores key ``head`` of a ``cls`` in its ``options`` dict: every
    sampler key but ``name`` and ``options``, and a model key that is not a model field."""
    if cls is SamplerConfig:
        return head not in ("name", "options")
    if cls is ModelConfig:
        return head not in {f.name for f in fields(ModelConfig)}
    return False


def stored_key(key: str) -> str:
    """The dotted path at which :func:`set_path` stores ``key`` in a config's dict: a sampler
    option, or a model option that is not a model field, lives under ``options``."""
    head, _, rest = key.partition(".")
    cls = {"sampler": SamplerConfig, "model": ModelConfig}.get(head)
    if cls is not None and rest and _is_option(cls, rest.partition(".")[0]):
        return f"{head}.options.{rest}"
    return key


def set_path(cfg: Any, key: str, raw: Any, prefix: str = "") -> Any:
    """Return a copy of ``cfg`` with the dotted ``key`` set from ``raw``."""
    head, _, rest = key.partition(".")
    full = prefix + key
    if isinstance(cfg, SamplerConfig) and _is_option(SamplerConfig, head):
        value = yaml.safe_load(raw) if isinstance(raw, str) else raw
        options = dict(cfg.options)
        options[key] = value
        return replace(cfg, options=options)
    if isinstance(cfg, ModelConfig) and _is_option(ModelConfig, head):
        value = yaml.safe_load(raw) if isinstance(raw, str) else raw
        return replace(cfg, options={**cfg.options, key: value})
    if isinstance(cfg, DataConfig) and head == "synthetic" and rest:
        value = yaml.safe_load(raw) if isinstance(raw, str) else raw
        return replace(cfg, synthetic={**cfg.synthetic, rest: value})
    names = {f.name for f in fields(cfg)}
    if head not in names:
        raise ConfigError(f"unknown config key {full!r}; valid here: {', '.join(sorted(names))}")
    hints = typing.get_type_hints(type(cfg))
    current = getattr(cfg, head)
    if rest and current is None:
        # an optional section that is absent (a method's sampler): set keys on its defaults
        kinds = [a for a in typing.get_args(hints[head]) if is_dataclass(a)]
        current = kinds[0]() if kinds else None
    if rest:
        if not is_dataclass(current):
            raise ConfigError(f"config key {prefix + head!r} has no sub-keys (got {full!r})")
        return replace(cfg, **{head: set_path(current, rest, raw, prefix + head + ".")})
    try:
        return replace(cfg, **{head: convert_value(raw, hints[head], full)})
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{full}: {exc}") from None


def parse_options(options_cls: type, options: dict[str, Any], owner: str, prefix: str = "") -> Any:
    """Build the frozen dataclass ``options_cls`` from a mapping, converting each value to the
    field's declared type; unknown keys raise ConfigError listing the valid ones.

    Args:
        options_cls: an options dataclass, or ``type(None)`` for "takes no options".
        options: the mapping (from YAML or ``--set``).
        owner: named in error messages (``"DiffRec"``, ``"data.synthetic"``).
        prefix: key prefix in conversion errors (``"model."``).
    """
    if options_cls is type(None):
        if options:
            raise ConfigError(f"{owner} takes no options, got {sorted(options)}")
        return None
    known = {f.name: f for f in fields(options_cls)}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for {owner}; valid: {', '.join(sorted(known))}"
        )
    hints = typing.get_type_hints(options_cls)
    kwargs = {k: convert_value(v, hints[k], f"{prefix}{k}") for k, v in options.items()}
    try:  # the options' own checks, then the ranges declared beside their fields (``ranged``)
        return check_ranges(options_cls(**kwargs), prefix)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{owner}: {exc}") from None


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """Parse a YAML file; a missing file or invalid YAML raises ConfigError naming the file."""
    path = Path(path)
    text = read_input_text(path, what)  # missing, a directory, not UTF-8: named
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ConfigError(f"{what} {path}{where}: not valid YAML ({problem})") from None


def load_yaml(path: str | Path) -> ExperimentConfig:
    """Load an ExperimentConfig from YAML; unknown keys raise ConfigError naming the file."""
    path = Path(path)
    data = read_yaml(path)
    try:
        return from_dict(ExperimentConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def dump_yaml(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def config_fields_doc(cls: type) -> dict[str, str]:
    """Field name -> docstring (the string literal after the field), for ``--help`` output."""
    import ast
    import inspect

    src = inspect.getsource(cls)
    tree = ast.parse(src)
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for prev, node in zip(body, body[1:]):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(getattr(node, "value", None), ast.Constant)
        ):
            docs[prev.target.id] = str(node.value.value)
    return docs


__all__ = [
    "DataConfig",
    "ModelConfig",
    "SamplerConfig",
    "TrainConfig",
    "EvalConfig",
    "ExperimentConfig",
    "ESTIMATORS",
    "SPLITS",
    "config_diff",
    "validate_config",
    "to_dict",
    "from_dict",
    "apply_overrides",
    "load_yaml",
    "dump_yaml",
    "config_fields_doc",
    "parse_options",
]
