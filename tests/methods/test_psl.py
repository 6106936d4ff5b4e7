"""PSL pieces against hand calculations: the three surrogates, the loss in both forms, the
whole method's loss on MF, scale invariance (the basis of the implied lr), and cosine scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from oodrec.config import ExperimentConfig, apply_overrides
from oodrec.errors import ConfigError
from oodrec.methods import MethodContext, TrainData
from oodrec.methods.common import HistoryIndex
from oodrec.methods.psl import PSL, PSLOptions
from oodrec.models.psl import LOG_FLOOR, log_surrogate, psl_loss
from oodrec.samplers import PositiveIndex, TripletBatch
from oodrec.samplers.base import uniform_items

S_POS = [0.6, -0.2]
S_NEG = [[0.2, 0.8, -0.4], [0.1, -0.3, 0.5]]
SIGMA = {
    "tanh": lambda d: math.tanh(d) + 1,
    "atan": lambda d: math.atan(d) + 1,
    "relu": lambda d: max(d + 1, 0.0),
}


def _by_hand(activation, tau, score_tau=2.0, form="softmax", include_positive=False):
    rows = []
    for sp, negs in zip(S_POS, S_NEG):
        terms = [SIGMA[activation]((sn - sp) / score_tau) ** (1 / tau) for sn in negs]
        rows.append(([1.0] if include_positive else []) + terms)
    if form == "softmax":
        return sum(math.log(sum(r)) for r in rows) / len(rows)
    flat = [t for r in rows for t in r]
    return math.log(sum(flat) / len(flat))


def test_surrogates_at_hand_values():
    d = torch.tensor([0.5, -0.25, 0.0])
    for name, f in SIGMA.items():
        want = [math.log(f(x)) for x in d.tolist()]
        assert log_surrogate(d, name).tolist() == pytest.approx(want, rel=1e-6)
    # log(tanh(0.5) + 1) = log(1.4621172) = 0.3798854
    assert log_surrogate(torch.tensor(0.5), "tanh").item() == pytest.approx(0.3798854, rel=1e-6)


def test_surrogates_stay_finite_outside_their_range():
    # tanh via log 2 + logsigmoid(2d): finite where tanh(d) + 1 underflows to 0
    assert log_surrogate(torch.tensor(-50.0), "tanh").item() == pytest.approx(math.log(2) - 100)
    # relu(d + 1) = 0 at d <= -1 and atan(d) + 1 < 0 at d = -2: clamped at LOG_FLOOR
    floor = math.log(LOG_FLOOR)
    assert log_surrogate(torch.tensor(-1.5), "relu").item() == pytest.approx(floor)
    assert log_surrogate(torch.tensor(-2.0), "atan").item() == pytest.approx(floor)


@pytest.mark.parametrize("activation", ["tanh", "atan", "relu"])
@pytest.mark.parametrize("tau", [1.0, 0.1])
def test_softmax_form_against_hand_sums(activation, tau):
    got = psl_loss(torch.tensor(S_POS), torch.tensor(S_NEG), tau, 2.0, activation)
    assert got.item() == pytest.approx(_by_hand(activation, tau), rel=1e-5)


def test_one_value_by_hand():
    # row 1: d = (-0.2, 0.1, -0.6); row 2: d = (0.15, -0.05, 0.35); tanh, tau = 0.5:
    # log sum (tanh(d) + 1)^2 = log(0.644206 + 1.209270 + 0.289318) = 0.762111 (row 1)
    #                           log(1.319937 + 0.902579 + 1.785900) = 1.388396 (row 2)
    got = psl_loss(torch.tensor(S_POS), torch.tensor(S_NEG), 0.5, 2.0, "tanh")
    assert got.item() == pytest.approx((0.762111 + 1.388396) / 2, abs=2e-6)


def test_pairwise_form_and_positive_term():
    s_pos, s_neg = torch.tensor(S_POS), torch.tensor(S_NEG)
    got = psl_loss(s_pos, s_neg, 0.25, 2.0, "relu", form="pairwise")
    assert got.item() == pytest.approx(_by_hand("relu", 0.25, form="pairwise"), rel=1e-5)
    got = psl_loss(s_pos, s_neg, 0.25, 2.0, "atan", include_positive=True)
    assert got.item() == pytest.approx(_by_hand("atan", 0.25, include_positive=True), rel=1e-5)


def test_one_negative_is_a_pairwise_loss():
    # with N = 1, PSL is log sigma(d) / tau: no softmax over negatives is left
    got = psl_loss(torch.tensor([0.3]), torch.tensor([[0.5]]), 0.2, 2.0, "tanh")
    assert got.item() == pytest.approx(math.log(math.tanh(0.1) + 1) / 0.2, rel=1e-6)


def test_score_temperature_divides_the_difference():
    a = psl_loss(torch.tensor(S_POS), torch.tensor(S_NEG), 0.3, 4.0, "tanh")
    b = psl_loss(torch.tensor(S_POS) / 2, torch.tensor(S_NEG) / 2, 0.3, 2.0, "tanh")
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def _method(layers: int = 0, **kw) -> PSL:
    users = torch.tensor([0, 0, 1, 1, 2, 2])
    items = torch.tensor([0, 1, 1, 2, 3, 4])
    data = TrainData("t", 3, 6, users, items)
    sets = ["model.name=psl", "model.emb_dim=4", f"model.num_layers={layers}", "train.l2=0"]
    cfg = apply_overrides(ExperimentConfig(), sets)
    return PSL(MethodContext(data, cfg, torch.device("cpu")), PSLOptions(**kw))


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return a @ b.T


def test_method_loss_on_mf_by_hand():
    m = _method(neg_sample=5, tau=0.2, activation="relu")
    batch = TripletBatch(torch.tensor([0, 1, 2]), torch.tensor([1, 2, 4]))
    got = m.loss(batch, torch.Generator().manual_seed(7))
    assert set(got) == {"psl"}  # implied train.l2 = 0: no L2 term
    negs = uniform_items(
        batch.users, 6, torch.Generator().manual_seed(7), num=5, positives=m.positives
    ).numpy()
    assert (
        not PositiveIndex(m.ctx.data.users, m.ctx.data.items, 6)
        .contains(batch.users, torch.from_numpy(negs))
        .any()
    )
    u, i = m.model.user_emb.detach().numpy(), m.model.item_emb.detach().numpy()
    cos = _cos(u, i)
    want = 0.0
    for b, (uu, pp) in enumerate(zip([0, 1, 2], [1, 2, 4])):
        d = (cos[uu, negs[b]] - cos[uu, pp]) / 2.0
        want += np.log(np.sum(np.maximum(d + 1, 0) ** (1 / 0.2)))
    assert got["psl"].item() == pytest.approx(want / 3, rel=1e-5)


def test_loss_is_invariant_to_the_tables_scale():
    # the reason lr 0.01 on N(0, 0.1^2) tables equals the official lr 0.1 on N(0, 1) tables
    m = _method(layers=2, neg_sample=4)
    batch = TripletBatch(torch.tensor([0, 1, 2]), torch.tensor([0, 2, 3]))
    before = m.loss(batch, torch.Generator().manual_seed(1))["psl"].item()
    with torch.no_grad():
        m.model.user_emb.mul_(10)
        m.model.item_emb.mul_(10)
    after = m.loss(batch, torch.Generator().manual_seed(1))["psl"].item()
    assert after == pytest.approx(before, rel=1e-5)


def test_scores_are_cosines_and_options_reach_the_optimiser():
    m = _method(layers=1, weight_decay=1e-4)
    m.eval()
    with torch.no_grad():
        emb = m.model.propagate()
        want = _cos(emb.users.numpy(), emb.items.numpy())
        got = m.scorer()(torch.tensor([0, 2]))
    assert got.numpy() == pytest.approx(want[[0, 2]], abs=1e-6)
    assert m.optimizers()["main"].param_groups[0]["weight_decay"] == 1e-4
    assert "L2-normalised" in m.representations().score
    assert PSL.train_overrides({}) == {
        "train.lr": 0.01,
        "train.batch_size": 1024,
        "train.l2": 0.0,
        "model.init": "normal",
    }


def test_l2_term_counts_each_drawn_negative():
    m = _method(neg_sample=3)
    m.ctx = MethodContext(
        m.ctx.data, apply_overrides(m.ctx.cfg, ["train.l2=0.5"]), torch.device("cpu")
    )
    batch = TripletBatch(torch.tensor([0, 2]), torch.tensor([1, 3]))
    got = m.loss(batch, torch.Generator().manual_seed(2))["l2"].item()
    negs = uniform_items(
        batch.users, 6, torch.Generator().manual_seed(2), num=3, positives=m.positives
    )
    u, i = m.model.user_emb.detach(), m.model.item_emb.detach()
    sq = u[[0, 2]].pow(2).sum() + i[[1, 3]].pow(2).sum() + i[negs.reshape(-1)].pow(2).sum()
    assert got == pytest.approx(0.5 * sq.item() / (2 * 2), rel=1e-5)


@pytest.mark.parametrize(
    "bad", [{"tau": 0.0}, {"score_tau": -1.0}, {"neg_sample": 0}, {"activation": "exp"}]
)
def test_bad_options_fail(bad):
    with pytest.raises(ConfigError):
        PSLOptions(**bad)


def test_batch_mask_rejection_draws_what_the_positive_index_draws():
    users = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])
    items = torch.tensor([0, 1, 2, 1, 3, 1, 0, 4])
    history = HistoryIndex(users, items, 5, 6)  # user 4 has no training item
    batch = torch.tensor([3, 0, 4, 0, 2])
    mask = history.batch(batch).mask
    want = torch.zeros(5, 6, dtype=torch.bool)
    for r, u in enumerate(batch.tolist()):
        for a, b in zip(users.tolist(), items.tolist()):
            if a == u:
                want[r, b] = True
    assert torch.equal(mask, want)
    index = PositiveIndex(users, items, 6)
    for seed in range(5):
        a = uniform_items(batch, 6, torch.Generator().manual_seed(seed), 7, index)
        b = uniform_items(batch, 6, torch.Generator().manual_seed(seed), 7, history.batch(batch))
        assert torch.equal(a, b) and not index.contains(batch, a).any()
