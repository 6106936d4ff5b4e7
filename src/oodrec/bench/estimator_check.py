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

``search_rows`` asks the same of a hyperparameter search (``oodrec tune --estimators``): over
every evaluated epoch of every trial of a study, which trial and epoch would each estimator pick,
how good is the OOD test there, and how far is it from the best trial-epoch of the search. That
is the choice a search selected on that estimator makes (the trials' own stopping and pruning
used the search's metric, so the epochs each trial reached are the same for every estimator).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from oodrec.bench.records import RunRecord
from oodrec.bench.render import Cell, Table

ESTIMATOR_LABELS = {"": "plain val", "ips_": "IPS-weighted val", "strat_": "stratified val"}


def _points(epochs: list[dict[str, Any]], metric: str, split: str) -> list[dict[str, float]]:
    """The evaluated epochs that logged every estimator and the test metric (with ``epoch``)."""
    keys = [f"val/{p}{metric}" for p in ESTIMATOR_LABELS] + [f"{split}/{metric}", "epoch"]
    return [
        {k: float(row[k]) for k in keys}
        for row in epochs
        if all(isinstance(row.get(k), (int, float)) for k in keys)
    ]


def _spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(spearmanr(x, y).statistic)


def _rho(value: float) -> str:
    """A correlation as a table cell; ``–`` where it is undefined (NaN: fewer than 3 points, or
    constant values)."""
    return "–" if math.isnan(value) else f"{value:+.3f}"


RHO_NOTE = (
    "rho –: undefined (fewer than 3 evaluated epochs, or the estimator or the test metric is "
    "constant over them)."
)


def _pick(values: list[float], truth: list[float]) -> tuple[int, float]:
    """The index of the first maximum of ``values``, and the regret of picking it: the relative
    shortfall of ``truth`` there from the best of ``truth`` (0 when that best is not positive)."""
    at = max(range(len(values)), key=values.__getitem__)
    best = max(truth)
    return at, (best - truth[at]) / best if best > 0 else 0.0


def estimator_rows(
    runs: list[RunRecord], metric: str = "ndcg@20", split: str = "ood_test"
) -> list[dict[str, Any]]:
    """Per dataset and estimator: pooled and within-run rho, OOD at pick and regret (tidy rows).

    Runs whose ``epochs.jsonl`` lacks the estimator keys (older runs) are left out; a run needs
    at least 2 evaluated epochs.
    """
    by_dataset: dict[str, list[list[dict[str, float]]]] = {}
    for run in runs:
        pts = _points(run.epochs, metric, split)
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
                at, shortfall = _pick([p[key] for p in s], [p[target] for p in s])
                picked.append(s[at][target])
                regret.append(shortfall)
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
            _rho(r["rho_pooled"]),
            _rho(r["rho_within"]),
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
    if any(math.isnan(r[k]) for r in rows for k in ("rho_pooled", "rho_within")):
        table.notes.append(RHO_NOTE)
    return table


def search_rows(
    studies: dict[str, list[tuple[str, list[dict[str, Any]]]]],
    metric: str = "ndcg@20",
    split: str = "ood_test",
) -> list[dict[str, Any]]:
    """Per study and estimator: the trial and epoch the estimator picks among all the study's
    evaluated epochs, the test metric there, and its shortfall from the search's best.

    Args:
        studies: study name -> ``(trial name, epoch rows)`` of its trials (any state: a pruned
            trial's epochs count, as the search saw them).
        metric: e.g. ``ndcg@20``; split: the test split judged.

    Returns:
        Tidy rows: ``study``, ``estimator``, ``trials``, ``points``, ``rho_pooled`` (Spearman
        over all points), ``trial`` and ``epoch`` picked (the first maximum), ``at_pick``,
        ``best`` (the best test value of any trial-epoch) and ``regret`` ((best - at_pick) /
        best). Studies with no point are left out.
    """
    target = f"{split}/{metric}"
    out = []
    for study in sorted(studies):
        pooled = [
            (name, p) for name, epochs in studies[study] for p in _points(epochs, metric, split)
        ]
        if not pooled:
            continue
        trials = len({name for name, _ in pooled})
        truth = [p[target] for _, p in pooled]
        for prefix, label in ESTIMATOR_LABELS.items():
            key = f"val/{prefix}{metric}"
            values = [p[key] for _, p in pooled]
            index, regret = _pick(values, truth)
            name, at = pooled[index]
            out.append(
                dict(
                    table="search_estimators",
                    study=study,
                    estimator=label,
                    metric=metric,
                    split=split,
                    trials=trials,
                    points=len(pooled),
                    rho_pooled=_spearman(values, truth),
                    trial=name,
                    epoch=int(at["epoch"]),
                    at_pick=at[target],
                    best=max(truth),
                    regret=regret,
                )
            )
    return out


def search_table(rows: list[dict[str, Any]], selection: str) -> Table:
    """``search_rows`` as a table (one metric and split)."""
    metric, split = rows[0]["metric"], rows[0]["split"]
    table = Table(
        title=f"Which trial each val estimator would pick: {split.replace('_', ' ')} {metric}",
        selection=selection,
        label_columns=["study", "estimator"],
        columns=[
            "trials",
            "epochs",
            "rho pooled",
            "picks",
            f"OOD {metric} there",
            "best",
            "regret",
        ],
    )
    for r in rows:
        cells = [
            r["study"],
            r["estimator"],
            str(r["trials"]),
            str(r["points"]),
            _rho(r["rho_pooled"]),
            f"{r['trial']}, epoch {r['epoch']}",
            f"{r['at_pick']:.4f}",
            f"{r['best']:.4f}",
            f"{100 * r['regret']:.1f}%",
        ]
        table.rows.append([Cell(c) for c in cells])
        table.tidy.append(r)
    table.notes.append(
        "picks: the trial and epoch with the highest value of the estimator among every "
        "evaluated epoch of every trial of the study (complete and pruned); best: the highest "
        "test value of any of them; regret: (best - value at the pick) / best; rho: Spearman "
        "correlation of the estimator with the test metric over those epochs. The trials stopped "
        "and were pruned on the search's own metric. The test metric is read here only to judge "
        "the estimators."
    )
    if any(math.isnan(r["rho_pooled"]) for r in rows):
        table.notes.append(RHO_NOTE)
    return table


__all__ = ["estimator_rows", "estimator_table", "search_rows", "search_table"]
