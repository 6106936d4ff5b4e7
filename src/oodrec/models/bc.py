"""The pieces of BC loss (Zhang et al., NeurIPS 2022); see docs/methods/bc.md.

A popularity branch (one table row per distinct training degree of users, one per distinct
training degree of items) is trained with an InfoNCE on cosines; its output sets, for each
positive pair, an angular margin M_ui that the main branch's cosine InfoNCE adds to the angle
between user and positive:

    L_main = -mean_b log( e^{cos(theta_b + M_b) / tau1}
                          / (e^{cos(theta_b + M_b) / tau1} + sum_n e^{cos(u_b, j_bn) / tau1}) )
"""

from __future__ import annotations

import math

import torch

ARCCOS_EPS = 1e-7
"""Cosines are clamped to [-1 + eps, 1 - eps] before arccos, whose gradient is infinite at +-1
(the official value)."""

MASKED = -1e9
"""The cosine given to an excluded entry (the in-batch diagonal): finite, so that a row with no
other entry keeps finite gradients, and far below any cosine / temperature."""


def popularity_ranks(degree: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Each node's popularity index: the rank of its degree among the sorted distinct positive
    degrees. Nodes of degree 0 get index 0 (shared with the least popular nodes seen in
    training), and the table has one row per distinct positive degree (at least one).

    Shapes: degree [N] long -> (ranks [N] long in ``[0, K)``, K).
    """
    distinct = torch.unique(degree[degree > 0], sorted=True)
    ranks = torch.searchsorted(distinct, degree)  # degree 0 -> 0
    return ranks.clamp_max(max(distinct.numel() - 1, 0)), max(int(distinct.numel()), 1)


def infonce(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """-mean_b log( e^{pos_b} / (e^{pos_b} + sum_n e^{neg_bn}) ), from logits (already divided
    by the temperature). Entries of ``neg`` at ``MASKED / tau`` drop out (in-batch: the diagonal).

    Shapes: pos [B], neg [B, N] -> scalar.
    """
    return (torch.logaddexp(pos, torch.logsumexp(neg, dim=1)) - pos).mean()


def code_margin(user_pop: torch.Tensor, item_pop: torch.Tensor) -> torch.Tensor:
    """The official code's margin, 1 - sigmoid(p_u . p_i), from the raw (unnormalised)
    popularity rows: in (0, 1) radians, small when the popularity branch scores the pair high.

    Shapes: [B, D], [B, D] -> [B].
    """
    return 1 - torch.sigmoid((user_pop * item_pop).sum(-1))


def angle_margin(pop_cos: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The paper's margin, min(theta^pop_ui, pi - theta_ui): the angle between the popularity
    rows of u and i, capped so that theta_ui + M_ui <= pi.

    Shapes: pop_cos [B] (cosine of the popularity rows), theta [B] (main angle) -> [B].
    """
    pop_angle = torch.arccos(pop_cos.clamp(-1 + ARCCOS_EPS, 1 - ARCCOS_EPS))
    return torch.minimum(pop_angle, math.pi - theta)


def angle(cos: torch.Tensor) -> torch.Tensor:
    """arccos of a cosine clamped to [-1 + eps, 1 - eps] (``ARCCOS_EPS``). Shapes: any."""
    return torch.arccos(cos.clamp(-1 + ARCCOS_EPS, 1 - ARCCOS_EPS))


def bc_main_loss(
    s_pos: torch.Tensor, s_neg: torch.Tensor, margin: torch.Tensor, tau: float
) -> torch.Tensor:
    """The main branch's loss: InfoNCE with the positive logit cos(theta + M) / tau, theta the
    angle of the clamped positive cosine, against the negatives' cos / tau.

    Shapes: s_pos [B], s_neg [B, N] (cosines; ``MASKED`` entries drop out), margin [B] -> scalar.
    """
    pos = torch.cos(angle(s_pos) + margin) / tau
    return infonce(pos, s_neg / tau)


__all__ = [
    "ARCCOS_EPS",
    "MASKED",
    "angle",
    "angle_margin",
    "bc_main_loss",
    "code_margin",
    "infonce",
    "popularity_ranks",
]
