"""Hyperboloid operations: identities, distance axioms, agreement with the Poincare-ball formula,
Mobius identities, stability at large coordinates / near the ball's boundary, and Riemannian SGD.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oodrec.models import hyperbolic as H
from oodrec.models.hyperbolic_optim import RiemannianSGD

D = 6  # ambient dimension: a 5-dimensional hyperbolic space
CURVATURES = (0.5, 1.0, 2.0)


def _points(n: int, c: float, scale: float = 0.7, seed: int = 0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(n, D, generator=gen, dtype=dtype) * scale
    return H.expmap0(v, c)


def _tangent_at(x: torch.Tensor, c: float, seed: int = 1, scale: float = 0.5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return H.proj_tan(torch.randn(x.shape, generator=gen, dtype=x.dtype) * scale, x, c)


@pytest.mark.parametrize("c", CURVATURES)
def test_points_lie_on_the_hyperboloid(c):
    x = _points(50, c)
    assert torch.allclose(H.minkowski_dot(x, x), torch.full((50, 1), -1 / c, dtype=x.dtype))
    assert (x[:, 0] > 0).all()
    # proj puts an arbitrary vector on the upper sheet
    y = H.proj(torch.randn(5, D, dtype=torch.float64), c)
    assert torch.allclose(H.minkowski_dot(y, y), torch.full((5, 1), -1 / c, dtype=y.dtype))


@pytest.mark.parametrize("c", CURVATURES)
def test_exp_and_log_at_the_origin_are_inverse(c):
    v = H.proj_tan0(torch.randn(40, D, dtype=torch.float64))
    assert torch.allclose(H.logmap0(H.expmap0(v, c), c), v, atol=1e-10)
    x = _points(40, c)
    assert torch.allclose(H.expmap0(H.logmap0(x, c), c), x, atol=1e-10)
    # the first coordinate of a tangent vector at the origin is 0 and exp_o ignores it
    assert (H.logmap0(x, c)[:, 0] == 0).all()
    w = v.clone()
    w[:, 0] = 5.0
    assert torch.allclose(H.expmap0(w, c), H.expmap0(v, c))


@pytest.mark.parametrize("c", CURVATURES)
def test_general_exp_and_log_are_inverse(c):
    x, y = _points(30, c, seed=0), _points(30, c, seed=1)
    assert torch.allclose(H.expmap(H.logmap(x, y, c), x, c), y, atol=1e-8)
    u = _tangent_at(x, c)
    assert torch.allclose(H.logmap(x, H.expmap(u, x, c), c), u, atol=1e-8)
    # the log is tangent at x and its Minkowski length is the distance
    log = H.logmap(x, y, c)
    assert torch.allclose(H.minkowski_dot(x, log), torch.zeros(30, 1, dtype=x.dtype), atol=1e-9)
    assert torch.allclose(H.minkowski_norm(log), H.dist(x, y, c), atol=1e-8)


@pytest.mark.parametrize("c", CURVATURES)
def test_distance_axioms(c):
    x, y, z = (_points(200, c, seed=s) for s in (0, 1, 2))
    assert torch.allclose(H.dist(x, x, c), torch.zeros(200, 1, dtype=x.dtype), atol=1e-6)
    assert torch.allclose(H.dist(x, y, c), H.dist(y, x, c))
    assert (H.dist(x, z, c) <= H.dist(x, y, c) + H.dist(y, z, c) + 1e-9).all()
    # distance from the origin is the tangent norm
    v = H.proj_tan0(torch.randn(20, D, dtype=torch.float64))
    origin = H.expmap0(torch.zeros(1, D, dtype=torch.float64), c)
    expected = v.norm(dim=1, keepdim=True)
    assert torch.allclose(H.dist(origin, H.expmap0(v, c), c), expected, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-3, 3), min_size=D, max_size=D),
    st.lists(st.floats(-3, 3), min_size=D, max_size=D),
    st.sampled_from(CURVATURES),
)
def test_triangle_inequality_property(a, b, c):
    x = H.expmap0(torch.tensor([a], dtype=torch.float64), c)
    y = H.expmap0(torch.tensor([b], dtype=torch.float64), c)
    o = H.expmap0(torch.zeros(1, D, dtype=torch.float64), c)
    assert float(H.dist(x, y, c)) <= float(H.dist(x, o, c) + H.dist(o, y, c)) + 1e-9


def test_squared_distance_is_capped_and_pairwise_matches_rowwise():
    c = 1.0
    x, y = _points(7, c, seed=3), _points(5, c, seed=4)
    pair = H.pairwise_sqdist(x, y, c)
    rows = H.sqdist(x.unsqueeze(1), y.unsqueeze(0), c)
    assert pair.shape == (7, 5) and torch.allclose(pair, rows)
    assert torch.allclose(
        H.sqdist(x, x[[1, 2, 3, 4, 5, 6, 0]], c, None),
        H.dist(x, x[[1, 2, 3, 4, 5, 6, 0]], c).squeeze(1) ** 2,
    )
    far = H.expmap0(torch.tensor([[0.0, 20.0, 0, 0, 0, 0]], dtype=torch.float64), c)
    near = H.expmap0(torch.tensor([[0.0, -20.0, 0, 0, 0, 0]], dtype=torch.float64), c)
    assert float(H.sqdist(far, near, c)) == H.MAX_SQDIST
    assert float(H.sqdist(far, near, c, max_sqdist=None)) > H.MAX_SQDIST


@pytest.mark.parametrize("c", (1.0, 2.0))
def test_lorentz_distance_equals_the_poincare_formula(c):
    x, y = _points(50, c, seed=5), _points(50, c, seed=6)
    p, q = H.to_poincare(x, c), H.to_poincare(y, c)
    assert (p.norm(dim=1) < c**-0.5).all()
    assert torch.allclose(H.poincare_dist(p, q, c), H.dist(x, y, c), atol=1e-8)


def test_mobius_identities():
    c = 1.0
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(10, 4, generator=gen, dtype=torch.float64) * 0.4
    q = torch.rand(10, 4, generator=gen, dtype=torch.float64) * 0.4
    zero = torch.zeros_like(p)
    assert torch.allclose(H.mobius_add(zero, p, c), p)
    assert torch.allclose(H.mobius_add(p, zero, c), p)
    assert torch.allclose(H.mobius_add(-p, p, c), zero, atol=1e-12)
    assert torch.allclose(H.mobius_add(-p, H.mobius_add(p, q, c), c), q, atol=1e-12)


def test_gradient_tools_on_the_tangent_space():
    c = 1.5
    x, y = _points(20, c, seed=7), _points(20, c, seed=8)
    g = torch.randn(20, D, dtype=torch.float64)
    r = H.egrad2rgrad(x, g, c)
    zero = torch.zeros(20, 1, dtype=torch.float64)
    assert torch.allclose(H.minkowski_dot(x, r), zero, atol=1e-9)
    v = _tangent_at(x, c)
    moved = H.ptransp(x, y, v, c)
    assert torch.allclose(H.minkowski_dot(y, moved), zero, atol=1e-9)
    assert torch.allclose(H.minkowski_norm(moved), H.minkowski_norm(v), atol=1e-9)
    assert torch.allclose(H.ptransp(x, x, v, c), v, atol=1e-9)


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def test_large_lorentz_coordinates_give_finite_values_and_gradients():
    c = 1.0
    v = torch.zeros(4, D)
    v[:, 1] = torch.tensor([10.0, 14.0, 50.0, 1e4])  # cosh(14) ~ 6e5; beyond 15 is clamped
    v.requires_grad_(True)
    x = H.expmap0(v, c)
    y = H.expmap0(torch.roll(v, 1, dims=1), c)
    out = [x, H.logmap0(x, c), H.dist(x, y, c), H.sqdist(x, y, c), H.logmap(x, y, c)]
    out.append(H.pairwise_sqdist(x, y, c))
    assert all(_finite(t) for t in out)
    sum(t.sum() for t in out).backward()
    assert _finite(v.grad)
    # log(exp(v)) = v holds up to the cosh clamp
    assert torch.allclose(H.logmap0(x, c)[:2, 1], v[:2, 1].detach(), rtol=1e-4)


def test_zero_distance_and_origin_have_finite_gradients():
    c = 1.0
    for dtype in (torch.float32, torch.float64):
        v = torch.zeros(3, D, dtype=dtype, requires_grad=True)
        x = H.expmap0(v, c)
        d = H.dist(x, x, c).sum() + H.sqdist(x, x, c).sum() + H.logmap0(x, c).sum()
        d.backward()
        assert _finite(v.grad) and float(H.dist(x, x, c).detach().max()) < 1e-3


def test_points_near_the_ball_boundary_give_finite_values_and_gradients():
    c = 1.0
    for dtype in (torch.float32, torch.float64):
        direction = torch.nn.functional.normalize(torch.randn(5, 3, dtype=dtype), dim=1)
        p = (direction * (1 - 1e-7)).requires_grad_(True)
        q = (-direction.roll(1, 0) * (1 - 1e-7)).requires_grad_(True)
        d = H.poincare_dist(p, q, c)
        assert _finite(d) and (d > 0).all()
        d.sum().backward()
        assert _finite(p.grad) and _finite(q.grad)
        assert (H.ball_proj(p, c).norm(dim=1) < 1).all()


# ------------------------------------------------------------------ Riemannian SGD


def test_rsgd_first_step_at_the_origin_is_the_exponential_of_the_gradient():
    c, lr = 1.0, 0.1
    x = torch.nn.Parameter(H.expmap0(torch.zeros(2, D, dtype=torch.float64), c))
    g = torch.randn(2, D, dtype=torch.float64)
    x.grad = g.clone()
    RiemannianSGD([x], lr=lr, c=c).step()
    # at o = (1, 0, ...): h = (-g0, g_s), <o, h>_L = g0, so the Riemannian gradient is (0, g_s)
    assert torch.allclose(x.detach(), H.expmap0(-lr * H.proj_tan0(g), c), atol=1e-12)


@pytest.mark.parametrize("momentum", (0.0, 0.9))
def test_rsgd_stays_on_the_manifold_and_minimises_a_distance(momentum):
    c = 2.0
    target = _points(4, c, seed=9, scale=1.0).float()
    x = torch.nn.Parameter(_points(4, c, seed=10, scale=1.0).float())
    opt = RiemannianSGD([x], lr=0.05, c=c, momentum=momentum, weight_decay=0.0)
    start = float(H.sqdist(x, target, c).sum().detach())
    for _ in range(200):
        opt.zero_grad()
        H.sqdist(x, target, c).sum().backward()
        opt.step()
    assert float(H.sqdist(x, target, c).sum().detach()) < 1e-3 * start
    on = H.minkowski_dot(x.detach(), x.detach())
    assert torch.allclose(on, torch.full_like(on, -1 / c), atol=1e-4)
    if momentum:
        buf = opt.state[x]["momentum_buffer"]
        assert torch.allclose(H.minkowski_dot(x.detach(), buf), torch.zeros(4, 1), atol=1e-5)


def test_rsgd_resumes_from_its_state_dict():
    c = 1.0
    target = _points(3, c, seed=11).float()

    def run(steps, x, opt):
        for _ in range(steps):
            opt.zero_grad()
            H.sqdist(x, target, c).sum().backward()
            opt.step()

    a = torch.nn.Parameter(_points(3, c, seed=12).float())
    opt_a = RiemannianSGD([a], lr=0.01, momentum=0.95, weight_decay=1e-3)
    run(6, a, opt_a)
    b = torch.nn.Parameter(_points(3, c, seed=12).float())
    opt_b = RiemannianSGD([b], lr=0.01, momentum=0.95, weight_decay=1e-3)
    run(3, b, opt_b)
    state = opt_b.state_dict()
    b2 = torch.nn.Parameter(b.detach().clone())
    opt_b2 = RiemannianSGD([b2], lr=0.01, momentum=0.95, weight_decay=1e-3)
    opt_b2.load_state_dict(state)
    run(3, b2, opt_b2)
    assert torch.equal(a.detach(), b2.detach())
    assert math.isfinite(float(a.detach().sum()))
