"""The simulator at scale: millions of interactions without any dense users × items matrix.

The story is the one of ``oodrec.data.synthetic`` (latent preferences, popularity-driven
exposure as the confounder, observed = relevant AND exposed, an OOD test logged under uniform
exposure, then the exposure split). Three changes remove every ``[U, I]`` tensor:

* **Relevance is computed on the fly.** Item ``i`` is relevant to user ``u`` iff the affinity
  ``a_ui = <p_u, q_i> / sqrt(d)`` exceeds ``tau_u = |p_u| / sqrt(d) * z``, with ``z`` the
  ``1 - relevant_fraction`` quantile of N(0, 1): the user's affinity quantile over the item
  *population* (``q ~ N(0, I)``). The small simulator takes the exact top items of its finite
  item set instead; the two agree up to sampling noise. ``LargeWorld.is_relevant`` evaluates it
  for any pairs.
* **Exposures are drawn, not thresholded.** Each user gets a Poisson number of draws from the
  item distribution ``lambda_i / sum(lambda)``, ``lambda_i = -log(1 - e_i)``; repeated draws are
  merged. By Poissonisation this exposes item ``i`` to the user with probability exactly
  ``e_i``, independently across items, as the small simulator's Bernoulli matrix does.
* **Sizes set the rates.** The exposure rate is chosen so that the expected training split has
  ``num_interactions`` pairs (``E[biased] = relevant_fraction * U * sum(e)``); the uniform
  policy's rate makes the OOD test about ``ood_share`` of the biased log.

Users are processed in chunks of ``chunk_users``, so memory stays proportional to the number of
interactions. ``generate_large`` writes the standard dataset layout (``train.txt``,
``valid_iid.txt``, ``test_iid.txt``, ``test_ood.txt``), ids compacted over train, plus
``world.npz`` (the factors, thresholds and exposure in those ids) and ``stats.json``.

Example::

    generate_large("data/sim3m", num_users=50_000, num_items=40_000, num_interactions=3_000_000)
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import torch

from oodrec.data.preprocess import InteractionLog, id_map
from oodrec.data.splits.exposure import ExposureSplitConfig, exposure_split
from oodrec.data.stats import split_stats
from oodrec.data.synthetic import exposure_probabilities
from oodrec.errors import ConfigError

logger = logging.getLogger(__name__)

PART_FILES = {
    "train": "train.txt",
    "val": "valid_iid.txt",
    "iid_test": "test_iid.txt",
    "ood_test": "test_ood.txt",
}
MAX_EXPOSURE = 1.0 - 1e-9  # keeps lambda_i = -log(1 - e_i) finite for fully exposed items


@dataclass(frozen=True)
class LargeSyntheticConfig:
    """Sizes and confounding strength of the scalable simulator."""

    num_users: int = 50_000
    """Number of users."""
    num_items: int = 40_000
    """Number of items."""
    num_interactions: int = 3_000_000
    """Target size of the training split (the exposure rate is set from it)."""
    latent_dim: int = 16
    """Dimension of the true preference factors."""
    relevant_fraction: float = 0.1
    """Share of the item population relevant to each user."""
    popularity_skew: float = 1.0
    """Zipf exponent of the intrinsic item popularity."""
    exposure_bias: float = 1.0
    """Exposure ∝ popularity ** exposure_bias; 0 is uniform exposure."""
    ood_share: float = 0.25
    """Expected size of the uniform-policy log (OOD test) relative to the biased log."""
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    """train / val / IID-test shares of the biased log (per user)."""
    seed: int = 0
    """Seed of every draw."""
    chunk_users: int = 1024
    """Users simulated at once (bounds memory: about 60 bytes per exposure draw of a chunk)."""

    def __post_init__(self) -> None:
        if min(self.num_users, self.num_items) < 2 or self.latent_dim < 1:
            raise ConfigError(
                "num_users and num_items must be >= 2 and latent_dim >= 1, got "
                f"{self.num_users}, {self.num_items}, {self.latent_dim}"
            )
        if self.num_interactions < 1 or self.chunk_users < 1:
            raise ConfigError("num_interactions and chunk_users must be >= 1")
        if not 0.0 < self.relevant_fraction <= 1.0 or self.ood_share <= 0:
            raise ConfigError(
                f"relevant_fraction must be in (0, 1] and ood_share > 0, got "
                f"{self.relevant_fraction}, {self.ood_share}"
            )

    def exposure_rates(self) -> tuple[float, float]:
        """Mean exposure of the biased policy and exposure of the uniform policy.

        Raises:
            ConfigError: the target needs a rate above 1 (too few users × items).
        """
        cells = self.relevant_fraction * self.num_users * self.num_items
        biased = self.num_interactions / self.fractions[0] / cells
        uniform = self.ood_share * self.num_interactions / self.fractions[0] / cells
        if max(biased, uniform) >= 1.0:
            raise ConfigError(
                f"{self.num_interactions} training interactions need an exposure rate of "
                f"{max(biased, uniform):.2f} over {self.num_users} users x {self.num_items} items "
                f"at relevant_fraction={self.relevant_fraction}; use more users or items"
            )
        return biased, uniform


@dataclass(frozen=True)
class LargeWorld:
    """Ground truth of a scalable simulation.

    Shapes:
        user_factors: [U, d] float32; item_factors: [I, d] float32; thresholds: [U] float32;
        exposure: [I] float64 (biased policy).
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    thresholds: np.ndarray
    exposure: np.ndarray

    def is_relevant(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Ground-truth relevance of each ``(user, item)`` pair. Shapes: [N], [N] -> [N] bool."""
        d = self.user_factors.shape[1]
        affinity = np.einsum("nd,nd->n", self.user_factors[users], self.item_factors[items])
        return affinity / np.float32(math.sqrt(d)) > self.thresholds[users]

    def take(self, users: np.ndarray, items: np.ndarray) -> LargeWorld:
        """The world restricted to (and renumbered by) the given old user and item ids."""
        return LargeWorld(
            self.user_factors[users],
            self.item_factors[items],
            self.thresholds[users],
            self.exposure[items],
        )


def _draw_pairs(
    rng: np.random.Generator, users: np.ndarray, cdf: np.ndarray | None, num_items: int, rate: float
) -> np.ndarray:
    """Sorted unique keys ``user * I + item`` of Poisson exposure draws (module docstring).

    Args:
        rng: generator.
        users: the chunk's users. Shape [C].
        cdf: cumulative item distribution [I] (None: uniform items).
        num_items: I.
        rate: expected draws per user.
    """
    counts = rng.poisson(rate, size=users.size)  # [C]
    total = int(counts.sum())
    if cdf is None:
        items = rng.integers(0, num_items, total)
    else:
        items = np.searchsorted(cdf, rng.random(total), side="right").clip(max=num_items - 1)
    return np.unique(np.repeat(users.astype(np.int64), counts) * num_items + items)


def simulate_large(cfg: LargeSyntheticConfig) -> tuple[InteractionLog, LargeWorld]:
    """Draw the biased and uniform-policy logs of ``cfg`` (module docstring).

    Returns:
        ``(log, world)``: the log (ids ``0..U-1`` / ``0..I-1``, uniform-policy rows flagged
        ``unbiased``) and its ground truth.
    """
    rng = np.random.default_rng(cfg.seed)
    nu, ni, d = cfg.num_users, cfg.num_items, cfg.latent_dim
    user_f = rng.standard_normal((nu, d), dtype=np.float32)
    item_f = rng.standard_normal((ni, d), dtype=np.float32)
    z = -np.inf if cfg.relevant_fraction >= 1.0 else NormalDist().inv_cdf(1 - cfg.relevant_fraction)
    thresholds = (np.linalg.norm(user_f, axis=1) / math.sqrt(d) * z).astype(np.float32)
    rank = np.empty(ni)
    rank[rng.permutation(ni)] = np.arange(1, ni + 1)
    weights = torch.from_numpy(rank ** (-cfg.popularity_skew * cfg.exposure_bias))
    biased_rate, uniform_rate = cfg.exposure_rates()
    exposure = exposure_probabilities(weights, biased_rate).numpy().clip(max=MAX_EXPOSURE)
    lam = -np.log1p(-exposure)  # [I]
    cdf = np.cumsum(lam) / lam.sum()
    uniform_lam = -math.log1p(-uniform_rate)
    world = LargeWorld(user_f, item_f, thresholds, exposure)
    biased_keys, uniform_keys = [], []
    for start in range(0, nu, cfg.chunk_users):
        users = np.arange(start, min(start + cfg.chunk_users, nu))
        keys = _draw_pairs(rng, users, cdf, ni, float(lam.sum()))
        keys = keys[world.is_relevant(keys // ni, keys % ni)]
        other = _draw_pairs(rng, users, None, ni, ni * uniform_lam)
        other = other[~np.isin(other, keys, assume_unique=True)]
        biased_keys.append(keys)
        uniform_keys.append(other[world.is_relevant(other // ni, other % ni)])
    biased, uniform = np.concatenate(biased_keys), np.concatenate(uniform_keys)
    keys = np.concatenate([biased, uniform])
    flags = np.concatenate([np.zeros(biased.size, bool), np.ones(uniform.size, bool)])
    log = InteractionLog.from_arrays(
        keys // ni, keys % ni, unbiased=flags, num_users=nu, num_items=ni
    )
    logger.info("simulated %d biased and %d uniform-policy interactions", biased.size, uniform.size)
    return log, world


def _write_pairs(path: Path, users: np.ndarray, items: np.ndarray) -> None:
    order = np.lexsort((items, users))
    table = pa.table({"user": users[order], "item": items[order]})
    options = pa_csv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none")
    pa_csv.write_csv(table, path, options)


def generate_large(
    out_dir: str | Path, cfg: LargeSyntheticConfig | None = None, overwrite: bool = False
) -> Path:
    """Simulate, split and write a dataset directory in the standard layout (module docstring).

    Args:
        out_dir: output directory (created).
        cfg: sizes and rates (default ``LargeSyntheticConfig()``: 50k users, 40k items, about
            3M training interactions).
        overwrite: replace split files already in ``out_dir``.

    Returns:
        ``out_dir``; it loads with ``load_dataset(DataConfig(dataset=str(out_dir)))``.

    Raises:
        ConfigError: split files exist (without ``overwrite``), or impossible rates.
    """
    cfg = cfg or LargeSyntheticConfig()
    out = Path(out_dir)
    existing = [f for f in PART_FILES.values() if (out / f).exists()]
    if existing and not overwrite:
        raise ConfigError(f"{out} already holds {', '.join(existing)}; pass overwrite=True")
    log, world = simulate_large(cfg)
    split = exposure_split(log, ExposureSplitConfig(fractions=cfg.fractions), cfg.seed)
    user_map, used_users = id_map(split.train.users, cfg.num_users)
    item_map, used_items = id_map(split.train.items, cfg.num_items)
    parts = {n: (user_map[p.users], item_map[p.items]) for n, p in split.parts().items()}
    out.mkdir(parents=True, exist_ok=True)
    for name, (users, items) in parts.items():
        _write_pairs(out / PART_FILES[name], users, items)
    kept = world.take(used_users, used_items)
    np.savez(out / "world.npz", **asdict(kept))
    stats = split_stats(parts, used_users.size, used_items.size)
    stats["simulator"] = asdict(cfg)
    stats["split"] = split.report.to_dict()
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    logger.info("wrote %s: %s", out, {n: len(p[0]) for n, p in parts.items()})
    return out


def load_world(directory: str | Path) -> LargeWorld:
    """The ground truth written by ``generate_large`` (in the directory's ids)."""
    with np.load(Path(directory) / "world.npz") as data:
        return LargeWorld(**{k: data[k] for k in data.files})
