"""Names of the raw input formats and split protocols, without their readers.

The command line's parser is built from these (so that ``oodrec --help`` loads neither torch
nor pyarrow); ``oodrec.data.prepare.RAW_FORMATS`` and ``oodrec.data.splits.SPLITS_PROTOCOLS``
hold the readers and split functions under the same names (a test checks that they agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

RAW_FORMAT_DESCRIPTIONS: dict[str, str] = {
    "csv": "comma-separated, --columns",
    "tsv": "tab-separated, --columns",
    "parquet": "Parquet, --columns",
    "recbole": "RecBole atomic .inter file",
    "kuairec": "KuaiRec big_matrix.csv / small_matrix.csv",
    "yelp": "Yelp Open Dataset review JSON lines",
    "foodcom": "Food.com RAW_interactions.csv",
}
"""Raw format name -> one-line description (``oodrec prepare --format``)."""

SPLIT_PROTOCOL_NAMES = ("popularity", "temporal", "exposure")
"""``oodrec prepare --protocol`` choices."""

KNOWN_FILES = {
    "big_matrix.csv": "kuairec",
    "small_matrix.csv": "kuairec",
    "raw_interactions.csv": "foodcom",
    "yelp_academic_dataset_review.json": "yelp",
}
"""Published file names whose format is their own (lower-cased name -> format)."""

SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".inter": "recbole"}
"""File suffix -> format, for files that are not a known published file."""


def infer_format(paths: Sequence[str | Path]) -> tuple[str | None, str]:
    """The raw format of ``paths`` from their names, and why (or why it cannot be told).

    Returns:
        ``(format, reason)``; format is None when a name says nothing or the files disagree.
    """
    found = {}
    for path in paths:
        name = Path(path).name.lower()
        fmt = KNOWN_FILES.get(name) or SUFFIXES.get(Path(name).suffix)
        if fmt is None:
            return None, f"{Path(path).name}: the name does not say which format it is"
        found[Path(path).name] = fmt
    kinds = set(found.values())
    if len(kinds) > 1:
        shown = ", ".join(f"{n} -> {f}" for n, f in found.items())
        return None, f"the files look like different formats ({shown})"
    fmt = kinds.pop()
    first = next(iter(found))
    why = "its name" if first.lower() in KNOWN_FILES else f"the suffix {Path(first).suffix}"
    return fmt, f"{fmt} (from {why})"


__all__ = [
    "KNOWN_FILES",
    "RAW_FORMAT_DESCRIPTIONS",
    "SPLIT_PROTOCOL_NAMES",
    "SUFFIXES",
    "infer_format",
]
