"""PD / PDA pieces against hand calculations on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from oodrec.config import ExperimentConfig, apply_overrides
from oodrec.errors import ConfigError
from oodrec.methods import MethodContext, TrainData, build_method, implied_overrides
from oodrec.methods.pda import (
    PDA,
    PDAOptions,
    StagedBatch,
    UserUniformPairs,
    elu_plus_one,
    pda_bpr,
    pop_factor,
    stage_popularity,
    target_popularity,
    time_stages,
)
from oodrec.samplers.base import PositiveIndex, uniform_items

# A hand-made log: 6 pairs, 4 items (item 3 never seen), times 0..100.
USERS = torch.tensor([0, 0, 1, 1, 2, 2])
ITEMS = torch.tensor([0, 1, 1, 2, 1, 0])
TIMES = torch.tensor([0, 49, 50, 99, 100, 20])


def _ctx(timestamps=TIMES, extra=()):
    data = TrainData("t", 3, 4, USERS, ITEMS, timestamps)
    cfg = apply_overrides(ExperimentConfig(), ["model.name=pda", "model.emb_dim=4", *extra])
    return MethodContext(data, cfg, torch.device("cpu"))


def test_elu_plus_one_by_hand():
    s = torch.tensor([0.5, -1.0, 0.0, 2.0])
    want = [1.5, math.exp(-1.0), 1.0, 3.0]
    assert elu_plus_one(s).tolist() == pytest.approx(want, rel=1e-6)


def test_popularity_weighted_bpr_by_hand():
    s_pos, s_neg = torch.tensor([0.5, -1.0]), torch.tensor([-0.5, 2.0])
    q_pos, q_neg = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.8])
    # row 0: 1.5 * 1.0 - e^-0.5 * 0.0 = 1.5;  row 1: e^-1 * 0.5 - 3.0 * 0.8 = -2.21606028
    # -log sigma(1.5) = 0.20141328, -log sigma(-2.21606028) = 2.31955311; mean 1.26048319
    got = pda_bpr(s_pos, s_neg, q_pos, q_neg).item()
    assert got == pytest.approx(1.26048319, rel=1e-6)


def test_a_zero_popularity_negative_gets_no_gradient():
    s_pos = torch.tensor([0.3], requires_grad=True)
    s_neg = torch.tensor([0.7], requires_grad=True)
    pda_bpr(s_pos, s_neg, torch.tensor([0.5]), torch.tensor([0.0])).backward()
    assert s_neg.grad.item() == 0.0 and s_pos.grad.item() < 0


def test_time_stages_are_equal_width_slots():
    # span 100, 2 stages: [0, 50) and [50, 100], the maximum in the last
    assert time_stages(TIMES, 6, 2).tolist() == [0, 0, 1, 1, 1, 0]
    assert time_stages(TIMES, 6, 4).tolist() == [0, 1, 2, 3, 3, 0]
    assert time_stages(None, 3, 9).tolist() == [0, 0, 0]
    assert time_stages(torch.tensor([7, 7]), 2, 3).tolist() == [0, 0]


def test_stage_popularity_on_a_hand_made_log():
    stage = time_stages(TIMES, 6, 2)
    m = stage_popularity(ITEMS, stage, 4, 2)
    # stage 0: items 0, 1, 0 -> counts [2, 1, 0, 0] -> [1, 0.5, 0, 0]
    # stage 1: items 1, 2, 1 -> counts [0, 2, 1, 0] -> [0, 1, 0.5, 0]
    assert m.T.tolist() == [[1.0, 0.5, 0.0, 0.0], [0.0, 1.0, 0.5, 0.0]]
    # the official (N + 1) / (sum N + |I|), then min-max, gives the same: 3/7, 2/7, 1/7, 1/7
    official = torch.tensor([3, 2, 1, 1]) / 7
    rescaled = (official - official.min()) / (official.max() - official.min())
    assert m[:, 0].tolist() == pytest.approx(rescaled.tolist())
    # one stage: global popularity, counts [2, 3, 1, 0] -> [2/3, 1, 1/3, 0]
    glob = stage_popularity(ITEMS, torch.zeros(6, dtype=torch.long), 4, 1)
    assert glob[:, 0].tolist() == pytest.approx([2 / 3, 1.0, 1 / 3, 0.0])
    # a stage where every item has one count: all 1 (no division by zero)
    flat = stage_popularity(torch.tensor([0, 1]), torch.zeros(2, dtype=torch.long), 2, 1)
    assert flat[:, 0].tolist() == [1.0, 1.0]


def test_popularity_factor_and_target_popularity():
    m = torch.tensor([[1.0, 0.0], [0.5, 1.0], [0.0, 0.5], [0.0, 0.0]])  # [I, T]
    q = pop_factor(m, 0.5)
    assert q[:, 0].tolist() == pytest.approx([1.0, math.sqrt(0.5), 0.0, 0.0])
    assert pop_factor(m, 0.5, min_pop=0.1)[:, 0].tolist() == pytest.approx(
        [1.0, math.sqrt(0.5), 0.1, 0.1]
    )
    assert pop_factor(m, 0.0).tolist() == [[1.0, 1.0]] * 4  # gamma 0: plain ELU' BPR
    assert target_popularity(m, "last").tolist() == [0.0, 1.0, 0.5, 0.0]
    # last + (last - previous) / 2 = [-0.5, 1.25, 0.75, 0], clipped to [1e-9, 1]
    got = target_popularity(m, "extrapolate").tolist()
    assert got == pytest.approx([1e-9, 1.0, 0.75, 1e-9], abs=1e-12)
    assert target_popularity(m[:, :1], "extrapolate").tolist() == [1.0, 0.5, 0.0, 0.0]


def test_method_tables_come_from_the_training_log():
    m = PDA(_ctx(), PDAOptions(gamma=0.5, stages=2))
    assert m.pair_stage.tolist() == [0, 0, 1, 1, 1, 0]
    r = math.sqrt(0.5)
    want = torch.tensor([[1.0, 0.0], [r, 1.0], [0.0, r], [0.0, 0.0]])
    assert torch.allclose(m.q_train, want)
    assert m.q_target.tolist() == pytest.approx([0.0, 1.0, r, 0.0])  # the last training stage
    assert m.describe()["time_stages_used"] == 2
    # no timestamps: one stage whatever model.stages says (global popularity)
    g = PDA(_ctx(timestamps=None), PDAOptions(gamma=1.0, stages=9))
    assert g.describe()["time_stages_used"] == 1 and g.pair_stage.tolist() == [0] * 6
    assert g.q_train[:, 0].tolist() == pytest.approx([2 / 3, 1.0, 1 / 3, 0.0])
    # the tables are rebuilt from the data, not saved
    assert not {"pair_stage", "q_train", "q_target"} & set(m.state_dict())


def test_loss_is_the_weighted_bpr_on_lightgcn_scores_plus_l2():
    opts = PDAOptions(gamma=0.5, stages=2)
    m = PDA(_ctx(extra=("train.l2=0.01",)), opts)
    batch = StagedBatch(torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0]), torch.tensor([0, 1, 0]))
    gen = torch.Generator().manual_seed(3)
    twin = torch.Generator()
    twin.set_state(gen.get_state())
    terms = m.loss(batch, gen)
    neg = uniform_items(batch.users, 4, twin, positives=PositiveIndex(USERS, ITEMS, 4))
    emb = m.model.propagate()
    u = emb.users[batch.users]
    s_pos = (u * emb.items[batch.pos_items]).sum(-1)
    s_neg = (u * emb.items[neg]).sum(-1)
    # the negative takes its popularity at the positive's stage
    q_pos, q_neg = m.q_train[batch.pos_items, batch.stages], m.q_train[neg, batch.stages]
    want = pda_bpr(s_pos, s_neg, q_pos, q_neg)
    assert terms["bpr"].item() == pytest.approx(want.item(), rel=1e-6)
    egos = [emb.user_ego[batch.users], emb.item_ego[batch.pos_items], emb.item_ego[neg]]
    reg = 0.01 * sum(e.pow(2).sum() for e in egos) / (2 * 3)
    assert terms["l2"].item() == pytest.approx(reg.item(), rel=1e-6)


def test_pd_and_pda_scores():
    ctx = _ctx()
    pd = PDA(ctx, PDAOptions(gamma=0.5, stages=2))
    pda = PDA(ctx, PDAOptions(gamma=0.5, stages=2, inference="pda"))
    pda.load_state_dict(pd.state_dict())
    users = torch.tensor([0, 2])
    with torch.no_grad():
        emb = pd.model.propagate()
        raw = emb.users[users] @ emb.items.T
        assert torch.allclose(pd.scorer()(users), raw)
        want = (torch.nn.functional.elu(raw) + 1) * pda.q_target
        got = pda.scorer()(users)
    assert got.dtype == torch.float32 and torch.allclose(got, want)
    assert (got[:, pda.q_target == 0] == 0).all()  # least popular in the last stage: score 0
    assert pd.representations() is not None and pda.representations() is None
    assert "popularity factor" in PDA.unscored_reason


def test_user_uniform_batches_as_the_official_code():
    users = torch.tensor([0, 0, 0, 1, 3, 3, 3, 3])  # user 2 has no pair
    pairs = UserUniformPairs(users, 4)
    got = list(pairs.batches(2, torch.Generator().manual_seed(0)))
    assert len(got) == 8 // 2 + 1
    for idx in got:
        u = users[idx]
        assert u.numel() == 2 and u.unique().numel() == 2  # distinct users
        assert 2 not in u.tolist()
    # a batch larger than the active users takes each of them once
    (big, *_) = list(pairs.batches(10, torch.Generator().manual_seed(0)))
    assert sorted(users[big].tolist()) == [0, 1, 3]
    # the method's batches carry each pair's own stage
    m = PDA(_ctx(extra=("train.batch_size=2",)), PDAOptions(stages=2, user_uniform=True))
    batches = list(m.batches(0, torch.Generator().manual_seed(1)))
    assert len(batches) == 6 // 2 + 1
    stage = time_stages(TIMES, 6, 2)
    for b in batches:
        for u, i, t in zip(b.users.tolist(), b.pos_items.tolist(), b.stages.tolist()):
            k = [j for j in range(6) if (USERS[j], ITEMS[j]) == (u, i)]
            assert k and stage[k[0]] == t


def test_pair_batches_cover_every_pair_once_with_its_stage():
    m = PDA(_ctx(extra=("train.batch_size=4",)), PDAOptions(stages=2))
    batches = list(m.batches(0, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4, 2]
    seen = sorted(
        (u, i, t)
        for b in batches
        for u, i, t in zip(b.users.tolist(), b.pos_items.tolist(), b.stages.tolist())
    )
    stage = time_stages(TIMES, 6, 2).tolist()
    assert seen == sorted(zip(USERS.tolist(), ITEMS.tolist(), stage))


def test_options_defaults_validation_and_implied_settings():
    o = PDAOptions()
    assert (o.gamma, o.inference, o.stages, o.target, o.min_pop, o.user_uniform) == (
        0.1,
        "pd",
        9,
        "last",
        0.0,
        False,
    )
    cfg = apply_overrides(ExperimentConfig(), ["model.name=pda"])
    assert implied_overrides(cfg) == {"train.l2": 1e-3}
    for bad in ("model.gamma=-1", "model.stages=0", "model.min_pop=2", "model.inference=pdg"):
        ctx = _ctx(extra=(bad,))
        with pytest.raises(ConfigError, match=bad.split("=")[0].split(".")[1]):
            build_method(ctx.cfg, ctx.data, ctx.device)


def test_a_timestamped_dataset_trains_on_time_stages(tmp_path):
    """Through the loader: a temporal split keeps its times, and PDA uses ``stages`` of them."""
    import numpy as np

    from oodrec.data.dataset import load_dataset
    from oodrec.data.prepare import PrepareOptions, prepare_dataset
    from oodrec.data.raw import ColumnMapping
    from oodrec.train.loop import train

    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 40, 1200), (rng.zipf(1.6, 1200) - 1) % 30
    lines = ["uid,sku,when"] + [f"{u},{i},{k}" for k, (u, i) in enumerate(zip(users, items))]
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    cols = ColumnMapping(user="uid", item="sku", timestamp="when")
    data = prepare_dataset(
        tmp_path / "log.csv", "csv", "temporal", tmp_path / "d", PrepareOptions(columns=cols)
    )
    cfg = apply_overrides(
        ExperimentConfig(),
        [f"data.dataset={data}", "model.name=pda", "model.emb_dim=8", "model.stages=3"],
    )
    cfg = apply_overrides(cfg, ["train.epochs=1", "model.inference=pda"])
    ds = load_dataset(cfg.data)
    assert ds.train.timestamps is not None
    res = train(cfg, ds)
    assert res.record["resolved_options"]["time_stages_used"] == 3
    m = build_method(cfg, TrainData.from_dataset(ds), torch.device("cpu"))
    assert sorted(m.pair_stage.unique().tolist()) == [0, 1, 2]
    # the target popularity is the last training stage's, whatever the held-out splits hold
    last = m.pair_stage == 2
    counts = torch.bincount(ds.train.items[last], minlength=ds.num_items).double()
    m_last = (counts - counts.min()) / (counts.max() - counts.min())
    assert torch.allclose(m.q_target, pop_factor(m_last.float(), 0.1))
