"""Symmetric-normalised bipartite adjacency, built with vectorised COO operations."""

from __future__ import annotations

import warnings

import torch


def normalized_adjacency(
    users: torch.Tensor,
    items: torch.Tensor,
    num_users: int,
    num_items: int,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The LightGCN propagation matrix D^-1/2 A D^-1/2 over users and items, as CSR.

    Node ids: users ``0..U-1``, items ``U..U+I-1``. No self loops. Zero-degree rows stay zero.

    Args:
        users, items: training interactions. Shape [N] each.
        num_users, num_items: id space sizes.
        weights: optional edge weights. Shape [N].

    Returns:
        A ``torch.sparse_csr`` float32 tensor of shape [U+I, U+I], symmetric.
    """
    n = num_users + num_items
    rows = torch.cat([users, items + num_users])
    cols = torch.cat([items + num_users, users])
    vals = torch.ones(rows.numel(), dtype=torch.float32, device=rows.device)
    if weights is not None:
        vals = torch.cat([weights, weights]).float()
    deg = torch.zeros(n, dtype=torch.float32, device=rows.device).index_add_(0, rows, vals)
    inv_sqrt = torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), torch.zeros_like(deg))
    vals = inv_sqrt[rows] * vals * inv_sqrt[cols]
    coo = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), vals, (n, n), check_invariants=False
    ).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()
