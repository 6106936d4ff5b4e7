"""Temporal-shift split: each user's latest interactions form the OOD test (Food in the CNSDiff
paper, Appendix B; DR-GNN's temporal shift)."""

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
    group_ranks,
    require_unique_pairs,
)
from oodrec.errors import DataValidationError


@dataclass(frozen=True)
class TemporalSplitConfig(SplitConfig):
    """Options of the temporal-shift split."""

    ood_fraction: float = 0.2
    """Share of each user's interactions, the latest by timestamp, that form the OOD test."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("ood_fraction", self.ood_fraction)


def temporal_split(
    log: InteractionLog, cfg: TemporalSplitConfig | None = None, seed: Seed = 0
) -> SplitResult:
    """Split ``log`` by time: each user's latest ``round(ood_fraction * n)`` interactions (at
    most ``n - 1``) form the OOD test, the rest is split 7:1:2 at random.

    Guarantee: every OOD interaction of a user is strictly later than all of that user's
    interactions in train, val and IID test. Interactions tied in time with the user's latest
    history interaction stay in the history (counted as ``boundary_ties``), and uncovered OOD
    pairs are dropped, not moved (moving would put a late pair into the history).

    Args:
        log: encoded interactions with timestamps (the ``unbiased`` flag is ignored).
        cfg: options (default ``TemporalSplitConfig()``).
        seed: int seed or generator (for the 7:1:2 part).

    Returns:
        The checked split.

    Raises:
        DataValidationError: an interaction has no timestamp.
    """
    cfg = cfg or TemporalSplitConfig()
    require_unique_pairs(log)
    missing = int(np.isnan(log.timestamps).sum())
    if missing:
        raise DataValidationError(
            f"temporal split needs a timestamp on every interaction; {missing} of {len(log)} "
            "have none"
        )
    rng = as_generator(seed)
    order, rank, count = group_ranks(log.users, log.timestamps, log.num_users)
    n_history = count - np.minimum(np.floor(cfg.ood_fraction * count + 0.5), count - 1)
    n_history = n_history.astype(np.int64)  # >= 1; [N] in (user, time) order like rank
    ood_sorted = rank >= n_history
    # The user's latest history interaction sits at (user start) + n_history - 1.
    ts_sorted = log.timestamps[order]
    boundary = ts_sorted[np.arange(order.size) - rank + n_history - 1]
    ties = ood_sorted & (ts_sorted <= boundary)
    ood_sorted &= ~ties
    is_ood = np.zeros(len(log), dtype=bool)
    is_ood[order] = ood_sorted
    report = SplitReport("temporal", len(log), boundary_ties=int(ties.sum()))
    return finish_split(log, log.take(is_ood), log.take(~is_ood), cfg, rng, "drop", report)
