"""The fast path of the raw readers: pyarrow parses (multi-threaded) and converts whole blocks.

Reading is split in two steps:

1. **Parse** with ``pyarrow.csv`` / ``pyarrow.json`` / ``pyarrow.parquet`` into a table of the
   mapped roles (``user``, ``item``, ``rating``, ``timestamp``). Id columns are read
   dictionary-encoded, so that a 12-million-row file becomes a few thousand distinct strings
   plus integer indices.
2. **Convert** the table in blocks of ``chunk_rows`` rows with vectorised pyarrow casts
   (``convert_table``). A block whose cast fails or that holds a bad value (an empty id, a
   non-finite rating, a missing timestamp) is handed to the exact NumPy / ``csv`` path of
   ``raw_values`` / ``raw_slow`` (``SlowBlock``), which raises the error that names file, row,
   line, column and value, or converts a value format pyarrow does not know (mixed date formats,
   ``" 5"``) the way the reference path does.

Where pyarrow cannot parse a file at all (a ragged row, broken quoting, bytes that are not UTF-8),
the whole-file slow reader of ``raw_slow`` takes over; it points at the offending row.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from oodrec.data import raw_slow
from oodrec.data.raw_values import Location, convert_columns
from oodrec.errors import DataValidationError

logger = logging.getLogger(__name__)

# Bytes per parse block. 16 MiB blocks read the 12.5M-row KuaiRec schema about 10% faster than
# pyarrow's 1 MiB default on 2 cores, and keep the per-block dictionaries few.
BLOCK_BYTES = 16 << 20
ID_TYPE = pa.dictionary(pa.int32(), pa.string())

Columns = dict[str, np.ndarray]
SlowBlock = Callable[[int, pa.Table], Columns]
"""``slow(first_row, block) -> columns``: the exact path for one block (0-based first row)."""


class _NeedsText(Exception):
    """A column read as numbers holds a bad value; the message needs the value's text."""


# --------------------------------------------------------------------------- block conversion


def _dictionary_ids(table: pa.Table) -> pa.Table:
    for role in ("user", "item"):
        col = table.column(role)
        if not pa.types.is_dictionary(col.type):
            table = table.set_column(
                table.schema.get_field_index(role), role, pc.dictionary_encode(col)
            )
    return table.unify_dictionaries()


def _vocabulary(col: pa.ChunkedArray) -> np.ndarray:
    """The distinct tokens of a unified dictionary column as strings. Shape [V] str."""
    if col.num_chunks == 0:
        return np.array([], dtype=str)
    return np.asarray(col.chunk(0).dictionary.to_numpy(zero_copy_only=False)).astype(str)


def _tokens(col: pa.ChunkedArray, vocab: np.ndarray, empty: np.ndarray, out: np.ndarray) -> bool:
    if col.null_count:
        return False
    idx = np.concatenate([c.indices.to_numpy() for c in col.chunks])  # [n] int32
    if empty.any() and empty[idx].any():
        return False
    if out.dtype == vocab.dtype:
        np.take(vocab, idx, out=out)  # no temporary: the output is the largest array here
    else:
        out[:] = np.take(vocab, idx)
    return True


def _numbers(col: pa.ChunkedArray) -> np.ndarray | None:
    """Float64 values (NaN for nulls); None where a text value is not a number pyarrow parses."""
    kind = col.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            col = pc.cast(col, pa.float64())
        except pa.ArrowInvalid:
            return None
    elif not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return None
    return np.asarray(col.to_numpy(), dtype=np.float64)


def _seconds(col: pa.ChunkedArray) -> np.ndarray | None:
    """Seconds since the epoch (NaN for nulls) of numbers, ISO 8601 text, dates or timestamps."""
    kind = col.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        stamps = pc.cast(col, pa.timestamp("ms", getattr(kind, "tz", None)), safe=False)
    else:
        values = _numbers(col)
        if values is not None or not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            return values
        try:
            stamps = pc.cast(col, pa.timestamp("ms"))
        except pa.ArrowInvalid:
            return None
    millis = pc.cast(stamps, pa.int64()).to_numpy(zero_copy_only=False)
    return np.asarray(millis, dtype=np.float64) / 1000.0


def _fast_block(
    block: pa.Table,
    vocab: dict[str, tuple[np.ndarray, np.ndarray]],
    allow_missing: bool,
    out: Columns,
) -> bool:
    """Convert one block with pyarrow casts into ``out`` (views of the block's rows); False at
    the first sign of a problem (``out`` is then overwritten by the exact path)."""
    for role in ("user", "item"):
        if not _tokens(block.column(role), *vocab[role], out[role]):
            return False
    if "rating" in block.column_names:
        ratings = _numbers(block.column("rating"))
        if ratings is None or not np.isfinite(ratings).all():
            return False
        out["rating"][:] = ratings
    if "timestamp" in block.column_names:
        stamps = _seconds(block.column("timestamp"))
        if stamps is None or np.isinf(stamps).any():
            return False
        if not allow_missing and np.isnan(stamps).any():
            return False
        out["timestamp"][:] = stamps
    return True


def convert_table(
    table: pa.Table, allow_missing_timestamp: bool, slow: SlowBlock, chunk_rows: int
) -> Columns:
    """Convert a parsed table of roles block by block (module docstring, step 2).

    Args:
        table: columns ``user``, ``item`` and optionally ``rating``, ``timestamp``.
        allow_missing_timestamp: nulls in ``timestamp`` become NaN instead of raising.
        slow: the exact path for a block that the fast conversion refuses.
        chunk_rows: rows per block.

    Returns:
        ``user``, ``item`` ([N] str), ``rating``, ``timestamp`` ([N] float64, NaN if absent).
    """
    encoded = _dictionary_ids(table)
    n = table.num_rows
    vocab, out = {}, {}
    for role in ("user", "item"):
        tokens = _vocabulary(encoded.column(role))
        vocab[role] = (tokens, tokens == "")
        out[role] = np.empty(n, dtype=tokens.dtype if tokens.size else "U1")
    for role in ("rating", "timestamp"):
        out[role] = np.full(n, np.nan) if role not in table.column_names else np.empty(n)
    for start in range(0, n, chunk_rows):
        rows = slice(start, start + chunk_rows)
        view = {role: arr[rows] for role, arr in out.items()}
        if _fast_block(encoded.slice(start, chunk_rows), vocab, allow_missing_timestamp, view):
            continue
        for role, values in slow(start, table.slice(start, chunk_rows)).items():
            if values.dtype.itemsize > out[role].dtype.itemsize:  # a wider token (defensive)
                out[role] = out[role].astype(values.dtype)
            out[role][rows] = values
    return out


# --------------------------------------------------------------------------- CSV / TSV


def has_quotes(path: Path) -> bool:
    """Whether the file holds a ``"`` anywhere (then values may span lines)."""
    with open(path, "rb") as fh:
        try:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return mm.find(b'"') != -1
        except ValueError:  # empty file
            return False


def _csv_table(
    path: Path,
    header: list[str],
    names: dict[str, str],
    delimiter: str,
    quoted: bool,
    types: dict[str, pa.DataType],
) -> pa.Table:
    """Parse the mapped columns of a delimited file; columns are named by role."""
    positional = [f"f{k}" for k in range(len(header))]
    column_of = {role: positional[header.index(name)] for role, name in names.items()}
    column_types: dict[str, pa.DataType] = {}
    for role, col in column_of.items():
        column_types.setdefault(col, types[role])
    table = pa_csv.read_csv(
        path,
        pa_csv.ReadOptions(column_names=positional, skip_rows=1, block_size=BLOCK_BYTES),
        pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=quoted),
        pa_csv.ConvertOptions(
            column_types=column_types,
            include_columns=list(column_types),
            null_values=[""],
            strings_can_be_null=True,
        ),
    )
    return pa.table({role: table.column(col) for role, col in column_of.items()})


def _text_block(
    path: Path, names: dict[str, str], line_of, allow_missing: bool, start: int, block: pa.Table
) -> Columns:
    cols = {}
    for role in names:
        col = block.column(role)
        if not (pa.types.is_string(col.type) or pa.types.is_dictionary(col.type)):
            raise _NeedsText
        cols[role] = pc.cast(col, pa.string()).fill_null("").to_numpy(zero_copy_only=False)
    return convert_columns(cols, names, Location(path, start, line_of), allow_missing)


def read_csv(
    path: Path,
    header: list[str],
    names: dict[str, str],
    delimiter: str,
    allow_missing_timestamp: bool,
    numeric_timestamp: bool,
    chunk_rows: int,
) -> Columns:
    """Read the mapped columns of a delimited file with a header row.

    Ratings (and timestamps when ``numeric_timestamp``) are parsed as numbers first. A bad
    value makes a second pass that reads every mapped column as text, so that the exact path can
    show the value as written; a file pyarrow cannot parse goes to ``raw_slow``.

    Args:
        path: the file.
        header: its stripped header names (already checked to hold every mapped column).
        names: ``role -> column name``.
        delimiter: field separator.
        allow_missing_timestamp: empty timestamps become NaN instead of raising.
        numeric_timestamp: the format declares the timestamp column numeric (KuaiRec, RecBole).
        chunk_rows: rows per converted block.

    Returns:
        The converted columns (see ``convert_table``).
    """
    quoted = has_quotes(path)
    if quoted:
        line_of = partial(raw_slow.csv_line_of, path, delimiter)
    else:
        line_of = partial(raw_slow.plain_line_of, path, 1)
    slow = partial(_text_block, path, names, line_of, allow_missing_timestamp)
    numeric = {"user": ID_TYPE, "item": ID_TYPE, "rating": pa.float64()}
    numeric["timestamp"] = pa.float64() if numeric_timestamp else pa.string()
    text = {"user": ID_TYPE, "item": ID_TYPE, "rating": pa.string(), "timestamp": pa.string()}
    for types in (numeric, text):
        try:
            table = _csv_table(path, header, names, delimiter, quoted, types)
        except pa.ArrowException as exc:
            logger.debug("%s: pyarrow could not read it (%s)", path, exc)
            continue
        if table.num_rows == 0:
            raise DataValidationError(f"{path}: no data rows after the header")
        try:
            return convert_table(table, allow_missing_timestamp, slow, chunk_rows)
        except _NeedsText:
            continue
    needed = max(header.index(name) for name in names.values()) + 1
    irregular = None if quoted else raw_slow.first_irregular_row(path, delimiter, len(header))
    if irregular is not None and irregular[2] < needed:
        row, line, fields = irregular
        raise DataValidationError(
            f"{path}, row {row} (line {line}): {fields} field(s), the header needs at least "
            f"{needed}"
        )
    logger.info("%s: pyarrow could not parse the file; reading it with the csv module", path)
    return raw_slow.read_delimited_slow(
        path, header, names, delimiter, allow_missing_timestamp, chunk_rows
    )


# --------------------------------------------------------------------------- JSON lines


def read_json_lines(
    path: Path, names: dict[str, str], kind: str, allow_missing_timestamp: bool, chunk_rows: int
) -> Columns:
    """Read the mapped keys of a JSON-lines file (one object per line; other keys ignored).

    Args:
        path: the file.
        names: ``role -> key``; ``rating`` is read as a number, the others as text.
        kind: what one object is (``a Yelp review``), used in messages.
        allow_missing_timestamp: null timestamps become NaN instead of raising.
        chunk_rows: rows per converted block.

    Returns:
        The converted columns (see ``convert_table``).
    """
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")
    fields = {key: pa.float64() if role == "rating" else pa.string() for role, key in names.items()}
    try:
        table = pa_json.read_json(
            path,
            pa_json.ReadOptions(block_size=BLOCK_BYTES),
            pa_json.ParseOptions(
                explicit_schema=pa.schema(list(fields.items())),
                unexpected_field_behavior="ignore",
            ),
        )
        table.validate(full=True)  # the JSON reader does not check that strings are UTF-8
    except pa.ArrowException as exc:
        logger.info("%s: pyarrow could not parse it (%s); reading it with json", path, exc)
        return raw_slow.read_json_lines_slow(path, names, kind, allow_missing_timestamp, chunk_rows)
    if table.num_rows == 0:
        raise DataValidationError(f"{path}: file is empty (no JSON objects)")
    roles = pa.table({role: table.column(key) for role, key in names.items()})

    def slow(start: int, block: pa.Table) -> Columns:
        return raw_slow.json_block(
            path, names, kind, allow_missing_timestamp, start, block.num_rows
        )

    return convert_table(roles, allow_missing_timestamp, slow, chunk_rows)


# --------------------------------------------------------------------------- Parquet


def parquet_columns(path: Path) -> list[str]:
    """The column names of a Parquet file.

    Raises:
        DataValidationError: missing or unreadable file.
    """
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as exc:
        raise DataValidationError(f"{path}: not a readable Parquet file ({exc})") from None


def read_parquet(path: Path, names: dict[str, str], chunk_rows: int) -> Columns:
    """Read the mapped columns of a Parquet file (ids of any type become their text).

    Raises:
        DataValidationError: missing or unreadable file, missing column, bad value.
    """
    raw_slow.missing_columns(path, parquet_columns(path), names.values(), "Parquet")
    try:
        table = pq.read_table(path, columns=list(dict.fromkeys(names.values())))
        table.validate(full=True)
    except (pa.ArrowException, OSError) as exc:
        raise DataValidationError(f"{path}: not a readable Parquet file ({exc})") from None
    if table.num_rows == 0:
        raise DataValidationError(f"{path}: no rows")
    roles = pa.table({role: table.column(col) for role, col in names.items()})

    def slow(start: int, block: pa.Table) -> Columns:
        cols = {role: block.column(role).to_numpy(zero_copy_only=False) for role in names}
        return convert_columns(cols, names, Location(path, start), False)

    return convert_table(roles, False, slow, chunk_rows)
