"""`oodrec bench` + `oodrec report` end to end on CPU, and resuming a killed grid."""

from __future__ import annotations

import csv
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from oodrec.bench.grid import expand_grid, load_grid
from oodrec.cli import main

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.yaml"


def _smoke_names() -> list[str]:
    return sorted(run.name for run in expand_grid(load_grid(SMOKE)))


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_smoke_bench_then_report(tmp_path, capsys, caplog):
    runs = tmp_path / "runs"
    assert main(["-q", "bench", str(SMOKE), "--out", str(runs)]) == 0
    n = len(_smoke_names())
    assert f"{n} finished" in capsys.readouterr().out
    names = sorted(p.name for p in runs.iterdir())
    assert names == _smoke_names()
    for name in names:
        assert {"config.yaml", "bench.json", "record.json", "epochs.jsonl", "per_user.pt"} <= {
            p.name for p in (runs / name).iterdir()
        }
    # a rerun skips everything; a changed config is refused unless --force
    assert main(["-q", "bench", str(SMOKE), "--out", str(runs)]) == 0
    assert f"{n} skipped" in capsys.readouterr().out
    assert main(["-q", "bench", str(SMOKE), "--out", str(runs), "--set", "train.lr=0.02"]) == 2
    assert "different config: train.lr (0.01 -> 0.02)" in capsys.readouterr().err
    out = tmp_path / "results"
    figures = "--figures" if _has_matplotlib() else "--no-figures"
    assert main(["-q", "report", str(runs), "--out", str(out), figures]) == 0
    table = (out / "table1.md").read_text()
    assert "*selected on val; full ranking*" in table
    assert "| rns |" in table and "| cnsdiff |" in table
    assert "Improv. (%)" in table and "p-value" in table
    assert {"table1.csv", "table1.tex", "runtime.md", "report.md"} <= {
        p.name for p in out.iterdir()
    }
    if _has_matplotlib():
        made = {p.name for p in (out / "figures").iterdir()}
        assert {"fig1_synthetic.png", "fig1_synthetic.pdf", "fig5_synthetic.png"} <= made
        # Figure 1's bucket figures as a table: every method x 4 buckets, shares summing to 1
        rows = list(csv.DictReader((out / "figures" / "fig1_synthetic.csv").open()))
        assert len(rows) == 4 * len({r["method"] for r in rows}) and len(rows) >= 8
        for method in {r["method"] for r in rows}:
            mine = [r for r in rows if r["method"] == method]
            assert sum(float(r["slot_share_mean"]) for r in mine) == pytest.approx(1.0, abs=1e-4)
            assert sum(float(r["held_out_share"]) for r in mine) == pytest.approx(1.0, abs=1e-4)
        # a run whose checkpoints are gone (pruned, or not copied back from a GPU machine) is
        # left out of Figure 1's buckets with a warning naming it; the tables keep it
        (runs / names[0] / "checkpoints" / "best.pt").unlink()
        with caplog.at_level(logging.WARNING, logger="oodrec.bench.plots"):
            assert main(["-q", "report", str(runs), "--out", str(tmp_path / "r2"), figures]) == 0
        assert "1 run(s) without checkpoints/best.pt left out" in caplog.text
        assert names[0] in caplog.text
        assert (tmp_path / "r2" / "table1.md").read_text() == table


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _workers_until(proc: subprocess.Popen, ready, what: str) -> set[int]:
    """The child processes ``proc`` had, polled until ``ready()`` (at most 120 s)."""
    deadline = time.time() + 120
    workers: set[int] = set()
    while time.time() < deadline and not ready():
        workers |= set(_children(proc.pid))
        if proc.poll() is not None:
            pytest.fail(f"{what} ended before it could be killed: {proc.stderr.read().decode()}")
        time.sleep(0.02)
    return workers | set(_children(proc.pid))


def _orphans(workers: set[int]) -> list[int]:
    """Workers still alive 10 s after their parent was killed (SIGKILLed here, so that a
    failing test leaves nothing training on)."""
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    orphans = [p for p in workers if _alive(p)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    return orphans


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_killed_bench_resumes_without_redoing_finished_runs(tmp_path):
    grid = yaml.safe_load(SMOKE.read_text())
    # the cnsdiff runs last long enough (20 epochs) to be cut by the kill
    grid["methods"][1]["overrides"] = ["train.epochs=20"]
    grid["out_dir"] = str(tmp_path / "runs")
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    runs = tmp_path / "runs"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "oodrec.cli", "-q", "bench", str(path)]
    proc = subprocess.Popen(
        [*cmd, "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    workers = _workers_until(proc, lambda: list(runs.glob("*/record.json")), "bench")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the pool's workers notice their parent is gone and exit instead of writing on
    assert not _orphans(workers)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/record.json")}
    assert 1 <= len(finished) < len(_smoke_names())
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"{len(finished)} skipped" in out.stdout
    after = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/record.json")}
    assert len(after) == len(_smoke_names())
    assert {name: after[name] for name in finished} == finished


def test_missing_data_fails_once_before_any_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OODREC_DATA", str(tmp_path / "nowhere"))
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        yaml.safe_dump(
            {
                "out_dir": str(tmp_path / "out"),
                "methods": ["rns"],
                "datasets": ["food", "yahoo_r3", str(tmp_path / "no_such_dir")],
                "seeds": [1, 2],
            }
        )
    )
    assert main(["-q", "bench", str(grid)]) == 2
    err = capsys.readouterr().err
    assert "nothing was run" in err and "food/train.txt" in err and "yahoo_r3/train.txt" in err
    assert "no_such_dir" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_run_finished_by_another_bench_is_not_retrained(tmp_path):
    """Two benches of one grid: a job planned as new before the other bench finished it is
    planned again under the run's lock and skipped, so the finished run is not wiped."""
    from oodrec.bench.runner import execute_job, plan_grid

    grid = yaml.safe_load(SMOKE.read_text())
    grid["out_dir"] = str(tmp_path / "runs")
    grid["methods"] = grid["methods"][:1]
    grid["seeds"] = [1]
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    runs = expand_grid(load_grid(path))
    stale, _ = plan_grid(runs, grid=str(path))  # this bench's plan, made before the other ran
    assert [j.action for j in stale] == ["new"]
    assert main(["-q", "bench", str(path)]) == 0  # the other bench finishes the run
    record = stale[0].path / "record.json"
    before = record.stat().st_mtime_ns
    outcome = execute_job(stale[0])
    assert outcome.status == "skipped", outcome.error
    assert record.stat().st_mtime_ns == before
