"""The ``Method`` interface: a recommender together with its training rule.

A method owns what differs between recommenders:

- its **batches** for an epoch (pair batches for LightGCN-style methods, user batches for
  DiffRec / CDR), drawn from the epoch's shuffle generator;
- its **loss terms** for a batch (a dict of already weighted scalars, each logged per epoch);
- its **optimisers**, keyed by phase (``"main"``; AdvInfoNCE's adversary or HDRM's stages add
  their own), and which phase each batch steps;
- its **scorer**: users -> scores over all items, which the evaluator ranks;
- its extra **state** for resume (``get_extra_state`` / ``set_extra_state`` of ``nn.Module``, so
  variable-size tensors and counters travel inside ``state_dict``);
- its **diagnostics**, and its negatives where it has any (the Trainer's false-hard-negative
  probe asks for them).

The Trainer keeps the rest: epochs, stepping, gradient clipping (``max_grad_norm``), evaluation,
selection, early stopping, checkpoints and records. The split of responsibilities follows
RecBole's model-owned loss and all-item scoring, and cornac's split between a network and its
training wrapper; unlike RecBole there are no per-model trainer subclasses, and a method is built
from the **training split only** (``TrainData``), so it cannot read validation or test data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from oodrec.config import ExperimentConfig, parse_options
from oodrec.models.base import Embeddings
from oodrec.samplers.base import SyncFree

Scorer = Callable[[torch.Tensor], torch.Tensor]
"""``scorer(users [B] long) -> scores [B, I]``; higher ranks first. History masking is the
evaluator's job."""


@dataclass(frozen=True)
class TrainData:
    """What a method may see of a dataset: the training pairs and the id spaces.

    Attributes:
        name: dataset name (methods may pick per-dataset presets).
        num_users, num_items: id space sizes (users / items of every split are below them).
        users, items: the training pairs, on the training device.
        timestamps: per-pair time, or ``None`` when the data has no order.

    Shapes:
        users, items: [N] long; timestamps: [N] int64 (unit: the dataset report's
            ``timestamp_unit``, s or ms) or None.
    """

    name: str
    num_users: int
    num_items: int
    users: torch.Tensor
    items: torch.Tensor
    timestamps: torch.Tensor | None = None

    @classmethod
    def from_dataset(cls, dataset: Any, device: torch.device | str = "cpu") -> TrainData:
        """The training view of an ``InteractionDataset`` (its train split only)."""
        train = dataset.train
        ts = getattr(train, "timestamps", None)
        return cls(
            name=dataset.name,
            num_users=dataset.num_users,
            num_items=dataset.num_items,
            users=train.users.to(device),
            items=train.items.to(device),
            timestamps=ts.to(device) if ts is not None else None,
        )

    def item_degree(self) -> torch.Tensor:
        """Training popularity of every item. Shape [I] long."""
        return torch.bincount(self.items, minlength=self.num_items)

    def user_degree(self) -> torch.Tensor:
        """Training history length of every user. Shape [U] long."""
        return torch.bincount(self.users, minlength=self.num_users)


@dataclass(frozen=True)
class MethodContext:
    """Everything a method is built from.

    Attributes:
        data: the training view.
        cfg: the experiment config (``model.*``, ``sampler.*`` and ``train.*`` settings).
        device: the training device.
        sync_free: the run's sync-free mode (``train.sync_free`` resolved for ``device``): the
            methods pass it to their ``PositiveIndex`` and avoid host reads in their batches;
            None: off (the exact, host-synchronising paths).
    """

    data: TrainData
    cfg: ExperimentConfig
    device: torch.device
    sync_free: SyncFree | None = None


@dataclass
class NegativeProbe:
    """A method's negatives for the false-hard-negative diagnostics.

    Attributes:
        emb: the embeddings the negatives are scored against.
        sample: ``sample(users [B], pos_items [B]) -> Negatives`` for a probe batch.
    """

    emb: Embeddings
    sample: Callable[[torch.Tensor, torch.Tensor], Any]


@dataclass
class Representations:
    """A method's user and item vectors, when its scores are a function of them.

    Attributes:
        users, items: one row per internal user / item index.
        score: how a score is computed from a user row and an item row (``inner product``,
            ``negative squared Lorentz distance, curvature 1/c``), so that a vector index can be
            built with the same similarity.

    Shapes:
        users: [U, d]; items: [I, d] (float).
    """

    users: torch.Tensor
    items: torch.Tensor
    score: str


class Method(nn.Module):
    """Base class of every method (see the module docstring for the division of labour).

    Subclasses declare ``Options`` (a frozen dataclass, every field documented, or
    ``type(None)``), ``paper``, and implement ``batches``, ``loss`` and ``scorer``. They are built
    with ``from_context(ctx)``, which validates ``cfg.model.options`` against ``Options``.

    Class attributes:
        Options: the options dataclass.
        paper: the method's paper (``oodrec models`` prints it).
        takes_sampler: the method uses ``cfg.sampler`` (LightGCN); others refuse a sampler.
        max_grad_norm: the Trainer clips gradients to this norm before each step (None: never).
    """

    Options: ClassVar[type] = type(None)
    paper: ClassVar[str] = ""
    takes_sampler: ClassVar[bool] = False
    trains: ClassVar[bool] = True
    """False for a method with nothing to train (MostPop): no epoch cap can bind it."""
    max_grad_norm: float | None = None

    def __init__(self, ctx: MethodContext, options: Any) -> None:
        super().__init__()
        self.ctx = ctx
        self.options = options

    @classmethod
    def from_context(cls, ctx: MethodContext) -> Method:
        """Build the method with ``cfg.model.options`` validated against ``Options``."""
        opts = parse_options(cls.Options, dict(ctx.cfg.model.options), cls.__name__, "model.")
        return cls(ctx, opts)

    @classmethod
    def train_overrides(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Config settings outside ``model.options`` that the method's defaults imply (DiffRec's
        learning rate and batch size). Applied before explicit user settings, so that the
        resolved config.yaml shows them and an explicit ``--set`` still wins."""
        return {}

    # ------------------------------------------------------------------ training

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimisers keyed by phase; built once. Default: one Adam over every parameter."""
        return {"main": torch.optim.Adam(self.parameters(), lr=self.ctx.cfg.train.lr)}

    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch (0-based), in train mode."""

    def batches(self, epoch: int, gen: torch.Generator) -> Iterable[Any]:
        """The epoch's batches, shuffled with ``gen`` (the epoch's shuffle stream)."""
        raise NotImplementedError

    def phase(self, epoch: int, step: int) -> str:
        """The optimiser phase that batch ``step`` of ``epoch`` trains. Default ``main``."""
        return "main"

    def warmup_epochs(self) -> int:
        """Epochs at the start that do not train the scorer (BC loss's popularity-only phase).

        The Trainer does not evaluate them: an untrained scorer is not a candidate for
        selection, and its evaluations must not use up ``train.patience`` before the scorer
        trains. A run that ends inside them is evaluated at its last epoch, with a warning.
        Default 0."""
        return 0

    def loss(
        self, batch: Any, gen: torch.Generator, phase: str = "main"
    ) -> dict[str, torch.Tensor]:
        """Already weighted loss terms of ``batch`` (name -> scalar); the Trainer sums them."""
        raise NotImplementedError

    def after_step(self, phase: str) -> None:
        """Called after each optimiser step (projections, counters)."""

    # ------------------------------------------------------------------ evaluation

    def scorer(self) -> Scorer:
        """A scorer for the current parameters; called in eval mode under ``no_grad``. Work
        shared by every user (a full-graph propagation) happens here, once per evaluation."""
        raise NotImplementedError

    def representations(self) -> Representations | None:
        """The vectors the scores are computed from (``oodrec export``), or None for a method
        whose scores are not a function of one vector per user and per item (DiffRec and CDR
        score a user's whole history through a network). Called in eval mode, no grad."""
        return None

    unscored_reason: ClassVar[str] = ""
    """Why ``representations`` is None (one line, for ``oodrec export``)."""

    # ------------------------------------------------------------------ diagnostics

    def negative_probe(self, gen: torch.Generator) -> NegativeProbe | None:
        """Negatives for the false-hard-negative diagnostics, or None (no negatives)."""
        return None

    def diagnostics(self) -> dict[str, float]:
        """Method-specific per-epoch statistics (logged in epochs.jsonl)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Resolved options for the run record."""
        import dataclasses

        if self.options is None or not dataclasses.is_dataclass(self.options):
            return {}
        return dataclasses.asdict(self.options)

    def load_legacy_state(self, state: dict[str, Any]) -> None:
        """Load a checkpoint whose state sits under ``model`` / ``sampler`` keys instead of
        ``method`` (the layout of LightGCN + sampler checkpoints). Default: refuse."""
        raise KeyError("checkpoint has no 'method' state")


class OptimizerChain:
    """Several optimisers stepped together as one phase's optimiser (CausalDiff's ``env`` phase
    steps Adam and Adagrad groups). It has the optimiser methods the Trainer uses: ``zero_grad``,
    ``step``, ``state_dict`` and ``load_state_dict`` (a dict of the members' states)."""

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def state_dict(self) -> dict[str, Any]:
        return {k: opt.state_dict() for k, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state[k])


__all__ = [
    "Method",
    "MethodContext",
    "NegativeProbe",
    "OptimizerChain",
    "Representations",
    "Scorer",
    "TrainData",
]
