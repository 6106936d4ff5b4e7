"""The pairwise softmax loss, PSL (Yang et al., NeurIPS 2024); see docs/methods/psl.md.

With d = (cos(u, j) - cos(u, i)) / score_tau for a positive i and a negative j, PSL replaces the
exp of the softmax loss by a surrogate sigma of the step function, the temperature tau kept
outside:

    L = mean_b log sum_n sigma(d_bn)^(1 / tau) = mean_b logsumexp_n( log sigma(d_bn) / tau )

with sigma one of ``tanh(d) + 1``, ``atan(d) + 1`` or ``relu(d + 1)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PSL_ACTIVATIONS = ("tanh", "atan", "relu")
"""The surrogates sigma of the step function (the paper's three)."""

LOG_FLOOR = 1e-12
"""The argument of log is clamped here: ``atan(d) + 1`` < 0 for d < -tan 1 and ``relu(d + 1)``
is 0 for d <= -1, which only happens with ``score_tau`` < 2."""


def log_surrogate(d: torch.Tensor, activation: str) -> torch.Tensor:
    """log sigma(d), element-wise.

    ``tanh`` uses the identity tanh(d) + 1 = 2 sigmoid(2d), so log sigma = log 2 + logsigmoid(2d)
    is finite for every d; ``atan`` and ``relu`` clamp their argument at ``LOG_FLOOR``.

    Shapes: any -> same.
    """
    if activation == "tanh":
        return F.logsigmoid(2 * d) + math.log(2.0)
    if activation == "atan":
        return (torch.atan(d) + 1).clamp_min(LOG_FLOOR).log()
    if activation == "relu":
        return F.relu(d + 1).clamp_min(LOG_FLOOR).log()
    raise ValueError(f"unknown PSL activation {activation!r}; one of {PSL_ACTIVATIONS}")


def psl_loss(
    s_pos: torch.Tensor,
    s_neg: torch.Tensor,
    tau: float,
    score_tau: float = 2.0,
    activation: str = "tanh",
    form: str = "softmax",
    include_positive: bool = False,
) -> torch.Tensor:
    """PSL from cosine scores.

    Args:
        s_pos: cos(u_b, i_b), the positive of each row.
        s_neg: cos(u_b, j_bn), the N negatives of each row.
        tau: the robustness temperature (the paper's tau, the official ``tau_star``).
        score_tau: the score temperature (d = (s_neg - s_pos) / score_tau; 2 keeps d in [-1, 1]).
        activation: ``tanh``, ``atan`` or ``relu`` (``PSL_ACTIVATIONS``).
        form: ``softmax``: mean over rows of logsumexp over the row's negatives (the paper's
            PSL, official ``method=1``); ``pairwise``: log of the mean of sigma(d)^(1/tau) over
            every (row, negative) pair of the batch (official ``method=2``).
        include_positive: add the positive itself, sigma(0)^(1/tau) = 1, to each row's sum (the
            paper sums over all items, positive included; the official code over negatives only).

    Shapes: s_pos [B], s_neg [B, N] -> scalar.
    """
    d = (s_neg - s_pos.unsqueeze(1)) / score_tau
    logits = log_surrogate(d, activation) / tau  # [B, N]
    if include_positive:  # sigma(0) = 1 for all three surrogates: a zero logit
        logits = torch.cat([logits.new_zeros(logits.shape[0], 1), logits], dim=1)
    if form == "softmax":
        return torch.logsumexp(logits, dim=1).mean()
    if form == "pairwise":
        return torch.logsumexp(logits.reshape(-1), dim=0) - math.log(logits.numel())
    raise ValueError(f"unknown PSL form {form!r}; one of softmax, pairwise")


__all__ = ["LOG_FLOOR", "PSL_ACTIVATIONS", "log_surrogate", "psl_loss"]
