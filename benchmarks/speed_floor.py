"""A lower bound on each method's epoch: the time of its matrix products alone.

For every method this script records one training epoch's matrix products (``mm``, ``addmm``,
``bmm``, ``baddbmm``; dense, and the sparse graph products of the propagation), forward and
backward, by shape. It then replays each distinct product on its recorded operands on this
machine (median of ``--repeats``) and sums count x time. No implementation of the method's
algorithm that keeps these products (and so its numbers) can run an epoch faster than that sum:
everything else it does (elementwise work, sampling, the optimiser, Python) only adds to it.
Products replayed alone run with warm caches, and a product torch runs through another operator
is not counted: both only make the bound lower.

Printed per method: the batch size, the dense GFLOP per epoch, the floor in seconds and
relative to LightGCN + RNS's *measured* epoch (the ratio the speed targets use), the measured
epoch (median of ``--repeats``, after one warm-up epoch), the share of it the products take, and
the rest per batch ("other": elementwise work, sampling, optimiser, Python).
A floor ratio above a target means the target needs a different algorithm (other products:
another batch size, fewer candidates), not a faster implementation.

Usage::

    OODREC_DATA=../shared/data python benchmarks/speed_floor.py --dataset food
    python benchmarks/speed_floor.py --methods lightgcn:rns lightgcn:cnsdiff psl bc
    python benchmarks/speed_floor.py --figure results/speed_floor_food.png
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

import torch
from method_speed import method_arguments, method_config, methods_and_dataset, timed_epochs
from torch.utils._python_dispatch import TorchDispatchMode

from oodrec.train.loop import Trainer

DEFAULT_METHODS = (
    "lightgcn:rns",
    "lightgcn:cnsdiff",
    "invcf",
    "advinfonce",
    "hdrm@model.allow_untrained_backbone=true",
    "lightgcn:rns@train.batch_size=1024",
    "pda",
    "psl",
    "bc@model.freeze_epoch=0",
    "drgo",
)
PRODUCTS = {"mm", "addmm", "bmm", "baddbmm"}


def _flops(name: str, args: tuple) -> int:
    """Multiply-adds x 2 of a product; a sparse left operand counts its stored values."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    a, b = tensors[-2], tensors[-1]
    if a.layout != torch.strided:
        return 2 * a._nnz() * b.shape[-1]
    if name in ("bmm", "baddbmm"):
        return 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    return 2 * a.shape[0] * a.shape[1] * b.shape[1]


def _key(name: str, args: tuple, kwargs: dict) -> tuple:
    """(op, the tensor operands' (layout, shape, strides), the scalar arguments)."""
    operands = tuple(
        (
            str(a.layout).removeprefix("torch."),
            tuple(a.shape),
            a.stride() if a.layout == torch.strided else None,
        )
        for a in args
        if isinstance(a, torch.Tensor)
    )
    return name, operands, tuple(sorted(kwargs.items()))


class ProductLog(TorchDispatchMode):
    """Counts matrix products by (op, operand layouts, shapes, strides, scalar arguments such as
    ``alpha``) and keeps the first operands of each, detached, for the replay."""

    def __init__(self) -> None:
        super().__init__()
        self.count: Counter = Counter()
        self.flops: Counter = Counter()
        self.calls: dict[tuple, tuple] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in PRODUCTS and "out" not in kwargs:  # alpha / beta scale the same product
            key = _key(name, args, kwargs)
            self.count[key] += 1
            self.flops[key] += _flops(name, args)
            if key not in self.calls:
                detached = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
                self.calls[key] = (func, detached, dict(kwargs))
        return func(*args, **kwargs)

    def dense_flops(self) -> int:
        """FLOPs of the products whose operands are all dense."""
        return sum(v for k, v in self.flops.items() if all(p[0] == "strided" for p in k[1]))


def replay_seconds(func, args: tuple, repeats: int, kwargs: dict | None = None) -> float:
    kwargs = kwargs or {}
    func(*args, **kwargs)  # warm
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        func(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_batches(trainer: Trainer) -> list[int]:
    """Counts the batches the method yields from now on (in element 0 of the returned list)."""
    seen = [0]
    batches = trainer.method.batches

    def counting(*a, **k):
        for batch in batches(*a, **k):
            seen[0] += 1
            yield batch

    trainer.method.batches = counting
    return seen


def measure(spec: str, dataset, args: argparse.Namespace) -> dict[str, float]:
    cfg = method_config(spec, args)
    trainer = Trainer(cfg, dataset)
    epochs = timed_epochs(trainer, 1, args.repeats)  # epoch 0 untimed
    batches = count_batches(trainer)
    log = ProductLog()
    with log:
        trainer.train_epoch(1 + args.repeats)
    floor = sum(
        log.count[k] * replay_seconds(func, ops, args.repeats, kw)
        for k, (func, ops, kw) in log.calls.items()
    )
    return {
        "batch": cfg.train.batch_size,
        "epoch": statistics.median(epochs),
        "floor": floor,
        "dense_gflop": log.dense_flops() / 1e9,
        "batches": batches[0],
    }


def figure(rows: dict[str, dict[str, float]], path: str, title: str) -> None:
    """Stacked bars per method, in LightGCN + RNS epochs: the products' floor and the rest of the
    measured epoch, with the 2x and 3x marks of the speed targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = rows["lightgcn:rns"]["epoch"]
    names = list(rows)[::-1]  # first method on top
    floor = [rows[n]["floor"] / base for n in names]
    other = [max(rows[n]["epoch"] - rows[n]["floor"], 0.0) / base for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(names) + 1.4))
    ax.barh(names, floor, color="#4c72b0", label="matrix products (floor)")
    ax.barh(names, other, left=floor, color="#dd8452", label="everything else")
    for x in (2, 3):
        ax.axvline(x, color="black", linestyle="--", linewidth=0.8)
    ax.set_xlabel("seconds per epoch / LightGCN + RNS epoch (same run)")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    method_arguments(parser, DEFAULT_METHODS)
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs; replays per product")
    parser.add_argument("--figure", metavar="PNG", help="also draw the table as stacked bars")
    args = parser.parse_args(argv)
    args.device = "cpu"
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    names, dataset = methods_and_dataset(args)
    rows = {spec: measure(spec, dataset, args) for spec in names}
    base = rows["lightgcn:rns"]["epoch"]
    print(f"dataset={dataset.name} threads={torch.get_num_threads()} repeats={args.repeats}")
    print(
        f"{'method':<44}{'batch':>6}{'dense GF':>10}{'floor s':>9}{'floor xRNS':>11}"
        f"{'epoch s':>9}{'x RNS':>7}{'products':>10}{'other ms/batch':>16}"
    )
    for spec, r in rows.items():
        print(
            f"{spec:<44}{r['batch']:>6}{r['dense_gflop']:>10.1f}{r['floor']:>9.3f}"
            f"{r['floor'] / base:>11.2f}{r['epoch']:>9.3f}{r['epoch'] / base:>7.2f}"
            f"{r['floor'] / r['epoch']:>10.0%}"
            f"{1e3 * (r['epoch'] - r['floor']) / max(r['batches'], 1):>16.1f}"
        )
    if args.figure:
        threads = torch.get_num_threads()
        figure(rows, args.figure, f"{dataset.name}, CPU, {threads} threads: epoch = floor + rest")


if __name__ == "__main__":
    main()
