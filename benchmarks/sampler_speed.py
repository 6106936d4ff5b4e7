"""Seconds per training epoch of each negative sampler on a real dataset, relative to RNS.

Each sampler trains LightGCN (dim 64, 2 layers, batch 2048, Adam lr 0.01) from the same seed;
only the training epoch is timed (``Trainer.train_epoch``: propagation, sampling, loss,
backward and step; no evaluation, no diagnostics).

Usage::

    PYTHONPATH=src python benchmarks/sampler_speed.py --repeats 3
    OODREC_DATA=/path/to/data python benchmarks/sampler_speed.py --samplers rns dns --device cuda
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from oodrec.config import DataConfig, ExperimentConfig, ModelConfig, SamplerConfig, TrainConfig
from oodrec.data.dataset import load_dataset
from oodrec.samplers import SAMPLERS
from oodrec.train.loop import Trainer

DEFAULT_SAMPLERS = ("rns", "dns", "mixgcf", "ahns", "pns", "dmns", "cnsdiff")


def time_sampler(
    name: str, dataset, args: argparse.Namespace
) -> tuple[list[float], dict[str, float]]:
    """Per-epoch seconds of ``repeats`` timed epochs (after ``warmup`` untimed ones)."""
    cfg = ExperimentConfig(
        data=DataConfig(dataset=args.dataset, data_dir=args.data_dir),
        model=ModelConfig(emb_dim=64, num_layers=2),
        sampler=SamplerConfig(name=name),
        train=TrainConfig(
            epochs=args.warmup + args.repeats,
            batch_size=2048,
            lr=0.01,
            fhn_batches=0,
            device=args.device,
            threads=args.threads,
        ),
        seed=args.seed,
    )
    trainer = Trainer(cfg, dataset, run_dir=None)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    seconds, last = [], {}
    for epoch in range(args.warmup + args.repeats):
        sync()
        t0 = time.perf_counter()
        last = trainer.train_epoch(epoch)
        sync()
        if epoch >= args.warmup:
            seconds.append(time.perf_counter() - t0)
    return seconds, last


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="food", help="registered dataset name or directory")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("OODREC_DATA", "/work/shared/data"),
        help="data directory (default: $OODREC_DATA or /work/shared/data)",
    )
    parser.add_argument("--samplers", nargs="+", default=list(DEFAULT_SAMPLERS))
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per sampler")
    parser.add_argument("--warmup", type=int, default=0, help="untimed epochs per sampler")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--seed", type=int, default=2025)
    args = parser.parse_args(argv)
    for name in args.samplers:
        SAMPLERS.get(name)  # fail early on a typo
    names = ["rns"] + [n for n in args.samplers if n != "rns"]

    dataset = load_dataset(DataConfig(dataset=args.dataset, data_dir=args.data_dir))
    print(
        f"dataset {dataset.name}: {dataset.num_users} users, {dataset.num_items} items, "
        f"{len(dataset.train)} train pairs; device {args.device}, "
        f"threads {args.threads or torch.get_num_threads()}, torch {torch.__version__}"
    )
    print(f"{'sampler':<10}{'median s/epoch':>16}{'min':>9}{'max':>9}{'x rns':>8}{'loss':>9}")
    base = None
    for name in names:
        seconds, last = time_sampler(name, dataset, args)
        med = statistics.median(seconds)
        base = med if base is None else base
        print(
            f"{name:<10}{med:>16.3f}{min(seconds):>9.3f}{max(seconds):>9.3f}"
            f"{med / base:>8.2f}{last['loss']:>9.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
