"""Descriptive statistics of a split dataset: sizes, density, item-popularity Gini per split and
the total-variation distance between the train and test item-popularity distributions."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from oodrec.config import DataConfig
from oodrec.data.dataset import InteractionDataset, load_dataset

SPLIT_ORDER = ("train", "val", "iid_test", "ood_test")


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 when all are equal, near 1 when one item holds
    everything.

    Shapes:
        counts: [I] (zeros included: items that never occur count as 0).
    """
    x = np.sort(np.asarray(counts, dtype=np.float64))
    total = x.sum()
    if x.size == 0 or total == 0:
        return 0.0
    rank = np.arange(1, x.size + 1)
    return float(2.0 * (rank * x).sum() / (x.size * total) - (x.size + 1) / x.size)


def total_variation(counts_a: np.ndarray, counts_b: np.ndarray) -> float:
    """Total-variation distance ``0.5 * sum |p - q|`` between two count vectors normalised to
    distributions (0: identical, 1: disjoint support).

    Shapes:
        counts_a, counts_b: [I].
    """
    a = np.asarray(counts_a, dtype=np.float64)
    b = np.asarray(counts_b, dtype=np.float64)
    if a.sum() == 0 or b.sum() == 0:
        return float("nan")
    return float(0.5 * np.abs(a / a.sum() - b / b.sum()).sum())


def split_stats(
    parts: Mapping[str, tuple[np.ndarray, np.ndarray]], num_users: int, num_items: int
) -> dict:
    """Statistics of every part of a split.

    Args:
        parts: ``split name -> (users [N], items [N])``; must include ``train``.
        num_users, num_items: id-space sizes (density is ``N / (num_users * num_items)``, the Gini
            runs over all ``num_items`` items).

    Returns:
        ``{"num_users", "num_items", "interactions", "density", "splits": {name: {...}},
        "tv_train_ood_test", "tv_train_iid_test"}``; per split: ``interactions``, ``users``,
        ``items``, ``density``, ``item_gini`` and ``mean_train_item_popularity`` (mean training
        degree of the split's items, per interaction).
    """
    cells = float(num_users) * float(num_items)
    degree = {name: np.bincount(items, minlength=num_items) for name, (_, items) in parts.items()}
    train_deg = degree["train"]
    out_splits = {}
    for name in [n for n in SPLIT_ORDER if n in parts] + [n for n in parts if n not in SPLIT_ORDER]:
        users, items = parts[name]
        out_splits[name] = {
            "interactions": int(users.size),
            "users": int(np.unique(users).size),
            "items": int(np.unique(items).size),
            "density": users.size / cells if cells else 0.0,
            "item_gini": gini(degree[name]),
            "mean_train_item_popularity": float(train_deg[items].mean()) if items.size else 0.0,
        }
    total = sum(s["interactions"] for s in out_splits.values())
    out = {
        "num_users": int(num_users),
        "num_items": int(num_items),
        "interactions": total,
        "density": total / cells if cells else 0.0,
        "splits": out_splits,
    }
    for name in ("ood_test", "iid_test"):
        if name in degree:
            out[f"tv_train_{name}"] = total_variation(train_deg, degree[name])
    return out


def dataset_stats(
    dataset: InteractionDataset | str | Path,
    data_dir: str | Path | None = None,
    on_bad_lines: str = "error",
    verify_checksums: bool = True,
) -> dict:
    """``split_stats`` of a loaded dataset, a registered dataset name or a dataset directory.

    A name or directory is loaded with ``load_dataset`` (its checks, drops and carving apply);
    the result also holds the dataset's name, source and the loader's notes.

    Args:
        dataset: the dataset, a registered name (``food``) or a directory with ``train.txt`` ...
        data_dir: data directory for registered names (default ``$OODREC_DATA``).
        on_bad_lines: ``error`` or ``skip`` (``yelp2018`` has 2 malformed lines).
        verify_checksums: check the SHA-256 of registered datasets.

    Returns:
        The statistics dict (JSON-serialisable).
    """
    if not isinstance(dataset, InteractionDataset):
        dataset = load_dataset(
            DataConfig(
                dataset=str(dataset),
                data_dir=None if data_dir is None else str(data_dir),
                on_bad_lines=on_bad_lines,  # type: ignore[arg-type]
                verify_checksums=verify_checksums,
                allow_sparse_ids=True,  # statistics of any id space; a sparse one is warned about
            )
        )
    parts = {
        name: (inter.users.numpy(), inter.items.numpy())
        for name, inter in dataset.splits.items()
        if name not in dataset.report.absent_splits  # no row, rather than a row of zeros
    }
    out = {"name": dataset.name, "source": dataset.report.source}
    out.update(split_stats(parts, dataset.num_users, dataset.num_items))
    out["notes"] = dataset.report.notes()
    return out
