"""``drgnn``: DR-GNN (Wang et al., WWW 2024), KL-DRO over the propagation graph
(docs/methods/drgnn.md).

Per training step (official ``enable_DRO=1``, augmentation on, full batch):

1. every ``aug_gap`` epochs past ``aug_warm_up``, rebuild the augmented edges: sample
   ``aug_ratio * |I|`` items and link every user to the nearest sampled item (Euclidean, in the
   space of L2-normalised ego embeddings divided by the node's training degree); added edges get
   coefficient c = ``aug_coefficient``, original edges 1 - c;
2. edge scores f_ui = exp(-e_u . e_i / (sqrt(d_u d_i) alpha)) from the normalised ego embeddings
   (detached), times the edge coefficient;
3. per-user normalisation L_ui = f_ui / ((1/d_u) sum_{i' in N(u)} f_ui' coef2_ui'), with
   coef2 = 1 - c on original edges and c d_u on added ones;
4. LightGCN propagation over A_hat * L (the same L in both directions, so the matrix stays
   symmetric); evaluation propagates over the plain graph;
5. BPR with temperature, mean softplus((s- - s+) / tau), plus L2 on the batch's egos.

The augmented edges are a buffer of the method, so a resumed run propagates over the same graph.
Degrees d_u, d_i are the training degrees. An added edge that duplicates a training edge is
dropped (that user gets no added edge in that round).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from oodrec.errors import ConfigError
from oodrec.methods.base import Method, MethodContext, NegativeProbe, Representations, Scorer
from oodrec.methods.common import (
    build_lightgcn,
    inner_product_representations,
    inner_product_scorer,
    pair_batches,
    training_positives,
    uniform_probe,
)
from oodrec.models.lightgcn import layer_stack
from oodrec.models.losses import l2_loss
from oodrec.samplers import TripletBatch
from oodrec.samplers.base import uniform_items

AUG_USER_CHUNK = 4096  # users per distance block when rebuilding the augmented edges


@dataclass(frozen=True)
class DRGNNOptions:
    """DR-GNN hyperparameters (official README for Yelp2018 and world.py defaults)."""

    alpha: float = 0.07
    """DRO temperature of the edge scores (smaller: sharper re-weighting)."""
    tau: float = 1.0
    """Temperature of the BPR loss."""
    dro: bool = True
    """Re-weight the edges (False: plain LightGCN propagation while training)."""
    augment: bool = True
    """Add one nearest-item edge per user every ``aug_gap`` epochs."""
    aug_coefficient: float = 0.25
    """c: weight of added edges; original edges get 1 - c."""
    aug_ratio: float = 0.05
    """Share of items sampled as candidates for the added edges."""
    aug_warm_up: int = 5
    """No augmentation before this epoch."""
    aug_gap: int = 5
    """Rebuild the augmented edges every this many epochs."""
    full_batch: bool = True
    """One gradient step per epoch over all training pairs (official); False: mini-batches of
    ``train.batch_size``."""

    def __post_init__(self) -> None:
        if self.alpha <= 0 or self.tau <= 0 or not 0 <= self.aug_coefficient < 1:
            raise ConfigError(
                f"model.alpha and model.tau must be > 0 and model.aug_coefficient in [0, 1); got "
                f"{self.alpha}, {self.tau}, {self.aug_coefficient}"
            )
        if not 0 < self.aug_ratio <= 1 or self.aug_gap < 1:
            raise ConfigError(
                f"model.aug_ratio must be in (0, 1] and model.aug_gap >= 1; got "
                f"{self.aug_ratio}, {self.aug_gap}"
            )


def dro_edge_weights(
    ego_u: torch.Tensor,
    ego_i: torch.Tensor,
    deg_u: torch.Tensor,
    deg_i: torch.Tensor,
    coef: torch.Tensor,
    coef2: torch.Tensor,
    edge_user: torch.Tensor,
    user_degree: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """L per edge (steps 2-3 of the module docstring).

    Shapes: ego_u, ego_i [E, D] (normalised egos at the edge ends); deg_u, deg_i (training
    degrees at the edge ends), coef, coef2, edge_user [E]; user_degree [U] -> [E].
    """
    f = torch.exp(-(ego_u * ego_i).sum(1) / ((deg_u * deg_i).sqrt() * alpha))
    denom = torch.zeros(user_degree.numel(), dtype=f.dtype, device=f.device)
    denom.index_add_(0, edge_user, f * coef2)
    denom = denom / user_degree
    return f * coef / denom[edge_user]


def nearest_items(
    user_x: torch.Tensor, item_x: torch.Tensor, candidates: torch.Tensor
) -> torch.Tensor:
    """For every user, the candidate item nearest in Euclidean distance, in user blocks.

    Shapes: user_x [U, D], item_x [I, D], candidates [C] -> [U] item ids.
    """
    cand = item_x[candidates]
    out = []
    for start in range(0, user_x.shape[0], AUG_USER_CHUNK):
        d = torch.cdist(user_x[start : start + AUG_USER_CHUNK], cand)
        out.append(candidates[d.argmin(1)])
    return torch.cat(out)


class DRGNN(Method):
    """DR-GNN: distributionally robust LightGCN by KL-DRO edge re-weighting and edge augmentation.

    Paper: Bohao Wang et al., "Distributionally Robust Graph-based Recommendation System",
    WWW 2024 (official code WANGBohaO-jpg/DR-GNN). LightGCN backbone (model.emb_dim,
    model.num_layers, model.init), one uniform negative per positive, train.l2 on the egos.
    """

    Options = DRGNNOptions
    paper = "Wang et al., Distributionally Robust Graph-based Recommendation System, WWW 2024"

    def __init__(self, ctx: MethodContext, options: DRGNNOptions | None) -> None:
        opts = options or DRGNNOptions()
        super().__init__(ctx, opts)
        data = ctx.data
        self.model = build_lightgcn(ctx)
        self.positives = training_positives(ctx)
        self.register_buffer("deg_u", data.user_degree().float().clamp_min(1))
        self.register_buffer("deg_i", data.item_degree().float().clamp_min(1))
        # added edges (user, item); variable size, so saved as extra state
        self.aug_users = torch.empty(0, dtype=torch.long, device=ctx.device)
        self.aug_items = torch.empty(0, dtype=torch.long, device=ctx.device)
        self._graph: dict[str, torch.Tensor] | None = None

    @classmethod
    def train_overrides(cls, options: dict[str, Any]) -> dict[str, Any]:
        # official defaults: lr 0.1, 3 layers, N(0, 0.1^2) init, weight decay 1e-4 (README);
        # one full-batch step per epoch, so many epochs, evaluated every 10.
        return {
            "train.lr": 0.1,
            "train.l2": 1e-4,
            "model.num_layers": 3,
            "model.init": "normal",
            "train.epochs": 1000,
            "train.eval_every": 10,
            "train.patience": 5,
        }

    def get_extra_state(self) -> dict[str, torch.Tensor]:
        return {"aug_users": self.aug_users, "aug_items": self.aug_items}

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.aug_users = state["aug_users"].to(self.deg_u.device)
        self.aug_items = state["aug_items"].to(self.deg_u.device)
        self._graph = None

    # ------------------------------------------------------------------ graph

    @torch.no_grad()
    def rebuild_augmentation(self, gen: torch.Generator) -> None:
        """Link every user to its nearest item among a random ``aug_ratio`` share of items."""
        data, o = self.ctx.data, self.options
        n_cand = max(1, int(o.aug_ratio * data.num_items))
        cand = torch.randperm(data.num_items, generator=gen, device=gen.device)[:n_cand]
        cand = cand.to(self.deg_u.device)
        ux = F.normalize(self.model.user_emb, dim=1) / self.deg_u.unsqueeze(1)
        ix = F.normalize(self.model.item_emb, dim=1) / self.deg_i.unsqueeze(1)
        users = torch.arange(data.num_users, device=self.deg_u.device)
        items = nearest_items(ux, ix, cand)
        new = ~self.positives.contains(users, items)
        self.aug_users, self.aug_items = users[new], items[new]
        self._graph = None

    def _structure(self) -> dict[str, torch.Tensor]:
        """The union graph's edges, normalised adjacency values and CSR layout (cached)."""
        if self._graph is not None:
            return self._graph
        data, c = self.ctx.data, self.options.aug_coefficient
        n_aug = self.aug_users.numel()
        eu = torch.cat([data.users, self.aug_users])
        ei = torch.cat([data.items, self.aug_items])
        added = torch.cat([torch.zeros_like(data.users), torch.ones_like(self.aug_users)]).bool()
        if n_aug:
            coef = torch.where(added, c, 1 - c).float()
            coef2 = torch.where(added, c * self.deg_u[eu], torch.full_like(coef, 1 - c))
        else:
            coef = coef2 = torch.ones(eu.numel(), device=eu.device)
        num_u, n = data.num_users, data.num_users + data.num_items
        rows = torch.cat([eu, ei + num_u])
        cols = torch.cat([ei + num_u, eu])
        deg = torch.zeros(n, device=eu.device).index_add_(0, rows, torch.ones_like(rows).float())
        norm = deg.rsqrt()[rows] * deg.rsqrt()[cols]
        order = torch.argsort(rows * n + cols)
        crow = torch.zeros(n + 1, dtype=torch.long, device=eu.device)
        crow[1:] = torch.bincount(rows, minlength=n).cumsum(0)
        self._graph = dict(
            eu=eu, ei=ei, coef=coef, coef2=coef2, norm=norm, order=order, crow=crow,
            col=cols[order],
        )  # fmt: skip
        return self._graph

    def weighted_adjacency(self) -> torch.Tensor:
        """A_hat * L over the union graph as a symmetric CSR matrix [U+I, U+I]."""
        g, o, data = self._structure(), self.options, self.ctx.data
        if o.dro:
            with torch.no_grad():
                ego_u = F.normalize(self.model.user_emb, dim=1)[g["eu"]]
                ego_i = F.normalize(self.model.item_emb, dim=1)[g["ei"]]
                weights = dro_edge_weights(
                    ego_u, ego_i, self.deg_u[g["eu"]], self.deg_i[g["ei"]], g["coef"],
                    g["coef2"], g["eu"], self.deg_u, o.alpha,
                )  # fmt: skip
        else:
            weights = g["coef"]
        vals = (g["norm"] * weights.repeat(2))[g["order"]]
        n = data.num_users + data.num_items
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(
                g["crow"], g["col"], vals, (n, n), check_invariants=False
            )

    def _propagate(self, adj: torch.Tensor):
        m = self.model
        ego = torch.cat([m.user_emb, m.item_emb])
        pooled = layer_stack(adj, ego, m.num_layers).mean(0)
        users, items = pooled.split([m.num_users, m.num_items])
        return users, items

    # ------------------------------------------------------------------ training

    def start_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def batches(self, epoch: int, gen: torch.Generator) -> Iterator[TripletBatch]:
        o, tcfg, data = self.options, self.ctx.cfg.train, self.ctx.data
        if o.augment and epoch >= o.aug_warm_up and (epoch - o.aug_warm_up) % o.aug_gap == 0:
            self.rebuild_augmentation(gen)
        bs = data.users.numel() if o.full_batch else tcfg.batch_size
        return pair_batches(data, bs, tcfg.drop_last and not o.full_batch, gen)

    def loss(
        self, batch: TripletBatch, gen: torch.Generator, phase: str = "main"
    ) -> dict[str, torch.Tensor]:
        o, tcfg = self.options, self.ctx.cfg.train
        users, pos = batch.users, batch.pos_items
        neg = uniform_items(users, self.ctx.data.num_items, gen, positives=self.positives)
        all_u, all_i = self._propagate(self.weighted_adjacency())
        u = all_u[users]
        s_pos = (u * all_i[pos]).sum(1)
        s_neg = (u * all_i[neg]).sum(1)
        egos = (self.model.user_emb[users], self.model.item_emb[pos], self.model.item_emb[neg])
        return {
            "bpr": F.softplus((s_neg - s_pos) / o.tau).mean(),
            "l2": tcfg.l2 * l2_loss(*egos, batch_size=len(batch), form="squared"),
        }

    def scorer(self) -> Scorer:
        return inner_product_scorer(self.model)  # the plain graph, not A_hat * L

    def representations(self) -> Representations:
        return inner_product_representations(self.model)

    def negative_probe(self, gen: torch.Generator) -> NegativeProbe:
        return uniform_probe(self.model, self.positives, self.ctx.data.num_items, gen)

    def diagnostics(self) -> dict[str, float]:
        return {"drgnn_added_edges": float(self.aug_users.numel())}
