"""Riemannian SGD with momentum on the hyperboloid (HGCF's ``rgd/rsgd.py``; HDRM uses it for the
embeddings, docs/methods/hdrm.md).

Per parameter (a matrix whose rows are hyperboloid points of curvature -c), one step is:

1. g <- grad + weight_decay * x (Euclidean weight decay on the ambient coordinates, as HGCF);
2. r <- egrad2rgrad(x, g): the Riemannian gradient, tangent at x;
3. with momentum m: b <- m b + r (b <- r at the first step), and the direction is b;
4. x' <- proj(exp_x(-lr * direction)): move along the geodesic, then re-project;
5. b <- parallel transport of b from x to x' (so it stays tangent at the new point).

Differences from HGCF's code, both without effect for c = 1 and after the first step: the first
momentum buffer is r (HGCF stores the raw Euclidean gradient and then adds r to it), and the
re-projection uses K = 1 / c (HGCF hard-codes K = 1).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from oodrec.models.hyperbolic import egrad2rgrad, expmap, proj, ptransp


class RiemannianSGD(torch.optim.Optimizer):
    """SGD with momentum over hyperboloid points (each row of each parameter is a point).

    Args:
        params: parameters whose rows lie on the hyperboloid of curvature -c.
        lr: learning rate.
        c: curvature magnitude (K = 1 / c).
        momentum: momentum factor m (0: plain Riemannian SGD).
        weight_decay: Euclidean weight decay added to the gradient before the projection.

    Shapes:
        each parameter: [N, D] (ambient dimension D, manifold dimension D - 1).

    Example::

        opt = RiemannianSGD([model.user_emb, model.item_emb], lr=1e-3, momentum=0.95)
        loss.backward(); opt.step()   # rows stay on the hyperboloid
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        c: float = 1.0,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0 or c <= 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(
                f"RiemannianSGD needs lr > 0, c > 0, 0 <= momentum < 1, weight_decay >= 0; got "
                f"lr={lr}, c={c}, momentum={momentum}, weight_decay={weight_decay}"
            )
        defaults = {"lr": lr, "c": c, "momentum": momentum, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        """One Riemannian step for every parameter with a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, c, m, wd = group["lr"], group["c"], group["momentum"], group["weight_decay"]
            for x in group["params"]:
                if x.grad is None:
                    continue
                grad = x.grad if wd == 0 else x.grad + wd * x
                direction = egrad2rgrad(x, grad, c)
                state = self.state[x]
                if m > 0:
                    buf = state.get("momentum_buffer")
                    buf = direction.clone() if buf is None else buf.mul_(m).add_(direction)
                    direction = buf
                new = proj(expmap(-lr * direction, x, c), c)
                if m > 0:
                    state["momentum_buffer"] = ptransp(x, new, direction, c)
                x.copy_(new)
        return loss


__all__ = ["RiemannianSGD"]
