"""``invcf``: InvCF (Zhang et al., WWW 2023), LightGCN with disentangled preference and
popularity embeddings trained to be invariant to the popularity part (docs/methods/invcf.md,
``DEBIAS_BPR``).

Per batch of positive pairs with one uniform negative each:

1. popularity indices: pi(u) is the rank of deg(u) among the distinct user degrees of the
   training split (likewise for items), so nodes of equal degree share a popularity embedding;
2. two LightGCN propagations over the same graph: preference embeddings (u, i, j) and popularity
   embeddings gathered per node (u^p, i^p, j^p);
3. L_pref = BPR(u, i, j), L_pop = BPR(u^p, i^p, j^p);
4. L_aug = BPR([u^p; u], [i^p; i], [j^p; j]) + BPR([u^p_pi; u], [i^p_pi; i], [j^p_pi; j]) with one
   random permutation pi of the batch applied to the popularity halves (``concat="code"``
   reproduces the official first term's reversed negative order [j; j^p]);
5. the disentanglement term D between preference and popularity embeddings of the batch's users
   and positives (``distype``, weight ``lambda2``, default 0 as in the official parser);
6. L = L_pref + reg + lambda1 (L_pop + reg^p) + lambda3 (L_aug + reg^aug) + sign * lambda2 D.

Ranking uses the preference embeddings only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from oodrec.errors import ConfigError
from oodrec.methods.base import Method, MethodContext, NegativeProbe, Representations, Scorer
from oodrec.methods.common import (
    build_lightgcn,
    inner_product_representations,
    inner_product_scorer,
    pair_batches,
    popularity_tables,
    training_positives,
    uniform_probe,
)
from oodrec.models.base import Embeddings
from oodrec.models.lightgcn import layer_stack
from oodrec.models.losses import bpr_loss, l2_loss
from oodrec.samplers import TripletBatch
from oodrec.samplers.base import uniform_items


@dataclass(frozen=True)
class InvCFOptions:
    """InvCF hyperparameters (official parser defaults, ``DEBIAS_BPR`` on LightGCN)."""

    lambda1: float = 1e-5
    """Weight of the popularity branch's BPR loss (and its L2 term)."""
    lambda2: float = 0.0
    """Weight of the disentanglement term D (0: off, as in the official parser)."""
    lambda3: float = 1e-4
    """Weight of the swap-augmented BPR loss (and its L2 term)."""
    distype: Literal["dcor", "l1", "l2", "mmd", "dcor_code"] = "dcor"
    """D: ``dcor`` is the distance correlation between each row's preference and popularity
    embedding, minimised (independence); ``l1`` / ``l2`` / ``mmd`` are distances, subtracted
    (pushed apart) as the official code does; ``dcor_code`` is the code's DGCF-style term (distance
    correlation of consecutive 4-dim feature chunks of the stacked matrices, subtracted)."""
    concat: Literal["consistent", "code"] = "consistent"
    """Feature order of the negative in the unpermuted augmentation term: ``consistent``
    ([j^p; j], like users and positives) or ``code`` (the official reversed [j; j^p])."""


def degree_ranks(degree: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Rank of every node's degree among the sorted distinct degrees, and their number.

    Shapes: degree [N] -> ranks [N] long in ``[0, K)``, K distinct degrees.
    """
    distinct, ranks = torch.unique(degree, sorted=True, return_inverse=True)
    return ranks, int(distinct.numel())


def swap_concat(
    pop: torch.Tensor, pref: torch.Tensor, perm: torch.Tensor | None = None
) -> torch.Tensor:
    """``[pop[perm]; pref]`` along features (``perm`` None: unpermuted).

    Shapes: [B, D] -> [B, 2D].
    """
    return torch.cat([pop if perm is None else pop[perm], pref], dim=1)


def distance_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sample distance correlation between the rows of ``x`` and ``y`` (Szekely et al.).

    Shapes: x [N, Dx], y [N, Dy] -> scalar in [0, 1].
    """

    def centred(z: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(z, z)
        return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()

    a, b = centred(x), centred(y)
    dcov_xy = (a * b).mean().clamp_min(0).sqrt()
    dcov_xx = (a * a).mean().sqrt()
    dcov_yy = (b * b).mean().sqrt()
    return dcov_xy / (dcov_xx * dcov_yy).sqrt().clamp_min(1e-12)


def disentangle(pref: torch.Tensor, pop: torch.Tensor, distype: str) -> torch.Tensor:
    """The term D between preference and popularity rows (see ``InvCFOptions.distype``)."""
    if distype == "dcor":
        return distance_correlation(pref, pop)
    if distype == "l1":
        return (pref - pop).abs().sum(1).mean()
    if distype == "l2":
        return (pref - pop).pow(2).sum(1).mean()
    if distype == "mmd":  # linear-kernel MMD^2 between the two sets of rows
        return (pref.mean(0) - pop.mean(0)).pow(2).sum()
    if distype == "dcor_code":
        stacked = torch.cat([pref, pop], dim=0)
        chunks = [stacked[:, k : k + 4] for k in range(0, 16, 4)]
        return sum(distance_correlation(a, b) for a, b in zip(chunks, chunks[1:]))
    raise ConfigError(f"unknown model.distype {distype!r}")


class InvCF(Method):
    """InvCF: preference / popularity disentanglement with popularity-swap augmentation.

    Paper: An Zhang et al., "Invariant Collaborative Filtering to Popularity Distribution Shift",
    WWW 2023 (official code anzhang314/InvCF, ``DEBIAS_BPR``). LightGCN backbone (model.emb_dim,
    model.num_layers, model.init), one uniform negative per positive, train.l2 on the egos.
    """

    Options = InvCFOptions
    paper = (
        "Zhang et al., Invariant Collaborative Filtering to Popularity Distribution Shift, WWW 2023"
    )

    def __init__(self, ctx: MethodContext, options: InvCFOptions | None) -> None:
        opts = options or InvCFOptions()
        super().__init__(ctx, opts)
        if opts.distype == "dcor_code" and ctx.cfg.model.emb_dim < 16:
            raise ConfigError("model.distype=dcor_code needs model.emb_dim >= 16")
        data = ctx.data
        self.model = build_lightgcn(ctx)
        user_rank, n_user = degree_ranks(data.user_degree())
        item_rank, n_item = degree_ranks(data.item_degree())
        self.register_buffer("user_rank", user_rank)
        self.register_buffer("item_rank", item_rank)
        self.user_pop, self.item_pop = popularity_tables(ctx, n_user, n_item)
        self.positives = training_positives(ctx)

    @classmethod
    def train_overrides(cls, options: dict[str, Any]) -> dict[str, Any]:
        # official parser: lr 5e-4, batch 1024, regs 1e-5; xavier-normal initialisation
        return {
            "train.lr": 5e-4,
            "train.batch_size": 1024,
            "train.l2": 1e-5,
            "model.init": "xavier_normal",
        }

    def batches(self, epoch: int, gen: torch.Generator):
        tcfg = self.ctx.cfg.train
        return pair_batches(self.ctx.data, tcfg.batch_size, tcfg.drop_last, gen)

    def _propagate(self) -> tuple[Embeddings, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Preference and popularity embeddings propagated together.

        One sparse product per layer on ``[preference | popularity]`` (``[U+I, D + D_pop]``)
        instead of two: every column is propagated exactly as on its own, at about half the
        sparse-index traffic.

        Returns:
            (preference ``Embeddings``, popularity users [U, D_pop], items [I, D_pop], and the
            popularity egos [U+I, D_pop]).
        """
        m = self.model
        pref = torch.cat([m.user_emb, m.item_emb])
        pego = torch.cat([self.user_pop[self.user_rank], self.item_pop[self.item_rank]])
        pooled = layer_stack(m.adj, torch.cat([pref, pego], 1), m.num_layers).mean(0)
        pooled_pref, pooled_pop = pooled.split([pref.shape[1], pego.shape[1]], 1)
        users, items = pooled_pref.split([m.num_users, m.num_items])
        emb = Embeddings(users=users, items=items, user_ego=m.user_emb, item_ego=m.item_emb)
        pu, pi = pooled_pop.split([m.num_users, m.num_items])
        return emb, pu, pi, pego

    def loss(
        self, batch: TripletBatch, gen: torch.Generator, phase: str = "main"
    ) -> dict[str, torch.Tensor]:
        o, tcfg = self.options, self.ctx.cfg.train
        users, pos = batch.users, batch.pos_items
        neg = uniform_items(users, self.ctx.data.num_items, gen, positives=self.positives)
        emb, pu, pi, pego = self._propagate()
        n_users = self.model.num_users
        u, i, j = emb.users[users], emb.items[pos], emb.items[neg]
        up, ip, jp = pu[users], pi[pos], pi[neg]
        b = len(batch)

        def reg(*egos: torch.Tensor) -> torch.Tensor:
            return tcfg.l2 * l2_loss(*egos, batch_size=b, form="squared")

        reg_pref = reg(emb.user_ego[users], emb.item_ego[pos], emb.item_ego[neg])
        reg_pop = reg(pego[users], pego[n_users + pos], pego[n_users + neg])
        perm = torch.randperm(b, generator=gen, device=users.device)
        j_first = swap_concat(j, jp) if o.concat == "code" else swap_concat(jp, j)
        aug = bpr_loss(swap_concat(up, u), swap_concat(ip, i), j_first) + bpr_loss(
            swap_concat(up, u, perm), swap_concat(ip, i, perm), swap_concat(jp, j, perm)
        )
        terms = {
            "bpr": bpr_loss(u, i, j),
            "l2": reg_pref,
            "pop": o.lambda1 * (bpr_loss(up, ip, jp) + reg_pop),
            "aug": o.lambda3 * (aug + reg_pref + reg_pop),
        }
        if o.lambda2:
            d = disentangle(torch.cat([u, i]), torch.cat([up, ip]), o.distype)
            sign = 1.0 if o.distype == "dcor" else -1.0  # see InvCFOptions.distype
            terms["disentangle"] = sign * o.lambda2 * d
        return terms

    def scorer(self) -> Scorer:
        return inner_product_scorer(self.model)

    def representations(self) -> Representations:
        return inner_product_representations(self.model)

    def negative_probe(self, gen: torch.Generator) -> NegativeProbe:
        return uniform_probe(self.model, self.positives, self.ctx.data.num_items, gen)
