"""Run tracking (``--track``, docs/tracking.md): MLflow's metrics and TensorBoard's scalars equal
``epochs.jsonl``; a resumed run continues the same tracked run with each epoch once; a failing
backend warns once and changes nothing of the run; tracking off writes nothing extra."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from oodrec.cli import main
from oodrec.train.tracking import epoch_scalars, mlflow_key

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")

RUN = "tiny-rns-seed2025"


@pytest.fixture(autouse=True)
def _local_mlflow(tmp_path, monkeypatch):
    """No MLflow telemetry, no $MLFLOW_TRACKING_URI of the machine, and MLflow's artifacts
    (``./mlruns`` for a SQLite store) under the test's directory."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)


def _train(tiny_dir, out, *extra: str, epochs: int = 2) -> int:
    args = ["-q", "train", "--dataset", str(tiny_dir), "--epochs", str(epochs)]
    return main([*args, "--set", "train.batch_size=64", "--out", str(out), *extra])


def _resume(run: Path, *extra: str) -> int:
    return main(["-q", "train", "--resume", str(run), *extra])


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]


def _uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _mlflow(uri: str) -> list[str]:
    return ["--track", "mlflow", "--set", f"track.uri={uri}"]


def _mlflow_history(uri: str, run: Path) -> tuple[str, dict[str, list[tuple[int, float]]]]:
    """The run's MLflow run id, and each logged key's (step, value) points in step order."""
    from mlflow.tracking import MlflowClient

    state = json.loads((run / "tracking.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=uri)
    keys = client.get_run(state["run_id"]).data.metrics
    history = {
        key: sorted((m.step, m.value) for m in client.get_metric_history(state["run_id"], key))
        for key in keys
    }
    return state["run_id"], history


def _tensorboard(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Each scalar tag's (step, value) points in RUN/tensorboard/, as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    return {
        tag: sorted(
            (e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)
        )
        for tag in acc.Tags()["tensors"]
        if not tag.endswith("text_summary")
    }


def _expected(run: Path, key=lambda k: k) -> dict[str, list[tuple[int, float]]]:
    """epochs.jsonl as (step, value) points per logged key."""
    want: dict[str, list[tuple[int, float]]] = {}
    for row in _rows(run):
        for k, v in epoch_scalars(row).items():
            want.setdefault(key(k), []).append((row["epoch"], v))
    return want


def test_mlflow_run_metrics_equal_epochs_jsonl(tiny_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = _uri(tmp_path)
    assert _train(tiny_dir, tmp_path / "runs", *_mlflow(uri)) == 0
    run = tmp_path / "runs" / RUN
    run_id, history = _mlflow_history(uri, run)
    want = _expected(run, mlflow_key)
    assert {k: history[k] for k in want} == want  # every number of every row, exactly
    assert "val/recall_at_20" in want and "loss_bpr" in want and "fhn_ratio" in want
    record = json.loads((run / "record.json").read_text())
    assert history["best_epoch"] == [(1, record["best_epoch"])]
    assert history["best/ood_test/ndcg_at_20"][0][1] == record["metrics"]["ood_test"]["ndcg@20"]
    client = MlflowClient(tracking_uri=uri)
    found = client.get_run(run_id)
    assert found.info.status == "FINISHED" and found.info.run_name == RUN
    assert client.get_experiment(found.info.experiment_id).name == "oodrec"
    assert found.data.params["train.epochs"] == "2" and found.data.params["track.kind"] == "mlflow"
    assert {a.path for a in client.list_artifacts(run_id)} == {
        "record.json",
        "config.yaml",
        "epochs.jsonl",
    }


def test_tensorboard_scalars_equal_epochs_jsonl(tiny_dir, tmp_path):
    assert _train(tiny_dir, tmp_path / "runs", "--track", "tensorboard") == 0
    run = tmp_path / "runs" / RUN
    scalars = _tensorboard(run)
    want = _expected(run)
    assert {k: scalars[k] for k in want} == want  # stored in double precision: exactly equal
    assert "val/recall@20" in want and "ood_test/ndcg@20" in want
    record = json.loads((run / "record.json").read_text())
    assert scalars["best_epoch"] == [(1, record["best_epoch"])]
    assert not (run / "tracking.json").exists()


def test_a_resumed_run_continues_its_mlflow_run_with_each_epoch_once(tiny_dir, tmp_path):
    uri = _uri(tmp_path)
    assert _train(tiny_dir, tmp_path / "runs", *_mlflow(uri)) == 0
    run = tmp_path / "runs" / RUN
    first, _ = _mlflow_history(uri, run)
    assert _resume(run, "--epochs", "3") == 0  # tracking is in the run's config.yaml
    # from the checkpoint before the last: epoch 2 is trained again, and logged once
    assert _resume(run, "--epochs", "4", "--resume-from", "prev") == 0
    again, history = _mlflow_history(uri, run)
    assert again == first
    want = _expected(run, mlflow_key)
    assert [step for step, _ in want["loss"]] == [0, 1, 2, 3]
    # the replayed epoch 2 keeps its first points: the same numbers, but its first timings
    same = [k for k in want if not k.endswith("seconds")]
    assert {k: history[k] for k in same} == {k: want[k] for k in same}
    assert [step for step, _ in history["epoch_seconds"]] == [0, 1, 2, 3]


def test_a_resume_may_start_tracking_and_tensorboard_holds_each_epoch_once(tiny_dir, tmp_path):
    assert _train(tiny_dir, tmp_path / "runs") == 0
    run = tmp_path / "runs" / RUN
    assert not (run / "tensorboard").exists()
    assert _resume(run, "--epochs", "3", "--track", "tensorboard") == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["track"]["kind"] == "tensorboard"
    assert _resume(run, "--epochs", "4", "--resume-from", "prev") == 0
    scalars = _tensorboard(run)
    want = _expected(run)
    assert [step for step, _ in want["loss"]] == [0, 1, 2, 3]
    assert {k: scalars[k] for k in want} == want  # the earlier epochs too, each once


def _fail_mlflow(monkeypatch):
    from mlflow.tracking import MlflowClient

    def log_batch(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)


def _fail_tensorboard(monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    def add_scalar(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(SummaryWriter, "add_scalar", add_scalar)


def _comparable(run: Path) -> tuple:
    """What a run computed and wrote, timings and tracking aside."""
    rows = [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in _rows(run)]
    record = json.loads((run / "record.json").read_text())
    files = {p.name for p in run.iterdir()} - {"tracking.json", "tensorboard", ".lock"}
    ckpts = {p.name for p in (run / "checkpoints").iterdir()}
    return rows, record["metrics"], record["best_epoch"], files, ckpts


@pytest.mark.parametrize("kind", ["mlflow", "tensorboard"])
def test_a_failing_backend_warns_once_and_changes_nothing(
    kind, tiny_dir, tmp_path, monkeypatch, caplog
):
    (_fail_mlflow if kind == "mlflow" else _fail_tensorboard)(monkeypatch)
    out = tmp_path / "runs"
    extra = ["--set", f"track.uri={_uri(tmp_path)}"] if kind == "mlflow" else []
    with caplog.at_level(logging.WARNING, logger="oodrec"):
        assert _train(tiny_dir, out, "--track", kind, "--name", "tracked", *extra) == 0
    warned = [r for r in caplog.records if r.name == "oodrec.train.tracking"]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert kind in warned[0].getMessage() and "OSError: disk full" in warned[0].getMessage()
    assert _train(tiny_dir, out, "--name", "plain") == 0
    assert _comparable(out / "tracked") == _comparable(out / "plain")


def test_tracking_off_writes_nothing_extra_and_imports_no_backend(tiny_dir, tmp_path):
    assert _train(tiny_dir, tmp_path / "runs") == 0
    run = tmp_path / "runs" / RUN
    assert not (run / "tracking.json").exists() and not (run / "tensorboard").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["track"]["kind"] == "none"
    code = (
        "import sys; import oodrec.train.loop; from oodrec.cli import build_parser; "
        "build_parser(); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('mlflow', 'tensorboard')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_missing_backend_is_refused_before_anything_is_written(
    tiny_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    assert _train(tiny_dir, tmp_path / "runs", "--track", "mlflow") == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        'error: --track mlflow needs MLflow, which is not installed: pip install "oodrec[mlflow]"'
    )
    assert not (tmp_path / "runs").exists()


def test_old_config_files_load_and_tracking_never_makes_a_grid_conflict(tmp_path):
    """A config.yaml written before ``track`` existed loads with the defaults, and a grid run
    that differs from a run directory only in tracking is skipped (finished) or resumed."""
    from oodrec.bench.grid import expand_grid, load_grid
    from oodrec.bench.runner import plan_run
    from oodrec.config import load_yaml, to_dict

    grid = tmp_path / "mygrid.yaml"
    grid.write_text(
        yaml.safe_dump(
            {"methods": ["rns"], "datasets": ["food"], "seeds": [1], "out_dir": str(tmp_path)}
        )
    )
    (plain,) = expand_grid(load_grid(grid))
    (tracked,) = expand_grid(load_grid(grid), ["track.kind=mlflow"])
    (named,) = expand_grid(load_grid(grid), ["track.experiment=mine"])
    assert tracked.config.track.experiment == "mygrid"  # one MLflow experiment per grid
    assert named.config.track.experiment == "mine"
    path = tmp_path / plain.name
    path.mkdir()
    old = to_dict(plain.config)
    del old["track"]
    (path / "config.yaml").write_text(yaml.safe_dump(old))
    assert load_yaml(path / "config.yaml").track.kind == "none"
    assert plan_run(tracked, path) == "resume"
    (path / "record.json").write_text("{}")
    assert plan_run(tracked, path) == "skip"


def test_a_tuning_study_names_its_experiment(tmp_path):
    from oodrec.bench.grid import load_grid
    from oodrec.bench.tune import base_config, parse_tune

    grid = tmp_path / "search.yaml"
    grid.write_text(
        yaml.safe_dump(
            {
                "methods": ["rns"],
                "datasets": ["food"],
                "seeds": [1],
                "tune": {"trials": 2, "space": {"train.lr": {"low": 0.001, "high": 0.1}}},
            }
        )
    )
    spec = load_grid(grid)
    cfg = base_config(spec, "food", "rns", parse_tune(spec), ["track.kind=mlflow"])
    assert cfg.track.experiment == "search/food/rns"


def test_bench_tracks_every_run_in_the_grids_experiment(tiny_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = _uri(tmp_path)
    grid = tmp_path / "small.yaml"
    base = {"train": {"epochs": 2, "batch_size": 64}}
    grid.write_text(
        yaml.safe_dump(
            {"base": base, "methods": ["rns"], "datasets": [str(tiny_dir)], "seeds": [1, 2]}
        )
    )
    out = tmp_path / "runs"
    args = ["-q", "bench", str(grid), "--out", str(out), "--workers", "1"]
    assert main([*args, "--set", "track.kind=mlflow", "--set", f"track.uri={uri}"]) == 0
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("small")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["tiny-rns-seed1", "tiny-rns-seed2"]
    for name in ("tiny-rns-seed1", "tiny-rns-seed2"):
        _, history = _mlflow_history(uri, out / name)
        want = _expected(out / name, mlflow_key)
        assert {k: history[k] for k in want} == want
