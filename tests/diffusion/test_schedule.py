"""Numeric checks of specs 1.10 (schedule, levels, denoiser scale) and the reverse chain."""

from __future__ import annotations

import math

import pytest
import torch

from oodrec.diffusion.denoiser import MLPDenoiser, keep_mask, timestep_embedding
from oodrec.diffusion.process import q_sample, reverse_chain
from oodrec.diffusion.schedule import make_schedule


@pytest.fixture(scope="module")
def sched():
    return make_schedule("linear-var", 20, 0.1, 1e-4, 0.02)


def approx(value, expected, rel=2e-3):
    return math.isclose(float(value), expected, rel_tol=rel)


def test_linear_var_schedule_values(sched):
    assert approx(sched.betas[0], 1.0e-5)
    assert approx(sched.betas[1], 1.047e-4) and approx(sched.betas[19], 1.049e-4)
    assert approx(sched.alphas_cumprod[0], 0.99999, 1e-6)
    assert approx(sched.alphas_cumprod[9], 0.999047, 1e-6)
    assert approx(sched.alphas_cumprod[19], 0.998, 1e-6)
    assert (
        approx(sched.snr[0], 99999) and approx(sched.snr[1], 8714.6) and approx(sched.snr[19], 499)
    )
    w = sched.reweight
    assert w[0] == 1 and approx(w[1], 91284) and approx(w[2], 4159) and approx(w[19], 27.6)
    assert approx(sched.posterior_variance[1], 9.13e-6) and approx(
        sched.posterior_variance[19], 9.94e-5
    )
    assert sched.posterior_variance[0] == 0
    clipped = sched.posterior_log_variance_clipped
    assert clipped[0] == clipped[1]
    assert approx(sched.coef1[1], 0.913) and approx(sched.coef2[1], 0.087, 5e-3)
    assert approx(sched.coef1[19], 0.052, 1e-2) and approx(sched.coef2[19], 0.948)
    assert sched.coef1[0] == 1 and sched.coef2[0] == 0


def test_candidate_levels_noise_std(sched):
    levels = list(range(10, 20 + 1, 4))
    assert levels == [10, 14, 18]
    std = (1 - sched.alphas_cumprod[torch.tensor(levels) - 1]).sqrt()
    for got, want in zip(std.tolist(), (0.0309, 0.0370, 0.0423)):
        assert approx(got, want, 5e-3)


def test_posterior_mean_identity(sched):
    # c1(t)^2 / beta_tilde_t == SNR(t-1) - SNR(t) (specs 1.6)
    t = torch.arange(1, 20)
    lhs = sched.coef1[t].double() ** 2 / sched.posterior_variance[t].double()
    assert torch.allclose(lhs, sched.reweight[t].double(), rtol=1e-3)


def test_denoiser_random_init_output_norm():
    """D3: the untrained denoiser's outputs have norm ~3.4-3.8, far above embedding norms."""
    # early LightGCN embeddings have norm ~0.1 (xavier-uniform ego embeddings)
    x = torch.nn.functional.normalize(torch.randn(2048, 64), dim=1) * 0.1
    norms = []
    for seed in range(8):
        den = MLPDenoiser(64, generator=torch.Generator().manual_seed(seed))
        for t in (0, 10, 19):
            norms.append(den(x, t, dropout_active=False).norm(dim=1).mean().item())
    mean = sum(norms) / len(norms)
    assert 3.2 < mean < 4.3, mean
    assert mean > 10 * x.norm(dim=1).mean().item()


def test_time_bias_table_matches_per_step_projection():
    den = MLPDenoiser(8, hidden=6, time_dim=4, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 8)
    table = den.time_bias(20)
    for t in (0, 7, 19):
        a = den(x, t, dropout_active=False)
        b = den(x, t, dropout_active=False, time_bias=table)
        assert torch.allclose(a, b, atol=1e-6)
    tt = torch.tensor([0, 3, 19, 2, 2])
    assert torch.allclose(
        den(x, tt, dropout_active=False),
        den(x, tt, dropout_active=False, time_bias=table),
        atol=1e-6,
    )
    assert timestep_embedding(tt, 4).shape == (5, 4)


def test_fused_reverse_step_matches_unfused(sched):
    den = MLPDenoiser(8, generator=torch.Generator().manual_seed(0))
    x = torch.randn(6, 8)
    c1, c2 = float(sched.coef1[5]), float(sched.coef2[5])
    fused = den.reverse_step(x, 5, c1, c2, dropout_active=False)
    plain = c1 * den(x, 5, dropout_active=False) + c2 * x
    assert torch.allclose(fused, plain, atol=1e-6)


def test_keep_mask_rate_and_scale():
    g = torch.Generator().manual_seed(0)
    m = keep_mask(torch.Size([300, 64]), 0.5, g, "cpu")
    assert set(m.unique().tolist()) == {0.0, 2.0}
    assert abs((m > 0).float().mean().item() - 0.5) < 0.02
    m2 = keep_mask(torch.Size([300, 64]), 0.2, g, "cpu")
    assert abs((m2 > 0).float().mean().item() - 0.8) < 0.02 and math.isclose(m2.max().item(), 1.25)


def test_full_chain_ends_in_f_of_x1(sched):
    """Code-faithful generation: since c1(0) = 1 and c2(0) = 0, the output is f(x_1, 0)."""
    den = MLPDenoiser(8, generator=torch.Generator().manual_seed(0))
    seen = {}

    def x0_fn(xs, t, n):
        seen[t] = xs.clone()
        return den(xs, t, dropout_active=False)

    x = torch.randn(4, 8)
    out = reverse_chain(sched, x, 19, x0_fn)
    assert sorted(seen) == list(range(20))
    assert torch.allclose(out, den(seen[0], 0, dropout_active=False), atol=1e-6)


def test_per_row_start_matches_separate_chains(sched):
    den = MLPDenoiser(8, generator=torch.Generator().manual_seed(1))
    x = torch.randn(6, 8)
    start = torch.tensor([17, 17, 13, 13, 9, 9])

    def f(xs, t, n):
        return den(xs, t, dropout_active=False)

    batched = reverse_chain(sched, x, start, f)
    for r in range(6):
        single = reverse_chain(sched, x[r : r + 1], int(start[r]), f)
        assert torch.allclose(batched[r], single[0], atol=1e-5)
    with pytest.raises(ValueError, match="descending"):
        reverse_chain(sched, x, start.flip(0), f)


def test_q_sample_moments(sched):
    x0 = torch.ones(20000, 4)
    noise = torch.randn(20000, 4, generator=torch.Generator().manual_seed(0))
    t = torch.full((20000,), 9)
    xt = q_sample(sched, x0, t, noise)
    assert approx(xt.mean(), math.sqrt(0.999047), 1e-3)
    assert approx(xt.std(), 0.0309, 2e-2)
