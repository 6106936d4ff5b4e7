"""The slow, exact paths of the raw readers: Python's ``csv`` and ``json`` modules, row by row.

They are not the main readers any more (``raw_arrow`` is); they run only when the pyarrow fast
path fails or finds a bad value, to name the offending file, row, line, column and value:

* ``read_delimited_slow`` / ``read_json_lines_slow`` read a whole file. They run when pyarrow
  cannot parse the file at all (a ragged row, broken quoting, bytes that are not UTF-8, a JSON
  value of an unexpected type); they raise today's pointed error, or return the log when the file
  is valid but outside what pyarrow's strict parser accepts (e.g. a row with extra fields).
* ``json_block`` re-reads only the rows of one block of a JSON-lines file.
* ``csv_line_of`` / ``plain_line_of`` turn a data row into a file line (for messages only).

Rows are counted from 1 at the first data row; blank lines are skipped (as pyarrow does) and
count as neither rows nor errors.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from itertools import islice
from operator import itemgetter
from pathlib import Path

import numpy as np

from oodrec.data.raw_values import Location, convert_columns
from oodrec.errors import DataValidationError

Columns = dict[str, np.ndarray]


def open_text(path: Path):
    """Open a UTF-8 text file (optional BOM) for the ``csv`` module; a clear error if missing."""
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")
    return open(path, newline="", encoding="utf-8-sig")


def read_header(path: str | Path, delimiter: str) -> list[str]:
    """The first line of a delimited file as its header row, stripped.

    Raises:
        DataValidationError: missing or empty file, or a first line that is not UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")
    with open(path, "rb") as fh:
        first = fh.readline()
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"{path}, line 1: not UTF-8 text ({exc.reason})") from None
    header = next(csv.reader([text], delimiter=delimiter), None)
    if not header:
        raise DataValidationError(f"{path}: file is empty (no header row)")
    return [h.strip() for h in header]


def not_utf8(path: Path, exc: UnicodeDecodeError) -> DataValidationError:
    """The error for a file that is not UTF-8, naming the first undecodable line."""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as bad:
                return DataValidationError(
                    f"{path}, line {number}: not UTF-8 text ({bad.reason} at byte {bad.start})"
                )
    return DataValidationError(f"{path}: not UTF-8 text ({exc})")


def missing_columns(
    where: object, have: Sequence[str], wanted: Iterable[str], kind: str, label: str = "header"
) -> None:
    """Raise a ``DataValidationError`` listing the ``wanted`` names that ``have`` lacks."""
    missing = [name for name in wanted if name not in have]
    if missing:
        raise DataValidationError(
            f"{where}: missing column(s) {', '.join(map(repr, missing))} for {kind}; "
            f"the {label} has {', '.join(map(repr, have)) or 'nothing'}"
        )


def concat_columns(parts: Sequence[Columns]) -> Columns:
    """Concatenate converted blocks role by role."""
    return {role: np.concatenate([p[role] for p in parts]) for role in parts[0]}


# --------------------------------------------------------------------------- line numbers


def csv_line_of(path: Path, delimiter: str, row: int) -> int:
    """File line (1-based) on which data row ``row`` starts, with quoting (error path only)."""
    with open_text(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        previous, n = 0, -1  # n == 0 is the header
        for fields in reader:
            if fields or n < 0:
                n += 1
                if n == row:
                    return previous + 1
            previous = reader.line_num
    return previous + 1


def plain_line_of(path: Path, header_lines: int, row: int) -> int:
    """File line (1-based) of data row ``row`` in a delimited file without quote characters,
    where one line holds one row and empty lines are skipped (error path only).

    Args:
        path: the file.
        header_lines: lines before the first data row.
        row: the data row (1-based).
    """
    seen = number = 0
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if number > header_lines and line.rstrip(b"\r\n"):
                seen += 1
                if seen == row:
                    return number
    return number + 1


def first_irregular_row(path: Path, delimiter: str, num_fields: int) -> tuple[int, int, int] | None:
    """The first data row of a delimited file without quote characters whose field count is
    not ``num_fields`` (empty lines skipped; error path only).

    Returns:
        ``(row, line, fields)`` (1-based row and line), or None when every row is regular.
    """
    sep = delimiter.encode()
    row = 0
    with open(path, "rb") as fh:
        next(fh, None)  # header
        for number, line in enumerate(fh, start=2):
            text = line.rstrip(b"\r\n")
            if text:
                row += 1
                fields = text.count(sep) + 1
                if fields != num_fields:
                    return row, number, fields
    return None


# --------------------------------------------------------------------------- delimited text


def _picked_rows(
    path: Path, delimiter: str, getter: Callable, needed: int, rows: list[list[str]], base: int
) -> list[tuple]:
    try:
        return list(map(getter, rows))
    except IndexError:
        i = next(k for k, r in enumerate(rows) if len(r) < needed)
        line = csv_line_of(path, delimiter, base + i + 1)
        raise DataValidationError(
            f"{path}, row {base + i + 1} (line {line}): {len(rows[i])} field(s), the header "
            f"needs at least {needed}"
        ) from None


def read_delimited_slow(
    path: Path,
    header: list[str],
    names: dict[str, str],
    delimiter: str,
    allow_missing_timestamp: bool,
    chunk_rows: int,
) -> Columns:
    """Read a delimited file row by row with the ``csv`` module, in blocks of ``chunk_rows``.

    Args:
        path: the file (its header row is ``header``).
        header: the stripped header names.
        names: ``role -> column name``.
        delimiter: field separator.
        allow_missing_timestamp: empty timestamps become NaN.
        chunk_rows: rows per converted block.

    Returns:
        The converted columns (see ``convert_columns``).

    Raises:
        DataValidationError: a row with too few fields, broken quoting, bytes that are not UTF-8,
            a bad value, or no data rows.
    """
    roles = list(names)
    idx = [header.index(names[r]) for r in roles]
    getter = itemgetter(*idx)
    line_of = partial(csv_line_of, path, delimiter)
    chunks, base = [], 0
    with open_text(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        data = filter(None, reader)  # blank lines are skipped, as pyarrow does
        try:
            next(reader)  # the header
            while rows := list(islice(data, chunk_rows)):
                picked = _picked_rows(path, delimiter, getter, max(idx) + 1, rows, base)
                cols = dict(zip(roles, zip(*picked)))
                where = Location(path, base, line_of)
                chunks.append(convert_columns(cols, names, where, allow_missing_timestamp))
                base += len(rows)
        except csv.Error as exc:
            raise DataValidationError(f"{path}, line {reader.line_num}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise not_utf8(path, exc) from None
    if not chunks:
        raise DataValidationError(f"{path}: no data rows after the header")
    return concat_columns(chunks)


# --------------------------------------------------------------------------- JSON lines


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of the non-blank lines of a text file."""
    with open_text(path) as fh:
        try:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    yield number, line
        except UnicodeDecodeError as exc:
            raise not_utf8(path, exc) from None


def _json_objects(
    path: Path, numbered: list[tuple[int, str]], base: int, keys: Sequence[str], kind: str
) -> list[tuple]:
    """The ``keys`` of each line's JSON object; the first bad line raises with its location."""
    getter = itemgetter(*keys)
    try:
        return [getter(json.loads(line)) for _, line in numbered]
    except (json.JSONDecodeError, KeyError, TypeError):
        pass
    for k, (number, line) in enumerate(numbered):  # error path only: name the offending line
        where = f"{path}, row {base + k + 1} (line {number})"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataValidationError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DataValidationError(f"{where}: expected a JSON object, got {line.strip()[:60]!r}")
        missing_columns(where, list(obj), keys, kind, label="object")
    raise AssertionError("unreachable: a block failed but no line did")


def _json_convert(
    path: Path,
    numbered: list[tuple[int, str]],
    base: int,
    names: dict[str, str],
    kind: str,
    allow_missing_timestamp: bool,
) -> Columns:
    picked = _json_objects(path, numbered, base, list(names.values()), kind)
    cols = dict(zip(names, zip(*picked)))
    lines = [number for number, _ in numbered]
    where = Location(path, base, lambda row: lines[row - base - 1])
    return convert_columns(cols, names, where, allow_missing_timestamp)


def read_json_lines_slow(
    path: Path, names: dict[str, str], kind: str, allow_missing_timestamp: bool, chunk_rows: int
) -> Columns:
    """Read a JSON-lines file object by object with the ``json`` module.

    Returns:
        The converted columns (see ``convert_columns``).

    Raises:
        DataValidationError: invalid JSON, a line that is not an object, a missing key, a bad
            value, or an empty file.
    """
    chunks, base = [], 0
    lines = _numbered_lines(path)
    while numbered := list(islice(lines, chunk_rows)):
        chunks.append(_json_convert(path, numbered, base, names, kind, allow_missing_timestamp))
        base += len(numbered)
    if not chunks:
        raise DataValidationError(f"{path}: file is empty (no JSON objects)")
    return concat_columns(chunks)


def json_block(
    path: Path,
    names: dict[str, str],
    kind: str,
    allow_missing_timestamp: bool,
    start: int,
    num_rows: int,
) -> Columns:
    """Convert rows ``start .. start + num_rows - 1`` (0-based) of a JSON-lines file the slow way
    (the pyarrow path found a problem in them). Raises the pointed error, if any."""
    numbered = list(islice(_numbered_lines(path), start, start + num_rows))
    return _json_convert(path, numbered, start, names, kind, allow_missing_timestamp)
