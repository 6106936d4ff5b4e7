"""InvCF pieces against hand calculations on tiny tensors."""

from __future__ import annotations

import pytest
import torch

from oodrec.config import ExperimentConfig, apply_overrides
from oodrec.methods import MethodContext, TrainData
from oodrec.methods.invcf import (
    InvCF,
    InvCFOptions,
    degree_ranks,
    disentangle,
    distance_correlation,
    swap_concat,
)


def test_degree_rank_tables_share_one_embedding_per_distinct_degree():
    ranks, k = degree_ranks(torch.tensor([3, 1, 3, 7, 1, 0]))
    # distinct sorted degrees 0, 1, 3, 7 -> ranks 0..3
    assert ranks.tolist() == [2, 1, 2, 3, 1, 0] and k == 4


def test_method_tables_come_from_training_degrees():
    users = torch.tensor([0, 0, 0, 1, 2, 2])
    items = torch.tensor([0, 1, 2, 0, 0, 1])
    data = TrainData("t", 3, 4, users, items)
    cfg = apply_overrides(ExperimentConfig(), ["model.name=invcf", "model.emb_dim=4"])
    m = InvCF(MethodContext(data, cfg, torch.device("cpu")), InvCFOptions())
    # user degrees 3, 1, 2 -> ranks 2, 0, 1; item degrees 3, 2, 1, 0 -> ranks 3, 2, 1, 0
    assert m.user_rank.tolist() == [2, 0, 1] and m.item_rank.tolist() == [3, 2, 1, 0]
    assert m.user_pop.shape == (3, 4) and m.item_pop.shape == (4, 4)


def test_swap_concat_permutes_only_the_popularity_half():
    pop = torch.tensor([[1.0], [2.0], [3.0]])
    pref = torch.tensor([[10.0], [20.0], [30.0]])
    assert swap_concat(pop, pref).tolist() == [[1, 10], [2, 20], [3, 30]]
    perm = torch.tensor([2, 0, 1])
    assert swap_concat(pop, pref, perm).tolist() == [[3, 10], [1, 20], [2, 30]]


def test_distance_correlation_hand_cases():
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    assert distance_correlation(x, 2 * x + 1).item() == pytest.approx(1.0, abs=1e-6)
    # y = (x - 1.5)^2 on a symmetric grid: dependent, so dCor > 0, but not linear
    y = (x - 1.5) ** 2
    assert 0.0 < distance_correlation(x, y).item() < 1.0


def test_distances_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 0.0], [0.0, 3.0]])
    assert disentangle(a, b, "l1").item() == pytest.approx((1 + 2) / 2)
    assert disentangle(a, b, "l2").item() == pytest.approx((1 + 4) / 2)
    # mean rows: (0.5, 0.5) vs (0, 1.5) -> 0.25 + 1
    assert disentangle(a, b, "mmd").item() == pytest.approx(1.25)


def test_loss_terms_weighting_and_code_order(monkeypatch):
    users = torch.tensor([0, 0, 1, 1, 2])
    items = torch.tensor([0, 1, 1, 2, 3])
    data = TrainData("t", 3, 5, users, items)
    cfg = apply_overrides(ExperimentConfig(), ["model.name=invcf", "model.emb_dim=4"])
    ctx = MethodContext(data, cfg, torch.device("cpu"))
    batch_args = (torch.tensor([0, 1]), torch.tensor([0, 2]))
    from oodrec.samplers import TripletBatch

    batch = TripletBatch(*batch_args)
    terms = {}
    for concat in ("consistent", "code"):
        m = InvCF(ctx, InvCFOptions(lambda1=0.5, lambda3=0.25, concat=concat))
        terms[concat] = m.loss(batch, torch.Generator().manual_seed(0))
    a, b = terms["consistent"], terms["code"]
    assert set(a) == {"bpr", "l2", "pop", "aug"}  # lambda2 = 0: no D term
    assert a["bpr"] == b["bpr"] and a["pop"] == b["pop"] and a["aug"] != b["aug"]


def test_branch_weights_scale_their_terms_linearly():
    users = torch.tensor([0, 0, 1, 1, 2])
    items = torch.tensor([0, 1, 1, 2, 3])
    data = TrainData("t", 3, 5, users, items)
    cfg = apply_overrides(ExperimentConfig(), ["model.name=invcf", "model.emb_dim=4"])
    ctx = MethodContext(data, cfg, torch.device("cpu"))
    from oodrec.samplers import TripletBatch

    batch = TripletBatch(torch.tensor([0, 1]), torch.tensor([0, 2]))

    def terms(**kw):
        return InvCF(ctx, InvCFOptions(**kw)).loss(batch, torch.Generator().manual_seed(0))

    one, two = terms(lambda1=1.0, lambda3=1.0), terms(lambda1=2.0, lambda3=3.0)
    assert two["pop"].item() == pytest.approx(2 * one["pop"].item(), rel=1e-6)
    assert two["aug"].item() == pytest.approx(3 * one["aug"].item(), rel=1e-6)
    d = terms(lambda2=2.0, distype="l2")["disentangle"]
    assert d.item() < 0  # distances are subtracted (pushed apart), as in the official code
