"""CNSDiff: modes, ablations, Beta schedule, alignment loss, causal regulariser."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from oodrec.config import DataConfig, ExperimentConfig, SamplerConfig, TrainConfig
from oodrec.data.dataset import load_dataset
from oodrec.errors import ConfigError
from oodrec.samplers import SAMPLERS, build_sampler, sampler_train_overrides
from oodrec.samplers.cnsdiff import CNSDiffOptions, popularity_envs
from oodrec.samplers.cnsdiff_losses import alignment_loss, grad_scale, variational_diffusion_loss
from oodrec.train.loop import train

from .helpers import make_tiny


def make_context(num_epochs: int = 1):
    return replace(make_tiny().ctx, num_epochs=num_epochs)


def make_model(ctx):
    return make_tiny().model


def _sampler(ctx, **options):
    return build_sampler("cnsdiff", ctx, options)


def test_registered():
    assert "cnsdiff" in SAMPLERS


def test_mode_defaults_resolve():
    cf = CNSDiffOptions(mode="code_faithful").resolved("food")
    assert (cf.train_denoiser, cf.denoise_from, cf.causal_mode, cf.sampling_dropout) == (
        False,
        "T",
        "code_kl",
        True,
    )
    assert (cf.initial_alpha, cf.initial_beta, cf.final_alpha, cf.final_beta) == (2, 8, 9, 1)
    paper = CNSDiffOptions(mode="paper").resolved("yelp2018")
    assert (paper.train_denoiser, paper.denoise_from, paper.sampling_dropout) == (
        True,
        "start",
        False,
    )
    assert (paper.initial_alpha, paper.initial_beta) == (1, 9)
    causal = CNSDiffOptions(mode="causal", denoise_from="T").resolved("x")
    assert causal.causal_mode == "variational" and causal.denoise_from == "T"
    with pytest.raises(ConfigError, match="sample_start"):
        CNSDiffOptions(sample_start=30).resolved("x")


def test_code_faithful_implies_selfrec_l2():
    assert sampler_train_overrides("cnsdiff", {"mode": "code_faithful"}) == {
        "train.l2_form": "selfrec"
    }
    assert sampler_train_overrides("cnsdiff", {"mode": "paper"}) == {}
    assert sampler_train_overrides("rns", {}) == {}


def test_beta_schedule_endpoints():
    """Specs 1.10: (1,9)->(9,1) over 120 epochs: Beta(1,9) at epoch 0, Beta(8.933,1.067) at 119."""
    ctx = make_context(num_epochs=120)
    s = _sampler(ctx, initial_alpha=1.0, initial_beta=9.0, final_alpha=9.0, final_beta=1.0)
    s.start_epoch(0)
    assert s.mix_params() == (1.0, 9.0)
    s.start_epoch(119)
    a, b = s.mix_params()
    assert math.isclose(a, 8.9333, rel_tol=1e-4) and math.isclose(b, 1.0667, rel_tol=1e-4)
    s2 = _sampler(ctx, initial_alpha=0.1, initial_beta=9.9, final_alpha=1.0, final_beta=9.0)
    s2.start_epoch(0)
    assert s2.mix_params() == (0.1, 9.9)


def test_alignment_loss_all_equal_is_log_2b():
    """Specs 1.10: positive_noise 0 and all embeddings equal give log(2B)."""
    e = torch.ones(16, 8)
    loss = alignment_loss(e, e, e, temperature=2.0, positive_noise=0.0, gen=torch.Generator())
    assert math.isclose(loss.item(), math.log(32), rel_tol=1e-5)


def test_alignment_matches_reference_logsumexp():
    g = torch.Generator().manual_seed(0)
    p, h, r = (torch.randn(10, 6, generator=g) for _ in range(3))
    got = alignment_loss(p, h, r, 0.5, 0.0, torch.Generator())
    a = torch.nn.functional.normalize(p, dim=1)
    n = torch.nn.functional.normalize(torch.cat([h, r]), dim=1)
    ref = (-(a * a).sum(1) / 0.5 + torch.logsumexp(a @ n.T / 0.5, dim=1)).mean()
    assert torch.allclose(got, ref, atol=1e-5)


def test_grad_scale():
    x = torch.ones(3, requires_grad=True)
    (grad_scale(x, 0.25) * 2).sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), 0.5))
    assert not grad_scale(x, 0.0).requires_grad


def test_popularity_envs_equal_mass():
    deg = torch.tensor([1.0] * 40 + [10.0] * 4 + [20.0] * 2 + [40.0])
    env = popularity_envs(deg, 4)
    mass = torch.bincount(env, weights=deg, minlength=4)
    assert env.min() == 0 and env.max() == 3
    assert (env[:40] == 0).all() and env[-1] == 3  # ties share a bucket, monotone in degree
    assert mass.sum() == deg.sum()


def test_code_faithful_generation_uses_untrained_denoiser_and_big_norms():
    ctx = make_context()
    model = make_model(ctx)
    s = _sampler(ctx, mode="code_faithful")
    assert s.param_groups() == [] and not any(p.requires_grad for p in s.parameters())
    emb = model.propagate()
    cands = s.generate(emb.items[:8].detach(), torch.arange(8), torch.Generator().manual_seed(0))
    assert cands.shape == (3, 8, emb.items.shape[1])
    # D3: generated negatives live in the denoiser's scale, not the embedding scale
    assert cands.norm(dim=-1).mean() > 5 * emb.items.norm(dim=-1).mean()


def test_paper_mode_trains_the_denoiser():
    ctx = make_context()
    model = make_model(ctx)
    s = _sampler(ctx, mode="paper")
    groups = s.param_groups()
    assert groups and groups[0]["lr"] == 0.01
    before = [p.detach().clone() for p in s.denoiser.parameters()]
    opt = torch.optim.Adam([{"params": list(model.parameters())}, *groups], lr=0.01)
    from oodrec.samplers.base import TripletBatch

    batch = TripletBatch(torch.arange(8), torch.arange(8))
    g = torch.Generator().manual_seed(0)
    emb = model.propagate()
    negs = s.sample(batch, emb, g)
    terms = s.aux_loss(batch, emb, g)
    assert set(terms) == {"cl", "diffusion"}
    loss = (emb.users[:8] * negs.emb).sum() + sum(terms.values())
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, s.denoiser.parameters()))


def test_variational_bound_prefers_the_better_environment():
    """The bound's optimal q is proportional to p0(e) exp(-D_t(e)): training the posterior on a
    fixed denoiser that is exact for env 1 and off for env 0 moves q towards env 1."""
    from oodrec.diffusion.denoiser import EnvPosterior, MLPDenoiser
    from oodrec.diffusion.schedule import make_schedule

    torch.manual_seed(0)
    sched = make_schedule()

    class Fixed(MLPDenoiser):
        def forward(self, x, t, env=None, dropout_gen=None, dropout_active=None, time_bias=None):
            return torch.where((env == 1).unsqueeze(1), torch.zeros_like(x), torch.ones_like(x))

    den = Fixed(4, num_envs=2)
    post = EnvPosterior(4, 2)
    opt = torch.optim.Adam(post.parameters(), lr=0.05)
    x0 = torch.zeros(64, 4)
    env_obs = torch.zeros(64, dtype=torch.long)
    prior = torch.tensor([0.5, 0.5])
    for i in range(60):
        loss, info = variational_diffusion_loss(
            sched,
            den,
            post,
            x0,
            env_obs,
            prior,
            torch.Generator().manual_seed(i),
            1.0,
            True,
            0.0,
            "mean",
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    q = torch.softmax(post(x0 + 0.01, torch.full((64,), 5)), dim=1)
    assert q[:, 1].mean() > 0.9


MODES = [
    {"mode": "code_faithful"},
    {"mode": "paper"},
    {"mode": "causal"},
    {"mode": "causal", "generation": "average"},
    {"mode": "paper", "causal_mode": "rex"},
    {"mode": "paper", "causal_mode": "variational", "prior": "empirical"},
]
ABLATIONS = [
    {},
    {"mixup": False},
    {"align": False},
    {"causal": False},
    {"mixup": False, "align": False, "causal": False},
]


@pytest.mark.parametrize("ablation", ABLATIONS, ids=lambda a: ",".join(a) or "full")
@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(str(v) for v in m.values()))
def test_every_mode_and_ablation_trains_one_epoch(tiny_dir, mode, ablation):
    cfg = ExperimentConfig(
        data=DataConfig(dataset=str(tiny_dir)),
        sampler=SamplerConfig("cnsdiff", {**mode, **ablation}),
        train=TrainConfig(epochs=1, batch_size=64, fhn_batches=1),
    )
    res = train(cfg, load_dataset(cfg.data))
    row = res.history[0]
    assert math.isfinite(row["loss"]) and "fhn_ratio" in row and "cnsdiff_mix" in row
    assert ("loss_cl" in row) == ablation.get("align", True)
    if not ablation.get("mixup", True):
        assert row["cnsdiff_mix"] == 1.0
