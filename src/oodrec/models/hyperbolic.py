"""Riemannian operations on the hyperboloid (Lorentz) model, HGCN / HGCF conventions
(docs/methods/hdrm.md).

Notation: curvature -c (c > 0), K = 1 / c. A point x in R^{D} lies on the upper sheet
``-x_0^2 + x_1^2 + ... + x_{D-1}^2 = -K`` (coordinate 0 is the time-like one), so an ambient
dimension D gives a (D-1)-dimensional manifold; the origin is o = (sqrt(K), 0, ..., 0). The
Minkowski product is <x, y>_L = -x_0 y_0 + sum_{k>0} x_k y_k, and a tangent vector u at x has
<x, u>_L = 0 (at the origin: u_0 = 0).

As in HGCN / HGCF (``manifolds/hyperboloid.py``), every map clamps where it would divide by zero,
take a square root of a negative rounding error or overflow:

- ``EPS[dtype]`` (1e-7 float32, 1e-15 float64) floors Minkowski squared norms and keeps the
  arcosh argument >= 1 + EPS (so d(x, x) is ~0, not NaN, and has a zero gradient);
- ``MIN_NORM`` (1e-15) floors Euclidean norms before dividing by them;
- ``MAX_NORM`` (1e6) caps tangent norms in ``expmap``, and ``COSH_CLAMP`` (15) the arguments of
  cosh / sinh (cosh(15) ~ 1.6e6, far from float32 overflow at ~89); points farther than 15 / sqrt(c)
  from their base point are mapped to distance 15 / sqrt(c);
- ``MAX_SQDIST`` (50) caps squared distances in ``sqdist`` (HGCF's loss and scores use it).

Two choices differ from HGCN's code and are exact on the manifold: ``logmap0`` reads the distance
from the spatial norm, d = sqrt(K) asinh(||x_s|| / sqrt(K)), instead of arcosh(x_0 / sqrt(K)),
which loses every digit for points near the origin in float32; parallel transport uses the
closed form v + <y, v>_L / (K - <x, y>_L) (x + y), which has no division by d(x, y)^2.

The Poincare-ball helpers (``to_poincare``, ``mobius_add``, ``poincare_dist``) give an
independent formula for the same distance; the tests check one against the other.
"""

from __future__ import annotations

import torch

EPS = {torch.float32: 1e-7, torch.float64: 1e-15}
"""Floor of Minkowski squared norms and of ``arcosh`` arguments above 1, per dtype."""
MIN_NORM = 1e-15
"""Floor of Euclidean norms that are divided by."""
MAX_NORM = 1e6
"""Cap of tangent-vector norms in ``expmap``."""
COSH_CLAMP = 15.0
"""Cap of the arguments of cosh / sinh."""
MAX_SQDIST = 50.0
"""Cap of squared distances in ``sqdist`` / ``pairwise_sqdist`` (HGCF)."""
BALL_EPS = {torch.float32: 4e-3, torch.float64: 1e-5}
"""Poincare points are kept at norm <= (1 - BALL_EPS) / sqrt(c) (HGCN's ``PoincareBall``)."""


def _eps(x: torch.Tensor) -> float:
    return EPS.get(x.dtype, 1e-7)


def _cosh(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-COSH_CLAMP, COSH_CLAMP).cosh()


def _sinh(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-COSH_CLAMP, COSH_CLAMP).sinh()


def minkowski_dot(x: torch.Tensor, y: torch.Tensor, keepdim: bool = True) -> torch.Tensor:
    """<x, y>_L = -x_0 y_0 + sum_{k>0} x_k y_k. Shapes: [..., D] x2 -> [..., 1] (or [...])."""
    res = (x[..., 1:] * y[..., 1:]).sum(-1) - x[..., 0] * y[..., 0]
    return res.unsqueeze(-1) if keepdim else res


def minkowski_norm(u: torch.Tensor) -> torch.Tensor:
    """sqrt(max(<u, u>_L, EPS)) (tangent vectors have <u, u>_L >= 0). Shape [..., 1]."""
    return minkowski_dot(u, u).clamp_min(_eps(u)).sqrt()


def proj(x: torch.Tensor, c: float) -> torch.Tensor:
    """Put x on the hyperboloid by recomputing x_0 = sqrt(K + ||x_s||^2). Shape [..., D]."""
    xs = x[..., 1:]
    x0 = (1.0 / c + xs.pow(2).sum(-1, keepdim=True)).clamp_min(_eps(x)).sqrt()
    return torch.cat([x0, xs], dim=-1)


def proj_tan(u: torch.Tensor, x: torch.Tensor, c: float) -> torch.Tensor:
    """Make u tangent at x: u_0 = <x_s, u_s> / x_0, so that <x, u>_L = 0. Shape [..., D]."""
    u0 = (x[..., 1:] * u[..., 1:]).sum(-1, keepdim=True) / x[..., :1].clamp_min(_eps(x))
    return torch.cat([u0, u[..., 1:]], dim=-1)


def proj_tan0(u: torch.Tensor) -> torch.Tensor:
    """Tangent projection at the origin: u_0 = 0. Shape [..., D]."""
    return torch.cat([torch.zeros_like(u[..., :1]), u[..., 1:]], dim=-1)


def expmap(u: torch.Tensor, x: torch.Tensor, c: float) -> torch.Tensor:
    """exp_x(u) = cosh(|u|_L / sqrt(K)) x + sqrt(K) sinh(|u|_L / sqrt(K)) u / |u|_L, projected.

    Shapes: u (tangent at x), x: [..., D] -> [..., D].
    """
    sqrt_k = (1.0 / c) ** 0.5
    norm = minkowski_norm(u).clamp_max(MAX_NORM)
    theta = norm / sqrt_k
    return proj(_cosh(theta) * x + sqrt_k * _sinh(theta) * u / norm, c)


def logmap(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """log_x(y) = d(x, y) w / |w|_L with w = y + c <x, y>_L x (the component of y tangent at x).

    Shapes: x, y: [..., D] -> [..., D] (tangent at x).
    """
    k = 1.0 / c
    xy = (minkowski_dot(x, y) + k).clamp_max(-_eps(x)) - k  # <x, y>_L <= -K - EPS
    w = y + c * xy * x
    norm = minkowski_norm(w).clamp_min(MIN_NORM)
    return proj_tan(dist(x, y, c) * w / norm, x, c)


def expmap0(u: torch.Tensor, c: float) -> torch.Tensor:
    """exp_o(u) from the spatial part u_s (u_0 is ignored): (sqrt(K) cosh(t), sqrt(K) sinh(t)
    u_s / ||u_s||) with t = ||u_s|| / sqrt(K). Shapes: [..., D] -> [..., D]."""
    sqrt_k = (1.0 / c) ** 0.5
    us = u[..., 1:]
    norm = us.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)
    theta = norm / sqrt_k
    xs = sqrt_k * _sinh(theta) * us / norm
    return proj(torch.cat([sqrt_k * _cosh(theta), xs], dim=-1), c)


def logmap0(x: torch.Tensor, c: float) -> torch.Tensor:
    """log_o(x) = (0, sqrt(K) asinh(||x_s|| / sqrt(K)) x_s / ||x_s||); x_0 is not read (a point
    of the hyperboloid is determined by x_s). Shapes: [..., D] -> [..., D]."""
    sqrt_k = (1.0 / c) ** 0.5
    xs = x[..., 1:]
    norm = xs.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)
    us = sqrt_k * torch.asinh(norm / sqrt_k) * xs / norm
    return torch.cat([torch.zeros_like(x[..., :1]), us], dim=-1)


def _arcosh_arg(prod: torch.Tensor, c: float) -> torch.Tensor:
    """-<x, y>_L / K, floored at 1 + EPS."""
    return (-prod * c).clamp_min(1.0 + _eps(prod))


def dist(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """Geodesic distance sqrt(K) arcosh(-<x, y>_L / K), uncapped. Shapes: [..., D] -> [..., 1]."""
    return (1.0 / c) ** 0.5 * torch.acosh(_arcosh_arg(minkowski_dot(x, y), c))


def sqdist(
    x: torch.Tensor, y: torch.Tensor, c: float, max_sqdist: float | None = MAX_SQDIST
) -> torch.Tensor:
    """Squared distance K arcosh(-<x, y>_L / K)^2, capped at ``max_sqdist`` (HGCF).

    Shapes: x, y: [..., D] (broadcastable) -> [...].
    """
    d2 = torch.acosh(_arcosh_arg(minkowski_dot(x, y, keepdim=False), c)).pow(2) / c
    return d2 if max_sqdist is None else d2.clamp_max(max_sqdist)


def pairwise_sqdist(
    x: torch.Tensor, y: torch.Tensor, c: float, max_sqdist: float | None = MAX_SQDIST
) -> torch.Tensor:
    """``sqdist`` between every row of x and every row of y, one matmul.

    Shapes: x [B, D], y [N, D] -> [B, N].
    """
    prod = x[:, 1:] @ y[:, 1:].T - x[:, :1] * y[:, 0].unsqueeze(0)  # <x_b, y_n>_L
    d2 = torch.acosh(_arcosh_arg(prod, c)).pow(2) / c
    return d2 if max_sqdist is None else d2.clamp_max(max_sqdist)


def egrad2rgrad(x: torch.Tensor, grad: torch.Tensor, c: float) -> torch.Tensor:
    """Riemannian gradient from the Euclidean one: h = (-g_0, g_s) (the inverse Minkowski metric),
    then the tangent projection h + c <x, h>_L x. Equals HGCF's for c = 1. Shapes: [..., D]."""
    h = torch.cat([-grad[..., :1], grad[..., 1:]], dim=-1)
    return h + c * minkowski_dot(x, h) * x


def ptransp(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, c: float) -> torch.Tensor:
    """Parallel transport of v (tangent at x) to y along the geodesic:
    v + <y, v>_L / (K - <x, y>_L) (x + y) (K - <x, y>_L >= 2K > 0). Shapes: [..., D]."""
    k = 1.0 / c
    coef = minkowski_dot(y, v) / (k - minkowski_dot(x, y)).clamp_min(_eps(x))
    return proj_tan(v + coef * (x + y), y, c)


# ------------------------------------------------------------------ Poincare ball (checks)


def to_poincare(x: torch.Tensor, c: float) -> torch.Tensor:
    """The Poincare-ball image sqrt(K) x_s / (x_0 + sqrt(K)) of a hyperboloid point.

    Shapes: [..., D] -> [..., D - 1].
    """
    sqrt_k = (1.0 / c) ** 0.5
    return sqrt_k * x[..., 1:] / (x[..., :1] + sqrt_k)


def ball_proj(p: torch.Tensor, c: float) -> torch.Tensor:
    """Pull Poincare points inside the ball of radius (1 - BALL_EPS) / sqrt(c). Shape [..., n]."""
    max_norm = (1.0 - BALL_EPS.get(p.dtype, 4e-3)) / c**0.5
    norm = p.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)
    return torch.where(norm > max_norm, p / norm * max_norm, p)


def mobius_add(p: torch.Tensor, q: torch.Tensor, c: float) -> torch.Tensor:
    """Mobius addition p (+) q on the Poincare ball of curvature -c. Shapes: [..., n] x2."""
    pq = (p * q).sum(-1, keepdim=True)
    p2 = p.pow(2).sum(-1, keepdim=True)
    q2 = q.pow(2).sum(-1, keepdim=True)
    num = (1 + 2 * c * pq + c * q2) * p + (1 - c * p2) * q
    den = 1 + 2 * c * pq + c**2 * p2 * q2
    return num / den.clamp_min(MIN_NORM)


def poincare_dist(p: torch.Tensor, q: torch.Tensor, c: float) -> torch.Tensor:
    """d(p, q) = 2 / sqrt(c) artanh(sqrt(c) ||(-p) (+) q||), with both points first pulled inside
    the ball (``ball_proj``). Shapes: [..., n] -> [..., 1]."""
    p, q = ball_proj(p, c), ball_proj(q, c)
    norm = mobius_add(-p, q, c).norm(dim=-1, keepdim=True)
    arg = (c**0.5 * norm).clamp_max(1.0 - _eps(norm))
    return 2.0 / c**0.5 * torch.atanh(arg)


__all__ = [
    "BALL_EPS",
    "COSH_CLAMP",
    "EPS",
    "MAX_NORM",
    "MAX_SQDIST",
    "MIN_NORM",
    "ball_proj",
    "dist",
    "egrad2rgrad",
    "expmap",
    "expmap0",
    "logmap",
    "logmap0",
    "minkowski_dot",
    "minkowski_norm",
    "mobius_add",
    "pairwise_sqdist",
    "poincare_dist",
    "proj",
    "proj_tan",
    "proj_tan0",
    "ptransp",
    "to_poincare",
]
