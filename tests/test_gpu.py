"""GPU checks (marker ``gpu``; outside the default tier, skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from oodrec.config import DataConfig, ExperimentConfig, SamplerConfig, TrainConfig
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
