from __future__ import annotations

import torch

from oodrec.diffusion.process import ancestral_eps_chain
from oodrec.diffusion.schedule import make_schedule
from oodrec.samplers import build_sampler

from .helpers import make_tiny


def test_multilevel_negatives_and_weights():
    tiny = make_tiny()
    s = build_sampler("dmns", tiny.ctx, {})
    negs = s.sample(tiny.batch, tiny.model.propagate(), torch.Generator().manual_seed(0))
    assert negs.emb.shape[1] == 5 and torch.isclose(negs.weights.sum(), torch.tensor(1.0))
    assert torch.allclose(negs.weights, torch.tensor([1.0, 1.0, 0.9, 0.8, 0.7]) / 4.4)
    assert (negs.reg_ego[:, 1:] == 0).all()
    assert s.param_groups()[0]["lr"] == 1e-3


def test_denoiser_learns_with_its_own_optimiser():
    tiny = make_tiny()
    s = build_sampler("dmns", tiny.ctx, {"denoiser_lr": 1e-2})
    opt = torch.optim.Adam(s.param_groups())
    emb = tiny.model.propagate()
    losses = []
    for i in range(150):
        loss = s.aux_loss(tiny.batch, emb, torch.Generator().manual_seed(i))["dmns_denoiser"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < 0.9 * sum(losses[:20]) / 20


def test_ancestral_chain_with_exact_eps_recovers_x0():
    """With the true noise as eps prediction and no added noise, one reverse step is exact."""
    sched = make_schedule("linear", 50, 1.0, 1e-4, 0.02)
    x0 = torch.randn(4, 3)
    eps = torch.randn(4, 3)
    ab = sched.alphas_cumprod[0]
    x1 = ab.sqrt() * x0 + (1 - ab).sqrt() * eps  # a state at t = 0
    s1 = make_schedule("linear", 1, 1.0, 1e-4, 1e-4)
    out = ancestral_eps_chain(s1, x1, lambda x, t: eps, collect=(0,))
    assert torch.allclose(out[0], x0, atol=1e-4)
