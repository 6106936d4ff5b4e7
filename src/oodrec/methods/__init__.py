"""Methods (a recommender with its training rule), registered by name in ``METHODS``.

``lightgcn`` is LightGCN + BPR with any negative sampler (``oodrec samplers``); every other
method brings its own model, loss, batches and scorer (``oodrec models``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from oodrec.config import ExperimentConfig, SamplerConfig, parse_options
from oodrec.errors import ConfigError
from oodrec.methods.advinfonce import AdvInfoNCE
from oodrec.methods.base import Method, MethodContext, NegativeProbe, Scorer, TrainData
from oodrec.methods.bc import BC
from oodrec.methods.causaldiff import CausalDiff
from oodrec.methods.cdr import CDR
from oodrec.methods.diffrec import DiffRec
from oodrec.methods.drgnn import DRGNN
from oodrec.methods.drgo import DRGO
from oodrec.methods.hdrm import HDRM
from oodrec.methods.hdrm_backbone import HDRMBackbone
from oodrec.methods.invcf import InvCF
from oodrec.methods.lightgcn import LightGCNMethod
from oodrec.methods.mostpop import MostPop
from oodrec.methods.pda import PDA
from oodrec.methods.psl import PSL
from oodrec.registry import Registry
from oodrec.samplers import SyncFree

METHODS: Registry[type[Method]] = Registry("method")
METHODS.register("lightgcn", LightGCNMethod)
METHODS.register("diffrec", DiffRec)
METHODS.register("invcf", InvCF)
METHODS.register("advinfonce", AdvInfoNCE)
METHODS.register("drgnn", DRGNN)
METHODS.register("causaldiff", CausalDiff)
METHODS.register("hdrm_backbone", HDRMBackbone)
METHODS.register("hdrm", HDRM)
METHODS.register("cdr", CDR)
METHODS.register("drgo", DRGO)
METHODS.register("mostpop", MostPop)
METHODS.register("pda", PDA)
METHODS.register("psl", PSL)
METHODS.register("bc", BC)


def implied_overrides(cfg: ExperimentConfig) -> dict[str, Any]:
    """Config settings that the method's and (for ``lightgcn``) the sampler's options imply, e.g.
    DiffRec's learning rate and batch size, or CNSDiff ``code_faithful``'s L2 form.

    The one place they are computed: the CLI and the grid apply them after the method and sampler
    are chosen and before explicit user settings, so that the resolved config.yaml shows them.
    """
    cls = METHODS.get(cfg.model.name)
    out = dict(cls.train_overrides(dict(cfg.model.options)))
    if cls.takes_sampler and cfg.sampler is not None:
        from oodrec.samplers import sampler_train_overrides

        out.update(sampler_train_overrides(cfg.sampler.name, dict(cfg.sampler.options)))
    return out


def check_method_config(cfg: ExperimentConfig) -> None:
    """Fail before any work on an unknown method, an unknown method or sampler option, or a
    sampler given to a method that takes none. Raises ConfigError naming the key."""
    cls = METHODS.get(cfg.model.name)
    parse_options(cls.Options, dict(cfg.model.options), f"model {cfg.model.name!r}", "model.")
    if cls.takes_sampler:
        from oodrec.samplers import SAMPLERS

        if cfg.sampler is None:
            raise ConfigError(
                f"model {cfg.model.name!r} needs a negative sampler (--sampler, see "
                f"`oodrec samplers`); the config has sampler: null"
            )
        scls = SAMPLERS.get(cfg.sampler.name)
        parse_options(
            scls.Options, dict(cfg.sampler.options), f"sampler {cfg.sampler.name!r}", "sampler."
        )
    elif cfg.sampler is not None and cfg.sampler != SamplerConfig():
        # None, or the untouched default (configs written before methods dropped it)
        raise ConfigError(
            f"model {cfg.model.name!r} takes no negative sampler (it draws its own negatives, or "
            f"none); drop --sampler / sampler.* (got sampler.name={cfg.sampler.name!r}, "
            f"options {dict(cfg.sampler.options)})"
        )


def inert_settings(cfg: ExperimentConfig) -> dict[str, str]:
    """The ``sampler.*`` options set in ``cfg`` that cannot change training given the other
    options (dotted key -> why), e.g. CNSDiff's lambda_2 when its gradient is off. The CLI, the
    grid and ``oodrec tune`` warn about them: runs that differ only in them are identical."""
    cls = METHODS.get(cfg.model.name)
    if not cls.takes_sampler or cfg.sampler is None:
        return {}
    from oodrec.samplers import inert_sampler_options

    found = inert_sampler_options(
        cfg.sampler.name, dict(cfg.sampler.options), Path(str(cfg.data.dataset)).name
    )
    return {f"sampler.{k}": why for k, why in found.items()}


def build_method(cfg: ExperimentConfig, data: TrainData, device: torch.device) -> Method:
    """Build ``cfg.model.name`` from the training view ``data`` (never the whole dataset).
    ``cfg`` is a checked config (``oodrec.experiment.assemble`` or ``check``)."""
    cls = METHODS.get(cfg.model.name)
    sync_free = SyncFree() if sync_free_on(cfg, device) else None
    ctx = MethodContext(data=data, cfg=cfg, device=device, sync_free=sync_free)
    return cls.from_context(ctx).to(device)


def sync_free_on(cfg: ExperimentConfig, device: torch.device | str) -> bool:
    """``train.sync_free`` resolved for ``device``: ``auto`` is on for CUDA, off elsewhere."""
    if cfg.train.sync_free == "auto":
        return torch.device(device).type == "cuda"
    return bool(cfg.train.sync_free)


__all__ = [
    "METHODS",
    "Method",
    "MethodContext",
    "NegativeProbe",
    "Scorer",
    "TrainData",
    "build_method",
    "sync_free_on",
    "inert_settings",
    "check_method_config",
    "implied_overrides",
]
