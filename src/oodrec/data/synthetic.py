"""A simulator of exposure-confounded implicit feedback with a known ground truth.

Generative story (all draws from one seeded ``torch.Generator``, so a config gives one dataset):

1. Users and items get latent preference factors ``p_u, q_i ~ N(0, I_d)``; the true affinity is
   ``a_ui = <p_u, q_i> / sqrt(d)``. Item ``i`` is **relevant** to user ``u`` iff ``a_ui`` is in
   the user's top ``relevant_fraction`` of items. Relevance does not depend on popularity.
2. Items get an intrinsic popularity ``pi_i ∝ rank(i) ** -popularity_skew`` (Zipf over a random
   item order). The logging policy, the environment confounder, **exposes** item ``i`` to each
   user with probability ``e_i = min(1, c * pi_i ** exposure_bias)``, ``c`` set so that the mean
   exposure is ``exposure_rate`` (``exposure_bias = 0``: uniform exposure).
3. Observed (biased log) = relevant AND exposed.
4. The OOD test is logged under a different, uniform policy: every not-yet-observed pair is
   exposed with probability ``ood_exposure_rate``; observed = relevant AND exposed.
5. ``exposure_split`` turns the biased log into train / val / IID test (7:1:2 per user) and the
   uniform log into the OOD test (pairs whose user or item has no training interaction are
   dropped and counted).

The defaults (2,000 users, 1,500 items, about 60k biased and 15k uniform-policy interactions)
aim at 30 epochs of LightGCN in about a minute on a 2-core CPU. ``true_fhn_ratio`` measures how
many sampled negatives the user truly likes (relevant but unobserved: false negatives).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from oodrec.data.interactions import DataReport, InteractionDataset, Interactions
from oodrec.data.preprocess import InteractionLog
from oodrec.data.splits.exposure import ExposureSplitConfig, exposure_split
from oodrec.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and confounding strength of the simulator."""

    num_users: int = 2000
    """Number of users."""
    num_items: int = 1500
    """Number of items."""
    latent_dim: int = 16
    """Dimension of the true preference factors."""
    relevant_fraction: float = 0.1
    """Share of items relevant to each user (its top items by true affinity)."""
    popularity_skew: float = 1.0
    """Zipf exponent of the intrinsic item popularity."""
    exposure_bias: float = 1.0
    """Exposure ∝ popularity ** exposure_bias; 0 is uniform exposure, larger is more skewed."""
    exposure_rate: float = 0.2
    """Mean probability that the biased policy exposes an item to a user."""
    ood_exposure_rate: float = 0.0625
    """Exposure probability of the uniform policy that logs the OOD test."""
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    """train / val / IID-test shares of the biased log (per user)."""
    seed: int = 0
    """Seed of every draw (factors, popularity, exposures, split)."""

    def __post_init__(self) -> None:
        if self.num_users < 2 or self.num_items < 2 or self.latent_dim < 1:
            raise ConfigError(
                "synthetic num_users, num_items must be >= 2 and latent_dim >= 1, got "
                f"{self.num_users}, {self.num_items}, {self.latent_dim}"
            )
        for name in ("relevant_fraction", "exposure_rate", "ood_exposure_rate"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"synthetic {name} must be in (0, 1], got {value}")
        if self.exposure_bias < 0 or self.popularity_skew < 0:
            raise ConfigError(
                "synthetic exposure_bias and popularity_skew must be >= 0, got "
                f"{self.exposure_bias}, {self.popularity_skew}"
            )


@dataclass(frozen=True)
class Simulation:
    """One simulated world.

    Attributes:
        log: biased log plus uniform-policy log (flagged ``unbiased``).
        relevance: ground truth, ``relevance[u, i]`` iff ``i`` is relevant to ``u``.
        exposure: exposure probability of each item under the biased policy.

    Shapes:
        relevance: [num_users, num_items] bool; exposure: [num_items] float.
    """

    log: InteractionLog
    relevance: torch.Tensor
    exposure: torch.Tensor


def exposure_probabilities(weights: torch.Tensor, rate: float, iters: int = 60) -> torch.Tensor:
    """``min(1, c * weights)`` with ``c`` found by bisection on ``log c`` so that the mean is
    ``rate``.

    Shapes:
        weights: [I] positive -> [I].
    """
    lo = math.log(rate) - math.log(float(weights.max()))  # mean <= rate
    hi = math.log(rate) - math.log(float(weights.min()))  # mean >= rate
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if float((math.exp(mid) * weights).clamp_max(1.0).mean()) < rate:
            lo = mid
        else:
            hi = mid
    return (math.exp(hi) * weights).clamp_max(1.0)


def simulate(cfg: SyntheticConfig) -> Simulation:
    """Draw a world from ``cfg`` (see the module docstring). Deterministic in ``cfg``.

    Returns:
        The simulation (ids ``0..num_users-1``, ``0..num_items-1``, no timestamps).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    nu, ni, d = cfg.num_users, cfg.num_items, cfg.latent_dim
    user_f = torch.randn(nu, d, generator=gen)
    item_f = torch.randn(ni, d, generator=gen)
    affinity = user_f @ item_f.T / math.sqrt(d)  # [U, I]
    k = max(1, round(cfg.relevant_fraction * ni))
    relevance = torch.zeros(nu, ni, dtype=torch.bool)
    relevance.scatter_(1, torch.topk(affinity, k, dim=1).indices, True)
    rank = torch.empty(ni)
    rank[torch.randperm(ni, generator=gen)] = torch.arange(1, ni + 1, dtype=torch.float32)
    popularity = rank**-cfg.popularity_skew  # [I]
    exposure = exposure_probabilities(popularity**cfg.exposure_bias, cfg.exposure_rate)
    biased = relevance & (torch.rand(nu, ni, generator=gen) < exposure)  # [U, I]
    uniform = relevance & ~biased & (torch.rand(nu, ni, generator=gen) < cfg.ood_exposure_rate)
    bu, bi = biased.nonzero(as_tuple=True)
    ou, oi = uniform.nonzero(as_tuple=True)
    log = InteractionLog.from_arrays(
        torch.cat([bu, ou]).numpy(),
        torch.cat([bi, oi]).numpy(),
        unbiased=np.concatenate([np.zeros(bu.numel(), bool), np.ones(ou.numel(), bool)]),
        num_users=nu,
        num_items=ni,
    )
    return Simulation(log, relevance, exposure)


def load_synthetic(cfg: SyntheticConfig | None = None) -> tuple[InteractionDataset, torch.Tensor]:
    """Simulate and split a dataset with a known ground truth.

    Args:
        cfg: simulator config (default ``SyntheticConfig()``).

    Returns:
        ``(dataset, relevance)``: the dataset (name ``synthetic``, id spaces of the simulator, so
        that ``relevance`` indexes it directly) and the ground truth.

    Shapes:
        relevance: [num_users, num_items] bool.
    """
    cfg = cfg or SyntheticConfig()
    sim = simulate(cfg)
    split = exposure_split(sim.log, ExposureSplitConfig(fractions=cfg.fractions), cfg.seed)
    parts = {
        name: Interactions(torch.from_numpy(p.users), torch.from_numpy(p.items))
        for name, p in split.parts().items()
    }
    report = DataReport(
        dataset="synthetic",
        source="simulator " + ", ".join(f"{k}={v}" for k, v in asdict(cfg).items()),
        split_seed=cfg.seed,
        dropped_unseen=dict(split.report.dropped_unseen),
        sizes={name: len(p) for name, p in parts.items()},
        num_users=cfg.num_users,
        num_items=cfg.num_items,
    )
    logger.info("synthetic dataset: %s; split %s", report.sizes, split.report.to_dict())
    return InteractionDataset(
        "synthetic", cfg.num_users, cfg.num_items, parts, report
    ), sim.relevance


def true_fhn_ratio(users: torch.Tensor, neg_ids: torch.Tensor, relevance: torch.Tensor) -> float:
    """Share of sampled real negatives that the user truly likes (false negatives).

    Training positives are relevant by construction, so a sampler that never returns them
    measures here the unobserved-but-relevant negatives it picks.

    Args:
        users: users of the batch.
        neg_ids: sampled negative item ids, one or ``K`` per user.
        relevance: ground truth from ``load_synthetic`` (moved to ``neg_ids``' device).

    Shapes:
        users: [B]; neg_ids: [B] or [B, K]; relevance: [num_users, num_items] bool.

    Returns:
        The share in ``[0, 1]`` (NaN for an empty batch).
    """
    if neg_ids.dim() == 1:
        neg_ids = neg_ids.unsqueeze(1)  # [B, 1]
    if neg_ids.numel() == 0:
        return float("nan")
    rel = relevance.to(neg_ids.device)
    hits = rel[users.to(neg_ids.device).unsqueeze(1), neg_ids]  # [B, K]
    return float(hits.float().mean())
