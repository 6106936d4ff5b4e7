"""Negative samplers, registered by name in ``SAMPLERS`` (an explicit mapping, no scanning)."""

from __future__ import annotations

from typing import Any

from oodrec.config import parse_options
from oodrec.registry import Registry
from oodrec.samplers.ahns import AHNSSampler
from oodrec.samplers.base import (
    Negatives,
    NegativeSampler,
    PositiveIndex,
    SamplerContext,
    SyncFree,
    TripletBatch,
)
from oodrec.samplers.cnsdiff import CNSDiffSampler
from oodrec.samplers.dmns import DMNSSampler
from oodrec.samplers.dns import DNSSampler
from oodrec.samplers.mixgcf import MixGCFSampler
from oodrec.samplers.popularity import PopularitySampler
from oodrec.samplers.uniform import UniformSampler

SAMPLERS: Registry[type[NegativeSampler]] = Registry("sampler")
SAMPLERS.register("rns", UniformSampler)
SAMPLERS.register("dns", DNSSampler)
SAMPLERS.register("mixgcf", MixGCFSampler)
SAMPLERS.register("ahns", AHNSSampler)
SAMPLERS.register("pns", PopularitySampler)
SAMPLERS.register("cnsdiff", CNSDiffSampler)
SAMPLERS.register("dmns", DMNSSampler)


def sampler_train_overrides(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Config changes outside the sampler that sampler ``name``'s options imply
    (``NegativeSampler.train_overrides``; e.g. CNSDiff's ``code_faithful`` mode uses the code's
    L2 form). Applied at the CLI / grid boundary, before explicit user overrides, so that the
    resolved config.yaml shows them."""
    return SAMPLERS.get(name).train_overrides(options)


def sampler_horizon_option(name: str) -> str | None:
    """The option of sampler ``name`` whose ``None`` means "the horizon is train.epochs"
    (``NegativeSampler.horizon_option``), or None when its schedule does not follow the cap."""
    return SAMPLERS.get(name).horizon_option


def inert_sampler_options(name: str, options: dict[str, Any], dataset: str) -> dict[str, str]:
    """The options set in ``options`` that cannot change training given the others (option
    -> why; ``NegativeSampler.inert_options``). Raises ConfigError on an invalid option."""
    cls = SAMPLERS.get(name)
    parsed = parse_options(cls.Options, options, f"sampler {name!r}", "sampler.")
    return {k: v for k, v in cls.inert_options(parsed, dataset).items() if k in options}


def build_sampler(name: str, ctx: SamplerContext, options: dict[str, Any]) -> NegativeSampler:
    """Resolve ``name`` in ``SAMPLERS`` and build it with validated ``options``."""
    return SAMPLERS.get(name).from_options(ctx, options)


__all__ = [
    "SAMPLERS",
    "build_sampler",
    "inert_sampler_options",
    "sampler_horizon_option",
    "sampler_train_overrides",
    "NegativeSampler",
    "Negatives",
    "PositiveIndex",
    "SamplerContext",
    "SyncFree",
    "TripletBatch",
]
