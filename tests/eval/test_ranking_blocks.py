"""top_items_by_blocks: the gamma grid's top-k, checked against torch.topk."""

from __future__ import annotations

import pytest
import torch

from oodrec.eval.ranking import BLOCK, block_buffer, top_items, top_items_by_blocks


@pytest.mark.parametrize("num_items", [7, 2 * BLOCK * 20 - 1, 6293, BLOCK * 45, BLOCK * 41 + 1])
@pytest.mark.parametrize("kind", ["distinct", "ties", "masked"])
def test_block_top_k_selects_what_topk_selects(num_items, kind):
    gen = torch.Generator().manual_seed(num_items)
    rows = 64
    if kind == "ties":  # few distinct values: which tied item is returned may differ
        x = torch.randint(0, 4, (rows, num_items), generator=gen).float()
    else:  # a random permutation per row: no ties, so the ids must be the same
        x = torch.argsort(torch.rand(rows, num_items, generator=gen), dim=1).float()
    if kind == "masked":
        x[:, ::3] = -torch.inf
        x[0, :-3] = -torch.inf  # a row with fewer finite items than k
    buf = block_buffer(rows, num_items, x.device)
    buf[:, :num_items] = x
    want = top_items(x, 20)
    got = top_items_by_blocks(buf, 20, num_items)
    assert got.shape == want.shape
    assert bool((got < num_items).all())  # never a padding column
    assert torch.equal(x.gather(1, got), x.gather(1, want))  # the same values, best first
    assert (got.sort(1).values.diff(dim=1) > 0).all()  # no item twice
    if kind == "distinct":
        assert torch.equal(got, want)


def test_the_padding_is_minus_infinity():
    buf = block_buffer(3, BLOCK + 5, torch.device("cpu"))
    assert buf.shape == (3, 2 * BLOCK)
    assert bool(torch.isneginf(buf[:, BLOCK + 5 :]).all())
