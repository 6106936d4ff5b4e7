"""OOD-aware val estimators (IPS-weighted and popularity-stratified) against hand calculations."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from oodrec.config import EvalConfig, ExperimentConfig, TrainConfig, validate_config
from oodrec.data.csr import CSR
from oodrec.data.dataset import DataReport, InteractionDataset, Interactions
from oodrec.errors import ConfigError
from oodrec.eval.estimators import (
    ValEstimators,
    describe_estimator,
    equal_mass_buckets,
    ips_weights,
)
from oodrec.eval.evaluate import Evaluator
from oodrec.train.selection import selection_label

DEG = torch.tensor([9, 3, 0, 1])  # training degree of items 0..3
L3 = math.log2(3)


def test_ips_weights_by_hand():
    # (d_max + 1) / (d + 1) = 10 / [10, 4, 1, 2]
    assert ips_weights(DEG, 1.0, 100.0).tolist() == pytest.approx([1.0, 2.5, 10.0, 5.0])
    assert ips_weights(DEG, 1.0, 4.0).tolist() == pytest.approx([1.0, 2.5, 4.0, 4.0])
    assert ips_weights(DEG, 0.5, 100.0).tolist() == pytest.approx([1.0, 2.5**0.5, 10**0.5, 5**0.5])
    assert ips_weights(DEG, 0.0, 100.0).tolist() == [1.0] * 4


def test_equal_mass_buckets_by_hand():
    # sorted by degree: item2 (0), item3 (1), item1 (3), item0 (9); total 13; mass midpoints
    # 0, 0.5, 2.5, 8.5 -> floor(2 * mid / 13) = 0, 0, 0, 1
    assert equal_mass_buckets(DEG, 2).tolist() == [1, 0, 0, 0]
    # 3 buckets: floor(3 * mid / 13) = 0, 0, 0, 1
    assert equal_mass_buckets(DEG, 3).tolist() == [1, 0, 0, 0]
    # equal degrees: equal-size buckets
    assert equal_mass_buckets(torch.tensor([5, 5, 5, 5]), 2).tolist() == [0, 0, 1, 1]
    assert equal_mass_buckets(torch.zeros(3, dtype=torch.long), 2).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        equal_mass_buckets(DEG, 0)


def _case():
    # val: user 0 -> {1, 2}, user 1 -> {0}; user 2 has no val item
    truth = CSR(torch.tensor([0, 0, 1]), torch.tensor([1, 2, 0]), 3)
    est = ValEstimators(truth, DEG, (2,), gamma=1.0, clip=100.0, strata=2)
    users = torch.tensor([0, 1])
    top = torch.tensor([[2, 3], [1, 0]])
    hits = torch.tensor([[True, False], [False, True]])
    return est, users, top, hits


def test_ips_metrics_by_hand():
    est, users, top, hits = _case()
    out = est.update(users, top, hits)
    # w = [1, 2.5, 10, 5]; user 0 hits item 2 (w 10) at rank 1 of {1, 2}; user 1 hits item 0
    # (w 1) at rank 2 of {0}
    assert out["ips_recall@2"].tolist() == pytest.approx([10 / 12.5, 1.0])
    idcg0 = 10 + 2.5 / L3  # heaviest first
    assert out["ips_ndcg@2"].tolist() == pytest.approx([10 / idcg0, (1 / L3) / 1.0])


def test_strat_metrics_by_hand():
    est, users, top, hits = _case()
    est.update(users, top, hits)
    got = est.strat_means()
    # buckets [1, 0, 0, 0]: bucket 0 has user 0 ({1, 2}, hit item 2 at rank 1): R 1/2,
    # N 1 / (1 + 1/log2 3); bucket 1 has user 1 ({0}, hit at rank 2): R 1, N 1/log2 3
    assert got["strat_recall@2"] == pytest.approx((0.5 + 1.0) / 2)
    assert got["strat_ndcg@2"] == pytest.approx((1 / (1 + 1 / L3) + 1 / L3) / 2)
    # accumulates across batches and resets
    est.reset()
    est.update(users[:1], top[:1], hits[:1])
    est.update(users[1:], top[1:], hits[1:])
    assert est.strat_means() == pytest.approx(got)


def _dataset(seed: int) -> InteractionDataset:
    gen = torch.Generator().manual_seed(seed)
    num_users, num_items = 23, 17
    splits = {}
    for name, per_user in (("train", 6), ("val", 3), ("iid_test", 2), ("ood_test", 2)):
        keys = torch.randperm(num_users * num_items, generator=gen)[: num_users * per_user]
        splits[name] = Interactions(keys // num_items, keys % num_items)
    return InteractionDataset("rand", num_users, num_items, splits, DataReport("rand", ""))


def test_evaluator_val_estimators_reduce_to_plain_metrics():
    ds = _dataset(0)
    scores = torch.randn(ds.num_users, ds.num_items, generator=torch.Generator().manual_seed(1))
    # gamma 0: every weight is 1, so IPS equals the plain metric; 1 stratum: the plain metric
    ev = Evaluator(ds, EvalConfig(ks=(3, 5), ips_gamma=0.0, strata=1), torch.device("cpu"))
    res = ev.evaluate(lambda u: scores[u].clone())
    val = res["val"].means
    for m in ("recall@3", "ndcg@3", "recall@5", "ndcg@5"):
        assert val[f"ips_{m}"] == pytest.approx(val[m], rel=1e-12)
        assert val[f"strat_{m}"] == pytest.approx(val[m], rel=1e-12)
    assert not any(k.startswith(("ips_", "strat_")) for k in res["ood_test"].means)
    # with weights, the IPS values differ and lie in [0, 1]
    ev = Evaluator(ds, EvalConfig(ks=(3, 5), ips_gamma=1.0, strata=3), torch.device("cpu"))
    val = ev.evaluate(lambda u: scores[u].clone())["val"].means
    assert 0 <= val["ips_ndcg@5"] <= 1 and 0 <= val["strat_recall@5"] <= 1


def test_estimator_selection_config_and_label():
    cfg = ExperimentConfig(train=TrainConfig(select_metric="ips_ndcg@20"))
    validate_config(cfg)
    with pytest.raises(ConfigError, match="select_on=val"):
        validate_config(
            ExperimentConfig(train=TrainConfig(select_metric="strat_ndcg@20", select_on="ood_test"))
        )
    with pytest.raises(ConfigError, match="ips_ndcg@20"):
        validate_config(ExperimentConfig(train=TrainConfig(select_metric="ipsndcg@20")))
    with pytest.raises(ConfigError):
        EvalConfig(ips_clip=0.5)
    assert describe_estimator("ndcg@20", cfg.eval) is None
    label = selection_label(cfg.train, cfg.eval)
    assert label == "selected on val by IPS-weighted ndcg@20 (gamma=0.5, clip=100)"
    assert selection_label(TrainConfig()) == "selected on val"


def test_estimator_selection_reaches_the_record_and_the_report(tmp_path):
    from oodrec.bench.records import load_runs
    from oodrec.bench.render import to_markdown
    from oodrec.bench.report import build_tables
    from oodrec.config import DataConfig, ModelConfig
    from oodrec.data.dataset import load_dataset
    from oodrec.train.loop import train

    base = ExperimentConfig(
        data=DataConfig(dataset="synthetic", synthetic={"num_users": 60, "num_items": 80}),
        model=ModelConfig(emb_dim=8),
        train=TrainConfig(epochs=2, batch_size=128, patience=0, threads=1, fhn_batches=1),
        out_dir=str(tmp_path),
    )
    ds = load_dataset(base.data)
    for metric in ("ndcg@20", "ips_ndcg@20"):
        cfg = replace(base, train=replace(base.train, select_metric=metric), name=metric)
        res = train(cfg, ds, run_dir=tmp_path / metric)
        assert "ips_ndcg@20" in res.metrics["val"] and "strat_ndcg@20" in res.metrics["val"]
        assert "ips_ndcg@20" not in res.metrics["ood_test"]
    runs = load_runs(tmp_path)
    assert {r.record["selection"]["metric"] for r in runs} == {"ndcg@20", "ips_ndcg@20"}
    text = "\n".join(to_markdown(t) for t in build_tables(runs, target="rns")["table1"])
    assert "*selected on val; full ranking*" in text
    assert "*selected on val by IPS-weighted ndcg@20 (gamma=0.5, clip=100); full ranking*" in text
