"""The NegativeSampler interface, its result type and shared sampling helpers.

A sampler implements one method, ``sample(batch, emb, gen) -> Negatives``. A sampler with
trainable parts may also implement ``aux_loss`` (added to the training loss), ``param_groups``
(optimiser groups for its own parameters) and ``start_epoch`` (curricula). The training loop
knows nothing else about samplers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from oodrec.config import parse_options
from oodrec.models.base import Embeddings

logger = logging.getLogger(__name__)

SYNC_FREE_ROUNDS = 8
"""Redraw rounds of the sync-free rejection (``train.sync_free``): every round draws a
full-shape tensor, so a slot still colliding after them has probability ``p ** 9`` (``p``: the
share of the draw's mass on the user's positives)."""


class SyncFree:
    """The sync-free mode of a run (``train.sync_free``), shared by its samplers and methods.

    Rejection of training positives (``redraw_collisions``) runs ``rounds`` fixed-shape rounds
    on the device instead of redrawing the host-counted collisions; the slots that still collide
    are counted on the device, in ``residual``, and read once per epoch (``take``).
    """

    def __init__(self, rounds: int = SYNC_FREE_ROUNDS) -> None:
        self.rounds = rounds
        self.residual: torch.Tensor | None = None
        """Residual collisions since the last ``take`` (0-dim long, on the device)."""

    def add(self, count: torch.Tensor) -> None:
        """Add a device-side count (no host read)."""
        self.residual = count if self.residual is None else self.residual + count

    def take(self) -> int:
        """The residual collisions counted since the last call (one host read), then reset."""
        count, self.residual = self.residual, None
        return 0 if count is None else int(count)


@dataclass(frozen=True)
class TripletBatch:
    """A batch of positive pairs.

    Shapes:
        users: [B] long; pos_items: [B] long (on the training device).
    """

    users: torch.Tensor
    pos_items: torch.Tensor

    def __len__(self) -> int:
        return int(self.users.numel())


@dataclass
class Negatives:
    """Negatives for one batch.

    Shapes:
        emb: [B, D] (one negative per row) or [B, K, D] (K negatives per row), in the scoring
            space (pooled embeddings). Gradients flow through it.
        ids: [B] or [B, K] long when real items were chosen, else ``None`` (synthesised
            negatives). The false-hard-negative diagnostics use it.
        reg_ego: ego (layer-0) embeddings for the L2 term, same leading shape as ``emb``;
            ``None`` means ``item_ego[ids]`` when ids are set, else no negative L2 term.
        weights: [K] weights of the K per-row BPR terms (default: all 1, summed).
    """

    emb: torch.Tensor
    ids: torch.Tensor | None = None
    reg_ego: torch.Tensor | None = None
    weights: torch.Tensor | None = None


@dataclass(frozen=True)
class SamplerContext:
    """Static context every sampler may use.

    Attributes:
        num_users, num_items: id space sizes.
        positives: index of the training positives (for rejection).
        item_degree: training popularity per item. Shape [I].
        num_epochs: planned number of epochs (curricula).
        device: training device.
    """

    num_users: int
    num_items: int
    positives: PositiveIndex
    item_degree: torch.Tensor
    num_epochs: int
    device: torch.device
    emb_dim: int = 64
    dataset: str = ""
    """Dataset name (samplers may pick per-dataset presets)."""
    seed: int = 0
    """Run seed (samplers derive initialisation generators from it)."""
    sync_free: SyncFree | None = None
    """The run's sync-free mode (``train.sync_free``), or None (exact, host-synchronising)."""


class PositiveIndex:
    """Membership test for training pairs via sorted ``user * I + item`` keys (binary search).

    Args:
        users, items: training pairs. Shape [N].
        num_items: I.
        sync_free: the run's sync-free mode: rejection against this index then runs fixed
            device-side rounds (``redraw_collisions``); None: exact rejection.
    """

    def __init__(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        num_items: int,
        sync_free: SyncFree | None = None,
    ) -> None:
        self.num_items = num_items
        self.keys = torch.sort(users * num_items + items).values  # [N]
        self.sync_free = sync_free

    def to(self, device: torch.device | str) -> PositiveIndex:
        self.keys = self.keys.to(device)
        return self

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the same shape as ``items``: is ``(user, item)`` a training pair?

        Shapes:
            users: [B] or broadcastable to items; items: [B] or [B, K].
        """
        if items.dim() > users.dim():
            users = users.view(*users.shape, *([1] * (items.dim() - users.dim())))
        keys = users * self.num_items + items
        pos = torch.searchsorted(self.keys, keys).clamp_max(self.keys.numel() - 1)
        return self.keys[pos] == keys


def uniform_items(
    users: torch.Tensor,
    num_items: int,
    gen: torch.Generator,
    num: int | None = None,
    positives: PositiveIndex | None = None,
    max_rounds: int = 100,
) -> torch.Tensor:
    """Uniform item ids per user, redrawing only the ones that hit a training positive.

    Args:
        users: [B] user ids.
        num_items: draw from ``0..num_items-1``.
        gen: RNG (on the users' device).
        num: ``None`` -> shape [B]; an int K -> shape [B, K].
        positives: reject training positives when given.
        max_rounds: cap on redraw rounds (a user who has every item cannot be served).

    Returns:
        Long tensor [B] or [B, K].
    """
    shape = (users.numel(),) if num is None else (users.numel(), num)

    def draw(size: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(num_items, size, generator=gen, device=users.device)

    return redraw_collisions(users, draw(shape), draw, positives, max_rounds)


def redraw_collisions(
    users: torch.Tensor,
    cand: torch.Tensor,
    draw,
    positives: PositiveIndex | None,
    max_rounds: int = 100,
) -> torch.Tensor:
    """Replace candidates that are training positives by fresh draws, re-checking only the
    redrawn entries each round (RecBole's fast path).

    With ``positives.sync_free`` set, the rejection runs on the device without host reads
    (``redraw_fixed``).

    Args:
        users: [B] user ids.
        cand: [B] or [B, K] candidate item ids (modified in place).
        draw: ``draw(shape) -> shape`` new item ids.
        positives: the training pairs; ``None`` returns ``cand`` unchanged.
        max_rounds: cap on redraw rounds (a user who has every item cannot be served).
    """
    if positives is None:
        return cand
    sync_free = getattr(positives, "sync_free", None)
    if sync_free is not None:
        return redraw_fixed(users, cand, draw, positives, sync_free, max_rounds)
    flat = cand.view(-1)
    row_users = users if cand.dim() == 1 else users.repeat_interleave(cand.shape[1])
    bad = torch.nonzero(positives.contains(users, cand).view(-1)).squeeze(1)
    for _ in range(max_rounds):
        if bad.numel() == 0:
            break
        new = draw((bad.numel(),))
        flat[bad] = new
        bad = bad[positives.contains(row_users[bad], new)]
    else:
        logger.warning(
            "%d negatives still collide with positives after %d rounds", bad.numel(), max_rounds
        )
    return cand


def redraw_fixed(
    users: torch.Tensor,
    cand: torch.Tensor,
    draw,
    positives: PositiveIndex,
    sync_free: SyncFree,
    max_rounds: int = 100,
) -> torch.Tensor:
    """``redraw_collisions`` without host synchronisation: ``min(max_rounds, sync_free.rounds)``
    rounds, each drawing a full-shape tensor that replaces (``torch.where``) the slots still
    colliding; the slots colliding after the last round are kept and counted on the device
    (``sync_free.add``). Same distribution as the exact rejection for the slots that end
    clean, but another random stream.

    Shapes:
        users: [B]; cand: [B] or [B, K] -> same shape (a new tensor).
    """
    hit = positives.contains(users, cand)
    for _ in range(min(max_rounds, sync_free.rounds)):
        new = draw(tuple(cand.shape))
        cand = torch.where(hit, new, cand)
        hit = hit & positives.contains(users, new)
    sync_free.add(hit.sum())
    return cand


class NegativeSampler(nn.Module):
    """Base class of every negative sampler.

    Subclasses declare an ``Options`` frozen dataclass (every field documented), store their
    parsed options as ``self.options`` and implement ``sample``. They are built with
    ``from_options(ctx, options)``, which fails on unknown keys.
    """

    Options: ClassVar[type] = type(None)
    paper: ClassVar[str] = ""
    horizon_option: ClassVar[str | None] = None
    """The option that sets the epoch horizon of the sampler's schedule, when it has one and
    ``None`` there means ``train.epochs`` (``ctx.num_epochs``). ``oodrec tune`` pins it when the
    final runs get a larger epoch cap than the trials, so that only the cap changes."""

    def __init__(self, ctx: SamplerContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.options: Any = None
        """The parsed ``Options`` (resolved, where a sampler fills defaults from presets); the
        run record reports them."""

    @classmethod
    def from_options(cls, ctx: SamplerContext, options: dict[str, Any]) -> NegativeSampler:
        """Build the sampler from a (possibly partial) options mapping."""
        return cls(ctx, parse_options(cls.Options, options, cls.__name__, "sampler."))

    @classmethod
    def train_overrides(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Config settings outside ``sampler.options`` that the sampler's (raw) options imply,
        e.g. CNSDiff ``code_faithful``'s L2 form. Applied before explicit user settings, so that
        the resolved config.yaml shows them and an explicit ``--set`` still wins."""
        return {}

    @classmethod
    def inert_options(cls, options: Any, dataset: str) -> dict[str, str]:
        """Options that cannot change training given the others: name -> why.

        Used to warn when a user sets, sweeps or tunes such an option (a sensitivity grid over
        it would give identical runs). Only options whose inertness is certain belong here.

        Args:
            options: the parsed ``Options`` instance.
            dataset: the dataset name (for samplers with per-dataset presets).
        """
        return {}

    def sample(self, batch: TripletBatch, emb: Embeddings, gen: torch.Generator) -> Negatives:
        """Negatives for ``batch`` given the current embeddings."""
        raise NotImplementedError

    def aux_loss(
        self, batch: TripletBatch, emb: Embeddings, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Extra, already weighted loss terms (name -> scalar). Called after ``sample``."""
        return {}

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups for the sampler's own trainable parts."""
        return []

    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch (0-based)."""

    def diagnostics(self) -> dict[str, float]:
        """Sampler-specific per-epoch diagnostics (logged in the run's JSONL)."""
        return {}
