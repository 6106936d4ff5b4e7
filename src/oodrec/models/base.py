"""``Embeddings``, the result of a propagation, shared by models, samplers and the evaluator."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Embeddings:
    """Output of a model's propagation.

    Shapes:
        users: [U, D] final (pooled) user embeddings.
        items: [I, D] final (pooled) item embeddings.
        user_ego: [U, D] layer-0 (trainable) user embeddings, for L2.
        item_ego: [I, D] layer-0 item embeddings, for L2.
        item_layers: optional [L+1, I, D] per-layer item embeddings (MixGCF).
        user_layers: optional [L+1, U, D] per-layer user embeddings.
    """

    users: torch.Tensor
    items: torch.Tensor
    user_ego: torch.Tensor
    item_ego: torch.Tensor
    item_layers: torch.Tensor | None = None
    user_layers: torch.Tensor | None = None
