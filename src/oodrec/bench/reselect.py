"""Post-hoc epoch selection by another val estimator, from a finished run's per-epoch log.

A run selected on plain val logs every val estimator (plain, ``ips_``, ``strat_``) and, with
``train.eval_all_splits``, the test metrics of every evaluated epoch. ``reselect`` picks the
epoch another val estimator would have picked among those epochs and returns a copy of the run
whose metrics are that epoch's. The test metrics are only *read* at the picked epoch, never used
to pick it, so the result is still val-selected. It is not the same as a run made with
``train.select_metric=ESTIMATOR``, and its label says so:

* the run stopped on its own selection metric's patience (plain val, usually), so later epochs
  the estimator might prefer were never evaluated;
* a tuned run's hyperparameters were chosen on that metric too.

Reports keep these copies in their own tables (the label differs), next to the runs' own
selection.
"""

from __future__ import annotations

import copy
import logging

from oodrec.bench.records import RunRecord
from oodrec.errors import ConfigError

logger = logging.getLogger(__name__)

POST_HOC = "epoch picked post hoc among the epochs evaluated by runs"
"""What the label of a re-selected copy says after the estimator, before the runs' own label."""


def describe(metric: str, run: RunRecord) -> str:
    """The label of a copy of ``run`` re-selected on ``metric``."""
    import dataclasses
    from types import SimpleNamespace

    from oodrec.config import EvalConfig
    from oodrec.eval.estimators import describe_estimator
    from oodrec.train.selection import CANDIDATES_LABEL

    # the run's estimator settings over the defaults (lenient: a report reads old records too)
    ecfg = SimpleNamespace(**{**dataclasses.asdict(EvalConfig()), **run.config.get("eval", {})})
    how = describe_estimator(metric, ecfg) or f"plain val {metric}"
    own = run.selection.removesuffix(CANDIDATES_LABEL)
    tail = run.selection[len(own) :]  # the test protocol stays last, where reports look for it
    return f"re-selected on val by {how} ({POST_HOC} {own}){tail}"


def reselect(run: RunRecord, metric: str) -> RunRecord | None:
    """A copy of ``run`` whose metrics are those of the epoch with the highest ``val/METRIC``
    (the first such epoch, as training selects), or None when the run cannot be re-selected:
    it is test-selected, or its log lacks ``val/METRIC`` or the test metrics.

    Args:
        run: a finished run.
        metric: a val key the run logs, e.g. ``ips_ndcg@20`` or ``strat_recall@20``.
    """
    if run.record.get("selection", {}).get("test_selected"):
        return None
    key = f"val/{metric}"
    rows = [r for r in run.epochs if isinstance(r.get(key), (int, float))]
    if not rows:
        return None
    best = max(range(len(rows)), key=lambda i: rows[i][key])  # first maximum
    row = rows[best]
    metrics: dict[str, dict[str, float]] = {}
    for name, value in row.items():
        split, sep, m = name.partition("/")
        if sep and isinstance(value, (int, float)):
            metrics.setdefault(split, {})[m] = float(value)
    if not any(s.endswith("test") for s in metrics):
        return None
    record = copy.deepcopy(run.record)
    record["selection"] = dict(
        record.get("selection", {}), metric=metric, label=describe(metric, run), post_hoc=True
    )
    record["metrics"] = metrics
    record["best_epoch"] = row.get("epoch", best)
    return RunRecord(run.path, record, run.bench)


def reselect_all(runs: list[RunRecord], metrics: list[str]) -> list[RunRecord]:
    """Re-selected copies of ``runs`` for every metric in ``metrics`` (runs that cannot be
    re-selected are counted in a warning).

    Raises:
        ConfigError: a metric no run logs (the message lists the val keys they log).
    """
    out = []
    for metric in metrics:
        copies = [c for r in runs if (c := reselect(r, metric)) is not None]
        if not copies:
            logged = sorted(
                {k[4:] for r in runs for row in r.epochs[:1] for k in row if k[:4] == "val/"}
            )
            raise ConfigError(
                f"--reselect {metric}: no run logs val/{metric} with test metrics per epoch; "
                f"the runs log val metrics {', '.join(logged) or '(none)'}"
            )
        if len(copies) < len(runs):
            logger.warning(
                "--reselect %s: %d of %d run(s) left out (test-selected, or no val/%s or test "
                "metrics in epochs.jsonl)",
                metric,
                len(runs) - len(copies),
                len(runs),
                metric,
            )
        out += copies
    return out


def is_post_hoc(run: RunRecord) -> bool:
    """Whether ``run`` is a re-selected copy."""
    return bool(run.record.get("selection", {}).get("post_hoc"))


__all__ = ["POST_HOC", "describe", "is_post_hoc", "reselect", "reselect_all"]
