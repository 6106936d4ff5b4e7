"""The Recommender protocol and the Embeddings type shared by models and samplers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


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


class Recommender(nn.Module):
    """A model that propagates to embeddings and scores users against all items.

    Subclasses implement ``propagate``; ``score`` defaults to inner products.
    """

    num_users: int
    num_items: int

    def propagate(self) -> Embeddings:  # pragma: no cover - abstract
        """Full-graph propagation (with gradients when training)."""
        raise NotImplementedError

    def score(self, users: torch.Tensor, emb: Embeddings | None = None) -> torch.Tensor:
        """Scores of ``users`` against every item.

        Shapes:
            users: [B] -> scores [B, I].
        """
        emb = emb if emb is not None else self.propagate()
        return emb.users[users] @ emb.items.T
