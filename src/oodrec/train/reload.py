"""One way to reload a run and score it: used by ``oodrec evaluate``, the per-popularity-bucket
figure and (through ``load_method_state``) resume.

A run that cannot be reloaded raises ``RunError`` naming the run directory; nothing is skipped
silently.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from oodrec.config import ExperimentConfig
from oodrec.errors import OodrecError, RunError
from oodrec.eval.evaluate import Evaluator, SplitResult
from oodrec.experiment import check
from oodrec.methods import Method, TrainData, build_method
from oodrec.runs import RunDir, load_checkpoint, load_method_state


@dataclass
class LoadedRun:
    """A run's method with the parameters of its selected (best) checkpoint, in eval mode.

    Attributes:
        path: the run directory.
        cfg: its resolved config.
        dataset: the dataset it was trained on (as loaded now).
        method: the method with the best checkpoint's state.
        epoch: the checkpoint's epoch.
    """

    path: Path
    cfg: ExperimentConfig
    dataset: Any
    method: Method
    epoch: int
    gamma: float = 0.0
    """The popularity adjustment selected with the checkpoint (``eval.adjust_gammas``; 0 for
    plain scores and for ``last``)."""

    def scorer(self) -> Any:
        """The run's scorer as its metrics were computed: the method's scores, popularity-
        adjusted with ``gamma`` (``oodrec.eval.evaluate.adjusted_scorer``)."""
        from oodrec.eval.evaluate import adjusted_scorer, popularity_offsets

        scorer = self.method.scorer()
        if not self.gamma:
            return scorer
        device = torch.device(self.cfg.train.device)
        offsets = popularity_offsets(self.dataset.item_degree()).to(device)
        return adjusted_scorer(scorer, offsets, self.gamma)

    @torch.no_grad()
    def evaluate(
        self, splits: tuple[str, ...] | None = None, evaluator: Any = None
    ) -> dict[str, SplitResult]:
        """Full-ranking metrics of the checkpoint on ``splits`` (default: every split the dataset
        has; a published split may lack an IID test)."""
        if splits is None:
            absent = set(getattr(self.dataset.report, "absent_splits", []) or [])
            splits = tuple(s for s in ("val", "iid_test", "ood_test") if s not in absent)
        device = torch.device(self.cfg.train.device)
        evaluator = evaluator or Evaluator(self.dataset, self.cfg.eval, device)
        return evaluator.evaluate(self.method.scorer(), splits, gamma=self.gamma)


def load_run(
    run_dir: str | Path,
    data_dir: str | None = None,
    device: str | None = None,
    dataset: Any = None,
    checkpoint: str = "best",
) -> LoadedRun:
    """Rebuild a run's method from its config and load a checkpoint.

    Args:
        run_dir: the run directory.
        data_dir: replaces the run's ``data.data_dir``.
        device: replaces the run's ``train.device``.
        dataset: an already loaded dataset to reuse (must be the run's).
        checkpoint: ``best`` (selected epoch) or ``last``.

    Raises:
        RunError: not a run directory, a device this machine lacks, no checkpoint, an
            unreadable one, or one that does not fit the method; the message names the run.
    """
    from oodrec._threads import tune_allocator
    from oodrec.data.dataset import load_dataset

    tune_allocator()  # scoring reuses its large buffers (oodrec._threads)
    rd = RunDir(run_dir)
    cfg = rd.load_config()
    # the run was trained on this data: a sparse id space (refused for new runs) is reloaded
    cfg = replace(cfg, data=replace(cfg.data, allow_sparse_ids=True))
    if data_dir:
        cfg = replace(cfg, data=replace(cfg.data, data_dir=data_dir))
    if device:
        cfg = replace(cfg, train=replace(cfg.train, device=device))
    from oodrec.device import check_device

    try:
        check_device(cfg.train.device)
    except OodrecError as exc:
        raise RunError(f"run {rd.path}: {exc}") from None
    path = rd.best_ckpt if checkpoint == "best" else rd.last_ckpt
    if not path.is_file():
        raise RunError(f"run {rd.path}: no {checkpoint} checkpoint ({path} is missing)")
    try:
        dataset = dataset if dataset is not None else load_dataset(cfg.data)
        check(cfg)
        dev = torch.device(cfg.train.device)
        method = build_method(cfg, TrainData.from_dataset(dataset, dev), dev)
    except OodrecError as exc:
        raise RunError(f"run {rd.path}: cannot rebuild its method: {exc}") from None
    state = load_checkpoint(path, dev)
    load_method_state(method, state, path)
    method.eval()
    epoch = int(state.get("epoch", state.get("next_epoch", 0) - 1))
    gamma = float(state.get("gamma", 0.0)) if checkpoint == "best" else 0.0
    return LoadedRun(rd.path, cfg, dataset, method, epoch, gamma)


__all__ = ["LoadedRun", "load_run"]
