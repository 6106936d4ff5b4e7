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


def selection_label(tcfg: Any) -> str:
    """The label every output carries: ``selected on val``, or ``TEST-SELECTED on SPLIT (...)``
    for the published protocols (one wording for records, the CLI and reports).

    Args:
        tcfg: the run's ``TrainConfig``.
    """
    if not tcfg.test_selected:
        return "selected on val"
    return f"TEST-SELECTED on {tcfg.select_on} (reproduction only; not an honest estimate)"
