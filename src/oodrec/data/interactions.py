"""The in-memory interactions of a split and the report of what loading did to the files.

``Interactions`` holds parallel user / item (and, where the data has them, timestamp) tensors;
``DataReport`` counts every dropped, skipped or carved interaction and states whether the data
has an interaction order (``DataReport.order``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from oodrec.data.io import FileReport
from oodrec.data.layouts import ROLE_FILES

__all__ = [
    "CARVE_FRACTIONS",
    "ORDER_NONE",
    "ORDER_TIMESTAMPS",
    "DataReport",
    "InteractionDataset",
    "Interactions",
]

CARVE_FRACTIONS = (0.7, 0.1, 0.2)
"""train : val : IID test shares when val and / or the IID test are carved from train."""
ORDER_TIMESTAMPS = "timestamps"
"""``DataReport.order()`` of data whose interactions carry times."""
ORDER_NONE = "none (no timestamps; file order is not used as time)"
"""``DataReport.order()`` of data without times."""


@dataclass
class Interactions:
    """Parallel user / item id tensors of one split, with optional interaction times.

    Attributes:
        users, items: the pairs, in file order (after the loader's drops).
        timestamps: time of each pair (int64, in ``DataReport.timestamp_unit`` since the Unix
            epoch), aligned with ``users`` / ``items``; None when the data has no times.

    Shapes:
        users: [N] long; items: [N] long; timestamps: [N] long or None.
    """

    users: torch.Tensor
    items: torch.Tensor
    timestamps: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.timestamps is not None and self.timestamps.shape != self.users.shape:
            raise ValueError(
                f"Interactions: {self.timestamps.numel()} timestamps for {self.users.numel()} pairs"
            )

    def __len__(self) -> int:
        return int(self.users.numel())

    def keys(self, num_items: int) -> torch.Tensor:
        """``user * num_items + item`` for each pair. Shape [N]."""
        return self.users * num_items + self.items

    def take(self, index: torch.Tensor) -> Interactions:
        """The pairs at ``index`` (a boolean mask [N] or integer indices [M]), timestamps kept
        aligned."""
        times = None if self.timestamps is None else self.timestamps[index]
        return Interactions(self.users[index], self.items[index], times)


@dataclass
class DataReport:
    """Counts of everything loading did to the files (goes into the run record)."""

    dataset: str
    source: str
    files: dict[str, FileReport] = field(default_factory=dict)
    carved_from_train: bool = False
    carved_splits: list[str] = field(default_factory=list)
    """Which of ``val`` / ``iid_test`` were carved from train."""
    layout: str = "pairs"
    """Layout of the files (``oodrec.data.layouts``): pairs, adjacency or recbole."""
    split_seed: int | None = None
    dropped_unseen: dict[str, int] = field(default_factory=dict)
    dropped_in_train: dict[str, int] = field(default_factory=dict)
    dropped_in_val: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    absent_splits: list[str] = field(default_factory=list)
    """Splits the directory does not have (``iid_test``); they are empty in ``splits`` and
    have no metrics: an evaluator must skip them, not report NaN or 0."""
    num_users: int = 0
    num_items: int = 0
    has_timestamps: bool = False
    """Every split carries interaction times (``Interactions.timestamps``): the directory's
    split metadata declares the third column a timestamp. False: the data has no order (file
    order is never taken for time)."""
    timestamp_unit: str | None = None
    """``s`` or ``ms`` since the Unix epoch where ``has_timestamps``."""

    def to_dict(self) -> dict:
        return asdict(self)

    def order(self) -> str:
        """How the data orders interactions, for the run record and the report:
        ``ORDER_TIMESTAMPS`` or ``ORDER_NONE``."""
        return ORDER_TIMESTAMPS if self.has_timestamps else ORDER_NONE

    def notes(self) -> list[str]:
        """Human-readable lines for every non-zero count."""
        out = []
        for role, rep in self.files.items():
            if rep.skipped_bad_lines:
                kinds = [
                    f"{n} {label}"
                    for n, label in (
                        (rep.skipped_blank_lines, "blank"),
                        (rep.skipped_large_ids, "with an id above 2**31 - 1"),
                    )
                    if n
                ]
                detail = f" ({', '.join(kinds)})" if kinds else ""
                out.append(f"{role}: skipped {rep.skipped_bad_lines} malformed line(s){detail}")
            if rep.duplicates_removed:
                out.append(f"{role}: removed {rep.duplicates_removed} duplicate pair(s)")
        for name, label in (
            ("dropped_unseen", "pair(s) with a user or item unseen in train dropped"),
            ("dropped_in_train", "pair(s) also in train dropped (they are masked at ranking)"),
            ("dropped_in_val", "pair(s) also in val dropped"),
        ):
            for split, n in getattr(self, name).items():
                if n:
                    out.append(f"{split}: {n} {label}")
        if self.carved_from_train:
            carved = self.carved_splits or ["val", "iid_test"]
            ratio = ":".join(
                str(int(round(10 * f)))
                for f, s in zip(CARVE_FRACTIONS, ("train", "val", "iid_test"))
                if s == "train" or s in carved
            )
            out.append(
                f"{' / '.join(carved)} carved from train {ratio} with split_seed={self.split_seed}"
            )
        for split in self.absent_splits:
            names = " / ".join(ROLE_FILES.get(split, (split,)))
            out.append(f"{split}: absent ({self.source} has no {names}); it has no metrics")
        return out


@dataclass
class InteractionDataset:
    """A dataset ready for training and evaluation.

    Attributes:
        name: dataset name.
        num_users, num_items: sizes of the id spaces (from train).
        splits: ``train``, ``val``, ``iid_test``, ``ood_test`` -> Interactions.
        report: what loading did.
    """

    name: str
    num_users: int
    num_items: int
    splits: dict[str, Interactions]
    report: DataReport
    relevance: torch.Tensor | None = None
    """Ground-truth relevance [U, I] (bool) where known (the simulator), else None."""
    candidates: dict[str, Interactions] = field(default_factory=dict)
    """Test split -> logged candidates (the items shown to each user, liked or not), from the
    optional ``test_ood_candidates.txt`` / ``test_iid_candidates.txt``; ranked among by
    ``eval.protocol=candidates``."""

    @property
    def train(self) -> Interactions:
        return self.splits["train"]

    @property
    def has_timestamps(self) -> bool:
        """Whether every split carries interaction times (``Interactions.timestamps``)."""
        return self.report.has_timestamps

    def item_degree(self) -> torch.Tensor:
        """Training popularity of every item. Shape [num_items]."""
        return torch.bincount(self.train.items, minlength=self.num_items)
