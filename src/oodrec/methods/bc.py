"""``bc``: BC loss (Zhang et al., NeurIPS 2022), bias-aware angular margins in a cosine InfoNCE,
on LightGCN (docs/methods/bc.md); MF is ``model.num_layers=0``.

Popularity indices: pi(u) is the rank of deg(u) among the distinct positive training user
degrees, likewise pi(i) for items (``oodrec.models.bc.popularity_ranks``); two tables P_U, P_I
hold one row per index.

Per batch (user-balanced rows: row r of an epoch's |train| rows is user ``r mod |active users|``
after a shuffle, with one of its training positives at random), with N = ``neg_sample`` uniform
negatives per row (training positives rejected) or the batch's other positives (``in_batch``):

- phase ``pop`` (epochs < ``freeze_epoch``): only the popularity branch trains, on
  L_pop = w InfoNCE(cos(p_u, p_i) / tau2 against cos(p_u, p_j) / tau2); no propagation;
- phase ``main`` (later): the popularity tables are frozen; margin M = 1 - sigmoid(p_u . p_i)
  (``margin="code"``) or min(angle(p_u, p_i), pi - theta) (``"angle"``), and
  L = (1 - w) InfoNCE(cos(theta + M) / tau1 against cos(u, j) / tau1) + train.l2 on the egos,
  theta the angle between the L2-normalised LightGCN outputs of u and i.

Scores are cosines (``score="cos"``) or the official dot products (``"dot"``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from oodrec.errors import ConfigError
from oodrec.methods.base import Method, MethodContext, NegativeProbe, Representations, Scorer
from oodrec.methods.common import (
    HistoryIndex,
    UserSampledPairs,
    batch_slices,
    build_lightgcn,
    cosine_scores,
    ego_l2,
    pair_batches,
    popularity_tables,
    training_positives,
    uniform_probe,
)
from oodrec.models.bc import (
    MASKED,
    angle,
    angle_margin,
    bc_main_loss,
    code_margin,
    infonce,
    popularity_ranks,
)
from oodrec.samplers import TripletBatch
from oodrec.samplers.base import uniform_items


@dataclass(frozen=True)
class BCOptions:
    """BC loss hyperparameters (official code anzhang314/BC-Loss: ``parse.py`` defaults and the
    README's commands)."""

    tau1: float = 0.07
    """Temperature of the main branch's InfoNCE (official ``tau1``)."""
    tau2: float = 0.1
    """Temperature of the popularity branch's InfoNCE (official ``tau2``)."""
    w_lambda: float = 0.5
    """Weight w: the popularity loss is weighted w, the main loss 1 - w (official)."""
    freeze_epoch: int = 5
    """Epochs < freeze_epoch train the popularity branch only; from then on it is frozen and
    only the main branch trains (official)."""
    neg_sample: int = 128
    """Uniform negatives N per positive, training positives rejected (the README's 128; the
    official default -1 means in-batch, see ``negatives``)."""
    negatives: Literal["sampled", "in_batch"] = "sampled"
    """``sampled``: ``neg_sample`` uniform negatives (official ``BC_LOSS``); ``in_batch``: the
    batch's other positives, in both branches (official ``BC_LOSS_batch``, which crashes as
    released; see docs/methods/bc.md)."""
    margin: Literal["code", "angle"] = "code"
    """``code``: M = 1 - sigmoid(p_u . p_i) of the raw popularity rows, uncapped (official
    code); ``angle``: M = min(angle(p_u, p_i), pi - theta_ui) (the paper's margin)."""
    score: Literal["cos", "dot"] = "cos"
    """Ranking score: ``cos`` (as trained) or ``dot``, the inner product of the unnormalised
    LightGCN outputs (the official evaluation)."""
    batching: Literal["user", "pair"] = "user"
    """``user``: |train| rows per epoch, each user equally often, a random positive of each
    (official ``TrainDataset``); ``pair``: a shuffled pass over the training pairs."""

    def __post_init__(self) -> None:
        if not (self.tau1 > 0 and self.tau2 > 0 and 0 <= self.w_lambda <= 1):
            raise ConfigError(
                f"model.tau1 and model.tau2 must be > 0 and model.w_lambda in [0, 1], got "
                f"{self.tau1}, {self.tau2}, {self.w_lambda}"
            )
        if self.neg_sample < 1 or self.freeze_epoch < 0:
            raise ConfigError(
                f"model.neg_sample must be >= 1 and model.freeze_epoch >= 0, got "
                f"{self.neg_sample}, {self.freeze_epoch}"
            )
        choices = {
            "negatives": (self.negatives, ("sampled", "in_batch")),
            "margin": (self.margin, ("code", "angle")),
            "score": (self.score, ("cos", "dot")),
            "batching": (self.batching, ("user", "pair")),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"model.{key} must be one of {allowed}, got {value!r}")


class UserBalancedPairs(UserSampledPairs):
    """The official BC loss batches: an epoch has |train| rows; after a shuffle of the row
    indices r, row r is user ``active[r mod |active|]`` (so every user appears equally often,
    up to one), with one of its training positives drawn uniformly.

    Args:
        data: the training view.
    """

    def batches(
        self, batch_size: int, drop_last: bool, gen: torch.Generator
    ) -> Iterator[TripletBatch]:
        """|train| rows from ``gen``, in batches of ``batch_size``.

        Shapes: yields TripletBatch(users [B], pos_items [B]).
        """
        n, dev = self.size, self.items.device
        rows = torch.randperm(n, generator=gen, device=dev)
        users = self.active[rows % self.active.numel()]
        deg = self.deg[users]
        offset = (torch.rand(n, generator=gen, device=dev) * deg).long().minimum(deg - 1)
        pos = self.items[self.start[users] + offset]
        for sl in batch_slices(n, batch_size, drop_last):
            yield TripletBatch(users[sl], pos[sl])


def off_diagonal(scores: torch.Tensor) -> torch.Tensor:
    """``scores`` with its diagonal set to ``MASKED`` (the in-batch negatives of each row).

    Shapes: [B, B] -> [B, B].
    """
    eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    return scores.masked_fill(eye, MASKED)


class BC(Method):
    """BC loss: a cosine InfoNCE with bias-aware angular margins from a popularity branch.

    A popularity branch learns how far popularity alone explains each pair (its bias degree);
    that becomes an angular margin on the positive, large for pairs popularity explains poorly.

    Paper: An Zhang et al., "Incorporating Bias-aware Margins into Contrastive Loss for
    Collaborative Filtering", NeurIPS 2022 (official code anzhang314/BC-Loss, ``BC_LOSS``).
    LightGCN backbone (model.emb_dim, model.num_layers, model.init); MF is model.num_layers=0;
    train.l2 on the egos. See docs/methods/bc.md for the departures from the official code.
    """

    Options = BCOptions
    paper = (
        "Zhang et al., Incorporating Bias-aware Margins into Contrastive Loss for "
        "Collaborative Filtering, NeurIPS 2022"
    )

    def __init__(self, ctx: MethodContext, options: BCOptions | None) -> None:
        opts = options or BCOptions()
        super().__init__(ctx, opts)
        data = ctx.data
        self.model = build_lightgcn(ctx)
        user_rank, n_user = popularity_ranks(data.user_degree())
        item_rank, n_item = popularity_ranks(data.item_degree())
        self.register_buffer("user_rank", user_rank)
        self.register_buffer("item_rank", item_rank)
        self.user_pop, self.item_pop = popularity_tables(ctx, n_user, n_item)
        self.positives = training_positives(ctx)
        self.history = HistoryIndex(data.users, data.items, data.num_users, data.num_items)
        self.rows = UserBalancedPairs(data) if opts.batching == "user" else None

    @classmethod
    def train_overrides(cls, options: dict[str, Any]) -> dict[str, Any]:
        # official parse.py: lr 5e-4, batch 1024, regs 1e-5; xavier-normal tables; the official
        # loader drops the last partial batch
        return {
            "train.lr": 5e-4,
            "train.batch_size": 1024,
            "train.l2": 1e-5,
            "train.drop_last": True,
            "model.init": "xavier_normal",
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        lr = self.ctx.cfg.train.lr
        return {
            "main": torch.optim.Adam(self.model.parameters(), lr=lr),
            "pop": torch.optim.Adam([self.user_pop, self.item_pop], lr=lr),
        }

    def batches(self, epoch: int, gen: torch.Generator) -> Iterator[TripletBatch]:
        tcfg = self.ctx.cfg.train
        if self.rows is not None:
            return self.rows.batches(tcfg.batch_size, tcfg.drop_last, gen)
        return pair_batches(self.ctx.data, tcfg.batch_size, tcfg.drop_last, gen)

    def phase(self, epoch: int, step: int) -> str:
        return "pop" if epoch < self.options.freeze_epoch else "main"

    def warmup_epochs(self) -> int:
        # the pop phase leaves the scorer (the main branch) at its initialisation
        return self.options.freeze_epoch

    def _pop_rows(self, users: torch.Tensor, pos: torch.Tensor):
        return self.user_pop[self.user_rank[users]], self.item_pop[self.item_rank[pos]]

    def popularity_loss(
        self, users: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor | None
    ) -> torch.Tensor:
        """w InfoNCE of the popularity branch on cosines / tau2 (negs None: in-batch).

        Shapes: users [B], pos [B], negs [B, N] or None -> scalar.
        """
        o = self.options
        pu, pi = (F.normalize(x, dim=-1) for x in self._pop_rows(users, pos))
        if negs is None:
            scores = pu @ pi.T  # [B, B]
            s_pos, s_neg = scores.diagonal(), off_diagonal(scores)
        else:  # against every popularity row (one per distinct degree), then gathered
            scores = pu @ F.normalize(self.item_pop, dim=-1).T  # [B, K]
            s_pos = (pu * pi).sum(-1)
            s_neg = scores.gather(1, self.item_rank[negs])
        return o.w_lambda * infonce(s_pos / o.tau2, s_neg / o.tau2)

    def margins(self, users: torch.Tensor, pos: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Each pair's margin M from the frozen popularity tables (no gradient reaches them):
        1 - sigmoid(p_u . p_i) (``margin="code"``) or min(angle(p_u, p_i), pi - theta)
        (``"angle"``).

        Shapes: users [B], pos [B], theta [B] (main angles) -> [B].
        """
        with torch.no_grad():
            pu, pi = self._pop_rows(users, pos)
            if self.options.margin == "code":
                return code_margin(pu, pi)
            pop_cos = F.cosine_similarity(pu, pi, dim=-1)
        return angle_margin(pop_cos, theta)

    def loss(
        self, batch: TripletBatch, gen: torch.Generator, phase: str = "main"
    ) -> dict[str, torch.Tensor]:
        o, l2 = self.options, self.ctx.cfg.train.l2
        users, pos = batch.users, batch.pos_items
        negs = None
        if o.negatives == "sampled":
            negs = uniform_items(
                users,
                self.ctx.data.num_items,
                gen,
                num=o.neg_sample,
                positives=self.positives if self.ctx.sync_free else self.history.batch(users),
            )  # [B, N]; the same draws as with ``self.positives``, faster
        if phase == "pop":  # the main branch is not trained: no propagation
            return {"infonce": self.popularity_loss(users, pos, negs)}  # logged as loss_pop_infonce
        emb = self.model.propagate()
        if negs is None:
            u = F.normalize(emb.users[users], dim=-1)
            scores = u @ F.normalize(emb.items[pos], dim=-1).T  # [B, B]
            s_pos, s_neg = scores.diagonal(), off_diagonal(scores)
        else:
            s_pos, s_neg = cosine_scores(emb.users[users], emb.items, pos, negs)
        margin = self.margins(users, pos, angle(s_pos))
        terms = {"bc": (1 - o.w_lambda) * bc_main_loss(s_pos, s_neg, margin, o.tau1)}
        if l2:
            terms["l2"] = l2 * ego_l2(emb.user_ego, emb.item_ego, users, pos, negs)
        return terms

    def _outputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.model.propagate()
        if self.options.score == "dot":
            return emb.users, emb.items
        return F.normalize(emb.users, dim=-1), F.normalize(emb.items, dim=-1)

    def scorer(self) -> Scorer:
        users, items = self._outputs()
        return lambda u: users[u] @ items.T

    def representations(self) -> Representations:
        users, items = self._outputs()
        how = "inner product"
        if self.options.score == "cos":
            how += " (of L2-normalised embeddings)"
        return Representations(users, items, how)

    def negative_probe(self, gen: torch.Generator) -> NegativeProbe:
        return uniform_probe(self.model, self.positives, self.ctx.data.num_items, gen)
