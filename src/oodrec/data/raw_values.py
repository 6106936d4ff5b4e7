"""Vectorised conversion and validation of raw column values (ids, numbers, timestamps) in NumPy.

Each function converts a whole column with one NumPy call; only when that fails does it look for
the first offending value, so that the ``DataValidationError`` can name file, row, column and value.
These functions are the reference semantics of every reader: the pyarrow fast path
(``raw_arrow``) hands a block to them whenever its own conversion fails or finds a bad value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oodrec.errors import DataValidationError

TIMESTAMP_HINT = "Unix seconds or an ISO 8601 date such as 2019-05-01 or 2019-05-01 12:30:00"


@dataclass(frozen=True)
class Location:
    """Locates row ``local + 1`` of a chunk in messages: file, row and (when known) line."""

    path: Path
    row_base: int = 0
    line_of: Callable[[int], int] | None = None

    def at(self, column: str, local: int) -> str:
        row = self.row_base + local + 1
        line = f" (line {self.line_of(row)})" if self.line_of is not None else ""
        return f"{self.path}, row {row}{line}, column {column!r}"


def convert_columns(
    columns: dict[str, Sequence],
    names: dict[str, str],
    where: Location,
    allow_missing_timestamp: bool,
) -> dict[str, np.ndarray]:
    """Convert raw column values (``role -> values``) of one block into validated arrays.

    Args:
        columns: ``user``, ``item`` and optionally ``rating`` and ``timestamp`` values.
        names: ``role -> column name`` shown in messages.
        where: locates the block's rows in messages.
        allow_missing_timestamp: empty timestamps become NaN instead of raising.

    Returns:
        ``user``, ``item`` ([N] str), ``rating`` and ``timestamp`` ([N] float64; NaN where the
        role is absent).

    Raises:
        DataValidationError: the first bad value, checked in the order user, item, rating,
            timestamp.
    """
    n = len(columns["user"])
    out = {
        "user": parse_ids(columns["user"], where, names["user"]),
        "item": parse_ids(columns["item"], where, names["item"]),
        "rating": np.full(n, np.nan),
        "timestamp": np.full(n, np.nan),
    }
    if "rating" in columns:
        out["rating"] = parse_floats(columns["rating"], where, names["rating"], "rating")
    if "timestamp" in columns:
        out["timestamp"] = parse_timestamps(
            columns["timestamp"], where, names["timestamp"], allow_missing_timestamp
        )
    return out


def _first(bad: np.ndarray) -> int | None:
    idx = np.flatnonzero(bad)
    return int(idx[0]) if idx.size else None


def _show(value: object) -> str:
    """``repr`` of a value as the user wrote it (NumPy scalars unwrapped; nulls as missing)."""
    value = value.item() if isinstance(value, np.generic) else value
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "(missing)"
    return repr(value)


def parse_ids(values: Sequence, where: Location, column: str) -> np.ndarray:
    """Validate a column of user or item tokens.

    Args:
        values: the raw tokens (strings, or numbers / None from JSON or Parquet).
        where: locates the values in messages.
        column: the column name shown in messages.

    Returns:
        The tokens as strings. Shape [N] str.

    Raises:
        DataValidationError: an empty or null token.
    """
    arr = np.asarray(values)
    null = np.equal(arr, None) if arr.dtype == object else np.zeros(arr.shape, dtype=bool)
    arr = arr.astype(str)
    i = _first(null | (arr == ""))
    if i is not None:
        raise DataValidationError(f"{where.at(column, i)}: empty {column} value")
    return arr


def _to_float(arr: np.ndarray) -> np.ndarray | None:
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError):
        return None


def _float_of(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def parse_floats(values: Sequence, where: Location, column: str, what: str) -> np.ndarray:
    """Validate a numeric column (ratings, watch ratios).

    Args:
        values: numbers or their text.
        where: locates the values in messages.
        column: the column name shown in messages.
        what: what the values are (``rating``), shown in messages.

    Returns:
        The values. Shape [N] float64, all finite.

    Raises:
        DataValidationError: a non-numeric, empty, NaN or infinite value.
    """
    arr = np.asarray(values)
    out = _to_float(arr)
    if out is None:  # locate the offending value (error path only)
        i = next(k for k, v in enumerate(arr.tolist()) if _float_of(v) is None)
        raise DataValidationError(f"{where.at(column, i)}: non-numeric {what} {_show(arr[i])}")
    i = _first(~np.isfinite(out))
    if i is not None:
        raise DataValidationError(f"{where.at(column, i)}: non-numeric {what} {_show(arr[i])}")
    return out


def parse_timestamps(
    values: Sequence, where: Location, column: str, allow_missing: bool = False
) -> np.ndarray:
    """Validate a timestamp column: Unix seconds, ISO 8601 strings (``2019-05-01``,
    ``2019-05-01 12:30:00.250``) or ``datetime64`` values.

    The format is found for the whole column at once (numbers first, then dates); only a column
    mixing both formats, or holding a bad value, is parsed value by value.

    Args:
        values: the raw values.
        where: locates the values in messages.
        column: the column name shown in messages.
        allow_missing: empty / NaN / NaT values become NaN instead of raising.

    Returns:
        Seconds since the Unix epoch. Shape [N] float64 (NaN only where missing is allowed).

    Raises:
        DataValidationError: an unparseable, infinite or (unless allowed) missing value.
    """
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        missing = np.isnat(arr)
        out = np.where(missing, np.nan, arr.astype("datetime64[ms]").astype(np.int64) / 1000.0)
    elif arr.dtype.kind in "iuf":
        out = arr.astype(np.float64)
        missing = np.isnan(out)
    else:
        arr = arr.astype(str)
        missing = (arr == "") | (np.char.lower(arr) == "nan")
        out = np.full(arr.shape, np.nan)
        present = arr[~missing]
        numeric = _to_float(present)
        if numeric is None and present.size:
            try:
                dates = present.astype("datetime64[ms]")
                numeric = np.where(np.isnat(dates), np.inf, dates.astype(np.int64) / 1000.0)
            except ValueError:
                numeric = None
        if numeric is None:
            numeric = np.full(present.shape, np.inf)
            numeric[:] = [_timestamp_of(v) for v in present.tolist()]  # mixed formats or bad
        out[~missing] = numeric
    bad = np.isinf(out) if allow_missing else missing | np.isinf(out)
    i = _first(bad)
    if i is not None:
        shown = "(empty)" if missing[i] else _show(arr[i])
        raise DataValidationError(
            f"{where.at(column, i)}: bad timestamp {shown} (expected {TIMESTAMP_HINT})"
        )
    return out


def _timestamp_of(value: str) -> float:
    """One timestamp, ``inf`` when unparseable (used only to locate a bad value)."""
    num = _float_of(value)
    if num is not None:
        return num
    try:
        date = np.datetime64(value.strip(), "ms")
    except ValueError:
        return np.inf
    return np.inf if np.isnat(date) else float(date.astype(np.int64)) / 1000.0
