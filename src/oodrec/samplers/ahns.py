"""AHNS: adaptive hardness negative sampling, instance AHNS_{p<0} (docs/samplers/ahns.md)."""

from __future__ import annotations

from dataclasses import dataclass

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
class AHNSOptions:
    """Options of the AHNS sampler (defaults: the official parser's)."""

    num_candidates: int = 32
    """Candidate negatives per positive pair (``n_negs``; the CNSDiff paper's pool is 32)."""
    p: float = -2.0
    """Exponent p < 0 of the target score beta * (s_pos + alpha)^(p + 1)."""
    alpha: float = 1.0
    """Shift alpha added to the positive score (tuned in {0.1, 0.5, 1})."""
    beta: float = 0.1
    """Scale beta of the target score (tuned in {0.1, 0.2, 0.4})."""
    exclude_positives: bool = True
    """Redraw candidates that are training positives (the official sampler does)."""

    def __post_init__(self) -> None:
        if self.num_candidates < 1:
            raise ConfigError(f"sampler.num_candidates must be >= 1, got {self.num_candidates}")


def ahns_target(s_pos: torch.Tensor, p: float, alpha: float, beta: float) -> torch.Tensor:
    """Target negative score ``beta * (s_pos + alpha) ** (p + 1)`` (official formula, unguarded).

    With p < 0 it explodes near ``s_pos = -alpha`` and flips sign below it (NaN for a
    non-integer exponent); ``AHNSSampler.diagnostics`` reports how often that happens.

    Shapes:
        s_pos: any shape; returns the same shape.
    """
    return beta * (s_pos + alpha).pow(p + 1)


class AHNSSampler(NegativeSampler):
    """AHNS_{p<0}: pick the candidate whose score is closest to a positive-dependent target.

    Per positive pair: draw N candidates uniformly (rejecting positives), score them and the
    positive with pooled embeddings (inner product), and keep the real item
    ``argmin_m |s_m - beta * (s_pos + alpha)^(p + 1)|`` (detached). Well-fitted positives (high
    s_pos) get easier negatives, poorly fitted ones harder negatives.

    Paper: Riwei Lai et al., "Adaptive Hardness Negative Sampling for Collaborative Filtering",
    AAAI 2024 (official code: Riwei-HEU/AHNS, ``adaptive_negative_sampling``).

    Args:
        ctx: sampler context (item count, training positives).
        options: see ``AHNSOptions``.

    Shapes:
        emb [B, D]; ids [B].
    """

    Options = AHNSOptions
    paper = "Lai et al., AAAI 2024 (AHNS)"

    def __init__(self, ctx: SamplerContext, options: AHNSOptions | None = None) -> None:
        super().__init__(ctx)
        self.options = options or AHNSOptions()
        self._rows = torch.zeros((), dtype=torch.long)
        self._nonpositive = torch.zeros((), dtype=torch.long)

    def start_epoch(self, epoch: int) -> None:
        self._rows = torch.zeros((), dtype=torch.long)
        self._nonpositive = torch.zeros((), dtype=torch.long)

    def diagnostics(self) -> dict[str, float]:
        """``ahns_nonpositive_base_share``: share of the pairs sampled since the last
        ``start_epoch`` (training batches and any diagnostic batches) whose ``s_pos + alpha``
        was <= 0, where the target's power is ill-behaved."""
        rows = int(self._rows)
        share = float(self._nonpositive) / rows if rows else 0.0
        return {"ahns_nonpositive_base_share": share}

    def sample(self, batch: TripletBatch, emb: Embeddings, gen: torch.Generator) -> Negatives:
        opt = self.options
        users = batch.users
        positives = self.ctx.positives if opt.exclude_positives else None
        cand = uniform_items(
            users, self.ctx.num_items, gen, num=opt.num_candidates, positives=positives
        )  # [B, N]
        with torch.no_grad():
            u = emb.users[users]  # [B, D]
            s_pos = (u * emb.items[batch.pos_items]).sum(-1)  # [B]
            s_cand = torch.einsum("bd,bnd->bn", u, emb.items[cand])  # [B, N]
            target = ahns_target(s_pos, opt.p, opt.alpha, opt.beta)  # [B]
            best = (s_cand - target.unsqueeze(1)).abs().argmin(1, keepdim=True)  # [B, 1]
            bad = (s_pos + opt.alpha <= 0).sum()
        # Counters stay on the device; they are read only in diagnostics().
        self._nonpositive = self._nonpositive.to(bad.device) + bad
        self._rows = self._rows.to(bad.device) + users.numel()
        ids = cand.gather(1, best).squeeze(1)  # [B]
        return Negatives(emb=emb.items[ids], ids=ids)
