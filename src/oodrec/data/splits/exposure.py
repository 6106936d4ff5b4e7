"""Exposure-shift split: a separately logged unbiased (randomly or fully exposed) interaction set
is the OOD test; the biased log is split 7:1:2 (KuaiRec small matrix in the CNSDiff paper;
Coat and Yahoo! R3 random tests in DR-GNN)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from oodrec.data.preprocess import InteractionLog
from oodrec.data.splits.base import (
    Seed,
    SplitConfig,
    SplitReport,
    SplitResult,
    as_generator,
    finish_split,
    require_unique_pairs,
)
from oodrec.errors import DataValidationError


@dataclass(frozen=True)
class ExposureSplitConfig(SplitConfig):
    """Options of the exposure-shift split."""

    overlap_keep: Literal["ood_test", "biased"] = "ood_test"
    """A pair logged both biased and unbiased is kept in the OOD test (its biased copy is
    dropped) or in the biased log (its unbiased copy is dropped). Either way it is counted."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.overlap_keep not in ("ood_test", "biased"):
            raise DataValidationError(
                f"overlap_keep must be 'ood_test' or 'biased', got {self.overlap_keep!r}"
            )


def exposure_split(
    log: InteractionLog, cfg: ExposureSplitConfig | None = None, seed: Seed = 0
) -> SplitResult:
    """The ``unbiased`` interactions become the OOD test; the biased ones are split 7:1:2.

    OOD pairs whose user or item has no biased training interaction are dropped and counted
    (moving them would put unbiased data into the biased training log).

    Args:
        log: encoded interactions with the ``unbiased`` flag set on the unbiased log.
        cfg: options (default ``ExposureSplitConfig()``).
        seed: int seed or generator.

    Returns:
        The checked split.

    Raises:
        DataValidationError: no unbiased or no biased interactions.
    """
    cfg = cfg or ExposureSplitConfig()
    require_unique_pairs(log)
    ub = log.unbiased
    if not ub.any() or ub.all():
        raise DataValidationError(
            "exposure split needs both a biased log and an unbiased (randomly exposed) log; got "
            f"{int((~ub).sum())} biased and {int(ub.sum())} unbiased interactions"
        )
    rng = as_generator(seed)
    keys = log.keys()
    in_both = np.isin(keys, keys[ub]) & np.isin(keys, keys[~ub])
    drop = in_both & (~ub if cfg.overlap_keep == "ood_test" else ub)
    report = SplitReport(
        "exposure", len(log), overlap_pairs=int(drop.sum()), overlap_kept_in=cfg.overlap_keep
    )
    ood, rest = log.take(ub & ~drop), log.take(~ub & ~drop)
    return finish_split(log, ood, rest, cfg, rng, "drop", report, pre_dropped=log.take(drop))
