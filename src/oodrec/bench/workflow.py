"""The ``oodrec bench`` and ``oodrec report`` workflows: one call each, returning what happened
for the command line to print. Nothing here prints.

``run_bench`` runs a grid file (or part of it, :class:`Subset`), or only says what each run
would do (``dry_run``). ``make_report`` writes the tables of the finished runs below a
directory, the figures where matplotlib is installed, and removes the files of the previous
report that this one no longer writes. The tuning workflow is ``oodrec.bench.tune.workflow``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from oodrec.bench.executors import run_grid
from oodrec.bench.grid import GridSpec, expand_grid, load_grid, restrict_grid
from oodrec.bench.runner import Preview, RunOutcome, preview_grid
from oodrec.errors import ConfigError

PLOTS_MISSING = "figures need matplotlib: pip install 'oodrec[plots]'"


@dataclass(frozen=True)
class Subset:
    """Part of a grid: only the named datasets, method names and seeds (None: all of them).
    Run names and configs stay those of the whole grid."""

    datasets: list[str] | None = None
    methods: list[str] | None = None
    seeds: list[int] | None = None

    def of(self, spec: GridSpec) -> GridSpec:
        """``spec`` restricted to this part (``grid.restrict_grid``)."""
        return restrict_grid(spec, self.datasets, self.methods, self.seeds)


@dataclass(frozen=True)
class BenchOptions:
    """The options of ``oodrec bench``.

    Attributes:
        subset: the part of the grid to run.
        overrides: dotted ``KEY=VALUE`` overrides applied to every run.
        out: parent directory of the run directories (None: the grid's ``out_dir``).
        executor: ``local`` or ``ray``.
        workers: local worker processes: a count, ``auto`` (runs per GPU from a probe run,
            ``executors.run_local``) or None (``auto`` for runs on plain ``cuda``, else 1).
        address: Ray address.
        cpus_per_run: CPUs per Ray task.
        force: rerun runs whose saved config differs.
        dry_run: only say what each run would do.
        show_progress: draw a progress bar over the grid.
    """

    subset: Subset = field(default_factory=Subset)
    overrides: tuple[str, ...] = ()
    out: str | None = None
    executor: Literal["local", "ray"] = "local"
    workers: int | Literal["auto"] | None = None
    address: str | None = None
    cpus_per_run: int = 1
    force: bool = False
    dry_run: bool = False
    show_progress: bool = True


@dataclass
class BenchOutcome:
    """What ``run_bench`` did.

    Attributes:
        out_dir: parent directory of the run directories.
        runs: number of runs in the (part of the) grid.
        plan: what each run would do, in grid order (``dry_run`` only).
        outcomes: the runs' outcomes (empty for a dry run or an interrupted grid).
        interrupted: Ctrl-C stopped the grid (rerunning the command continues it).
    """

    out_dir: str
    runs: int
    plan: list[Preview] = field(default_factory=list)
    outcomes: list[RunOutcome] = field(default_factory=list)
    interrupted: bool = False

    def plan_counts(self) -> dict[str, int]:
        """Runs per planned action, in the order the actions first occur in ``plan``."""
        counts: dict[str, int] = {}
        for row in self.plan:
            counts[row.action] = counts.get(row.action, 0) + 1
        return counts

    def status_counts(self) -> dict[str, int]:
        """Runs per outcome status (``finished``, ``resumed``, ``skipped``, ``failed``)."""
        counts: dict[str, int] = {}
        for o in self.outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        return counts

    @property
    def failed(self) -> list[RunOutcome]:
        """The outcomes of the runs that failed."""
        return [o for o in self.outcomes if o.status == "failed"]


def run_bench(
    grid_path: str | Path,
    options: BenchOptions,
    on_start: Callable[[BenchOutcome], None] | None = None,
) -> BenchOutcome:
    """Run the grid file ``grid_path`` (``executors.run_grid``), or plan it with ``dry_run``.

    Args:
        grid_path: the grid file.
        options: see :class:`BenchOptions`.
        on_start: called with the outcome (its ``out_dir`` and ``runs``) before the first run
            starts; not for a dry run.

    Returns:
        The outcome; ``interrupted`` when Ctrl-C stopped the grid.

    Raises:
        ConfigError: a bad grid, override or option (``workers`` below 1, or neither a count
            nor ``auto``).
        RunError: a run directory holds another config and ``force`` is off.
    """
    from oodrec.paths import check_out_dir

    if options.workers != "auto" and options.workers is not None:
        if isinstance(options.workers, bool) or not isinstance(options.workers, int):
            raise ConfigError(f"--workers must be a count or 'auto', got {options.workers!r}")
        if options.workers < 1:
            raise ConfigError(f"--workers must be >= 1 or 'auto', got {options.workers}")
    if options.cpus_per_run < 1:
        raise ConfigError(f"--cpus-per-run must be >= 1, got {options.cpus_per_run}")
    spec = options.subset.of(load_grid(grid_path))
    runs = expand_grid(spec, list(options.overrides), options.out)
    outcome = BenchOutcome(out_dir=options.out or spec.out_dir, runs=len(runs))
    check_out_dir(outcome.out_dir, "--out" if options.out else f"{grid_path}: out_dir")
    if options.dry_run:
        outcome.plan = preview_grid(runs, outcome.out_dir, options.force)
        return outcome
    if on_start is not None:
        on_start(outcome)
    try:
        outcome.outcomes = run_grid(
            runs,
            executor=options.executor,
            workers=options.workers,
            address=options.address,
            cpus_per_run=options.cpus_per_run,
            force=options.force,
            grid=str(grid_path),
            show_progress=options.show_progress,
        )
    except KeyboardInterrupt:
        outcome.interrupted = True
    return outcome


@dataclass
class ReportOutcome:
    """What ``make_report`` did.

    Attributes:
        out: the report's directory.
        written: every file written (tables, then figures).
        removed: files of the previous report that this one no longer writes, now removed.
        figures_skipped: why no figures were drawn when matplotlib is missing (else None).
    """

    out: Path
    written: list[Path]
    removed: list[Path]
    figures_skipped: str | None = None


def make_report(
    runs_dir: str | Path,
    out: str | Path | None = None,
    *,
    target: str = "cnsdiff",
    baseline: str | None = None,
    reselect: list[str] | None = None,
    figures: bool | None = None,
    data_dir: str | None = None,
) -> ReportOutcome:
    """Write the report of the finished runs below ``runs_dir`` into ``out``.

    Args:
        runs_dir: directory searched for finished runs.
        out: output directory (None: ``RUNS_DIR/report``).
        target, baseline, reselect: see ``report.write_report``.
        figures: draw figures (None: when matplotlib is installed; False: never).
        data_dir: data directory for re-ranking checkpoints (Figure 1).

    Raises:
        ConfigError: ``runs_dir`` is missing or a file, ``out`` (or its ``figures``) is a file
            (before anything is written); ``figures`` is True and matplotlib is missing (raised
            after the tables are written).
    """
    from oodrec.bench.report import prune_stale, write_report
    from oodrec.paths import check_in_dir, check_out_dir

    check_in_dir(runs_dir, "RUNS_DIR")
    what = "--out" if out else "the report directory"
    out = Path(out) if out else Path(runs_dir) / "report"
    check_out_dir(out, what)
    check_out_dir(out / "figures", what)
    written = write_report(runs_dir, out, target=target, baseline=baseline, reselect=reselect)
    skipped = None
    drew_figures = False
    if figures is not False:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            if figures:
                raise ConfigError(PLOTS_MISSING) from None
            skipped = PLOTS_MISSING
        else:
            from oodrec.bench.plots import write_figures

            written += write_figures(runs_dir, out / "figures", data_dir=data_dir)
            drew_figures = True
    removed = prune_stale(out, written, keep=() if drew_figures else ("figures",))
    return ReportOutcome(out, written, removed, skipped)


__all__ = [
    "PLOTS_MISSING",
    "BenchOptions",
    "BenchOutcome",
    "ReportOutcome",
    "Subset",
    "make_report",
    "run_bench",
]
