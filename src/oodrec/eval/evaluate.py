"""Evaluate a model on val / IID test / OOD test with full ranking; keep per-user values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from oodrec.config import SPLITS, EvalConfig
from oodrec.data.dataset import InteractionDataset
from oodrec.eval.metrics import ranking_metrics
from oodrec.eval.ranking import CSR, topk_hits
from oodrec.models.base import Embeddings


@dataclass
class SplitResult:
    """Metrics of one split.

    Attributes:
        means: metric name -> mean over evaluated users.
        users: [N] evaluated user ids (users with >= 1 held-out item).
        per_user: metric name -> [N] per-user values (for group analysis and significance tests).
    """

    means: dict[str, float]
    users: torch.Tensor
    per_user: dict[str, torch.Tensor]


Scorer = Callable[[torch.Tensor], torch.Tensor]


def as_scorer(scorer: Scorer | Embeddings) -> Scorer:
    """A scorer from a callable, or inner products of propagated ``Embeddings``."""
    if isinstance(scorer, Embeddings):
        emb = scorer
        return lambda users: emb.users[users] @ emb.items.T
    return scorer


class Evaluator:
    """Full-ranking evaluator for one dataset.

    Masking (specs 0.4): train positives for ``val``; train + val positives for the test splits.

    Args:
        dataset: the dataset.
        cfg: cut-offs and user batch size.
        device: where scoring runs.
    """

    def __init__(self, dataset: InteractionDataset, cfg: EvalConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        self.num_items = dataset.num_items
        self.csr = {
            name: CSR(inter.users, inter.items, dataset.num_users).to(device)
            for name, inter in dataset.splits.items()
        }
        self.masks = {
            "val": [self.csr["train"]],
            "iid_test": [self.csr["train"], self.csr["val"]],
            "ood_test": [self.csr["train"], self.csr["val"]],
        }
        self.eval_users = {s: torch.nonzero(self.csr[s].counts() > 0).squeeze(1) for s in SPLITS}

    @torch.no_grad()
    def evaluate(
        self,
        scorer: Scorer | Embeddings,
        splits: tuple[str, ...] = SPLITS,
        keep_per_user: bool = True,
    ) -> dict[str, SplitResult]:
        """Metrics for each split in ``splits``.

        Args:
            scorer: ``scorer(users [B]) -> scores [B, I]`` (a method's ``scorer()``), or
                propagated embeddings (scores are inner products of pooled embeddings).
            splits: subset of ``val``, ``iid_test``, ``ood_test``.
            keep_per_user: keep per-user metric vectors (on CPU).
        """
        scorer = as_scorer(scorer)
        ks = self.cfg.ks
        out = {}
        for split in splits:
            users_all = self.eval_users[split]
            per_user: dict[str, list[torch.Tensor]] = {}
            for start in range(0, users_all.numel(), self.cfg.user_batch_size):
                users = users_all[start : start + self.cfg.user_batch_size]
                scores = scorer(users)  # [B, I]
                hits, _ = topk_hits(scores, users, self.csr[split], self.masks[split], max(ks))
                num_pos = self.csr[split].counts()[users]
                for name, vals in ranking_metrics(hits, num_pos, ks).items():
                    per_user.setdefault(name, []).append(vals)
            cat = {k: torch.cat(v) for k, v in per_user.items()}
            means = {k: float(v.mean()) for k, v in cat.items()}
            out[split] = SplitResult(
                means=means,
                users=users_all.cpu() if keep_per_user else users_all[:0].cpu(),
                per_user={k: v.cpu() for k, v in cat.items()} if keep_per_user else {},
            )
        return out
