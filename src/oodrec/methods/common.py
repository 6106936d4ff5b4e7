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
import torch.nn.functional as F
from torch import nn

from oodrec.data.csr import CSR
from oodrec.data.graph import normalized_adjacency
from oodrec.methods.base import (
    MethodContext,
    NegativeProbe,
    Representations,
    Scorer,
    TrainData,
)
from oodrec.models.base import gathered_scores
from oodrec.models.lightgcn import LightGCN, init_embedding_
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


def training_positives(ctx: MethodContext) -> PositiveIndex:
    """The run's training pairs as a ``PositiveIndex`` on its device, for rejecting positives
    from negatives, carrying the run's sync-free mode (``train.sync_free``)."""
    data = ctx.data
    return PositiveIndex(data.users, data.items, data.num_items, ctx.sync_free).to(ctx.device)


class PaddedRows:
    """A CSR's rows as one padded [R, L] table (L: the longest row; padding -1), so that the
    entries of a batch of rows come out at a fixed shape: the sync-free form of ``CSR.gather``
    (``train.sync_free``), whose output size the host must otherwise read.

    Args:
        csr: the rows (values >= 0).
    """

    def __init__(self, csr: CSR) -> None:
        counts = csr.counts()
        width = max(1, int(counts.max())) if counts.numel() else 1  # once, at build time
        rows = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
        pos = torch.arange(csr.indices.numel(), device=counts.device) - csr.indptr[rows]
        self.table = torch.full((counts.numel(), width), -1, dtype=csr.indices.dtype)
        self.table = self.table.to(counts.device)
        self.table[rows, pos] = csr.indices

    def batch(self, rows: torch.Tensor) -> torch.Tensor:
        """The entries of ``rows``, -1 where a row is shorter. Shapes: rows [B] -> [B, L]."""
        return self.table[rows]


def fixed_multi_hot(cols: torch.Tensor, keep: torch.Tensor, num_cols: int) -> torch.Tensor:
    """Rows with a 1 at each kept column, at a fixed shape (no boolean indexing): the entries
    not kept are written to a spare last column, which is dropped.

    Shapes: cols [B, L] long (any value where not kept), keep [B, L] bool -> [B, num_cols] float.
    """
    spare = torch.full_like(cols, num_cols)
    x = torch.zeros(cols.shape[0], num_cols + 1, device=cols.device)
    x.scatter_(1, torch.where(keep, cols, spare), 1.0)
    return x[:, :num_cols].contiguous()


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


class BatchPositives:
    """The training positives of one batch's users as a dense [B, I] mask, with the
    ``contains(users, items)`` of ``PositiveIndex`` for users of the batch.

    Built by ``HistoryIndex.batch``; the rejection of ``uniform_items`` then costs one gather per
    candidate instead of a binary search (1000 negatives per row: B * 1000 look-ups per batch).
    """

    def __init__(self, mask: torch.Tensor, row_of: torch.Tensor) -> None:
        self.mask, self.row_of = mask, row_of

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the shape of ``items``: is ``(user, item)`` a training pair? ``users``
        must be users of the batch.

        Shapes: users [B] or broadcastable to items; items [B] or [B, K].
        """
        if items.dim() > users.dim():
            users = users.view(*users.shape, *([1] * (items.dim() - users.dim())))
        return self.mask[self.row_of[users], items]


class HistoryIndex:
    """Each user's training items (grouped by user), from which ``batch`` builds the dense
    positive mask of a batch's users.

    Args:
        users, items: training pairs. Shape [N].
        num_users, num_items: id space sizes.
    """

    def __init__(
        self, users: torch.Tensor, items: torch.Tensor, num_users: int, num_items: int
    ) -> None:
        order = torch.argsort(users * num_items + items)
        self.items = items[order]
        self.deg = torch.bincount(users, minlength=num_users)
        self.start = self.deg.cumsum(0) - self.deg
        self.num_users, self.num_items = num_users, num_items

    def batch(self, users: torch.Tensor) -> BatchPositives:
        """The positives of ``users`` (a batch, repeats allowed) as a ``BatchPositives``.

        Shapes: users [B] -> mask [B, I] bool.
        """
        dev, b = users.device, users.numel()
        deg = self.deg[users]
        offset = self.start[users] - (deg.cumsum(0) - deg)  # history start minus row start
        flat = torch.arange(int(deg.sum()), device=dev)
        rows = torch.repeat_interleave(torch.arange(b, device=dev), deg)
        mask = torch.zeros(b, self.num_items, dtype=torch.bool, device=dev)
        mask[rows, self.items[flat + offset[rows]]] = True
        row_of = torch.zeros(self.num_users, dtype=torch.long, device=dev)
        row_of[users] = torch.arange(b, device=dev)  # repeated users: identical rows
        return BatchPositives(mask, row_of)


def cosine_scores(
    users: torch.Tensor, items: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines of each row's user with its positive and its negatives.

    Scores the batch against every item, then gathers: a dense [B, I] product whose backward is
    a matmul, where gathering [B, N, d] rows makes the backward a scatter-add (the same choice
    as AdvInfoNCE, docs/methods/advinfonce.md).

    Shapes: users [B, d], items [I, d] (not normalised), pos [B], negs [B, N] -> ([B], [B, N]).
    """
    scores = gathered_scores(F.normalize(users, dim=-1), F.normalize(items, dim=-1))  # [B, I]
    return scores.gather(1, pos.unsqueeze(1)).squeeze(1), scores.gather(1, negs)


def item_counts(ids: torch.Tensor, num_items: int) -> torch.Tensor:
    """How often each item id occurs in ``ids``: ``bincount``'s counts, from a ``scatter_add_``
    into a fixed-size table (a CUDA ``bincount`` reads the largest id on the host).

    Shapes: ids any shape, ids in ``[0, num_items)`` -> [num_items] long.
    """
    flat = ids.reshape(-1)
    zeros = torch.zeros(num_items, dtype=flat.dtype, device=flat.device)
    return zeros.scatter_add_(0, flat, torch.ones_like(flat))


def ego_l2(
    user_ego: torch.Tensor,
    item_ego: torch.Tensor,
    users: torch.Tensor,
    pos: torch.Tensor,
    negs: torch.Tensor | None,
) -> torch.Tensor:
    """(1 / 2B) (||E_u||^2 + ||E_i||^2 + ||E_J||^2) on the batch's ego rows, each negative row
    counted as often as it was drawn (``item_counts`` instead of gathering [B, N, d] rows).

    Shapes: user_ego [U, d], item_ego [I, d], users [B], pos [B], negs [B, N] or None -> scalar.
    """
    total = user_ego[users].pow(2).sum() + item_ego[pos].pow(2).sum()
    if negs is not None:
        counts = item_counts(negs, item_ego.shape[0])
        total = total + (counts * item_ego.pow(2).sum(1)).sum()
    return total / (2 * users.numel())


def popularity_tables(
    ctx: MethodContext, num_user_rows: int, num_item_rows: int
) -> tuple[nn.Parameter, nn.Parameter]:
    """The popularity branch's embedding tables of InvCF and BC loss: one row per user / item
    popularity index, ``model.emb_dim`` wide, initialised like the backbone (``model.init``)
    from the run seed's ``init`` stream, sub-stream 1 (the backbone draws sub-stream 0).

    Shapes: -> ([num_user_rows, d], [num_item_rows, d]) on ``ctx.device``.
    """
    dim = ctx.cfg.model.emb_dim
    gen = make_generator(ctx.cfg.seed, "init", 1)
    tables = []
    for rows in (num_user_rows, num_item_rows):
        cpu = torch.empty(rows, dim)
        init_embedding_(cpu, ctx.cfg.model.init, gen)
        tables.append(nn.Parameter(cpu.to(ctx.device)))
    return tables[0], tables[1]


__all__ = [
    "BatchPositives",
    "HistoryIndex",
    "UserSampledPairs",
    "batch_slices",
    "build_lightgcn",
    "cosine_scores",
    "ego_l2",
    "inner_product_representations",
    "inner_product_scorer",
    "item_counts",
    "pair_batches",
    "popularity_tables",
    "uniform_probe",
    "user_batches",
]
