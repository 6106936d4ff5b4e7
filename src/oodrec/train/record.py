"""The run record (record.json): what was trained and selected, the metrics, the diagnostics,
the machine (with the CPU model) and the data checks that dropped a noticeable share of a split.
"""

from __future__ import annotations

import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DROP_WARN_SHARE = 0.01
"""A split that lost more than this share of its pairs to the data checks gets a warning."""


def git_hash() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows (often only the
    architecture, e.g. ``x86_64``)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment(device: Any) -> dict[str, Any]:
    """Versions, device, CPU model, threads, OpenMP wait policy and load of this process."""
    import torch

    from oodrec._threads import thread_info
    from oodrec._version import __version__

    cpu = cpu_model()
    info = thread_info()
    return {
        "oodrec": __version__,
        "git": git_hash(),
        "torch": torch.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "cpu_model": cpu,
        "threads": info["threads"],
        "omp_wait_policy": info["omp_wait_policy"],
        "load_average": info["load_average"],
        "cores": info["cores"],
        "python": platform.python_version(),
    }


def data_warnings(report: Any, share: float = DROP_WARN_SHARE) -> list[str]:
    """One line per split whose data checks dropped more than ``share`` of its pairs.

    Args:
        report: the dataset's ``DataReport`` (or its ``to_dict()``).
        share: the threshold (default 1%).

    Returns:
        Lines such as ``ood_test: 120 of 5000 pair(s) (2.4%) dropped by the data checks
        (unseen user or item 100, also in train 20)``.
    """
    rep = report if isinstance(report, dict) else report.to_dict()
    reasons = (
        ("dropped_unseen", "unseen user or item"),
        ("dropped_in_train", "also in train"),
        ("dropped_in_val", "also in val"),
    )
    out = []
    for split, kept in (rep.get("sizes") or {}).items():
        counts = [(label, int((rep.get(key) or {}).get(split, 0))) for key, label in reasons]
        dropped = sum(n for _, n in counts)
        total = kept + dropped
        if total and dropped / total > share:
            why = ", ".join(f"{label} {n}" for label, n in counts if n)
            out.append(
                f"{split}: {dropped} of {total} pair(s) ({100 * dropped / total:.1f}%) dropped "
                f"by the data checks ({why})"
            )
    for role, file_rep in (rep.get("files") or {}).items():
        lines = int(file_rep.get("lines") or 0)
        lost = int(file_rep.get("skipped_bad_lines") or 0)
        if lines and lost / lines > share:
            out.append(
                f"{role}: {lost} of {lines} line(s) ({100 * lost / lines:.1f}%) skipped as "
                f"malformed ({file_rep.get('path')})"
            )
    return out


def diagnostic_summary(history: list[dict[str, Any]], best_epoch: int) -> dict[str, Any]:
    """Negative diagnostics (fhn_ratio, true_fhn_ratio, norms, hardness, sampler stats) at
    the selected epoch and averaged over all epochs."""
    skip = ("loss", "epoch", "eval_seconds", "improved", "val/", "iid_test/", "ood_test/")
    skip += ("gamma", "val_adjusted")
    keys = [k for k in (history[0] if history else {}) if not k.startswith(skip)]
    by_epoch = {r["epoch"]: r for r in history}
    best = by_epoch.get(best_epoch, {})
    return {
        "at_best_epoch": {k: best[k] for k in keys if k in best},
        "mean_over_epochs": {
            k: sum(r[k] for r in history if k in r) / max(1, sum(k in r for r in history))
            for k in keys
        },
    }


def adjustment(cfg: Any, gamma: float) -> dict[str, Any] | None:
    """How the selected epoch's scores were popularity-adjusted (None: plain scores only)."""
    grid = tuple(cfg.eval.adjust_gammas)
    if not grid:
        return None
    return {
        "gamma": gamma,
        "grid": [0.0, *grid],
        "chosen_on": f"{cfg.train.select_on}/{cfg.train.select_metric}",
        "scores": "s - gamma * log(1 + training degree of the item)",
    }


@dataclass(frozen=True)
class FinishedRun:
    """What a run's record is built from: the result of training, stated explicitly.

    Attributes:
        cfg: the run's config.
        dataset: the dataset's name.
        report: the dataset's ``DataReport``.
        resolved_options: the method's ``describe()``.
        takes_sampler: whether the method uses ``cfg.sampler``.
        best_epoch: the selected epoch.
        history: one dict per epoch (as in epochs.jsonl).
        metrics: split -> metric -> value at the selected epoch.
        stopped_early: early stopping ended the run.
        resume_changes: settings changed by resumes (``RunDir.resume_changes``).
        device: the torch device it trained on.
    """

    cfg: Any
    dataset: str
    report: Any
    resolved_options: dict[str, Any]
    takes_sampler: bool
    best_epoch: int
    history: list[dict[str, Any]]
    metrics: dict[str, dict[str, float]]
    stopped_early: bool
    resume_changes: list[dict[str, Any]] = field(default_factory=list)
    device: Any = "cpu"
    gamma: float = 0.0
    """The popularity adjustment of the selected epoch (``eval.adjust_gammas``)."""
    trains: bool = True
    """Whether the method has anything to train (``Method.trains``)."""


def build_record(run: FinishedRun) -> dict[str, Any]:
    """The record of a finished run (record.json).

    ``order`` states whether the data orders interactions: ``timestamps``, or ``none (no
    timestamps; file order is not used as time)`` (``DataReport.order``).
    """
    from oodrec.config import to_dict
    from oodrec.train.selection import selection_label

    cfg, history = run.cfg, run.history
    tcfg = cfg.train
    secs = [r["epoch_seconds"] for r in history if "epoch_seconds" in r]
    evals = [r["eval_seconds"] for r in history if "eval_seconds" in r]
    report = run.report
    return {
        "config": to_dict(cfg),
        "seed": cfg.seed,
        "dataset": run.dataset,
        "model": cfg.model.name,
        "method": cfg.method_label(),
        "sampler": cfg.sampler.name if run.takes_sampler and cfg.sampler else None,
        "trains": run.trains,
        "resolved_options": run.resolved_options,
        "selection": {
            "split": tcfg.select_on,
            "metric": tcfg.select_metric,
            "rule": tcfg.select_rule,
            "test_selected": tcfg.test_selected,
            "protocol": cfg.eval.protocol,
            "label": selection_label(tcfg, cfg.eval),
            "adjustment": adjustment(cfg, run.gamma),
        },
        "best_epoch": run.best_epoch,
        "epochs_run": len(history),
        "stopped_early": run.stopped_early,
        "metrics": run.metrics,
        "diagnostics": diagnostic_summary(history, run.best_epoch),
        "median_epoch_seconds": statistics.median(secs) if secs else None,
        "median_eval_seconds": statistics.median(evals) if evals else None,
        "order": report.order(),
        "data_report": report.to_dict(),
        "data_notes": report.notes(),
        "data_warnings": data_warnings(report),
        "resume_changes": run.resume_changes,
        "environment": environment(run.device),
    }


__all__ = [
    "DROP_WARN_SHARE",
    "FinishedRun",
    "build_record",
    "cpu_model",
    "data_warnings",
    "diagnostic_summary",
    "environment",
    "git_hash",
]
