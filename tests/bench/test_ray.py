"""The Ray executor on a local Ray instance (skipped without Ray, except under CI)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from oodrec.bench.grid import expand_grid, load_grid
from oodrec.bench.runner import run_grid

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
