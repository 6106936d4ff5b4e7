"""Negative samplers, registered by name in ``SAMPLERS`` (an explicit mapping, no scanning)."""

from __future__ import annotations

from typing import Any

from oodrec.registry import Registry
from oodrec.samplers.base import (
    NegativeSampler,
    Negatives,
    PositiveIndex,
    SamplerContext,
    TripletBatch,
)
from oodrec.samplers.uniform import UniformSampler

SAMPLERS: Registry[type[NegativeSampler]] = Registry("sampler")
SAMPLERS.register("rns", UniformSampler)


def build_sampler(name: str, ctx: SamplerContext, options: dict[str, Any]) -> NegativeSampler:
    """Resolve ``name`` in ``SAMPLERS`` and build it with validated ``options``."""
    return SAMPLERS.get(name).from_options(ctx, options)


__all__ = [
    "SAMPLERS",
    "build_sampler",
    "NegativeSampler",
    "Negatives",
    "PositiveIndex",
    "SamplerContext",
    "TripletBatch",
]
