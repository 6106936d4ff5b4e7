"""The in-memory dataset: train / val / IID test / OOD test interactions with their checks.

Nothing is changed silently: every dropped or skipped interaction is counted in ``DataReport``,
which goes into the run record. Interaction times, where the split metadata declares them, stay
aligned with the pairs through every drop (``Interactions.take``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from oodrec.config import SPLITS, DataConfig
from oodrec.data.interactions import (
    CARVE_FRACTIONS,
    DataReport,
    InteractionDataset,
    Interactions,
)
from oodrec.data.io import (
    BYTES_PER_VALUE,
    EMBEDDING_DIM,
    find_id_line,
    human_bytes,
    read_interactions,
    table_bytes,
)
from oodrec.data.layouts import ROLE_FILES, DirectoryLayout, find_layout, read_layout
from oodrec.data.registry import DATASETS, DatasetSpec, resolve_data_dir, sha256_file
from oodrec.errors import DataValidationError

logger = logging.getLogger(__name__)

__all__ = [
    "CARVE_FRACTIONS",
    "ROLE_FILES",
    "DataReport",
    "InteractionDataset",
    "Interactions",
    "load_dataset",
]

TRAINING_COPIES = 4
"""Copies of the embedding tables that training holds: parameters, gradients and the two Adam
moments. ``load_dataset`` refuses id spaces whose tables would not fit in memory this often."""


def physical_memory_bytes() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _carve(train: Interactions, seed: int, roles: list[str]) -> dict[str, Interactions]:
    """Carve ``roles`` (``val`` and / or ``iid_test``) out of train by ``seed``, keeping the
    shares of ``CARVE_FRACTIONS`` among the parts (7:1:2, 7:1 or 7:2).

    Returns:
        ``train`` and each of ``roles`` -> its interactions (in train order).
    """
    shares = dict(zip(("train", "val", "iid_test"), CARVE_FRACTIONS))
    keep = ["train", *roles]
    total = 1.0 if len(keep) == 3 else sum(shares[r] for r in keep)
    gen = torch.Generator().manual_seed(seed)
    n = len(train)
    perm = torch.randperm(n, generator=gen)
    out, start = {}, 0
    for k, role in enumerate(keep):
        stop = n if k == len(keep) - 1 else start + int(round(shares[role] / total * n))
        idx = perm[start:stop].sort().values
        out[role] = train.take(idx)
        start = stop
    return out


def _registered_files(name: str, folder: Path, spec: DatasetSpec, verify: bool) -> dict:
    if "train" in spec.missing_roles:
        raise DataValidationError(f"dataset {name!r}: {spec.missing_note}")
    files: dict[str, Path] = {}
    for f in spec.files:
        path = folder / f.filename
        if not path.is_file():
            raise DataValidationError(
                f"{path}: file not found (dataset {name!r}); run `oodrec download {name}` "
                f"or point --data-dir / OODREC_DATA at a directory holding {name}/"
            )
        if verify:
            got = sha256_file(path)
            if got != f.sha256:
                raise DataValidationError(
                    f"{path}: checksum mismatch (expected sha256 {f.sha256}, got {got}); "
                    f"re-download with `oodrec download {name} --force`, or pass "
                    f"--no-verify to load a modified copy on purpose"
                )
        files[f.role] = path
    return files


def _isin_sorted(keys: torch.Tensor, sorted_ref: torch.Tensor) -> torch.Tensor:
    """Boolean mask: which ``keys`` occur in the sorted tensor ``sorted_ref``. Shape [N]."""
    if sorted_ref.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    pos = torch.searchsorted(sorted_ref, keys).clamp_max(sorted_ref.numel() - 1)
    return sorted_ref[pos] == keys


def _locate(cfg: DataConfig) -> tuple[str, Path, DatasetSpec | None]:
    spec = DATASETS.get(cfg.dataset)
    if spec is not None:
        return spec.name, resolve_data_dir(cfg.data_dir) / spec.name, spec
    path = Path(cfg.dataset).expanduser()
    if path.is_dir():
        return path.name, path, None
    names = ", ".join(sorted([*DATASETS, "synthetic"]))
    raise DataValidationError(
        f"unknown dataset {cfg.dataset!r}: not a registered name ({names}) and not a directory"
    )


def dataset_folder(cfg: DataConfig) -> Path | None:
    """The directory a dataset is read from (None for the simulator)."""
    if cfg.dataset == "synthetic":
        return None
    return _locate(cfg)[1]


def check_available(cfg: DataConfig) -> None:
    """Fail fast, without reading any data, when a dataset's files are not there.

    Raises:
        DataValidationError: an unknown name, a registered dataset with a missing file, or a
            directory without a usable layout (the same messages ``load_dataset`` gives).
    """
    if cfg.dataset == "synthetic":
        return
    name, folder, spec = _locate(cfg)
    if spec is not None:
        _registered_files(name, folder, spec, verify=False)
    else:
        find_layout(folder)


EMPTY_SPLIT_CHECKS = (
    (
        "dropped_unseen",
        "unseen users/items",
        "had a user or item unseen in train: are its ids numbered like train's?",
    ),
    ("dropped_in_train", "also in train", "was also a training pair: is it a copy of train?"),
    ("dropped_in_val", "also in val", "was also a val pair: is it a copy of val?"),
)
"""``(DataReport field, check, what a removed pair was)`` in the order the checks run."""


def _empty_split_message(
    name: str, split: str, read: int, found: DirectoryLayout, report: DataReport
) -> str:
    """Which check emptied ``split`` and how many pairs each check removed."""
    if split in report.carved_splits:
        source = f"carved from train with split_seed={report.split_seed}"
    else:
        source = str(found.files.get(split, "?"))
    head = f"dataset {name!r}: split {split} ({source}) is empty after the checks"
    if read == 0:
        kept = report.files["train"].kept
        return f"{head}: it got no pair (train, {kept} pair(s), is too small to carve it from)"
    checks = [
        (label, int(getattr(report, key).get(split, 0)), why)
        for key, label, why in EMPTY_SPLIT_CHECKS
        if split in getattr(report, key)
    ]
    counts = ", ".join(f"{label} {n}" for label, n, _ in checks)
    label, _, why = [c for c in checks if c[1]][-1]
    return (
        f"{head}: of its {read} pair(s) the checks removed {counts}; the '{label}' check "
        f"removed the last ones (each {why})"
    )


def _check_table_size(
    found: DirectoryLayout, train: Interactions, num_users: int, num_items: int
) -> None:
    """Refuse an id space whose embedding tables would not fit in memory (before any
    allocation): ``TRAINING_COPIES x (num_users + num_items) x EMBEDDING_DIM x 4`` bytes must
    not exceed the machine's physical memory. The error names the largest id and its line."""
    memory = physical_memory_bytes()
    rows = num_users + num_items
    need = TRAINING_COPIES * table_bytes(rows)
    if memory is None or need <= memory:
        return
    role, value, used = max(
        ("user", num_users - 1, train.users),
        ("item", num_items - 1, train.items),
        key=lambda r: r[1],
    )
    where = _id_line(found, role, value)
    distinct = int(torch.unique(used).numel())
    raise DataValidationError(
        f"{where}: {role} id {value} makes an id space of {num_users:,} users x {num_items:,} "
        f"items: one embedding table row per id ({rows:,} rows x {EMBEDDING_DIM} dims x "
        f"{BYTES_PER_VALUE} bytes = {human_bytes(table_bytes(rows))}, x{TRAINING_COPIES} for "
        f"gradients and Adam moments = {human_bytes(need)}) exceeds this machine's memory "
        f"({human_bytes(memory)}). The file uses only {distinct:,} distinct {role} id(s): "
        "renumber the ids to 0..N-1 (`oodrec prepare` does so)"
    )


SPARSE_UNUSED = 10_000
"""An id space is sparse when more ids never occur in train than occur, and more than this
many (``_check_sparse_ids``)."""
SPARSE_WARN = 1_000
"""Below ``SPARSE_UNUSED`` unused ids, more than this many (and more than the ids used) is
only a warning."""
STRAY_GAP = 1_000
"""An id more than this above the next largest id, and more than twice its size, is a stray
id: the id space up to it is sparse whatever the counts."""
CHECKPOINT_COPIES = 7
"""Copies of the embedding tables in a run's checkpoints: best.pt (1), last.pt and prev.pt
(the tables and Adam's two moments: 3 each)."""


def _id_line(found: DirectoryLayout, role: str, value: int) -> str:
    """``FILE, line N`` of the first occurrence of ``role`` id ``value`` in the train file."""
    path = found.files.get("train")
    line = None
    if path is not None and found.layout in ("pairs", "adjacency"):
        line = find_id_line(path, role, value, found.layout)
    return f"{path}, line {line}" if line is not None else str(path)


def _check_sparse_ids(found: DirectoryLayout, train: Interactions, allow: bool) -> None:
    """Refuse (or, with ``allow``, warn about) a sparse id space: one embedding row per id from 0
    to the largest id, so ids that never occur cost memory and checkpoint space, and items that
    never occur are ranked in every full evaluation. Sparse: more unused ids than used ones and
    more than ``SPARSE_UNUSED`` of them, or a stray largest id (``STRAY_GAP``). More unused ids
    than used ones and more than ``SPARSE_WARN`` is a warning only. The message names the
    largest id and its line, the memory the unused rows cost and the cure (``oodrec prepare``).

    Raises:
        DataValidationError: a sparse id space and not ``allow``.
    """
    for role, ids in (("user", train.users), ("item", train.items)):
        distinct = torch.unique(ids)  # sorted
        used, top = int(distinct.numel()), int(distinct[-1])
        below = int(distinct[-2]) if used > 1 else -1
        unused = top + 1 - used
        stray = top - below > STRAY_GAP and top > 2 * (below + 1)
        sparse = stray or (unused > used and unused > SPARSE_UNUSED)
        if not sparse and not (unused > used and unused > SPARSE_WARN):
            continue
        what = (
            f"lies far beyond the other {role} ids (the next largest is {below:,})"
            if stray
            else f"makes an id space of {top + 1:,} {role}s"
        )
        rows = table_bytes(unused)
        msg = (
            f"{_id_line(found, role, top)}: {role} id {top:,} {what}: only {used:,} of the "
            f"{top + 1:,} {role} ids 0..{top:,} occur in train. The {unused:,} that never occur "
            f"still get embedding rows: {human_bytes(rows)} (x{TRAINING_COPIES} in training = "
            f"{human_bytes(TRAINING_COPIES * rows)}, up to {human_bytes(CHECKPOINT_COPIES * rows)}"
            " in a run's checkpoints)"
        )
        if role == "item":
            msg += ", and every full evaluation ranks them as candidates"
        cure = "renumber the ids to 0..N-1 (`oodrec prepare` does so)"
        if sparse and not allow:
            raise DataValidationError(
                f"{msg}. {cure[0].upper()}{cure[1:]}, or set data.allow_sparse_ids=true "
                "(--set data.allow_sparse_ids=true) to use the ids as they are"
            )
        logger.warning("%s; %s", msg, cure)


def load_dataset(cfg: DataConfig) -> InteractionDataset:
    """Load, validate and (where needed) carve a dataset.

    Rules: malformed lines raise (or are skipped and counted with ``on_bad_lines="skip"``);
    duplicate pairs are removed and counted; val/test pairs whose user or item has no training
    interaction are dropped and counted; val/test pairs that are also training pairs are dropped
    and counted (they are masked at ranking and could never be hit); test pairs also in val are
    dropped and counted; a split emptied by these checks is an error that names the check and
    every count. A directory with val but no IID test file loads with ``iid_test`` empty and
    listed in ``report.absent_splits`` (it has no metrics). An id space whose embedding tables
    would not fit in memory (``_check_table_size``) is refused before anything is allocated, and
    so is a sparse id space (``_check_sparse_ids``) unless ``cfg.allow_sparse_ids``.

    Timestamps: a directory whose ``prepare.json`` declares the third column a timestamp
    (``oodrec.data.layouts.timestamp_unit``) loads with ``Interactions.timestamps`` on every
    split, aligned with the pairs after every drop, and ``report.has_timestamps``; any other
    dataset (the registered ones included) has ``timestamps`` None.

    Args:
        cfg: the data config.

    Returns:
        The dataset with its report.

    Raises:
        DataValidationError: missing, unreadable, malformed or corrupt input.
    """
    if cfg.dataset == "synthetic":
        from oodrec.config import parse_options
        from oodrec.data.synthetic import SyntheticConfig, load_synthetic

        sim_cfg = parse_options(SyntheticConfig, dict(cfg.synthetic), "data.synthetic")
        dataset, relevance = load_synthetic(sim_cfg)
        dataset.relevance = relevance
        return dataset
    name, folder, spec = _locate(cfg)
    report = DataReport(dataset=name, source=str(folder))
    if spec is not None:
        files = _registered_files(name, folder, spec, cfg.verify_checksums)
        found = DirectoryLayout("pairs", files, f"registered dataset {name!r}")
    else:
        found = find_layout(folder)
    report.layout = found.layout
    report.has_timestamps = found.timestamp_unit is not None
    report.timestamp_unit = found.timestamp_unit
    parts = {}
    for role, (users, items, times, file_report) in read_layout(found, cfg.on_bad_lines).items():
        report.files[role] = file_report
        stamps = None if times is None else torch.from_numpy(times)
        parts[role] = Interactions(torch.from_numpy(users), torch.from_numpy(items), stamps)
    missing = [role for role in ("val", "iid_test") if role not in parts]
    if missing == ["iid_test"] and found.layout != "recbole":
        # Published OOD splits often ship train / val / OOD test only: the IID test is absent,
        # not invented (a copy of the OOD test or a carve would report numbers nobody measured).
        parts["iid_test"] = parts["train"].take(torch.zeros(0, dtype=torch.long))
        report.absent_splits = ["iid_test"]
        logger.info("%s: no IID test file; iid_test is absent and has no metrics", folder)
    elif missing == ["val"] and found.layout != "recbole":
        raise DataValidationError(
            f"{folder}: has an IID test file but no {' / '.join(ROLE_FILES['val'])} file; val "
            "is needed to select the epoch. Add one, or remove the IID test file to carve both "
            "from train"
        )
    elif missing:
        parts.update(_carve(parts["train"], cfg.split_seed, missing))
        report.carved_from_train = True
        report.carved_splits = missing
        report.split_seed = cfg.split_seed
    train = parts["train"]
    num_users = int(train.users.max()) + 1
    num_items = int(train.items.max()) + 1
    _check_table_size(found, train, num_users, num_items)
    _check_sparse_ids(found, train, cfg.allow_sparse_ids)
    user_deg = torch.bincount(train.users, minlength=num_users)
    item_deg = torch.bincount(train.items, minlength=num_items)
    train_keys = torch.sort(train.keys(num_items)).values
    val_keys: torch.Tensor | None = None
    for split in SPLITS:
        if split in report.absent_splits:
            continue
        inter = parts[split]
        read = len(inter)
        seen = (inter.users < num_users) & (inter.items < num_items)
        seen &= user_deg[inter.users.clamp_max(num_users - 1)] > 0
        seen &= item_deg[inter.items.clamp_max(num_items - 1)] > 0
        report.dropped_unseen[split] = int((~seen).sum())
        inter = inter.take(seen)
        keys = inter.keys(num_items)
        in_train = _isin_sorted(keys, train_keys)
        report.dropped_in_train[split] = int(in_train.sum())
        keep = ~in_train
        if split != "val" and val_keys is not None:
            in_val = _isin_sorted(keys, val_keys) & keep
            report.dropped_in_val[split] = int(in_val.sum())
            keep &= ~in_val
        inter = inter.take(keep)
        if len(inter) == 0:
            raise DataValidationError(_empty_split_message(name, split, read, found, report))
        parts[split] = inter
        if split == "val":
            val_keys = torch.sort(inter.keys(num_items)).values
    report.num_users, report.num_items = num_users, num_items
    candidates = _read_candidates(folder, parts, num_users, num_items, cfg.on_bad_lines, report)
    parts = {k: parts[k] for k in ("train", *SPLITS)}
    report.sizes = {k: len(v) for k, v in parts.items()}
    for note in report.notes():
        logger.info("%s: %s", name, note)
    return InteractionDataset(name, num_users, num_items, parts, report, candidates=candidates)


CANDIDATE_FILES = {"iid_test": "test_iid_candidates.txt", "ood_test": "test_ood_candidates.txt"}
"""Optional per-test-split candidate files: ``user item`` pairs of logged exposures."""


def _read_candidates(
    folder: Path,
    parts: dict[str, Interactions],
    num_users: int,
    num_items: int,
    on_bad_lines: str,
    report: DataReport,
) -> dict[str, Interactions]:
    """Each test split's logged candidates (read, deduplicated, unseen ids dropped and counted)
    united with the split's positives, so every positive is a candidate of its user."""
    out: dict[str, Interactions] = {}
    for split, fname in CANDIDATE_FILES.items():
        path = folder / fname
        if not path.is_file() or split in report.absent_splits:
            continue
        users, items, file_report = read_interactions(path, on_bad_lines)
        report.files[f"{split}_candidates"] = file_report
        u, i = torch.from_numpy(users), torch.from_numpy(items)
        seen = (u < num_users) & (i < num_items)
        report.dropped_unseen[f"{split}_candidates"] = int((~seen).sum())
        pos = parts[split]
        u = torch.cat([u[seen], pos.users])
        i = torch.cat([i[seen], pos.items])
        keys = torch.unique(u * num_items + i)
        out[split] = Interactions(keys // num_items, keys % num_items)
        logger.info("%s: %d logged candidates for %s", path, len(out[split]), split)
    return out
