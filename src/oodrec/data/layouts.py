"""Layouts of a user-provided dataset directory: which file plays which role, and how to read it.

==========  ======================================================  ==========================
layout      files                                                   content
==========  ======================================================  ==========================
pairs       ``train.txt``, ``valid_iid.txt`` (or ``val.txt`` /      ``user item [value]`` per
            ``valid.txt``), ``test_iid.txt``, ``test_ood.txt``      line (the default)
adjacency   the same names                                          ``user item item ...`` per
                                                                    line (LightGCN / SELFRec)
recbole     ``NAME.train.inter``, ``NAME.valid.inter``,             RecBole atomic files with
            ``NAME.test.inter`` (``NAME.test_iid.inter`` and        a ``user_id:token
            ``NAME.test_ood.inter`` where given)                    item_id:token ...`` header
==========  ======================================================  ==========================

Detection, in this order (``find_layout``):

1. **recbole**: the directory holds no ``train.txt`` and exactly one ``*.train.inter`` file.
   ``NAME.test.inter`` is the OOD test unless ``NAME.test_ood.inter`` exists. A missing IID test
   (or val) is carved from train (train : val : IID test = 7 : 1 : 2), as for the shipped
   datasets without them, and the run record says so.
2. **marker**: a file ``layout.txt`` holding ``pairs`` or ``adjacency`` names the layout of the
   ``.txt`` files.
3. **content** (no marker): ``train.txt`` is an adjacency list only when its first
   ``DETECT_LINES`` lines leave no doubt: every token is a non-negative integer, at least half
   of the lines have 4 or more fields (a ``user item value`` line has at most 3), and no single
   field count covers half of the lines or more (a fixed-width table such as
   ``user item rating timestamp`` has one count). Anything else is read as pairs, where a line
   with another field count is malformed (the message points at ``layout.txt``).

The layout found for ``train.txt`` applies to every file of the directory: a LightGCN test file
with two items per user (``u i j``) would otherwise read as ``user item value``.

**Timestamps.** The third column of a pairs file is a timestamp only when the directory's
``prepare.json`` (written by ``oodrec prepare``) says so, in its ``split_format`` entry::

    "split_format": {"columns": ["user", "item", "timestamp"], "timestamp_unit": "s"}

(``timestamp_unit``: ``s`` or ``ms`` since the Unix epoch). Without that entry a third column
keeps its plain meaning, a value that is ignored: the shipped DRGO files hold a constant ``1``
there, which must never be taken for a time. Adjacency lists and RecBole files carry no times.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path

import numpy as np

from oodrec.data.io import UTF8_BOM, FileReport, dedupe, read_adjacency, read_pairs
from oodrec.errors import DataValidationError

logger = logging.getLogger(__name__)

LAYOUTS = ("pairs", "adjacency", "recbole")
LAYOUT_FILE = "layout.txt"
DETECT_LINES = 100_000
# Filenames accepted for each role in a user-provided dataset directory, in order of preference.
ROLE_FILES = {
    "train": ("train.txt",),
    "val": ("valid_iid.txt", "val.txt", "valid.txt"),
    "iid_test": ("test_iid.txt",),
    "ood_test": ("test_ood.txt",),
}
# RecBole benchmark files NAME.<suffix>.inter for each role, in order of preference.
RECBOLE_SUFFIXES = {
    "train": ("train",),
    "val": ("valid", "val", "valid_iid"),
    "iid_test": ("test_iid", "iid_test"),
    "ood_test": ("test_ood", "ood_test", "test"),
}

METADATA_FILE = "prepare.json"
"""The split metadata ``oodrec prepare`` writes next to the split files."""
TIMESTAMP_UNITS = {"s": "seconds", "ms": "milliseconds"}
"""Units of a timestamp column (since the Unix epoch) -> their names."""
SPLIT_COLUMNS = (["user", "item"], ["user", "item", "timestamp"])
"""The column lists ``split_format.columns`` may declare."""

Parts = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None, FileReport]]
"""role -> ``(users [N], items [N], times [N] int64 or None, report)``."""


@dataclass(frozen=True)
class DirectoryLayout:
    """What ``find_layout`` found in a dataset directory.

    Attributes:
        layout: ``pairs``, ``adjacency`` or ``recbole``.
        files: role (``train``, ``val``, ``iid_test``, ``ood_test``) -> file; val and IID test
            may be missing.
        reason: how the layout was decided (logged).
        timestamp_unit: ``s`` or ``ms`` when the split metadata declares the third column of
            the pair files a timestamp; None otherwise (no times; a third column is a value).
    """

    layout: str
    files: dict[str, Path]
    reason: str
    timestamp_unit: str | None = None


def looks_like_adjacency(path: Path, max_lines: int = DETECT_LINES) -> bool:
    """The content rule of the module docstring, on the first ``max_lines`` lines of ``path``."""
    with open(path, "rb") as fh:
        head = fh.read(len(UTF8_BOM))
        if head != UTF8_BOM:
            fh.seek(0)
        fields = [line.split() for line in islice(fh, max_lines)]
    fields = [f for f in fields if f]
    if not fields:
        return False
    try:
        values = np.array(list(chain.from_iterable(fields)), dtype=np.int64)
    except (ValueError, OverflowError):
        return False
    if (values < 0).any():
        return False
    counts = Counter(map(len, fields))
    long_lines = sum(n for size, n in counts.items() if size >= 4)
    return 2 * long_lines >= len(fields) and 2 * counts.most_common(1)[0][1] < len(fields)


def _recbole_files(folder: Path) -> dict[str, Path] | None:
    trains = sorted(folder.glob("*.train.inter"))
    if (folder / "train.txt").exists() or not trains:
        return None
    if len(trains) > 1:
        names = ", ".join(p.name for p in trains)
        raise DataValidationError(f"{folder}: several RecBole train files ({names}); keep one")
    name = trains[0].name[: -len(".train.inter")]
    files = {}
    for role, suffixes in RECBOLE_SUFFIXES.items():
        for suffix in suffixes:
            path = folder / f"{name}.{suffix}.inter"
            if path.is_file() and path not in files.values():
                files[role] = path
                break
    return files


def _split_metadata(folder: Path) -> object:
    """The parsed ``folder/prepare.json`` (any JSON value), or None when there is none.

    Raises:
        DataValidationError: the file exists but cannot be read or parsed.
    """
    path = folder / METADATA_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataValidationError(f"{path}: unreadable split metadata ({exc})") from exc


def timestamp_unit(folder: Path) -> str | None:
    """The unit of the pair files' third column when ``folder/prepare.json`` declares it a
    timestamp (module docstring), else None (no metadata, an older ``prepare.json`` without
    ``split_format``, or a declared ``user item`` format).

    Raises:
        DataValidationError: unreadable ``prepare.json``, or a ``split_format`` entry with
            unknown columns or unit.
    """
    path = folder / METADATA_FILE
    meta = _split_metadata(folder)
    fmt = meta.get("split_format") if isinstance(meta, dict) else None
    if fmt is None:
        return None
    columns = fmt.get("columns") if isinstance(fmt, dict) else None
    if columns not in SPLIT_COLUMNS:
        choices = " or ".join(json.dumps(c) for c in SPLIT_COLUMNS)
        raise DataValidationError(
            f"{path}: split_format.columns must be {choices}, got {json.dumps(columns)}"
        )
    if len(columns) == 2:
        return None
    unit = fmt.get("timestamp_unit")
    if unit not in TIMESTAMP_UNITS:
        raise DataValidationError(
            f"{path}: split_format.timestamp_unit must be one of {', '.join(TIMESTAMP_UNITS)} "
            f"(since the Unix epoch), got {json.dumps(unit)}"
        )
    return unit


def popularity_exponent(folder: Path) -> float | None:
    """The exponent of the popularity-shift split that ``oodrec prepare`` built in ``folder``
    (its OOD test drew items with weight ``popularity ** -exponent``), read from
    ``prepare.json``; None without metadata or for another protocol.

    Raises:
        DataValidationError: unreadable ``prepare.json``, or a popularity split whose exponent is
            not a finite number >= 0.
    """
    path = folder / METADATA_FILE
    meta = _split_metadata(folder)
    if not isinstance(meta, dict) or meta.get("protocol") != "popularity":
        return None
    split = (
        (meta.get("options") or {}).get("split") if isinstance(meta.get("options"), dict) else None
    )
    value = split.get("exponent") if isinstance(split, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e6:
        raise DataValidationError(
            f"{path}: options.split.exponent must be a number >= 0, got {json.dumps(value)}"
        )
    return float(value)


def find_layout(folder: Path) -> DirectoryLayout:
    """Decide the layout of a dataset directory and find its role files (module docstring).

    Raises:
        DataValidationError: no train or OOD-test file, a bad ``layout.txt`` or
            ``prepare.json``, or timestamps declared for adjacency lists.
    """
    found = _find_layout(folder)
    unit = None if found.layout == "recbole" else timestamp_unit(folder)
    if unit is not None:
        if found.layout != "pairs":
            raise DataValidationError(
                f"{folder / METADATA_FILE}: declares a timestamp column, but the split files "
                f"are {found.layout} lists ({found.reason}), which have no columns"
            )
        found = DirectoryLayout(found.layout, found.files, found.reason, unit)
    times = f"; third column: timestamps in {TIMESTAMP_UNITS[unit]}" if unit else ""
    logger.info("%s: %s layout (%s)%s", folder, found.layout, found.reason, times)
    return found


def _find_layout(folder: Path) -> DirectoryLayout:
    files = _recbole_files(folder)
    if files is not None:
        if "ood_test" not in files:
            raise DataValidationError(
                f"{folder}: RecBole split {files['train'].name} has no .test.inter or "
                ".test_ood.inter file (needed for ood_test)"
            )
        return DirectoryLayout("recbole", files, f"RecBole benchmark files {files['train'].name}")
    files = {}
    for role, candidates in ROLE_FILES.items():
        for cand in candidates:
            if (folder / cand).is_file():
                files[role] = folder / cand
                break
    for role in ("train", "ood_test"):
        if role not in files:
            raise DataValidationError(
                f"{folder}: no {' / '.join(ROLE_FILES[role])} file (needed for {role})"
            )
    marker = folder / LAYOUT_FILE
    if marker.is_file():
        layout = marker.read_text(encoding="utf-8-sig", errors="replace").strip().lower()
        if layout not in ("pairs", "adjacency"):
            raise DataValidationError(
                f"{marker}: expected `pairs` or `adjacency`, got {layout[:40]!r}"
            )
        return DirectoryLayout(layout, files, f"named by {LAYOUT_FILE}")
    if looks_like_adjacency(files["train"]):
        return DirectoryLayout("adjacency", files, "train.txt holds adjacency lists")
    return DirectoryLayout("pairs", files, "default")


def _encode(tokens: np.ndarray, vocab: np.ndarray) -> np.ndarray:
    """Ids of ``tokens`` in ``vocab`` (sorted); unknown tokens get ids from ``len(vocab)`` on."""
    pos = np.searchsorted(vocab, tokens).clip(max=vocab.size - 1)
    known = vocab[pos] == tokens
    ids = pos.astype(np.int64)
    if not known.all():
        _, inverse = np.unique(tokens[~known], return_inverse=True)
        ids[~known] = vocab.size + inverse.reshape(-1)
    return ids


def read_recbole_split(files: dict[str, Path]) -> Parts:
    """Read RecBole benchmark files and map their tokens to ids shared by every role.

    Users and items are numbered in sorted token order over the train file; tokens seen only in
    another file get larger ids (the loader then drops and counts their pairs as unseen).
    Every row is an interaction (rating and timestamp columns are ignored); repeated pairs are
    removed and counted.

    Returns:
        role -> ``(users [N], items [N], None, report)`` (no times).
    """
    from oodrec.data.raw import read_recbole_inter

    raw = {role: read_recbole_inter(path) for role, path in files.items()}
    user_vocab = np.unique(raw["train"].users)
    item_vocab = np.unique(raw["train"].items)
    parts: Parts = {}
    for role, log in raw.items():
        report = FileReport(path=str(files[role]), lines=len(log), layout="recbole")
        users, items, report.duplicates_removed = dedupe(
            _encode(log.users, user_vocab), _encode(log.items, item_vocab)
        )
        report.kept = int(users.size)
        parts[role] = (users, items, None, report)
    return parts


def read_layout(found: DirectoryLayout, on_bad_lines: str) -> Parts:
    """Read every role file of a directory in its layout.

    Args:
        found: the result of ``find_layout``.
        on_bad_lines: ``error`` or ``skip`` for malformed lines of ``.txt`` files (RecBole
            files are always strict).

    Returns:
        role -> ``(users [N], items [N], times [N] | None, report)``; ``times`` (int64, in
        ``found.timestamp_unit``) only where the split metadata declares timestamps.
    """
    if found.layout == "recbole":
        return read_recbole_split(found.files)
    if found.layout == "adjacency":
        out: Parts = {}
        for role, path in found.files.items():
            users, items, report = read_adjacency(path, on_bad_lines)
            out[role] = (users, items, None, report)
        return out
    timed = found.timestamp_unit is not None
    return {role: read_pairs(path, on_bad_lines, timed) for role, path in found.files.items()}
