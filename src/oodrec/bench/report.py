"""Tables from finished runs: Table 1, ablation, runtime and Beta-schedule (alpha/beta).

Reads only ``record.json``, ``epochs.jsonl`` and ``bench.json`` (``records.load_runs``). Every
table is built for one selection label (val-selected and test-selected runs are never mixed)
and states that label. Values are mean ± sample std over seeds.

Table 1 (one per split, OOD test and IID test): rows = methods, column groups = datasets,
columns R@10, R@20, N@10, N@20. It holds the runs without a sweep point and with every ablation
switch on. Two extra rows compare, per column, the *target* method (label containing
``target``, e.g. ``cnsdiff``; among several such variants, the one with the best mean selection
value of the dataset, e.g. val NDCG@20) with the strongest baseline (every other method): the
relative improvement in % and the p-value of a paired t-test over their common seeds.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from oodrec.bench.estimator_check import estimator_table
from oodrec.bench.records import RunRecord, by_selection, is_main_run, load_runs
from oodrec.bench.render import Cell, Table, rank_styles, to_csv, to_latex, to_markdown
from oodrec.bench.stats import mean_std, paired_ttest
from oodrec.bench.tables import (
    METRICS,
    SHORT,
    SPLITS,
    ablation_table,
    alpha_beta_table,
    fmt_mean_std,
    group_by,
    mean_of,
    runtime_table,
    seed_values,
)

logger = logging.getLogger(__name__)


def order_methods(labels: set[str], target: str) -> list[str]:
    """Baselines alphabetically, then the target's variants."""
    return sorted(labels, key=lambda m: (is_target(m, target), m))


def is_target(label: str, target: str) -> bool:
    """Whether a method label names the target method (case-insensitive substring)."""
    return target.lower() in label.lower()


# --------------------------------------------------------------------------- Table 1


@dataclass
class _Column:
    dataset: str
    metric: str
    values: dict[str, dict[int, float]] = field(default_factory=dict)  # method -> seed -> v


def target_by_selection(runs: list[RunRecord], target: str) -> dict[str, str]:
    """Per dataset, the target's variant (label named like ``target``) with the best mean of the
    value each run was selected on (its ``selection`` split and metric, e.g. val NDCG@20).

    The improvement rows compare this variant in every column, so the choice among the target's
    variants never reads a test split (of val-selected runs). Datasets whose target runs record
    no selection value are left out (the rows then fall back to the best variant per column).
    """
    scores: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        if not is_target(run.label, target):
            continue
        sel = run.record.get("selection", {})
        value = run.metric(str(sel.get("split", "val")), str(sel.get("metric", "")))
        if value is not None:
            scores.setdefault(run.dataset, {}).setdefault(run.label, []).append(value)
    return {
        ds: max(by_label, key=lambda m: statistics.fmean(by_label[m]))
        for ds, by_label in scores.items()
    }


def _comparison(
    col: _Column, target: str, baseline: str | None = None, chosen: str | None = None
) -> dict:
    """A target vs a baseline of one column: improvement % and paired p-value. The target is
    ``chosen`` (``target_by_selection``) when given, else the best variant of the column. The
    baseline is the method labelled exactly ``baseline`` when given, else the strongest other
    method of the column."""
    means = {m: statistics.fmean(v.values()) for m, v in col.values.items() if v}
    targets = [m for m in means if is_target(m, target)]
    if chosen in targets:
        targets = [chosen]
    if baseline is not None:
        baselines = [m for m in means if m == baseline and not is_target(m, target)]
    else:
        baselines = [m for m in means if not is_target(m, target)]
    if not targets or not baselines:
        return {}
    best_t = max(targets, key=means.__getitem__)
    best_b = max(baselines, key=means.__getitem__)
    imp = (means[best_t] - means[best_b]) / means[best_b] * 100 if means[best_b] else None
    seeds = sorted(set(col.values[best_t]) & set(col.values[best_b]))
    p = None
    if len(seeds) >= 2:
        a = [col.values[best_t][s] for s in seeds]
        b = [col.values[best_b][s] for s in seeds]
        p = paired_ttest(a, b)[1]
    return {"target": best_t, "baseline": best_b, "improvement": imp, "p": p, "paired": seeds}


def _no_comparison_reason(cols: list[_Column], target: str, baseline: str | None) -> str:
    """Why no column has a target and a baseline, in terms of the report's two options."""
    labels = sorted({m for col in cols for m, v in col.values.items() if v})
    methods = ", ".join(labels)
    if not any(is_target(m, target) for m in labels):
        return f"no method is named like the target {target!r} (--target; methods: {methods})"
    if baseline is None:
        return f"every method is named like the target {target!r}, so none is left to compare with"
    if baseline not in labels:
        return f"no method {baseline!r} (--baseline; methods: {methods})"
    if is_target(baseline, target):
        return (
            f"the baseline {baseline!r} is itself named like the target {target!r}; "
            "choose a --target that names other methods only"
        )
    return f"no dataset has runs of both a method named like {target!r} and {baseline!r}"


def table1(
    runs: list[RunRecord], split: str, target: str, baseline: str | None = None
) -> Table | None:
    """Table 1 for one selection label and one split (None without main runs).

    Args:
        runs: runs of one selection label.
        split: ``ood_test`` or ``iid_test``.
        target: name of the proposed method (label substring).

    Returns:
        The table, with improvement and p-value rows when both target and baselines exist.
    """
    main = [r for r in runs if is_main_run(r)]
    if not main:
        return None
    selection = main[0].selection
    datasets = sorted({r.dataset for r in main})
    methods = order_methods({r.label for r in main}, target)
    groups = group_by(main, lambda r: f"{r.dataset}\0{r.label}")
    cols = [_Column(d, m) for d in datasets for m in METRICS]
    for col in cols:
        for method in methods:
            col.values[method] = seed_values(
                groups.get(f"{col.dataset}\0{method}", []), split, col.metric
            )
    table = Table(
        title=f"{SPLITS[split]} Recall@K / NDCG@K (mean ± std over seeds)",
        selection=selection,
        label_columns=["method"],
        columns=[SHORT[m] for m in METRICS] * len(datasets),
        groups=[(d, len(METRICS)) for d in datasets],
    )
    styles = [rank_styles([mean_of(col.values[m]) for m in methods]) for col in cols]
    for i, method in enumerate(methods):
        row = [Cell(method)]
        for col, st in zip(cols, styles):
            vals = col.values[method]
            row.append(Cell(fmt_mean_std(list(vals.values())) if vals else "–", st[i]))
            if vals:
                mean, std = mean_std(list(vals.values()))
                table.tidy.append(
                    dict(
                        table="table1",
                        selection=selection,
                        split=split,
                        dataset=col.dataset,
                        method=method,
                        metric=col.metric,
                        mean=mean,
                        std=std,
                        n=len(vals),
                        seeds=" ".join(map(str, sorted(vals))),
                        values=" ".join(repr(vals[s]) for s in sorted(vals)),
                        style=st[i],
                    )
                )
        table.rows.append(row)
    picks = target_by_selection(main, target)
    _add_comparison_rows(table, cols, target, selection, split, baseline, picks)
    table.notes += tuning_notes(main)
    table.notes += cap_notes(main)
    skipped = len(runs) - len(main)
    if skipped:
        table.notes.append(
            f"{skipped} run(s) with a sweep point or an ablation switch off are "
            "left out (see the ablation and alpha/beta tables, Figure 4)"
        )
    return table


def tuning_notes(runs: list[RunRecord]) -> list[str]:
    """One note per tuned method label: budget, selection metric, pruned trials (per dataset:
    each (dataset, method) has its own study), search space, and a larger final-run cap."""
    groups = group_by([r for r in runs if r.bench.get("tuning")], lambda r: r.label)
    notes = []
    for label, group in sorted(groups.items()):
        info = group[0].bench["tuning"]
        pruned = {r.dataset: r.bench["tuning"]["pruned"] for r in group}
        if len(pruned) == 1:
            pruned_text = f"{next(iter(pruned.values()))} pruned"
        else:
            pruned_text = "pruned: " + ", ".join(f"{d} {n}" for d, n in sorted(pruned.items()))
        cap = info.get("final_epochs")
        notes.append(
            f"{label}: best of {info['budget']} trials on {info['metric']} (Optuna TPE, median "
            f"pruning; {pruned_text}) over {'; '.join(info['space'])}"
            + (
                f"; final runs capped at {cap} epochs, trials at {info['trial_epochs']}"
                if cap
                else ""
            )
        )
    return notes


def cap_notes(runs: list[RunRecord]) -> list[str]:
    """One note per (dataset, method) with runs the epoch cap ended (``RunRecord.capped``)."""
    groups = group_by([r for r in runs if r.capped], lambda r: f"{r.dataset}\0{r.label}")
    notes = []
    for key, group in sorted(groups.items()):
        dataset, label = key.split("\0")
        group = sorted(group, key=lambda r: r.seed)
        total = sum(1 for r in runs if r.dataset == dataset and r.label == label)
        epochs = ", ".join(str(r.record["best_epoch"]) for r in group)
        notes.append(
            f"epoch cap binds: {label} on {dataset}, {len(group)} of {total} seed(s) ended by "
            f"the cap before early stopping (best epochs {epochs} of "
            f"{group[0].config['train']['epochs']}); more epochs may change its row"
        )
    return notes


def _add_comparison_rows(
    table: Table,
    cols: list[_Column],
    target: str,
    selection: str,
    split: str,
    baseline: str | None = None,
    picks: dict[str, str] | None = None,
) -> None:
    picks = picks or {}
    comps = [_comparison(col, target, baseline, picks.get(col.dataset)) for col in cols]
    against = f"method {baseline!r}" if baseline else "the strongest other method"
    if not any(comps):
        table.notes.append(f"no improvement row: {_no_comparison_reason(cols, target, baseline)}")
        return
    imp_row, p_row = [Cell("Improv. (%)")], [Cell("p-value")]
    for col, comp in zip(cols, comps):
        imp, p = comp.get("improvement"), comp.get("p")
        imp_row.append(Cell("–" if imp is None else f"{imp:+.2f}%"))
        p_row.append(Cell("–" if p is None else f"{p:.3g}"))
        if comp:
            table.tidy.append(
                dict(
                    table="table1",
                    selection=selection,
                    split=split,
                    dataset=col.dataset,
                    method="improvement_pct",
                    metric=col.metric,
                    mean=imp,
                    target=comp["target"],
                    baseline=comp["baseline"],
                    p_value=p,
                    seeds=" ".join(map(str, comp["paired"])),
                )
            )
    table.rows += [imp_row, p_row]
    variants = {c["target"] for c in comps if c}
    if len(variants) > 1 or picks:
        chosen = "; ".join(f"{d}: {m}" for d, m in sorted(picks.items()))
        who = (
            f"the method named like {target!r} with the best mean selection value of each "
            f"dataset ({chosen}; chosen as the runs were selected, never on a test split)"
        )
    else:
        who = f"method {next(iter(variants))!r}"
    table.notes.append(
        f"Improv.: {who} vs {against}, per column; "
        "p-value: two-sided paired t-test over their common seeds (– with fewer than 2)"
    )


# --------------------------------------------------------------------------- report


def build_tables(
    runs: list[RunRecord], target: str = "cnsdiff", baseline: str | None = None
) -> dict[str, list[Table]]:
    """All tables by kind (``table1``, ``ablation``, ``alpha_beta``, ``runtime``).

    Args:
        runs: finished runs (any selection labels; each label gets its own tables).
        target: the proposed method's name for the improvement rows.
        baseline: compare with this method label (default: the strongest other method).

    Returns:
        Kind -> tables (kinds without any table are left out).
    """
    from oodrec.bench.reselect import is_post_hoc

    out: dict[str, list[Table]] = {}
    for _, group in by_selection(runs).items():
        candidates = {"table1": [table1(group, split, target, baseline) for split in SPLITS]}
        if not is_post_hoc(group[0]):  # re-selected copies: only their Table 1 differs
            candidates |= {
                "ablation": [ablation_table(group)],
                "alpha_beta": [alpha_beta_table(group)],
                "runtime": [runtime_table(group)],
                "estimators": [estimator_table(group, m) for m in ("ndcg@20", "recall@20")],
            }
        for kind, tables in candidates.items():
            out.setdefault(kind, []).extend(t for t in tables if t is not None)
    return {k: v for k, v in out.items() if v}


def write_report(
    runs_dir: str | Path,
    out_dir: str | Path,
    target: str = "cnsdiff",
    baseline: str | None = None,
    reselect: list[str] | None = None,
) -> list[Path]:
    """Write ``KIND.md``, ``KIND.csv``, ``KIND.tex`` per table kind and ``report.md`` (the
    tables, then each dataset's interaction order, ``RunRecord.order``, and the data warnings).

    Args:
        runs_dir: directory searched recursively for finished runs.
        out_dir: output directory (created).
        target: the proposed method's name for the improvement rows.
        baseline: compare with this method label (default: the strongest other method).
        reselect: val estimators (e.g. ``ips_ndcg@20``) that also get Table 1 from copies of
            the val-selected runs re-selected post hoc on them (``bench.reselect``).

    Returns:
        The written files.

    Raises:
        RunError: no finished run below ``runs_dir``.
        ConfigError: a ``reselect`` metric no run logs.
    """
    from oodrec.errors import RunError

    runs = load_runs(runs_dir)
    if not runs:
        raise RunError(f"no finished run (record.json) below {runs_dir}")
    if reselect:
        from oodrec.bench.reselect import reselect_all

        runs = runs + reselect_all(runs, reselect)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = build_tables(runs, target, baseline)
    written = []
    summary = [f"# Benchmark report: {len(runs)} run(s) from {runs_dir}", ""]
    for kind, kind_tables in tables.items():
        md = "\n".join(to_markdown(t) for t in kind_tables)
        for suffix, text in (
            (".md", md),
            (".csv", to_csv(kind_tables)),
            (".tex", "\n".join(to_latex(t) for t in kind_tables)),
        ):
            (out / f"{kind}{suffix}").write_text(text)
            written.append(out / f"{kind}{suffix}")
        summary += [md]
    missing = [k for k in ("table1", "ablation", "alpha_beta", "runtime") if k not in tables]
    summary += [f"- no {k} table: no matching runs" for k in missing]
    orders = sorted({f"{r.dataset}: {r.order}" for r in runs})
    summary += ["", "## Interaction order", "", *[f"- {line}" for line in orders]]
    warned = sorted({f"{r.dataset}: {w}" for r in runs for w in r.record.get("data_warnings", [])})
    if warned:
        summary += ["", "## Data warnings", "", *[f"- {w}" for w in warned]]
    (out / "report.md").write_text("\n".join(summary).rstrip() + "\n")
    written.append(out / "report.md")
    logger.info("wrote %d file(s) to %s", len(written), out)
    return written


MANIFEST = ".oodrec-report.json"
"""The list of files the last ``oodrec report`` wrote into its output directory."""


def prune_stale(out_dir: str | Path, written: list[Path], keep: tuple[str, ...] = ()) -> list[Path]:
    """Remove the files that the previous report into ``out_dir`` wrote and this one did not
    (a figure or table kind whose runs are gone), then record ``written`` as the new manifest.

    Only files named in the previous manifest are touched, so hand-written files (a README) and
    a directory written before manifests existed are left alone.

    Args:
        out_dir: the report's output directory.
        written: the files this report wrote.
        keep: relative folders whose old files stay (parts this report did not draw, e.g.
            ``figures`` when figures were skipped); they stay in the manifest.

    Returns:
        The removed files.
    """
    import json

    from oodrec.runs import atomic_write_text

    out = Path(out_dir)
    manifest = out / MANIFEST
    now = {Path(p).resolve().relative_to(out.resolve()).as_posix() for p in written}
    try:
        before = set(json.loads(manifest.read_text()))
    except (OSError, ValueError, TypeError):
        before = set()  # no manifest (first report, or one from before manifests): keep all
    kept = {f for f in before if f.split("/", 1)[0] in keep}
    removed = []
    for name in sorted(before - now - kept):
        path = out / name
        if path.is_file():
            path.unlink()
            removed.append(path)
    atomic_write_text(manifest, json.dumps(sorted(now | kept), indent=1) + "\n")
    return removed


__all__ = [
    "target_by_selection",
    "MANIFEST",
    "prune_stale",
    "build_tables",
    "cap_notes",
    "is_target",
    "order_methods",
    "table1",
    "write_report",
]
