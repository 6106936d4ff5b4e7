"""Denoising networks: the DiffRec-style x0-predicting MLP (optionally environment-conditioned)
and the environment posterior q_phi(e | x_t, t) of the causal regulariser (specs 1.3, 1.6)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, cos half then sin half (DiffRec convention).

    Shapes:
        t: [N] (int or float) -> [N, dim].
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float().unsqueeze(1) * freqs.unsqueeze(0)  # [N, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


def dropout_with(x: torch.Tensor, p: float, gen: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout drawing its mask from ``gen`` (nn.Dropout uses the global RNG)."""
    if p <= 0:
        return x
    keep = torch.empty_like(x).bernoulli_(1.0 - p, generator=gen)
    return x * keep / (1.0 - p)


def _xavier_normal_(layer: nn.Linear, gen: torch.Generator | None) -> None:
    fan_out, fan_in = layer.weight.shape
    with torch.no_grad():
        layer.weight.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)), generator=gen)
        layer.bias.normal_(0.0, 0.001, generator=gen)


class MLPDenoiser(nn.Module):
    """x0-predicting denoiser f(x_t, t[, e]) of the CNSDiff code (DiffRec ``DNN``).

    L2-normalise x (``norm``), dropout on x, concatenate a Linear-projected sinusoidal time
    embedding (and an environment embedding when ``num_envs`` > 0), Linear -> tanh -> Linear.
    Weights N(0, 2 / (fan_in + fan_out)), biases N(0, 0.001^2).

    Args:
        dim: embedding dimension D (input and output).
        hidden: hidden width.
        time_dim: time-embedding width.
        dropout: input dropout probability.
        norm: L2-normalise the input.
        num_envs: environments K (0: unconditioned).
        env_dim: width of the learned environment embedding.
        generator: RNG for the initialisation.

    Shapes:
        x [N, D], t [N] (long) or a scalar step, env [N] (long) or None -> [N, D].
    """

    def __init__(
        self,
        dim: int = 64,
        hidden: int = 64,
        time_dim: int = 64,
        dropout: float = 0.5,
        norm: bool = True,
        num_envs: int = 0,
        env_dim: int = 16,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.dim, self.time_dim, self.norm, self.p = dim, time_dim, norm, dropout
        self.num_envs = num_envs
        self.time_proj = nn.Linear(time_dim, time_dim)
        in_dim = dim + time_dim + (env_dim if num_envs else 0)
        self.hidden = nn.Linear(in_dim, hidden)
        self.out = nn.Linear(hidden, dim)
        for layer in (self.time_proj, self.hidden, self.out):
            _xavier_normal_(layer, generator)
        if num_envs:
            self.env_emb = nn.Embedding(num_envs, env_dim)
            with torch.no_grad():
                self.env_emb.weight.normal_(0.0, 0.1, generator=generator)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | int,
        env: torch.Tensor | None = None,
        dropout_gen: torch.Generator | None = None,
        dropout_active: bool | None = None,
    ) -> torch.Tensor:
        if self.norm:
            x = F.normalize(x, dim=-1)
        active = self.training if dropout_active is None else dropout_active
        if active:
            x = dropout_with(x, self.p, dropout_gen)
        d = self.dim
        w_x = self.hidden.weight[:, :d]  # [H, D]
        w_t = self.hidden.weight[:, d : d + self.time_dim]  # [H, Tdim]
        if isinstance(t, int) or (torch.is_tensor(t) and t.dim() == 0):
            # One step for every row (reverse chains): project the time embedding once.
            tt = torch.tensor([int(t)], device=x.device)
            bias = self.time_proj(timestep_embedding(tt, self.time_dim)) @ w_t.T  # [1, H]
        else:
            bias = self.time_proj(timestep_embedding(t, self.time_dim)) @ w_t.T  # [N, H]
        h = torch.addmm(bias + self.hidden.bias, x, w_x.T)  # [N, H]
        if self.num_envs:
            if env is None:
                raise ValueError("an environment-conditioned denoiser needs env ids")
            w_e = self.hidden.weight[:, d + self.time_dim :]
            h = h + self.env_emb(env) @ w_e.T
        return self.out(torch.tanh(h))


class EnvPosterior(nn.Module):
    """q_phi(e | x_t, t) = softmax(MLP([norm(x_t); temb(t)])), one tanh hidden layer (specs 1.6).

    Shapes:
        x [N, D], t [N] -> logits [N, K].
    """

    def __init__(
        self,
        dim: int,
        num_envs: int,
        hidden: int = 64,
        time_dim: int = 64,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.hidden = nn.Linear(dim + time_dim, hidden)
        self.out = nn.Linear(hidden, num_envs)
        for layer in (self.hidden, self.out):
            _xavier_normal_(layer, generator)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = torch.cat([F.normalize(x, dim=-1), timestep_embedding(t, self.time_dim)], dim=1)
        return self.out(torch.tanh(self.hidden(h)))
