"""Shared parts of the OOD split protocols: config, result type, the 7:1:2 IID split, the train
coverage rule and the invariant checks.

Every protocol first chooses an OOD test, then splits the rest 7:1:2 into train / val / IID test
(per user, see ``iid_split``) and finally applies the coverage rule (``ensure_train_coverage``):

* a val / IID-test pair whose user or item has no training interaction is **moved to train**, one
  pair per such user and per such item (after the move every remaining pair is covered);
* an OOD-test pair without training user or item is moved to train (popularity protocol) or
  **dropped** (temporal protocol, where moving it would put a late interaction into the history;
  exposure protocol, where it would put unbiased data into the biased training log).

Each move and drop is counted in ``SplitReport``; dropped pairs are kept in
``SplitResult.dropped``, so that the parts plus the dropped pairs are exactly the input.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from oodrec.data.preprocess import InteractionLog
from oodrec.errors import DataValidationError

logger = logging.getLogger(__name__)

PARTS = ("train", "val", "iid_test", "ood_test")
# Move order: the IID parts give up pairs before the OOD test does.
_MOVE_ORDER = ("iid_test", "val", "ood_test")

Seed = int | np.random.Generator | torch.Generator


@dataclass(frozen=True)
class SplitConfig:
    """Options shared by every protocol."""

    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    """train / val / IID-test shares of the interactions outside the OOD test (per user)."""

    def __post_init__(self) -> None:
        f = tuple(float(x) for x in self.fractions)
        if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1.0) > 1e-9 or f[0] <= 0:
            raise DataValidationError(
                f"split fractions must be three non-negative shares summing to 1 with a positive "
                f"train share, got {self.fractions}"
            )
        object.__setattr__(self, "fractions", f)


def check_fraction(name: str, value: float) -> None:
    """Raise unless ``0 <= value < 1``."""
    if not 0.0 <= value < 1.0:
        raise DataValidationError(f"{name} must be in [0, 1), got {value}")


@dataclass
class SplitReport:
    """What a split did, with counts of every moved and dropped pair."""

    protocol: str
    input_interactions: int
    ood_selected: int = 0
    """Interactions the protocol chose for the OOD test before the coverage rule."""
    overlap_pairs: int = 0
    """Exposure: pairs logged both biased and unbiased."""
    overlap_kept_in: str | None = None
    """Exposure: where the overlapping pair was kept (``ood_test`` or ``biased``)."""
    boundary_ties: int = 0
    """Temporal: latest-20% interactions tied in time with the history, kept in the history."""
    moved_to_train: dict[str, int] = field(default_factory=dict)
    dropped_unseen: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SplitResult:
    """The four parts of a split, in the id space of the input log.

    Attributes:
        train, val, iid_test, ood_test: the parts (``(user, item, timestamp)`` arrays).
        dropped: input interactions in no part (exposure overlaps, uncovered OOD pairs).
        report: counts.
    """

    train: InteractionLog
    val: InteractionLog
    iid_test: InteractionLog
    ood_test: InteractionLog
    dropped: InteractionLog
    report: SplitReport

    def parts(self) -> dict[str, InteractionLog]:
        """``train``, ``val``, ``iid_test``, ``ood_test`` -> log."""
        return {name: getattr(self, name) for name in PARTS}


def as_generator(seed: Seed) -> np.random.Generator:
    """A NumPy generator from an int seed, a NumPy generator (used as is) or a torch generator
    (one draw from it seeds a NumPy generator)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, torch.Generator):
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=seed)))
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise TypeError(f"seed must be an int, numpy.random.Generator or torch.Generator, got {seed!r}")


def require_unique_pairs(log: InteractionLog) -> None:
    """Raise if a ``(user, item)`` pair repeats within the biased or within the unbiased log."""
    keys = log.keys() * 2 + log.unbiased
    uniq = np.unique(keys)
    if uniq.size != keys.size:
        raise DataValidationError(
            f"split input repeats {keys.size - uniq.size} (user, item) pair(s); remove duplicates "
            "first (oodrec.data.preprocess.drop_duplicates)"
        )


def group_ranks(users: np.ndarray, sort_key: np.ndarray, num_users: int) -> tuple[np.ndarray, ...]:
    """Rank of each interaction within its user, ordered by ``sort_key``.

    Returns:
        ``(order, rank, count)``: ``order`` sorts by (user, sort_key); ``rank[k]`` and
        ``count[k]`` are the 0-based rank and the user's size for ``order[k]``. Shapes [N].
    """
    order = np.lexsort((sort_key, users))
    counts = np.bincount(users, minlength=num_users)
    starts = np.cumsum(counts) - counts
    sorted_users = users[order]
    rank = np.arange(users.size) - starts[sorted_users]
    return order, rank, counts[sorted_users]


def iid_split(
    log: InteractionLog, fractions: tuple[float, float, float], rng: np.random.Generator
) -> tuple[InteractionLog, InteractionLog, InteractionLog]:
    """Random train / val / IID-test split, stratified per user.

    Each user's interactions are shuffled; the one at shuffled rank ``r`` of ``n`` goes to train
    if ``(r + 0.5) / n < f_train``, to val if below ``f_train + f_val``, else to the IID test. A
    user with one interaction keeps it in train.

    Returns:
        ``(train, val, iid_test)``, each in input order.
    """
    order, rank, count = group_ranks(log.users, rng.random(len(log)), log.num_users)
    q = (rank + 0.5) / np.maximum(count, 1)
    part_sorted = (q >= fractions[0]).astype(np.int8) + (q >= fractions[0] + fractions[1])
    part = np.empty(len(log), dtype=np.int8)
    part[order] = part_sorted
    return tuple(log.take(np.flatnonzero(part == k)) for k in range(3))  # type: ignore[return-value]


def _seen(train: InteractionLog) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.bincount(train.users, minlength=train.num_users) > 0,
        np.bincount(train.items, minlength=train.num_items) > 0,
    )


def _one_per_uncovered(part: InteractionLog, seen_u: np.ndarray, seen_i: np.ndarray) -> np.ndarray:
    """Indices of one pair per uncovered user and one per uncovered item of ``part``."""
    no_user = np.flatnonzero(~seen_u[part.users])
    no_item = np.flatnonzero(~seen_i[part.items])
    pick_u = no_user[np.unique(part.users[no_user], return_index=True)[1]]
    pick_i = no_item[np.unique(part.items[no_item], return_index=True)[1]]
    return np.union1d(pick_u, pick_i)


def ensure_train_coverage(
    train: InteractionLog, parts: dict[str, InteractionLog], policy: dict[str, str]
) -> tuple[InteractionLog, dict[str, InteractionLog], InteractionLog, dict, dict]:
    """Apply the coverage rule (module docstring): ``policy[part]`` is ``move`` or ``drop``.

    Returns:
        ``(train, parts, dropped, moved_counts, dropped_counts)``; afterwards every user and item
        of every part occurs in ``train``.
    """
    parts = dict(parts)
    moved = {name: 0 for name in parts}
    changed = True
    while changed:  # one pass covers a part; a second pass confirms
        changed = False
        for name in (n for n in _MOVE_ORDER if n in parts and policy[n] == "move"):
            pick = _one_per_uncovered(parts[name], *_seen(train))
            if pick.size:
                keep = np.ones(len(parts[name]), dtype=bool)
                keep[pick] = False
                train = InteractionLog.concat([train, parts[name].take(pick)])
                parts[name] = parts[name].take(keep)
                moved[name] += int(pick.size)
                changed = True
    seen_u, seen_i = _seen(train)
    dropped_logs, dropped = [], {name: 0 for name in parts}
    for name in (n for n in parts if policy[n] == "drop"):
        bad = ~seen_u[parts[name].users] | ~seen_i[parts[name].items]
        dropped[name] = int(bad.sum())
        dropped_logs.append(parts[name].take(bad))
        parts[name] = parts[name].take(~bad)
    empty = train.take(np.zeros(0, dtype=np.int64))
    return train, parts, InteractionLog.concat([empty, *dropped_logs]), moved, dropped


def finish_split(
    source: InteractionLog,
    ood: InteractionLog,
    rest: InteractionLog,
    cfg: SplitConfig,
    rng: np.random.Generator,
    ood_policy: str,
    report: SplitReport,
    pre_dropped: InteractionLog | None = None,
) -> SplitResult:
    """Common tail of every protocol: 7:1:2 split of ``rest``, coverage rule, report, checks.

    Args:
        source: the protocol's input (for the final checks).
        ood: the OOD test chosen by the protocol.
        rest: everything else that is to be split into train / val / IID test.
        cfg: fractions.
        rng: the protocol's generator (continued here).
        ood_policy: ``move`` or ``drop`` for uncovered OOD pairs.
        report: the protocol's report, completed here.
        pre_dropped: interactions the protocol already excluded (exposure overlaps).

    Returns:
        The checked split.
    """
    train, val, iid_test = iid_split(rest, cfg.fractions, rng)
    parts = {"val": val, "iid_test": iid_test, "ood_test": ood}
    policy = {"val": "move", "iid_test": "move", "ood_test": ood_policy}
    train, parts, dropped, moved, dropped_n = ensure_train_coverage(train, parts, policy)
    if pre_dropped is not None:
        dropped = InteractionLog.concat([pre_dropped, dropped])
    report.ood_selected = len(ood)
    report.moved_to_train, report.dropped_unseen = moved, dropped_n
    result = SplitResult(train, parts["val"], parts["iid_test"], parts["ood_test"], dropped, report)
    report.sizes = {name: len(p) for name, p in result.parts().items()}
    for name, p in result.parts().items():
        if len(p) == 0:
            raise DataValidationError(
                f"{report.protocol} split: part {name} is empty ({report.to_dict()}); the input "
                "is too small or too sparse for this protocol"
            )
    check_split(result, source)
    logger.info("%s split: %s", report.protocol, report.to_dict())
    return result


def check_split(result: SplitResult, source: InteractionLog) -> None:
    """Check the split invariants.

    Invariants: no pair occurs twice in one part or in two parts; the parts plus
    ``result.dropped`` are exactly ``source`` (as a multiset of pairs); every user and item of
    val, IID test and OOD test occurs in train.

    Raises:
        DataValidationError: listing every violated invariant.
    """
    parts = result.parts()
    keys = {name: p.keys() for name, p in parts.items()}
    problems = []
    for name, k in keys.items():
        if np.unique(k).size != k.size:
            problems.append(f"{name} repeats {k.size - np.unique(k).size} pair(s)")
    names = list(parts)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            common = np.intersect1d(keys[names[a]], keys[names[b]]).size
            if common:
                problems.append(f"{names[a]} and {names[b]} share {common} pair(s)")
    union = np.sort(np.concatenate([*keys.values(), result.dropped.keys()]))
    if not np.array_equal(union, np.sort(source.keys())):
        problems.append(
            f"parts + dropped hold {union.size} pairs, not exactly the {len(source)} input pairs"
        )
    seen_u, seen_i = _seen(result.train)
    for name in PARTS[1:]:
        p = parts[name]
        unseen = int((~seen_u[p.users] | ~seen_i[p.items]).sum())
        if unseen:
            problems.append(f"{name} has {unseen} pair(s) with a user or item missing from train")
    if problems:
        raise DataValidationError("split check failed: " + "; ".join(problems))
