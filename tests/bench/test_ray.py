"""The Ray executor on a local Ray instance (skipped without Ray, except under CI)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from oodrec.bench.executors import run_grid
from oodrec.bench.grid import expand_grid, load_grid

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def ray():
    try:
        import ray
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("ray is not installed under CI (pip install -e '.[dev]' brings it)")
        pytest.skip("ray is not installed")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def test_two_run_grid_through_ray(ray, tmp_path):
    runs = expand_grid(load_grid(SMOKE), out_dir=str(tmp_path))[:2]
    outcomes = run_grid(runs, executor="ray", show_progress=False)
    assert sorted(o.status for o in outcomes) == ["finished", "finished"], outcomes
    for run in runs:
        path = tmp_path / run.name
        record = json.loads((path / "record.json").read_text())
        assert record["seed"] == run.seed and record["environment"]["threads"] == 1
        assert json.loads((path / "bench.json").read_text())["method"] == run.method
    again = run_grid(runs, executor="ray", show_progress=False)
    assert [o.status for o in again] == ["skipped", "skipped"]


def test_missing_ray_is_a_clear_error(monkeypatch, tmp_path):
    import sys

    from oodrec.errors import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    runs = expand_grid(load_grid(SMOKE), out_dir=str(tmp_path))[:1]
    with pytest.raises(ConfigError, match=r"pip install 'oodrec\[ray\]'"):
        run_grid(runs, executor="ray", show_progress=False)
    assert not any(tmp_path.iterdir())


def test_tune_trials_as_ray_tasks_share_one_study(ray, tmp_path):
    pytest.importorskip("optuna")
    import yaml

    from oodrec.bench.grid import parse_grid
    from oodrec.bench.tune import finished, open_study, parse_tune, storage_url, study_name
    from oodrec.cli import main

    data = yaml.safe_load(SMOKE.read_text())
    data["methods"] = [{"name": "rns", "sampler": "rns"}]
    data["out_dir"] = str(tmp_path / "out")
    data["tune"] = {
        "trials": 3,
        "startup_trials": 1,
        "space": {"train.lr": {"low": 0.001, "high": 0.05}},
    }
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(data))
    args = ["-q", "tune", str(grid), "--executor", "ray", "--workers", "2", "--no-final"]
    assert main(args) == 0
    tune = parse_tune(parse_grid(data, str(grid)))
    study = open_study(storage_url(tmp_path / "out"), study_name("synthetic", "rns"), tune)
    assert len(finished(study)) == 3
