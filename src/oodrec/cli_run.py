"""``oodrec recommend`` and ``oodrec export``: a trained run's lists and vectors, in the user's
own ids. Parsing and printing only; the work is ``oodrec.recommend``."""

from __future__ import annotations

import argparse
import sys

RECOMMEND_HELP = """\
Write each user's top-K items of a finished (or stopped) run, in the dataset's own ids (the
id maps `oodrec prepare` writes; integer ids where a dataset has none). The lists use the run's
scorer and the evaluator's masking, so they are the lists its metrics were computed on.

output: FILE's suffix picks the format: .csv, .parquet or .jsonl; columns user, rank, item,
score. The file is written user batch by user batch into a temporary file, renamed into place
when complete.

users without training history are skipped and counted: every method scores a user from their
training history.

examples:
  oodrec recommend runs/food-rns-seed1 --k 20 --out recs.csv
  oodrec recommend runs/food-rns-seed1 --users 3,17,42 --exclude seen --out recs.jsonl
  oodrec recommend runs/food-rns-seed1 --candidates shown.txt --out recs.parquet
"""

EXPORT_HELP = """\
Write a run's user and item vectors for a vector index: user_embeddings.npy [U, d],
item_embeddings.npy [I, d] (row k = the id on line k of user_ids.txt / item_ids.txt) and
export.json, which says how a score follows from two rows (inner product for LightGCN-based
methods; a hyperbolic distance for HDRM). Methods whose scores are not a function of one vector
per user and item (DiffRec, CDR) write the id files and say so.
"""


def add_run_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``recommend`` and ``export``."""
    p = sub.add_parser(
        "recommend",
        help="write each user's top-K items of a run (in the dataset's own ids)",
        description=RECOMMEND_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN", help="a run directory")
    p.add_argument("--out", required=True, metavar="FILE", help="output .csv, .parquet or .jsonl")
    p.add_argument("--k", type=int, default=20, help="items per user (default 20)")
    p.add_argument(
        "--users",
        default="all",
        help="all (default), a comma-separated list (3,17,42) or a file with one id a line",
    )
    p.add_argument(
        "--exclude",
        choices=["train", "seen", "none"],
        default="train",
        help="items left out of a user's list: train (default; as val's evaluation), seen "
        "(train + val; as the test splits' evaluation) or none",
    )
    p.add_argument(
        "--candidates",
        metavar="FILE",
        help="rank only these 'user item' pairs (one a line; the candidate protocol's files "
        "work as they are)",
    )
    p.add_argument(
        "--checkpoint",
        choices=["best", "last"],
        default="best",
        help="best (the selected epoch, default) or last",
    )
    p.add_argument(
        "--on-unknown",
        choices=["error", "skip"],
        default="error",
        help="an id the run does not know: error (default), or skip and count it",
    )
    p.add_argument("--batch-size", type=int, help="users per batch (default eval.user_batch_size)")
    p.add_argument("--data-dir", help="where the run's dataset is (default: the run's)")
    p.add_argument("--device", help="score on this device (default: the run's train.device)")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser(
        "export",
        help="write a run's user and item vectors with their ids",
        description=EXPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN", help="a run directory")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--data-dir", help="where the run's dataset is (default: the run's)")
    p.add_argument("--device", help="compute on this device (default: the run's train.device)")
    p.set_defaults(func=cmd_export)


def _shown(ids: list[str], limit: int = 10) -> str:
    return ", ".join(ids[:limit]) + (f" ... ({len(ids)} in all)" if len(ids) > limit else "")


def cmd_recommend(args: argparse.Namespace) -> int:
    from oodrec.errors import ConfigError
    from oodrec.recommend import check_output, recommend
    from oodrec.train.reload import load_run

    if args.k < 1:
        raise ConfigError(f"--k must be >= 1, got {args.k}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_output(args.out)  # before the run is loaded
    run = load_run(args.run_dir, args.data_dir, args.device, checkpoint=args.checkpoint)
    summary, _ = recommend(
        run,
        args.out,
        users=args.users,
        k=args.k,
        exclude=args.exclude,
        candidates=args.candidates,
        on_unknown=args.on_unknown,
        batch_size=args.batch_size,
        checkpoint=args.checkpoint,
    )
    print(
        f"{summary.path}: {summary.rows} rows, top-{summary.k} of {summary.written} user(s) "
        f"({summary.checkpoint} checkpoint, epoch {summary.epoch}; excluded: {summary.exclude}) "
        f"in {summary.seconds:.1f} s"
    )
    if summary.unknown:
        print(f"skipped {len(summary.unknown)} unknown id(s): {_shown(summary.unknown)}")
    if summary.bad_candidates:
        print(f"skipped {summary.bad_candidates} candidate line(s) with an unknown id")
    if summary.cold:
        print(
            f"skipped {len(summary.cold)} user(s) without training history (the run cannot "
            f"score them): {_shown(summary.cold)}",
            file=sys.stderr,
        )
    if summary.short:
        print(f"{summary.short} user(s) have fewer than {summary.k} rankable items")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from oodrec.paths import check_out_dir
    from oodrec.recommend import export
    from oodrec.train.reload import load_run

    check_out_dir(args.out)  # before the run is loaded
    run = load_run(args.run_dir, args.data_dir, args.device, checkpoint=args.checkpoint)
    summary = export(run, args.out)
    print(f"{summary.out}: {', '.join(summary.files)}")
    print(summary.note)
    return 0


__all__ = ["add_run_commands"]
