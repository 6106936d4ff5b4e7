"""``lightgcn``: LightGCN + BPR + L2 with any registered negative sampler
(docs/methods/lightgcn.md).

Per batch of training pairs: one full-graph propagation, the sampler's negatives, BPR on the
pooled embeddings, L2 on the batch's ego embeddings, plus the sampler's own terms
(``aux_loss``); one Adam over the backbone and the sampler's parameter groups. Scores are inner
products of the pooled embeddings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch

from oodrec.methods.base import Method, MethodContext, NegativeProbe, Representations, Scorer
from oodrec.methods.common import (
    build_lightgcn,
    inner_product_representations,
    inner_product_scorer,
    pair_batches,
    training_positives,
)
from oodrec.models.losses import bpr_loss, l2_loss
from oodrec.samplers import (
    NegativeSampler,
    SamplerContext,
    TripletBatch,
    build_sampler,
)


def sampler_context(ctx: MethodContext) -> SamplerContext:
    """The static context every negative sampler is built from (training pairs only)."""
    cfg, data = ctx.cfg, ctx.data
    return SamplerContext(
        num_users=data.num_users,
        num_items=data.num_items,
        positives=training_positives(ctx),
        item_degree=data.item_degree().to(ctx.device),
        num_epochs=cfg.train.epochs,
        device=ctx.device,
        emb_dim=cfg.model.emb_dim,
        dataset=data.name,
        seed=cfg.seed,
        sync_free=ctx.sync_free,
    )


class LightGCNMethod(Method):
    """LightGCN trained with BPR against the negatives of a pluggable sampler.

    Paper: Xiangnan He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
    Recommendation", SIGIR 2020. The negatives come from ``--sampler`` (``oodrec samplers``).

    Options: the backbone is set by ``model.emb_dim``, ``model.num_layers`` and ``model.init``;
    the loss by ``train.l2`` and ``train.l2_form``; the negatives by ``sampler.*``.
    """

    paper = "He et al., LightGCN, SIGIR 2020 (with any negative sampler)"
    takes_sampler = True

    def __init__(self, ctx: MethodContext, options: Any) -> None:
        super().__init__(ctx, options)
        cfg = ctx.cfg
        self.model = build_lightgcn(ctx)
        self.sampler: NegativeSampler = build_sampler(
            cfg.sampler.name, sampler_context(ctx), dict(cfg.sampler.options)
        ).to(ctx.device)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        lr = self.ctx.cfg.train.lr
        groups = [{"params": list(self.model.parameters()), "lr": lr}]
        groups += self.sampler.param_groups()
        return {"main": torch.optim.Adam(groups, lr=lr)}

    def start_epoch(self, epoch: int) -> None:
        self.sampler.start_epoch(epoch)

    def batches(self, epoch: int, gen: torch.Generator) -> Iterator[TripletBatch]:
        tcfg = self.ctx.cfg.train
        return pair_batches(self.ctx.data, tcfg.batch_size, tcfg.drop_last, gen)

    def loss(
        self, batch: TripletBatch, gen: torch.Generator, phase: str = "main"
    ) -> dict[str, torch.Tensor]:
        tcfg = self.ctx.cfg.train
        emb = self.model.propagate()
        negs = self.sampler.sample(batch, emb, gen)
        u = emb.users[batch.users]
        terms = {"bpr": bpr_loss(u, emb.items[batch.pos_items], negs.emb, negs.weights)}
        egos = [emb.user_ego[batch.users], emb.item_ego[batch.pos_items]]
        if negs.reg_ego is not None:
            egos.append(negs.reg_ego)
        elif negs.ids is not None:
            egos.append(emb.item_ego[negs.ids])
        terms["l2"] = tcfg.l2 * l2_loss(*egos, batch_size=len(batch), form=tcfg.l2_form)
        terms.update(self.sampler.aux_loss(batch, emb, gen))
        return terms

    def scorer(self) -> Scorer:
        return inner_product_scorer(self.model)

    def representations(self) -> Representations:
        return inner_product_representations(self.model)

    def negative_probe(self, gen: torch.Generator) -> NegativeProbe:
        emb = self.model.propagate()
        return NegativeProbe(
            emb, lambda users, pos: self.sampler.sample(TripletBatch(users, pos), emb, gen)
        )

    def diagnostics(self) -> dict[str, float]:
        return self.sampler.diagnostics()

    def describe(self) -> dict[str, Any]:
        opts = self.sampler.options
        resolved = dataclasses.asdict(opts) if dataclasses.is_dataclass(opts) else {}
        return {"sampler": self.ctx.cfg.sampler.name, "sampler_options": resolved}

    def load_legacy_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
