"""Seconds per training epoch (and per evaluation) of each method, relative to LightGCN + RNS,
all measured in one run of this script on one dataset.

A method is ``MODEL`` or ``lightgcn:SAMPLER``, optionally followed by ``@KEY=VALUE,...``
settings of its own (e.g. ``hdrm@model.allow_untrained_backbone=true``: stage 2 timed on an
untrained backbone, which costs the same per epoch). Each trains from the same seed with its
resolved defaults (the settings a method implies, e.g. DiffRec's batch of 400, are applied as
``oodrec train`` applies them); after ``--warmup`` untimed epochs, ``--repeats`` epochs are
timed, then ``--repeats`` evaluations of val + IID test + OOD test. Medians are printed.

Usage::

    OODREC_DATA=../shared/data python benchmarks/method_speed.py --dataset food --repeats 5
    python benchmarks/method_speed.py --methods lightgcn:rns diffrec --set train.threads=1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from oodrec.config import ExperimentConfig, apply_overrides
from oodrec.data.dataset import load_dataset
from oodrec.methods import check_method_config, implied_overrides
from oodrec.train.loop import Trainer

DEFAULT_METHODS = ("lightgcn:rns", "lightgcn:cnsdiff", "diffrec")


def method_config(spec: str, args: argparse.Namespace) -> ExperimentConfig:
    spec, _, own = spec.partition("@")
    model, _, sampler = spec.partition(":")
    cfg = ExperimentConfig()
    base = [f"data.dataset={args.dataset}", f"model.name={model}", f"seed={args.seed}"]
    base += [f"train.device={args.device}", "train.fhn_batches=0"]
    if args.data_dir:
        base.append(f"data.data_dir={args.data_dir}")
    if args.dataset == "yelp2018":
        base.append("data.on_bad_lines=skip")
    if sampler:
        base.append(f"sampler.name={sampler}")
    cfg = apply_overrides(cfg, base)
    explicit = {o.split("=", 1)[0] for o in [*args.set, *own.split(",")] if o}
    implied = [f"{k}={v}" for k, v in implied_overrides(cfg).items() if k not in explicit]
    own_sets = [x for x in own.split(",") if x]
    cfg = apply_overrides(cfg, implied + list(args.set) + own_sets)
    check_method_config(cfg)
    return cfg


def device_sync(trainer: Trainer):
    """A function that waits for the trainer's device (a no-op on the CPU)."""
    return torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)


def timed_epochs(trainer: Trainer, warmup: int, repeats: int) -> list[float]:
    """Seconds of epochs ``warmup`` .. ``warmup + repeats - 1``, after ``warmup`` untimed ones."""
    sync = device_sync(trainer)
    epochs = []
    for epoch in range(warmup + repeats):
        sync()
        t0 = time.perf_counter()
        trainer.train_epoch(epoch)
        sync()
        if epoch >= warmup:
            epochs.append(time.perf_counter() - t0)
    return epochs


def time_method(spec: str, dataset, args: argparse.Namespace) -> dict[str, float]:
    cfg = method_config(spec, args)
    trainer = Trainer(cfg, dataset)
    sync = device_sync(trainer)
    epochs = timed_epochs(trainer, args.warmup, args.repeats)
    evals = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        trainer.evaluate()
        sync()
        evals.append(time.perf_counter() - t0)
    return {
        "epoch": statistics.median(epochs),
        "eval": statistics.median(evals),
        "batch": cfg.train.batch_size,
        "threads": torch.get_num_threads(),
        "runs": epochs,
    }


def method_arguments(parser: argparse.ArgumentParser, methods: tuple[str, ...]) -> None:
    """The options shared with ``speed_floor.py``: dataset, data directory, methods, seed, sets."""
    parser.add_argument("--dataset", default="food")
    parser.add_argument("--data-dir", default=os.environ.get("OODREC_DATA"))
    parser.add_argument("--methods", nargs="+", default=list(methods))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")


def methods_and_dataset(args: argparse.Namespace):
    """LightGCN + RNS (the reference of every ratio) first, then the other methods; every spec is
    checked before the data load, so a typo fails at once."""
    names = ["lightgcn:rns"] + [m for m in args.methods if m != "lightgcn:rns"]
    for spec in names:
        method_config(spec, args)
    return names, load_dataset(method_config(names[0], args).data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    method_arguments(parser, DEFAULT_METHODS)
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs and evaluations")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs first")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    names, dataset = methods_and_dataset(args)
    rows = {spec: time_method(spec, dataset, args) for spec in names}
    base = rows["lightgcn:rns"]["epoch"]
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"dataset={dataset.name} device={dev} repeats={args.repeats} warmup={args.warmup}")
    print(f"{'method':<20}{'batch':>6}{'thr':>4}{'s/epoch':>10}{'x RNS':>8}{'s/eval':>9}  runs")
    for spec, r in rows.items():
        runs = " ".join(f"{x:.2f}" for x in r["runs"])
        print(
            f"{spec:<20}{r['batch']:>6}{r['threads']:>4}{r['epoch']:>10.3f}"
            f"{r['epoch'] / base:>8.2f}{r['eval']:>9.3f}  [{runs}]"
        )


if __name__ == "__main__":
    main()
