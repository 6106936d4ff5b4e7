"""Loss terms of CNSDiff: diffusion loss (code KL, variational causal, REx) and alignment.

Kept apart from the sampler (samplers/cnsdiff.py) so each piece can be tested on its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oodrec.diffusion.denoiser import EnvPosterior, MLPDenoiser
from oodrec.diffusion.process import code_causal_kl, q_sample, x0_loss_terms
from oodrec.diffusion.schedule import DiffusionSchedule


class _GradScale(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad * ctx.scale, None


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` whose gradient is multiplied by ``scale`` (0 detaches)."""
    if scale == 0:
        return x.detach()
    if scale == 1:
        return x
    return _GradScale.apply(x, scale)


def alignment_loss(
    pos: torch.Tensor,
    hard: torch.Tensor,
    rand: torch.Tensor,
    temperature: float,
    positive_noise: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """The code's decoupled InfoNCE on item embeddings (D8).

    Anchor norm(p), its positive norm(p + noise * N(0, I)), negatives the L2-normalised rows of
    [hard; rand] of the whole batch (2B per anchor); the positive is not in the log-sum-exp.

    Shapes:
        pos, hard, rand: [B, D] -> scalar.
    """
    noise = torch.randn(pos.shape, generator=gen, device=pos.device, dtype=pos.dtype)
    anchor = F.normalize(pos, dim=1) / temperature  # 1/tau folded into the anchor
    positive = F.normalize(pos + positive_noise * noise, dim=1)
    pos_term = (anchor * positive).sum(1)  # [B]
    # The hard negatives are constants: scoring them apart skips half of the backward product.
    logits_h = anchor @ F.normalize(hard.detach(), dim=1).T  # [B, B]
    logits_r = anchor @ F.normalize(rand, dim=1).T  # [B, B]
    if 1.0 / temperature <= 50.0:
        # cosine logits are bounded by 1/tau: exp cannot overflow, no max-shift needed
        lse = torch.log(logits_h.exp().sum(1) + logits_r.exp().sum(1))
    else:
        lse = torch.logsumexp(torch.cat([logits_h, logits_r], dim=1), dim=1)
    return (-pos_term + lse).mean()


def _noised(sched: DiffusionSchedule, x0: torch.Tensor, gen: torch.Generator):
    n = x0.shape[0]
    t = torch.randint(sched.steps, (n,), generator=gen, device=x0.device)
    eps = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
    return t, eps, q_sample(sched, x0, t, eps)


def code_diffusion_loss(
    sched: DiffusionSchedule,
    denoiser: MLPDenoiser,
    x0: torch.Tensor,
    gen: torch.Generator,
    causal_weight: float,
    use_causal: bool,
    dropout: bool,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The code's diffusion loss: mean_b w_t mse_b + causal_weight * KL (D4, D5).

    Shapes:
        x0: [B, D] -> scalar.
    """
    t, eps, x_t = _noised(sched, x0, gen)
    x0_hat = denoiser(x_t, t, dropout_gen=gen, dropout_active=dropout)
    mse = x0_loss_terms(sched, x0, t, x0_hat).mean()
    loss, info = mse, {"diff_mse": mse.detach()}
    if use_causal and causal_weight:
        x_prev = q_sample(sched, x0, (t - 1).clamp_min(0), eps)
        kl = code_causal_kl(sched, x0_hat, x_prev, t)
        loss = loss + causal_weight * kl
        info["causal_kl"] = kl.detach()
    return loss, info


def variational_diffusion_loss(
    sched: DiffusionSchedule,
    denoiser: MLPDenoiser,
    posterior: EnvPosterior,
    x0: torch.Tensor,
    env_obs: torch.Tensor,
    prior: torch.Tensor,
    gen: torch.Generator,
    causal_weight: float,
    use_causal: bool,
    supervision: float,
    likelihood_scale: str,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_sampling + lambda_1 * L_causal of the proposal in
    docs/samplers/cnsdiff.md#the-causal-regulariser (negative Eq. 17 bound).

    L_causal = mean_b [ sum_e q(e|x_t,t) D_t(e) + KL(q || p0) ] + gamma * CE(q, e_obs) with
    D_t(e) = 1/2 w_t ||x0 - f(x_t, t, e)||^2 (divided by D for ``likelihood_scale="mean"``);
    L_sampling uses the backdoor-adjusted prediction sum_e p0(e) f(x_t, t, e).

    Shapes:
        x0: [B, D]; env_obs: [B] long; prior: [K] -> scalar.
    """
    k = prior.numel()
    b, d = x0.shape
    t, _, x_t = _noised(sched, x0, gen)
    envs = torch.arange(k, device=x0.device).repeat_interleave(b)  # [K*B]
    x0_hat = denoiser(x_t.repeat(k, 1), t.repeat(k), envs, dropout_gen=gen)  # [K*B, D]
    x0_hat = x0_hat.view(k, b, d)
    x0_do = torch.einsum("k,kbd->bd", prior, x0_hat)  # [B, D]
    sampling = x0_loss_terms(sched, x0, t, x0_do).mean()
    info: dict[str, torch.Tensor] = {"diff_mse": sampling.detach()}
    if not use_causal or not causal_weight:
        return sampling, info
    sq = ((x0.unsqueeze(0) - x0_hat) ** 2).sum(-1)  # [K, B]
    if likelihood_scale == "mean":
        sq = sq / d
    dist = 0.5 * sched.reweight[t].unsqueeze(0) * sq  # [K, B]
    logits = posterior(x_t, t)  # [B, K]
    log_q = F.log_softmax(logits, dim=1)
    q = log_q.exp()
    expected = (q * dist.T).sum(1)  # [B]
    kl = (q * (log_q - prior.log().unsqueeze(0))).sum(1)  # [B]
    causal = (expected + kl).mean()
    if supervision:
        causal = causal + supervision * F.nll_loss(log_q, env_obs)
    info.update(
        causal=causal.detach(),
        q_entropy=-(q * log_q).sum(1).mean().detach(),
        env_acc=(log_q.argmax(1) == env_obs).float().mean().detach(),
    )
    return sampling + causal_weight * causal, info


def rex_diffusion_loss(
    sched: DiffusionSchedule,
    denoiser: MLPDenoiser,
    x0: torch.Tensor,
    env_obs: torch.Tensor,
    num_envs: int,
    gen: torch.Generator,
    causal_weight: float,
    use_causal: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Diffusion loss + causal_weight * Var_e(mean loss in environment e)
    (docs/samplers/cnsdiff.md#the-causal-regulariser, "rex")."""
    t, _, x_t = _noised(sched, x0, gen)
    x0_hat = denoiser(x_t, t, dropout_gen=gen)
    per_row = x0_loss_terms(sched, x0, t, x0_hat)  # [B]
    loss = per_row.mean()
    info: dict[str, torch.Tensor] = {"diff_mse": loss.detach()}
    if use_causal and causal_weight:
        sums = torch.zeros(num_envs, device=x0.device).index_add(0, env_obs, per_row)
        counts = torch.bincount(env_obs, minlength=num_envs).float()
        present = counts > 0
        means = sums[present] / counts[present]
        var = means.var(unbiased=False) if means.numel() > 1 else means.sum() * 0
        loss = loss + causal_weight * var
        info["rex_var"] = var.detach()
    return loss, info
