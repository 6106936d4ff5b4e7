"""``benchmarks/speed_floor.py``: the product log counts what autograd runs (hand-counted FLOPs
of a dense and a sparse product, forward and backward), and a tiny end-to-end run prints a row
per method (and draws the figure)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from oodrec.models.lightgcn import symmetric_spmm

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def floor(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the script imports its sibling method_speed
    spec = importlib.util.spec_from_file_location("speed_floor", BENCH / "speed_floor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("method_speed", None)


def test_dense_products_forward_and_backward(floor):
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(3, 5, requires_grad=True)
    log = floor.ProductLog()
    with log:
        (a @ b).sum().backward()
    # forward a@b, backward g@b^T and a^T@g: three products of 2*4*3*5 = 120 FLOPs each
    assert sum(log.count.values()) == 3
    assert sum(log.flops.values()) == 3 * 120
    for func, ops, kwargs in log.calls.values():
        assert floor.replay_seconds(func, ops, 2, kwargs) >= 0


def test_scaled_products_count(floor):
    """``addmm(..., alpha=c)`` (CNSDiff's reverse step) is the same product: it counts."""
    bias, a, b = torch.randn(4, 5), torch.randn(4, 3), torch.randn(3, 5)
    log = floor.ProductLog()
    with log:
        torch.addmm(bias, a, b, alpha=0.5)
    assert sum(log.flops.values()) == log.dense_flops() == 120
    ((func, ops, kwargs),) = log.calls.values()
    assert kwargs == {"alpha": 0.5}
    assert torch.equal(func(*ops, **kwargs), torch.addmm(bias, a, b, alpha=0.5))


def test_sparse_products_count_stored_values(floor):
    adj = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 2.0], [0.0, 2.0, 0.0]]).to_sparse_csr()
    x = torch.randn(3, 7, requires_grad=True)
    log = floor.ProductLog()
    with log:
        symmetric_spmm(adj, x).sum().backward()  # LightGCN's product: the backward is adj @ g
    assert all(key[1][0][0] == "sparse_csr" for key in log.flops)
    assert sum(log.count.values()) == 2
    assert sum(log.flops.values()) == 2 * (2 * 4 * 7)  # twice: 4 stored values, 7 columns
    assert log.dense_flops() == 0


def test_tiny_run_prints_every_method(floor, tiny_dir, tmp_path, capsys):
    png = tmp_path / "floor.png"
    floor.main(
        ["--dataset", str(tiny_dir), "--methods", "lightgcn:rns", "lightgcn:cnsdiff"]
        + ["--repeats", "1", "--set", "train.batch_size=32", "--set", "train.threads=1"]
        + ["--figure", str(png)]
    )
    assert png.stat().st_size > 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out[2:]}
    assert set(rows) == {"lightgcn:rns", "lightgcn:cnsdiff"}
    assert float(rows["lightgcn:rns"][2]) == 0.0  # LightGCN + RNS has only sparse products
    assert float(rows["lightgcn:cnsdiff"][2]) > 0.0  # the chain's and alignment's products
    assert all(len(row) == 9 for row in rows.values())
