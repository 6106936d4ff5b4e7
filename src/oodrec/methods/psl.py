"""``psl``: the pairwise softmax loss PSL (Yang et al., NeurIPS 2024) on LightGCN
(docs/methods/psl.md); MF is ``model.num_layers=0``.

Per batch of shuffled training pairs:

1. propagate LightGCN; L2-normalise the user and item outputs (training is on cosines);
2. draw N = ``neg_sample`` uniform negatives per pair, with replacement, training positives
   rejected;
3. d_bn = (cos(u_b, j_bn) - cos(u_b, i_b)) / score_tau;
4. L = mean_b logsumexp_n( log sigma(d_bn) / tau ), sigma = ``activation``
   (``oodrec.models.psl.psl_loss``);
5. Adam with the official coupled ``weight_decay`` on every parameter (0 by default), plus
   ``train.l2`` on the batch's egos (0 by default: the official code has no explicit L2).

Scores are cosines, as in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from oodrec.errors import ConfigError
from oodrec.methods.base import Method, MethodContext, NegativeProbe, Representations, Scorer
from oodrec.methods.common import (
    HistoryIndex,
    build_lightgcn,
    cosine_scores,
    ego_l2,
    pair_batches,
    training_positives,
    uniform_probe,
)
from oodrec.models.psl import PSL_ACTIVATIONS, psl_loss
from oodrec.samplers import TripletBatch
from oodrec.samplers.base import uniform_items


@dataclass(frozen=True)
class PSLOptions:
    """PSL hyperparameters (official code Tiny-Snow/IR-Benchmark, ``optim PSL``, and the paper's
    Appendix B.5)."""

    tau: float = 0.1
    """Robustness temperature tau (official ``tau_star``): L = log sum sigma(d)^(1/tau). 0.1 is
    the official tuning script's starting value and lies in the paper's grid {0.005, 0.025,
    0.05, 0.1, 0.25}; the paper's tuned OOD values are 0.025-0.05 (the CLI default, 1.0, is
    outside the grid)."""
    score_tau: float = 2.0
    """Score temperature (official ``tau``, CLI and tuning-script default 2): d = (cos_neg -
    cos_pos) / score_tau, which keeps d in [-1, 1]; below 2 the ``atan`` and ``relu``
    surrogates leave their range (their log argument is clamped at 1e-12)."""
    activation: Literal["tanh", "atan", "relu"] = "tanh"
    """Surrogate sigma of the step function: ``tanh`` (tanh(d) + 1, the official default),
    ``atan`` (atan(d) + 1) or ``relu`` (relu(d + 1))."""
    neg_sample: int = 1000
    """Uniform negatives N per positive, drawn with replacement, training positives rejected
    (official ``neg_num`` default and the paper's setting)."""
    weight_decay: float = 0.0
    """Adam's coupled weight decay on every parameter (official ``weight_decay``, default 0; the
    paper's grid is {0, 1e-4, 1e-5, 1e-6} and its tuned OOD value 0)."""
    form: Literal["softmax", "pairwise"] = "softmax"
    """``softmax``: mean over rows of logsumexp over each row's negatives (the paper's PSL,
    official ``method=1``); ``pairwise``: log of the mean of sigma(d)^(1/tau) over the whole
    batch (official ``method=2``, not used in the paper)."""
    include_positive: bool = False
    """Add the positive's own term sigma(0)^(1/tau) = 1 to each row's sum, as the paper's sum
    over all items does; False sums over the sampled negatives only, as the official code."""

    def __post_init__(self) -> None:
        if not (self.tau > 0 and self.score_tau > 0 and math.isfinite(self.tau)):
            raise ConfigError(
                f"model.tau and model.score_tau must be > 0, got {self.tau}, {self.score_tau}"
            )
        if self.neg_sample < 1 or self.weight_decay < 0:
            raise ConfigError(
                f"model.neg_sample must be >= 1 and model.weight_decay >= 0, got "
                f"{self.neg_sample}, {self.weight_decay}"
            )
        if self.activation not in PSL_ACTIVATIONS or self.form not in ("softmax", "pairwise"):
            raise ConfigError(
                f"model.activation must be one of {PSL_ACTIVATIONS} and model.form softmax or "
                f"pairwise, got {self.activation!r}, {self.form!r}"
            )


class PSL(Method):
    """PSL: the softmax loss in pairwise form, exp replaced by a surrogate of the step function.

    Trained on cosine scores against many uniform negatives.

    Paper: Weiqin Yang et al., "PSL: Rethinking and Improving Softmax Loss from Pairwise
    Perspective for Recommendation", NeurIPS 2024 (official code Tiny-Snow/IR-Benchmark,
    ``optim_PSL.py``). LightGCN backbone (model.emb_dim, model.num_layers, model.init); MF is
    model.num_layers=0. The official lr 0.1 on N(0, 1) tables is lr 0.01 on the implied
    N(0, 0.1^2) tables (see docs/methods/psl.md, Options).
    """

    Options = PSLOptions
    paper = (
        "Yang et al., PSL: Rethinking and Improving Softmax Loss from Pairwise Perspective "
        "for Recommendation, NeurIPS 2024"
    )

    def __init__(self, ctx: MethodContext, options: PSLOptions | None) -> None:
        opts = options or PSLOptions()
        super().__init__(ctx, opts)
        data = ctx.data
        self.model = build_lightgcn(ctx)
        self.positives = training_positives(ctx)
        self.history = HistoryIndex(data.users, data.items, data.num_users, data.num_items)

    @classmethod
    def train_overrides(cls, options: dict[str, Any]) -> dict[str, Any]:
        # official: batch 1024, no explicit L2, nn.Embedding's N(0, 1) tables with the paper's
        # tuned lr 0.1; the loss is scale-invariant, so N(0, 0.1^2) tables with lr 0.01 take
        # the same Adam steps relative to the weights
        return {
            "train.lr": 0.01,
            "train.batch_size": 1024,
            "train.l2": 0.0,
            "model.init": "normal",
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        lr, wd = self.ctx.cfg.train.lr, self.options.weight_decay
        return {"main": torch.optim.Adam(self.parameters(), lr=lr, weight_decay=wd)}

    def batches(self, epoch: int, gen: torch.Generator):
        tcfg = self.ctx.cfg.train
        return pair_batches(self.ctx.data, tcfg.batch_size, tcfg.drop_last, gen)

    def loss(
        self, batch: TripletBatch, gen: torch.Generator, phase: str = "main"
    ) -> dict[str, torch.Tensor]:
        o, l2 = self.options, self.ctx.cfg.train.l2
        users, pos = batch.users, batch.pos_items
        negs = uniform_items(
            users,
            self.ctx.data.num_items,
            gen,
            num=o.neg_sample,
            positives=self.positives if self.ctx.sync_free else self.history.batch(users),
        )  # [B, N]; the same draws as with ``self.positives``, faster
        emb = self.model.propagate()
        s_pos, s_neg = cosine_scores(emb.users[users], emb.items, pos, negs)
        loss = psl_loss(s_pos, s_neg, o.tau, o.score_tau, o.activation, o.form, o.include_positive)
        terms = {"psl": loss}
        if l2:
            terms["l2"] = l2 * ego_l2(emb.user_ego, emb.item_ego, users, pos, negs)
        return terms

    def _normalised(self) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.model.propagate()
        return F.normalize(emb.users, dim=-1), F.normalize(emb.items, dim=-1)

    def scorer(self) -> Scorer:
        users, items = self._normalised()
        return lambda u: users[u] @ items.T

    def representations(self) -> Representations:
        users, items = self._normalised()
        return Representations(users, items, "inner product (of L2-normalised embeddings)")

    def negative_probe(self, gen: torch.Generator) -> NegativeProbe:
        return uniform_probe(self.model, self.positives, self.ctx.data.num_items, gen)
