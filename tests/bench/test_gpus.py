"""``--workers auto``: the policy on fake numbers, the probe plumbing and the runtime columns
(no GPU needed)."""

from __future__ import annotations

import argparse
import json
import time

import pytest

from oodrec.bench.gpus import GIB, GpuMonitor, choose_workers, worker_cap

from .helpers import write_run


def test_policy_utilisation_decides():
    choice = choose_workers(61 * GIB, int(2.1 * GIB), 23.0, 8)
    assert choice.workers == 4  # ceil(90 / 23)
    assert choice.limit == "utilisation"
    assert choice.reason.startswith("4 workers on cuda:0: 61.0 GiB free, ~2.1 GiB per run")
    assert "utilisation 23% with 1 run" in choice.reason


def test_policy_memory_decides():
    # 10 GiB free, 0.9 usable, 3 GiB x 1.5 margin per run: 2 runs
    choice = choose_workers(10 * GIB, 3 * GIB, 5.0, 8, device="cuda:1")
    assert (choice.workers, choice.limit) == (2, "memory")
    assert "on cuda:1" in choice.reason


def test_policy_cap_decides_and_unknown_utilisation_bounds_nothing():
    choice = choose_workers(80 * GIB, GIB // 2, None, 8)
    assert (choice.workers, choice.limit) == (8, "cap")
    assert "not measured" in choice.reason
    assert choose_workers(80 * GIB, GIB // 2, 0.0, 3).workers == 3  # idle GPU: cap


def test_policy_conservative_without_a_measurement_or_room():
    assert choose_workers(80 * GIB, None, 10.0, 8).workers == 1
    busy = choose_workers(80 * GIB, GIB, 95.0, 8)
    assert (busy.workers, busy.limit) == (1, "utilisation")
    tight = choose_workers(GIB, 4 * GIB, 10.0, 8)
    assert tight.workers == 1
    assert "may not fit" in tight.reason


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"cap": 0}, "cap"),
        ({"free_bytes": -1}, "free_bytes"),
        ({"run_bytes": -5}, "run_bytes"),
        ({"utilization": 130.0}, "utilization"),
        ({"target_utilization": 0.0}, "target_utilization"),
        ({"headroom": 1.0}, "headroom"),
        ({"margin": 0.5}, "margin"),
    ],
)
def test_policy_names_bad_values(kwargs, named):
    args = {"free_bytes": GIB, "run_bytes": GIB, "utilization": 10.0, "cap": 8, **kwargs}
    with pytest.raises(ValueError, match=named):
        choose_workers(**args)


def test_worker_cap():
    assert worker_cap(1, 16) == 8
    assert worker_cap(1, 2) == 2
    assert worker_cap(4, 16) == 4
    assert worker_cap(2, None) == 1


def test_monitor_samples_and_probes_once():
    probes = []
    values = iter([20.0, None, 40.0] + [60.0] * 1000)
    monitor = GpuMonitor(
        0, interval=0.01, probe_seconds=0.0, on_probe=probes.append, read=lambda g: next(values)
    )
    monitor.start()
    time.sleep(0.2)
    stats = monitor.stop()
    assert len(probes) == 1
    assert stats["utilization_samples"] >= 2
    assert stats["utilization_mean"] is not None and 20.0 <= stats["utilization_mean"] <= 60.0
    assert probes[0]["utilization_samples"] >= 1


def test_monitor_without_samples_reports_none():
    probes = []
    monitor = GpuMonitor(0, interval=5.0, on_probe=probes.append, read=lambda g: None).start()
    stats = monitor.stop()
    assert stats["utilization_mean"] is None and stats["utilization_samples"] == 0
    assert probes == [stats | {"seconds": probes[0]["seconds"]}]  # sent at the end


def test_auto_tick_opens_the_allowed_workers_once(monkeypatch):
    import queue

    from oodrec.bench import executors

    opened = []

    class FakePool:
        def __init__(self, ctx, gpus, threads, probes):
            opened.append(gpus)

    monkeypatch.setattr(executors, "_Pool", FakePool)
    probes: queue.Queue = queue.Queue()
    stats = {
        "peak_memory_reserved_bytes": int(1.6 * GIB),
        "free_bytes_at_start": 61 * GIB,
        "utilization_mean": 23.0,
    }
    probes.put((0, {"peak_memory_reserved_bytes": 0}))  # a run that failed early: no decision
    probes.put((0, stats))
    probes.put((0, stats))  # a later run on the same GPU: ignored
    pools: list = []
    executors._auto_tick(probes, None, 2, 8, set())(pools)
    assert opened == [[0, 0, 0]]  # 4 runs: the probe's worker and 3 more
    assert len(pools) == 1


def test_workers_option_parses_counts_and_auto():
    from oodrec.cli_bench import _workers

    assert _workers("auto") == "auto"
    assert _workers("AUTO") == "auto"
    assert _workers("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="'many'"):
        _workers("many")


@pytest.mark.parametrize("workers", [0, "some", 1.5])
def test_bench_refuses_bad_workers(tmp_path, workers):
    from oodrec.bench.workflow import BenchOptions, run_bench
    from oodrec.errors import ConfigError

    with pytest.raises(ConfigError, match="--workers"):
        run_bench("configs/smoke.yaml", BenchOptions(workers=workers, out=str(tmp_path)))


def test_auto_on_cpu_runs_in_process(tmp_path, monkeypatch, caplog):
    """``auto`` for CPU runs is one worker, in this process (no pool is made)."""
    import logging

    from oodrec.bench import executors
    from oodrec.bench.workflow import BenchOptions, Subset, run_bench

    monkeypatch.setattr(executors, "_Pool", None)  # any pool would fail
    options = BenchOptions(
        subset=Subset(methods=["rns"], seeds=[1]),
        overrides=("train.epochs=1",),
        out=str(tmp_path),
        workers="auto",
        show_progress=False,
    )
    with caplog.at_level(logging.INFO, logger="oodrec.bench.executors"):
        outcome = run_bench("configs/smoke.yaml", options)
    assert [o.status for o in outcome.outcomes] == ["finished"]
    assert "1 worker (the runs do not use plain cuda)" in caplog.text
    bench = json.loads(next(tmp_path.glob("*/bench.json")).read_text())
    assert "gpu" not in bench  # CPU runs record no GPU numbers


def test_runtime_table_gpu_columns(tmp_path):
    from oodrec.bench.records import load_runs
    from oodrec.bench.report import build_tables

    write_run(tmp_path, "food-rns-seed1", seed=1, method="rns")
    (runtime,) = build_tables(load_runs(tmp_path))["runtime"]
    assert "GPU util %" not in runtime.columns  # no run recorded any: no columns
    for seed, util in ((2, 20.0), (3, 40.0)):
        path = write_run(tmp_path, f"food-rns-cuda-seed{seed}", seed=seed, method="rns")
        record = json.loads((path / "record.json").read_text())
        record["environment"].update(device="cuda", device_name="NVIDIA H100")
        (path / "record.json").write_text(json.dumps(record))
        bench = json.loads((path / "bench.json").read_text())
        bench["gpu"] = {"utilization_mean": util, "peak_memory_allocated_bytes": seed * GIB}
        (path / "bench.json").write_text(json.dumps(bench))
    (runtime,) = build_tables(load_runs(tmp_path))["runtime"]
    assert runtime.columns[-2:] == ["GPU util %", "peak GPU GiB"]
    rows = {r[3].text: [c.text for c in r] for r in runtime.rows}
    assert rows["NVIDIA H100"][-2:] == ["30", "3.00"]
    assert rows["x86_64"][-2:] == ["–", "–"]


def test_fixed_workers_pool_runs_every_job(tmp_path):
    """``--workers 2`` on CPU runs: a pool of 2 spawned workers finishes both runs."""
    from oodrec.bench.workflow import BenchOptions, Subset, run_bench

    options = BenchOptions(
        subset=Subset(methods=["rns"]),
        overrides=("train.epochs=1",),
        out=str(tmp_path),
        workers=2,
        show_progress=False,
    )
    outcome = run_bench("configs/smoke.yaml", options)
    assert sorted(o.status for o in outcome.outcomes) == ["finished", "finished"]
    assert len(list(tmp_path.glob("*/record.json"))) == 2
