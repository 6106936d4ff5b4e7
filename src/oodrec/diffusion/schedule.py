"""Noise schedules and the derived posterior quantities (DDPM / DiffRec conventions).

Cumulative products are computed in float64 (docs/samplers/cnsdiff.md#implementation-notes) and cast
to float32 at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class DiffusionSchedule:
    """All per-step quantities of a schedule with ``steps`` = T (indices ``t = 0..T-1``).

    Shapes: every tensor is [T], float32.

    Attributes:
        betas: beta_t.
        alphas_cumprod: alpha_bar_t.
        alphas_cumprod_prev: alpha_bar_{t-1} (1 at t = 0).
        posterior_variance: beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t).
        posterior_log_variance_clipped: log beta_tilde_t with index 0 replaced by index 1.
        coef1, coef2: posterior-mean coefficients, mean = coef1 * x0 + coef2 * x_t.
        snr: alpha_bar_t / (1 - alpha_bar_t).
        reweight: SNR(t-1) - SNR(t) for t >= 1 and 1 at t = 0 (DiffRec ``reweight=True``).
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    coef1: torch.Tensor
    coef2: torch.Tensor
    snr: torch.Tensor
    reweight: torch.Tensor

    @property
    def steps(self) -> int:
        return int(self.betas.numel())

    def to(self, device: torch.device | str) -> DiffusionSchedule:
        return DiffusionSchedule(**{k: v.to(device) for k, v in self.__dict__.items()})


def betas_for(kind: str, steps: int, scale: float, beta_min: float, beta_max: float) -> np.ndarray:
    """Beta sequence, float64.

    ``linear``: ``linspace(scale * min, scale * max, T)``.
    ``linear-var``: ``v = linspace(scale * min, scale * max, T)`` read as 1 - alpha_bar, then
    ``beta_0 = v_0`` and ``beta_t = min(1 - (1 - v_t) / (1 - v_{t-1}), 0.999)`` (DiffRec).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    start, end = scale * beta_min, scale * beta_max
    if kind == "linear":
        return np.linspace(start, end, steps, dtype=np.float64)
    if kind == "linear-var":
        v = np.linspace(start, end, steps, dtype=np.float64)
        betas = np.empty(steps, dtype=np.float64)
        betas[0] = v[0]
        betas[1:] = np.minimum(1.0 - (1.0 - v[1:]) / (1.0 - v[:-1]), 0.999)
        return betas
    raise ValueError(f"unknown noise schedule {kind!r}; use 'linear' or 'linear-var'")


def make_schedule(
    kind: str = "linear-var",
    steps: int = 20,
    scale: float = 0.1,
    beta_min: float = 1e-4,
    beta_max: float = 0.02,
) -> DiffusionSchedule:
    """Build a schedule (defaults: the CNSDiff code's linear-var, T=20, scale 0.1)."""
    return schedule_from_betas(betas_for(kind, steps, scale, beta_min, beta_max))


def schedule_from_betas(betas: np.ndarray) -> DiffusionSchedule:
    """The schedule of a given beta sequence (float64 [T], each in (0, 1)); HDRM fixes beta_0."""
    betas = np.asarray(betas, dtype=np.float64)
    steps = int(betas.size)
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.concatenate([[1.0], ac[:-1]])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    clipped = np.concatenate([[post_var[1] if steps > 1 else post_var[0]], post_var[1:]])
    coef1 = betas * np.sqrt(ac_prev) / (1.0 - ac)
    coef2 = (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac)
    snr = ac / (1.0 - ac)
    reweight = np.ones(steps, dtype=np.float64)
    reweight[1:] = snr[:-1] - snr[1:]
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return DiffusionSchedule(
        betas=f(betas),
        alphas_cumprod=f(ac),
        alphas_cumprod_prev=f(ac_prev),
        posterior_variance=f(post_var),
        posterior_log_variance_clipped=f(np.log(np.maximum(clipped, 1e-40))),
        coef1=f(coef1),
        coef2=f(coef2),
        snr=f(snr),
        reweight=f(reweight),
    )
