"""Readers for raw interaction logs, each with schema validation.

Formats: generic CSV / TSV / Parquet with a column mapping, RecBole atomic ``.inter`` files, the
KuaiRec release (``big_matrix.csv`` / ``small_matrix.csv``), Yelp Open Dataset review JSON lines
and Food.com ``RAW_interactions.csv``.

Every reader returns a ``RawInteractions``: the original user and item tokens (strings), the
rating (NaN where the format has none) and the timestamp in seconds since the Unix epoch (NaN
where unknown). Values are converted column by column with vectorised NumPy calls; the first
offending value raises a ``DataValidationError`` that names file, column, row and value. Rows are
counted from 1 at the first data row (the header is not counted); the message also gives the line
of the file. Files are read in chunks of ``CHUNK_ROWS`` rows, so that a 12-million-row KuaiRec
matrix does not hold every parsed field as a Python string at once.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice
from operator import itemgetter
from pathlib import Path

import numpy as np

from oodrec.data.raw_values import Location, parse_floats, parse_ids, parse_timestamps
from oodrec.errors import DataValidationError

CHUNK_ROWS = 200_000


@dataclass
class RawInteractions:
    """One raw interaction log, before thresholding, filtering and id remapping.

    Attributes:
        users: original user tokens.
        items: original item tokens.
        ratings: explicit rating / watch ratio; NaN where the format has none.
        timestamps: seconds since the Unix epoch; NaN where unknown.
        source: the file(s) it was read from.

    Shapes:
        users, items: [N] str; ratings, timestamps: [N] float64.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.users)
        if not (len(self.items) == len(self.ratings) == len(self.timestamps) == n):
            raise ValueError("RawInteractions: users, items, ratings and timestamps differ in size")

    def __len__(self) -> int:
        return len(self.users)

    @staticmethod
    def concat(parts: Sequence[RawInteractions]) -> RawInteractions:
        """Concatenate logs in order (e.g. several files of one release)."""
        if not parts:
            raise ValueError("RawInteractions.concat needs at least one part")
        return RawInteractions(
            np.concatenate([p.users for p in parts]),
            np.concatenate([p.items for p in parts]),
            np.concatenate([p.ratings for p in parts]),
            np.concatenate([p.timestamps for p in parts]),
            "; ".join(p.source for p in parts),
        )


@dataclass(frozen=True)
class ColumnMapping:
    """Which input columns hold user, item, rating and timestamp (generic CSV / TSV / Parquet)."""

    user: str = "user_id"
    """Column of user tokens."""
    item: str = "item_id"
    """Column of item tokens."""
    rating: str | None = None
    """Column of explicit ratings; ``None``: the log is implicit (every row is a positive)."""
    timestamp: str | None = None
    """Column of timestamps (Unix seconds or ISO 8601 dates); ``None``: no timestamps."""

    def roles(self) -> dict[str, str]:
        """``role -> column name`` for the mapped roles (``user``, ``item``, ...)."""
        names = {
            "user": self.user,
            "item": self.item,
            "rating": self.rating,
            "timestamp": self.timestamp,
        }
        return {role: name for role, name in names.items() if name}

    @classmethod
    def parse(cls, spec: str) -> ColumnMapping:
        """Parse ``"user=uid,item=iid,rating=stars,timestamp=ts"`` (roles may be omitted).

        Raises:
            DataValidationError: unknown role or malformed entry.
        """
        values: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            role, sep, name = part.partition("=")
            if not sep or role.strip() not in ("user", "item", "rating", "timestamp"):
                raise DataValidationError(
                    f"column mapping entry {part!r}: expected ROLE=COLUMN with ROLE one of "
                    "user, item, rating, timestamp"
                )
            values[role.strip()] = name.strip()
        return cls(**values)


def _convert(
    columns: dict[str, Sequence],
    names: dict[str, str],
    where: Location,
    allow_missing_timestamp: bool,
) -> RawInteractions:
    """Turn raw column values (``role -> values``) into a validated ``RawInteractions``."""
    n = len(columns["user"])
    users = parse_ids(columns["user"], where, names["user"])
    items = parse_ids(columns["item"], where, names["item"])
    ratings = np.full(n, np.nan)
    if "rating" in columns:
        ratings = parse_floats(columns["rating"], where, names["rating"], "rating")
    timestamps = np.full(n, np.nan)
    if "timestamp" in columns:
        timestamps = parse_timestamps(
            columns["timestamp"], where, names["timestamp"], allow_missing_timestamp
        )
    return RawInteractions(users, items, ratings, timestamps, str(where.path))


# --------------------------------------------------------------------------- delimited text


def _open_text(path: Path):
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")
    return open(path, newline="", encoding="utf-8-sig")


def _csv_line_of(path: Path, delimiter: str, row: int) -> int:
    """File line (1-based) on which data row ``row`` starts (error path only)."""
    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        previous = 0
        for n, _ in enumerate(reader):  # n == 0 is the header
            if n == row:
                return previous + 1
            previous = reader.line_num
    return previous + 1


def read_header(path: str | Path, delimiter: str) -> list[str]:
    """The first row of a delimited file, stripped.

    Raises:
        DataValidationError: missing or empty file.
    """
    path = Path(path)
    with _open_text(path) as fh:
        header = next(csv.reader(fh, delimiter=delimiter), None)
    if not header:
        raise DataValidationError(f"{path}: file is empty (no header row)")
    return [h.strip() for h in header]


def _missing_columns(
    where: object, have: Sequence[str], wanted: Iterable[str], kind: str, label: str = "header"
) -> None:
    missing = [name for name in wanted if name not in have]
    if missing:
        raise DataValidationError(
            f"{where}: missing column(s) {', '.join(map(repr, missing))} for {kind}; "
            f"the {label} has {', '.join(map(repr, have)) or 'nothing'}"
        )


def _chunk_rows(
    path: Path, delimiter: str, getter: Callable, needed: int, rows: list[list[str]], base: int
) -> list[tuple]:
    try:
        return list(map(getter, rows))
    except IndexError:
        i = next(k for k, r in enumerate(rows) if len(r) < needed)
        line = _csv_line_of(path, delimiter, base + i + 1)
        raise DataValidationError(
            f"{path}, row {base + i + 1} (line {line}): {len(rows[i])} field(s), the header "
            f"needs at least {needed}"
        ) from None


def read_delimited(
    path: str | Path,
    names: dict[str, str],
    delimiter: str = ",",
    kind: str = "CSV",
    allow_missing_timestamp: bool = False,
) -> RawInteractions:
    """Read a delimited text file with a header row.

    Args:
        path: the file (UTF-8, optional BOM, RFC 4180 quoting).
        names: ``role -> column name`` for ``user``, ``item`` and optionally ``rating`` and
            ``timestamp``.
        delimiter: field separator.
        kind: format name used in messages.
        allow_missing_timestamp: empty timestamp fields become NaN instead of raising.

    Returns:
        The validated log.

    Raises:
        DataValidationError: missing file or column, ragged row, empty id, non-numeric rating,
            bad timestamp, or undecodable bytes.
    """
    path = Path(path)
    header = read_header(path, delimiter)
    _missing_columns(path, header, names.values(), kind)
    roles = list(names)
    idx = [header.index(names[r]) for r in roles]
    getter = itemgetter(*idx)
    line_of = partial(_csv_line_of, path, delimiter)
    chunks, base = [], 0
    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        next(reader)
        try:
            while rows := list(islice(reader, CHUNK_ROWS)):
                picked = _chunk_rows(path, delimiter, getter, max(idx) + 1, rows, base)
                cols = dict(zip(roles, zip(*picked)))
                where = Location(path, base, line_of)
                chunks.append(_convert(cols, names, where, allow_missing_timestamp))
                base += len(rows)
        except csv.Error as exc:
            raise DataValidationError(f"{path}, line {reader.line_num}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise DataValidationError(f"{path}: not UTF-8 text ({exc})") from None
    if not chunks:
        raise DataValidationError(f"{path}: no data rows after the header")
    return RawInteractions.concat(chunks)


def read_parquet(path: str | Path, names: dict[str, str]) -> RawInteractions:
    """Read the mapped columns of a Parquet file (needs ``pyarrow``, or ``pandas`` with an engine).

    Raises:
        DataValidationError: the optional dependency is missing, or a column or value is bad.
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    if pq is not None:
        table = pq.read_table(path)
        _missing_columns(path, table.column_names, names.values(), "Parquet")
        cols = {r: table.column(c).to_numpy() for r, c in names.items()}
    else:
        try:
            import pandas as pd
        except ImportError:
            raise DataValidationError(
                f"{path}: reading Parquet needs the optional dependency pyarrow "
                "(`pip install pyarrow`); or convert the file to CSV"
            ) from None
        frame = pd.read_parquet(path)
        _missing_columns(path, list(frame.columns), names.values(), "Parquet")
        cols = {r: frame[c].to_numpy() for r, c in names.items()}
    if len(cols["user"]) == 0:
        raise DataValidationError(f"{path}: no rows")
    return _convert(cols, names, Location(path), allow_missing_timestamp=False)


def read_table(
    path: str | Path, columns: ColumnMapping | None = None, delimiter: str | None = None
) -> RawInteractions:
    """Generic reader: ``.parquet`` / ``.pq`` via Parquet, ``.tsv`` / ``.tab`` tab-separated,
    anything else comma-separated unless ``delimiter`` is given.

    Args:
        path: the file.
        columns: which columns hold user, item, rating, timestamp (default ``user_id``,
            ``item_id``, no rating, no timestamp).
        delimiter: override the separator of text files.

    Returns:
        The validated log.
    """
    path = Path(path)
    names = (columns or ColumnMapping()).roles()
    if path.suffix.lower() in (".parquet", ".pq"):
        return read_parquet(path, names)
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    kind = "TSV" if delimiter == "\t" else "CSV"
    return read_delimited(path, names, delimiter, kind)


def read_recbole_inter(
    path: str | Path,
    user_field: str = "user_id",
    item_field: str = "item_id",
    rating_field: str = "rating",
    timestamp_field: str = "timestamp",
) -> RawInteractions:
    """Read a RecBole atomic ``.inter`` file (tab-separated, header ``name:type`` fields, e.g.
    ``user_id:token	item_id:token	rating:float	timestamp:float``).

    Rating and timestamp are optional; when present they must be declared ``float``.

    Raises:
        DataValidationError: a header field without ``:type``, a missing user / item field, a
            rating or timestamp not declared ``float``, or a bad value.
    """
    path = Path(path)
    header = read_header(path, "\t")
    fields: dict[str, tuple[str, str]] = {}
    for col in header:
        name, sep, ftype = col.partition(":")
        if not sep:
            raise DataValidationError(
                f"{path}: header field {col!r} has no ':type' suffix (RecBole atomic files "
                "declare name:type, e.g. user_id:token)"
            )
        fields[name] = (col, ftype)
    _missing_columns(path, list(fields), (user_field, item_field), "a RecBole .inter file")
    names = {"user": fields[user_field][0], "item": fields[item_field][0]}
    for role, name in (("rating", rating_field), ("timestamp", timestamp_field)):
        if name in fields:
            col, ftype = fields[name]
            if ftype != "float":
                raise DataValidationError(f"{path}: column {col!r} must be declared {name}:float")
            names[role] = col
    return read_delimited(path, names, "\t", "a RecBole .inter file")


def read_kuairec(path: str | Path) -> RawInteractions:
    """Read ``big_matrix.csv`` or ``small_matrix.csv`` of the KuaiRec release.

    The rating is ``watch_ratio`` (play duration / video duration), the timestamp is the
    ``timestamp`` column; an empty timestamp (the release has some) becomes NaN.
    """
    names = {
        "user": "user_id",
        "item": "video_id",
        "rating": "watch_ratio",
        "timestamp": "timestamp",
    }
    return read_delimited(path, names, ",", "KuaiRec", allow_missing_timestamp=True)


def read_food_com(path: str | Path) -> RawInteractions:
    """Read Food.com ``RAW_interactions.csv`` (user_id, recipe_id, date, rating, review).

    Rating 0 means "reviewed without a rating"; the positive threshold drops such rows.
    """
    names = {"user": "user_id", "item": "recipe_id", "rating": "rating", "timestamp": "date"}
    return read_delimited(path, names, ",", "Food.com RAW_interactions.csv")


YELP_KEYS = ("user_id", "business_id", "stars", "date")


def read_yelp_reviews(path: str | Path) -> RawInteractions:
    """Read ``yelp_academic_dataset_review.json`` of the Yelp Open Dataset (one JSON object per
    line with ``user_id``, ``business_id``, ``stars`` and ``date``).

    Raises:
        DataValidationError: invalid JSON, a missing key or a bad value (naming the line).
    """
    path = Path(path)
    names = dict(zip(("user", "item", "rating", "timestamp"), YELP_KEYS))
    getter = itemgetter(*YELP_KEYS)
    chunks, base = [], 0
    with _open_text(path) as fh:
        try:
            while lines := list(islice(fh, CHUNK_ROWS)):
                picked = _yelp_chunk(path, lines, base, getter)
                cols = dict(zip(names, zip(*picked)))
                chunks.append(_convert(cols, names, Location(path, base, lambda r: r), False))
                base += len(lines)
        except UnicodeDecodeError as exc:
            raise DataValidationError(f"{path}: not UTF-8 text ({exc})") from None
    if not chunks:
        raise DataValidationError(f"{path}: file is empty (no reviews)")
    return RawInteractions.concat(chunks)


def _yelp_chunk(path: Path, lines: list[str], base: int, getter: Callable) -> list[tuple]:
    try:
        objs = list(map(json.loads, lines))
        return list(map(getter, objs))
    except (json.JSONDecodeError, KeyError, TypeError):
        pass
    for k, line in enumerate(lines):  # error path only: name the offending line
        where = f"{path}, row {base + k + 1} (line {base + k + 1})"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataValidationError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DataValidationError(f"{where}: expected a JSON object, got {line.strip()[:60]!r}")
        _missing_columns(where, list(obj), YELP_KEYS, "a Yelp review", label="object")
    raise AssertionError("unreachable: a chunk failed but no line did")
