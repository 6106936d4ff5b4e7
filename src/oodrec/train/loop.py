"""The sampler-agnostic training loop with evaluation, model selection and resumable runs."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from oodrec._threads import apply_threads, tune_allocator
from oodrec.config import SPLITS, ExperimentConfig
from oodrec.data.csr import CSR
from oodrec.data.dataset import InteractionDataset
from oodrec.device import check_device
from oodrec.errors import ConfigError, RunError
from oodrec.eval.evaluate import Evaluator, SplitResult
from oodrec.eval.fhn import negative_diagnostics, true_fhn
from oodrec.experiment import check, check_with_data
from oodrec.methods import Method, TrainData, build_method
from oodrec.runs import RunDir, atomic_save, load_checkpoint, load_method_state
from oodrec.runs.snapshot import ResumeSnapshot
from oodrec.seeding import derive_seed, make_generator, seed_everything
from oodrec.train.record import FinishedRun, build_record
from oodrec.train.selection import Selector
from oodrec.train.tracking import Tracker, check_tracking, open_tracker

logger = logging.getLogger(__name__)

DIAG_BATCH = 1024


@dataclass
class TrainResult:
    """Outcome of a training run.

    Attributes:
        best_epoch: selected epoch (0-based).
        metrics: split -> metric -> value at the selected epoch.
        per_user: split -> SplitResult at the selected epoch.
        history: one dict per epoch (as in epochs.jsonl).
        stopped_early: early stopping ended the run.
        record: the run record (as in record.json).
    """

    best_epoch: int
    metrics: dict[str, dict[str, float]]
    per_user: dict[str, SplitResult]
    history: list[dict[str, Any]]
    stopped_early: bool
    record: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Trains the method ``cfg.model`` on ``dataset``; writes ``run_dir`` if given.

    The Trainer trusts what it is given: ``cfg`` is checked (``oodrec.experiment``), its device
    exists (``oodrec.device.check_device``), and the caller holds ``run_dir``'s lock.

    The Trainer owns epochs, stepping, gradient clipping, evaluation, selection, early stopping,
    checkpoints and records; the method owns its batches, losses, optimisers and scorer (see
    ``oodrec.methods.base``). The method is built from the training split only.

    Args:
        cfg: the experiment config.
        dataset: the loaded dataset.
        run_dir: run directory (None: nothing is written, nothing can be resumed).
        show_progress: show a progress bar over epochs.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        dataset: InteractionDataset,
        run_dir: RunDir | None = None,
        show_progress: bool = False,
    ) -> None:
        self.cfg = cfg
        self.dataset = dataset
        self.run_dir = run_dir
        self.show_progress = show_progress
        self.device = torch.device(cfg.train.device)
        apply_threads(cfg.train.threads)
        tune_allocator()  # full-ranking losses reuse their large buffers (oodrec._threads)
        seed_everything(cfg.seed, cfg.train.deterministic)
        absent = set(getattr(dataset.report, "absent_splits", []) or [])
        if cfg.train.select_on in absent:
            raise ConfigError(
                f"train.select_on={cfg.train.select_on} but dataset {dataset.name!r} has no "
                f"{cfg.train.select_on} split; select on one of "
                f"{', '.join(s for s in SPLITS if s not in absent)}"
            )
        self.splits = tuple(s for s in SPLITS if s not in absent)
        """The splits this dataset has (a published split may lack an IID test)."""
        self.data = TrainData.from_dataset(dataset, self.device)
        self.method: Method = build_method(cfg, self.data, self.device)
        self.optimizers = self.method.optimizers()
        self.evaluator = Evaluator(dataset, cfg.eval, self.device)
        self.selector = Selector(cfg.train.select_metric, cfg.train.select_rule)
        self.on_evaluate: Callable[[int, dict[str, float]], None] | None = None
        """Called after each evaluation with the epoch and the selection split's metrics; it
        may raise to end the run (``oodrec tune`` prunes hopeless trials this way)."""
        held = [dataset.splits[s] for s in SPLITS]
        self.held_out = CSR(
            torch.cat([h.users for h in held]),
            torch.cat([h.items for h in held]),
            dataset.num_users,
        ).to(self.device)
        self.diag_idx = self._diagnostic_pairs()
        rel = dataset.relevance
        self.relevance = rel.to(self.device) if rel is not None else None
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.best_eval: dict[str, SplitResult] | None = None
        self.best_gamma = 0.0
        """The popularity adjustment of the selected epoch (``eval.adjust_gammas``; 0: none)."""
        self._stopped = False
        self._best_saved: int | None = None  # epoch held by best.pt (None: not written)
        self.tracker: Tracker = Tracker()
        """Mirrors each epoch's row into TensorBoard or MLflow (``oodrec.train.tracking``; a
        no-op unless ``fit_run`` opens one for ``cfg.track``)."""

    # ------------------------------------------------------------------ helpers

    def _diagnostic_pairs(self) -> torch.Tensor:
        """A fixed sample of training-pair indices, [fhn_batches, DIAG_BATCH]."""
        n = self.cfg.train.fhn_batches
        if n <= 0:
            return torch.empty(0, 0, dtype=torch.long)
        total = self.data.users.numel()
        gen = make_generator(self.cfg.seed, "fhn")
        size = min(DIAG_BATCH, total)
        idx = torch.stack([torch.randperm(total, generator=gen)[:size] for _ in range(n)])
        return idx.to(self.device)

    def _epoch_generators(self, epoch: int) -> tuple[torch.Generator, torch.Generator]:
        # Each epoch derives its own streams: a resumed run replays them exactly.
        torch.manual_seed(derive_seed(self.cfg.seed, "data", epoch))
        shuffle = make_generator(self.cfg.seed, "shuffle", epoch, device=self.device)
        sampler = make_generator(self.cfg.seed, "sampler", epoch, device=self.device)
        return shuffle, sampler

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the method's batches; returns the mean of every loss term (and, in
        sync-free mode, the epoch's residual collisions). Nothing in the batch loop reads the
        device; the terms' sums stay there until the epoch ends."""
        method = self.method
        method.train()
        method.start_epoch(epoch)
        sync_free = method.ctx.sync_free
        if sync_free is not None:
            sync_free.residual = None  # count this epoch's batches only
        shuffle_gen, sampler_gen = self._epoch_generators(epoch)
        sums: dict[str, torch.Tensor] = {}
        batches_of: dict[str, int] = {}  # phase -> batches
        term_phase: dict[str, str] = {}
        for step, batch in enumerate(method.batches(epoch, shuffle_gen)):
            phase = method.phase(epoch, step)
            terms = method.loss(batch, sampler_gen, phase)
            loss = sum(terms.values())
            for opt in self.optimizers.values():
                opt.zero_grad(set_to_none=True)
            loss.backward()
            if method.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(method.parameters(), method.max_grad_norm)
            try:
                self.optimizers[phase].step()
            except RuntimeError as exc:
                if "overflow" not in str(exc):
                    raise
                raise RunError(
                    f"training diverged at epoch {epoch}: the {phase} optimiser step overflowed "
                    f"({exc}); train.lr={self.cfg.train.lr}. Nothing of this epoch was saved; "
                    f"lower train.lr"
                ) from None
            method.after_step(phase)
            prefix = "" if phase == "main" else f"{phase}_"
            batches_of[phase] = batches_of.get(phase, 0) + 1
            for k, v in terms.items():
                key = prefix + k
                sums[key] = sums.get(key, 0.0) + v.detach()
                term_phase[key] = phase
        # a term's mean is over the batches of its phase
        out = {f"loss_{k}": float(v) / batches_of[term_phase[k]] for k, v in sums.items()}
        out["loss"] = sum(out.values())
        self._check_finite(epoch, out)
        if sync_free is not None:
            out["residual_collisions"] = residual = sync_free.take()
            if residual:
                logger.warning(
                    "epoch %d: %d negatives still hit a training positive after %d sync-free "
                    "redraw rounds (train.sync_free); they were kept",
                    epoch,
                    residual,
                    sync_free.rounds,
                )
        return out

    def _check_finite(self, epoch: int, losses: dict[str, float]) -> None:
        """Stop on a NaN or infinite loss term or parameter: nothing of the epoch is kept, and
        no table is ever built from NaN scores."""
        bad = [k for k, v in losses.items() if k != "loss" and not math.isfinite(v)]
        where = f"loss term {bad[0]} = {losses[bad[0]]}" if bad else None
        if where is None:
            for name, p in self.method.named_parameters():
                if not bool(torch.isfinite(p).all()):
                    where = f"parameter {name} is not finite (losses {losses})"
                    break
        if where is not None:
            raise RunError(
                f"training diverged at epoch {epoch}: {where}; train.lr={self.cfg.train.lr}. "
                f"Nothing of this epoch was saved; lower train.lr"
            )

    @torch.no_grad()
    def _diagnostics(self, epoch: int) -> dict[str, float]:
        # The method's own statistics cover the training batches only: read them first.
        method_stats = self.method.diagnostics()
        if self.diag_idx.numel() == 0:
            return method_stats
        gen = make_generator(self.cfg.seed, "fhn", epoch, device=self.device)
        probe = self.method.negative_probe(gen)
        if probe is None:
            return method_stats
        rows = []
        for idx in self.diag_idx:
            users, pos = self.data.users[idx], self.data.items[idx]
            negs = probe.sample(users, pos)
            row = negative_diagnostics(
                users, pos, negs.emb, probe.emb.users, probe.emb.items, self.held_out
            )
            if self.relevance is not None:
                row["true_fhn_ratio"] = true_fhn(users, negs, probe.emb.items, self.relevance)
            rows.append(row)
        out = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        out.update(method_stats)
        return out

    def evaluate(
        self, splits: tuple[str, ...] | None = None, gamma: float = 0.0, gammas: tuple = ()
    ) -> dict[str, SplitResult]:
        """Full-ranking metrics of the current parameters on ``splits`` (default: every split
        the dataset has), with popularity-adjusted scores at ``gamma`` and val also at each of
        ``gammas`` (``Evaluator.evaluate``)."""
        splits = self.splits if splits is None else splits
        self.method.eval()
        with torch.no_grad():
            return self.evaluator.evaluate(self.method.scorer(), splits, gamma=gamma, gammas=gammas)

    def _pick_gamma(self, val: SplitResult) -> tuple[float, dict[str, float]]:
        """The gamma (0 for plain scores) whose val means are best on the selection metric,
        with those means; the first best in the order 0, then ``eval.adjust_gammas``."""
        metric = self.cfg.train.select_metric
        best, means = 0.0, val.means
        for g, m in val.adjusted.items():
            if m[metric] > means[metric]:
                best, means = g, m
        return best, means

    # ------------------------------------------------------------------ checkpoints

    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "next_epoch": epoch + 1,
            "method": self.method.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "selector": self.selector.state_dict(),
            "best_eval": self.best_eval,
            "best_gamma": self.best_gamma,
            "stopped": False,
        }

    def resume(self, source: str = "last") -> None:
        """Restore a checkpoint of ``run_dir`` (method, optimisers, selection).

        Args:
            source: ``last`` (default) or ``prev`` (the checkpoint before it).

        Raises:
            RunError: an unreadable checkpoint (named; with a way to continue from ``prev.pt``
                where it is readable), or ``train.epochs`` below the epochs already done.
        """
        rd = self.run_dir
        assert rd is not None
        found = rd.resume_checkpoint(self.device, source)
        if found is None:
            rd.truncate_epochs(0)
            return
        state, path = found
        done = int(state["next_epoch"])
        if self.cfg.train.epochs < done:
            raise RunError(
                f"{rd.path} has done {done} epoch(s); train.epochs={self.cfg.train.epochs} would "
                f"drop some: give --epochs {done} or more"
            )
        best = load_checkpoint(rd.best_ckpt, "cpu") if rd.best_ckpt.is_file() else None
        load_method_state(self.method, state, path)
        optim_states = state.get("optimizers") or {"main": state["optimizer"]}
        for key, opt in self.optimizers.items():
            opt.load_state_dict(optim_states[key])
        self.selector.load_state_dict(state["selector"])
        self.best_eval = state["best_eval"]
        self.best_gamma = float(state.get("best_gamma", 0.0))
        self._best_saved = None if best is None else int(best.get("epoch", -1))
        self.start_epoch = done
        self._stopped = bool(state.get("stopped", False))
        rd.truncate_epochs(self.start_epoch)
        self.history = rd.read_epochs()
        logger.info("resumed %s at epoch %d from %s", rd.path, self.start_epoch, path.name)

    # ------------------------------------------------------------------ main loop

    def horizon(self, done: int) -> int:
        """The epoch count the run reaches if the selection metric does not improve again
        (early stopping), at most ``train.epochs``.

        Args:
            done: epochs finished so far.
        """
        tcfg = self.cfg.train
        if not tcfg.patience:
            return tcfg.epochs
        left = tcfg.patience - self.selector.bad_evals + (1 if self.selector.best is None else 0)
        return min(tcfg.epochs, (done // tcfg.eval_every + left) * tcfg.eval_every)

    def progress_postfix(self, row: dict[str, Any]) -> dict[str, str]:
        """What the progress bar shows: the ranking loss (``loss_bpr`` when the method has one,
        else the total), the selection metric and the patience left."""
        tcfg = self.cfg.train
        key = "loss_bpr" if "loss_bpr" in row else "loss"
        out = {key.removeprefix("loss_"): f"{row[key]:.4f}"}
        sel = f"{tcfg.select_on}/{tcfg.select_metric}"
        if sel in row:
            out[sel] = f"{row[sel]:.4f}"
        if tcfg.patience:
            out["patience"] = f"{tcfg.patience - self.selector.bad_evals}/{tcfg.patience}"
        return out

    def fit(self) -> TrainResult:
        """Train until ``epochs`` or early stopping; return the selected epoch's metrics."""
        tcfg = self.cfg.train
        stopped = self._stopped
        bar = None
        if self.show_progress:
            from tqdm import tqdm

            total = self.horizon(self.start_epoch)
            bar = tqdm(total=total, initial=self.start_epoch, desc="epochs", unit="ep")
        epoch = self.start_epoch
        warmup = self.method.warmup_epochs()
        if tcfg.epochs <= warmup:
            msg = "train.epochs=%d ends inside %s's %d warm-up epochs: its scorer is untrained"
            logger.warning(msg, tcfg.epochs, self.cfg.model.name, warmup)
        while epoch < tcfg.epochs and not stopped:
            t0 = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch}
            row.update(self.train_epoch(epoch))
            row["epoch_seconds"] = time.perf_counter() - t0
            row.update(self._diagnostics(epoch))
            last = epoch + 1 == tcfg.epochs
            if ((epoch + 1) % tcfg.eval_every == 0 and epoch >= warmup) or last:
                t1 = time.perf_counter()
                sel, grid = tcfg.select_on, self.cfg.eval.adjust_gammas
                res = self.evaluate(self.splits if tcfg.eval_all_splits else (sel,), gammas=grid)
                gamma, means = self._pick_gamma(res[sel]) if grid else (0.0, res[sel].means)
                improved = self.selector.update(means, epoch)
                if self.on_evaluate is not None:
                    self.on_evaluate(epoch, means)
                if grid:
                    # val's plain metrics stay in the row; the adjusted ones (and the gamma
                    # this epoch would be selected with) beside them
                    row["gamma"] = gamma
                    row["val_adjusted"] = {f"{g:g}": m for g, m in res[sel].adjusted.items()}
                if improved and gamma:
                    # the reported epoch: every split ranked with the chosen gamma
                    plain_val = res[sel]
                    res = self.evaluate(self.splits, gamma=gamma)
                    row.update({f"{sel}/{k}": v for k, v in plain_val.means.items()})
                elif improved and not tcfg.eval_all_splits:
                    # the other splits are only needed for the epoch that will be reported
                    res.update(self.evaluate(tuple(s for s in self.splits if s != sel)))
                row["eval_seconds"] = time.perf_counter() - t1
                for split, r in res.items():
                    if not (improved and gamma and split == sel):
                        row.update({f"{split}/{k}": v for k, v in r.means.items()})
                row["improved"] = improved
                if improved:
                    self.best_eval = res
                    self.best_gamma = gamma
                    if self.run_dir is not None:
                        atomic_save(
                            {"epoch": epoch, "method": self.method.state_dict(), "gamma": gamma},
                            self.run_dir.best_ckpt,
                        )
                        self._best_saved = epoch
                if tcfg.patience and self.selector.bad_evals >= tcfg.patience:
                    stopped = True
            self.history.append(row)
            if self.run_dir is not None:
                # The row goes first: a kill before the checkpoint leaves a row that resume
                # drops (and recomputes) with a warning, never a checkpointed epoch without row.
                self.run_dir.append_epoch(row)
                state = self._state(epoch)
                state["stopped"] = stopped
                self.run_dir.save_last(state)
                self.tracker.log_epoch(row)  # never raises: a failure warns once
            if bar is not None:
                bar.total = self.horizon(epoch + 1)
                bar.set_postfix(self.progress_postfix(row), refresh=False)
                bar.update(1)
            epoch += 1
        if bar is not None:
            bar.close()
        return self._finish(stopped)

    def _finish(self, stopped: bool) -> TrainResult:
        if self.best_eval is None:
            raise RunError("no evaluation happened; check train.eval_every")
        rd = self.run_dir
        if rd is not None and self._best_saved != self.selector.best_epoch:
            raise RunError(
                f"{rd.best_ckpt} holds epoch {self._best_saved}, but the selected epoch is "
                f"{self.selector.best_epoch}: the resumed epochs did not reproduce the original "
                f"ones; start the run again with --overwrite"
            )
        metrics = {s: r.means for s, r in self.best_eval.items()}
        record = build_record(self.finished_run(metrics, stopped))
        if rd is not None:
            atomic_save(
                {s: {"users": r.users, **r.per_user} for s, r in self.best_eval.items()},
                rd.path / "per_user.pt",
            )
            rd.write_record(record)
        return TrainResult(
            self.selector.best_epoch, metrics, self.best_eval, self.history, stopped, record
        )

    def finished_run(self, metrics: dict[str, dict[str, float]], stopped: bool) -> FinishedRun:
        """What the record of the run is built from (``oodrec.train.record.build_record``)."""
        return FinishedRun(
            cfg=self.cfg,
            dataset=self.dataset.name,
            report=self.dataset.report,
            resolved_options=self.method.describe(),
            takes_sampler=self.method.takes_sampler,
            best_epoch=self.selector.best_epoch,
            history=self.history,
            metrics=metrics,
            stopped_early=stopped,
            resume_changes=self.run_dir.resume_changes() if self.run_dir else [],
            gamma=self.best_gamma,
            trains=self.method.trains,
            device=self.device,
        )


def fit_run(
    cfg: ExperimentConfig,
    dataset: InteractionDataset,
    rd: RunDir | None,
    resume: bool = False,
    *args: Any,
    **kwargs: Any,
) -> TrainResult:
    """Train a checked config into ``rd``, whose lock the caller holds (``oodrec train`` and
    ``oodrec bench`` lock the run before they decide what to do with it).

    Args: as :func:`train`, with ``rd`` the locked run directory (None: nothing is written),
        ``extending``: the resume continues a finished run to more epochs; its ``record.json``
        is kept as ``record.prev.json`` once the checkpoint has loaded; and ``on_ready``:
        called once the method is built (its checks passed), before anything is written (the
        caller clears an old run there and names the run directory).

    A resume that fails with an error leaves the run's files as they were
    (``oodrec.runs.ResumeSnapshot``).
    """
    if rd is None or not resume:
        return _fit_run(cfg, dataset, rd, resume, *args, **kwargs)
    with ResumeSnapshot(rd):
        return _fit_run(cfg, dataset, rd, resume, *args, **kwargs)


def _fit_run(
    cfg: ExperimentConfig,
    dataset: InteractionDataset,
    rd: RunDir | None,
    resume: bool = False,
    show_progress: bool = False,
    resume_from: str = "last",
    changes: list[str] | None = None,
    on_evaluate: Callable[[int, dict[str, float]], None] | None = None,
    extending: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> TrainResult:
    """:func:`fit_run` without the resume snapshot.

    With ``rd``, ``cfg.track`` mirrors the run into TensorBoard or MLflow
    (``oodrec.train.tracking``); a resumed run continues the same tracked run.
    """
    trainer = Trainer(cfg, dataset, rd, show_progress)
    trainer.on_evaluate = on_evaluate
    if rd is None:
        return trainer.fit()
    if on_ready is not None:
        on_ready()
    if resume:
        trainer.resume(resume_from)
        if extending and rd.record_path.is_file():
            os.replace(rd.record_path, rd.path / "record.prev.json")
            logger.warning(
                "extending the finished run %s to %d epochs; its record.json is kept as "
                "record.prev.json",
                rd.path,
                cfg.train.epochs,
            )
        if changes:
            rd.record_resume_changes(cfg, changes, trainer.start_epoch)
    else:
        rd.create(cfg)
    rd.write_resolved(
        {
            "model": cfg.model.name,
            "method": cfg.method_label(),
            "resolved_options": trainer.method.describe(),
        }
    )
    # tracking (cfg.track) mirrors the run; its failures warn once and never stop it
    trainer.tracker = open_tracker(cfg.track)
    trainer.tracker.start(cfg, rd, list(trainer.history), resume)
    status = "FAILED"
    try:
        result = trainer.fit()
        trainer.tracker.finish(result.record, rd)
        status = "FINISHED"
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        trainer.tracker.close(status)


def train(
    cfg: ExperimentConfig,
    dataset: InteractionDataset,
    run_dir: str | Path | None = None,
    resume: bool = False,
    show_progress: bool = False,
    resume_from: str = "last",
    changes: list[str] | None = None,
    command: str = "train",
    on_evaluate: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train one configuration (see ``Trainer``): the library's entry point. It checks ``cfg``
    and the device, takes the run directory's lock, and trains. With ``resume`` the run
    continues from its last checkpoint and ends with the same metrics as an uninterrupted run.

    Args:
        cfg: the experiment config (with ``resume``: the run's, with ``changes`` applied).
        dataset: the loaded dataset.
        run_dir: run directory (None: nothing is written).
        resume: continue ``run_dir`` instead of starting it (a new run removes the old files).
        show_progress: show a progress bar.
        resume_from: ``last`` or ``prev`` checkpoint (``resume`` only).
        changes: settings changed on this resume (``key (old -> new)``), stored in the run.
        command: the lock holder's command, for another writer's error message.
        on_evaluate: ``Trainer.on_evaluate``.

    Raises:
        RunError: another process writes ``run_dir``, a damaged checkpoint, or divergence.
        ConfigError: an invalid setting (checked before anything is written).
    """
    check(cfg)
    check_with_data(cfg, dataset)
    check_device(cfg.train.device)
    if run_dir is not None:
        check_tracking(cfg.track)
    args = dict(
        resume=resume,
        show_progress=show_progress,
        resume_from=resume_from,
        changes=changes,
        on_evaluate=on_evaluate,
    )
    if run_dir is None:
        return fit_run(cfg, dataset, None, **args)
    rd = RunDir(run_dir)
    with rd.lock(command):
        return fit_run(cfg, dataset, rd, **args)


__all__ = ["TrainResult", "Trainer", "fit_run", "train"]
