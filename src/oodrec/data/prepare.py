"""Bring your own data: raw files -> positives -> k-core -> OOD split -> a dataset directory.

``prepare_dataset`` writes ``train.txt``, ``valid_iid.txt``, ``test_iid.txt`` and ``test_ood.txt``
(``user item timestamp`` lines where every interaction of the raw log has a timestamp, else
``user item``; sorted by user, then item; ids 0-based and contiguous over train), the original
tokens of the ids (``user_ids.txt`` / ``item_ids.txt``, line ``k`` holds id ``k``),
``stats.json`` (``oodrec.data.stats.split_stats``) and ``prepare.json`` (options, the columns
read from each file, every count, and ``split_format``: the columns of the split files and the
timestamp unit, which tells the loader that the third column is a time; see
``oodrec.data.layouts``). The directory loads with
``load_dataset(DataConfig(dataset=str(out_dir)))``.

Timestamps are written as integers: seconds since the Unix epoch when every raw timestamp is a
whole second, else milliseconds (KuaiRec's have milliseconds), so that no order is lost.

Example::

    prepare_dataset(["RAW_interactions.csv"], "foodcom", "temporal", "data/food_mine",
                    PrepareOptions(min_user_interactions=15, min_item_interactions=50))
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from oodrec._version import __version__
from oodrec.data.formats import RAW_FORMAT_DESCRIPTIONS
from oodrec.data.layouts import SPLIT_COLUMNS, TIMESTAMP_UNITS
from oodrec.data.preprocess import PreprocessConfig, Vocabulary, id_map, preprocess
from oodrec.data.raw import (
    ColumnMapping,
    RawInteractions,
    read_food_com,
    read_kuairec,
    read_recbole_inter,
    read_table,
    read_yelp_reviews,
)
from oodrec.data.splits import PARTS, SplitConfig, SplitResult, get_protocol
from oodrec.data.stats import dataset_stats, split_stats
from oodrec.errors import ConfigError
from oodrec.paths import check_in_file, check_out_dir
from oodrec.ranges import check_ranges, ranged

logger = logging.getLogger(__name__)

__all__ = ["RAW_FORMATS", "PrepareOptions", "RawFormat", "dataset_stats", "prepare_dataset"]

PART_FILES = {
    "train": "train.txt",
    "val": "valid_iid.txt",
    "iid_test": "test_iid.txt",
    "ood_test": "test_ood.txt",
}


@dataclass(frozen=True)
class RawFormat:
    """One raw input format: its reader and its default positive threshold."""

    reader: Callable[[Path, ColumnMapping | None], RawInteractions]
    default_threshold: float | None
    """Threshold on the rating column when ``positive_threshold="auto"`` (None: keep all)."""
    description: str


def _fixed(reader: Callable[[Path], RawInteractions]) -> Callable:
    def read(path: Path, columns: ColumnMapping | None) -> RawInteractions:
        if columns is not None:
            raise ConfigError("--columns applies only to the csv, tsv and parquet formats")
        return reader(path)

    return read


_D = RAW_FORMAT_DESCRIPTIONS
RAW_FORMATS: dict[str, RawFormat] = {
    "csv": RawFormat(partial(read_table, delimiter=","), 4.0, _D["csv"]),
    "tsv": RawFormat(partial(read_table, delimiter="\t"), 4.0, _D["tsv"]),
    "parquet": RawFormat(read_table, 4.0, _D["parquet"]),
    "recbole": RawFormat(_fixed(read_recbole_inter), 4.0, _D["recbole"]),
    "kuairec": RawFormat(_fixed(read_kuairec), 2.0, _D["kuairec"]),
    "yelp": RawFormat(_fixed(read_yelp_reviews), 4.0, _D["yelp"]),
    "foodcom": RawFormat(_fixed(read_food_com), 4.0, _D["foodcom"]),
}


NAMED_COLUMN_FORMATS = ("csv", "tsv", "parquet")
"""Formats whose columns are found by name in the header when no mapping is given."""


@dataclass(frozen=True)
class PrepareOptions:
    """How ``prepare_dataset`` turns raw files into a split dataset."""

    columns: ColumnMapping | None = None
    """Column mapping of the csv / tsv / parquet formats (``None``: found by name in the header,
    ``oodrec.data.raw.detect_columns``; ``prepare.json`` records the columns used)."""
    positive_threshold: float | str | None = "auto"
    """``auto``: the format's default (rating >= 4, KuaiRec watch ratio >= 2; none when the log
    has no rating); a number; or ``None`` to keep every interaction."""
    min_user_interactions: int = ranged(0, ge=0)
    """k-core minimum per user (paper: Food 15, Yelp2018 25)."""
    min_item_interactions: int = ranged(0, ge=0)
    """k-core minimum per item (paper: 50)."""
    split: SplitConfig | None = None
    """The protocol's config (``None``: its defaults, OOD share 0.2 and 7:1:2)."""
    seed: int = ranged(2025, ge=0, le=2**63 - 1)
    """Split seed."""
    overwrite: bool = False
    """Replace split files already in ``out_dir``."""

    def __post_init__(self) -> None:
        check_ranges(self, "prepare option ")


def _resolve_threshold(
    opt: float | str | None, fmt: RawFormat, raw: RawInteractions
) -> float | None:
    if opt != "auto":
        if isinstance(opt, str):
            raise ConfigError(f"positive_threshold must be 'auto', a number or None, got {opt!r}")
        return None if opt is None else float(opt)
    return None if np.isnan(raw.ratings).all() else fmt.default_threshold


def _read_all(
    fmt: RawFormat,
    files: Sequence[str | Path],
    columns: ColumnMapping | None,
    used: dict[str, dict[str, str]],
) -> RawInteractions:
    """Read and concatenate ``files``; ``used[file]`` receives the columns read from it."""
    if not files:
        raise ConfigError("no input files given")
    parts = [fmt.reader(Path(f), columns) for f in files]
    used.update({str(f): part.columns for f, part in zip(files, parts)})
    return RawInteractions.concat(parts)


def _as_list(files: str | Path | Sequence[str | Path] | None) -> list[Path]:
    if files is None:
        return []
    if isinstance(files, (str, Path)):
        return [Path(files)]
    return [Path(f) for f in files]


def compact_split(result: SplitResult, vocab: Vocabulary) -> tuple[dict, Vocabulary, int, int]:
    """Renumber users and items of a split so that train covers ``0..U-1`` and ``0..I-1``.

    Returns:
        ``(parts, vocabulary, num_users, num_items)`` with ``parts[name] = (users, items)``.
    """
    train = result.train
    user_map, used_u = id_map(train.users, train.num_users)
    item_map, used_i = id_map(train.items, train.num_items)
    # check_split guaranteed that every user and item of every part occurs in train.
    parts = {n: (user_map[p.users], item_map[p.items]) for n, p in result.parts().items()}
    return parts, Vocabulary(vocab.users[used_u], vocab.items[used_i]), used_u.size, used_i.size


def write_pairs(
    path: Path, users: np.ndarray, items: np.ndarray, times: np.ndarray | None = None
) -> None:
    """Write ``user item`` lines, or ``user item timestamp`` lines when ``times`` is given,
    sorted by user, then item (space-separated, final newline).

    Shapes:
        users, items: [N] int; times: [N] int64 or None.
    """
    order = np.lexsort((items, users))
    lines = np.char.add(np.char.add(users[order].astype(str), " "), items[order].astype(str))
    if times is not None:
        lines = np.char.add(np.char.add(lines, " "), times[order].astype(str))
    path.write_text("\n".join(lines.tolist()) + "\n" if lines.size else "")


def integer_timestamps(
    stamps: dict[str, np.ndarray],
) -> tuple[dict[str, np.ndarray] | None, dict]:
    """The parts' timestamps as integers for the split files, and the ``split_format`` entry
    of ``prepare.json`` that declares them.

    Seconds when every timestamp is a whole second, else milliseconds (rounded). When any
    interaction lacks a timestamp no part gets a time column (a file mixing 2- and 3-column
    lines would be malformed), and the entry counts the missing ones.

    Args:
        stamps: part -> seconds since the Unix epoch, NaN where unknown. Shapes [N_part].

    Returns:
        ``(times, split_format)``: part -> int64 times [N_part] (None without timestamps) and
        ``{"columns": [...], "timestamp_unit": "s" | "ms" | None, "missing_timestamps": int}``.
    """
    every = np.concatenate(list(stamps.values()))
    missing = int(np.isnan(every).sum())
    if missing or every.size == 0:
        return None, {
            "columns": SPLIT_COLUMNS[0],
            "timestamp_unit": None,
            "missing_timestamps": missing,
        }
    unit = "s" if bool((every == np.floor(every)).all()) else "ms"
    scale = 1.0 if unit == "s" else 1000.0
    times = {name: np.round(t * scale).astype(np.int64) for name, t in stamps.items()}
    return times, {"columns": SPLIT_COLUMNS[1], "timestamp_unit": unit, "missing_timestamps": 0}


def _log_timestamps(out: Path, split_format: dict, total: int) -> None:
    unit = split_format["timestamp_unit"]
    if unit is not None:
        logger.info("%s: timestamps kept as the third column (%s)", out, TIMESTAMP_UNITS[unit])
    elif split_format["missing_timestamps"] < total:
        logger.warning(
            "%s: %d of %d interactions have no timestamp: the split files get no time column "
            "(the data will have no interaction order)",
            out,
            split_format["missing_timestamps"],
            total,
        )
    else:
        logger.info("%s: the raw log has no timestamps; split files are `user item`", out)


def _write_tokens(path: Path, tokens: np.ndarray) -> None:
    path.write_text("\n".join(np.asarray(tokens, dtype=str).tolist()) + "\n")


def prepare_dataset(
    raw_files: str | Path | Sequence[str | Path],
    fmt: str,
    protocol: str,
    out_dir: str | Path,
    options: PrepareOptions | None = None,
    unbiased_files: str | Path | Sequence[str | Path] | None = None,
) -> Path:
    """Build a split dataset directory from raw interaction files.

    Args:
        raw_files: the (biased) raw log; several files are concatenated.
        fmt: a ``RAW_FORMATS`` name (csv, tsv, parquet, recbole, kuairec, yelp, foodcom).
        protocol: ``popularity``, ``temporal`` or ``exposure`` (``SPLITS_PROTOCOLS``).
        out_dir: output directory (created).
        options: thresholds, k-core minimums, split config, seed.
        unbiased_files: the randomly / fully exposed log (required by, and only allowed for,
            the exposure protocol; e.g. KuaiRec ``small_matrix.csv``).

    Returns:
        ``out_dir``.

    Raises:
        ConfigError: unknown format or protocol, or options that do not fit them.
        DataValidationError: malformed input, or too little data left for the split.
    """
    options = options or PrepareOptions()
    if fmt not in RAW_FORMATS:
        raise ConfigError(f"unknown raw format {fmt!r}; valid formats: {', '.join(RAW_FORMATS)}")
    split_fn, cfg_cls = get_protocol(protocol)
    split_cfg = options.split or cfg_cls()
    if not isinstance(split_cfg, cfg_cls):
        raise ConfigError(f"protocol {protocol!r} needs a {cfg_cls.__name__}, got {split_cfg!r}")
    files, unbiased = _as_list(raw_files), _as_list(unbiased_files)
    if (protocol == "exposure") != bool(unbiased):
        raise ConfigError(
            "the exposure protocol needs an unbiased log (unbiased_files / --unbiased) and the "
            "other protocols take none"
        )
    out = Path(out_dir)
    check_out_dir(out)
    for f in [*files, *unbiased]:
        check_in_file(f, "input")
    existing = [f for f in PART_FILES.values() if (out / f).exists()]
    if existing and not options.overwrite:
        raise ConfigError(f"{out} already holds {', '.join(existing)}; pass overwrite / --force")
    spec = RAW_FORMATS[fmt]
    used: dict[str, dict[str, str]] = {}
    raw = _read_all(spec, files, options.columns, used)
    raw_unbiased = _read_all(spec, unbiased, options.columns, used) if unbiased else None
    pre_cfg = PreprocessConfig(
        _resolve_threshold(options.positive_threshold, spec, raw),
        options.min_user_interactions,
        options.min_item_interactions,
    )
    log, vocab, pre_report = preprocess(raw, pre_cfg, raw_unbiased)
    result = split_fn(log, split_cfg, options.seed)
    parts, vocab, num_users, num_items = compact_split(result, vocab)
    # compact_split renumbers element-wise, so each part's timestamps stay aligned with it.
    times, split_format = integer_timestamps({n: p.timestamps for n, p in result.parts().items()})
    _log_timestamps(out, split_format, sum(len(p[0]) for p in parts.values()))
    out.mkdir(parents=True, exist_ok=True)
    for name in PARTS:
        write_pairs(out / PART_FILES[name], *parts[name], None if times is None else times[name])
    _write_tokens(out / "user_ids.txt", vocab.users)
    _write_tokens(out / "item_ids.txt", vocab.items)
    stats = split_stats(parts, num_users, num_items)
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    record = {
        "oodrec_version": __version__,
        "format": fmt,
        "protocol": protocol,
        "raw_files": [str(f) for f in files],
        "unbiased_files": [str(f) for f in unbiased],
        "options": asdict(options) | {"split": asdict(split_cfg)},
        "columns": used,
        "columns_found_by_name": options.columns is None and fmt in NAMED_COLUMN_FORMATS,
        "positive_threshold": pre_cfg.positive_threshold,
        "preprocess": pre_report.to_dict(),
        "split": result.report.to_dict(),
        "dropped_after_split": len(result.dropped),
        "split_format": split_format,
    }
    (out / "prepare.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    logger.info(
        "prepared %s: %d users, %d items, %s",
        out,
        num_users,
        num_items,
        {n: len(p[0]) for n, p in parts.items()},
    )
    return out
