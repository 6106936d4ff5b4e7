"""Evaluate a model on val / IID test / OOD test with full ranking; keep per-user values."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from oodrec.config import SPLITS, EvalConfig
from oodrec.data.csr import CSR
from oodrec.data.dataset import InteractionDataset
from oodrec.errors import ConfigError
from oodrec.eval.estimators import ValEstimators
from oodrec.eval.metrics import ranking_metrics
from oodrec.eval.ranking import block_buffer, mask_history, top_items, top_items_by_blocks
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
    adjusted: dict[float, dict[str, float]] = field(default_factory=dict)
    """Val only, with ``gammas``: gamma -> means of the popularity-adjusted scores."""


Scorer = Callable[[torch.Tensor], torch.Tensor]


def as_scorer(scorer: Scorer | Embeddings) -> Scorer:
    """A scorer from a callable, or inner products of propagated ``Embeddings``."""
    if isinstance(scorer, Embeddings):
        emb = scorer
        return lambda users: emb.users[users] @ emb.items.T
    return scorer


def popularity_offsets(item_degree: torch.Tensor) -> torch.Tensor:
    """``log(1 + d_i)`` of every item's training degree: popularity-adjusted scoring ranks by
    ``s(u, i) - gamma * log(1 + d_i)`` (gamma > 0 favours the tail, gamma < 0 the head).

    Shapes:
        item_degree: [I] -> [I] float32.
    """
    return torch.log1p(item_degree.to(torch.float32))


def adjusted_scorer(scorer: Scorer, offsets: torch.Tensor, gamma: float) -> Scorer:
    """``scorer`` with popularity-adjusted scores ``s - gamma * offsets`` (the same scorer
    when gamma is 0). Masking happens after, so masked items stay at ``-inf``."""
    if not gamma:
        return scorer
    shift = gamma * offsets  # [I], once: the same floats as ``scores - gamma * offsets``
    return lambda users: scorer(users).sub_(shift)  # a scorer returns a fresh, writable tensor


def _same(a: list[CSR], b: list[CSR]) -> bool:
    """Whether two mask lists hold the same CSR objects in the same order."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _candidate_top(
    scores: torch.Tensor, users: torch.Tensor, candidates: CSR, k_max: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top items among each user's candidates (masked history stays out).

    Shapes:
        scores: [n, I] (history already -inf); users: [n].
        returns: (top [n, k] item ids, shown [n, k] bool: the entry is a ranked candidate, not
        filler from a candidate list shorter than k).
    """
    restricted = torch.full_like(scores, -torch.inf)
    r, c = candidates.gather(users)
    restricted[r, c] = scores[r, c]
    top = top_items(restricted, k_max)
    return top, torch.gather(restricted, 1, top) > -torch.inf


class Evaluator:
    """Full-ranking evaluator for one dataset.

    Masking (docs/protocol.md#metrics): train positives for ``val``; train + val positives for the
    test splits. Val also gets the OOD-aware selection estimators (``ips_*``, ``strat_*``; see
    ``oodrec.eval.estimators``), in ``means`` next to its plain metrics.

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
        # eval.protocol=candidates: these test splits rank among their logged candidates only
        self.candidates: dict[str, CSR] = {}
        if cfg.protocol == "candidates":
            from oodrec.data.dataset import CANDIDATE_FILES

            missing = [
                s
                for s in ("iid_test", "ood_test")
                if len(dataset.splits[s]) and s not in dataset.candidates
            ]
            if missing:
                raise ConfigError(
                    f"eval.protocol=candidates, but dataset {dataset.name!r} "
                    f"({dataset.report.source}) has no logged candidates for "
                    f"{', '.join(missing)}: add "
                    f"{', '.join(CANDIDATE_FILES[s] for s in missing)} (user item pairs of the "
                    "items shown to each user), or use eval.protocol=full"
                )
            self.candidates = {
                split: CSR(inter.users, inter.items, dataset.num_users).to(device)
                for split, inter in dataset.candidates.items()
            }
        self.offsets = popularity_offsets(dataset.item_degree()).to(device)
        """``log(1 + training degree)`` of every item (popularity-adjusted scoring)."""
        # OOD-aware selection estimators: val only, next to its plain metrics
        self.estimators = {
            "val": ValEstimators(
                self.csr["val"],
                dataset.item_degree().to(device),
                cfg.ks,
                cfg.ips_gamma,
                cfg.ips_clip,
                cfg.strata,
            )
        }

    @torch.no_grad()
    def evaluate(
        self,
        scorer: Scorer | Embeddings,
        splits: tuple[str, ...] = SPLITS,
        keep_per_user: bool = True,
        on_top: Callable[[str, torch.Tensor, torch.Tensor], None] | None = None,
        gamma: float = 0.0,
        gammas: tuple[float, ...] = (),
    ) -> dict[str, SplitResult]:
        """Metrics for each split in ``splits``.

        Args:
            scorer: ``scorer(users [B]) -> scores [B, I]`` (a method's ``scorer()``), or
                propagated embeddings (scores are inner products of pooled embeddings). The
                returned scores are masked in place: return a fresh, writable tensor.
            splits: subset of ``val``, ``iid_test``, ``ood_test``.
            keep_per_user: keep per-user metric vectors (on CPU).
            on_top: called with ``(split, users [n], top [n, k])`` for each batch: the ranked
                lists the metrics are computed from (``oodrec recommend`` is tested against it).
            gamma: rank every split by the popularity-adjusted scores
                ``s - gamma * log(1 + d_i)`` (``adjusted_scorer``).
            gammas: also rank val by ``s - g * log(1 + d_i)`` for each ``g`` (relative to the
                scores after ``gamma``), reusing each batch's score matrix; the means go to
                ``out["val"].adjusted[g]``. Needs ``val`` in ``splits``.
        """
        scorer = adjusted_scorer(as_scorer(scorer), self.offsets, gamma)
        gammas = tuple(g for g in gammas if g) if "val" in splits else ()
        adjusted: dict[float, dict[str, list[torch.Tensor]]] = {g: {} for g in gammas}
        adj_est = {g: copy.copy(self.estimators["val"]) for g in gammas}
        ks = self.cfg.ks
        # Every split ranks the same scores (a method scores from the training history only),
        # so each user is scored once for all requested splits: for DiffRec-style methods the
        # scorer dominates evaluation time.
        member = torch.stack([self.csr[s].counts() > 0 for s in splits])  # [S, U]
        users_all = torch.nonzero(member.any(0)).squeeze(1)
        # Splits that share a mask list share one top-k; mask lists are applied in place, the
        # shorter first (val's [train] is a prefix of the test splits' [train, val]), so no
        # split needs its own [B, I] copy of the scores.
        groups: list[list[CSR]] = []
        for split in splits:
            if not any(_same(g, self.masks[split]) for g in groups):
                groups.append(self.masks[split])
        groups.sort(key=len)
        for short, long in zip(groups, groups[1:]):
            if not _same(short, long[: len(short)]):
                raise ValueError("evaluation masks must extend one another")
        k_max = max(ks)
        for est in [*self.estimators.values(), *adj_est.values()]:
            est.reset()
        per_user: dict[str, dict[str, list[torch.Tensor]]] = {s: {} for s in splits}
        for start in range(0, users_all.numel(), self.cfg.user_batch_size):
            users = users_all[start : start + self.cfg.user_batch_size]
            scores = scorer(users)  # [B, I], masked in place below
            tops: list[torch.Tensor] = []
            applied = 0
            for g in groups:
                mask_history(scores, users, g[applied:])
                applied = len(g)
                tops.append(top_items(scores, k_max))  # [B, k]
                if gammas and _same(g, self.masks["val"]):
                    self._adjusted_val(
                        scores, users, member[splits.index("val")], k_max, adjusted, adj_est
                    )
            for i, split in enumerate(splits):
                rows = member[i, users]
                if not bool(rows.any()):
                    continue
                su = users[rows]
                group = next(j for j, g in enumerate(groups) if _same(g, self.masks[split]))
                if split in self.candidates:
                    if group != len(groups) - 1:
                        raise ValueError(f"{split}: candidate ranking needs the longest mask")
                    top, shown = _candidate_top(scores[rows], su, self.candidates[split], k_max)
                    hits = self.csr[split].contains(su, top, self.num_items) & shown
                else:
                    top = tops[group][rows]  # [n, k]
                    hits = self.csr[split].contains(su, top, self.num_items)  # [n, k]
                if on_top is not None:
                    on_top(split, su, top)
                num_pos = self.csr[split].counts()[su]
                values = ranking_metrics(hits, num_pos, ks)
                if split in self.estimators:
                    values.update(self.estimators[split].update(su, top, hits))
                for name, vals in values.items():
                    per_user[split].setdefault(name, []).append(vals)
        out = {}
        for split in splits:
            eval_users = self.eval_users[split]
            cat = {k: torch.cat(v) for k, v in per_user[split].items()}
            means = {k: float(v.mean()) for k, v in cat.items()}
            if split in self.estimators and cat:
                means.update(self.estimators[split].strat_means())
            out[split] = SplitResult(
                means=means,
                users=eval_users.cpu() if keep_per_user else eval_users[:0].cpu(),
                per_user={k: v.cpu() for k, v in cat.items()} if keep_per_user else {},
            )
        for g, vals in adjusted.items():
            means = {k: float(torch.cat(v).mean()) for k, v in vals.items()}
            if vals:
                means.update(adj_est[g].strat_means())
            out["val"].adjusted[g] = means
        return out

    def _adjusted_val(
        self,
        scores: torch.Tensor,
        users: torch.Tensor,
        in_val: torch.Tensor,
        k_max: int,
        adjusted: dict[float, dict[str, list[torch.Tensor]]],
        estimators: dict[float, ValEstimators],
    ) -> None:
        """Val metrics of ``scores - g * offsets`` for each grid value ``g`` of one batch
        (``scores`` carry val's mask already; masked entries stay ``-inf``).

        Shapes:
            scores: [B, I]; users: [B]; in_val: [U] bool.
        """
        rows = in_val[users]
        if not bool(rows.any()):
            return
        su, sub = users[rows], scores[rows]
        num_pos = self.csr["val"].counts()[su]
        buf = block_buffer(su.numel(), self.num_items, scores.device)  # one for every g
        for g, acc in adjusted.items():
            torch.sub(sub, g * self.offsets, out=buf[:, : self.num_items])
            top = top_items_by_blocks(buf, k_max, self.num_items)
            hits = self.csr["val"].contains(su, top, self.num_items)
            values = ranking_metrics(hits, num_pos, self.cfg.ks)
            values.update(estimators[g].update(su, top, hits))
            for name, vals in values.items():
                acc.setdefault(name, []).append(vals)
