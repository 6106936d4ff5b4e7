"""From a raw log to an encoded interaction log: positive threshold, duplicate removal, iterated
k-core filtering and 0-based contiguous id remapping (CNSDiff paper, Appendix B protocol).

Every step is vectorised (``np.unique``, ``np.bincount``, ``np.lexsort``) and every removed
interaction is counted in ``PreprocessReport``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from oodrec.data.raw import RawInteractions
from oodrec.errors import DataValidationError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InteractionLog:
    """Encoded implicit-feedback interactions: the input and output type of the split protocols.

    Attributes:
        users: user ids in ``[0, num_users)``.
        items: item ids in ``[0, num_items)``.
        timestamps: seconds since the epoch; NaN where unknown.
        unbiased: True for interactions logged under a random / full exposure policy (KuaiRec
            small matrix, Coat and Yahoo! R3 random tests); the exposure protocol uses them as
            the OOD test.
        num_users, num_items: sizes of the id spaces.

    Shapes:
        users, items: [N] int64; timestamps: [N] float64; unbiased: [N] bool.
    """

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    unbiased: np.ndarray
    num_users: int
    num_items: int

    @classmethod
    def from_arrays(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        timestamps: np.ndarray | None = None,
        unbiased: np.ndarray | None = None,
        num_users: int | None = None,
        num_items: int | None = None,
    ) -> InteractionLog:
        """Build a log; missing timestamps become NaN, a missing ``unbiased`` flag all False,
        and the id-space sizes default to ``max + 1``."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        n = users.size
        ts = np.full(n, np.nan) if timestamps is None else np.asarray(timestamps, np.float64)
        ub = np.zeros(n, dtype=bool) if unbiased is None else np.asarray(unbiased, dtype=bool)
        nu = int(users.max(initial=-1)) + 1 if num_users is None else int(num_users)
        ni = int(items.max(initial=-1)) + 1 if num_items is None else int(num_items)
        return cls(users, items, ts, ub, nu, ni)

    def __len__(self) -> int:
        return int(self.users.size)

    def take(self, index: np.ndarray) -> InteractionLog:
        """The interactions at ``index`` (integer indices or a boolean mask), same id spaces."""
        return InteractionLog(
            self.users[index],
            self.items[index],
            self.timestamps[index],
            self.unbiased[index],
            self.num_users,
            self.num_items,
        )

    def keys(self) -> np.ndarray:
        """``user * num_items + item`` of every interaction. Shape [N] int64."""
        return self.users * np.int64(self.num_items) + self.items

    @staticmethod
    def concat(logs: list[InteractionLog]) -> InteractionLog:
        """Concatenate logs that share one id space."""
        return InteractionLog(
            np.concatenate([g.users for g in logs]),
            np.concatenate([g.items for g in logs]),
            np.concatenate([g.timestamps for g in logs]),
            np.concatenate([g.unbiased for g in logs]),
            max(g.num_users for g in logs),
            max(g.num_items for g in logs),
        )


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw interactions become positives (paper protocol: Food ``(4, 15, 50)``, Yelp2018
    ``(4, 25, 50)``, KuaiRec watch ratio >= 2)."""

    positive_threshold: float | None = 4.0
    """Keep interactions with rating (or watch ratio) >= this; ``None`` keeps every row."""
    min_user_interactions: int = 0
    """k-core: every kept user has at least this many kept interactions (0: no filter)."""
    min_item_interactions: int = 0
    """k-core: every kept item has at least this many kept interactions (0: no filter)."""

    def __post_init__(self) -> None:
        if self.min_user_interactions < 0 or self.min_item_interactions < 0:
            raise DataValidationError(
                "min_user_interactions and min_item_interactions must be >= 0, got "
                f"{self.min_user_interactions}, {self.min_item_interactions}"
            )


@dataclass(frozen=True)
class Vocabulary:
    """Original tokens of the encoded ids: ``users[u]`` is the token of user id ``u``.

    Shapes:
        users: [num_users] str; items: [num_items] str.
    """

    users: np.ndarray
    items: np.ndarray


@dataclass
class PreprocessReport:
    """Counts of everything preprocessing removed (goes into ``prepare.json``)."""

    input_interactions: int = 0
    unbiased_input: int = 0
    missing_rating: int = 0
    below_threshold: int = 0
    duplicates_removed: int = 0
    kcore_rounds: int = 0
    kcore_removed_interactions: int = 0
    kcore_removed_users: int = 0
    kcore_removed_items: int = 0
    interactions: int = 0
    num_users: int = 0
    num_items: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def encode_ids(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map tokens to ``0..V-1`` in sorted token order.

    Returns:
        ``(codes [N] int64, vocabulary [V])`` with ``vocabulary[codes] == tokens``.
    """
    vocab, codes = np.unique(tokens, return_inverse=True)
    return codes.astype(np.int64).reshape(-1), vocab


def id_map(ids: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The renumbering of the ids that occur to ``0..V-1``, keeping their order.

    Args:
        ids: ids in ``[0, size)``. Shape [N].
        size: size of the old id space.

    Returns:
        ``(new_of_old [size], used [V])``: ``new_of_old[old]`` is the new id (-1 for ids that do
        not occur) and ``used[new] == old``.
    """
    present = np.bincount(ids, minlength=size) > 0
    new_of_old = np.where(present, np.cumsum(present) - 1, -1).astype(np.int64)
    return new_of_old, np.flatnonzero(present)


def compact_ids(ids: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the ids that occur to ``0..V-1``, keeping their order.

    Returns:
        ``(new_ids [N], used [V])`` where ``used[new] == old`` (see ``id_map``).
    """
    new_of_old, used = id_map(ids, size)
    return new_of_old[ids], used


def positive_mask(ratings: np.ndarray, threshold: float | None) -> tuple[np.ndarray, int, int]:
    """Which interactions are positives: ``rating >= threshold``.

    Returns:
        ``(mask [N] bool, missing, below)``: rows with a NaN rating are not positive when a
        threshold is set (``missing`` counts them); ``below`` counts the other rejected rows.
    """
    if threshold is None:
        return np.ones(ratings.shape, dtype=bool), 0, 0
    missing = np.isnan(ratings)
    keep = ~missing & (ratings >= threshold)
    return keep, int(missing.sum()), int((~missing & ~keep).sum())


def drop_duplicates(
    users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, groups: np.ndarray | None = None
) -> np.ndarray:
    """Indices of the interactions to keep: of repeated ``(user, item[, group])`` the earliest by
    timestamp (unknown timestamps count as latest; ties keep the first in input order).

    Returns:
        Sorted kept indices. Shape [M].
    """
    width = np.int64(items.max(initial=0)) + 1
    key = users.astype(np.int64) * width + items
    if groups is not None:
        key = key * 2 + groups.astype(np.int64)
    order = np.lexsort((timestamps, key))  # by key, then time (NaN last); stable for ties
    sorted_key = key[order]
    first = np.ones(order.size, dtype=bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    return np.sort(order[first])


def k_core(
    users: np.ndarray, items: np.ndarray, min_user: int, min_item: int
) -> tuple[np.ndarray, int]:
    """Iterated k-core: repeatedly drop interactions of users with fewer than ``min_user`` or items
    with fewer than ``min_item`` remaining interactions, until none is left to drop.

    Each round is one pair of ``bincount`` calls. The result is the unique largest subset in
    which every user and item meets its minimum (a dropped interaction can never be in it).

    Args:
        users, items: ids. Shape [N] each.
        min_user, min_item: minimum degrees (0 or 1: no constraint).

    Returns:
        ``(keep [N] bool, rounds)``.
    """
    keep = np.ones(users.size, dtype=bool)
    nu, ni = int(users.max(initial=-1)) + 1, int(items.max(initial=-1)) + 1
    rounds = 0
    while True:
        user_deg = np.bincount(users[keep], minlength=nu)
        item_deg = np.bincount(items[keep], minlength=ni)
        bad = keep & ((user_deg[users] < min_user) | (item_deg[items] < min_item))
        if not bad.any():
            return keep, rounds
        keep &= ~bad
        rounds += 1


def preprocess(
    raw: RawInteractions, cfg: PreprocessConfig, unbiased: RawInteractions | None = None
) -> tuple[InteractionLog, Vocabulary, PreprocessReport]:
    """Threshold, deduplicate, k-core filter and encode one log (plus an optional unbiased log).

    Order: positives only -> duplicates removed (earliest kept, per log) -> iterated k-core on
    the union of both logs -> ids remapped to ``0..U-1`` / ``0..I-1`` in token order.

    Args:
        raw: the (biased) interaction log.
        cfg: thresholds and k-core minimums.
        unbiased: a separately logged random / full exposure set (exposure protocol). Its rows
            are flagged ``unbiased`` in the result and deduplicated separately.

    Returns:
        ``(log, vocabulary, report)``.

    Raises:
        DataValidationError: nothing left after filtering.
    """
    parts = [raw] if unbiased is None else [raw, unbiased]
    allraw = RawInteractions.concat(parts)
    flags = np.zeros(len(allraw), dtype=bool)
    flags[len(raw) :] = True
    report = PreprocessReport(input_interactions=len(allraw), unbiased_input=int(flags.sum()))
    users, user_vocab = encode_ids(allraw.users)
    items, item_vocab = encode_ids(allraw.items)
    keep, report.missing_rating, report.below_threshold = positive_mask(
        allraw.ratings, cfg.positive_threshold
    )
    idx = np.flatnonzero(keep)
    idx = idx[drop_duplicates(users[idx], items[idx], allraw.timestamps[idx], flags[idx])]
    report.duplicates_removed = int(keep.sum()) - idx.size
    users, items, ts, flags = users[idx], items[idx], allraw.timestamps[idx], flags[idx]
    core, report.kcore_rounds = k_core(
        users, items, cfg.min_user_interactions, cfg.min_item_interactions
    )
    report.kcore_removed_interactions = int((~core).sum())
    report.kcore_removed_users = np.unique(users).size - np.unique(users[core]).size
    report.kcore_removed_items = np.unique(items).size - np.unique(items[core]).size
    users, items, ts, flags = users[core], items[core], ts[core], flags[core]
    if users.size == 0:
        raise DataValidationError(
            f"{raw.source}: no interactions left after thresholding and k-core filtering "
            f"({report.to_dict()})"
        )
    users, used_users = compact_ids(users, user_vocab.size)
    items, used_items = compact_ids(items, item_vocab.size)
    log = InteractionLog(users, items, ts, flags, used_users.size, used_items.size)
    report.interactions, report.num_users, report.num_items = len(log), log.num_users, log.num_items
    logger.info("preprocessed %s: %s", raw.source, report.to_dict())
    return log, Vocabulary(user_vocab[used_users], item_vocab[used_items]), report
