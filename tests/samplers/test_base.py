"""What the NegativeSampler base declares for every sampler: parsed ``options`` and the
``train_overrides`` hook (empty unless a sampler's options imply other settings)."""

from __future__ import annotations

import dataclasses

import pytest

from oodrec.errors import ConfigError
from oodrec.samplers import SAMPLERS, build_sampler, sampler_train_overrides

from .helpers import make_tiny


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_keeps_its_parsed_options(name):
    sampler = build_sampler(name, make_tiny().ctx, {})
    assert isinstance(sampler.options, SAMPLERS.get(name).Options)
    assert dataclasses.is_dataclass(sampler.options)


@pytest.mark.parametrize("name", sorted(set(SAMPLERS.names()) - {"cnsdiff"}))
def test_train_overrides_default_to_none(name):
    assert sampler_train_overrides(name, {}) == {}


def test_cnsdiff_keeps_its_resolved_options():
    sampler = build_sampler("cnsdiff", make_tiny().ctx, {"mode": "paper"})
    assert sampler.options.train_denoiser is True  # filled from the mode's defaults


def test_unknown_sampler_names_the_kind():
    with pytest.raises(ConfigError, match=r"unknown sampler 'rnss'\. Did you mean 'rns'\?"):
        SAMPLERS.get("rnss")
