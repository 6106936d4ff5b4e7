"""Strict reading of space-separated interaction files (``user item [value]``)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
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
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1].strip() == b"":
        lines.pop()  # final newline
    report = FileReport(path=str(path), lines=len(lines))
    if not any(line.strip() for line in lines):
        raise DataValidationError(f"{path}: file is empty (no interactions)")

    fields = [line.split() for line in lines]
    counts = np.fromiter((len(f) for f in fields), dtype=np.int64, count=len(fields))
    usable = counts[(counts == 2) | (counts == 3)]
    if usable.size == 0:
        raise DataValidationError(
            f"{path}, line 1: expected 2 or 3 space-separated fields (user item [value]), "
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
        first = int(bad_idx[0])
        if on_bad_lines == "error":
            raise DataValidationError(
                f"{path}, line {first + 1}: malformed line {_show(lines[first])}: expected "
                f"{columns} space-separated fields with non-negative integer user and item ids. "
                f"Use --on-bad-lines skip to skip such lines ({bad_idx.size} in this file)."
            )
        report.skipped_bad_lines = int(bad_idx.size)
        report.bad_line_examples = [
            f"line {i + 1}: {_show(lines[i])}" for i in bad_idx[:5].tolist()
        ]
        logger.warning("%s: skipped %d malformed line(s)", path, bad_idx.size)
    users, items = ids[:, 0], ids[:, 1]
    users, items, dup = dedupe(users, items)
    report.duplicates_removed = dup
    report.kept = int(users.size)
    if report.kept == 0:
        raise DataValidationError(f"{path}: no well-formed interaction lines")
    return users, items, report


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
