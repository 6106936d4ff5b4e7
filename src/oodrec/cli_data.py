"""The ``prepare`` and ``stats`` subcommands ("bring your own data").

``add_data_commands(subparsers)`` adds both to the ``oodrec`` parser; each handler takes the
parsed arguments and returns an exit code. Library errors (``OodrecError``) propagate to
``oodrec.cli.main``, which prints them without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from oodrec.errors import ConfigError

PREPARE_DESCRIPTION = """\
Build a dataset directory from raw interaction files: keep positives (rating >= threshold),
remove duplicate pairs (earliest kept), apply an iterated k-core filter, remap ids, choose an
OOD test by the shift protocol and split the rest 7:1:2 into train / val / IID test (per user).

protocols:
  popularity  OOD test drawn with probability 1 / item popularity (near-uniform items; Yelp2018)
  temporal    each user's latest 20% of interactions by timestamp (Food)
  exposure    a separately logged random / fully exposed set, given with --unbiased (KuaiRec)

Writes OUT/train.txt, valid_iid.txt, test_iid.txt, test_ood.txt (`user item` lines), stats.json,
prepare.json (every count), user_ids.txt and item_ids.txt (original tokens, line k = id k).
Train with `oodrec train --dataset OUT`.
"""

PREPARE_EPILOG = """\
examples:
  # Food.com as in the CNSDiff paper: ratings >= 4, users >= 15, items >= 50, temporal shift
  oodrec prepare RAW_interactions.csv --format foodcom --protocol temporal \\
      --min-user 15 --min-item 50 --out data/food_mine
  # Yelp2018-style popularity shift from the Yelp Open Dataset reviews
  oodrec prepare yelp_academic_dataset_review.json --format yelp --protocol popularity \\
      --min-user 25 --min-item 50 --out data/yelp_mine
  # KuaiRec: big matrix for training, the fully observed small matrix as OOD test
  oodrec prepare big_matrix.csv --unbiased small_matrix.csv --format kuairec \\
      --protocol exposure --out data/kuairec_mine
  # any CSV with your own column names (implicit feedback: no rating column)
  oodrec prepare clicks.csv --format csv --columns user=uid,item=sku,timestamp=ts \\
      --protocol temporal --out data/clicks
  # a RecBole atomic file
  oodrec prepare ml-1m.inter --format recbole --protocol popularity --out data/ml1m_pop
"""

STATS_DESCRIPTION = """\
Print users, items, interactions and density per split, the item-popularity Gini of each split,
the mean training popularity of each split's items and the total-variation distance between
the train and test item-popularity distributions. DATASET is a shipped name (see `oodrec
datasets`) or a directory with train.txt, valid_iid.txt, test_iid.txt, test_ood.txt. The counts
are those after loading (duplicates and malformed lines removed, as in training).
"""

STATS_EPILOG = """\
examples:
  oodrec stats food
  oodrec stats yelp2018 --on-bad-lines skip     # its train.txt has 2 malformed lines
  oodrec stats data/food_mine --json
  OODREC_DATA=/data/oodrec oodrec stats coat

data directory: --data-dir, else $OODREC_DATA, else ~/.cache/oodrec/data
"""


def add_data_commands(subparsers: Any) -> None:
    """Add the ``prepare`` and ``stats`` subcommands to an argparse subparsers object.

    Args:
        subparsers: the result of ``parser.add_subparsers(...)``; each new parser sets
            ``func`` to its handler (``cmd_prepare`` / ``cmd_stats``).
    """
    from oodrec.data.formats import RAW_FORMAT_DESCRIPTIONS, SPLIT_PROTOCOL_NAMES

    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "prepare",
        help="build a split dataset directory from raw interaction files",
        description=PREPARE_DESCRIPTION,
        epilog=PREPARE_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("inputs", nargs="+", metavar="RAW_FILE", help="raw log file(s), concatenated")
    formats = ", ".join(f"{n} ({d})" for n, d in RAW_FORMAT_DESCRIPTIONS.items())
    p.add_argument(
        "--format",
        choices=list(RAW_FORMAT_DESCRIPTIONS),
        help=f"{formats}. Default: from the file names (.csv, .tsv, .parquet, .inter, or a "
        "published file such as big_matrix.csv or RAW_interactions.csv); the inferred format "
        "is printed",
    )
    p.add_argument("--protocol", required=True, choices=list(SPLIT_PROTOCOL_NAMES))
    p.add_argument("--out", required=True, metavar="DIR", help="output dataset directory")
    p.add_argument(
        "--unbiased", nargs="+", metavar="RAW_FILE", help="randomly exposed log (exposure only)"
    )
    p.add_argument(
        "--columns",
        metavar="MAP",
        help="csv / tsv / parquet columns: user=COL,item=COL[,rating=COL][,timestamp=COL] "
        "(default: found by name in the header, e.g. user_id / userId, item_id / itemId / "
        "movieId, rating, timestamp / time / date; printed)",
    )
    p.add_argument(
        "--threshold",
        default="auto",
        help="positive if rating >= this: a number, 'none' (keep all) or 'auto' (default: 4, "
        "KuaiRec watch ratio 2, none for logs without ratings)",
    )
    p.add_argument("--min-user", type=int, default=0, help="k-core minimum per user (default 0)")
    p.add_argument("--min-item", type=int, default=0, help="k-core minimum per item (default 0)")
    p.add_argument("--ood-fraction", type=float, help="OOD share (popularity, temporal; 0.2)")
    p.add_argument(
        "--fractions", metavar="T,V,I", help="train,val,iid_test shares of the rest (0.7,0.1,0.2)"
    )
    p.add_argument(
        "--exponent", type=float, help="popularity: draw weight popularity**-EXPONENT (1.0)"
    )
    p.add_argument(
        "--overlap-keep",
        choices=["ood_test", "biased"],
        help="exposure: where a pair logged both ways stays (default ood_test)",
    )
    p.add_argument("--seed", type=int, default=2025, help="split seed (default 2025)")
    p.add_argument("--force", action="store_true", help="overwrite split files in --out")
    p.set_defaults(func=cmd_prepare)

    p = subparsers.add_parser(
        "stats",
        help="print split statistics of a dataset (sizes, density, popularity Gini, shift)",
        description=STATS_DESCRIPTION,
        epilog=STATS_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("dataset", help="shipped dataset name or dataset directory")
    p.add_argument("--data-dir", help="data directory (default: $OODREC_DATA or the user cache)")
    p.add_argument(
        "--on-bad-lines",
        choices=["error", "skip"],
        default="error",
        help="malformed lines: error (default) or skip and report the count",
    )
    p.add_argument("--no-verify", action="store_true", help="skip SHA-256 checks of shipped files")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=cmd_stats)


def _threshold(text: str) -> float | str | None:
    if text.lower() in ("auto", "none"):
        return None if text.lower() == "none" else "auto"
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--threshold must be a number, 'auto' or 'none', got {text!r}") from None


def _split_config(args: argparse.Namespace):
    from oodrec.data.splits import SPLIT_CONFIGS

    cls = SPLIT_CONFIGS[args.protocol]
    given = {
        "ood_fraction": args.ood_fraction,
        "exponent": args.exponent,
        "overlap_keep": args.overlap_keep,
    }
    if args.fractions:
        try:
            given["fractions"] = tuple(float(x) for x in args.fractions.split(","))
        except ValueError:
            raise ConfigError(
                f"--fractions must be three numbers, got {args.fractions!r}"
            ) from None
    allowed = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in given.items() if v is not None}
    extra = sorted(set(kwargs) - allowed)
    if extra:
        flags = ", ".join("--" + e.replace("_", "-") for e in extra)
        raise ConfigError(f"{flags} does not apply to the {args.protocol} protocol")
    return cls(**kwargs)


def cmd_prepare(args: argparse.Namespace) -> int:
    """Handler of ``oodrec prepare``: build the dataset, print its statistics. Returns 0."""
    from oodrec.data.formats import infer_format

    raw_format = args.format
    if raw_format is None:
        raw_format, why = infer_format(args.inputs)
        if raw_format is None:
            raise ConfigError(f"--format is needed: {why}; give one of the formats in --help")
        print(f"format: {why}; pass --format to choose another", file=sys.stderr)
    from oodrec.data.prepare import PrepareOptions, prepare_dataset
    from oodrec.data.raw import ColumnMapping

    options = PrepareOptions(
        columns=ColumnMapping.parse(args.columns) if args.columns else None,
        positive_threshold=_threshold(args.threshold),
        min_user_interactions=args.min_user,
        min_item_interactions=args.min_item,
        split=_split_config(args),
        seed=args.seed,
        overwrite=args.force,
    )
    out = prepare_dataset(
        args.inputs, raw_format, args.protocol, args.out, options, unbiased_files=args.unbiased
    )
    record = json.loads((out / "prepare.json").read_text())
    if record.get("columns_found_by_name"):
        for path, cols in record["columns"].items():
            used = ", ".join(f"{role}={name}" for role, name in cols.items())
            print(f"{path}: columns found by name: {used} (choose others with --columns)")
    split_format = record.get("split_format") or {}
    if split_format.get("timestamp_unit"):
        unit = split_format["timestamp_unit"]
        print(f"timestamps kept: split files are `user item timestamp` (unit {unit})")
    else:
        missing = split_format.get("missing_timestamps", 0)
        print(f"no timestamps kept ({missing:,} interaction(s) without one): files are `user item`")
    stats = json.loads((out / "stats.json").read_text())
    print(format_stats(stats | {"name": out.name, "source": str(out)}))
    print(
        f"\nwrote {out} (details in {out / 'prepare.json'}); train with "
        f"`oodrec train --dataset {out}`"
    )
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Handler of ``oodrec stats``: print the statistics of one dataset. Returns 0."""
    from oodrec.data.stats import dataset_stats

    stats = dataset_stats(
        args.dataset,
        data_dir=args.data_dir,
        on_bad_lines=args.on_bad_lines,
        verify_checksums=not args.no_verify,
    )
    if args.json:
        json.dump(stats, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_stats(stats))
    return 0


def format_stats(stats: dict) -> str:
    """A plain-text table of ``oodrec.data.stats.split_stats`` / ``dataset_stats`` output."""
    lines = [
        f"dataset {stats.get('name', '?')} ({stats.get('source', '')})",
        f"{stats['num_users']:,} users x {stats['num_items']:,} items, "
        f"{stats['interactions']:,} interactions, density {stats['density']:.2e}",
        "",
        f"{'split':<10}{'interactions':>13}{'users':>8}{'items':>8}{'density':>10}"
        f"{'item_gini':>11}{'train_pop':>11}",
    ]
    for name, s in stats["splits"].items():
        lines.append(
            f"{name:<10}{s['interactions']:>13,}{s['users']:>8,}{s['items']:>8,}"
            f"{s['density']:>10.2e}{s['item_gini']:>11.3f}{s['mean_train_item_popularity']:>11.1f}"
        )
    lines.append("(train_pop: mean training degree of the split's items, per interaction)")
    tv = [f"{k[len('tv_train_') :]} {v:.3f}" for k, v in stats.items() if k.startswith("tv_train_")]
    if tv:
        lines.append("total variation of item popularity vs train: " + ", ".join(tv))
    lines += [f"note: {n}" for n in stats.get("notes", [])]
    return "\n".join(lines)
