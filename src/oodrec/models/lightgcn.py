"""LightGCN (He et al., SIGIR 2020): linear propagation over the normalised bipartite graph."""

from __future__ import annotations

import torch
from torch import nn

from oodrec.models.base import Embeddings


class _SymmetricSpMM(torch.autograd.Function):
    """``A @ X`` for a symmetric sparse ``A``, whose backward is ``A @ grad`` (A^T == A).

    torch's generic CSR backward on CPU transposes and re-sorts ``A`` on every call; since the
    LightGCN matrix is symmetric, reusing it directly makes a training step 3-4x faster.
    """

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, ctx.adj @ grad


def symmetric_spmm(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``adj @ x`` with the symmetric backward. Shapes: adj [N, N] sparse, x [N, D] -> [N, D]."""
    return _SymmetricSpMM.apply(adj, x)


def layer_stack(adj: torch.Tensor, ego: torch.Tensor, num_layers: int) -> torch.Tensor:
    """LightGCN's layers ``[E, A E, ..., A^L E]`` (layer 0 included), stacked.

    Shapes: adj [N, N] sparse, ego [N, D] -> [L+1, N, D]; ``.mean(0)`` is the pooled output.
    """
    layers, x = [ego], ego
    for _ in range(num_layers):
        x = symmetric_spmm(adj, x)
        layers.append(x)
    return torch.stack(layers)


class LightGCN(nn.Module):
    """LightGCN backbone: E^(l+1) = A_hat E^(l), E = mean_{l=0..L} E^(l) (layer 0 included).

    Paper: Xiangnan He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
    Recommendation", SIGIR 2020.

    Args:
        num_users, num_items: id space sizes.
        emb_dim: embedding dimension D.
        num_layers: propagation layers L.
        adj: symmetric normalised adjacency [U+I, U+I] (sparse CSR), see ``data.graph``.
        init: ``xavier_uniform``, ``xavier_normal`` or ``normal`` (N(0, 0.1^2)).
        generator: RNG for the initialisation.

    Example::

        adj = normalized_adjacency(users, items, U, I)
        model = LightGCN(U, I, 64, 2, adj)
        emb = model.propagate()          # emb.users [U, 64], emb.items [I, 64]
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        emb_dim: int,
        num_layers: int,
        adj: torch.Tensor,
        init: str = "xavier_uniform",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.num_users, self.num_items = num_users, num_items
        self.num_layers = num_layers
        self.user_emb = nn.Parameter(torch.empty(num_users, emb_dim))
        self.item_emb = nn.Parameter(torch.empty(num_items, emb_dim))
        self.register_buffer("adj", adj, persistent=False)
        with torch.no_grad():
            for p in (self.user_emb, self.item_emb):
                init_embedding_(p, init, generator)

    def propagate(self) -> Embeddings:
        """All users' and items' pooled embeddings, with the per-layer stacks."""
        ego = torch.cat([self.user_emb, self.item_emb])  # [U+I, D]
        stack = layer_stack(self.adj, ego, self.num_layers)  # [L+1, U+I, D]
        pooled = stack.mean(0)  # [U+I, D]
        users, items = pooled.split([self.num_users, self.num_items])
        return Embeddings(
            users=users,
            items=items,
            user_ego=self.user_emb,
            item_ego=self.item_emb,
            item_layers=stack[:, self.num_users :],
            user_layers=stack[:, : self.num_users],
        )


def init_embedding_(p: torch.Tensor, init: str, generator: torch.Generator | None) -> None:
    """Initialise the [N, D] table ``p`` in place: ``xavier_uniform``, ``xavier_normal`` or
    ``normal`` (N(0, 0.1^2)), drawing from ``generator``. Raises ValueError on another name."""
    fan_in, fan_out = p.shape[1], p.shape[0]
    if init == "xavier_uniform":
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        p.uniform_(-bound, bound, generator=generator)
    elif init == "xavier_normal":
        p.normal_(0.0, (2.0 / (fan_in + fan_out)) ** 0.5, generator=generator)
    elif init == "normal":
        p.normal_(0.0, 0.1, generator=generator)
    else:
        raise ValueError(f"unknown init {init!r}")
