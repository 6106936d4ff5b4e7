"""Strict reading of space-separated interaction files.

Two line layouts: **pairs** (``user item [value]``, one interaction per line; the default) and
**adjacency lists** (``user item item ...``, one user per line; the LightGCN / SELFRec layout).
``oodrec.data.layouts`` decides which one a dataset directory uses. The third column of a pair
file is a value and ignored, unless the directory's split metadata declares it a timestamp
(``read_pairs(..., timestamps=True)``; ``oodrec prepare`` writes such files).

What every reader accepts and refuses, before any work starts:

* a UTF-8 byte-order mark at the start of the file is ignored (UTF-16 text is an error);
* blank lines at the end of the file are ignored; a blank line before the last interaction is a
  bad line (an error naming it, or skipped and counted with ``on_bad_lines="skip"``);
* an id above ``MAX_ID`` (2**31 - 1) is refused with an error naming file, line and id: models
  keep one embedding row per id from 0 to the largest one, so such an id alone would ask for a
  table of billions of rows (with ``on_bad_lines="skip"`` its line is skipped and counted);
* an id is written in plain digits: ``+3``, ``004``, ``1_0`` or ``-0`` (which Python's ``int``
  reads as 3, 4, 10 and 0) make a bad line, so an id never silently means another one;
* a bad line's message says what is wrong with it: its field count against the file's, the
  token that is no id, or bytes that are not UTF-8 text.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from oodrec.errors import DataValidationError

logger = logging.getLogger(__name__)

MAX_ID = 2**31 - 1
"""The largest user or item id a split file may hold (ids index embedding tables)."""
EMBEDDING_DIM = 64
"""Embedding size used to estimate table sizes in messages (``model.emb_dim``'s default)."""
BYTES_PER_VALUE = 4
"""float32."""
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def human_bytes(n: float) -> str:
    """``1.5 GB``-style size (powers of 1000)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def table_bytes(rows: int) -> int:
    """Bytes of one float32 embedding table of ``rows`` rows of ``EMBEDDING_DIM`` values."""
    return int(rows) * EMBEDDING_DIM * BYTES_PER_VALUE


def too_large_id_message(where: str, role: str, value: int) -> str:
    """The error for an id above ``MAX_ID``."""
    return (
        f"{where}: {role} id {value} is too large: ids must be at most {MAX_ID:,} (2**31 - 1), "
        f"because models keep one embedding row per id from 0 to the largest id, and this id "
        f"alone would make a table of {value + 1:,} rows x {EMBEDDING_DIM} dims x "
        f"{BYTES_PER_VALUE} bytes = {human_bytes(table_bytes(value + 1))}. Renumber the ids "
        "to 0..N-1 (`oodrec prepare` does so)"
    )


@dataclass
class FileReport:
    """What reading one file found and did. Every number goes into the run record."""

    path: str
    lines: int = 0
    kept: int = 0
    columns: int = 0
    skipped_bad_lines: int = 0
    """Lines skipped with ``on_bad_lines="skip"``: malformed, blank (before the last
    interaction) or holding an id above ``MAX_ID``."""
    skipped_blank_lines: int = 0
    """How many of ``skipped_bad_lines`` were blank."""
    skipped_large_ids: int = 0
    """How many of ``skipped_bad_lines`` held an id above ``MAX_ID``."""
    bad_line_examples: list[str] = field(default_factory=list)
    duplicates_removed: int = 0
    layout: str = "pairs"
    """``pairs``, ``adjacency`` or ``recbole`` (see ``oodrec.data.layouts``)."""


def _show(line: bytes, limit: int = 60) -> str:
    text = line.decode("utf-8", errors="replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _int_or_none(token: bytes) -> int | None:
    try:
        return int(token)
    except ValueError:
        return None


def _plain(token: bytes) -> bool:
    """Whether ``token`` is a non-negative integer in plain digits (no sign, no leading zero,
    no ``_``): the only spelling of an id."""
    return token.isdigit() and (token == b"0" or not token.startswith(b"0"))


_POW10 = 10 ** np.arange(1, 19, dtype=np.int64)


def _all_plain(tokens: list[bytes], values: np.ndarray) -> bool:
    """Whether every token is its parsed non-negative value in plain digits: any other spelling
    (``+3``, ``004``, ``1_0``) is longer than the value's digits.

    Shapes:
        tokens: [N] (bytes), values: [N] int64 >= 0.
    """
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    digits = 1 + np.searchsorted(_POW10, values, side="right")
    return bool((lengths == digits).all())


def _token_problem(token: bytes, what: str) -> str | None:
    """Why ``token`` is not a valid ``what`` (``user id``, ``item id``), or None."""
    value = _int_or_none(token)
    text = token.decode("utf-8", errors="replace")
    if value is None or value < 0:
        return f"{what} {text!r} is not a non-negative integer"
    if not _plain(token):
        return (
            f"{what} {text!r} is not written in plain digits (no sign, leading zero or '_'); "
            f"it would read as {value}"
        )
    return None


def _encoding_problem(line: bytes) -> str | None:
    """``not UTF-8 text (byte 0xff at column 3)`` for a line that does not decode, else None."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte 0x{line[exc.start]:02x} at column {exc.start + 1})"
    return None


def _open_split(
    path: str | Path, on_bad_lines: str, **report_fields: str
) -> tuple[Path, list, FileReport]:
    """Check the arguments, read the lines of a split file and start its report (the shared
    prologue of the pair and adjacency-list readers)."""
    path = Path(path)
    if on_bad_lines not in ("error", "skip"):
        raise ValueError(f"on_bad_lines must be 'error' or 'skip', got {on_bad_lines!r}")
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")
    lines = _read_lines(path)
    return path, lines, FileReport(path=str(path), lines=len(lines), **report_fields)


def read_interactions(
    path: str | Path, on_bad_lines: str = "error"
) -> tuple[np.ndarray, np.ndarray, FileReport]:
    """Read ``user item`` or ``user item value`` lines into two int64 arrays (a third column is
    ignored; see ``read_pairs`` for the rules and for timestamps).

    Returns:
        ``(users [N], items [N], report)`` in file order, duplicates removed.

    Raises:
        DataValidationError: missing or empty file, or a malformed line in strict mode.
    """
    users, items, _, report = read_pairs(path, on_bad_lines)
    return users, items, report


def read_pairs(
    path: str | Path, on_bad_lines: str = "error", timestamps: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, FileReport]:
    """Read ``user item`` or ``user item value|timestamp`` lines.

    The file's column count is the most common field count (2 or 3). A line with another field
    count, a non-integer or negative id, an id above ``MAX_ID``, a non-integer timestamp or a
    blank line before the last interaction is bad: with ``on_bad_lines="error"`` it raises
    ``DataValidationError`` naming file, 1-based line number and content; with ``"skip"`` it is
    skipped and counted in the report. A leading UTF-8 byte-order mark and blank lines at the
    end are ignored. Duplicate ``(user, item)`` pairs are removed (first in file order kept,
    with its timestamp) and counted.

    Args:
        path: the file.
        on_bad_lines: ``"error"`` or ``"skip"``.
        timestamps: the third column is an integer timestamp (the directory's split metadata
            says so, ``oodrec.data.layouts.timestamp_unit``): the file must have 3 columns.
            Without it a third column is a value and ignored (the shipped DRGO files hold a
            constant ``1`` there, which is not a time).

    Returns:
        ``(users [N], items [N], times [N] | None, report)`` in file order, duplicates removed;
        ``times`` (int64) is None unless ``timestamps``.

    Raises:
        DataValidationError: missing or empty file, a malformed line in strict mode, or a file
            without a third column when ``timestamps`` is set.
    """
    path, lines, report = _open_split(path, on_bad_lines)
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
    if timestamps and columns != 3:
        raise DataValidationError(
            f"{path}: the dataset's split metadata (prepare.json) declares a third column "
            f"holding timestamps (`user item timestamp`), but the file has {columns} columns "
            f"(line 1: {_show(lines[0])}); rerun `oodrec prepare`, or remove split_format "
            "from its prepare.json"
        )
    width = 3 if timestamps else 2
    bad = counts != columns
    # Integer parsing: vectorised over the well-formed lines; a failure falls back to finding
    # the first offending line so that the message can name it.
    good_idx = np.flatnonzero(~bad)
    values = np.empty((good_idx.size, width), dtype=np.int64)  # [N, 2 or 3]
    large: dict[int, tuple[str, int]] = {}
    try:
        flat = [tok for i in good_idx for tok in fields[i][:width]]
        values[:] = np.array(flat, dtype=np.int64).reshape(-1, width)
        if (values[:, :2] < 0).any() or (values[:, :2] > MAX_ID).any():
            raise ValueError
        ids = flat if width == 2 else [t for k, t in enumerate(flat) if k % 3 != 2]
        if not _all_plain(ids, values[:, :2].reshape(-1)):
            raise ValueError
    except (ValueError, OverflowError):
        ok = np.ones(good_idx.size, dtype=bool)
        for pos, i in enumerate(good_idx):
            row = [_int_or_none(tok) for tok in fields[i][:width]]
            u, it = row[0], row[1]
            plain = _plain(fields[i][0]) and _plain(fields[i][1])
            if None in row or u < 0 or it < 0 or not _fits_int64(row[2:]):
                ok[pos] = False
            elif not plain and u <= MAX_ID and it <= MAX_ID:
                ok[pos] = False
            elif u > MAX_ID or it > MAX_ID:
                ok[pos] = False
                large[int(i)] = ("user", u) if u > MAX_ID else ("item", it)
            else:
                values[pos] = row
        bad[good_idx[~ok]] = True
        values = values[ok]
        good_idx = good_idx[ok]
    bad_idx = np.flatnonzero(bad)
    if bad_idx.size:
        names = "user item timestamp" if timestamps else "user item value"
        names = names if columns == 3 else "user item"

        def why(line: bytes) -> str:
            tokens = line.split()
            if len(tokens) != columns:
                return (
                    f"it has {len(tokens)} field(s), but the file's lines have {columns} "
                    f"({names}): every line needs the same number of fields{hint}"
                )
            for token, what in zip(tokens, ("user id", "item id")):
                problem = _token_problem(token, what)
                if problem:
                    return problem
            return f"timestamp {tokens[2].decode(errors='replace')!r} is not an integer"

        _bad_lines(path, lines, bad_idx, why, on_bad_lines, report, large)
    times = values[:, 2] if timestamps else None
    return _finish(path, values[:, 0], values[:, 1], report, times)


def _fits_int64(values: list[int | None]) -> bool:
    """Whether every value is an integer in the int64 range (timestamps)."""
    return all(v is not None and -(2**63) <= v < 2**63 for v in values)


def _read_lines(path: Path) -> list[bytes]:
    """The lines of a file without their newlines, without a leading UTF-8 byte-order mark and
    without the blank lines at its end.

    Raises:
        DataValidationError: an empty file, or UTF-16 text.
    """
    data = path.read_bytes()
    if data.startswith(UTF16_BOMS):
        raise DataValidationError(
            f"{path}, line 1: the file is UTF-16 text (it starts with a UTF-16 byte-order mark); "
            "save it as UTF-8 or ASCII"
        )
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    lines = data.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()  # the final newline and blank lines at the end
    if not lines:
        raise DataValidationError(f"{path}: file is empty (no interactions)")
    return lines


def _bad_lines(
    path: Path,
    lines: list[bytes],
    bad_idx: np.ndarray,
    why: Callable[[bytes], str],
    on_bad_lines: str,
    report: FileReport,
    large: dict[int, tuple[str, int]] | None = None,
) -> None:
    """Raise on the first bad line, or count and log them (``on_bad_lines="skip"``).

    Args:
        why: what is wrong with a (non-blank, UTF-8) bad line, for the message.
        large: line index -> ``(role, id)`` for the lines refused for an id above ``MAX_ID``.
    """
    large = large or {}
    first = int(bad_idx[0])
    blank = [i for i in bad_idx.tolist() if not lines[i].strip()]
    if on_bad_lines == "error":
        more = (
            f"Use --on-bad-lines skip to skip such lines ({bad_idx.size} bad line(s) in this file)."
        )
        where = f"{path}, line {first + 1}"
        if first in large:
            raise DataValidationError(f"{too_large_id_message(where, *large[first])}. {more}")
        if not lines[first].strip():
            raise DataValidationError(
                f"{where}: blank line before the last interaction (only blank lines at the end "
                f"of a file are ignored). {more}"
            )
        encoding = _encoding_problem(lines[first])
        if encoding is not None:
            raise DataValidationError(
                f"{where}: {encoding}: {_show(lines[first])}; save the file as UTF-8. {more}"
            )
        raise DataValidationError(
            f"{where}: malformed line {_show(lines[first])}: {why(lines[first])}. {more}"
        )
    report.skipped_bad_lines = int(bad_idx.size)
    report.skipped_blank_lines = len(blank)
    report.skipped_large_ids = len(large)
    report.bad_line_examples = [f"line {i + 1}: {_show(lines[i])}" for i in bad_idx[:5].tolist()]
    logger.warning(
        "%s: skipped %d bad line(s) (%d blank, %d with an id above %d)",
        path,
        bad_idx.size,
        len(blank),
        len(large),
        MAX_ID,
    )


def _finish(
    path: Path,
    users: np.ndarray,
    items: np.ndarray,
    report: FileReport,
    times: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, FileReport]:
    """Remove repeated pairs (``times`` stays aligned), count them and refuse an empty file."""
    first = first_occurrences(users, items)
    report.duplicates_removed = int(users.size - first.size)
    if report.duplicates_removed:
        users, items = users[first], items[first]
        times = None if times is None else times[first]
    report.kept = int(users.size)
    if report.kept == 0:
        raise DataValidationError(f"{path}: no well-formed interaction lines")
    return users, items, times, report


def _non_negative_ints(tokens: list[bytes]) -> np.ndarray | None:
    """The tokens as int64, or None if one is not an integer in ``0..MAX_ID``."""
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        return None
    if (values < 0).any() or (values > MAX_ID).any() or not _all_plain(tokens, values):
        return None
    return values


def _large_id(tokens: list[bytes]) -> tuple[str, int] | None:
    """``(role, id)`` of the first id above ``MAX_ID`` of an adjacency line of integers."""
    values = [_int_or_none(t) for t in tokens]
    if any(v is None or v < 0 for v in values):
        return None
    for k, v in enumerate(values):
        if v > MAX_ID:
            return ("user" if k == 0 else "item", v)
    return None


def read_adjacency(
    path: str | Path, on_bad_lines: str = "error"
) -> tuple[np.ndarray, np.ndarray, FileReport]:
    """Read an adjacency-list file: ``user item item ...`` per line (a user alone on its line
    has no interaction in this file).

    A blank line before the last line, or a line holding a token that is not an integer in
    ``0..MAX_ID``, is bad:
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
    path, lines, report = _open_split(path, on_bad_lines, layout="adjacency")
    fields = [line.split() for line in lines]
    bad = np.array([not f for f in fields], dtype=bool)
    values = _non_negative_ints(list(chain.from_iterable(fields)))
    large: dict[int, tuple[str, int]] = {}
    if values is None:  # error path: find the offending lines
        for i, f in enumerate(fields):
            if f and _non_negative_ints(f) is None:
                bad[i] = True
                found = _large_id(f)
                if found is not None:
                    large[i] = found
    bad_idx = np.flatnonzero(bad)
    if bad_idx.size:

        def why(line: bytes) -> str:
            for k, token in enumerate(line.split()):
                problem = _token_problem(token, "user id" if k == 0 else "item id")
                if problem:
                    return f"{problem} (expected a user id followed by item ids)"
            return "expected a user id followed by item ids (non-negative integers)"

        _bad_lines(path, lines, bad_idx, why, on_bad_lines, report, large)
        good = np.flatnonzero(~bad).tolist()
        values = np.array(list(chain.from_iterable(fields[i] for i in good)), dtype=np.int64)
        fields = [fields[i] for i in good]
    counts = np.fromiter(map(len, fields), dtype=np.int64, count=len(fields))  # [L]
    starts = np.cumsum(counts) - counts  # first token (the user) of each line
    is_item = np.ones(values.size, dtype=bool)
    is_item[starts] = False
    users = np.repeat(values[starts], counts)[is_item]
    users, items, _, report = _finish(path, users, values[is_item], report)
    return users, items, report


def first_occurrences(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of every ``(user, item)`` pair, in input order.

    Shapes:
        users, items: [N] -> [M] int64 ascending (``M == N`` without repeats).
    """
    key = users.astype(np.int64) * (int(items.max(initial=0)) + 1) + items
    _, first = np.unique(key, return_index=True)
    first.sort()
    return first


def dedupe(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Remove repeated ``(user, item)`` pairs, keeping first occurrences in order.

    Returns:
        ``(users, items, number_removed)``.
    """
    first = first_occurrences(users, items)
    if first.size == users.size:
        return users, items, 0
    return users[first], items[first], int(users.size - first.size)


def find_id_line(path: str | Path, role: str, value: int, layout: str = "pairs") -> int | None:
    """The 1-based line of ``path`` where ``role`` (``user`` / ``item``) id ``value`` first
    occurs, in the ``pairs`` or ``adjacency`` layout (error messages only; None if not found)."""
    for number, line in enumerate(_read_lines(Path(path)), start=1):
        tokens = line.split()
        if role == "user":
            tokens = tokens[:1]
        else:
            tokens = tokens[1:2] if layout == "pairs" else tokens[1:]
        if any(_int_or_none(t) == value for t in tokens):
            return number
    return None
