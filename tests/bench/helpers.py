"""Hand-made finished run directories with known numbers (no training)."""

from __future__ import annotations

import json
from pathlib import Path

from oodrec.config import ExperimentConfig, apply_overrides, to_dict

METRIC_NAMES = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def write_run(
    root: Path,
    name: str,
    *,
    dataset: str = "food",
    sampler: str = "rns",
    options: dict | None = None,
    seed: int = 1,
    value: float = 0.1,
    select_on: str = "val",
    method: str | None = None,
    sweep: dict | None = None,
    epoch_seconds: tuple[float, ...] = (1.0, 2.0, 3.0),
) -> Path:
    """A run directory whose every metric of every split equals ``value``."""
    cfg = apply_overrides(
        ExperimentConfig(),
        [
            f"data.dataset={dataset}",
            f"sampler.name={sampler}",
            f"seed={seed}",
            f"train.select_on={select_on}",
            f"name={name}",
        ],
    )
    cfg_dict = to_dict(cfg)
    cfg_dict["sampler"]["options"] = dict(options or {})
    test_selected = select_on != "val"
    label = "selected on val" if not test_selected else f"TEST-SELECTED on {select_on}"
    record = {
        "config": cfg_dict,
        "seed": seed,
        "dataset": dataset,
        "sampler": sampler,
        "selection": {"split": select_on, "test_selected": test_selected, "label": label},
        "best_epoch": 0,
        "metrics": {s: dict.fromkeys(METRIC_NAMES, value) for s in ("val", "iid_test", "ood_test")},
        "median_epoch_seconds": 99.0,
        "environment": {"device": "cpu", "device_name": "x86_64", "threads": 2, "torch": "2.x"},
    }
    path = root / name
    path.mkdir(parents=True)
    (path / "record.json").write_text(json.dumps(record))
    rows = [
        {"epoch": i, "epoch_seconds": s, "fhn_ratio": 0.1 * i, "ood_test/recall@20": value}
        for i, s in enumerate(epoch_seconds)
    ]
    (path / "epochs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if method is not None or sweep:
        bench = {"method": method or sampler, "grid": "g.yaml", "sweep": sweep or {}}
        (path / "bench.json").write_text(json.dumps(bench))
    return path
