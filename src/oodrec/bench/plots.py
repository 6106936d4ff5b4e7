"""Figures from finished runs (PNG and PDF); matplotlib is imported inside the functions.

* Figure 1 (per dataset): OOD-test Recall@20 of held-out items in 4 training-popularity
  buckets per method (the best checkpoint is re-ranked with ``eval.groups``), the share of the
  OOD users' top-20 slots that each bucket gets (next to the OOD test's own share), and the
  false-hard-negative ratio per method (``fhn_ratio`` of ``epochs.jsonl``, mean over epochs).
  The bucket figures are also written to ``fig1_<dataset>.csv``.
* Figure 4 (per varied key and dataset): OOD Recall@20 / NDCG@20 vs the value of a swept key,
  or of a sampler option that a grid's named methods vary one at a time.
* Figure 5 (per dataset): ``fhn_ratio``, OOD Recall@20 and the val selection metric per epoch,
  with each run's selected epoch marked.
* Figure 6 (per dataset with timestamps): OOD-test Recall@20 in 4 equal-size time groups of
  the held-out interactions (earliest first) per method, re-ranked with ``eval.groups``. Runs
  whose data has no timestamps (``order`` in ``record.json``; the shipped datasets have none)
  are left out with a logged note: file order is never used as time.

Curves and bars are means over seeds with ± std. Each figure is drawn for one selection label
and names it in its title. Plain val selection has no file suffix; test-selected runs get
``_testsel``, and runs selected on another val metric, such as an OOD-aware estimator, get
``_val-METRIC`` (``figure_suffix``).
"""

from __future__ import annotations

import json
import logging
import math
import re
import statistics
import warnings
from pathlib import Path
from typing import Any

from oodrec.bench.records import RunRecord, by_selection, is_main_run, load_runs
from oodrec.bench.stats import mean_std

logger = logging.getLogger(__name__)

NUM_BUCKETS = 4


def _figure(ncols: int) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0 * ncols, 3.6), layout="constrained")
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _save(fig: Any, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1], metadata={"CreationDate": None})  # same figure, same bytes
    return paths


def _by(runs: list[RunRecord], key) -> dict[Any, list[RunRecord]]:
    out: dict[Any, list[RunRecord]] = {}
    for run in runs:
        out.setdefault(key(run), []).append(run)
    return dict(sorted(out.items(), key=lambda kv: str(kv[0])))


# --------------------------------------------------------------------------- Figure 1


def _reload(
    run: RunRecord, data_dir: str | None, cache: dict[str, Any] | None
) -> tuple[Any, Any, Any]:
    """``(dataset, evaluator, scorer)`` of a run's best checkpoint, on CPU.

    Args:
        run: a finished run (needs ``checkpoints/best.pt`` and its dataset).
        data_dir: replaces the run's ``data.data_dir``.
        cache: data-config JSON -> (dataset, evaluator), shared across runs.
    """
    import torch

    from oodrec.config import ExperimentConfig, from_dict
    from oodrec.data.dataset import load_dataset
    from oodrec.eval.evaluate import Evaluator
    from oodrec.train.reload import load_run

    cfg = from_dict(ExperimentConfig, run.config)
    data = dict(run.config["data"], **({"data_dir": data_dir} if data_dir else {}))
    key = json.dumps(data, sort_keys=True)
    cache = cache if cache is not None else {}
    if key not in cache:
        dataset = load_dataset(from_dict(type(cfg.data), data))
        cache[key] = (dataset, Evaluator(dataset, cfg.eval, torch.device("cpu")))
    dataset, evaluator = cache[key]
    loaded = load_run(run.path, data_dir=data_dir, device="cpu", dataset=dataset)
    return dataset, evaluator, loaded.scorer()


def run_popularity_buckets(
    run: RunRecord,
    num_buckets: int = NUM_BUCKETS,
    k: int = 20,
    split: str = "ood_test",
    data_dir: str | None = None,
    _cache: dict[str, Any] | None = None,
) -> dict[str, list[float]]:
    """A run's best checkpoint per training-popularity bucket (``eval.groups.bucket_stats``, one
    ranking pass): Recall@k of the held-out pairs, the share of all top-k slots, and the share of
    held-out pairs.

    Args:
        run: a finished run (needs ``checkpoints/best.pt`` and its dataset).
        num_buckets: number of equal-size item groups (least popular first).
        k: cut-off.
        split: evaluated split.
        data_dir: replaces the run's ``data.data_dir``.
        _cache: data-config JSON -> (dataset, evaluator), shared across runs.

    Returns:
        ``{"recall": [...], "slot_share": [...], "held_out_share": [...]}``, one value per
        bucket, least popular first (recall NaN for a bucket without held-out pairs).
    """
    from oodrec.eval.groups import bucket_stats, popularity_buckets

    dataset, evaluator, scorer = _reload(run, data_dir, _cache)
    buckets = popularity_buckets(dataset.item_degree(), num_buckets)
    stats = bucket_stats(scorer, evaluator, split, buckets, k)
    return {
        key: [float(x) for x in stats[key]] for key in ("recall", "slot_share", "held_out_share")
    }


def run_time_group_recall(
    run: RunRecord,
    num_groups: int = NUM_BUCKETS,
    k: int = 20,
    split: str = "ood_test",
    data_dir: str | None = None,
    _cache: dict[str, Any] | None = None,
) -> list[float]:
    """Recall@k per time group (``eval.groups.time_group_recall``) of a run's best checkpoint.

    Args: as ``run_popularity_buckets``; ``num_groups`` equal-size groups, earliest first.

    Returns:
        Recall per time group (NaN for an empty group).

    Raises:
        DataValidationError: the run's dataset has no timestamps.
    """
    from oodrec.eval.groups import time_group_recall

    dataset, evaluator, scorer = _reload(run, data_dir, _cache)
    recall, _, _ = time_group_recall(scorer, evaluator, dataset, split, num_groups, k)
    return [float(x) for x in recall]


def _run_fhn(run: RunRecord) -> float | None:
    vals = [row["fhn_ratio"] for row in run.epochs if "fhn_ratio" in row]
    return statistics.fmean(vals) if vals else None


def _write_bucket_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    import csv
    import io

    from oodrec.runs import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return path


def figure1(
    runs: list[RunRecord], out_dir: Path, suffix: str = "", data_dir: str | None = None
) -> list[Path]:
    """Figure 1 per dataset: per-bucket OOD Recall@20, the share of the top-20 slots per bucket
    (with the OOD test's own share in the tick labels) and the FHN ratio per method; the bucket
    figures also go to ``fig1_<dataset>.csv``."""
    import numpy as np

    from oodrec.runs import RunDir

    written: list[Path] = []
    cache: dict[str, Any] = {}
    for dataset, ds_runs in _by([r for r in runs if is_main_run(r)], lambda r: r.dataset).items():
        methods = _by(ds_runs, lambda r: r.label)
        fig, (ax_b, ax_s, ax_f) = _figure(3)
        width = 0.8 / max(len(methods), 1)
        omitted: list[str] = []
        held: list[float] | None = None
        rows: list[dict[str, Any]] = []
        for i, (method, group) in enumerate(methods.items()):
            # A run whose checkpoints were deleted (or never copied back from another machine)
            # is left out of the bucket panels, counted on the figure and logged; a checkpoint
            # that is there but cannot be reloaded is an error naming it (RunError), never a skip.
            kept = [r for r in group if RunDir(r.path).best_ckpt.is_file()]
            omitted += [r.path.name for r in group if r not in kept]
            if not kept:
                continue
            per_seed = [run_popularity_buckets(r, data_dir=data_dir, _cache=cache) for r in kept]
            held = per_seed[0]["held_out_share"]
            x = np.arange(NUM_BUCKETS) + (i - (len(methods) - 1) / 2) * width
            stats = {}
            for key, ax in (("recall", ax_b), ("slot_share", ax_s)):
                arr = np.array([p[key] for p in per_seed])  # [seeds, buckets]
                with warnings.catch_warnings():  # a bucket with no test item is NaN: no bar
                    warnings.simplefilter("ignore", RuntimeWarning)
                    err = np.nanstd(arr, 0, ddof=1) if len(arr) > 1 else np.zeros(arr.shape[1])
                    mean = np.nanmean(arr, 0)
                stats[key] = (mean, err)
                ax.bar(x, mean, width, yerr=err, label=method, capsize=2, color=f"C{i}")
            rows += [
                {
                    "method": method,
                    "bucket": f"Q{q + 1}",
                    "seeds": len(per_seed),
                    "ood_recall_mean": f"{stats['recall'][0][q]:.6g}",
                    "ood_recall_std": f"{stats['recall'][1][q]:.6g}",
                    "slot_share_mean": f"{stats['slot_share'][0][q]:.6g}",
                    "slot_share_std": f"{stats['slot_share'][1][q]:.6g}",
                    "held_out_share": f"{held[q]:.6g}",
                }
                for q in range(NUM_BUCKETS)
            ]
        ticks = [f"Q{q + 1}" for q in range(NUM_BUCKETS)]
        ax_b.set_xticks(range(NUM_BUCKETS), ticks)
        ax_b.set_xlabel("item popularity bucket (training degree, Q1 = least popular)")
        ax_b.set_ylabel("OOD Recall@20")
        ax_b.legend(fontsize=7)
        if held is not None:
            ticks = [f"{t}\nOOD test {100 * h:.0f}%" for t, h in zip(ticks, held)]
        ax_s.set_xticks(range(NUM_BUCKETS), ticks, fontsize=7)
        ax_s.set_yscale("log")
        ax_s.set_xlabel("popularity bucket of recommended items (OOD test share below)")
        ax_s.set_ylabel("share of top-20 slots (log)")
        for i, (method, group) in enumerate(methods.items()):
            fhn = [v for r in group if (v := _run_fhn(r)) is not None]
            if fhn:
                mean, std = mean_std(fhn)
                ax_f.bar([method], [mean], yerr=[std], capsize=2, color=f"C{i}")
        ax_f.set_ylabel("false-hard-negative ratio")
        ax_f.tick_params(axis="x", rotation=30, labelsize=7)
        title = f"{dataset}: popularity buckets and FHN ({runs[0].selection})"
        if omitted:
            logger.warning(
                "figure 1 (%s): %d run(s) without checkpoints/best.pt left out of the popularity "
                "buckets: %s",
                dataset,
                len(omitted),
                ", ".join(omitted),
            )
            title += f"\nbuckets omit {len(omitted)} run(s) without a best checkpoint"
        fig.suptitle(title, fontsize=9)
        written += _save(fig, out_dir, f"fig1_{dataset}{suffix}")
        if rows:
            written.append(_write_bucket_csv(out_dir / f"fig1_{dataset}{suffix}.csv", rows))
    return written


# --------------------------------------------------------------------------- Figure 4


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, float(value)) if isinstance(value, (int, float)) else (1, str(value))


def _band(
    ax: Any, xs: list, ys: list[float], sd: list[float], label: str, color: str | None = None
) -> None:
    """A line with a ± std band."""
    ax.plot(xs, ys, marker="o" if len(xs) < 12 else None, label=label, color=color)
    lo = [y - s for y, s in zip(ys, sd)]
    hi = [y + s for y, s in zip(ys, sd)]
    ax.fill_between(xs, lo, hi, alpha=0.2, color=color)


def _sensitivity_lines(runs: list[RunRecord], key: str) -> dict[str, dict[Any, list[RunRecord]]]:
    """Line label (method and the other sweep values) -> swept value -> runs."""
    lines: dict[str, dict[Any, list[RunRecord]]] = {}
    for run in runs:
        rest = "".join(f" {k}={v}" for k, v in run.sweep.items() if k != key)
        lines.setdefault(run.method + rest, {}).setdefault(run.sweep[key], []).append(run)
    return {k: dict(sorted(v.items(), key=lambda kv: _sortable(kv[0]))) for k, v in lines.items()}


def _option_lines(runs: list[RunRecord], key: str) -> dict[str, dict[Any, list[RunRecord]]]:
    """Line label -> value of sampler option ``key`` -> runs, for families of runs (grids of
    named methods, such as ``configs/cnsdiff_sensitivity.yaml``) equal in everything but
    ``key`` and the seed; a run that leaves ``key`` at its default joins at the default value.
    Numeric options only; families with fewer than 2 values are left out."""
    from oodrec.bench.records import option_defaults

    families: dict[str, list[RunRecord]] = {}
    for run in runs:
        families.setdefault(run.family_key((key,)), []).append(run)
    lines: dict[str, dict[Any, list[RunRecord]]] = {}
    for family in families.values():
        defaults = option_defaults(family[0].sampler) or {}
        points: dict[Any, list[RunRecord]] = {}
        for run in family:
            value = run.options.get(key, defaults.get(key))
            # numeric options only: switches and modes have the ablation table
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                points.setdefault(value, []).append(run)
        if len(points) < 2:
            continue
        rest = "".join(
            f" {k}={v}"
            for k, v in sorted(family[0].options.items())
            if k != key and defaults.get(k) != v
        )
        label = family[0].sampler + rest
        lines[label] = dict(sorted(points.items(), key=lambda kv: _sortable(kv[0])))
    return lines


def figure4(runs: list[RunRecord], out_dir: Path, suffix: str = "") -> list[Path]:
    """Figure 4 per varied key and dataset: OOD R@20 / N@20 vs the value (mean ± std).

    A key is a ``sweep`` key of the grid, or a sampler option that the grid's named methods
    vary one at a time (``_option_lines``; drawn as ``sampler.KEY``)."""
    written: list[Path] = []
    unswept = [r for r in runs if not r.sweep]
    keys = [(k, k) for k in sorted({k for r in runs for k in r.sweep})]
    keys += [(k, f"sampler.{k}") for k in sorted({k for r in unswept for k in r.options})]
    for key, name in keys:
        option = name != key
        swept = unswept if option else [r for r in runs if key in r.sweep]
        for dataset, ds_runs in _by(swept, lambda r: r.dataset).items():
            lines = (_option_lines if option else _sensitivity_lines)(ds_runs, key)
            if not lines:
                continue
            fig, axes = _figure(2)
            for label, points in lines.items():
                values = list(points)
                numeric = all(isinstance(v, (int, float)) for v in values)
                xs = values if numeric else list(range(len(values)))
                for ax, metric in zip(axes, ("recall@20", "ndcg@20")):
                    stats = []
                    for group in points.values():
                        vals = [r.metric("ood_test", metric) for r in group]
                        stats.append(mean_std([v for v in vals if v is not None] or [math.nan]))
                    _band(ax, xs, [m for m, _ in stats], [sd for _, sd in stats], label)
                    ax.set_xticks(xs, [str(v) for v in values])
                    ax.set_xlabel(name)
                    ax.set_ylabel(f"OOD {metric}")
            axes[0].legend(fontsize=7)
            fig.suptitle(f"{dataset}: sensitivity to {name} ({runs[0].selection})", fontsize=9)
            written += _save(fig, out_dir, f"fig4_{name.replace('.', '_')}_{dataset}{suffix}")
    return written


# --------------------------------------------------------------------------- Figure 5


def _epoch_curve(group: list[RunRecord], column: str) -> tuple[list[int], list[float], list[float]]:
    per_epoch: dict[int, list[float]] = {}
    for run in group:
        for row in run.epochs:
            if column in row:
                per_epoch.setdefault(int(row["epoch"]), []).append(float(row[column]))
    epochs = sorted(per_epoch)
    stats = [mean_std(per_epoch[e]) for e in epochs]
    return epochs, [s[0] for s in stats], [s[1] for s in stats]


def selection_column(run: RunRecord) -> str:
    """The ``epochs.jsonl`` column that picked the run's best epoch (``val/ndcg@20``)."""
    sel = run.record.get("selection", {})
    train_cfg = run.config.get("train", {})
    split = sel.get("split") or train_cfg.get("select_on") or "val"
    metric = sel.get("metric") or train_cfg.get("select_metric") or "ndcg@20"
    return f"{split}/{metric}"


def figure5(runs: list[RunRecord], out_dir: Path, suffix: str = "") -> list[Path]:
    """Figure 5 per dataset: FHN ratio, OOD Recall@20 and the selection metric (val) per epoch,
    one line per method; dotted vertical lines mark each run's selected epoch."""
    written: list[Path] = []
    for dataset, ds_runs in _by([r for r in runs if is_main_run(r)], lambda r: r.dataset).items():
        fig, axes = _figure(3)
        for i, (method, group) in enumerate(_by(ds_runs, lambda r: r.label).items()):
            color = f"C{i}"
            columns = ("fhn_ratio", "ood_test/recall@20", selection_column(group[0]))
            selected = [r.record.get("best_epoch") for r in group]
            selected = [e for e in selected if isinstance(e, int) and e >= 0]
            for ax, column in zip(axes, columns):
                xs, ys, sd = _epoch_curve(group, column)
                if not xs:
                    continue
                _band(ax, xs, ys, sd, method, color)
                for epoch in selected:
                    ax.axvline(epoch, color=color, linestyle=":", linewidth=0.9)
                ax.set_xlabel("epoch")
                ax.set_ylabel(column)
        axes[2].set_title("selection metric (dotted: selected epoch)", fontsize=8)
        for ax in axes:  # every panel: a method may lack a column (DiffRec has no FHN ratio)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.suptitle(f"{dataset}: training dynamics ({runs[0].selection})", fontsize=9)
        written += _save(fig, out_dir, f"fig5_{dataset}{suffix}")
    return written


# --------------------------------------------------------------------------- Figure 6


def figure6(
    runs: list[RunRecord], out_dir: Path, suffix: str = "", data_dir: str | None = None
) -> list[Path]:
    """Figure 6 per dataset with timestamps: OOD Recall@20 per time group (earliest first),
    one line per method (mean ± std over seeds). Datasets without timestamps are skipped with
    a logged note."""
    import numpy as np

    from oodrec.data.interactions import ORDER_TIMESTAMPS

    main = [r for r in runs if is_main_run(r)]
    untimed = sorted({r.dataset for r in main if r.order != ORDER_TIMESTAMPS})
    if untimed:
        logger.info(
            "Figure 6 skipped for %s: no interaction timestamps (file order is not used as time)",
            ", ".join(untimed),
        )
    written: list[Path] = []
    cache: dict[str, Any] = {}
    timed = [r for r in main if r.order == ORDER_TIMESTAMPS]
    for dataset, ds_runs in _by(timed, lambda r: r.dataset).items():
        fig, (ax,) = _figure(1)
        for i, (method, group) in enumerate(_by(ds_runs, lambda r: r.label).items()):
            per_seed = [run_time_group_recall(r, data_dir=data_dir, _cache=cache) for r in group]
            arr = np.array(per_seed)  # [seeds, groups]
            sd = np.nanstd(arr, 0, ddof=1) if len(arr) > 1 else np.zeros(arr.shape[1])
            _band(
                ax, list(range(arr.shape[1])), list(np.nanmean(arr, 0)), list(sd), method, f"C{i}"
            )
        ax.set_xticks(range(NUM_BUCKETS), [f"T{g + 1}" for g in range(NUM_BUCKETS)])
        ax.set_xlabel("time group of the held-out interaction (equal size, T1 = earliest)")
        ax.set_ylabel("OOD Recall@20")
        ax.legend(fontsize=7)
        fig.suptitle(f"{dataset}: recall over time ({runs[0].selection})", fontsize=9)
        written += _save(fig, out_dir, f"fig6_{dataset}{suffix}")
    return written


def figure_suffix(runs: list[RunRecord], taken: set[str] | None = None) -> str:
    """The file-name suffix of one selection label's figures: ``""`` for plain val selection,
    ``_testsel`` for test-selected runs, ``_val-ips_ndcg20`` for runs selected on another val
    metric (here IPS-weighted NDCG@20). A suffix already in ``taken`` (two labels with the same
    metric, e.g. other IPS options) gets a number."""
    sel = runs[0].record.get("selection", {})
    if runs[0].selection == "selected on val":
        base = ""
    elif sel.get("test_selected", True):  # a record without the flag: say test, never val
        base = "_testsel"
    else:
        base = "_val-" + (re.sub(r"[^A-Za-z0-9_]+", "", str(sel.get("metric", ""))) or "other")
    taken = taken if taken is not None else set()
    suffix, n = base, 1
    while suffix in taken:
        suffix, n = f"{base}{n}", n + 1
    taken.add(suffix)
    return suffix


def write_figures(
    runs_dir: str | Path, out_dir: str | Path, data_dir: str | None = None
) -> list[Path]:
    """Draw Figures 1, 4, 5 (and 6 where the data has timestamps) for every selection label.

    Args:
        runs_dir: directory searched recursively for finished runs.
        out_dir: where PNG and PDF files go.
        data_dir: data directory for re-ranking best checkpoints (Figures 1 and 6).

    Returns:
        The written files.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'oodrec[plots]'``).
    """
    import matplotlib  # noqa: F401 - fail early with a clear ImportError

    out = Path(out_dir)
    written: list[Path] = []
    taken: set[str] = set()
    for runs in by_selection(load_runs(runs_dir, warn=False)).values():
        suffix = figure_suffix(runs, taken)
        written += figure1(runs, out, suffix, data_dir)
        written += figure4(runs, out, suffix)
        written += figure5(runs, out, suffix)
        written += figure6(runs, out, suffix, data_dir)
    return written


__all__ = [
    "figure1",
    "figure4",
    "figure5",
    "figure6",
    "figure_suffix",
    "run_popularity_buckets",
    "run_time_group_recall",
    "selection_column",
    "write_figures",
]
