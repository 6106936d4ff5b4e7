"""Popularity-shift split: an OOD test whose item-popularity distribution is close to uniform.

Each interaction enters the OOD test with probability inversely proportional to its item's
popularity (``weight = pop(i) ** -exponent``), drawn without replacement by weighted reservoir
keys (Efraimidis & Spirakis, 2006). With ``exponent = 1`` every item carries the same total
weight, so the OOD test's item distribution is close to uniform while train stays long-tailed,
as in the Yelp2018 split of the CNSDiff paper (Appendix B) and the popularity-shift splits of
DR-GNN / InvCF.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oodrec.data.preprocess import InteractionLog
from oodrec.data.splits.base import (
    Seed,
    SplitConfig,
    SplitReport,
    SplitResult,
    as_generator,
    check_fraction,
    finish_split,
    require_unique_pairs,
)


@dataclass(frozen=True)
class PopularitySplitConfig(SplitConfig):
    """Options of the popularity-shift split."""

    ood_fraction: float = 0.2
    """Share of all interactions drawn into the OOD test."""
    exponent: float = 1.0
    """Draw weight ``pop(item) ** -exponent``; 1 aims at a uniform OOD item distribution."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("ood_fraction", self.ood_fraction)


def popularity_split(
    log: InteractionLog, cfg: PopularitySplitConfig | None = None, seed: Seed = 0
) -> SplitResult:
    """Split ``log`` with an inverse-popularity OOD test, then 7:1:2 of the rest.

    Uncovered OOD pairs (an item whose every interaction was drawn) are moved to train, one per
    item or user, and counted (see ``splits.base``).

    Args:
        log: encoded interactions (the ``unbiased`` flag is ignored).
        cfg: options (default ``PopularitySplitConfig()``).
        seed: int seed or generator.

    Returns:
        The checked split.
    """
    cfg = cfg or PopularitySplitConfig()
    require_unique_pairs(log)
    rng = as_generator(seed)
    n = len(log)
    pop = np.bincount(log.items, minlength=log.num_items)
    weight = pop[log.items].astype(np.float64) ** -cfg.exponent  # [N]
    # Efraimidis-Spirakis: key = u ** (1 / w); the m largest keys are a weighted sample
    # without replacement. Logs keep small weights from underflowing.
    keys = np.log1p(-rng.random(n)) / weight
    m = int(round(cfg.ood_fraction * n))
    is_ood = np.zeros(n, dtype=bool)
    if m > 0:
        is_ood[np.argpartition(-keys, m - 1)[:m]] = True
    report = SplitReport("popularity", n)
    return finish_split(log, log.take(is_ood), log.take(~is_ood), cfg, rng, "move", report)
