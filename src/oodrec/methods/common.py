"""The toolkit that methods share: epoch batches, the LightGCN backbone, a uniform
false-hard-negative probe and the inner-product scorer.

Batches:

- ``pair_batches``: a shuffled pass over the training pairs (LightGCN-style methods);
- ``user_batches``: a shuffled pass over user ids (DiffRec, CDR);
- ``UserSampledPairs``: pairs drawn user-first, LightGCN's original sampler (HDRM).

Each draws from the epoch's shuffle generator only, and cuts its draws with ``batch_slices``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from oodrec.data.graph import normalized_adjacency
from oodrec.methods.base import (
    MethodContext,
    NegativeProbe,
    Representations,
    Scorer,
    TrainData,
)
from oodrec.models.lightgcn import LightGCN
from oodrec.samplers.base import Negatives, PositiveIndex, TripletBatch, uniform_items
from oodrec.seeding import make_generator


def batch_slices(
    n: int, batch_size: int, drop_last: bool, merge_single: bool = False
) -> list[slice]:
    """Consecutive slices of ``batch_size`` over ``n`` rows.

    Args:
        n: rows to cut.
        batch_size: rows per slice (the last may hold fewer).
        drop_last: drop the last, smaller slice (kept when it is the only one, ``n < batch_size``).
        merge_single: a last slice of one row joins the one before it (BatchNorm cannot train
            on one row); ignored when there is a single slice.

    Returns:
        ``list[slice]``, in order, covering ``0..n`` (or ``0..n - n % batch_size``).
    """
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    out = [slice(start, min(start + batch_size, stop)) for start in range(0, stop, batch_size)]
    if merge_single and len(out) > 1 and stop - out[-1].start == 1:
        out.pop()
        out[-1] = slice(out[-1].start, stop)
    return out


def pair_batches(
    data: TrainData, batch_size: int, drop_last: bool, gen: torch.Generator
) -> Iterator[TripletBatch]:
    """Shuffled batches of training pairs (one permutation per epoch, drawn from ``gen``).

    Shapes: yields TripletBatch(users [B], pos_items [B]).
    """
    n = data.users.numel()
    perm = torch.randperm(n, generator=gen, device=data.users.device)
    for sl in batch_slices(n, batch_size, drop_last):
        idx = perm[sl]
        yield TripletBatch(data.users[idx], data.items[idx])


def user_batches(
    users: torch.Tensor,
    batch_size: int,
    drop_last: bool,
    gen: torch.Generator,
    merge_single: bool = False,
) -> Iterator[torch.Tensor]:
    """Shuffled batches of ``users`` (one permutation per epoch, drawn from ``gen`` on the users'
    device). ``merge_single`` as in ``batch_slices`` (CDR, whose BatchNorm needs two rows).

    Shapes: users [U] long -> yields [B] long.
    """
    perm = users[torch.randperm(users.numel(), generator=gen, device=users.device)]
    for sl in batch_slices(users.numel(), batch_size, drop_last, merge_single):
        yield perm[sl]


class UserSampledPairs:
    """LightGCN's original pair sampler, vectorised: per epoch, |train| draws of a uniform user
    (among users with a training item), then a uniform positive of each.

    Args:
        data: the training view.
    """

    def __init__(self, data: TrainData) -> None:
        order = torch.argsort(data.users * data.num_items + data.items)
        self.items = data.items[order]  # grouped by user
        self.deg = torch.bincount(data.users, minlength=data.num_users)
        self.start = self.deg.cumsum(0) - self.deg
        self.active = torch.nonzero(self.deg > 0).squeeze(1)
        self.size = data.users.numel()

    def batches(
        self, batch_size: int, drop_last: bool, gen: torch.Generator
    ) -> Iterator[TripletBatch]:
        """|train| draws from ``gen``, in batches of ``batch_size``.

        Shapes: yields TripletBatch(users [B], pos_items [B]).
        """
        n, dev = self.size, self.items.device
        users = self.active[torch.randint(self.active.numel(), (n,), generator=gen, device=dev)]
        deg = self.deg[users]
        offset = (torch.rand(n, generator=gen, device=dev) * deg).long().minimum(deg - 1)
        pos = self.items[self.start[users] + offset]
        for sl in batch_slices(n, batch_size, drop_last):
            yield TripletBatch(users[sl], pos[sl])


def build_lightgcn(ctx: MethodContext) -> LightGCN:
    """The LightGCN backbone of ``ctx`` (``model.emb_dim``, ``num_layers``, ``init``) over the
    training graph, initialised from the run seed's ``init`` stream, on ``ctx.device``."""
    cfg, data = ctx.cfg, ctx.data
    adj = normalized_adjacency(data.users, data.items, data.num_users, data.num_items)
    gen = make_generator(cfg.seed, "init")
    model = LightGCN(
        data.num_users,
        data.num_items,
        cfg.model.emb_dim,
        cfg.model.num_layers,
        adj.to(ctx.device),
        init=cfg.model.init,
        generator=gen,
    )
    return model.to(ctx.device)


def uniform_probe(
    model: LightGCN, positives: PositiveIndex, num_items: int, gen: torch.Generator
) -> NegativeProbe:
    """A false-hard-negative probe with one uniform non-positive negative per pair, drawn from
    ``gen`` (methods that draw their own uniform negatives: InvCF, AdvInfoNCE, DR-GNN,
    CausalDiff)."""
    emb = model.propagate()

    def sample(users: torch.Tensor, pos: torch.Tensor) -> Negatives:
        ids = uniform_items(users, num_items, gen, positives=positives)
        return Negatives(emb=emb.items[ids], ids=ids)

    return NegativeProbe(emb, sample)


def inner_product_representations(model: LightGCN) -> Representations:
    """The pooled embeddings of one full propagation; scores are their inner products."""
    emb = model.propagate()
    return Representations(emb.users, emb.items, "inner product")


def inner_product_scorer(model: LightGCN) -> Scorer:
    """Scores as inner products of one full propagation's pooled embeddings.

    Shapes: the scorer maps users [B] -> scores [B, I].
    """
    emb = model.propagate()
    return lambda users: emb.users[users] @ emb.items.T


__all__ = [
    "UserSampledPairs",
    "batch_slices",
    "build_lightgcn",
    "inner_product_representations",
    "inner_product_scorer",
    "pair_batches",
    "uniform_probe",
    "user_batches",
]
