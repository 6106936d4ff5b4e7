"""Model selection: best-epoch bookkeeping and early stopping state."""

from __future__ import annotations

from typing import Any


class Selector:
    """Best-epoch bookkeeping: a single metric (higher is better) or the CNSDiff all-four rule."""

    FOUR = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")

    def __init__(self, metric: str, rule: str) -> None:
        self.metric, self.rule = metric, rule
        self.best: dict[str, float] | None = None
        self.best_epoch = -1
        self.bad_evals = 0

    def update(self, means: dict[str, float], epoch: int) -> bool:
        if self.metric not in means:
            raise KeyError(f"selection metric {self.metric!r} not computed; have {sorted(means)}")
        if self.best is None:
            improved = True
        elif self.rule == "all_four":
            improved = all(means[k] >= self.best[k] for k in self.FOUR)
        else:
            improved = means[self.metric] > self.best[self.metric]
        if improved:
            self.best, self.best_epoch, self.bad_evals = dict(means), epoch, 0
        else:
            self.bad_evals += 1
        return improved

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_evals = (
            state["best"],
            state["best_epoch"],
            state["bad_evals"],
        )


CANDIDATES_LABEL = "; test ranked among logged candidates"
"""What ``eval.protocol=candidates`` appends to the selection label (reports name the protocol
from it)."""


def selection_label(tcfg: Any, ecfg: Any = None) -> str:
    """The label every output carries: ``selected on val``, ``selected on val by ESTIMATOR``
    for the OOD-aware val estimators, or ``TEST-SELECTED on SPLIT (...)`` for the published
    protocols, followed by ``; test ranked among logged candidates`` under
    ``eval.protocol=candidates`` (one wording for records, the CLI and reports, which never mix
    labels in a table; full ranking is the unmarked default).

    Args:
        tcfg: the run's ``TrainConfig``.
        ecfg: its ``EvalConfig`` (the estimator's settings; default settings when None).
    """
    from oodrec.config import EvalConfig

    ecfg = ecfg or EvalConfig()
    # the test protocol is part of the label, so tables never mix candidate and full ranking
    tail = CANDIDATES_LABEL if ecfg.protocol == "candidates" else ""
    if ecfg.adjust_gammas:
        # adjusted and plain rows never share a table unlabelled
        tail = "; popularity-adjusted scores, gamma chosen on val" + tail
    if not tcfg.test_selected:
        from oodrec.eval.estimators import describe_estimator

        how = describe_estimator(tcfg.select_metric, ecfg)
        return (f"selected on val by {how}" if how else "selected on val") + tail
    return f"TEST-SELECTED on {tcfg.select_on} (reproduction only; not an honest estimate)" + tail
