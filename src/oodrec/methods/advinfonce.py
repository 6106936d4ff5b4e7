"""``advinfonce``: AdvInfoNCE (Zhang et al., NeurIPS 2023) on LightGCN (docs/methods/advinfonce.md).

Main phase, per batch: cosine InfoNCE over N uniform negatives whose terms carry adversarial
hardness weights p = softmax_n(a_u . a_j) from separate adversary tables (frozen here):

    L = -mean_b log( e^{s+/tau} / (e^{s+/tau} + k_neg * N * sum_n p_bn e^{s-_bn / tau}) )

plus L2 on the batch's ego embeddings; Adam steps the recommender only.

Adversarial phase: at the start of epoch e, if (e + 3) % adv_interval == 0, e > warm_up_epochs
and fewer than ``eta_epochs`` adversarial passes have run, ``adv_epochs`` full passes train the
adversary tables by gradient ascent on L (their own Adam, ``adv_lr``) with the recommender frozen.
The pass counter is a buffer, so a resumed run replays the schedule. Scores are cosine
similarities (``pred_norm``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from oodrec.errors import ConfigError
from oodrec.methods.base import Method, MethodContext, NegativeProbe, Representations, Scorer
from oodrec.methods.common import (
    build_lightgcn,
    cosine_scores,
    item_counts,
    pair_batches,
    training_positives,
    uniform_probe,
)
from oodrec.models.base import gathered_scores
from oodrec.models.lightgcn import init_embedding_
from oodrec.samplers import TripletBatch
from oodrec.samplers.base import uniform_items
from oodrec.seeding import make_generator


@dataclass(frozen=True)
class AdvInfoNCEOptions:
    """AdvInfoNCE hyperparameters (official README, LightGCN on KuaiRec, and parser defaults)."""

    tau: float = 2.0
    """Temperature of the cosine InfoNCE."""
    neg_sample: int = 128
    """Uniform negatives N per positive (training positives rejected)."""
    k_neg: float = 64.0
    """Extra multiplier of the negative mass (in addition to N)."""
    adv_dim: int = 64
    """Width d_w of the adversary's user and item tables."""
    adv_lr: float = 5e-5
    """Adam learning rate of the adversary (gradient ascent)."""
    adv_interval: int = 5
    """Adversarial passes start at epochs e with (e + 3) % adv_interval == 0."""
    adv_epochs: int = 1
    """Full adversarial passes each time."""
    eta_epochs: int = 12
    """Cap on the total number of adversarial passes (bounds KL(p || uniform))."""
    warm_up_epochs: int = 0
    """No adversarial pass at epochs <= this."""

    def __post_init__(self) -> None:
        if self.tau <= 0 or self.neg_sample < 1 or self.adv_interval < 1 or self.adv_epochs < 0:
            raise ConfigError(
                "model.tau must be > 0, model.neg_sample and model.adv_interval >= 1 and "
                f"model.adv_epochs >= 0; got {self.tau}, {self.neg_sample}, "
                f"{self.adv_interval}, {self.adv_epochs}"
            )


def adv_infonce(
    s_pos: torch.Tensor, s_neg: torch.Tensor, p: torch.Tensor, tau: float, k_neg: float
) -> torch.Tensor:
    """The AdvInfoNCE loss from cosine scores and hardness weights.

    Shapes: s_pos [B], s_neg [B, N], p [B, N] (rows sum to 1) -> scalar.
    """
    n = s_neg.shape[1]
    # log(k N sum_n p e^{s/tau}) as one logsumexp: stable for small tau
    neg = torch.logsumexp(s_neg / tau + p.clamp_min(1e-30).log(), dim=1) + math.log(k_neg * n)
    pos = s_pos / tau
    return (torch.logaddexp(pos, neg) - pos).mean()


class AdvInfoNCE(Method):
    """AdvInfoNCE: InfoNCE with adversarially learned per-negative hardness (a DRO view).

    Paper: An Zhang et al., "Empowering Collaborative Filtering with Principled Adversarial
    Contrastive Loss", NeurIPS 2023 (official code LehengTHU/AdvInfoNCE). LightGCN backbone
    (model.emb_dim, model.num_layers, model.init), train.l2 on the egos (standard squared form;
    the official negatives' term is written as a power, see docs/methods/advinfonce.md).
    """

    Options = AdvInfoNCEOptions
    paper = "Zhang et al., Empowering CF with Principled Adversarial Contrastive Loss, NeurIPS 2023"

    def __init__(self, ctx: MethodContext, options: AdvInfoNCEOptions | None) -> None:
        opts = options or AdvInfoNCEOptions()
        super().__init__(ctx, opts)
        data = ctx.data
        self.model = build_lightgcn(ctx)
        gen = make_generator(ctx.cfg.seed, "init", 2)
        self.adv_user = nn.Parameter(torch.empty(data.num_users, opts.adv_dim))
        self.adv_item = nn.Parameter(torch.empty(data.num_items, opts.adv_dim))
        with torch.no_grad():
            for p in (self.adv_user, self.adv_item):
                init_embedding_(p, ctx.cfg.model.init, gen)
        self.register_buffer("adv_passes", torch.zeros((), dtype=torch.long))
        self.positives = training_positives(ctx)
        self._adv_steps = self._adv_pass_count = 0

    @classmethod
    def train_overrides(cls, options: dict[str, Any]) -> dict[str, Any]:
        # official README (LightGCN, KuaiRec): lr 3e-5, batch 2048, regs 1e-5, xavier-normal
        return {"train.lr": 3e-5, "train.l2": 1e-5, "model.init": "xavier_normal"}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        lr = self.ctx.cfg.train.lr
        return {
            "main": torch.optim.Adam(self.model.parameters(), lr=lr),
            "adversary": torch.optim.Adam([self.adv_user, self.adv_item], lr=self.options.adv_lr),
        }

    def _passes_this_epoch(self, epoch: int) -> int:
        o = self.options
        if (epoch + 3) % o.adv_interval != 0 or epoch <= o.warm_up_epochs:
            return 0
        return max(0, min(o.adv_epochs, o.eta_epochs - int(self.adv_passes)))

    def start_epoch(self, epoch: int) -> None:
        passes = self._passes_this_epoch(epoch)
        n_pairs, bs = self.ctx.data.users.numel(), self.ctx.cfg.train.batch_size
        self._adv_pass_count = passes
        self._adv_steps = passes * math.ceil(n_pairs / bs)
        self.adv_passes += passes

    def batches(self, epoch: int, gen: torch.Generator) -> Iterator[TripletBatch]:
        tcfg = self.ctx.cfg.train
        data = self.ctx.data
        for _ in range(self._adv_pass_count):  # adversarial passes first (phase "adversary")
            yield from pair_batches(data, tcfg.batch_size, False, gen)
        yield from pair_batches(data, tcfg.batch_size, tcfg.drop_last, gen)

    def phase(self, epoch: int, step: int) -> str:
        return "adversary" if step < self._adv_steps else "main"

    def hardness(self, users: torch.Tensor, negs: torch.Tensor) -> torch.Tensor:
        """p = softmax over the negatives of a_u . a_j. Shapes: [B], [B, N] -> [B, N].

        Scores against every item, then gathered: a dense [B, I] product whose backward is a
        matmul, where gathering [B, N, d] rows made the backward a scatter-add that dominated
        the epoch (about 6x slower on Food with N = 128).
        """
        logits = gathered_scores(self.adv_user[users], self.adv_item).gather(1, negs)
        return torch.softmax(logits, dim=1)

    def loss(
        self, batch: TripletBatch, gen: torch.Generator, phase: str = "main"
    ) -> dict[str, torch.Tensor]:
        o, tcfg = self.options, self.ctx.cfg.train
        users, pos = batch.users, batch.pos_items
        negs = uniform_items(
            users, self.ctx.data.num_items, gen, num=o.neg_sample, positives=self.positives
        )  # [B, N]
        adversary = phase == "adversary"
        with torch.set_grad_enabled(not adversary and torch.is_grad_enabled()):
            emb = self.model.propagate()
        # cosine scores against every item, then gathered (see ``hardness`` for why)
        s_pos, s_neg = cosine_scores(emb.users[users], emb.items, pos, negs)
        if adversary:  # gradient ascent on the adversary tables; recommender frozen
            p = self.hardness(users, negs)
            return {"adv_loss": -adv_infonce(s_pos, s_neg, p, o.tau, o.k_neg)}
        with torch.no_grad():
            p = self.hardness(users, negs)
        loss = adv_infonce(s_pos, s_neg, p, o.tau, o.k_neg)
        # squared L2 of the batch's egos; each negative row counted as often as it was drawn
        counts = item_counts(negs, self.ctx.data.num_items)
        neg_sq = (counts * emb.item_ego.pow(2).sum(1)).sum()
        pos_sq = emb.user_ego[users].pow(2).sum() + emb.item_ego[pos].pow(2).sum()
        reg = tcfg.l2 * (pos_sq + neg_sq) / (2 * len(batch))
        return {"infonce": loss, "l2": reg}

    def scorer(self) -> Scorer:
        emb = self.model.propagate()
        users, items = F.normalize(emb.users, dim=-1), F.normalize(emb.items, dim=-1)
        return lambda u: users[u] @ items.T

    def representations(self) -> Representations:
        emb = self.model.propagate()
        users, items = F.normalize(emb.users, dim=-1), F.normalize(emb.items, dim=-1)
        return Representations(users, items, "inner product (of L2-normalised embeddings)")

    def negative_probe(self, gen: torch.Generator) -> NegativeProbe:
        return uniform_probe(self.model, self.positives, self.ctx.data.num_items, gen)

    def diagnostics(self) -> dict[str, float]:
        return {"adv_passes": float(self.adv_passes)}
