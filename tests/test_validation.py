"""Inputs that cannot crash: settings are checked before any work starts (a one-line error, no
run directory left behind), a diverging run stops naming the epoch and the loss term, and the
thread settings that keep a run fast on a shared machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from oodrec import _threads
from oodrec.cli import main


def _train(tiny_dir, out, *extra) -> list[str]:
    return ["-q", "train", "--dataset", str(tiny_dir), "--out", str(out), "--epochs", "2", *extra]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=nan", "train.lr must be a finite number > 0, got nan"),
        ("train.lr=inf", "train.lr must be a finite number > 0, got inf"),
        ("train.lr=0", "train.lr must be a finite number > 0, got 0.0"),
        ("eval.user_batch_size=0", "eval.user_batch_size must be >= 1, got 0"),
        ("train.patience=-1", "train.patience must be >= 0"),
        ("train.threads=-2", "train.threads must be 0 (torch's default), 'auto'"),
        (
            "train.select_metric=hit@20",
            "train.select_metric 'hit@20' is not computed; valid with eval.ks=[10, 20]: "
            "recall@10, recall@20, ndcg@10, ndcg@20",
        ),
    ],
)
def test_bad_settings_fail_in_one_line_before_the_run_directory(
    override, message, tiny_dir, tmp_path, capsys
):
    out = tmp_path / "runs"
    assert main(_train(tiny_dir, out, "--set", override)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_select_metric_is_checked_after_all_overrides(tiny_dir, tmp_path, capsys):
    # eval.ks and the metric change together: checked once both are applied
    args = ["--set", "eval.ks=[5]", "--set", "train.select_metric=ndcg@5"]
    assert main(_train(tiny_dir, tmp_path / "runs", *args)) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error_and_leaves_no_directory(tiny_dir, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(_train(tiny_dir, out, "--device", "cuda")) == 2
    err = capsys.readouterr().err
    assert "train.device=cuda: CUDA is not available here" in err and "Traceback" not in err
    assert not out.exists()
    assert main(_train(tiny_dir, out, "--device", "gpu0")) == 2
    assert "is not a torch device" in capsys.readouterr().err


def test_speed_needs_at_least_one_repeat(tiny_dir, capsys):
    assert main(["-q", "speed", "--dataset", str(tiny_dir), "--repeats", "0"]) == 2
    assert "--repeats must be >= 1, got 0" in capsys.readouterr().err


def test_a_diverging_run_stops_naming_epoch_and_loss_term(tiny_dir, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(_train(tiny_dir, out, "--name", "r", "--set", "train.lr=1e30")) == 2
    err = capsys.readouterr().err
    assert re.search(r"training diverged at epoch \d+: loss term loss_bpr = nan", err)
    assert "Traceback" not in err
    assert not (out / "r" / "record.json").exists() and not (out / "r" / "per_user.pt").exists()


# ----------------------------------------------------------------------------- threads


def test_wait_policy_defaults_to_passive_but_a_user_setting_wins(monkeypatch, capsys):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert main(["samplers"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert main(["samplers"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_a_training_command_spins_on_an_idle_machine_and_sleeps_on_a_busy_one(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(_threads, "busy_cores", lambda: 0.1)
    assert _threads.default_wait_policy("train") == _threads.SPIN
    assert "OMP_WAIT_POLICY" not in os.environ
    assert _threads.default_wait_policy("samplers") == "PASSIVE"  # not sampled
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(_threads, "busy_cores", lambda: 0.9)  # another process holds a core
    assert _threads.default_wait_policy("bench") == "PASSIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(_threads, "busy_cores", lambda: None)  # cannot tell: the safe choice
    assert _threads.default_wait_policy("speed") == "PASSIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    _threads.worker_wait_policy()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    _threads.worker_wait_policy()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_allocator_setting_is_idempotent_and_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(_threads, "_allocator", "default")
    monkeypatch.setenv("OODREC_MALLOC", "system")
    assert _threads.tune_allocator() == "default (OODREC_MALLOC=system)"
    monkeypatch.setattr(_threads, "_allocator", "default")
    monkeypatch.delenv("OODREC_MALLOC")
    first = _threads.tune_allocator()
    if sys.platform.startswith("linux"):
        assert first.startswith("glibc")
    assert _threads.tune_allocator() == first  # once per process
    assert _threads.thread_info()["allocator"] == first


def test_busy_cores_reads_the_machine():
    busy = _threads.busy_cores(0.01)
    if busy is not None:  # Linux: a share of the cores
        assert 0.0 <= busy <= (os.cpu_count() or 1)


def test_the_entry_point_sets_the_wait_policy_before_torch_loads():
    # OMP_WAIT_POLICY only works if main() sets it before torch (and OpenMP) is imported
    code = """
import os, sys
os.environ.pop("OMP_WAIT_POLICY", None)
seen = []
class Hook:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
sys.meta_path.insert(0, Hook())
from oodrec.cli import main
assert "torch" not in sys.modules
main(["samplers"])
print(seen)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "['PASSIVE']", out.stderr


def test_free_cores_and_thread_settings(monkeypatch):
    assert _threads.free_cores(cores=2, load=1.2) == 1
    assert _threads.free_cores(cores=4, load=0.4) == 4
    assert _threads.free_cores(cores=2, load=7.0) == 1
    assert _threads.resolve_threads(0) is None and _threads.resolve_threads(3) == 3
    monkeypatch.setattr(_threads, "load_average", lambda: 0.9)
    monkeypatch.setattr(_threads, "available_cores", lambda: 2)
    assert _threads.resolve_threads("auto") == 1


def test_speed_prints_threads_wait_policy_and_load(tiny_dir, monkeypatch, capsys):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    threads = torch.get_num_threads()
    args = ["-q", "speed", "--dataset", str(tiny_dir), "--repeats", "1"]
    try:
        assert main([*args, "--set", "train.threads=auto", "--set", "train.batch_size=64"]) == 0
    finally:
        torch.set_num_threads(threads)
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("threads="))
    assert "(train.threads=auto)" in line and "omp_wait_policy=PASSIVE" in line
    assert " load=" in line and " cores=" in line
