"""``hdrm_backbone``: stage 1 of HDRM, the hyperbolic LightGCN trained with HGCF's margin loss.

HDRM (Yuan et al., WWW 2025, docs/methods/hdrm.md) trains its denoisers on a pretrained, frozen
hyperbolic LightGCN whose pretraining code is not released. This stage trains that backbone with
HGCF-like settings and is selected on val like every run; stage 2 (``hdrm``) then loads its best
checkpoint.
The two commands::

    oodrec train --dataset food --model hdrm_backbone --seed 1
    oodrec train --dataset food --model hdrm --seed 1 \\
        --set model.backbone_run=runs/food-hdrm_backbone-seed1

Per batch: one propagation in the tangent space at the origin (sum of layers 1..L), the batch's
users, positives and one uniform non-positive negative per pair mapped to the hyperboloid with
exp_o, and the summed margin loss sum_b max(0, d^2(u, i) - d^2(u, j) + margin). The embeddings
are trained with Riemannian SGD with momentum. Scores are -d^2(u, i) over all items.

Batches follow LightGCN's original sampler, as HDRM's loader (``sampling=user``): per epoch,
|train| draws of a uniform user (among users with a training item), then a uniform positive of
that user; ``sampling=pair`` shuffles the training pairs instead.

``train.l2`` and ``model.init`` are not used: the regularisation is the optimiser's
``model.weight_decay`` and the initialisation exp_o(U(-init_scale, init_scale)). No negative
probe is offered: the false-hard-negative diagnostics score with inner products, which mean
nothing here; ``hdrm_d2_pos`` / ``hdrm_d2_neg`` / ``hdrm_active_share`` are logged instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from oodrec.data.graph import normalized_adjacency
from oodrec.errors import ConfigError
from oodrec.methods.base import Method, MethodContext, Representations, Scorer, TrainData
from oodrec.methods.common import UserSampledPairs, pair_batches, training_positives
from oodrec.models.hdrm import HyperbolicLightGCN
from oodrec.models.hyperbolic import pairwise_sqdist, sqdist
from oodrec.models.hyperbolic_optim import RiemannianSGD
from oodrec.samplers import TripletBatch
from oodrec.samplers.base import uniform_items
from oodrec.seeding import make_generator

Sampling = Literal["user", "pair"]


@dataclass(frozen=True)
class HDRMBackboneOptions:
    """Stage-1 hyperparameters: HGCF's (margin 0.2, RSGD momentum 0.95, init scale 0.1, c = 1),
    since HDRM's pretraining settings are not published. The learning rate (1e-3), batch size
    (10000), L (3) and D (``model.emb_dim``, 64) are ``train.*`` / ``model.*`` settings."""

    c: float = 1.0
    """Curvature magnitude (curvature -c)."""
    margin: float = 0.2
    """Margin of the loss max(0, d^2(u, i) - d^2(u, j) + margin)."""
    init_scale: float = 0.1
    """Ego rows are exp_o(U(-init_scale, init_scale))."""
    momentum: float = 0.95
    """Riemannian SGD momentum."""
    weight_decay: float = 1e-3
    """Riemannian SGD weight decay (Euclidean, on the ambient coordinates, as HGCF)."""
    sampling: Sampling = "user"
    """Training pairs per epoch: ``user`` (LightGCN's original sampler: |train| draws of a random
    user, then a random positive of that user) or ``pair`` (a shuffled pass over the pairs)."""

    def __post_init__(self) -> None:
        check_shared(self.margin, self.momentum, self.weight_decay, self.sampling)
        if self.c <= 0 or self.init_scale <= 0:
            raise ConfigError(
                f"model.c and model.init_scale must be > 0, got {self.c}, {self.init_scale}"
            )


def check_shared(margin: float, momentum: float, wd: float, sampling: str) -> None:
    """Validate the options both HDRM stages share; raises ConfigError naming the key."""
    if margin < 0 or not 0 <= momentum < 1 or wd < 0:
        raise ConfigError(
            f"model.margin must be >= 0, model.momentum in [0, 1) and model.weight_decay >= 0; "
            f"got {margin}, {momentum}, {wd}"
        )
    if sampling not in ("user", "pair"):
        raise ConfigError(f"model.sampling must be 'user' or 'pair', got {sampling!r}")


def margin_loss(d2_pos: torch.Tensor, d2_neg: torch.Tensor, margin: float) -> torch.Tensor:
    """HGCF's summed hinge: sum_b max(0, d2_pos - d2_neg + margin). Shapes: [B] x2 -> scalar."""
    return (d2_pos - d2_neg + margin).clamp_min(0.0).sum()


def train_fingerprint(data: TrainData) -> str:
    """A short hash of the training pairs (order-free) and the id-space sizes.

    Stage 2 compares it with the stage-1 record's to refuse a backbone trained on other data.
    """
    keys = torch.sort((data.users * data.num_items + data.items).cpu()).values
    h = hashlib.sha256(f"{data.num_users}x{data.num_items}:".encode())
    h.update(keys.numpy().astype("<i8").tobytes())
    return h.hexdigest()[:16]


def build_backbone(ctx: MethodContext, c: float, init_scale: float) -> HyperbolicLightGCN:
    """The hyperbolic LightGCN of ``ctx`` (``model.emb_dim``, ``model.num_layers``), initialised
    from the run seed's ``init`` stream, on ``ctx.device``."""
    cfg, data = ctx.cfg, ctx.data
    if cfg.model.num_layers < 1 or cfg.model.emb_dim < 2:
        raise ConfigError(
            f"HDRM needs model.num_layers >= 1 (it sums layers 1..L) and model.emb_dim >= 2 (the "
            f"ambient dimension); got {cfg.model.num_layers}, {cfg.model.emb_dim}"
        )
    adj = normalized_adjacency(data.users, data.items, data.num_users, data.num_items)
    model = HyperbolicLightGCN(
        data.num_users,
        data.num_items,
        cfg.model.emb_dim,
        cfg.model.num_layers,
        adj.to(ctx.device),
        c=c,
        init_scale=init_scale,
        generator=make_generator(cfg.seed, "init"),
    )
    return model.to(ctx.device)


def epoch_batches(
    method: Method, user_pairs: UserSampledPairs, sampling: Sampling, gen: torch.Generator
) -> Iterator[TripletBatch]:
    """The epoch's pair batches of an HDRM stage (``sampling``: ``user`` or ``pair``)."""
    tcfg = method.ctx.cfg.train
    if sampling == "user":
        return user_pairs.batches(tcfg.batch_size, tcfg.drop_last, gen)
    return pair_batches(method.ctx.data, tcfg.batch_size, tcfg.drop_last, gen)


def hyperbolic_score(c: float) -> str:
    """How HDRM's scores follow from its points on the hyperboloid (``Representations.score``)."""
    return (
        f"negative squared Lorentz distance on the hyperboloid of curvature -1/{c:g} "
        "(oodrec.models.hyperbolic.sqdist); rows are points in Lorentz coordinates"
    )


class HDRMBackbone(Method):
    """HDRM stage 1: hyperbolic LightGCN with HGCF's margin loss and Riemannian SGD.

    Paper: Meng Yuan et al., "Hyperbolic Diffusion Recommender Model", WWW 2025 (official code
    yuanmeng-cpu/HDRM; its backbone is pretrained, with code not released); loss and optimiser
    from Jianing Sun et al., "HGCF: Hyperbolic Graph Convolution Networks for Collaborative
    Filtering", WWW 2021. Then train stage 2: ``--model hdrm --set model.backbone_run=RUN``.
    """

    Options = HDRMBackboneOptions
    paper = "Yuan et al., Hyperbolic Diffusion Recommender Model (HDRM), WWW 2025 - stage 1"

    def __init__(self, ctx: MethodContext, options: HDRMBackboneOptions | None) -> None:
        opts = options or HDRMBackboneOptions()
        super().__init__(ctx, opts)
        data = ctx.data
        self.backbone = build_backbone(ctx, opts.c, opts.init_scale)
        self.positives = training_positives(ctx)
        self.user_pairs = UserSampledPairs(data)
        self._fingerprint: str | None = None
        self._stats: dict[str, torch.Tensor] = {}

    @classmethod
    def train_overrides(cls, options: dict[str, Any]) -> dict[str, Any]:
        # HGCF: lr 1e-3, batch 10000; HDRM: L = 3, validation every 5 epochs, stop after 6
        # evaluations without improvement; HGCF's epoch cap 500.
        return {
            "train.lr": 1e-3,
            "train.batch_size": 10000,
            "model.num_layers": 3,
            "train.epochs": 500,
            "train.eval_every": 5,
            "train.patience": 6,
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        o = self.options
        params = [self.backbone.user_emb, self.backbone.item_emb]
        return {
            "main": RiemannianSGD(
                params,
                lr=self.ctx.cfg.train.lr,
                c=o.c,
                momentum=o.momentum,
                weight_decay=o.weight_decay,
            )
        }

    def start_epoch(self, epoch: int) -> None:
        self._stats = {}

    def batches(self, epoch: int, gen: torch.Generator) -> Iterator[TripletBatch]:
        return epoch_batches(self, self.user_pairs, self.options.sampling, gen)

    def loss(
        self, batch: TripletBatch, gen: torch.Generator, phase: str = "main"
    ) -> dict[str, torch.Tensor]:
        o, bb = self.options, self.backbone
        users, pos = batch.users, batch.pos_items
        neg = uniform_items(users, self.ctx.data.num_items, gen, positives=self.positives)
        user_t, item_t = bb.tangent()
        u = bb.to_manifold(user_t[users])
        d2_pos = sqdist(u, bb.to_manifold(item_t[pos]), o.c)
        d2_neg = sqdist(u, bb.to_manifold(item_t[neg]), o.c)
        record_margin_stats(self._stats, d2_pos, d2_neg, o.margin)
        return {"margin": margin_loss(d2_pos, d2_neg, o.margin)}

    def scorer(self) -> Scorer:
        bb, c = self.backbone, self.options.c
        user_t, item_t = bb.tangent()
        users_m, items_m = bb.to_manifold(user_t), bb.to_manifold(item_t)
        return lambda users: -pairwise_sqdist(users_m[users], items_m, c)

    def representations(self) -> Representations:
        bb = self.backbone
        user_t, item_t = bb.tangent()
        users_m, items_m = bb.to_manifold(user_t), bb.to_manifold(item_t)
        return Representations(users_m, items_m, hyperbolic_score(self.options.c))

    def diagnostics(self) -> dict[str, float]:
        return margin_diagnostics(self._stats)

    def fingerprint(self) -> str:
        """``train_fingerprint`` of the training view (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = train_fingerprint(self.ctx.data)
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.options), "train_fingerprint": self.fingerprint()}


def record_margin_stats(
    stats: dict[str, torch.Tensor], d2_pos: torch.Tensor, d2_neg: torch.Tensor, margin: float
) -> None:
    """Accumulate a batch's mean d^2(u, i), d^2(u, j) and share of active hinges (detached)."""
    with torch.no_grad():
        row = torch.stack(
            [
                d2_pos.mean(),
                d2_neg.mean(),
                (d2_pos - d2_neg + margin).gt(0).float().mean(),
                torch.ones((), device=d2_pos.device),
            ]
        )
        stats["sum"] = stats["sum"] + row if "sum" in stats else row


def margin_diagnostics(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    """Epoch means of ``record_margin_stats``: ``hdrm_d2_pos``, ``hdrm_d2_neg``,
    ``hdrm_active_share`` (share of pairs whose hinge is active)."""
    if "sum" not in stats:
        return {}
    s = stats["sum"].tolist()
    n = max(s[3], 1.0)
    return {"hdrm_d2_pos": s[0] / n, "hdrm_d2_neg": s[1] / n, "hdrm_active_share": s[2] / n}
