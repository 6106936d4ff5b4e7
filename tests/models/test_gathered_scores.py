"""``gathered_scores``: the transposed product gives the plain product's scores and gradients,
to rounding at every shape, bit for bit at Food's batch shape on the CPU BLAS (small products
take other kernels, whose sums may differ in the last bit)."""

from __future__ import annotations

import pytest
import torch

from oodrec.models.base import gathered_scores


@pytest.mark.parametrize("rows, items", [(7, 5), (256, 1000), (1024, 6293)])
def test_same_scores_and_gradients_as_the_plain_product(rows, items):
    exact = (rows, items) == (1024, 6293)  # PSL's and BC loss's batch on Food
    gen = torch.Generator().manual_seed(rows)
    u0 = torch.randn(rows, 64, generator=gen)
    v0 = torch.randn(items, 64, generator=gen)
    negs = torch.randint(items, (rows, 13), generator=gen)
    weights = torch.randn(rows, 13, generator=gen)
    out = []
    for form in (lambda u, v: u @ v.T, gathered_scores):
        u, v = u0.clone().requires_grad_(), v0.clone().requires_grad_()
        scores = form(u, v)
        (scores.gather(1, negs) * weights).sum().backward()
        out.append((scores.detach(), u.grad, v.grad))
    assert out[1][0].shape == (rows, items)
    for plain, transposed in zip(*out):
        if exact:
            assert torch.equal(plain, transposed)
        torch.testing.assert_close(transposed, plain, rtol=1e-6, atol=1e-5)
