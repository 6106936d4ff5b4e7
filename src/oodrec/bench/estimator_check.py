"""Do the OOD-aware val estimators track the OOD test? Analysis of a grid's per-epoch logs.

For every dataset, each evaluated epoch of each run is a point with its val metrics (plain,
``ips_``, ``strat_``) and its OOD-test metric. Per estimator:

* **rho (pooled)**: Spearman rank correlation with the OOD-test metric over all points of the
  dataset (across epochs and methods, so both choices selection makes: when to stop, which run);
* **rho (within runs)**: the mean over runs of the correlation across a run's own epochs;
* **OOD at pick**: the OOD-test metric of the epoch each estimator would select (its maximum),
  averaged over runs, and **regret**, the mean relative shortfall from each run's best OOD epoch.

This reads the test metric only after the fact, to judge the estimators; the figures a report
states are still those of the epoch its selection rule picked, never the test-best epoch.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from oodrec.bench.records import RunRecord
from oodrec.bench.render import Cell, Table

ESTIMATOR_LABELS = {"": "plain val", "ips_": "IPS-weighted val", "strat_": "stratified val"}


def _points(run: RunRecord, metric: str, split: str) -> list[dict[str, float]]:
    keys = [f"val/{p}{metric}" for p in ESTIMATOR_LABELS] + [f"{split}/{metric}"]
    return [
        {k: float(row[k]) for k in keys}
        for row in run.epochs
        if all(isinstance(row.get(k), (int, float)) for k in keys)
    ]


def _spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(spearmanr(x, y).statistic)


def estimator_rows(
    runs: list[RunRecord], metric: str = "ndcg@20", split: str = "ood_test"
) -> list[dict[str, Any]]:
    """Per dataset and estimator: pooled and within-run rho, OOD at pick and regret (tidy rows).

    Runs whose ``epochs.jsonl`` lacks the estimator keys (older runs) are left out; a run needs
    at least 2 evaluated epochs.
    """
    by_dataset: dict[str, list[list[dict[str, float]]]] = {}
    for run in runs:
        pts = _points(run, metric, split)
        if len(pts) >= 2:
            by_dataset.setdefault(run.dataset, []).append(pts)
    out = []
    target = f"{split}/{metric}"
    for dataset in sorted(by_dataset):
        series = by_dataset[dataset]
        pooled = [p for s in series for p in s]
        for prefix, label in ESTIMATOR_LABELS.items():
            key = f"val/{prefix}{metric}"
            within = [
                r
                for s in series
                if not math.isnan(r := _spearman([p[key] for p in s], [p[target] for p in s]))
            ]
            picked, regret = [], []
            for s in series:
                best_at = max(range(len(s)), key=lambda i: s[i][key])  # first maximum
                value, best = s[best_at][target], max(p[target] for p in s)
                picked.append(value)
                regret.append((best - value) / best if best > 0 else 0.0)
            out.append(
                dict(
                    table="estimators",
                    dataset=dataset,
                    estimator=label,
                    metric=metric,
                    split=split,
                    runs=len(series),
                    points=len(pooled),
                    rho_pooled=_spearman([p[key] for p in pooled], [p[target] for p in pooled]),
                    rho_within=statistics.mean(within) if within else math.nan,
                    at_pick=statistics.mean(picked),
                    regret=statistics.mean(regret),
                )
            )
    return out


def estimator_table(
    runs: list[RunRecord], metric: str = "ndcg@20", split: str = "ood_test"
) -> Table | None:
    """The estimator-validation table (None when no run logged the estimators)."""
    rows = estimator_rows(runs, metric, split)
    if not rows:
        return None
    table = Table(
        title=f"Selection estimators against the {split.replace('_', ' ')} {metric}",
        selection=runs[0].selection,
        label_columns=["dataset", "estimator"],
        columns=[
            "runs",
            "epochs",
            "rho pooled",
            "rho within runs",
            f"OOD {metric} at pick",
            "regret",
        ],
    )
    for r in rows:
        cells = [
            r["dataset"],
            r["estimator"],
            str(r["runs"]),
            str(r["points"]),
            f"{r['rho_pooled']:+.3f}",
            f"{r['rho_within']:+.3f}",
            f"{r['at_pick']:.4f}",
            f"{100 * r['regret']:.1f}%",
        ]
        table.rows.append([Cell(c) for c in cells])
        table.tidy.append({**r, "selection": table.selection})
    table.notes.append(
        "rho: Spearman correlation of the val estimator with the test metric, over every "
        "evaluated epoch of every run of the dataset (pooled) or within each run (mean); at "
        "pick: the test metric of the epoch the estimator would select, mean over runs; regret: "
        "its mean shortfall from each run's best test epoch. The test metric is read here only "
        "to judge the estimators; reported figures use the runs' own selection."
    )
    return table


__all__ = ["estimator_rows", "estimator_table"]
