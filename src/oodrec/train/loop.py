"""The sampler-agnostic training loop with evaluation, model selection and resumable runs."""

from __future__ import annotations

import logging
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from oodrec import __version__
from oodrec.config import SPLITS, ExperimentConfig, to_dict
from oodrec.data.dataset import InteractionDataset
from oodrec.eval.evaluate import Evaluator, SplitResult
from oodrec.eval.fhn import negative_diagnostics, true_fhn
from oodrec.eval.ranking import CSR
from oodrec.methods import Method, TrainData, build_method
from oodrec.seeding import derive_seed, make_generator, seed_everything
from oodrec.train.runs import RunDir, atomic_save, load_checkpoint, load_method_state
from oodrec.train.selection import Selector, selection_label

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


def git_hash() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class Trainer:
    """Trains the method ``cfg.model`` on ``dataset``; writes ``run_dir`` if given.

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
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.seed, cfg.train.deterministic)
        self.data = TrainData.from_dataset(dataset, self.device)
        self.method: Method = build_method(cfg, self.data, self.device)
        self.optimizers = self.method.optimizers()
        self.evaluator = Evaluator(dataset, cfg.eval, self.device)
        self.selector = Selector(cfg.train.select_metric, cfg.train.select_rule)
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
        """One pass over the method's batches; returns the mean of every loss term."""
        method = self.method
        method.train()
        method.start_epoch(epoch)
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
            self.optimizers[phase].step()
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
        return out

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

    def evaluate(self, splits: tuple[str, ...] = SPLITS) -> dict[str, SplitResult]:
        """Full-ranking metrics of the current parameters on ``splits``."""
        self.method.eval()
        with torch.no_grad():
            return self.evaluator.evaluate(self.method.scorer(), splits)

    # ------------------------------------------------------------------ checkpoints

    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "next_epoch": epoch + 1,
            "method": self.method.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "selector": self.selector.state_dict(),
            "best_eval": self.best_eval,
            "stopped": False,
        }

    def resume(self) -> None:
        """Restore the last checkpoint of ``run_dir`` (method, optimisers, selection)."""
        assert self.run_dir is not None
        if not self.run_dir.last_ckpt.is_file():
            self.run_dir.truncate_epochs(0)
            return
        state = load_checkpoint(self.run_dir.last_ckpt, self.device)
        load_method_state(self.method, state, self.run_dir.last_ckpt)
        optim_states = state.get("optimizers") or {"main": state["optimizer"]}
        for key, opt in self.optimizers.items():
            opt.load_state_dict(optim_states[key])
        self.selector.load_state_dict(state["selector"])
        self.best_eval = state["best_eval"]
        self.start_epoch = state["next_epoch"]
        self._stopped = state.get("stopped", False)
        self.run_dir.truncate_epochs(self.start_epoch)
        self.history = self.run_dir.read_epochs()
        logger.info("resumed %s at epoch %d", self.run_dir.path, self.start_epoch)

    # ------------------------------------------------------------------ main loop

    def fit(self) -> TrainResult:
        """Train until ``epochs`` or early stopping; return the selected epoch's metrics."""
        tcfg = self.cfg.train
        stopped = getattr(self, "_stopped", False)
        bar = None
        if self.show_progress:
            from tqdm import tqdm

            bar = tqdm(total=tcfg.epochs, initial=self.start_epoch, desc="epochs", unit="ep")
        epoch = self.start_epoch
        while epoch < tcfg.epochs and not stopped:
            t0 = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch}
            row.update(self.train_epoch(epoch))
            row["epoch_seconds"] = time.perf_counter() - t0
            row.update(self._diagnostics(epoch))
            if (epoch + 1) % tcfg.eval_every == 0 or epoch + 1 == tcfg.epochs:
                t1 = time.perf_counter()
                sel = tcfg.select_on
                res = self.evaluate(SPLITS if tcfg.eval_all_splits else (sel,))
                improved = self.selector.update(res[sel].means, epoch)
                if improved and not tcfg.eval_all_splits:
                    # the other splits are only needed for the epoch that will be reported
                    res.update(self.evaluate(tuple(s for s in SPLITS if s != sel)))
                row["eval_seconds"] = time.perf_counter() - t1
                for split, r in res.items():
                    row.update({f"{split}/{k}": v for k, v in r.means.items()})
                row["improved"] = improved
                if improved:
                    self.best_eval = res
                    if self.run_dir is not None:
                        atomic_save(
                            {"epoch": epoch, "method": self.method.state_dict()},
                            self.run_dir.best_ckpt,
                        )
                if tcfg.patience and self.selector.bad_evals >= tcfg.patience:
                    stopped = True
            self.history.append(row)
            if self.run_dir is not None:
                state = self._state(epoch)
                state["stopped"] = stopped
                atomic_save(state, self.run_dir.last_ckpt)
                self.run_dir.append_epoch(row)
            if bar is not None:
                sel = f"{tcfg.select_on}/{tcfg.select_metric}"
                bar.set_postfix(
                    loss=f"{row['loss']:.4f}", **({sel: f"{row[sel]:.4f}"} if sel in row else {})
                )
                bar.update(1)
            epoch += 1
        if bar is not None:
            bar.close()
        return self._finish(stopped)

    def _finish(self, stopped: bool) -> TrainResult:
        if self.best_eval is None:
            raise RuntimeError("no evaluation happened; check train.eval_every")
        metrics = {s: r.means for s, r in self.best_eval.items()}
        record = self.make_record(metrics, stopped)
        if self.run_dir is not None:
            torch.save(
                {s: {"users": r.users, **r.per_user} for s, r in self.best_eval.items()},
                self.run_dir.path / "per_user.pt",
            )
            self.run_dir.write_record(record)
        return TrainResult(
            self.selector.best_epoch, metrics, self.best_eval, self.history, stopped, record
        )

    def _diagnostic_summary(self) -> dict[str, dict[str, float]]:
        """Negative diagnostics (fhn_ratio, true_fhn_ratio, norms, hardness, sampler stats) at
        the selected epoch and averaged over all epochs."""
        skip = ("loss", "epoch", "eval_seconds", "improved", "val/", "iid_test/", "ood_test/")
        keys = [k for k in (self.history[0] if self.history else {}) if not k.startswith(skip)]
        by_epoch = {r["epoch"]: r for r in self.history}
        best = by_epoch.get(self.selector.best_epoch, {})
        return {
            "at_best_epoch": {k: best[k] for k in keys if k in best},
            "mean_over_epochs": {
                k: sum(r[k] for r in self.history if k in r)
                / max(1, sum(k in r for r in self.history))
                for k in keys
            },
        }

    def make_record(self, metrics: dict[str, dict[str, float]], stopped: bool) -> dict[str, Any]:
        tcfg = self.cfg.train
        secs = [r["epoch_seconds"] for r in self.history if "epoch_seconds" in r]
        evals = [r["eval_seconds"] for r in self.history if "eval_seconds" in r]
        return {
            "config": to_dict(self.cfg),
            "seed": self.cfg.seed,
            "dataset": self.dataset.name,
            "model": self.cfg.model.name,
            "method": self.cfg.method_label(),
            "sampler": self.cfg.sampler.name if self.method.takes_sampler else None,
            "resolved_options": self.method.describe(),
            "selection": {
                "split": tcfg.select_on,
                "metric": tcfg.select_metric,
                "rule": tcfg.select_rule,
                "test_selected": tcfg.test_selected,
                "label": selection_label(tcfg),
            },
            "best_epoch": self.selector.best_epoch,
            "epochs_run": len(self.history),
            "stopped_early": stopped,
            "metrics": metrics,
            "diagnostics": self._diagnostic_summary(),
            "median_epoch_seconds": statistics.median(secs) if secs else None,
            "median_eval_seconds": statistics.median(evals) if evals else None,
            "data_report": self.dataset.report.to_dict(),
            "data_notes": self.dataset.report.notes(),
            "environment": {
                "oodrec": __version__,
                "git": git_hash(),
                "torch": torch.__version__,
                "device": str(self.device),
                "device_name": torch.cuda.get_device_name(self.device)
                if self.device.type == "cuda"
                else platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(),
                "python": platform.python_version(),
            },
        }


def train(
    cfg: ExperimentConfig,
    dataset: InteractionDataset,
    run_dir: str | Path | None = None,
    resume: bool = False,
    show_progress: bool = False,
) -> TrainResult:
    """Train one configuration (see ``Trainer``). With ``resume`` the run continues from its last
    checkpoint and ends with the same metrics as an uninterrupted run."""
    rd = RunDir(run_dir) if run_dir is not None else None
    if rd is not None and not resume:
        rd.create(cfg)
    trainer = Trainer(cfg, dataset, rd, show_progress)
    if resume and rd is not None:
        trainer.resume()
    return trainer.fit()
