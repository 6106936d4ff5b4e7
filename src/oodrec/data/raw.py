"""Readers for raw interaction logs, each with schema validation.

Formats: generic CSV / TSV / Parquet with a column mapping, RecBole atomic ``.inter`` files, the
KuaiRec release (``big_matrix.csv`` / ``small_matrix.csv``), Yelp Open Dataset review JSON lines
and Food.com ``RAW_interactions.csv``.

Every reader returns a ``RawInteractions``: the original user and item tokens (strings), the
rating (NaN where the format has none) and the timestamp in seconds since the Unix epoch (NaN
where unknown).

Files are parsed by pyarrow (multi-threaded; ``raw_arrow``) and converted in blocks of
``CHUNK_ROWS`` rows with vectorised casts. The first offending value raises a
``DataValidationError`` that names file, row, line, column and value: the block holding it is
converted again by the exact NumPy / ``csv`` path (``raw_values``, ``raw_slow``), which locates
it. Rows are counted from 1 at the first data row (the header is not counted; empty lines are
skipped); the message also gives the line of the file. Ids stay dictionary-encoded until the
end, so that a 12.5-million-row KuaiRec matrix never holds a Python string per field.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oodrec.data.raw_slow import missing_columns, read_header
from oodrec.errors import DataValidationError

logger = logging.getLogger(__name__)

__all__ = [
    "CHUNK_ROWS",
    "COLUMN_NAMES",
    "ColumnMapping",
    "RawInteractions",
    "read_delimited",
    "read_food_com",
    "read_header",
    "read_kuairec",
    "read_parquet",
    "read_recbole_inter",
    "read_table",
    "read_yelp_reviews",
    "detect_columns",
]

CHUNK_ROWS = 200_000
"""Rows per converted block; a bad value is located by re-converting only its block."""


@dataclass
class RawInteractions:
    """One raw interaction log, before thresholding, filtering and id remapping.

    Attributes:
        users: original user tokens.
        items: original item tokens.
        ratings: explicit rating / watch ratio; NaN where the format has none.
        timestamps: seconds since the Unix epoch; NaN where unknown.
        source: the file(s) it was read from.
        columns: ``role -> column name`` that the reader used (empty where files differ).

    Shapes:
        users, items: [N] str; ratings, timestamps: [N] float64.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    source: str = ""
    columns: dict[str, str] = field(default_factory=dict)

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
            parts[0].columns if all(p.columns == parts[0].columns for p in parts) else {},
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


COLUMN_NAMES: dict[str, tuple[tuple[str, ...], ...]] = {
    "user": (("user", "userid"), ("uid",)),
    "item": (
        ("item", "itemid"),
        ("iid", "movieid", "productid", "businessid", "recipeid", "videoid", "bookid"),
    ),
    "rating": (("rating",), ("ratings", "stars")),
    "timestamp": (("timestamp",), ("time", "datetime", "date", "ts")),
}
"""Header names ``detect_columns`` takes for each role, compared in lower case without ``_``,
``-``, ``.`` and spaces (``user_id``, ``userId`` and ``UserID`` are all ``userid``). Tiers are
tried in order: a name of the first tier wins over one of the second (``timestamp`` over
``date``); two names of one tier are ambiguous."""


def _plain(name: str) -> str:
    return re.sub(r"[\s_.\-]", "", name.lower())


def detect_columns(where: object, header: Sequence[str]) -> ColumnMapping:
    """The user, item and (where present) rating and timestamp columns of a header, found by
    name (``COLUMN_NAMES``).

    Args:
        where: the file, for messages.
        header: the column names.

    Raises:
        DataValidationError: no user or item column, or two candidates for one role; the message
            lists the header and shows ``--columns``.
    """
    shown = ", ".join(map(repr, header)) or "nothing"
    usage = "pass --columns user=COL,item=COL[,rating=COL][,timestamp=COL]"
    found: dict[str, str] = {}
    for role, tiers in COLUMN_NAMES.items():
        for tier in tiers:
            hits = [name for name in header if _plain(name) in tier]
            if len(hits) > 1:
                raise DataValidationError(
                    f"{where}: columns {', '.join(map(repr, hits))} could each be the {role} "
                    f"column; the header has {shown}; {usage}"
                )
            if hits:
                found[role] = hits[0]
                break
    missing = [role for role in ("user", "item") if role not in found]
    if missing:
        wanted = " / ".join(f"{r} ({', '.join(COLUMN_NAMES[r][0])}, ...)" for r in missing)
        raise DataValidationError(
            f"{where}: no column named like a {wanted} id; the header has {shown}; {usage}"
        )
    return ColumnMapping(**found)


def _log(cols: dict[str, np.ndarray], path: Path, names: dict[str, str]) -> RawInteractions:
    return RawInteractions(
        cols["user"], cols["item"], cols["rating"], cols["timestamp"], str(path), dict(names)
    )


def read_delimited(
    path: str | Path,
    names: dict[str, str],
    delimiter: str = ",",
    kind: str = "CSV",
    allow_missing_timestamp: bool = False,
    numeric_timestamp: bool = False,
) -> RawInteractions:
    """Read a delimited text file with a header row (pyarrow, multi-threaded).

    Args:
        path: the file (UTF-8, optional BOM, RFC 4180 quoting; empty lines are skipped).
        names: ``role -> column name`` for ``user``, ``item`` and optionally ``rating`` and
            ``timestamp``.
        delimiter: field separator.
        kind: format name used in messages.
        allow_missing_timestamp: empty timestamp fields become NaN instead of raising.
        numeric_timestamp: the format declares timestamps numeric (parsed as numbers first).

    Returns:
        The validated log.

    Raises:
        DataValidationError: missing file or column, ragged row, empty id, non-numeric rating,
            bad timestamp, or undecodable bytes.
    """
    from oodrec.data import raw_arrow

    path = Path(path)
    header = read_header(path, delimiter)
    missing_columns(path, header, names.values(), kind)
    cols = raw_arrow.read_csv(
        path,
        header,
        names,
        delimiter,
        allow_missing_timestamp,
        numeric_timestamp,
        CHUNK_ROWS,
    )
    return _log(cols, path, names)


def read_parquet(path: str | Path, names: dict[str, str]) -> RawInteractions:
    """Read the mapped columns of a Parquet file (pyarrow).

    Raises:
        DataValidationError: missing or unreadable file, missing column, or a bad value.
    """
    from oodrec.data import raw_arrow

    path = Path(path)
    return _log(raw_arrow.read_parquet(path, names, CHUNK_ROWS), path, names)


def read_table(
    path: str | Path, columns: ColumnMapping | None = None, delimiter: str | None = None
) -> RawInteractions:
    """Generic reader: ``.parquet`` / ``.pq`` via Parquet, ``.tsv`` / ``.tab`` tab-separated,
    anything else comma-separated unless ``delimiter`` is given.

    Args:
        path: the file.
        columns: which columns hold user, item, rating, timestamp. ``None``: found by name in
            the header (``detect_columns``: ``user_id`` / ``userId`` / ``user``, ``item_id`` /
            ``itemId`` / ``item`` / ``movieId`` ..., ``rating``, ``timestamp`` / ``time`` /
            ``date``) and logged.
        delimiter: override the separator of text files.

    Returns:
        The validated log; ``columns`` holds the mapping used.

    Raises:
        DataValidationError: bad input, or (``columns=None``) a header without a user or item
            column or with two candidates for one role.
    """
    from oodrec.data import raw_arrow

    path = Path(path)
    parquet = path.suffix.lower() in (".parquet", ".pq")
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    if columns is None:
        header = raw_arrow.parquet_columns(path) if parquet else read_header(path, delimiter)
        columns = detect_columns(path, header)
        used = ", ".join(f"{role}={name}" for role, name in columns.roles().items())
        logger.info("%s: no column mapping given; using the columns found by name: %s", path, used)
    names = columns.roles()
    if parquet:
        return read_parquet(path, names)
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
    missing_columns(path, list(fields), (user_field, item_field), "a RecBole .inter file")
    names = {"user": fields[user_field][0], "item": fields[item_field][0]}
    for role, name in (("rating", rating_field), ("timestamp", timestamp_field)):
        if name in fields:
            col, ftype = fields[name]
            if ftype != "float":
                raise DataValidationError(f"{path}: column {col!r} must be declared {name}:float")
            names[role] = col
    return read_delimited(path, names, "\t", "a RecBole .inter file", numeric_timestamp=True)


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
    return read_delimited(
        path, names, ",", "KuaiRec", allow_missing_timestamp=True, numeric_timestamp=True
    )


def read_food_com(path: str | Path) -> RawInteractions:
    """Read Food.com ``RAW_interactions.csv`` (user_id, recipe_id, date, rating, review).

    Rating 0 means "reviewed without a rating"; the positive threshold drops such rows.
    """
    names = {"user": "user_id", "item": "recipe_id", "rating": "rating", "timestamp": "date"}
    return read_delimited(path, names, ",", "Food.com RAW_interactions.csv")


YELP_KEYS = ("user_id", "business_id", "stars", "date")


def read_yelp_reviews(path: str | Path) -> RawInteractions:
    """Read ``yelp_academic_dataset_review.json`` of the Yelp Open Dataset (one JSON object per
    line with ``user_id``, ``business_id``, ``stars`` and ``date``; pyarrow, multi-threaded).

    Raises:
        DataValidationError: invalid JSON, a missing key or a bad value (naming row and line).
    """
    from oodrec.data import raw_arrow

    path = Path(path)
    names = dict(zip(("user", "item", "rating", "timestamp"), YELP_KEYS))
    cols = raw_arrow.read_json_lines(path, names, "a Yelp review", False, CHUNK_ROWS)
    return _log(cols, path, names)
