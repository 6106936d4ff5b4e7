"""Forward noising, the x0-parameterised reverse step and chains, and the training losses."""

from __future__ import annotations

from collections.abc import Callable

import torch

from oodrec.diffusion.schedule import DiffusionSchedule

# A denoiser call on the first n rows: (x_t [n, D], step t, n) -> predicted x0 [n, D].
X0Fn = Callable[[torch.Tensor, int, int], torch.Tensor]
# A fused reverse step on the first n rows: (x_t [n, D], t, n) -> posterior mean [n, D].
StepFn = Callable[[torch.Tensor, int, int], torch.Tensor]


def q_sample(
    sched: DiffusionSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise.

    Shapes:
        x0, noise: [N, D]; t: [N] long -> [N, D].
    """
    ab = sched.alphas_cumprod[t].unsqueeze(1)  # [N, 1]
    return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise


def reverse_chain(
    sched: DiffusionSchedule,
    x: torch.Tensor,
    start: torch.Tensor | int,
    x0_fn: X0Fn | None = None,
    noise_gen: torch.Generator | None = None,
    sampling_noise: bool = False,
    step_fn: StepFn | None = None,
    counts: list[int] | None = None,
) -> torch.Tensor:
    """Run the posterior-mean reverse steps x_{t-1} = c1(t) f(x_t, t) + c2(t) x_t.

    Row r runs steps ``start[r], start[r]-1, ..., 0``. ``start`` must be sorted in descending
    order, so the rows still running at step t are a prefix and each step is one batched
    denoiser call on that prefix.

    Args:
        sched: the schedule.
        x: [N, D] noised inputs.
        start: [N] long, descending (per-row first step), or an int (same for all rows).
        x0_fn: the denoiser, ``x0_fn(x_t[:n], t, n) -> x0_hat [n, D]``.
        step_fn: alternatively, a fused step returning the posterior mean directly.
        noise_gen: RNG for ``sampling_noise``.
        sampling_noise: add sqrt(beta_tilde_t) noise for t > 0.
        counts: with a tensor ``start``, the rows still running at each step when the caller
            knows them on the host (``counts[t]`` = number of rows with start >= t, for t =
            0..max(start)): ``start`` is then neither checked nor read from the device.

    Returns:
        [N, D], the state after step 0 (rows with start < 0 are returned unchanged).
    """
    n_rows = x.shape[0]
    if isinstance(start, int):
        first, counts = start, None
    elif counts is not None:
        first = len(counts) - 1
    else:
        if start.numel() > 1 and bool((start[1:] > start[:-1]).any()):
            raise ValueError("reverse_chain: per-row start steps must be sorted descending")
        first = int(start.max()) if start.numel() else -1
        # active[t] = number of rows whose start >= t
        counts = start.unsqueeze(0) >= torch.arange(first + 1, device=start.device).unsqueeze(1)
        counts = counts.sum(1).tolist()
    x = x.clone()
    for t in range(first, -1, -1):
        n = n_rows if counts is None else counts[t]
        if n == 0:
            continue
        xs = x[:n]
        if step_fn is not None:
            new = step_fn(xs, t, n)
        else:
            new = sched.coef1[t] * x0_fn(xs, t, n) + sched.coef2[t] * xs
        if sampling_noise and t > 0:
            eps = torch.randn(xs.shape, generator=noise_gen, device=x.device, dtype=x.dtype)
            new = new + (0.5 * sched.posterior_log_variance_clipped[t]).exp() * eps
        x[:n] = new
    return x


def gaussian_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2))."""
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def x0_loss_terms(
    sched: DiffusionSchedule,
    x0: torch.Tensor,
    t: torch.Tensor,
    x0_hat: torch.Tensor,
) -> torch.Tensor:
    """SNR-difference weighted x0 MSE per row, w_t * mean_d (x0 - x0_hat)^2 (DiffRec reweight).

    Shapes:
        x0, x0_hat: [N, D]; t: [N] -> [N].
    """
    return sched.reweight[t] * ((x0 - x0_hat) ** 2).mean(1)


def code_causal_kl(
    sched: DiffusionSchedule, x0_hat: torch.Tensor, x_prev_fwd: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """The CNSDiff code's "causal regularisation" (D5): elementwise
    KL(N(x0_hat, beta_tilde_clip_t) || N(x_{t-1}^fwd, beta_tilde_clip_{t-1})), with the second
    log-variance 0 at t = 0, averaged over all elements. Returns a scalar."""
    lv1 = sched.posterior_log_variance_clipped[t].unsqueeze(1)  # [N, 1]
    lv2 = sched.posterior_log_variance_clipped[(t - 1).clamp_min(0)].unsqueeze(1)
    lv2 = torch.where((t == 0).unsqueeze(1), torch.zeros_like(lv2), lv2)
    return gaussian_kl(x0_hat, lv1.expand_as(x0_hat), x_prev_fwd, lv2.expand_as(x0_hat)).mean()


def ancestral_eps_chain(
    sched: DiffusionSchedule,
    x: torch.Tensor,
    eps_fn: Callable[[torch.Tensor, int], torch.Tensor],
    collect: tuple[int, ...],
    gen: torch.Generator | None = None,
) -> dict[int, torch.Tensor]:
    """DDPM ancestral sampling with an epsilon-predictor from x_T (pure noise) down to x_0.

    x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_t) + sigma_t z with
    sigma_t^2 = beta_tilde_t, and no noise at the last step.

    Args:
        sched: the schedule.
        x: [N, D] starting noise x_T.
        eps_fn: ``eps_fn(x_t, t) -> eps_hat`` (t: the step, shared by every row).
        collect: steps whose state x_t (after the update that produces it) is returned; the
            state of step t is the output of the reverse step t+1 -> t.
        gen: RNG of the added noise.

    Returns:
        step -> [N, D]. The chain stops at the lowest collected step.
    """
    out: dict[int, torch.Tensor] = {}
    steps = sched.steps
    if steps in collect:
        out[steps] = x
    alphas = 1.0 - sched.betas
    lowest = min(collect) if collect else 0
    for t in range(steps - 1, lowest - 1, -1):
        eps = eps_fn(x, t)
        coef = sched.betas[t] / (1.0 - sched.alphas_cumprod[t]).sqrt()
        x = (x - coef * eps) / alphas[t].sqrt()
        if t > 0:
            z = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            x = x + sched.posterior_variance[t].sqrt() * z
        if t in collect:
            out[t] = x
    return out
