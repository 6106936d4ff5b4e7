"""``pda``: PD / PDA (Zhang et al., SIGIR 2021), LightGCN trained with a popularity-weighted
BPR and ranked with the popularity summed out (PD) or put back (PDA) (docs/methods/pda.md).

Preparation, from the training split only:

1. the time stage t of every training pair: ``stages`` equal-width slots of the training
   timestamps, or one stage when the data has none (then the popularity is global, the paper's
   PDG);
2. the popularity m_i^t of every item in every stage: its count there, min-max rescaled across
   items within the stage (the official +1 smoothing and division by the stage total cancel in
   the rescaling), so m is in [0, 1] and a stage's least popular items get 0;
3. the factor table Q = max(m^gamma, ``min_pop``), items x stages.

Per batch of training pairs (u, i, t), each with one uniform negative j:

4. one LightGCN propagation; s+ = u.i and s- = u.j;
5. q+ = Q[i, t] and q- = Q[j, t]: the negative takes its popularity at the positive's stage;
6. L = mean softplus(-((ELU(s+) + 1) q+ - (ELU(s-) + 1) q-)) + train.l2 (|u|^2 + |i|^2 + |j|^2)
   / (2B) on the ego embeddings.

Ranking: ``inference=pd`` by s = u.i; ``inference=pda`` by (ELU(s) + 1) q~, with q~ the factor
of the last training stage's popularity (``target=last``) or of its linear extrapolation
(``target=extrapolate``). Nothing is read from the validation or test splits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from oodrec.methods.base import Method, MethodContext, NegativeProbe, Representations, Scorer
from oodrec.methods.common import (
    batch_slices,
    build_lightgcn,
    inner_product_representations,
    inner_product_scorer,
    training_positives,
    uniform_probe,
)
from oodrec.models.losses import l2_loss
from oodrec.samplers import TripletBatch
from oodrec.samplers.base import uniform_items

EXTRAPOLATE_CLIP = (1e-9, 1.0)
"""Range of the extrapolated target popularity (``target=extrapolate``), as the official code."""


@dataclass(frozen=True)
class PDAOptions:
    """PD / PDA hyperparameters (official code's defaults; docs/methods/pda.md)."""

    gamma: float = 0.1
    """Popularity exponent: the training factor is m^gamma, and PDA's ranking factor too (the
    official ``pop_exp``; its README's best values are 0.02 for PD and 0.16-0.22 for PDA)."""
    inference: Literal["pd", "pda"] = "pd"
    """Ranking (and so model selection): ``pd`` ranks by the raw score s = u.i, popularity summed
    out; ``pda`` by (ELU(s) + 1) times the target popularity's factor (``target``)."""
    stages: int = 9
    """Equal-width time stages of the training split's timestamps; each training pair takes the
    popularity of its stage (the official code cuts the whole log into 10 slots and holds the last
    one out, leaving 9 for training). Data without timestamps has one stage: global popularity."""
    target: Literal["last", "extrapolate"] = "last"
    """PDA's target popularity: the last training stage's (``last``), or m_T + (m_T - m_{T-1}) / 2
    from the last two stages, clipped to [1e-9, 1] (``extrapolate``; with one stage it equals
    ``last``). Never the popularity of a held-out split."""
    min_pop: float = 0.0
    """Floor of the popularity factor m^gamma, in training and in PDA ranking. 0, as the
    official code: a stage's least popular items (m = 0) then get no gradient from the BPR term
    (see docs/methods/pda.md, Departures)."""
    user_uniform: bool = False
    """Batches as the official code draws them: per batch, B distinct uniform users with one
    uniform training item each, |train| // B + 1 batches per epoch. False: one shuffled pass
    over the training pairs (the convention of the other methods here)."""

    def __post_init__(self) -> None:
        if not self.gamma >= 0:
            raise ValueError(f"model.gamma must be >= 0, got {self.gamma}")
        if self.stages < 1:
            raise ValueError(f"model.stages must be >= 1, got {self.stages}")
        if not 0 <= self.min_pop <= 1:
            raise ValueError(f"model.min_pop must be in [0, 1], got {self.min_pop}")


@dataclass(frozen=True)
class StagedBatch(TripletBatch):
    """Training pairs with the time stage of each.

    Shapes:
        users, pos_items, stages: [B] long.
    """

    stages: torch.Tensor


def time_stages(timestamps: torch.Tensor | None, n: int, stages: int) -> torch.Tensor:
    """The equal-width time stage of every pair: stage k holds the times in
    [lo + k (hi - lo) / stages, lo + (k + 1) (hi - lo) / stages), the last one also hi.

    Args:
        timestamps: [n] int64 times, or None (then every pair is in stage 0).
        n: number of pairs.
        stages: number of stages.

    Shapes: returns [n] long in [0, stages).
    """
    if timestamps is None or stages == 1 or n == 0:
        device = None if timestamps is None else timestamps.device
        return torch.zeros(n, dtype=torch.long, device=device)
    ts = timestamps.long()
    lo, hi = ts.min(), ts.max()
    span = hi - lo
    if int(span) == 0:
        return torch.zeros(n, dtype=torch.long, device=ts.device)
    return torch.div((ts - lo) * stages, span, rounding_mode="floor").clamp_max(stages - 1)


def stage_popularity(
    items: torch.Tensor, stages: torch.Tensor, num_items: int, num_stages: int
) -> torch.Tensor:
    """Min-max rescaled popularity of every item in every stage.

    m_i^t = (N_i^t - min_j N_j^t) / (max_j N_j^t - min_j N_j^t) over all ``num_items`` items,
    N_i^t the count of item i in stage t. This equals the official (N + 1) / (sum N + |I|)
    followed by min-max: the smoothing and the normalisation cancel. A stage where every item has
    the same count (max = min) gets 1 for every item.

    Shapes: items, stages [N] long -> [num_items, num_stages] float32 in [0, 1].
    """
    flat = stages * num_items + items
    counts = torch.bincount(flat, minlength=num_stages * num_items).view(num_stages, num_items)
    counts = counts.T.double()  # [I, T]
    lo, hi = counts.min(0).values, counts.max(0).values
    width = hi - lo
    m = (counts - lo) / width.clamp_min(1)
    return torch.where(width > 0, m, torch.ones_like(m)).float()


def target_popularity(m: torch.Tensor, target: str) -> torch.Tensor:
    """PDA's target popularity from the training stages' ``m`` [I, T]: the last stage's column
    (``last``), or its linear extrapolation from the last two, clipped (``extrapolate``).

    Shapes: m [I, T] -> [I].
    """
    last = m[:, -1]
    if target == "last" or m.shape[1] == 1:
        return last.clone()
    return (last + 0.5 * (last - m[:, -2])).clamp(*EXTRAPOLATE_CLIP)


def pop_factor(m: torch.Tensor, gamma: float, min_pop: float = 0.0) -> torch.Tensor:
    """The popularity factor max(m^gamma, ``min_pop``) (0^gamma = 0 for gamma > 0, 1 for 0)."""
    return m.pow(gamma).clamp_min(min_pop)


def elu_plus_one(scores: torch.Tensor) -> torch.Tensor:
    """ELU'(s) = ELU(s) + 1 > 0, the positive transform of the raw score."""
    return F.elu(scores) + 1


def pda_bpr(
    s_pos: torch.Tensor, s_neg: torch.Tensor, q_pos: torch.Tensor, q_neg: torch.Tensor
) -> torch.Tensor:
    """The popularity-weighted BPR: mean of -log sigma(ELU'(s+) q+ - ELU'(s-) q-), computed as
    softplus of the negated difference.

    Shapes: all [B] -> scalar.
    """
    diff = elu_plus_one(s_pos) * q_pos - elu_plus_one(s_neg) * q_neg
    return F.softplus(-diff).mean()


class UserUniformPairs:
    """The official batches: per batch, B distinct users drawn uniformly among those with a
    training pair, each with one uniform training pair; |train| // B + 1 batches per epoch.

    Args:
        users: training users [N] long.
        num_users: user id space size.
    """

    def __init__(self, users: torch.Tensor, num_users: int) -> None:
        self.order = torch.argsort(users, stable=True)  # pair indices grouped by user
        self.deg = torch.bincount(users, minlength=num_users)
        self.start = self.deg.cumsum(0) - self.deg
        self.active = torch.nonzero(self.deg > 0).squeeze(1)
        self.size = users.numel()

    def batches(self, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
        """Pair indices of each batch, drawn lazily from ``gen``.

        Shapes: yields [min(batch_size, users with pairs)] long.
        """
        dev, n_active = self.order.device, self.active.numel()
        b = min(batch_size, n_active)
        for _ in range(self.size // batch_size + 1):
            users = self.active[torch.randperm(n_active, generator=gen, device=dev)[:b]]
            deg = self.deg[users]
            offset = (torch.rand(b, generator=gen, device=dev) * deg).long().minimum(deg - 1)
            yield self.order[self.start[users] + offset]


class PDA(Method):
    """PD / PDA: popularity-deconfounded training, with optional popularity adjustment.

    Paper: Yang Zhang et al., "Causal Intervention for Leveraging Popularity Bias in
    Recommendation", SIGIR 2021 (official code zyang1580/PDA, ``s_condition`` training). LightGCN
    backbone (model.emb_dim, model.num_layers, model.init) instead of the paper's MF, one uniform
    negative per positive, train.l2 on the egos.
    """

    Options = PDAOptions
    paper = (
        "Zhang et al., Causal Intervention for Leveraging Popularity Bias in Recommendation, "
        "SIGIR 2021"
    )
    unscored_reason = (
        "with model.inference=pda the score (ELU(u.i) + 1) * q_i has an item popularity factor, "
        "so it is not a function of one vector per user and item; a run with inference=pd "
        "exports its inner-product vectors"
    )

    def __init__(self, ctx: MethodContext, options: PDAOptions | None) -> None:
        opts = options or PDAOptions()
        super().__init__(ctx, opts)
        data = ctx.data
        self.model = build_lightgcn(ctx)
        self.positives = training_positives(ctx)
        self.num_stages = opts.stages if data.timestamps is not None else 1
        stage = time_stages(data.timestamps, data.users.numel(), self.num_stages)
        m = stage_popularity(data.items, stage, data.num_items, self.num_stages)
        q_target = pop_factor(target_popularity(m, opts.target), opts.gamma, opts.min_pop)
        # derived from the training split at every build: not saved in checkpoints
        self.register_buffer("pair_stage", stage.to(ctx.device), persistent=False)
        self.register_buffer(
            "q_train", pop_factor(m, opts.gamma, opts.min_pop).to(ctx.device), persistent=False
        )
        self.register_buffer("q_target", q_target.to(ctx.device), persistent=False)
        self.user_pairs = (
            UserUniformPairs(data.users, data.num_users) if opts.user_uniform else None
        )
        # this epoch's triples with q+ = 0 and with q- = 0 (diagnostics), and all its triples
        self._zero_q = torch.zeros(2, dtype=torch.long, device=ctx.device)
        self._triples = 0

    @classmethod
    def train_overrides(cls, options: dict[str, Any]) -> dict[str, Any]:
        # the official README's regs for every dataset and both PD and PDA (its lr 0.01 and
        # batch 2048 are the defaults here)
        return {"train.l2": 1e-3}

    def start_epoch(self, epoch: int) -> None:
        self._zero_q.zero_()
        self._triples = 0

    def batches(self, epoch: int, gen: torch.Generator) -> Iterator[StagedBatch]:
        tcfg, data = self.ctx.cfg.train, self.ctx.data
        if self.user_pairs is not None:
            for idx in self.user_pairs.batches(tcfg.batch_size, gen):
                yield StagedBatch(data.users[idx], data.items[idx], self.pair_stage[idx])
            return
        n = data.users.numel()
        perm = torch.randperm(n, generator=gen, device=data.users.device)  # as pair_batches
        for sl in batch_slices(n, tcfg.batch_size, tcfg.drop_last):
            idx = perm[sl]
            yield StagedBatch(data.users[idx], data.items[idx], self.pair_stage[idx])

    def loss(
        self, batch: StagedBatch, gen: torch.Generator, phase: str = "main"
    ) -> dict[str, torch.Tensor]:
        users, pos, stage = batch.users, batch.pos_items, batch.stages
        neg = uniform_items(users, self.ctx.data.num_items, gen, positives=self.positives)
        emb = self.model.propagate()
        u = emb.users[users]
        s_pos = (u * emb.items[pos]).sum(-1)
        s_neg = (u * emb.items[neg]).sum(-1)
        q_pos, q_neg = self.q_train[pos, stage], self.q_train[neg, stage]
        with torch.no_grad():
            self._zero_q += torch.stack([(q_pos == 0).sum(), (q_neg == 0).sum()])
            self._triples += len(batch)
        egos = (emb.user_ego[users], emb.item_ego[pos], emb.item_ego[neg])
        reg = self.ctx.cfg.train.l2 * l2_loss(*egos, batch_size=len(batch), form="squared")
        return {"bpr": pda_bpr(s_pos, s_neg, q_pos, q_neg), "l2": reg}

    def scorer(self) -> Scorer:
        if self.options.inference == "pd":
            return inner_product_scorer(self.model)
        emb, q = self.model.propagate(), self.q_target

        def score(users: torch.Tensor) -> torch.Tensor:
            s = emb.users[users] @ emb.items.T
            return elu_plus_one(s).mul_(q)

        return score

    def representations(self) -> Representations | None:
        if self.options.inference == "pd":
            return inner_product_representations(self.model)
        return None

    def negative_probe(self, gen: torch.Generator) -> NegativeProbe:
        return uniform_probe(self.model, self.positives, self.ctx.data.num_items, gen)

    def diagnostics(self) -> dict[str, float]:
        zero_pos, zero_neg = self._zero_q.tolist()
        n = self._triples
        if not n:
            return {}
        # triples whose positive / negative side gets no gradient through the BPR term (q = 0)
        return {"pda_zero_q_pos": zero_pos / n, "pda_zero_q_neg": zero_neg / n}

    def describe(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.options), "time_stages_used": self.num_stages}
