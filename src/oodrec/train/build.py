"""Building a run's parts from its config: the backbone and the sampler context."""

from __future__ import annotations

import torch

from oodrec.config import ExperimentConfig
from oodrec.data.dataset import InteractionDataset
from oodrec.data.graph import normalized_adjacency
from oodrec.models.base import Recommender
from oodrec.models.lightgcn import LightGCN
from oodrec.registry import Registry
from oodrec.samplers import PositiveIndex, SamplerContext
from oodrec.seeding import make_generator

MODELS: Registry[type[Recommender]] = Registry("model")
MODELS.register("lightgcn", LightGCN)


def build_model(
    cfg: ExperimentConfig, dataset: InteractionDataset, device: torch.device
) -> Recommender:
    """The backbone, initialised from the run seed's ``init`` stream."""
    MODELS.get(cfg.model.name)
    adj = normalized_adjacency(
        dataset.train.users, dataset.train.items, dataset.num_users, dataset.num_items
    ).to(device)
    gen = make_generator(cfg.seed, "init")
    model = LightGCN(
        dataset.num_users,
        dataset.num_items,
        cfg.model.emb_dim,
        cfg.model.num_layers,
        adj,
        init=cfg.model.init,
        generator=gen,
    )
    return model.to(device)


def sampler_context(
    cfg: ExperimentConfig, dataset: InteractionDataset, device: torch.device
) -> SamplerContext:
    return SamplerContext(
        num_users=dataset.num_users,
        num_items=dataset.num_items,
        positives=PositiveIndex(dataset.train.users, dataset.train.items, dataset.num_items).to(
            device
        ),
        item_degree=dataset.item_degree().to(device),
        num_epochs=cfg.train.epochs,
        device=device,
        emb_dim=cfg.model.emb_dim,
        dataset=dataset.name,
        seed=cfg.seed,
    )
