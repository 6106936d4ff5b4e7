"""Tiny synthetic data for the sampler tests, built in code (no files unless asked)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from oodrec.data.graph import normalized_adjacency
from oodrec.models.base import Embeddings
from oodrec.models.lightgcn import LightGCN
from oodrec.samplers import PositiveIndex, SamplerContext, TripletBatch

NUM_USERS, NUM_ITEMS, EMB_DIM, NUM_LAYERS = 20, 30, 8, 2
BATCH_SIZE = 16


def tiny_interactions(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train / val / IID test / OOD test pairs with a Zipf-skewed item popularity.

    Every user has 4-8 training items drawn without replacement with p(i) ~ 1 / (i + 1), plus
    one held-out item per split; every item has at least one training interaction.
    """
    gen = torch.Generator().manual_seed(seed)
    pop = 1.0 / torch.arange(1, NUM_ITEMS + 1, dtype=torch.float64)  # [I], low ids popular
    picks = torch.multinomial(pop.expand(NUM_USERS, -1), 11, generator=gen)  # [U, 11]
    rows = torch.arange(NUM_USERS).unsqueeze(1).expand(-1, 8)  # [U, 8]
    keep = torch.arange(8) < (4 + torch.arange(NUM_USERS) % 5).unsqueeze(1)  # [U, 8]
    users, items = rows[keep], picks[:, :8][keep]
    # Coverage: item i is also liked by user i % U.
    cover_u, cover_i = torch.arange(NUM_ITEMS) % NUM_USERS, torch.arange(NUM_ITEMS)
    keys = torch.unique(torch.cat([users * NUM_ITEMS + items, cover_u * NUM_ITEMS + cover_i]))
    train = (keys // NUM_ITEMS, keys % NUM_ITEMS)
    held = {}
    for col, split in zip((8, 9, 10), ("val", "iid_test", "ood_test")):
        u, i = torch.arange(NUM_USERS), picks[:, col]
        fresh = ~torch.isin(u * NUM_ITEMS + i, keys)
        held[split] = (u[fresh], i[fresh])
    return {"train": train, **held}


def make_context(
    users: torch.Tensor, items: torch.Tensor, num_users: int, num_items: int, emb_dim: int = EMB_DIM
) -> SamplerContext:
    """A SamplerContext built like ``oodrec.methods.lightgcn.sampler_context`` (CPU)."""
    return SamplerContext(
        num_users=num_users,
        num_items=num_items,
        positives=PositiveIndex(users, items, num_items),
        item_degree=torch.bincount(items, minlength=num_items),
        num_epochs=1,
        device=torch.device("cpu"),
        emb_dim=emb_dim,
    )


def hand_embeddings(
    user_vecs: torch.Tensor, item_vecs: torch.Tensor, item_layers: torch.Tensor | None = None
) -> Embeddings:
    """Embeddings from hand-set vectors (ego = pooled)."""
    return Embeddings(
        users=user_vecs,
        items=item_vecs,
        user_ego=user_vecs,
        item_ego=item_vecs,
        item_layers=item_layers,
    )


@dataclass
class Tiny:
    """The tiny fixture: training pairs, a LightGCN on them, the context and one batch."""

    users: torch.Tensor
    items: torch.Tensor
    model: LightGCN
    ctx: SamplerContext
    batch: TripletBatch


def make_tiny(seed: int = 0) -> Tiny:
    users, items = tiny_interactions(seed)["train"]
    adj = normalized_adjacency(users, items, NUM_USERS, NUM_ITEMS)
    model = LightGCN(
        NUM_USERS, NUM_ITEMS, EMB_DIM, NUM_LAYERS, adj, generator=torch.Generator().manual_seed(1)
    )
    ctx = make_context(users, items, NUM_USERS, NUM_ITEMS)
    idx = torch.randperm(users.numel(), generator=torch.Generator().manual_seed(2))[:BATCH_SIZE]
    return Tiny(users, items, model, ctx, TripletBatch(users[idx], items[idx]))


def write_tiny_dir(root: Path, seed: int = 0) -> Path:
    """Write the tiny interactions as a dataset directory (``user item`` lines)."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "train": "train.txt",
        "val": "valid_iid.txt",
        "iid_test": "test_iid.txt",
        "ood_test": "test_ood.txt",
    }
    for split, (u, i) in tiny_interactions(seed).items():
        lines = "".join(f"{a} {b}\n" for a, b in zip(u.tolist(), i.tolist()))
        (root / files[split]).write_text(lines)
    return root
