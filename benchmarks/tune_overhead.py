"""Per-trial overhead of ``oodrec tune`` over the same run made with ``oodrec train``.

Both sides train the same configuration into a run directory, in this process, alternating:

* ``train``: ``oodrec.train.loop.train(cfg, dataset, run_dir)``, as ``oodrec train`` does;
* ``tune``: one more trial of an Optuna study (SQLite storage, TPE sampler, median pruner,
  heartbeat) whose search space holds a single value per key, so the trial trains exactly the
  same configuration; its time includes loading the study (``oodrec tune`` does that once per
  study, here once per trial), the trial's storage writes, the per-evaluation ``report`` /
  ``should_prune`` calls and the heartbeat thread.

The dataset is loaded once for both (``oodrec tune`` also loads it once per worker). Medians of
``--repeats`` pairs are printed, with the relative overhead. Run it on an idle machine.

Usage::

    python benchmarks/tune_overhead.py --repeats 5                    # simulator, 20 epochs
    OODREC_DATA=../shared/data python benchmarks/tune_overhead.py --dataset food --epochs 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from oodrec.bench.grid import parse_grid
from oodrec.bench.tune import parse_tune, storage_url, study_jobs, work_on
from oodrec.train.loop import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    base = {
        "data": {"dataset": args.dataset, "on_bad_lines": "skip"},
        "train": {"epochs": args.epochs, "patience": 0, "threads": args.threads, "lr": 0.001},
    }
    grid = {
        "base": base,
        "methods": [{"name": "rns", "sampler": "rns"}],
        "datasets": [args.dataset],
        "seeds": [1],
        # one value per key: the trial trains the same config as the plain run
        "tune": {"trials": 1, "space": {"train.lr": {"choices": [0.001]}}},
    }
    spec = parse_grid(grid, "tune_overhead")
    tune = parse_tune(spec)
    root = Path(tempfile.mkdtemp(prefix="tune_overhead_"))
    jobs = study_jobs(spec, tune, root / "warm", storage_url(root / "warm"))
    cfg = replace(jobs[0].base, out_dir=str(root), name="plain")
    from oodrec.bench.runner import _load_dataset

    dataset = _load_dataset(cfg)  # the cache oodrec tune's trials read from
    assert dataset is _load_dataset(jobs[0].base)
    work_on(jobs[0])  # warm-up: imports, the SQLite schema, the study and its first trial
    t_train, t_tune = [], []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        train(cfg, dataset, run_dir=root / f"plain-{i}")
        t_train.append(time.perf_counter() - t0)
        # one more trial of the same study: a budget of i + 2 finished trials
        job = replace(jobs[0], trials=i + 2)
        t0 = time.perf_counter()
        work_on(job)
        t_tune.append(time.perf_counter() - t0)
        print(f"repeat {i}: train {t_train[-1]:.2f} s, tune trial {t_tune[-1]:.2f} s", flush=True)
    a, b = statistics.median(t_train), statistics.median(t_tune)
    print(
        f"{args.dataset}, {args.epochs} epochs, {args.repeats} pairs: median train {a:.2f} s, "
        f"tune trial {b:.2f} s, overhead {100 * (b - a) / a:+.1f}%"
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
