"""AdvInfoNCE pieces against hand calculations: the loss, the hardness weights, the adversary's
schedule and the sign of its ascent step."""

from __future__ import annotations

import math

import pytest
import torch

from oodrec.config import ExperimentConfig, apply_overrides
from oodrec.methods import MethodContext, TrainData
from oodrec.methods.advinfonce import AdvInfoNCE, AdvInfoNCEOptions, adv_infonce
from oodrec.samplers import TripletBatch


def test_uniform_hardness_is_infonce_with_k_neg_scaling():
    s_pos, s_neg = torch.tensor([0.5]), torch.tensor([[0.1, -0.2]])
    p = torch.full((1, 2), 0.5)
    want = -math.log(math.exp(0.5) / (math.exp(0.5) + 3 * (math.exp(0.1) + math.exp(-0.2))))
    assert adv_infonce(s_pos, s_neg, p, tau=1.0, k_neg=3.0).item() == pytest.approx(want)
    # temperature divides every score
    want_t = -math.log(math.exp(1.0) / (math.exp(1.0) + math.exp(0.2) + math.exp(-0.4)))
    assert adv_infonce(s_pos, s_neg, p, tau=0.5, k_neg=1.0).item() == pytest.approx(want_t)


def test_hardness_weights_concentrate_the_negative_mass():
    s_pos, s_neg = torch.tensor([0.0]), torch.tensor([[1.0, 0.0]])
    # all weight on the harder negative: N * p = (2, 0)
    p = torch.tensor([[1.0, 0.0]])
    want = -math.log(1 / (1 + 2 * math.e))
    assert adv_infonce(s_pos, s_neg, p, 1.0, 1.0).item() == pytest.approx(want, rel=1e-6)


def _method(**kw) -> AdvInfoNCE:
    users = torch.tensor([0, 0, 1, 1, 2, 2])
    items = torch.tensor([0, 1, 1, 2, 3, 4])
    data = TrainData("t", 3, 6, users, items)
    cfg = apply_overrides(
        ExperimentConfig(), ["model.name=advinfonce", "model.emb_dim=4", "train.batch_size=4"]
    )
    opts = AdvInfoNCEOptions(adv_dim=3, neg_sample=3, **kw)
    return AdvInfoNCE(MethodContext(data, cfg, torch.device("cpu")), opts)


def test_hardness_is_a_softmax_of_adversary_scores():
    m = _method()
    with torch.no_grad():
        m.adv_user.copy_(torch.tensor([[1.0, 0, 0]] * 3))
        m.adv_item.copy_(torch.tensor([[float(k), 0, 0] for k in range(6)]))
    p = m.hardness(torch.tensor([0]), torch.tensor([[0, 1, 2]]))
    e = [math.exp(k) for k in range(3)]
    assert p[0].tolist() == pytest.approx([x / sum(e) for x in e])


def test_adversary_schedule_and_pass_cap():
    m = _method(adv_interval=5, eta_epochs=2, warm_up_epochs=0)
    counts = []
    for epoch in range(20):
        m.start_epoch(epoch)
        steps = sum(1 for _ in m.batches(epoch, torch.Generator().manual_seed(epoch)))
        counts.append(steps - 2)  # 6 pairs / batch 4 -> 2 main steps per epoch
    # (e + 3) % 5 == 0 and e > 0: epochs 2, 7 (then the cap of 2 passes is reached)
    assert [e for e, c in enumerate(counts) if c] == [2, 7] and int(m.adv_passes) == 2
    m2 = _method(adv_interval=5, eta_epochs=2)
    m2.start_epoch(2)
    assert [m2.phase(2, s) for s in range(4)] == ["adversary", "adversary", "main", "main"]


def test_adversary_step_ascends_the_loss():
    m = _method(adv_lr=0.5)
    opt = m.optimizers()["adversary"]
    batch = TripletBatch(torch.tensor([0, 1, 2]), torch.tensor([0, 2, 4]))

    def loss_now(phase):
        return m.loss(batch, torch.Generator().manual_seed(1), phase)

    before = loss_now("main")["infonce"].item()
    term = loss_now("adversary")["adv_loss"]
    assert term.item() == pytest.approx(-before, rel=1e-6)  # the adversary minimises -L
    m.zero_grad(set_to_none=True)
    term.backward()
    assert m.model.user_emb.grad is None  # the recommender is frozen in this phase
    opt.step()
    assert loss_now("main")["infonce"].item() > before
