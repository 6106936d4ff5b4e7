"""Scale benchmark: seconds and memory of LightGCN + RNS / CNSDiff as the data grow.

For each size (millions of training interactions; default 0.1, 0.5, 1 and 3) the scalable
simulator (``oodrec.data.synthetic_large``) writes a dataset whose users and items grow as in
real data, ``(N / 3M) ** 0.75`` times 50k users x 40k items. Each (size, sampler) is then measured
in a fresh subprocess: seconds per training batch (median-free mean over ``--batches`` batches
after a warm-up of 2 batches; one batch is a full-graph propagation, sampling, loss, backward and
step), seconds per epoch **extrapolated** from it (``s/batch * ceil(train / batch size)``), one
evaluation of val + IID test + OOD test, and the subprocess's peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``: loading, graph, training and evaluation).

Normalised columns: seconds per batch per million training edges (user-item pairs of the graph;
its adjacency holds two non-zeros per edge), and evaluation seconds per million ranked scores
(``sum over the three splits of evaluated users x items``). A constant normalised column means
linear growth.

On CUDA (``--device cuda``; default sizes 0.1, 0.3, 1, 3 and 10) each size also gets the peak GPU
memory of its subprocess (``torch.cuda.max_memory_allocated`` and ``max_memory_reserved``; a
fresh subprocess per size and sampler, counters reset before loading), and a size that runs out
of GPU memory ends the benchmark cleanly: the sizes measured so far are written, with the
largest size that fits and the one that did not.

Writes ``scale.csv``, ``scale.md`` and a log-log ``scale.png`` to ``--out`` (after every size,
so that an interrupted run keeps what it measured; no PNG without matplotlib).

Usage::

    python benchmarks/scale.py                              # all sizes (long: run on an idle box)
    python benchmarks/scale.py --sizes 0.1 --out /tmp/scale_try
    python benchmarks/scale.py --sizes 0.1,0.5 --data-root /tmp/scale_data --device cuda
    python benchmarks/scale.py --device cuda --dry-run      # the sizes and shapes only
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULL = (50_000, 40_000, 3_000_000)  # users, items, training interactions of the largest size
GROWTH = 0.75  # users and items grow as interactions ** 0.75 (density falls as data grow)
COLUMNS = (
    "size_m", "users", "items", "train", "sampler", "batch_size", "batches_measured",
    "s_per_batch", "s_per_epoch_extrapolated", "s_per_batch_per_m_edges", "eval_s",
    "eval_scores_m", "eval_s_per_m_scores", "peak_rss_gb", "load_s", "generate_s",
)  # fmt: skip
GPU_COLUMNS = ("peak_gpu_gb", "peak_gpu_reserved_gb")  # CUDA runs only
CPU_SIZES = "0.1,0.5,1,3"
CUDA_SIZES = "0.1,0.3,1,3,10"
OOM_EXIT = 3  # a worker that ran out of GPU memory


class OutOfGpuMemory(RuntimeError):
    """A measurement ran out of GPU memory (the size does not fit the card)."""


def shape_of(size_m: float) -> tuple[int, int, int]:
    """Users, items and training interactions of a size given in millions of interactions."""
    scale = size_m * 1e6 / FULL[2]
    return round(FULL[0] * scale**GROWTH), round(FULL[1] * scale**GROWTH), round(size_m * 1e6)


# ------------------------------------------------------------------------------ the adapter


def time_trainer(cfg, dataset, batches: int) -> dict[str, float]:
    """Seconds per training batch and per evaluation, through the Trainer.

    The one place that touches the training-loop API: ``Trainer(cfg, dataset)``, its epoch and
    evaluation calls, and its per-epoch batch iterator, which is cut to ``batches`` batches so
    that an "epoch" here is that many batches. Fix this function if that API changes.
    """
    import torch

    from oodrec.train.loop import Trainer

    trainer = Trainer(cfg, dataset)
    train_epoch = getattr(trainer, "train_epoch", None) or trainer._train_epoch
    evaluate = getattr(trainer, "evaluate", None) or trainer._evaluate
    owner = getattr(trainer, "method", trainer)  # batches: on the method, formerly the Trainer
    name = "batches" if hasattr(owner, "batches") else "_batches"
    full_epoch = getattr(owner, name)
    limit = [2]
    setattr(owner, name, lambda *a, **k: itertools.islice(full_epoch(*a, **k), limit[0]))
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    train_epoch(0)  # warm-up: first-call allocations and kernel selection
    limit[0] = batches
    sync()
    t0 = time.perf_counter()
    train_epoch(1)
    sync()
    per_batch = (time.perf_counter() - t0) / batches
    t0 = time.perf_counter()
    evaluate()
    sync()
    return {"s_per_batch": per_batch, "eval_s": time.perf_counter() - t0}


# ------------------------------------------------------------------------------ worker


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is CUDA running out of memory (torch's own error, or a CUDA / cuSPARSE /
    cuBLAS error that says so)."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and "out of memory" in text


def worker(args: argparse.Namespace) -> int:
    """Measure one (dataset, sampler) and print one JSON line (runs in a fresh subprocess);
    on CUDA out of memory, print an ``OOM`` line and exit with ``OOM_EXIT``."""
    try:
        return _worker(args)
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
        if not is_oom(exc):
            raise
        print("OOM " + json.dumps({"error": str(exc).splitlines()[0][:300]}), flush=True)
        return OOM_EXIT


def _worker(args: argparse.Namespace) -> int:
    import torch

    from oodrec.config import SPLITS, ExperimentConfig, apply_overrides
    from oodrec.data.dataset import load_dataset

    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    overrides = [
        f"data.dataset={args.data}",
        f"sampler.name={args.sampler}",
        f"train.device={args.device}",
        f"train.batch_size={args.batch_size}",
        f"train.threads={args.threads}",
        "train.fhn_batches=0",
        f"seed={args.seed}",
    ]
    cfg = apply_overrides(ExperimentConfig(), overrides)
    t0 = time.perf_counter()
    dataset = load_dataset(cfg.data)
    load_s = time.perf_counter() - t0
    timing = time_trainer(cfg, dataset, args.batches)
    ranked = sum(int(dataset.splits[s].users.unique().numel()) for s in SPLITS)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    row = {
        "users": dataset.num_users,
        "items": dataset.num_items,
        "train": len(dataset.train),
        "load_s": load_s,
        "eval_scores_m": ranked * dataset.num_items / 1e6,
        "peak_rss_gb": peak_kb * 1024 / 1e9,
        **timing,
    }
    if cuda:
        row["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1e9
        row["peak_gpu_reserved_gb"] = torch.cuda.max_memory_reserved() / 1e9
    print("RESULT " + json.dumps(row), flush=True)
    return 0


def measure(data: Path, sampler: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--data", str(data), "--sampler", sampler]
    for flag in ("batches", "batch_size", "device", "threads", "seed"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    oom = [ln for ln in out.stdout.splitlines() if ln.startswith("OOM ")]
    if out.returncode == OOM_EXIT and oom:
        raise OutOfGpuMemory(json.loads(oom[-1][len("OOM ") :])["error"])
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"worker {sampler} on {data} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


# ------------------------------------------------------------------------------ outputs


def write_outputs(
    rows: list[dict], out: Path, args: argparse.Namespace, oom: str | None = None
) -> None:
    """``scale.csv``, ``scale.md`` and ``scale.png`` of the rows so far; ``oom``: the line
    saying which size ran out of GPU memory (None: none did)."""
    gpu = args.device.startswith("cuda")
    columns = COLUMNS + (GPU_COLUMNS if gpu else ())
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "scale.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: r.get(k) for k in columns} for r in rows)
    head = (
        "| size (M) | users | items | train | sampler | s/batch | s/epoch* | s/batch per M "
        "edges | eval s | eval s per M scores | peak RSS (GB) |"
    ) + (" peak GPU (GB) |" if gpu else "")
    lines = [
        f"# Scale: LightGCN on the scalable simulator ({args.device}, batch {args.batch_size}, "
        f"torch threads {args.threads or 'default'}, {os.cpu_count()} cores)",
        "",
        head,
        "|" + "--:|" * (head.count("|") - 1),
    ]
    for r in rows:
        lines.append(
            f"| {r['size_m']:g} | {r['users']:,} | {r['items']:,} | {r['train']:,} | "
            f"{r['sampler']} | {r['s_per_batch']:.3g} | {r['s_per_epoch_extrapolated']:.3g} | "
            f"{r['s_per_batch_per_m_edges']:.3g} | {r['eval_s']:.3g} | "
            f"{r['eval_s_per_m_scores']:.3g} | {r['peak_rss_gb']:.2f} |"
            + (f" {r['peak_gpu_gb']:.2f} |" if gpu else "")
        )
    lines += [
        "",
        f"\\* s/epoch is **extrapolated** from {args.batches} measured batches (after 2 warm-up "
        "batches): s/batch x ceil(train / batch size). Eval: one pass over val + IID test + OOD "
        "test; scores = sum over the splits of evaluated users x items. Peak RSS: the measuring "
        "subprocess (loading, graph, training, evaluation)."
        + (
            " Peak GPU: torch.cuda.max_memory_allocated of that subprocess (reserved by the "
            "caching allocator: scale.csv)."
            if gpu
            else ""
        ),
    ]
    if oom is not None:
        lines += ["", oom]
    (out / "scale.md").write_text("\n".join(lines) + "\n")
    if rows:
        plot(rows, out / "scale.png")


def plot(rows: list[dict], path: Path) -> None:
    """Log-log curves of s/batch, s/epoch, eval seconds and peak memory against interactions."""
    try:
        import matplotlib
    except ImportError:
        print(f"no {path.name}: matplotlib is not installed", file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        sub = [r for r in rows if r["sampler"] == sampler]
        x = [r["train"] for r in sub]
        left.plot(x, [r["s_per_batch"] for r in sub], "o-", label=f"{sampler}: s/batch")
        epoch = [r["s_per_epoch_extrapolated"] for r in sub]
        left.plot(x, epoch, "s--", label=f"{sampler}: s/epoch*")
        right.plot(x, [r["peak_rss_gb"] for r in sub], "o-", label=f"{sampler}: peak RSS (GB)")
    first = [r for r in rows if r["sampler"] == rows[0]["sampler"]]
    x = [r["train"] for r in first]
    left.plot(x, [r["eval_s"] for r in first], "^-", label="eval s (val+IID+OOD)")
    left.plot(x, [first[0]["s_per_batch"] * xi / x[0] for xi in x], ":", c="gray", label="linear")
    for ax, title in ((left, "seconds"), (right, "memory")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training interactions")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("* s/epoch extrapolated from the measured batches", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------ main


def parse_sizes(text: str) -> list[float]:
    """Sizes in millions of training interactions from ``0.1,0.5``; each must be > 0."""
    try:
        sizes = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(
            f"--sizes takes comma-separated numbers (millions), got {text!r}"
        ) from None
    if not sizes or any(s <= 0 for s in sizes):
        raise SystemExit(f"--sizes takes numbers > 0 (millions of interactions), got {text!r}")
    return sizes


def run(args: argparse.Namespace) -> int:
    from oodrec.data.synthetic_large import LargeSyntheticConfig, generate_large

    sizes = parse_sizes(args.sizes)
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    out = Path(args.out)
    if args.dry_run:
        print(f"device {args.device}; samplers {', '.join(samplers)}; out {out}")
        for size in sizes:
            users, items, train = shape_of(size)
            print(f"{size:g}M: {users:,} users x {items:,} items, {train:,} training interactions")
        return 0
    rows: list[dict] = []
    fits: float | None = None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data_root or tmp)
        for size in sizes:
            users, items, train = shape_of(size)
            data = root / f"sim_{size:g}M_seed{args.seed}"
            t0 = time.perf_counter()
            if not (data / "test_ood.txt").is_file():
                cfg = LargeSyntheticConfig(users, items, train, seed=args.seed)
                generate_large(data, cfg, overwrite=True)
            generate_s = time.perf_counter() - t0
            print(f"{size:g}M: {users:,} users x {items:,} items ({generate_s:.1f} s to generate)")
            for sampler in samplers:
                try:
                    got = measure(data, sampler, args)
                except OutOfGpuMemory as exc:
                    largest = "none" if fits is None else f"{fits:g}M"
                    oom = (
                        f"**{size:g}M ({sampler}) ran out of GPU memory** ({exc}); the largest "
                        f"size that fits: {largest}. Larger sizes were not tried."
                    )
                    print(oom.replace("**", ""))
                    write_outputs(rows, out, args, oom)
                    print(f"wrote {out / 'scale.md'}, {out / 'scale.csv'}")
                    return 0
                got.update(size_m=size, sampler=sampler, generate_s=generate_s)
                got.update(batch_size=args.batch_size, batches_measured=args.batches)
                got["s_per_epoch_extrapolated"] = got["s_per_batch"] * math.ceil(
                    got["train"] / args.batch_size
                )
                got["s_per_batch_per_m_edges"] = got["s_per_batch"] / (got["train"] / 1e6)
                got["eval_s_per_m_scores"] = got["eval_s"] / got["eval_scores_m"]
                rows.append(got)
                print(
                    f"  {sampler}: {got['s_per_batch']:.3g} s/batch, "
                    f"{got['s_per_epoch_extrapolated']:.3g} s/epoch (extrapolated from "
                    f"{args.batches} batches), eval {got['eval_s']:.3g} s, "
                    f"peak RSS {got['peak_rss_gb']:.2f} GB"
                    + (f", peak GPU {got['peak_gpu_gb']:.2f} GB" if "peak_gpu_gb" in got else "")
                )
                write_outputs(rows, out, args)
            fits = size
    if fits is not None and args.device.startswith("cuda"):
        print(f"every size fits on {args.device}; the largest: {fits:g}M")
    print(f"wrote {out / 'scale.md'}, {out / 'scale.csv'}, {out / 'scale.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n  python benchmarks/scale.py --sizes 0.1 --out /tmp/scale_try\n"
        "  python benchmarks/scale.py --device cuda --out results/scale_gpu   # 0.1M..10M\n"
        "  python benchmarks/scale.py --device cuda --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        help=f"millions of training interactions, comma-separated (default {CPU_SIZES}; on "
        f"CUDA {CUDA_SIZES}: the first size that runs out of GPU memory ends the run)",
    )
    parser.add_argument("--samplers", default="rns,cnsdiff", help="comma-separated samplers")
    parser.add_argument("--out", default="results/scale", help="output directory")
    parser.add_argument("--data-root", help="keep generated datasets here (default: temporary)")
    parser.add_argument("--batches", type=int, default=10, help="measured batches per run")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per measurement")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the sizes and their shapes; measure nothing"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--sampler", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = CUDA_SIZES if args.device.startswith("cuda") else CPU_SIZES
    return worker(args) if args.worker else run(args)


if __name__ == "__main__":
    raise SystemExit(main())
