"""DMNS adapted to recommendation (docs/samplers/dmns.md): multi-level negatives from a conditional
diffusion model that generates an item embedding for a user, started from pure noise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from oodrec.diffusion.denoiser import FiLMDenoiser
from oodrec.diffusion.process import ancestral_eps_chain, q_sample
from oodrec.diffusion.schedule import make_schedule
from oodrec.errors import ConfigError
from oodrec.models.base import Embeddings
from oodrec.samplers.base import (
    Negatives,
    NegativeSampler,
    SamplerContext,
    TripletBatch,
    uniform_items,
)
from oodrec.seeding import make_generator


@dataclass(frozen=True)
class DMNSOptions:
    """DMNS hyperparameters (official defaults where they apply, docs/samplers/dmns.md)."""

    steps: int = 50
    """Diffusion steps T (linear beta schedule)."""
    beta_min: float = 1e-4
    """First beta."""
    beta_max: float = 0.02
    """Last beta."""
    levels: tuple[int, ...] = (5, 6, 12, 25)
    """Steps whose states are the multi-level negatives ({T/10, T/8, T/4, T/2} for T=50)."""
    level_weights: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7)
    """BPR weight of each level; the random negative has weight 1."""
    denoiser_lr: float = 1e-3
    """Adam learning rate of the denoiser (official 0.01)."""
    block_linear: bool = False
    """Apply the FiLM blocks' linear layers (the official code declares but never applies them)."""
    loss: Literal["bpr", "sigmoid"] = "bpr"
    """bpr: weighted BPR terms (our adaptation); sigmoid is not offered through BPR weights."""


class DMNSSampler(NegativeSampler):
    """DMNS: diffusion-based multi-level negative sampling, adapted from link prediction.

    Paper: Nguyen & Fang, "Diffusion-based Negative Sampling on Graphs for Link Prediction",
    WWW 2024. Adaptation (ours, label it so in reports): query = user, neighbour = positive
    item; the denoiser learns p(e_i | e_u) from the detached batch embeddings with an L1
    epsilon loss, one step per batch; negatives are the reverse-chain states at ``levels``,
    generated from pure noise conditioned on the user, plus one uniform random negative.

    Shapes:
        sample -> Negatives(emb [B, 1 + len(levels), D], weights [1 + len(levels)]).
    """

    Options = DMNSOptions
    paper = "Nguyen & Fang, Diffusion-based Negative Sampling on Graphs for Link Prediction, WWW'24"

    def __init__(self, ctx: SamplerContext, options: DMNSOptions | None = None) -> None:
        super().__init__(ctx)
        o = options or DMNSOptions()
        if len(o.levels) != len(o.level_weights):
            raise ConfigError("sampler.levels and sampler.level_weights must have the same length")
        if o.loss != "bpr":
            raise ConfigError("sampler.loss: only 'bpr' is implemented for the LightGCN plug-in")
        if any(not 0 <= k < o.steps for k in o.levels):
            raise ConfigError(f"sampler.levels must lie in [0, {o.steps}), got {o.levels}")
        self.options = o
        self.sched = make_schedule("linear", o.steps, 1.0, o.beta_min, o.beta_max).to(ctx.device)
        self.denoiser = FiLMDenoiser(
            ctx.emb_dim,
            block_linear=o.block_linear,
            generator=make_generator(ctx.seed, "diffusion"),
        )
        w = torch.tensor([1.0, *o.level_weights])
        self.register_buffer("weights", w / w.sum())

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.denoiser.parameters()), "lr": self.options.denoiser_lr}]

    def sample(self, batch: TripletBatch, emb: Embeddings, gen: torch.Generator) -> Negatives:
        rand_ids = uniform_items(batch.users, self.ctx.num_items, gen, positives=self.ctx.positives)
        cond = emb.users[batch.users].detach()  # [B, D]
        with torch.no_grad():
            noise = torch.randn(cond.shape, generator=gen, device=cond.device, dtype=cond.dtype)
            states = ancestral_eps_chain(
                self.sched, noise, lambda x, t: self.denoiser(x, t, cond), self.options.levels, gen
            )
            gen_negs = torch.stack([states[k] for k in self.options.levels], dim=1)  # [B, L, D]
        neg = torch.cat([emb.items[rand_ids].unsqueeze(1), gen_negs], dim=1)  # [B, 1+L, D]
        # weights sum to 1 over the 1 + L terms: the BPR sum becomes their weighted mean
        # L2 applies to the real negative only (generated ones have no ego embedding)
        reg = torch.zeros_like(neg)
        reg[:, 0] = emb.item_ego[rand_ids]
        return Negatives(emb=neg, ids=None, reg_ego=reg, weights=self.weights)

    def aux_loss(
        self, batch: TripletBatch, emb: Embeddings, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """One denoiser step per batch: L1 epsilon loss on detached (item | user) pairs."""
        x0 = emb.items[batch.pos_items].detach()
        cond = emb.users[batch.users].detach()
        t = torch.randint(self.sched.steps, (x0.shape[0],), generator=gen, device=x0.device)
        eps = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
        x_t = q_sample(self.sched, x0, t, eps)
        loss = (eps - self.denoiser(x_t, t, cond)).abs().mean()
        return {"dmns_denoiser": loss}
