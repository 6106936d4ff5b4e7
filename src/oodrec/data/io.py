"""Strict reading of space-separated interaction files.

Two line layouts: **pairs** (``user item [value]``, one interaction per line; the default) and
**adjacency lists** (``user item item ...``, one user per line; the LightGCN / SELFRec layout).
``oodrec.data.layouts`` decides which one a dataset directory uses.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from oodrec.errors import DataValidationError

logger = logging.getLogger(__name__)


@dataclass
class FileReport:
    """What reading one file found and did. Every number goes into the run record."""

    path: str
    lines: int = 0
    kept: int = 0
    columns: int = 0
    skipped_bad_lines: int = 0
    bad_line_examples: list[str] = field(default_factory=list)
    duplicates_removed: int = 0
    layout: str = "pairs"
    """``pairs``, ``adjacency`` or ``recbole`` (see ``oodrec.data.layouts``)."""


def _show(line: bytes, limit: int = 60) -> str:
    text = line.decode("utf-8", errors="replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def read_interactions(
    path: str | Path, on_bad_lines: str = "error"
) -> tuple[np.ndarray, np.ndarray, FileReport]:
    """Read ``user item`` or ``user item value`` lines into two int64 arrays.

    The file's column count is the most common field count (2 or 3). A line with another field
    count, or a non-integer or negative id, is malformed: with ``on_bad_lines="error"`` it raises
    ``DataValidationError`` naming file, 1-based line number and content; with ``"skip"`` it is
    skipped and counted in the report. Duplicate ``(user, item)`` pairs are removed (first kept)
    and counted.

    Args:
        path: the file.
        on_bad_lines: ``"error"`` or ``"skip"``.

    Returns:
        ``(users [N], items [N], report)`` in file order, duplicates removed.

    Raises:
        DataValidationError: missing or empty file, or a malformed line in strict mode.
    """
    path = Path(path)
    if on_bad_lines not in ("error", "skip"):
        raise ValueError(f"on_bad_lines must be 'error' or 'skip', got {on_bad_lines!r}")
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")
    lines = _read_lines(path)
    report = FileReport(path=str(path), lines=len(lines))
    fields = [line.split() for line in lines]
    counts = np.fromiter((len(f) for f in fields), dtype=np.int64, count=len(fields))
    usable = counts[(counts == 2) | (counts == 3)]
    hint = ""
    if (counts > 3).any():
        hint = (
            " (for an adjacency list, `user item item ...` per line, put a file layout.txt "
            "holding `adjacency` next to it)"
        )
    if usable.size == 0:
        raise DataValidationError(
            f"{path}, line 1: expected 2 or 3 space-separated fields (user item [value]){hint}, "
            f"got {_show(lines[0])}"
        )
    columns = Counter(usable.tolist()).most_common(1)[0][0]
    report.columns = columns
    bad = counts != columns
    # Integer parsing: vectorised over the well-formed lines; a failure falls back to finding
    # the first offending line so that the message can name it.
    good_idx = np.flatnonzero(~bad)
    ids = np.empty((good_idx.size, 2), dtype=np.int64)
    try:
        flat = [tok for i in good_idx for tok in fields[i][:2]]
        ids[:] = np.array(flat, dtype=np.int64).reshape(-1, 2)
        neg = np.flatnonzero((ids < 0).any(axis=1))
        if neg.size:
            raise ValueError
    except ValueError:
        ok = np.ones(good_idx.size, dtype=bool)
        for pos, i in enumerate(good_idx):
            try:
                u, it = int(fields[i][0]), int(fields[i][1])
                if u < 0 or it < 0:
                    raise ValueError
                ids[pos] = (u, it)
            except ValueError:
                ok[pos] = False
        bad[good_idx[~ok]] = True
        ids = ids[ok]
        good_idx = good_idx[ok]
    bad_idx = np.flatnonzero(bad)
    if bad_idx.size:
        expected = (
            f"{columns} space-separated fields with non-negative integer user and item ids{hint}"
        )
        _bad_lines(path, lines, bad_idx, expected, on_bad_lines, report)
    return _finish(path, ids[:, 0], ids[:, 1], report)


def _read_lines(path: Path) -> list[bytes]:
    """The lines of a file without their newlines (a final newline adds no line)."""
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1].strip() == b"":
        lines.pop()  # final newline
    if not any(line.strip() for line in lines):
        raise DataValidationError(f"{path}: file is empty (no interactions)")
    return lines


def _bad_lines(
    path: Path,
    lines: list[bytes],
    bad_idx: np.ndarray,
    expected: str,
    on_bad_lines: str,
    report: FileReport,
) -> None:
    """Raise on the first malformed line, or count and log them (``on_bad_lines="skip"``)."""
    first = int(bad_idx[0])
    if on_bad_lines == "error":
        raise DataValidationError(
            f"{path}, line {first + 1}: malformed line {_show(lines[first])}: expected "
            f"{expected}. Use --on-bad-lines skip to skip such lines ({bad_idx.size} in this "
            "file)."
        )
    report.skipped_bad_lines = int(bad_idx.size)
    report.bad_line_examples = [f"line {i + 1}: {_show(lines[i])}" for i in bad_idx[:5].tolist()]
    logger.warning("%s: skipped %d malformed line(s)", path, bad_idx.size)


def _finish(
    path: Path, users: np.ndarray, items: np.ndarray, report: FileReport
) -> tuple[np.ndarray, np.ndarray, FileReport]:
    users, items, dup = dedupe(users, items)
    report.duplicates_removed = dup
    report.kept = int(users.size)
    if report.kept == 0:
        raise DataValidationError(f"{path}: no well-formed interaction lines")
    return users, items, report


def _non_negative_ints(tokens: list[bytes]) -> np.ndarray | None:
    """The tokens as int64, or None if one is not a non-negative integer."""
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        return None
    return None if (values < 0).any() else values


def read_adjacency(
    path: str | Path, on_bad_lines: str = "error"
) -> tuple[np.ndarray, np.ndarray, FileReport]:
    """Read an adjacency-list file: ``user item item ...`` per line (a user alone on its line
    has no interaction in this file).

    A line that is empty or holds a token that is not a non-negative integer is malformed:
    with ``on_bad_lines="error"`` it raises ``DataValidationError`` naming file, 1-based line
    number and content; with ``"skip"`` it is skipped and counted. Repeated ``(user, item)``
    pairs are removed (first kept) and counted.

    Args:
        path: the file.
        on_bad_lines: ``"error"`` or ``"skip"``.

    Returns:
        ``(users [N], items [N], report)`` in file order, duplicates removed.

    Raises:
        DataValidationError: missing or empty file, or a malformed line in strict mode.
    """
    path = Path(path)
    if on_bad_lines not in ("error", "skip"):
        raise ValueError(f"on_bad_lines must be 'error' or 'skip', got {on_bad_lines!r}")
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")
    lines = _read_lines(path)
    report = FileReport(path=str(path), lines=len(lines), layout="adjacency")
    fields = [line.split() for line in lines]
    bad = np.array([not f for f in fields], dtype=bool)
    values = _non_negative_ints(list(chain.from_iterable(fields)))
    if values is None:  # error path: find the offending lines
        bad |= np.array([_non_negative_ints(f) is None for f in fields], dtype=bool)
    bad_idx = np.flatnonzero(bad)
    if bad_idx.size:
        expected = "a user id followed by item ids (non-negative integers)"
        _bad_lines(path, lines, bad_idx, expected, on_bad_lines, report)
        good = np.flatnonzero(~bad).tolist()
        values = np.array(list(chain.from_iterable(fields[i] for i in good)), dtype=np.int64)
        fields = [fields[i] for i in good]
    counts = np.fromiter(map(len, fields), dtype=np.int64, count=len(fields))  # [L]
    starts = np.cumsum(counts) - counts  # first token (the user) of each line
    is_item = np.ones(values.size, dtype=bool)
    is_item[starts] = False
    users = np.repeat(values[starts], counts)[is_item]
    return _finish(path, users, values[is_item], report)


def dedupe(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Remove repeated ``(user, item)`` pairs, keeping first occurrences in order.

    Returns:
        ``(users, items, number_removed)``.
    """
    key = users.astype(np.int64) * (int(items.max(initial=0)) + 1) + items
    _, first = np.unique(key, return_index=True)
    if first.size == users.size:
        return users, items, 0
    first.sort()
    return users[first], items[first], int(users.size - first.size)
