"""One way to reload a run: evaluate, figures and resume share ``load_run`` /
``load_method_state``; a run that cannot be reloaded is an error naming it."""

from __future__ import annotations

import pytest
import torch

from oodrec.config import DataConfig, ExperimentConfig, TrainConfig, apply_overrides
from oodrec.data.dataset import load_dataset
from oodrec.errors import RunError
from oodrec.train.loop import train
from oodrec.train.reload import load_run


def _run(tiny_dir, tmp_path, *extra):
    cfg = ExperimentConfig(
        data=DataConfig(dataset=str(tiny_dir)),
        train=TrainConfig(epochs=2, batch_size=32, patience=0),
        seed=1,
    )
    cfg = apply_overrides(cfg, list(extra))
    res = train(cfg, load_dataset(cfg.data), run_dir=tmp_path / "run")
    return res, tmp_path / "run"


@pytest.mark.parametrize("extra", [(), ("model.name=diffrec", "model.dims=[8]")])
def test_reloaded_best_checkpoint_reproduces_the_record(tiny_dir, tmp_path, extra):
    res, run = _run(tiny_dir, tmp_path, *extra)
    loaded = load_run(run)
    assert loaded.epoch == res.best_epoch
    got = {s: r.means for s, r in loaded.evaluate().items()}
    assert got == res.metrics


def test_checkpoints_from_before_methods_still_load(tiny_dir, tmp_path):
    res, run = _run(tiny_dir, tmp_path)
    best = run / "checkpoints" / "best.pt"
    state = torch.load(best, weights_only=False)
    method_state = state.pop("method")
    # the pre-method layout: {"epoch", "model": LightGCN state, "sampler": sampler state}
    state["model"] = {
        k[len("model.") :]: v for k, v in method_state.items() if k.startswith("model.")
    }
    state["sampler"] = {
        k[len("sampler.") :]: v for k, v in method_state.items() if k.startswith("sampler.")
    }
    torch.save(state, best)
    got = {s: r.means for s, r in load_run(run).evaluate().items()}
    assert got == res.metrics


def test_unreloadable_runs_are_errors_naming_the_run(tiny_dir, tmp_path):
    _, run = _run(tiny_dir, tmp_path)
    best = run / "checkpoints" / "best.pt"
    state = torch.load(best, weights_only=False)
    state["method"]["model.user_emb"] = torch.zeros(3, 3)
    torch.save(state, best)
    with pytest.raises(RunError, match=r"best\.pt: checkpoint does not fit the run's method"):
        load_run(run)
    best.unlink()
    with pytest.raises(RunError, match=rf"run {run}: no best checkpoint"):
        load_run(run)
