"""Training loop: determinism, model selection labels, resume after a real kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from oodrec.config import DataConfig, ExperimentConfig, TrainConfig, apply_overrides
from oodrec.data.dataset import load_dataset
from oodrec.train.loop import train


def _cfg(dataset_dir: Path, **train_kw) -> ExperimentConfig:
    tcfg = dict(epochs=4, batch_size=32, patience=0)
    tcfg.update(train_kw)
    return ExperimentConfig(
        data=DataConfig(dataset=str(dataset_dir)), train=TrainConfig(**tcfg), seed=3
    )


def test_same_seed_same_metrics(tiny_dir):
    cfg = _cfg(tiny_dir)
    ds = load_dataset(cfg.data)
    a = train(cfg, ds)
    b = train(cfg, ds)
    assert a.metrics == b.metrics
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    c = train(apply_overrides(cfg, ["seed=4"]), ds)
    assert [h["loss"] for h in a.history] != [h["loss"] for h in c.history]


def test_record_labels_test_selection(tiny_dir, tmp_path):
    cfg = _cfg(tiny_dir, select_on="ood_test", select_rule="all_four")
    res = train(cfg, load_dataset(cfg.data), run_dir=tmp_path / "run")
    rec = json.loads((tmp_path / "run" / "record.json").read_text())
    assert rec["selection"]["test_selected"] is True
    assert rec["selection"]["label"].startswith("TEST-SELECTED on ood_test")
    assert rec["metrics"] == res.metrics
    rows = [json.loads(x) for x in (tmp_path / "run" / "epochs.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {"loss_bpr", "epoch_seconds", "fhn_ratio", "ood_test/ndcg@20"} <= set(
        rows[0]
    )


def test_reported_metrics_are_those_of_the_best_val_epoch(tiny_dir):
    cfg = _cfg(tiny_dir, epochs=6)
    res = train(cfg, load_dataset(cfg.data))
    best = res.history[res.best_epoch]
    assert best["val/ndcg@20"] == max(h["val/ndcg@20"] for h in res.history)
    assert res.metrics["ood_test"]["recall@20"] == best["ood_test/recall@20"]


def test_early_stopping(tiny_dir):
    cfg = _cfg(tiny_dir, epochs=50, patience=2, lr=0.05)
    res = train(cfg, load_dataset(cfg.data))
    assert res.stopped_early and len(res.history) == res.best_epoch + 3


def _medium_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    d = root / "medium"
    d.mkdir()
    users = np.repeat(np.arange(1500), 30)
    items = (rng.zipf(1.3, users.size) + users) % 800
    pairs = np.unique(np.stack([users, items], 1), axis=0)
    rng.shuffle(pairs)
    n = len(pairs)
    parts = {
        "train.txt": pairs[: int(0.6 * n)],
        "valid_iid.txt": pairs[int(0.6 * n) : int(0.7 * n)],
        "test_iid.txt": pairs[int(0.7 * n) : int(0.85 * n)],
        "test_ood.txt": pairs[int(0.85 * n) :],
    }
    for name, p in parts.items():
        np.savetxt(d / name, p, fmt="%d")
    return d


def test_resume_after_kill_matches_uninterrupted(tmp_path):
    data = _medium_dataset(tmp_path)
    common = [
        "--dataset",
        str(data),
        "--epochs",
        "8",
        "--seed",
        "5",
        "--out",
        str(tmp_path),
        "--set",
        "train.batch_size=256",
        "--set",
        "train.patience=0",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "oodrec.cli", "-q", "train", *common]
    proc = subprocess.Popen(
        [*cmd, "--name", "killed"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    epochs = tmp_path / "killed" / "epochs.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if epochs.exists() and len(epochs.read_text().splitlines()) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "record.json").exists()
    out = subprocess.run(
        [sys.executable, "-m", "oodrec.cli", "-q", "train", "--resume", str(tmp_path / "killed")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    full = subprocess.run(
        [*cmd, "--name", "full"], env=env, capture_output=True, text=True, timeout=300
    )
    assert full.returncode == 0, full.stderr
    a = json.loads((tmp_path / "killed" / "record.json").read_text())
    b = json.loads((tmp_path / "full" / "record.json").read_text())
    assert a["metrics"] == b["metrics"] and a["best_epoch"] == b["best_epoch"]
    rows_a = [
        json.loads(x) for x in (tmp_path / "killed" / "epochs.jsonl").read_text().splitlines()
    ]
    rows_b = [json.loads(x) for x in (tmp_path / "full" / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows_a] == list(range(8))
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]


def test_lazy_test_evaluation_reports_the_same_figures(tiny_dir):
    """eval_all_splits=False evaluates the test splits only at improving epochs: same result."""
    full = _cfg(tiny_dir, epochs=5)
    lazy = _cfg(tiny_dir, epochs=5, eval_all_splits=False)
    a, b = (train(c, load_dataset(c.data)) for c in (full, lazy))
    assert a.metrics == b.metrics and a.best_epoch == b.best_epoch
