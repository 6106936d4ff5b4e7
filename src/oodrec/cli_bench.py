"""The ``bench``, ``tune``, ``report`` and ``archive`` subcommands (benchmark grids, searches,
their tables and figures, and copies of their results).

``add_bench_commands(subparsers)`` adds them to the ``oodrec`` parser; each handler takes the
parsed arguments and returns an exit code. Library errors (``OodrecError``) propagate to
``oodrec.cli.main``, which prints them without a traceback.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oodrec.bench.tune.workflow import TuneOutcome
    from oodrec.bench.workflow import Subset

BENCH_DESCRIPTION = """\
Run every (dataset, method, sweep point, seed) of a grid file into OUT/RUN_NAME, each exactly
as `oodrec train` would (config.yaml, epochs.jsonl, record.json, checkpoints/), plus a
bench.json naming the run's method and grid. Run names: DATASET-METHOD-seedN[-KEY=VALUE...].

Reruns are cheap: finished runs with the same config are skipped, unfinished ones (killed,
interrupted) resume from their last checkpoint, and a run directory holding a different
config is an error unless --force.

grid file keys: base (ExperimentConfig mapping or list of KEY=VALUE), methods (list of
{name, sampler, options, overrides} for lightgcn + a sampler, or {name, model, options,
overrides} for another method; a plain string names a sampler or a model), datasets, seeds,
sweep (KEY: [values], all combinations), out_dir. See configs/smoke.yaml, configs/paper.yaml
and configs/methods.yaml.
"""

BENCH_EPILOG = """\
examples:
  oodrec bench configs/smoke.yaml                        # tiny simulator grid, under a minute
  oodrec bench configs/paper.yaml --dry-run              # list runs and what would happen
  oodrec bench configs/paper.yaml --workers 2 --set train.threads=1
  oodrec bench configs/paper.yaml --set train.device=cuda          # runs per GPU: --workers auto
  oodrec bench configs/paper.yaml --set train.device=cuda --workers 8   # 8 runs share one GPU
  oodrec bench configs/paper.yaml --datasets yelp2018 --seeds 2,3  # part of it (same run dirs)
  oodrec bench configs/paper.yaml --executor ray --address auto    # on a Ray cluster
  oodrec report runs/paper --out results
"""

REPORT_DESCRIPTION = """\
Read the finished runs below RUNS_DIR (record.json, epochs.jsonl, bench.json; best
checkpoints for Figure 1) and write to OUT (default RUNS_DIR/report): table1 (OOD and IID
test R@10/20, N@10/20 per method and dataset, mean ± std over seeds, best bold, second
underlined, improvement of the target method over the strongest baseline with a paired t-test
p-value), ablation, alpha_beta and runtime tables, each as .md, .csv and .tex, report.md with
all tables, and figures/ (PNG and PDF). Val-selected and test-selected runs get separate
tables, each labelled. OUT/.oodrec-report.json lists the files written; a file the last report
wrote that this one does not (its runs are gone) is removed, and no other file is touched.

examples:
  oodrec report runs/paper --out results
  oodrec report runs/tune --baseline "rns (tuned, 12 trials)" --target cnsdiff
  oodrec report runs/tune --reselect ips_ndcg@20,strat_ndcg@20   # + Table 1 per estimator
"""

TUNE_DESCRIPTION = """\
Equal-budget hyperparameter search on validation, then the best configuration over seeds.

Every (dataset, method) of the grid gets one Optuna study with the same budget of finished
(complete or pruned) trials: a TPE sampler, and a median pruner that stops a trial whose val
selection metric (train.select_metric, e.g. ndcg@20 or an OOD-aware estimator) falls below the
median of earlier trials at the same evaluation. Tuning never reads a test split. Studies live in
one SQLite file (OUT/tune.db, or --storage URL), so a killed search resumes without repeating
finished trials (a trial cut off in the middle continues its run from the last checkpoint, once
its heartbeat is 90 s stale), and several workers share a study: --workers N local processes,
or Ray tasks with --executor ray (on a cluster, use a --storage every node reaches, e.g.
PostgreSQL; SQLite on a network file system is only safe where that file system supports POSIX
locks). A study records the config its trials start from; a later run with another grid or
--set value that changes results (the selection metric, the epoch cap, a fixed option) is
refused before anything trains, naming the key. Threads and device may change.

Once every study has its budget, the best values of each study run over the grid's seeds as
ordinary resumable grid runs, OUT/DATASET-METHOD-tuned-seedN, labelled
"METHOD (tuned, N trials)" in `oodrec report`, with the search space in the table notes.
The final run at the trials' seed (tune.seed) would repeat the best trial epoch for epoch, so
it gets a copy of that trial's finished run instead of training again (its bench.json names
the trial).
Where the epoch cap ended a study's best trial (`--status` warns), --final-epochs M (or
tune.final_epochs) runs the final runs with the larger cap M, early stopping on val as ever, as
OUT/DATASET-METHOD-tuned-Mep-seedN beside the others; a schedule that follows train.epochs
(CNSDiff's curriculum) keeps the trials' horizon, so only the cap changes.

The grid needs a tune: section:
  tune:
    trials: 12                  # the budget per study
    seed: 1                     # training seed of the trials
    startup_trials: 4           # random trials first; no pruning before
    warmup_evals: 2             # evaluations before a trial may be pruned
    final_epochs: 120           # optional: a larger epoch cap for the final runs only
    space:                      # every method
      train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
      train.l2: {low: 1.0e-6, high: 1.0e-3, log: true}
    methods:                    # per method, added to the shared space
      cnsdiff: {sampler.cl_weight: {low: 0.03, high: 1.0, log: true}}
"""

TUNE_EPILOG = """\
examples:
  oodrec tune configs/tune_smoke.yaml                    # tiny simulator search, a few minutes
  oodrec tune configs/tune.yaml --workers 2 --set train.threads=1
  oodrec tune configs/tune.yaml --status                 # budget, pruned, best values, finals done
  oodrec tune configs/tune.yaml --datasets food          # one dataset's studies and final runs
  oodrec tune configs/tune.yaml --final-epochs 120       # final runs with a larger cap
  oodrec tune configs/tune.yaml --executor ray --address auto --storage postgresql://...
  oodrec report runs/tune --baseline "rns (tuned, 12 trials)" --target cnsdiff
"""

ARCHIVE_DESCRIPTION = """\
Copy what a report needs of every finished run below SRC (config.yaml, resolved.yaml,
epochs.jsonl, record.json, resumes.json, bench.json; no checkpoints) to the same relative place
below DEST, and the study file tune.db of `oodrec tune` (a consistent SQLite backup, safe while
workers write it). A run of 20 epochs is about 40 kB, so a whole grid's results fit under
version control, and copying them back under runs/ on a fresh machine lets `oodrec bench` and
`oodrec tune` skip the runs that finished elsewhere and `oodrec report` cover them all.

No run is overwritten: a run DEST already holds with the same record.json is left as it is,
any other run there under the same name is a conflict, and a conflict stops the copy before
anything is written. A search's tune.db grows, so DEST's copy is replaced when it holds an
earlier state of SRC's studies (the same trials, those it had finished with the same results);
one with other trials is kept, and the summary says why. A copied search resumes where its copy
was made: finished trials stay done, a trial that was running starts again with its values.
Unfinished runs are left out and counted. A copied run has no checkpoints:
`oodrec evaluate` and the popularity-bucket figure, which reload the model, say so and skip it.

examples:
  oodrec archive runs/cnsdiff_sensitivity results/cnsdiff_sensitivity/runs    # keep the results
  oodrec archive results/cnsdiff_sensitivity/runs runs/cnsdiff_sensitivity    # later: restore,
  oodrec bench configs/cnsdiff_sensitivity.yaml                               # ... then resume
  oodrec archive runs/tune_ood /mnt/shared/tune_ood --dry-run    # what would be copied
  oodrec archive runs/tune_ood results/tune_ood/runs              # again as the search goes on
"""


def _add_subset_options(p: argparse.ArgumentParser, what: str) -> None:
    """--datasets / --methods / --seeds: run part of a grid (the same run names and configs)."""
    text = (
        f"Each takes a comma-separated list from the grid file. {what} Handy to split a grid "
        "across machines, or to finish one dataset first."
    )
    g = p.add_argument_group("part of the grid", textwrap.fill(text, 90))
    g.add_argument("--datasets", type=_names, metavar="A,B", help="only these datasets")
    g.add_argument("--methods", type=_names, metavar="A,B", help="only these method names")
    g.add_argument("--seeds", type=_seeds, metavar="1,2", help="only these seeds")


def _names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return names


def _workers(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workers takes a count or auto, got {text!r}") from None


def _seeds(text: str) -> list[int]:
    try:
        return [int(t) for t in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are integers, got {text!r}") from None


def _subset(args: argparse.Namespace) -> Subset:
    """The part of the grid that --datasets, --methods and --seeds name (a ``Subset``)."""
    from oodrec.bench.workflow import Subset

    return Subset(args.datasets, args.methods, args.seeds)


def add_bench_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench``, ``tune``, ``report`` and ``archive`` to the ``oodrec`` subcommands.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers``.
    """
    p = subparsers.add_parser(
        "bench",
        help="run a benchmark grid (resumable; local processes or Ray)",
        description=BENCH_DESCRIPTION,
        epilog=BENCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("grid", metavar="GRID.yaml", help="grid file")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument(
        "--workers",
        type=_workers,
        metavar="N|auto",
        help="local worker processes: a count, or auto (the default for runs on plain cuda): "
        "the first run on each GPU starts alone, and its peak memory, the GPU's free memory and "
        "its utilisation decide how many runs share the GPU (at most 8, and at most the CPU "
        "cores per GPU; the decision and its reasons are logged). CPU runs: default 1, in "
        "process",
    )
    p.add_argument("--address", help="Ray address (auto, HOST:PORT, ray://HOST:PORT)")
    p.add_argument("--cpus-per-run", type=int, default=1, help="CPUs per Ray task (default 1)")
    p.add_argument("--out", help="parent directory of the run directories (default: out_dir)")
    p.add_argument("--force", action="store_true", help="rerun runs whose saved config differs")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs and their state only (new, resume with the epochs done, skip, or "
        "CONFLICT with the differing keys), then count each state",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override applied to every run, repeatable (train.threads=1; "
        "track.kind=mlflow tracks every run, one MLflow experiment per grid)",
    )
    _add_subset_options(p, "Runs outside that part are neither run nor touched.")
    p.set_defaults(func=cmd_bench)

    p = subparsers.add_parser(
        "tune",
        help="equal-budget hyperparameter search on val (Optuna), then the best over seeds",
        description=TUNE_DESCRIPTION,
        epilog=TUNE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("grid", metavar="GRID.yaml", help="grid file with a tune: section")
    p.add_argument("--trials", type=int, help="budget per study (default: the grid's tune.trials)")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="workers sharing the studies, then the final runs (default 1)",
    )
    p.add_argument("--address", help="Ray address (auto, HOST:PORT, ray://HOST:PORT)")
    p.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs per Ray task (default 1)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/tune.db)")
    p.add_argument("--out", help="directory of trials and final runs (default: the grid's out_dir)")
    p.add_argument(
        "--status",
        action="store_true",
        help="print the studies' state only (trials, best values, final runs finished)",
    )
    p.add_argument("--no-final", action="store_true", help="search only; skip the runs over seeds")
    p.add_argument(
        "--trials-csv",
        metavar="FILE",
        help="also write every trial (state, val value, epochs, best epoch, run directory and "
        "searched values) to FILE, an audit of the search; with --status it trains nothing",
    )
    p.add_argument(
        "--estimators",
        metavar="FILE.md",
        help="also judge the val estimators (plain, IPS-weighted, stratified) on the search: per "
        "study, the trial and epoch each would pick among all trials' epochs, the OOD test there "
        "and its shortfall from the search's best (reads the test metric only for this "
        "analysis); with --status it trains nothing",
    )
    p.add_argument(
        "--final-epochs",
        type=int,
        metavar="N",
        help="epoch cap of the final runs only (default: the grid's tune.final_epochs, else the "
        "trials' train.epochs); for studies whose best trial the cap ended",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override applied to every trial and final run (train.threads=1; "
        "track.kind=mlflow tracks them, one MLflow experiment per study)",
    )
    _add_subset_options(
        p,
        "--datasets and --methods pick the studies (and their final runs), --seeds the final "
        "runs; the other studies are left alone.",
    )
    p.set_defaults(func=cmd_tune)

    p = subparsers.add_parser(
        "report",
        help="tables (Markdown, CSV, LaTeX) and figures from finished runs",
        description=REPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs_dir", metavar="RUNS_DIR", help="directory searched for finished runs")
    p.add_argument(
        "--out",
        help="output directory (default RUNS_DIR/report; the committed results/ is written "
        "only when named)",
    )
    p.add_argument(
        "--target", default="cnsdiff", help="proposed method's name for the improvement rows"
    )
    p.add_argument(
        "--baseline",
        help="compare the target with this method label (e.g. rns: 'does it beat uniform "
        "negatives?'); default: the strongest other method of each column",
    )
    p.add_argument(
        "--reselect",
        metavar="METRIC[,METRIC]",
        type=lambda s: [m for m in s.split(",") if m],
        help="also write Table 1 with every val-selected run's epoch re-picked on these logged "
        "val estimators (e.g. ips_ndcg@20,strat_ndcg@20), labelled post hoc: the runs "
        "stopped on their own selection metric. A run made with train.select_metric=METRIC "
        "is the real thing",
    )
    p.add_argument(
        "--figures",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw figures (default: when matplotlib is installed)",
    )
    p.add_argument("--data-dir", help="data directory for re-ranking checkpoints (Figure 1)")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser(
        "archive",
        help="copy finished runs' results (no checkpoints) to another directory",
        description=ARCHIVE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="directory searched for finished runs")
    p.add_argument("dest", metavar="DEST", help="where the copies go (created if missing)")
    p.add_argument("--dry-run", action="store_true", help="list what would be copied, copy nothing")
    p.set_defaults(func=cmd_archive)


def cmd_bench(args: argparse.Namespace) -> int:
    """Handler of ``oodrec bench``. Returns 0, or 1 when a run failed."""
    from oodrec.bench.workflow import BenchOptions, run_bench

    options = BenchOptions(
        subset=_subset(args),
        overrides=tuple(args.set),
        out=args.out,
        executor=args.executor,
        workers=args.workers,
        address=args.address,
        cpus_per_run=args.cpus_per_run,
        force=args.force,
        dry_run=args.dry_run,
        show_progress=not args.quiet,
    )
    outcome = run_bench(
        args.grid,
        options,
        on_start=lambda o: print(f"{o.runs} run(s) -> {o.out_dir}", file=sys.stderr),
    )
    if args.dry_run:
        for row in outcome.plan:
            print(f"{row.action:<9}{row.name}" + (f"  ({row.note})" if row.note else ""))
        states = outcome.plan_counts()
        summary = ", ".join(f"{v} {k}" for k, v in states.items())
        print(f"{outcome.runs} run(s) in {outcome.out_dir}: {summary}")
        if "CONFLICT" in states:
            print(
                "a CONFLICT run holds another config: pass the --set values it ran with (an "
                "unfinished run resumes only with the same train.threads and train.device), "
                "--force to rerun it, or another --out",
                file=sys.stderr,
            )
        return 0
    if outcome.interrupted:
        print("\ninterrupted; rerun the same command to continue the grid", file=sys.stderr)
        return 130
    counts = outcome.status_counts()
    print(", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return _finish(outcome.outcomes, outcome.out_dir)


def _finish(outcomes: list, out_dir: str) -> int:
    """Name each failed run with its error's last line; 1 when any failed, else 0."""
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        last = (o.error or "").strip().splitlines()[-1:] or ["?"]
        print(f"FAILED {o.name}: {last[0]}", file=sys.stderr)
    if failed:
        print(
            "fix what the messages above name, then rerun the same command: it retries the "
            "failed runs and skips the finished ones",
            file=sys.stderr,
        )
        return 1
    print(f"tables and figures: oodrec report {out_dir}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """Handler of ``oodrec tune``. Returns 0, or 1 when a final run failed."""
    from oodrec.bench.tune.workflow import TuneOptions, run_tune

    options = TuneOptions(
        subset=_subset(args),
        trials=args.trials,
        final_epochs=args.final_epochs,
        out=args.out,
        storage=args.storage,
        overrides=tuple(args.set),
        status=args.status,
        no_final=args.no_final,
        executor=args.executor,
        workers=args.workers,
        address=args.address,
        cpus_per_worker=args.cpus_per_worker,
        trials_csv=args.trials_csv,
        estimators=args.estimators,
        show_progress=not args.quiet,
    )
    outcome = run_tune(
        args.grid, options, on_stage=lambda stage, o: _print_tune_stage(stage, o, args.status)
    )
    if outcome.interrupted:
        print("\ninterrupted; rerun the same command to continue the search", file=sys.stderr)
        return 130
    if outcome.outcomes is None:  # --status, --no-final: no final runs
        return 0
    return _finish(outcome.outcomes, outcome.out_dir)


def _print_tune_stage(stage: str, o: TuneOutcome, status: bool) -> None:
    """Print what ``oodrec tune`` shows of a stage of ``run_tune`` (``o``: its ``TuneOutcome``;
    ``status``: ``--status``)."""
    if stage == "studies":
        for note in o.notes:
            print(f"note: {note}", file=sys.stderr)
        if not status:
            print(f"{len(o.jobs)} studies x {o.budget} trials -> {o.url}", file=sys.stderr)
    elif stage == "summary":
        _print_tune_summary(o)
    elif stage == "finals":
        print(f"{len(o.final_runs)} final run(s) -> {o.out_dir}", file=sys.stderr)
        for name, trial in o.adopted:
            print(
                f"{name}: the best trial's run ({trial}) has its config and seed; copied, not "
                "trained again",
                file=sys.stderr,
            )


def _print_tune_summary(o: TuneOutcome) -> None:
    """The studies' table, the files written, the running trials and the epoch-cap warnings."""
    print(
        f"{'study':<28}{'finished':>10}{'pruned':>8}{'running':>9}{'finals':>8}  best val"
        "      values"
    )
    for r, done_finals in zip(o.rows, o.finals_done):
        best = "-" if r["best_value"] is None else f"{r['metric']} {r['best_value']:.4f}"
        values = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in (r["best_params"] or {}).items()
        )
        done = f"{r['finished']:>5}/{r['budget']:<4}"
        finals = f"{done_finals}/{len(o.seeds)}"
        print(
            f"{r['study']:<28}{done}{r['pruned']:>8}{r['running']:>9}{finals:>8}  {best:<13} "
            f"{values}"
        )
    if o.trials_csv is not None:
        print(f"trials -> {o.trials_csv}", file=sys.stderr)
    if o.estimators is not None:
        print(f"estimators on the search -> {o.estimators}", file=sys.stderr)
    if o.running:
        from oodrec.bench.tune.inspection import format_running

        print("running trials (a worker killed mid-trial leaves one; it continues later):")
        for row in o.running:
            print(format_running(row))
    for study, where in o.capped:
        print(
            f"warning: {study}: the epoch cap ended its best trial before early stopping "
            f"({where}), so its final runs may be held back by the cap; reports "
            "flag such rows; --final-epochs N gives the final runs a larger cap (a larger "
            "train.epochs for the trials needs a new search, --out elsewhere)",
            file=sys.stderr,
        )


def cmd_report(args: argparse.Namespace) -> int:
    """Handler of ``oodrec report``. Returns 0."""
    from oodrec.bench.workflow import make_report

    outcome = make_report(
        args.runs_dir,
        args.out,
        target=args.target,
        baseline=args.baseline,
        reselect=args.reselect,
        figures=args.figures,
        data_dir=args.data_dir,
    )
    if outcome.figures_skipped:
        print(f"figures skipped: {outcome.figures_skipped}", file=sys.stderr)
    for path in outcome.written:
        print(path)
    for path in outcome.removed:
        print(
            f"removed {path} (the last report wrote it; this one has nothing for it)",
            file=sys.stderr,
        )
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    """Handler of ``oodrec archive``. Returns 0 (a conflict is a RunError: exit 2)."""
    from oodrec.bench.archive import archive_runs

    plan = archive_runs(args.src, args.dest, dry_run=args.dry_run)
    if args.dry_run:
        for rel in plan.copy:
            print(f"copy     {rel}")
        for rel in plan.same:
            print(f"there    {rel}")
        for rel in plan.unfinished:
            print(f"skip     {rel}  (unfinished)")
        print("dry run: " + plan.summary(done=False))
        return 0
    print(plan.summary())
    return 0
