"""RNS: uniform random negative sampling (the LightGCN + BPR baseline)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from oodrec.models.base import Embeddings
from oodrec.samplers.base import (
    Negatives,
    NegativeSampler,
    SamplerContext,
    TripletBatch,
    uniform_items,
)


@dataclass(frozen=True)
class UniformOptions:
    """Options of the uniform sampler."""

    exclude_positives: bool = True
    """Redraw negatives that are training positives of the user."""


class UniformSampler(NegativeSampler):
    """One negative per positive pair, uniform over the user's non-positive items.

    Paper: Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009;
    He et al., "LightGCN", SIGIR 2020 (the RNS baseline of the CNSDiff paper).
    """

    Options = UniformOptions
    paper = "Rendle et al., UAI 2009 (BPR); He et al., SIGIR 2020 (LightGCN)"

    def __init__(self, ctx: SamplerContext, options: UniformOptions | None = None) -> None:
        super().__init__(ctx)
        self.options = options or UniformOptions()

    def sample(self, batch: TripletBatch, emb: Embeddings, gen: torch.Generator) -> Negatives:
        positives = self.ctx.positives if self.options.exclude_positives else None
        ids = uniform_items(batch.users, self.ctx.num_items, gen, positives=positives)  # [B]
        return Negatives(emb=emb.items[ids], ids=ids)
