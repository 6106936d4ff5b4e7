"""Ablation, alpha/beta (Beta mix schedule) and runtime tables, and shared table helpers.

Ablation: families of runs equal but for CNSDiff's switches ``mixup`` / ``align`` / ``causal``
(rows ``full``, ``w/o align``, ...). Alpha/beta: families equal but for ``initial_alpha``,
``initial_beta``, ``final_alpha``, ``final_beta``. Runtime: median seconds per training epoch
and per evaluation with the recorded machine, device and threads, and for CUDA runs of
``oodrec bench`` their GPU's mean utilisation and peak memory (``bench.json``). Tables are
built for the runs of one selection label.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable

from oodrec.bench.records import ABLATION_KEYS, BETA_KEYS, RunRecord, derived_label
from oodrec.bench.render import Cell, Table, rank_styles
from oodrec.bench.stats import mean_std

logger = logging.getLogger(__name__)

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
SHORT = {"recall@10": "R@10", "recall@20": "R@20", "ndcg@10": "N@10", "ndcg@20": "N@20"}
SPLITS = {"ood_test": "OOD test", "iid_test": "IID test"}
VARIANT_COLUMNS = (
    ("ood_test", "recall@20"),
    ("ood_test", "ndcg@20"),
    ("iid_test", "recall@20"),
    ("iid_test", "ndcg@20"),
)


def fmt_mean_std(values: list[float]) -> str:
    """``0.0428 ± 0.0012`` (just the mean for one value)."""
    mean, std = mean_std(values)
    return f"{mean:.4f}" if len(values) == 1 else f"{mean:.4f} ± {std:.4f}"


def seed_values(runs: list[RunRecord], split: str, metric: str) -> dict[int, float]:
    """Seed -> metric value (first run by path wins when a seed repeats)."""
    out: dict[int, float] = {}
    for run in runs:
        value = run.metric(split, metric)
        if value is None:
            continue
        if run.seed in out:
            logger.warning("%s repeats seed %d of its group; ignored", run.path, run.seed)
            continue
        out[run.seed] = value
    return out


def group_by(runs: list[RunRecord], key: Callable[[RunRecord], str]) -> dict[str, list[RunRecord]]:
    """Runs grouped by ``key(run)``, in first-seen order."""
    out: dict[str, list[RunRecord]] = {}
    for run in runs:
        out.setdefault(key(run), []).append(run)
    return out


def mean_of(values: dict[int, float]) -> float | None:
    """Mean of seed values (None when empty)."""
    return statistics.fmean(values.values()) if values else None


# --------------------------------------------------------------------------- variant tables


def variant_table(
    title: str,
    kind: str,
    families: dict[str, dict[str, list[RunRecord]]],
) -> Table:
    """Rows = (family, variant); column groups = datasets; OOD/IID R@20 and N@20.

    Args:
        title: caption.
        kind: ``ablation`` or ``alpha_beta`` (CSV ``table`` column).
        families: family label -> variant label -> runs (of one selection label).

    Returns:
        The table; best and second are marked within each family.
    """
    all_runs = [r for fam in families.values() for v in fam.values() for r in v]
    selection = all_runs[0].selection
    datasets = sorted({r.dataset for r in all_runs})
    table = Table(
        title=title,
        selection=selection,
        label_columns=["method", "variant"],
        columns=[f"{SPLITS[s].split()[0]} {SHORT[m]}" for s, m in VARIANT_COLUMNS] * len(datasets),
        groups=[(d, len(VARIANT_COLUMNS)) for d in datasets],
    )
    for family, variants in families.items():
        names = list(variants)
        grid = []  # per column: variant -> seed values
        for d in datasets:
            for split, metric in VARIANT_COLUMNS:
                grid.append(
                    (
                        d,
                        split,
                        metric,
                        [
                            seed_values([r for r in variants[v] if r.dataset == d], split, metric)
                            for v in names
                        ],
                    )
                )
        styles = [rank_styles([mean_of(vals) for vals in col[3]]) for col in grid]
        for i, variant in enumerate(names):
            row = [Cell(family), Cell(variant)]
            for (d, split, metric, per_variant), st in zip(grid, styles):
                vals = per_variant[i]
                row.append(Cell(fmt_mean_std(list(vals.values())) if vals else "–", st[i]))
                if vals:
                    mean, std = mean_std(list(vals.values()))
                    table.tidy.append(
                        dict(
                            table=kind,
                            selection=selection,
                            split=split,
                            dataset=d,
                            method=family,
                            variant=variant,
                            metric=metric,
                            mean=mean,
                            std=std,
                            n=len(vals),
                            seeds=" ".join(map(str, sorted(vals))),
                            style=st[i],
                        )
                    )
            table.rows.append(row)
    return table


def _families(
    runs: list[RunRecord], free: tuple[str, ...], variant: Callable[[RunRecord], str]
) -> dict[str, dict[str, list[RunRecord]]]:
    """Families of runs equal but for the ``free`` sampler options, with >= 2 variants."""
    out: dict[str, dict[str, list[RunRecord]]] = {}
    for fam in group_by(runs, lambda r: r.family_key(free)).values():
        variants = group_by(fam, variant)
        if len(variants) < 2:
            continue
        first = fam[0]
        base = {k: v for k, v in first.options.items() if k not in free}
        label = derived_label(first.sampler, base)
        if first.sweep:
            other = {k: v for k, v in first.sweep.items() if k.split(".")[-1] not in free}
            label += "".join(f"[{k}={v}]" for k, v in other.items())
        out[label] = dict(sorted(variants.items(), key=lambda kv: (kv[0] != "full", kv[0])))
    return out


def ablation_variant(run: RunRecord) -> str:
    """``full`` or ``w/o mixup & align`` from the run's ablation switches."""
    off = [k for k in ABLATION_KEYS if run.options.get(k, True) is False]
    return "full" if not off else "w/o " + " & ".join(off)


def beta_variant(run: RunRecord) -> str:
    """``(a0, b0) → (a1, b1)`` of the Beta mix schedule (``preset`` where unset)."""
    v = [run.options.get(k) for k in BETA_KEYS]
    v = ["preset" if x is None else f"{float(x):g}" for x in v]
    return f"({v[0]}, {v[1]}) → ({v[2]}, {v[3]})"


def ablation_table(runs: list[RunRecord]) -> Table | None:
    """Runs differing only in CNSDiff's ablation switches (None when there are none)."""
    fams = _families(runs, ABLATION_KEYS, ablation_variant)
    return variant_table("Ablation (mean ± std over seeds)", "ablation", fams) if fams else None


def alpha_beta_table(runs: list[RunRecord]) -> Table | None:
    """Runs differing only in the Beta schedule (initial/final alpha/beta), or None."""
    fams = _families(runs, BETA_KEYS, beta_variant)
    title = "Mix-ratio Beta(α, β) schedule, initial → final (mean ± std over seeds)"
    return variant_table(title, "alpha_beta", fams) if fams else None


# --------------------------------------------------------------------------- runtime


def _env_value(run: RunRecord, key: str) -> str:
    env = run.record.get("environment", {})
    if key == "device_name" and env.get("cpu_model") and str(env.get("device", "cpu")) == "cpu":
        return str(env["cpu_model"])  # the CPU model, where older records have only "x86_64"
    return str(env.get(key, "?"))


def _distinct(runs: list[RunRecord], key: str) -> str:
    return " / ".join(sorted({_env_value(r, key) for r in runs}))


def runtime_table(runs: list[RunRecord]) -> Table | None:
    """Median seconds per training epoch and per evaluation, per method and dataset."""
    if not runs:
        return None
    gpu_columns = any(_gpu(r) for r in runs)  # runs of oodrec bench on CUDA (bench.json)
    table = Table(
        title="Runtime (median over all epochs of all seeds)",
        selection=runs[0].selection,
        label_columns=["method", "dataset", "device", "device name", "threads", "torch"],
        columns=["runs", "s/epoch", "s/eval"]
        + (["GPU util %", "peak GPU GiB"] if gpu_columns else []),
    )
    # one row per device name too: a median over CPU and GPU epochs would describe neither
    groups = group_by(runs, lambda r: f"{r.label}\0{r.dataset}\0{_env_value(r, 'device_name')}")
    for key in sorted(groups, key=lambda k: (k.split("\0")[1], k)):
        group = groups[key]
        method, dataset, _ = key.split("\0")
        epoch = [row["epoch_seconds"] for r in group for row in r.epochs if "epoch_seconds" in row]
        evals = [row["eval_seconds"] for r in group for row in r.epochs if "eval_seconds" in row]
        if not epoch:  # no epochs.jsonl: fall back on the records' medians
            epoch = [
                r.record["median_epoch_seconds"]
                for r in group
                if r.record.get("median_epoch_seconds") is not None
            ]
        med_epoch = statistics.median(epoch) if epoch else None
        med_eval = statistics.median(evals) if evals else None
        env = {k: _distinct(group, k) for k in ("device", "device_name", "threads", "torch")}
        row = [method, dataset, *env.values(), str(len(group)), _fmt_s(med_epoch), _fmt_s(med_eval)]
        gpu: dict[str, float | None] = {}
        if gpu_columns:
            utils = [u for r in group if (u := _gpu(r).get("utilization_mean")) is not None]
            peaks = [p for r in group if (p := _gpu(r).get("peak_memory_allocated_bytes"))]
            gpu = {
                "gpu_utilization_mean": statistics.mean(utils) if utils else None,
                "gpu_peak_memory_gib": max(peaks) / 1024**3 if peaks else None,
            }
            util, peak = gpu.values()
            row += ["–" if util is None else f"{util:.0f}", "–" if peak is None else f"{peak:.2f}"]
        table.rows.append([Cell(x) for x in row])
        table.tidy.append(
            dict(
                table="runtime",
                selection=table.selection,
                dataset=dataset,
                method=method,
                runs=len(group),
                epoch_seconds=med_epoch,
                eval_seconds=med_eval,
                **env,
                **gpu,
            )
        )
    table.notes.append(
        "device name: the CPU model for CPU runs, the GPU for CUDA runs; device and threads as "
        "recorded in each run's environment; runs on different devices get separate rows"
    )
    if gpu_columns:
        table.notes.append(
            "GPU util %: mean over the runs of their GPU's utilisation, sampled every few seconds "
            "while each trained (the whole card: runs sharing it count together); peak GPU GiB: "
            "the largest torch.cuda.max_memory_allocated of the runs; – where not recorded (CPU "
            "runs, runs not made by oodrec bench)"
        )
    return table


def _gpu(run: RunRecord) -> dict:
    """The ``gpu`` entry ``oodrec bench`` wrote into the run's bench.json (empty if none)."""
    gpu = run.bench.get("gpu")
    return gpu if isinstance(gpu, dict) else {}


def _fmt_s(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


__all__ = [
    "ablation_table",
    "alpha_beta_table",
    "fmt_mean_std",
    "group_by",
    "mean_of",
    "runtime_table",
    "seed_values",
    "variant_table",
]
