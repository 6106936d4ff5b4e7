"""DNS(M, N): keep the M highest-scored of N uniform candidates (docs/samplers/dns.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from oodrec.errors import ConfigError
from oodrec.models.base import Embeddings
from oodrec.samplers.base import (
    Negatives,
    NegativeSampler,
    SamplerContext,
    TripletBatch,
    uniform_items,
)


@dataclass(frozen=True)
class DNSOptions:
    """Options of the DNS(M, N) sampler."""

    num_candidates: int = 32
    """N: uniform candidates drawn per positive pair (the CNSDiff paper's pool size is 32)."""
    num_selected: int = 2
    """M: highest-scored candidates kept per positive pair (M = 1 is plain DNS)."""
    variant: Literal["topm", "pick_one"] = "topm"
    """``topm``: return all M negatives and sum their BPR terms (official, WWW'23 code);
    ``pick_one``: return one of the top M, chosen uniformly (AHNS repository's ``dns_mn``)."""
    exclude_positives: bool = True
    """Redraw candidates that are training positives (docs/samplers/rns.md#per-batch). False: the
    official sampler, which draws from all items."""
    reduction: Literal["mean", "sum"] = "mean"
    """``mean``: BPR averaged over the batch (summed over the M negatives), so that learning
    rates are comparable with other samplers; ``sum``: summed over the batch as well, like the
    official ``reduction=False`` loss (implemented with per-negative weights equal to B)."""

    def __post_init__(self) -> None:
        if not 1 <= self.num_selected <= self.num_candidates:
            raise ConfigError(
                f"sampler.num_selected must be in [1, num_candidates={self.num_candidates}], "
                f"got {self.num_selected}"
            )
        if self.variant not in ("topm", "pick_one"):
            raise ConfigError(f"sampler.variant must be 'topm' or 'pick_one', got {self.variant!r}")
        if self.reduction not in ("mean", "sum"):
            raise ConfigError(f"sampler.reduction must be 'mean' or 'sum', got {self.reduction!r}")


class DNSSampler(NegativeSampler):
    """Dynamic negative sampling DNS(M, N): score N uniform candidates with the current model and
    keep the M hardest (highest inner product with the pooled user embedding).

    BPR over the M kept negatives optimises a one-way partial AUC with beta = M / N. The
    selection is made on detached scores; gradients flow through the selected negatives'
    embeddings, which equals differentiating the official top-k of the scores.

    Paper: Wentao Shi et al., "On the Theories Behind Hard Negative Sampling for
    Recommendation", WWW 2023. Variant ``pick_one``: Riwei-HEU/AHNS ``dns_mn``.

    Args:
        ctx: sampler context (item count, training positives).
        options: see ``DNSOptions``.

    Shapes:
        ``topm``: emb [B, M, D], ids [B, M]; ``pick_one``: emb [B, D], ids [B] (with
        ``reduction="sum"``: [B, 1, D] and [B, 1], so that the weight can apply).
    """

    Options = DNSOptions
    paper = "Shi et al., WWW 2023 (DNS(M, N))"

    def __init__(self, ctx: SamplerContext, options: DNSOptions | None = None) -> None:
        super().__init__(ctx)
        self.options = options or DNSOptions()

    def sample(self, batch: TripletBatch, emb: Embeddings, gen: torch.Generator) -> Negatives:
        opt = self.options
        users = batch.users
        positives = self.ctx.positives if opt.exclude_positives else None
        cand = uniform_items(
            users, self.ctx.num_items, gen, num=opt.num_candidates, positives=positives
        )  # [B, N]
        with torch.no_grad():
            u = emb.users[users]  # [B, D]
            scores = torch.einsum("bd,bnd->bn", u, emb.items[cand])  # [B, N]
            top = scores.topk(opt.num_selected, dim=1).indices  # [B, M]
        ids = cand.gather(1, top)  # [B, M]
        if opt.variant == "pick_one":
            pick = torch.randint(
                opt.num_selected, (users.numel(), 1), generator=gen, device=users.device
            )  # [B, 1]
            ids = ids.gather(1, pick)  # [B, 1]
            if opt.reduction == "mean":
                ids = ids.squeeze(1)  # [B]
        weights = None
        if opt.reduction == "sum":
            weights = torch.full(
                (ids.shape[1],),
                float(users.numel()),
                dtype=emb.items.dtype,
                device=emb.items.device,
            )  # [K]
        return Negatives(emb=emb.items[ids], ids=ids, weights=weights)
