"""BC loss pieces against hand calculations: popularity indices, both margins, the margin
InfoNCE, the whole method's loss on MF in both phases, the freeze schedule, the user-balanced
batches and the two scoring rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from oodrec.config import DataConfig, ExperimentConfig, TrainConfig, apply_overrides
from oodrec.data.dataset import load_dataset
from oodrec.errors import ConfigError
from oodrec.methods import MethodContext, TrainData
from oodrec.methods.bc import BC, BCOptions, UserBalancedPairs
from oodrec.models.bc import (
    MASKED,
    angle_margin,
    bc_main_loss,
    code_margin,
    infonce,
    popularity_ranks,
)
from oodrec.samplers import TripletBatch
from oodrec.samplers.base import uniform_items
from oodrec.train.loop import train


def test_popularity_ranks_over_distinct_positive_degrees():
    ranks, k = popularity_ranks(torch.tensor([3, 0, 1, 3, 5, 1]))
    # distinct positive degrees (1, 3, 5); degree 0 shares index 0 with degree 1
    assert ranks.tolist() == [1, 0, 0, 1, 2, 0] and k == 3
    assert popularity_ranks(torch.tensor([0, 0]))[1] == 1


def test_code_margin_is_one_minus_sigmoid_of_the_raw_dot():
    pu, pi = torch.tensor([[1.0, 2.0], [0.5, 0.5]]), torch.tensor([[0.5, -1.0], [2.0, 2.0]])
    # dots -1.5 and 2: 1 - sigmoid = 0.817574, 0.119203
    assert code_margin(pu, pi).tolist() == pytest.approx([0.817574, 0.119203], abs=1e-6)


def test_angle_margin_is_capped_at_pi_minus_theta():
    got = angle_margin(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 2.5]))
    # popularity angle acos(0.5) = pi/3 = 1.047198; cap pi - 2.5 = 0.641593
    assert got.tolist() == pytest.approx([math.pi / 3, math.pi - 2.5], abs=1e-6)


def test_main_loss_by_hand():
    s_pos, s_neg = torch.tensor([0.8, -0.1]), torch.tensor([[0.1, -0.5], [0.3, 0.0]])
    margin, tau = torch.tensor([0.3, 0.05]), 0.1
    want = 0.0
    for sp, negs, m in zip([0.8, -0.1], [[0.1, -0.5], [0.3, 0.0]], [0.3, 0.05]):
        pos = math.cos(math.acos(sp) + m) / tau
        want += -math.log(math.exp(pos) / (math.exp(pos) + sum(math.exp(n / tau) for n in negs)))
    # row 1: acos(0.8) = 0.643501, cos(0.943501) = 0.586957, loss 0.007666;
    # row 2: acos(-0.1) = 1.670964, cos(1.720964) = -0.149604, loss 4.555192
    assert want / 2 == pytest.approx((0.007666 + 4.555192) / 2, abs=1e-6)
    assert bc_main_loss(s_pos, s_neg, margin, tau).item() == pytest.approx(want / 2, rel=1e-5)
    # no margin: plain InfoNCE
    plain = infonce(s_pos / tau, s_neg / tau).item()
    assert bc_main_loss(s_pos, s_neg, torch.zeros(2), tau).item() == pytest.approx(plain, rel=1e-5)
    # a margin makes the positive harder: the loss grows
    assert bc_main_loss(s_pos, s_neg, margin, tau).item() > plain


def test_masked_entries_drop_out_of_the_infonce():
    pos, neg = torch.tensor([1.0]), torch.tensor([[0.5, -0.2]])
    masked = torch.tensor([[0.5, MASKED / 0.07, -0.2]])
    assert infonce(pos, masked).item() == pytest.approx(infonce(pos, neg).item(), rel=1e-6)
    alone = torch.tensor([[MASKED]], requires_grad=True)
    loss = infonce(pos, alone / 0.07)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(alone.grad).all()


USERS = torch.tensor([0, 0, 0, 1, 1, 2])
ITEMS = torch.tensor([0, 1, 2, 1, 3, 1])


def _method(**kw) -> BC:
    data = TrainData("t", 3, 5, USERS, ITEMS)
    sets = ["model.name=bc", "model.emb_dim=3", "model.num_layers=0", "train.l2=0.1"]
    cfg = apply_overrides(ExperimentConfig(), sets)
    return BC(MethodContext(data, cfg, torch.device("cpu")), BCOptions(**kw))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float64)


def test_popularity_tables_follow_training_degrees():
    m = _method()
    # user degrees (3, 2, 1) -> ranks (2, 1, 0); item degrees (1, 3, 1, 1, 0) -> (0, 1, 0, 0, 0)
    assert m.user_rank.tolist() == [2, 1, 0] and m.item_rank.tolist() == [0, 1, 0, 0, 0]
    assert m.user_pop.shape == (3, 3) and m.item_pop.shape == (2, 3)


def test_in_batch_losses_on_mf_by_hand():
    m = _method(negatives="in_batch", tau1=0.2, tau2=0.5, w_lambda=0.3)
    users, pos = torch.tensor([0, 1, 2]), torch.tensor([2, 3, 1])
    batch = TripletBatch(users, pos)
    gen = torch.Generator().manual_seed(0)
    u, i = _np(m.model.user_emb)[[0, 1, 2]], _np(m.model.item_emb)[[2, 3, 1]]
    pu = _np(m.user_pop)[[2, 1, 0]]  # ranks of users 0, 1, 2
    pi = _np(m.item_pop)[[0, 0, 1]]  # ranks of items 2, 3, 1

    def infonce_rows(s, pos_logit, tau):
        out = 0.0
        for b in range(3):
            others = [math.exp(s[b, c] / tau) for c in range(3) if c != b]
            e = math.exp(pos_logit[b])
            out += -math.log(e / (e + sum(others)))
        return out / 3

    # phase "pop": w * InfoNCE over cosines of the popularity rows / tau2, batch as negatives
    s_pop = _unit(pu) @ _unit(pi).T
    want_pop = 0.3 * infonce_rows(s_pop, np.diag(s_pop) / 0.5, 0.5)
    got = m.loss(batch, gen, "pop")
    assert set(got) == {"infonce"}
    assert got["infonce"].item() == pytest.approx(want_pop, rel=1e-5)

    # phase "main": (1 - w) * margin InfoNCE on cosines / tau1, plus l2 / (2B) * sum of squares
    s = _unit(u) @ _unit(i).T
    margin = 1 - 1 / (1 + np.exp(-(pu * pi).sum(-1)))
    pos_logit = np.cos(np.arccos(np.diag(s)) + margin) / 0.2
    want_main = 0.7 * infonce_rows(s, pos_logit, 0.2)
    want_l2 = 0.1 * ((u**2).sum() + (i**2).sum()) / 6
    got = m.loss(batch, gen, "main")
    assert set(got) == {"bc", "l2"}
    assert got["bc"].item() == pytest.approx(want_main, rel=1e-5)
    assert got["l2"].item() == pytest.approx(want_l2, rel=1e-5)


def test_sampled_losses_on_mf_by_hand():
    m = _method(neg_sample=4, tau1=0.1, margin="angle")
    users, pos = torch.tensor([0, 2]), torch.tensor([1, 1])
    got = m.loss(TripletBatch(users, pos), torch.Generator().manual_seed(3), "main")
    negs = uniform_items(
        users, 5, torch.Generator().manual_seed(3), num=4, positives=m.positives
    ).numpy()
    u, items = _np(m.model.user_emb), _np(m.model.item_emb)
    pu, pi = _np(m.user_pop), _np(m.item_pop)
    want = 0.0
    for b, (uu, ii) in enumerate(zip([0, 2], [1, 1])):
        cos = _unit(items) @ _unit(u[uu])
        theta = math.acos(cos[ii])
        pop_angle = math.acos(_unit(pu[m.user_rank[uu]]) @ _unit(pi[m.item_rank[ii]]))
        p = math.cos(theta + min(pop_angle, math.pi - theta)) / 0.1
        neg = sum(math.exp(cos[j] / 0.1) for j in negs[b])
        want += -math.log(math.exp(p) / (math.exp(p) + neg))
    assert got["bc"].item() == pytest.approx(0.5 * want / 2, rel=1e-5)
    sq = (u[[0, 2]] ** 2).sum() + (items[[1, 1]] ** 2).sum() + (items[negs.ravel()] ** 2).sum()
    assert got["l2"].item() == pytest.approx(0.1 * sq / 4, rel=1e-5)
    # phase "pop" with the same draws: w * InfoNCE of the popularity rows over cosines / tau2
    got = m.loss(TripletBatch(users, pos), torch.Generator().manual_seed(3), "pop")
    want = 0.0
    for b, (uu, ii) in enumerate(zip([0, 2], [1, 1])):
        p_u = _unit(pu[m.user_rank[uu]])
        cos = _unit(pi) @ p_u  # one cosine per popularity row
        p = cos[m.item_rank[ii]] / 0.1
        neg = sum(math.exp(cos[m.item_rank[j]] / 0.1) for j in negs[b])
        want += -math.log(math.exp(p) / (math.exp(p) + neg))
    assert got["infonce"].item() == pytest.approx(0.5 * want / 2, rel=1e-5)


def test_freeze_schedule_and_where_gradients_go():
    m = _method(freeze_epoch=2, neg_sample=3)
    assert [m.phase(e, 0) for e in range(4)] == ["pop", "pop", "main", "main"]
    batch = TripletBatch(torch.tensor([0, 1, 2]), torch.tensor([0, 3, 1]))
    for phase, trained, untouched in (
        ("pop", ("user_pop", "item_pop"), ("model.user_emb", "model.item_emb")),
        ("main", ("model.user_emb", "model.item_emb"), ("user_pop", "item_pop")),
    ):
        m.zero_grad(set_to_none=True)
        sum(m.loss(batch, torch.Generator().manual_seed(0), phase).values()).backward()
        grads = {n: p.grad for n, p in m.named_parameters()}
        assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in trained)
        assert all(grads[n] is None for n in untouched)
    opts = m.optimizers()
    assert {id(p) for g in opts["pop"].param_groups for p in g["params"]} == {
        id(m.user_pop),
        id(m.item_pop),
    }


def test_user_balanced_rows():
    data = TrainData("t", 4, 5, USERS, ITEMS)  # user 3 has no training item
    rows = UserBalancedPairs(data)
    batches = list(rows.batches(4, False, torch.Generator().manual_seed(0)))
    users = torch.cat([b.users for b in batches])
    pos = torch.cat([b.pos_items for b in batches])
    # 6 rows over the 3 active users: each exactly twice
    assert users.numel() == 6 and torch.bincount(users, minlength=4).tolist() == [2, 2, 2, 0]
    train = set(zip(USERS.tolist(), ITEMS.tolist()))
    assert all((a, b) in train for a, b in zip(users.tolist(), pos.tolist()))


def test_dot_and_cosine_scores():
    m = _method(score="dot")
    m.eval()
    u, i = _np(m.model.user_emb), _np(m.model.item_emb)
    with torch.no_grad():
        assert _np(m.scorer()(torch.tensor([1]))) == pytest.approx(u[[1]] @ i.T, abs=1e-6)
        assert m.representations().score == "inner product"
        c = _method(score="cos")
        c.eval()
        cu, ci = _np(c.model.user_emb), _np(c.model.item_emb)
        want = _unit(cu[[1]]) @ _unit(ci).T
        assert _np(c.scorer()(torch.tensor([1]))) == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize(
    "bad",
    [{"tau1": 0.0}, {"w_lambda": 1.5}, {"neg_sample": 0}, {"margin": "x"}, {"freeze_epoch": -1}],
)
def test_bad_options_fail(bad):
    with pytest.raises(ConfigError):
        BCOptions(**bad)


def test_warmup_epochs_are_not_evaluated_and_do_not_use_up_patience(tiny_dir, caplog):
    """The popularity-only epochs leave the scorer untrained: no evaluation there, so neither
    selection nor patience sees them (patience 1 would otherwise stop at epoch 1)."""

    def run(epochs: int):
        cfg = ExperimentConfig(
            data=DataConfig(dataset=str(tiny_dir)),
            train=TrainConfig(epochs=epochs, batch_size=16, patience=1),
            seed=3,
        )
        over = ["model.name=bc", "model.emb_dim=8", "model.neg_sample=4", "model.freeze_epoch=3"]
        cfg = apply_overrides(cfg, over)
        return train(cfg, load_dataset(cfg.data))

    res = run(5)
    evaluated = [r["epoch"] for r in res.history if "val/ndcg@20" in r]
    assert evaluated and evaluated[0] == 3 and res.best_epoch >= 3
    assert all("loss_pop_infonce" in r for r in res.history[:3])
    caplog.clear()
    short = run(2)  # ends inside the warm-up: the last epoch is evaluated, with a warning
    assert [r["epoch"] for r in short.history if "val/ndcg@20" in r] == [1]
    assert "warm-up epochs: its scorer is untrained" in caplog.text
