"""DiffRec's network (Wang et al., SIGIR 2023; docs/methods/diffrec.md): the x0-predicting MLP
denoiser, and the per-step loss histories behind its importance sampling of diffusion steps (also
CausalDiff's)."""

from __future__ import annotations

import torch
from torch import nn

from oodrec.diffusion.denoiser import _xavier_normal_, dropout_with, timestep_embedding


class DiffRecDNN(nn.Module):
    """DiffRec's denoiser: [dropout(x_t), Linear(temb(t))] -> tanh MLP -> |I| outputs.

    Layers run I + E -> dims[-1] -> ... -> dims[0] (tanh after each), then dims[0] -> ... ->
    dims[-1] -> I (tanh between, none at the end), as the official ``DNN`` with
    ``in_dims = [I] + dims[::-1]``. Weights N(0, 2 / (fan_in + fan_out)), biases N(0, 0.001^2).
    The time part of the first layer is a per-step bias (no concatenation of a [B, I + E] input).

    Shapes:
        x [B, I], t [B] long -> [B, I].
    """

    def __init__(
        self,
        num_items: int,
        dims: tuple[int, ...],
        emb_size: int,
        norm: bool,
        dropout: float,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.emb_size, self.norm, self.p = emb_size, norm, dropout
        self.emb_layer = nn.Linear(emb_size, emb_size)
        in_dims = [num_items, *dims[::-1]]
        out_dims = [*dims, num_items]
        first = [in_dims[0] + emb_size, *in_dims[1:]]
        self.in_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(first[:-1], first[1:]))
        self.out_layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(out_dims[:-1], out_dims[1:])
        )
        for layer in (self.emb_layer, *self.in_layers, *self.out_layers):
            _xavier_normal_(layer, generator)
        self.num_steps = 0
        """When set (``train.sync_free``): the diffusion steps T, and ``forward`` computes the
        time bias of all T steps and indexes it, instead of the distinct steps of the batch
        (``unique``, whose size the host must read)."""

    def time_bias(self, t: torch.Tensor) -> torch.Tensor:
        """First-layer pre-activation contribution of the time embedding. Shape [N, H]."""
        first = self.in_layers[0]
        w_t = first.weight[:, first.in_features - self.emb_size :]
        return self.emb_layer(timestep_embedding(t, self.emb_size)) @ w_t.T + first.bias

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, gen: torch.Generator | None = None
    ) -> torch.Tensor:
        if self.norm:
            x = torch.nn.functional.normalize(x, dim=-1)
        if self.training:
            x = dropout_with(x, self.p, gen)
        first = self.in_layers[0]
        w_x = first.weight[:, : first.in_features - self.emb_size]  # [H, I]
        if self.num_steps:  # every step's bias, indexed: fixed shapes (train.sync_free)
            bias = self.time_bias(torch.arange(self.num_steps, device=t.device))[t]
        else:
            steps, inverse = torch.unique(t, return_inverse=True)
            bias = self.time_bias(steps)[inverse]
        h = torch.addmm(bias, x, w_x.T)
        h = torch.tanh(h)
        for layer in self.in_layers[1:]:
            h = torch.tanh(layer(h))
        for i, layer in enumerate(self.out_layers):
            h = layer(h)
            if i != len(self.out_layers) - 1:
                h = torch.tanh(h)
        return h


def update_loss_history(
    history: torch.Tensor, count: torch.Tensor, t: torch.Tensor, loss: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append a batch's per-row losses to per-step FIFO histories, without a loop over rows.

    Equivalent to DiffRec's sequential update: for each row in order, if step t's history is
    full, shift it left and write the loss last; else write it at position ``count[t]`` and
    increment. So each step keeps the last H of (its old entries, its new losses in row order).
    Fixed shapes throughout (gathers, and a spare column for the losses pushed out, instead of
    boolean masks and ``bincount``), so it never reads the device (``train.sync_free``).

    Args:
        history: [T, H] recorded losses (row t: the first ``count[t]`` are valid).
        count: [T] long, valid entries per step.
        t: [B] long, the rows' steps.
        loss: [B], the rows' losses (detached).

    Returns:
        The new ``(history [T, H], count [T])``.
    """
    steps, width = history.shape
    order = torch.argsort(t, stable=True)
    ts, ls = t[order], loss[order].to(history.dtype)
    n_t = torch.zeros(steps, dtype=count.dtype, device=t.device).scatter_add_(
        0, t, torch.ones_like(t, dtype=count.dtype)
    )
    group_start = n_t.cumsum(0) - n_t
    rank = torch.arange(ts.numel(), device=t.device) - group_start[ts]
    total = count + n_t
    drop = (total - width).clamp_min(0)
    pos = torch.arange(width, device=t.device).unsqueeze(0)  # [1, H]
    src = pos + drop.unsqueeze(1)  # [T, H]: the old entry that lands at each position
    keep_old = src < count.unsqueeze(1)
    old = history.gather(1, src.clamp_max(width - 1))
    new = torch.cat([torch.where(keep_old, old, 0.0), history.new_zeros(steps, 1)], 1)
    new_pos = count[ts] + rank - drop[ts]
    new_pos = torch.where(new_pos >= 0, new_pos, width)  # pushed out: the spare column
    new.index_put_((ts, new_pos), ls)
    return new[:, :width].contiguous(), total.clamp_max(width)


def importance_probs(history: torch.Tensor, uniform_prob: float) -> torch.Tensor:
    """p_t proportional to sqrt(mean_h L_{t,h}^2), mixed with ``uniform_prob`` uniform mass.

    Shapes: history [T, H] -> [T] (sums to 1).
    """
    lt = history.pow(2).mean(-1).sqrt()
    p = lt / lt.sum()
    return p * (1.0 - uniform_prob) + uniform_prob / p.numel()


__all__ = ["DiffRecDNN", "importance_probs", "update_loss_history"]
