"""HDRM's networks (Yuan et al., WWW 2025; docs/methods/hdrm.md): the hyperbolic LightGCN backbone
and the conditional denoiser. The training rules live in ``oodrec.methods.hdrm_backbone`` (stage 1)
and ``oodrec.methods.hdrm`` (stage 2).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from oodrec.diffusion.denoiser import _xavier_normal_, dropout_with, timestep_embedding
from oodrec.models.hyperbolic import expmap0, logmap0
from oodrec.models.lightgcn import symmetric_spmm

Activation = Literal["relu", "tanh", "sigmoid"]
_ACTS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


class HyperbolicLightGCN(nn.Module):
    """LightGCN whose ego embeddings are hyperboloid points, propagated in the tangent space at
    the origin (HDRM ``LightGCN.computer``).

    Ego rows are exp_o(U(-init_scale, init_scale)^D) (the first coordinate of the uniform draw is
    ignored by exp_o). Propagation: E^(0) = log_o(ego), E^(l+1) = A_hat E^(l), and the output is
    E = sum_{l=1..L} E^(l), **layer 0 excluded** (unlike LightGCN's mean over 0..L). Scores are
    -d^2 between exp_o(E_u) and exp_o(E_i).

    Paper: Meng Yuan et al., "Hyperbolic Diffusion Recommender Model", WWW 2025; the backbone
    follows HGCF (Sun et al., "HGCF: Hyperbolic Graph Convolution Networks for Collaborative
    Filtering", WWW 2021).

    Args:
        num_users, num_items: id space sizes.
        emb_dim: ambient dimension D (the manifold has dimension D - 1).
        num_layers: propagation layers L (>= 1).
        adj: symmetric normalised adjacency [U+I, U+I] (sparse).
        c: curvature magnitude (curvature -c).
        init_scale: half-width of the uniform initialisation in the tangent space.
        generator: RNG for the initialisation.

    Shapes:
        user_emb [U, D], item_emb [I, D] (hyperboloid points); ``tangent()`` -> ([U, D], [I, D]).
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        emb_dim: int,
        num_layers: int,
        adj: torch.Tensor,
        c: float = 1.0,
        init_scale: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(
                f"HyperbolicLightGCN sums layers 1..L: num_layers >= 1, got {num_layers}"
            )
        self.num_users, self.num_items = num_users, num_items
        self.num_layers, self.c = num_layers, c
        self.register_buffer("adj", adj, persistent=False)
        ego = []
        for n in (num_users, num_items):
            u = torch.empty(n, emb_dim).uniform_(-init_scale, init_scale, generator=generator)
            ego.append(expmap0(u, c))
        self.user_emb = nn.Parameter(ego[0])
        self.item_emb = nn.Parameter(ego[1])

    def tangent(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagated tangent vectors at the origin of every user and item (first coordinate 0)."""
        x = torch.cat([logmap0(self.user_emb, self.c), logmap0(self.item_emb, self.c)])
        x = symmetric_spmm(self.adj, x)  # layer 1
        out = x
        for _ in range(self.num_layers - 1):
            x = symmetric_spmm(self.adj, x)
            out = out + x
        users, items = out.split([self.num_users, self.num_items])
        return users, items

    def to_manifold(self, tangent: torch.Tensor) -> torch.Tensor:
        """exp_o of tangent vectors (projected). Shapes: [N, D] -> [N, D]."""
        return expmap0(tangent, self.c)


class ConditionalDenoiser(nn.Module):
    """HDRM's ``DNN``: x0-prediction from [dropout(x_t); Linear(temb(t)); cond] through an MLP.

    Layers run (2D + E) -> dims[-1] -> ... -> dims[0] (activation after each), then dims[0] ->
    ... -> dims[-1] -> D (activation between, none at the end), as the official ``DNN`` with
    ``out_dims = dims + [D]`` and ``in_dims = out_dims[::-1]``. Weights N(0, 2 / (fan_in +
    fan_out)), biases N(0, 0.001^2); dropout is drawn from a generator.

    Args:
        dim: embedding dimension D (of x_t, of the condition and of the output).
        dims: hidden widths (official ``[200, 1000]``).
        emb_size: width of the sinusoidal time embedding.
        act: activation (``relu``, ``tanh`` or ``sigmoid``).
        dropout: dropout on x_t while training.
        norm: L2-normalise x_t first.
        generator: RNG for the initialisation.

    Shapes:
        x [N, D], cond [N, D], t [N] long or an int -> [N, D].
    """

    def __init__(
        self,
        dim: int,
        dims: tuple[int, ...],
        emb_size: int,
        act: Activation = "relu",
        dropout: float = 0.5,
        norm: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.emb_size, self.norm, self.p, self.act = emb_size, norm, dropout, _ACTS[act]
        self.emb_layer = nn.Linear(emb_size, emb_size)
        down = [2 * dim + emb_size, *dims[::-1]]
        up = [*dims, dim]
        self.in_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(down[:-1], down[1:]))
        self.out_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(up[:-1], up[1:]))
        for layer in (*self.in_layers, *self.out_layers, self.emb_layer):
            _xavier_normal_(layer, generator)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        t: torch.Tensor | int,
        gen: torch.Generator | None = None,
    ) -> torch.Tensor:
        if isinstance(t, int):
            temb = self.emb_layer(
                timestep_embedding(torch.tensor([t], device=x.device), self.emb_size)
            ).expand(x.shape[0], -1)
        else:
            temb = self.emb_layer(timestep_embedding(t, self.emb_size))  # [N, E]
        if self.norm:
            x = F.normalize(x, dim=-1)
        if self.training:
            x = dropout_with(x, self.p, gen)
        h = torch.cat([x, temb, cond], dim=-1)  # [N, 2D + E]
        for layer in self.in_layers:
            h = self.act(layer(h))
        last = len(self.out_layers) - 1
        for i, layer in enumerate(self.out_layers):
            h = layer(h)
            if i != last:
                h = self.act(h)
        return h


__all__ = ["Activation", "ConditionalDenoiser", "HyperbolicLightGCN"]
