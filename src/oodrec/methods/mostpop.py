"""``mostpop``: MostPop, every user's ranking is the items' training degree
(docs/methods/mostpop.md).

No parameters, no loss, no training: ``batches`` yields nothing, so an epoch takes no step and
logs ``loss`` 0; the Trainer still evaluates it, selects epoch 0 and writes ``best.pt``. The
method implies ``train.epochs=1``. Ties between items of equal degree go to the lower item index
(``MostPopOptions.tie_break``), so every device ranks alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from oodrec.methods.base import Method, MethodContext, OptimizerChain, Scorer


@dataclass(frozen=True)
class MostPopOptions:
    """Options of ``mostpop``."""

    tie_break: bool = True
    """Rank items of equal training degree by item index, lower first. Each score is then the
    degree plus a fraction below 0.5 that falls with the item's index among the items of its
    degree (so the integer part is still the degree, and items of different degrees keep their
    order); ``torch.topk`` leaves the order of equal scores open, so without it the order of tied
    items may differ between devices. False: the scores are exactly the degrees."""


def degree_scores(degree: torch.Tensor, tie_break: bool = True) -> torch.Tensor:
    """MostPop's item scores: the training degree, plus the tie-break fraction.

    With ``tie_break``, the ``r``-th lowest index among the ``g`` items of degree ``d`` scores
    ``d + 0.5 (g - 1 - r) / g``. In float32 these stay distinct while ``d * g < 2**22``, which
    holds for every degree when the training split has fewer than 2**22 pairs (the items of one
    degree hold ``d * g`` of them).

    Shapes: degree [I] (integer) -> scores [I] float32.
    """
    if not tie_break:
        return degree.float()
    deg = degree.long()
    order = torch.sort(deg, stable=True).indices  # by degree, ties by index
    _, counts = torch.unique_consecutive(deg[order], return_counts=True)
    starts = counts.cumsum(0) - counts
    group = counts.repeat_interleave(counts)  # size of each sorted item's degree group
    rank = torch.arange(deg.numel(), device=deg.device) - starts.repeat_interleave(counts)
    frac = torch.empty(deg.numel(), dtype=torch.float64, device=deg.device)
    frac[order] = 0.5 * (group - 1 - rank).double() / group.double()
    return (deg.double() + frac).float()


class MostPop(Method):
    """MostPop: every user gets the items ranked by their training degree.

    Paper: none; the standard popularity baseline of recommendation papers (e.g. Rendle et al.,
    "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009, compare against it).
    The scores are the training split's item degrees; there is nothing to train.
    """

    Options = MostPopOptions
    paper = "popularity baseline (training-degree scores; no paper of its own)"
    trains = False
    unscored_reason = (
        "MostPop scores every user alike by the items' training degree; it has no user vectors"
    )

    def __init__(self, ctx: MethodContext, options: MostPopOptions | None) -> None:
        opts = options or MostPopOptions()
        super().__init__(ctx, opts)
        scores = degree_scores(ctx.data.item_degree(), opts.tie_break)
        self.register_buffer("scores", scores.to(ctx.device))

    @classmethod
    def train_overrides(cls, options: dict[str, Any]) -> dict[str, Any]:
        # every epoch is the same: one evaluates (and selects) it
        return {"train.epochs": 1}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        # no parameters: a "main" phase that steps nothing (never stepped: there are no batches)
        return {"main": OptimizerChain({})}  # type: ignore[dict-item]

    def batches(self, epoch: int, gen: torch.Generator) -> Iterator[Any]:
        return iter(())

    def loss(
        self, batch: Any, gen: torch.Generator, phase: str = "main"
    ) -> dict[str, torch.Tensor]:
        raise RuntimeError("mostpop has no batches, so no loss")

    def scorer(self) -> Scorer:
        scores = self.scores
        # a copy per batch: the evaluator masks the history in place
        return lambda users: scores.unsqueeze(0).repeat(users.numel(), 1)
