"""Denoising networks: the DiffRec-style x0-predicting MLP (optionally environment-conditioned)
and the environment posterior q_phi(e | x_t, t) of the causal regulariser
(docs/samplers/cnsdiff.md#per-batch, docs/samplers/cnsdiff.md#the-causal-regulariser)."""

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


_BITS = {}


def keep_bits(shape: torch.Size, p: float, gen: torch.Generator | None, device) -> torch.Tensor:
    """Boolean mask of the entries dropout keeps (probability 1 - p), drawn from ``gen``.

    For p = 0.5 every random byte gives 8 mask bits, several times faster on CPU than
    ``bernoulli_``, which draws one random number per entry.
    """
    numel = 1
    for s in shape:
        numel *= s
    if p == 0.5:
        n_bytes = (numel + 7) // 8
        raw = torch.randint(0, 256, (n_bytes,), generator=gen, device=device, dtype=torch.uint8)
        key = str(device)
        if key not in _BITS:
            _BITS[key] = 2 ** torch.arange(8, dtype=torch.uint8, device=device)
        bits = (raw.unsqueeze(1) & _BITS[key]) != 0  # [n_bytes, 8]
        return bits.view(-1)[:numel].view(shape)
    return torch.rand(shape, generator=gen, device=device) >= p


def keep_mask(shape: torch.Size, p: float, gen: torch.Generator | None, device) -> torch.Tensor:
    """Float mask of kept entries scaled by 1 / (1 - p) (inverted dropout), drawn from ``gen``."""
    return keep_bits(shape, p, gen, device).float() / (1.0 - p)


def dropout_with(x: torch.Tensor, p: float, gen: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout drawing its mask from ``gen`` (nn.Dropout uses the global RNG)."""
    if p <= 0:
        return x
    return x * keep_mask(x.shape, p, gen, x.device)


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

    def time_bias(self, steps: int) -> torch.Tensor:
        """Pre-activation bias of every step: time_proj(temb(t)) @ W_t^T + b. Shape [T, H].

        A reverse chain computes it once instead of once per step.
        """
        device = self.hidden.weight.device
        w_t = self.hidden.weight[:, self.dim : self.dim + self.time_dim]
        temb = timestep_embedding(torch.arange(steps, device=device), self.time_dim)
        return self.time_proj(temb) @ w_t.T + self.hidden.bias

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | int,
        env: torch.Tensor | None = None,
        dropout_gen: torch.Generator | None = None,
        dropout_active: bool | None = None,
        time_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted x0. ``time_bias`` ([T, H], from ``time_bias``) skips the time projection."""
        return self.out(torch.tanh(self._hidden(x, t, env, dropout_gen, dropout_active, time_bias)))

    def reverse_step(
        self,
        x: torch.Tensor,
        t: int,
        coef1: torch.Tensor,
        coef2: torch.Tensor,
        env: torch.Tensor | None = None,
        dropout_gen: torch.Generator | None = None,
        dropout_active: bool | None = None,
        time_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Posterior mean coef1 * f(x, t) + coef2 * x with the output layer fused into one addmm.

        Shapes: x [N, D] -> [N, D].
        """
        h = torch.tanh(self._hidden(x, t, env, dropout_gen, dropout_active, time_bias))
        shift = torch.add(coef2 * x, self.out.bias, alpha=float(coef1))
        return torch.addmm(shift, h, self.out.weight.T, alpha=float(coef1))

    def _hidden(self, x, t, env, dropout_gen, dropout_active, time_bias) -> torch.Tensor:
        active = self.training if dropout_active is None else dropout_active
        if self.norm and active and self.p > 0:
            # normalise and drop out in one multiplication: x * (mask / ||x||). Measured end to
            # end, this beats torch.where / masked_fill variants on CPU.
            inv = x.norm(dim=-1, keepdim=True).clamp_min(1e-12).reciprocal()
            x = x * (keep_mask(x.shape, self.p, dropout_gen, x.device) * inv)
        elif self.norm:
            x = F.normalize(x, dim=-1)
        elif active:
            x = dropout_with(x, self.p, dropout_gen)
        d = self.dim
        w_x = self.hidden.weight[:, :d]  # [H, D]
        scalar_t = isinstance(t, int) or (torch.is_tensor(t) and t.dim() == 0)
        if time_bias is not None:
            bias = time_bias[int(t)].unsqueeze(0) if scalar_t else time_bias[t]  # [1|N, H]
        else:
            w_t = self.hidden.weight[:, d : d + self.time_dim]  # [H, Tdim]
            tt = torch.tensor([int(t)], device=x.device) if scalar_t else t
            bias = self.time_proj(timestep_embedding(tt, self.time_dim)) @ w_t.T + self.hidden.bias
        h = torch.addmm(bias, x, w_x.T)  # [N, H]
        if self.num_envs:
            if env is None:
                raise ValueError("an environment-conditioned denoiser needs env ids")
            w_e = self.hidden.weight[:, d + self.time_dim :]
            h = h + self.env_emb(env) @ w_e.T
        return h


class EnvPosterior(nn.Module):
    """q_phi(e | x_t, t) = softmax(MLP([norm(x_t); temb(t)])), one tanh hidden layer
    (docs/samplers/cnsdiff.md#the-causal-regulariser).

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


class FiLMDenoiser(nn.Module):
    """Conditional epsilon-predictor of DMNS (Nguyen & Fang, WWW'24), docs/samplers/dmns.md.

    Time embedding: sinusoidal -> Linear -> GELU -> Linear, plus the condition y (added).
    Two FiLM blocks h <- (1 + gamma) * h + delta with (gamma, delta) = Linear(SiLU(temb + y)).
    In the official code the linear layer declared in each block is never applied, so the
    network is affine in x_t for a given (t, y); ``block_linear=True`` applies it.
    An output Linear maps back to D.

    Shapes:
        x [N, D], t [N] long, y [N, D] -> epsilon_hat [N, D].
    """

    def __init__(
        self,
        dim: int,
        time_dim: int | None = None,
        num_blocks: int = 2,
        block_linear: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        td = time_dim or dim
        self.time_dim = td
        self.time_mlp = nn.Sequential(nn.Linear(td, dim), nn.GELU(), nn.Linear(dim, dim))
        self.film = nn.ModuleList(nn.Linear(dim, 2 * dim) for _ in range(num_blocks))
        self.block = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_blocks))
        self.block_linear = block_linear
        self.out = nn.Linear(dim, dim)
        for layer in [self.time_mlp[0], self.time_mlp[2], *self.film, *self.block, self.out]:
            _xavier_normal_(layer, generator)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, y: torch.Tensor) -> torch.Tensor:
        if isinstance(t, int):
            # one step for every row (sampling chains): embed the time once
            tt = torch.full((1,), t, dtype=torch.long, device=x.device)  # no host copy
            cond = self.time_mlp(timestep_embedding(tt, self.time_dim)) + y  # [N, D]
        else:
            cond = self.time_mlp(timestep_embedding(t, self.time_dim)) + y  # [N, D]
        act = F.silu(cond)
        h = x
        for film, block in zip(self.film, self.block):
            if self.block_linear:
                h = block(h)
            gamma, delta = film(act).chunk(2, dim=1)
            h = (1 + gamma) * h + delta
        return self.out(h)
