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
from oodrec.samplers import (
    NegativeSampler,
    TripletBatch,
    build_sampler,
)
from oodrec.seeding import derive_seed, make_generator, seed_everything
from oodrec.train.build import build_model, sampler_context
from oodrec.train.losses import bpr_loss, l2_loss
from oodrec.train.runs import RunDir, atomic_save, load_checkpoint
from oodrec.train.selection import Selector

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
    """Trains ``cfg.model`` with ``cfg.sampler`` on ``dataset``; writes ``run_dir`` if given.

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
        self.model = build_model(cfg, dataset, self.device)
        self.sampler: NegativeSampler = build_sampler(
            cfg.sampler.name, sampler_context(cfg, dataset, self.device), dict(cfg.sampler.options)
        ).to(self.device)
        groups = [{"params": list(self.model.parameters()), "lr": cfg.train.lr}]
        groups += self.sampler.param_groups()
        self.optimizer = torch.optim.Adam(groups, lr=cfg.train.lr)
        self.evaluator = Evaluator(dataset, cfg.eval, self.device)
        self.selector = Selector(cfg.train.select_metric, cfg.train.select_rule)
        self.train_users = dataset.train.users.to(self.device)
        self.train_items = dataset.train.items.to(self.device)
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
        total = self.train_users.numel()
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

    def _batches(self, gen: torch.Generator):
        n = self.train_users.numel()
        bs = self.cfg.train.batch_size
        perm = torch.randperm(n, generator=gen, device=self.device)
        stop = n - n % bs if self.cfg.train.drop_last and n >= bs else n
        for start in range(0, stop, bs):
            idx = perm[start : start + bs]
            yield TripletBatch(self.train_users[idx], self.train_items[idx])

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.sampler.train()
        self.sampler.start_epoch(epoch)
        shuffle_gen, sampler_gen = self._epoch_generators(epoch)
        sums: dict[str, torch.Tensor] = {}
        n_batches = 0
        tcfg = self.cfg.train
        for batch in self._batches(shuffle_gen):
            emb = self.model.propagate()
            negs = self.sampler.sample(batch, emb, sampler_gen)
            u = emb.users[batch.users]
            terms = {"bpr": bpr_loss(u, emb.items[batch.pos_items], negs.emb, negs.weights)}
            egos = [emb.user_ego[batch.users], emb.item_ego[batch.pos_items]]
            if negs.reg_ego is not None:
                egos.append(negs.reg_ego)
            elif negs.ids is not None:
                egos.append(emb.item_ego[negs.ids])
            terms["l2"] = tcfg.l2 * l2_loss(*egos, batch_size=len(batch), form=tcfg.l2_form)
            terms.update(self.sampler.aux_loss(batch, emb, sampler_gen))
            loss = sum(terms.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach()
            n_batches += 1
        out = {f"loss_{k}": float(v) / n_batches for k, v in sums.items()}
        out["loss"] = sum(out.values())
        return out

    @torch.no_grad()
    def _diagnostics(self, epoch: int) -> dict[str, float]:
        # The sampler's own statistics cover the training batches only: read them first.
        sampler_stats = self.sampler.diagnostics()
        if self.diag_idx.numel() == 0:
            return sampler_stats
        emb = self.model.propagate()
        gen = make_generator(self.cfg.seed, "fhn", epoch, device=self.device)
        rows = []
        for idx in self.diag_idx:
            batch = TripletBatch(self.train_users[idx], self.train_items[idx])
            negs = self.sampler.sample(batch, emb, gen)
            row = negative_diagnostics(
                batch.users, batch.pos_items, negs.emb, emb.users, emb.items, self.held_out
            )
            if self.relevance is not None:
                row["true_fhn_ratio"] = true_fhn(batch.users, negs, emb.items, self.relevance)
            rows.append(row)
        out = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        out.update(sampler_stats)
        return out

    def _evaluate(self, splits: tuple[str, ...] = SPLITS) -> dict[str, SplitResult]:
        self.model.eval()
        with torch.no_grad():
            return self.evaluator.evaluate(self.model.propagate(), splits)

    # ------------------------------------------------------------------ checkpoints

    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "next_epoch": epoch + 1,
            "model": self.model.state_dict(),
            "sampler": self.sampler.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "selector": self.selector.state_dict(),
            "best_eval": self.best_eval,
            "stopped": False,
        }

    def resume(self) -> None:
        """Restore the last checkpoint of ``run_dir`` (model, sampler, optimiser, selection)."""
        assert self.run_dir is not None
        if not self.run_dir.last_ckpt.is_file():
            self.run_dir.truncate_epochs(0)
            return
        state = load_checkpoint(self.run_dir.last_ckpt, self.device)
        self.model.load_state_dict(state["model"])
        self.sampler.load_state_dict(state["sampler"])
        self.optimizer.load_state_dict(state["optimizer"])
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
            row.update(self._train_epoch(epoch))
            row["epoch_seconds"] = time.perf_counter() - t0
            row.update(self._diagnostics(epoch))
            if (epoch + 1) % tcfg.eval_every == 0 or epoch + 1 == tcfg.epochs:
                t1 = time.perf_counter()
                sel = tcfg.select_on
                res = self._evaluate(SPLITS if tcfg.eval_all_splits else (sel,))
                improved = self.selector.update(res[sel].means, epoch)
                if improved and not tcfg.eval_all_splits:
                    # the other splits are only needed for the epoch that will be reported
                    res.update(self._evaluate(tuple(s for s in SPLITS if s != sel)))
                row["eval_seconds"] = time.perf_counter() - t1
                for split, r in res.items():
                    row.update({f"{split}/{k}": v for k, v in r.means.items()})
                row["improved"] = improved
                if improved:
                    self.best_eval = res
                    if self.run_dir is not None:
                        atomic_save(
                            {
                                "epoch": epoch,
                                "model": self.model.state_dict(),
                                "sampler": self.sampler.state_dict(),
                            },
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
        label = (
            "selected on val"
            if not tcfg.test_selected
            else (f"TEST-SELECTED on {tcfg.select_on} (reproduction only; not an honest estimate)")
        )
        return {
            "config": to_dict(self.cfg),
            "seed": self.cfg.seed,
            "dataset": self.dataset.name,
            "sampler": self.cfg.sampler.name,
            "selection": {
                "split": tcfg.select_on,
                "metric": tcfg.select_metric,
                "rule": tcfg.select_rule,
                "test_selected": tcfg.test_selected,
                "label": label,
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
