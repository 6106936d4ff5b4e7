"""GPU checks (marker ``gpu``; outside the default tier, skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from oodrec.config import (
    DataConfig,
    ExperimentConfig,
    SamplerConfig,
    TrainConfig,
    apply_overrides,
)
from oodrec.data.dataset import load_dataset
from oodrec.train.loop import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("sampler", ["rns", "cnsdiff", "dns", "mixgcf", "ahns", "pns", "dmns"])
def test_one_epoch_on_cuda(tiny_dir, sampler):
    cfg = ExperimentConfig(
        data=DataConfig(dataset=str(tiny_dir)),
        sampler=SamplerConfig(sampler, {}),
        train=TrainConfig(epochs=1, batch_size=64, device="cuda"),
    )
    res = train(cfg, load_dataset(cfg.data))
    assert res.record["environment"]["device"].startswith("cuda")
    assert 0.0 <= res.metrics["ood_test"]["recall@20"] <= 1.0


def _method_names() -> list[str]:
    from oodrec.methods import METHODS

    return METHODS.names()


@pytest.mark.parametrize("name", _method_names())
def test_every_method_trains_and_evaluates_on_cuda(tiny_dir, name):
    """Each registered method (its contract suite's fast settings), two epochs on CUDA."""
    from methods.test_contract import _cfg  # tests/ is on sys.path (rootdir conftest)

    cfg = apply_overrides(_cfg(tiny_dir, name, epochs=2), ["train.device=cuda"])
    res = train(cfg, load_dataset(cfg.data))
    assert res.record["environment"]["device"].startswith("cuda")
    for split in ("val", "iid_test", "ood_test"):
        assert 0.0 <= res.metrics[split]["ndcg@20"] <= 1.0


@pytest.mark.parametrize("metric", ["ips_ndcg@20", "strat_ndcg@20"])
def test_ood_aware_val_selection_on_cuda(tiny_dir, metric):
    """The IPS and stratified val estimators (their bucket and weight tensors) on CUDA."""
    cfg = apply_overrides(
        ExperimentConfig(data=DataConfig(dataset=str(tiny_dir))),
        [
            "train.epochs=2",
            "train.batch_size=64",
            "train.device=cuda",
            f"train.select_metric={metric}",
        ],
    )
    res = train(cfg, load_dataset(cfg.data))
    assert res.record["selection"]["metric"] == metric
    assert 0.0 <= res.metrics["val"][metric] <= 1.0
