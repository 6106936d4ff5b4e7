"""What popularity-adjusted scoring adds to an evaluation.

Times one full evaluation (val + IID test + OOD test, as every epoch runs it) of fixed random
embeddings on a dataset, three ways, and prints the medians and the overheads:

* ``plain``: plain scores;
* ``gamma``: popularity-adjusted scores with one fixed gamma (what a run selected with a gamma
  costs at every later evaluation, ``oodrec evaluate`` and ``recommend``);
* ``grid``: plain scores plus the val ranking at every gamma of ``--gammas`` (what each epoch of
  a run with ``eval.adjust_gammas`` costs).

Usage::

    OODREC_DATA=../shared/data python benchmarks/adjust_speed.py --dataset food --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from oodrec.config import apply_overrides
from oodrec.data.dataset import load_dataset
from oodrec.eval.evaluate import Evaluator
from oodrec.experiment import assemble


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="food")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--gammas", default="-2,-1,-0.5,0.5,1,2")
    p.add_argument("--dim", type=int, default=64)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = assemble(None, [f"data.dataset={args.dataset}"])
    if args.dataset == "yelp2018":
        cfg = apply_overrides(cfg, ["data.on_bad_lines=skip"])
    ds = load_dataset(cfg.data)
    ev = Evaluator(ds, cfg.eval, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    users = torch.randn(ds.num_users, args.dim, generator=gen)
    items = torch.randn(ds.num_items, args.dim, generator=gen)

    def scorer(u: torch.Tensor) -> torch.Tensor:
        return users[u] @ items.T

    grid = tuple(float(g) for g in args.gammas.split(","))
    ways = {
        "plain": lambda: ev.evaluate(scorer, keep_per_user=False),
        "gamma": lambda: ev.evaluate(scorer, keep_per_user=False, gamma=grid[-1]),
        "grid": lambda: ev.evaluate(scorer, keep_per_user=False, gammas=grid),
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    for fn in ways.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in ways.items():  # interleaved, so drift hits every way alike
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"dataset={args.dataset} users={ds.num_users} items={ds.num_items} "
        f"threads={torch.get_num_threads()} repeats={args.repeats} grid={list(grid)}"
    )
    for name in ways:
        extra = (med[name] / med["plain"] - 1) * 100
        print(f"{name:6s} {med[name]:.3f} s (median)  {extra:+.1f}% vs plain")
    per = (med["grid"] - med["plain"]) / len(grid) / med["plain"] * 100
    print(f"per gamma of the grid: {per:+.1f}% of a plain evaluation")


if __name__ == "__main__":
    main()
