"""Contract tests run over every registered sampler: a new sampler gets them by registering."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from oodrec.config import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    SamplerConfig,
    TrainConfig,
    config_fields_doc,
)
from oodrec.data.dataset import load_dataset
from oodrec.errors import ConfigError
from oodrec.samplers import SAMPLERS, Negatives, build_sampler
from oodrec.train.loop import train
from oodrec.train.losses import bpr_loss

from .helpers import BATCH_SIZE, EMB_DIM, NUM_ITEMS, NUM_LAYERS, make_tiny, write_tiny_dir

NAMES = SAMPLERS.names()


def _sample(name: str, tiny, seed: int = 0, grad: bool = False) -> Negatives:
    sampler = build_sampler(name, tiny.ctx, {})
    sampler.start_epoch(0)
    gen = torch.Generator().manual_seed(seed)
    with torch.set_grad_enabled(grad):
        emb = tiny.model.propagate()
        return sampler.sample(tiny.batch, emb, gen)


@pytest.fixture
def tiny():
    return make_tiny()


@pytest.mark.parametrize("name", NAMES)
def test_options_documented_and_validated(name):
    cls = SAMPLERS.get(name)
    assert cls.__doc__ and "Paper" in cls.__doc__, "the class docstring must cite its paper"
    assert cls.paper
    opts = cls.Options
    if opts is not type(None):
        assert dataclasses.is_dataclass(opts) and opts.__dataclass_params__.frozen
        names = {f.name for f in dataclasses.fields(opts)}
        assert set(config_fields_doc(opts)) == names, "every option field needs a docstring"
    with pytest.raises(ConfigError, match="no_such_option"):
        build_sampler(name, make_tiny().ctx, {"no_such_option": 1})


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtypes(name, tiny):
    negs = _sample(name, tiny)
    b = BATCH_SIZE
    assert negs.emb.dtype == torch.float32
    assert negs.emb.dim() in (2, 3) and negs.emb.shape[0] == b and negs.emb.shape[-1] == EMB_DIM
    lead = negs.emb.shape[:-1]  # [B] or [B, K]
    if negs.ids is not None:
        assert negs.ids.dtype == torch.long and negs.ids.shape == lead
        assert ((negs.ids >= 0) & (negs.ids < NUM_ITEMS)).all()
    if negs.reg_ego is not None:
        assert negs.reg_ego.shape == negs.emb.shape
    if negs.weights is not None:
        assert negs.emb.dim() == 3 and negs.weights.shape == (negs.emb.shape[1],)
    assert torch.isfinite(negs.emb).all()


@pytest.mark.parametrize("name", NAMES)
def test_ids_are_never_training_positives(name, tiny):
    # All training pairs as one batch, several draws: defaults exclude positives.
    sampler = build_sampler(name, tiny.ctx, {})
    emb = tiny.model.propagate()
    batch = type(tiny.batch)(tiny.users, tiny.items)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _ in range(3):
            negs = sampler.sample(batch, emb, gen)
            if negs.ids is None:
                return  # synthesised negatives: nothing to check
            assert not tiny.ctx.positives.contains(batch.users, negs.ids).any()


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_seeded_generator(name, tiny):
    a, b = _sample(name, tiny, seed=7), _sample(name, tiny, seed=7)
    assert torch.equal(a.emb, b.emb)
    assert (a.ids is None) == (b.ids is None)
    if a.ids is not None:
        assert torch.equal(a.ids, b.ids)
    if a.reg_ego is not None:
        assert torch.equal(a.reg_ego, b.reg_ego)


@pytest.mark.parametrize("name", NAMES)
def test_sample_does_not_touch_global_rng(name, tiny):
    sampler = build_sampler(name, tiny.ctx, {})
    sampler.start_epoch(0)
    emb = tiny.model.propagate()
    torch.manual_seed(11)
    before = torch.get_rng_state()
    sampler.sample(tiny.batch, emb, torch.Generator().manual_seed(5))
    assert torch.equal(before, torch.get_rng_state()), "sample() must draw only from ``gen``"


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_embeddings(name, tiny):
    sampler = build_sampler(name, tiny.ctx, {})
    sampler.start_epoch(0)
    gen = torch.Generator().manual_seed(0)
    tiny.model.zero_grad(set_to_none=True)
    emb = tiny.model.propagate()
    negs = sampler.sample(tiny.batch, emb, gen)
    # The negatives alone must carry gradient to the item embeddings (not detached).
    (g_neg,) = torch.autograd.grad(negs.emb.sum(), tiny.model.item_emb, retain_graph=True)
    assert g_neg.abs().sum() > 0
    u = emb.users[tiny.batch.users]
    loss = bpr_loss(u, emb.items[tiny.batch.pos_items], negs.emb, negs.weights)
    aux = sampler.aux_loss(tiny.batch, emb, gen)
    assert all(v.dim() == 0 for v in aux.values())
    (loss + sum(aux.values())).backward()
    assert tiny.model.user_emb.grad is not None and tiny.model.user_emb.grad.abs().sum() > 0
    assert tiny.model.item_emb.grad is not None and tiny.model.item_emb.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_one_epoch_smoke_training(name, tmp_path):
    data_dir = write_tiny_dir(tmp_path / "tiny")
    cfg = ExperimentConfig(
        data=DataConfig(dataset=str(data_dir)),
        model=ModelConfig(emb_dim=EMB_DIM, num_layers=NUM_LAYERS),
        sampler=SamplerConfig(name=name),
        train=TrainConfig(epochs=1, batch_size=64),
    )
    result = train(cfg, load_dataset(cfg.data))
    row = result.history[0]
    assert math.isfinite(row["loss"]) and row["loss"] > 0
    # Losses, timings, negative diagnostics and sampler diagnostics are all finite numbers.
    assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))
    assert set(result.metrics) == {"val", "iid_test", "ood_test"}
    assert all(math.isfinite(v) for m in result.metrics.values() for v in m.values())
