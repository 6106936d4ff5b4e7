"""``benchmarks/scale.py``: the dry run, the clean stop on CUDA out of memory (faked), and a
tiny real run on the CPU (slow tier)."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scale.py"


@pytest.fixture
def scale():
    spec = importlib.util.spec_from_file_location("scale_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_lists_the_cuda_sizes(scale, capsys):
    assert scale.main(["--device", "cuda", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "0.1M: 3,901 users" in out
    assert "10M: 123,347 users x 98,678 items, 10,000,000 training interactions" in out


def test_bad_sizes_are_named(scale):
    with pytest.raises(SystemExit, match="'0,1'"):
        scale.main(["--sizes", "0,1", "--dry-run"])


def test_out_of_gpu_memory_stops_cleanly(scale, tmp_path, monkeypatch, capsys):
    """The first size that runs out of GPU memory ends the benchmark: the sizes before it are
    written with the largest that fits, and nothing larger is tried."""
    for size in ("0.001", "0.002", "0.004"):
        data = tmp_path / "data" / f"sim_{size}M_seed0"
        data.mkdir(parents=True)
        (data / "test_ood.txt").write_text("")  # present: nothing is generated
    tried = []

    def fake_measure(data, sampler, args):
        tried.append(data.name)
        if "0.002M" in data.name:
            raise scale.OutOfGpuMemory("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {
            "users": 10, "items": 8, "train": 1000, "load_s": 0.1, "eval_scores_m": 0.001,
            "peak_rss_gb": 1.0, "s_per_batch": 0.01, "eval_s": 0.02, "peak_gpu_gb": 0.5,
            "peak_gpu_reserved_gb": 0.6,
        }  # fmt: skip

    monkeypatch.setattr(scale, "measure", fake_measure)
    monkeypatch.setattr(scale, "plot", lambda rows, path: None)
    argv = ["--device", "cuda", "--sizes", "0.001,0.002,0.004", "--samplers", "rns"]
    argv += ["--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    assert scale.main(argv) == 0
    assert tried == ["sim_0.001M_seed0", "sim_0.002M_seed0"]
    md = (tmp_path / "out" / "scale.md").read_text()
    assert "0.002M (rns) ran out of GPU memory" in md
    assert "the largest size that fits: 0.001M" in md
    assert "peak GPU (GB)" in md
    rows = list(csv.DictReader((tmp_path / "out" / "scale.csv").open()))
    assert [r["size_m"] for r in rows] == ["0.001"]
    assert rows[0]["peak_gpu_gb"] == "0.5"
    assert "largest size that fits: 0.001M" in capsys.readouterr().out


@pytest.mark.slow
def test_tiny_cpu_run(tmp_path):
    """The whole path on the CPU: generate, measure in a subprocess, write the outputs."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--sizes", "0.002", "--samplers", "rns"]
    cmd += ["--batches", "2", "--batch-size", "256", "--threads", "1", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader((out / "scale.csv").open()))
    assert len(rows) == 1 and rows[0]["sampler"] == "rns"
    assert "peak_gpu_gb" not in rows[0]  # CPU: no GPU columns
    assert float(rows[0]["s_per_batch"]) > 0
    assert "peak GPU" not in (out / "scale.md").read_text()
