"""PNS: popularity-biased negative sampling, p(j) proportional to deg(j)^beta."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from oodrec.errors import ConfigError
from oodrec.models.base import Embeddings
from oodrec.samplers.base import (
    Negatives,
    NegativeSampler,
    PositiveIndex,
    SamplerContext,
    TripletBatch,
    redraw_collisions,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PopularityOptions:
    """Options of the popularity sampler."""

    beta: float = 1.0
    """Exponent on the item's training degree: 0 is uniform (over all items), 1 proportional to
    popularity (word2vec uses 0.75). Items never seen in training are never drawn when beta > 0."""
    exclude_positives: bool = True
    """Redraw negatives that are training positives of the user."""
    max_rounds: int = 100
    """Cap on redraw rounds; pairs still colliding afterwards are kept and a warning is logged
    (only plausible with a very large beta, when a user's positives hold most of the mass)."""

    def __post_init__(self) -> None:
        if not self.beta >= 0:
            raise ConfigError(f"sampler.beta must be >= 0, got {self.beta}")
        if self.max_rounds < 0:
            raise ConfigError(f"sampler.max_rounds must be >= 0, got {self.max_rounds}")


def popularity_cdf(item_degree: torch.Tensor, beta: float) -> torch.Tensor:
    """Normalised cumulative table of ``deg^beta`` (float64, last entry 1).

    Shapes:
        item_degree: [I]; returns [I].

    Raises:
        ConfigError: every item has weight 0 (no training interactions).
    """
    weights = item_degree.to(torch.float64).pow(beta)  # [I]; 0^0 = 1, so beta = 0 is uniform
    cdf = weights.cumsum(0)  # [I]
    total = float(cdf[-1]) if cdf.numel() else 0.0
    if not total > 0 or not torch.isfinite(cdf[-1]):
        raise ConfigError(f"popularity weights deg^{beta} have no usable mass (total {total})")
    return cdf / cdf[-1]


def popularity_items(
    users: torch.Tensor,
    cdf: torch.Tensor,
    gen: torch.Generator,
    num: int | None = None,
    positives: PositiveIndex | None = None,
    max_rounds: int = 100,
) -> torch.Tensor:
    """Item ids drawn by inverse CDF, redrawing only the ones that hit a training positive.

    Args:
        users: [B] user ids.
        cdf: [I] normalised cumulative weights (``popularity_cdf``), on the users' device.
        gen: RNG (on the users' device).
        num: ``None`` -> shape [B]; an int K -> shape [B, K].
        positives: reject training positives when given.
        max_rounds: cap on redraw rounds.

    Returns:
        Long tensor [B] or [B, K].
    """
    shape = (users.numel(),) if num is None else (users.numel(), num)
    last = cdf.numel() - 1

    def draw(size: tuple[int, ...]) -> torch.Tensor:
        u = torch.rand(size, generator=gen, device=cdf.device, dtype=cdf.dtype)
        # First index with cdf > u: zero-weight items (empty intervals) are never returned.
        return torch.searchsorted(cdf, u, right=True).clamp_max(last)

    return redraw_collisions(users, draw(shape), draw, positives, max_rounds)


class PopularitySampler(NegativeSampler):
    """One negative per positive pair, drawn with probability proportional to its training
    degree raised to ``beta``, rejecting the user's training positives.

    The cumulative table is built once from ``ctx.item_degree``; a draw is a binary search of
    uniform numbers in it (inverse CDF), faster than ``torch.multinomial`` for large I.

    Paper: Tomas Mikolov et al., "Distributed Representations of Words and Phrases and their
    Compositionality", NeurIPS 2013 (unigram^0.75 negatives); for recommendation, Ting Chen et
    al., "On Sampling Strategies for Neural Network-based Collaborative Filtering", KDD 2017.

    Args:
        ctx: sampler context (item degrees, training positives).
        options: see ``PopularityOptions``.

    Shapes:
        emb [B, D]; ids [B].
    """

    Options = PopularityOptions
    paper = "Mikolov et al., NeurIPS 2013; Chen et al., KDD 2017"

    def __init__(self, ctx: SamplerContext, options: PopularityOptions | None = None) -> None:
        super().__init__(ctx)
        self.options = options or PopularityOptions()
        degree = ctx.item_degree
        if degree.numel() != ctx.num_items:
            raise ConfigError(
                f"item_degree has {degree.numel()} entries, expected num_items={ctx.num_items}"
            )
        # A non-persistent buffer: moves with .to(device), stays out of checkpoints.
        self.register_buffer(
            "cdf", popularity_cdf(degree, self.options.beta).to(ctx.device), persistent=False
        )  # [I]

    def sample(self, batch: TripletBatch, emb: Embeddings, gen: torch.Generator) -> Negatives:
        opt = self.options
        positives = self.ctx.positives if opt.exclude_positives else None
        ids = popularity_items(
            batch.users, self.cdf, gen, positives=positives, max_rounds=opt.max_rounds
        )  # [B]
        return Negatives(emb=emb.items[ids], ids=ids)
