"""CNSDiff options beyond the code: curriculum horizon, candidate rescaling, K negatives per
positive, and the score diagnostics. Hand-built tensors with hand-computed values."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from oodrec.config import DataConfig, ExperimentConfig, SamplerConfig, TrainConfig
from oodrec.data.dataset import load_dataset
from oodrec.errors import ConfigError
from oodrec.models.losses import bpr_loss
from oodrec.samplers import TripletBatch, build_sampler
from oodrec.samplers.cnsdiff import CNSDiffOptions, rescale_candidates
from oodrec.train.loop import train

from .helpers import hand_embeddings, make_context, make_tiny

BETA = dict(initial_alpha=1.0, initial_beta=9.0, final_alpha=9.0, final_beta=1.0)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# ---------------------------------------------------------------- curriculum_epochs


def _schedule(num_epochs: int, epochs: list[int], **options) -> list[tuple[float, float]]:
    s = build_sampler("cnsdiff", replace(make_tiny().ctx, num_epochs=num_epochs), options)
    out = []
    for epoch in epochs:
        s.start_epoch(epoch)
        out.append(s.mix_params())
    return out


def test_curriculum_horizon_reaches_and_holds_the_final_values():
    # rho = min(epoch / 10, 1): epoch 5 -> (1 + 8 * 0.5, 9 - 8 * 0.5) = (5, 5)
    got = _schedule(120, [0, 5, 9, 10, 11, 50, 119], curriculum_epochs=10, **BETA)
    assert got[0] == (1.0, 9.0)
    assert got[1] == (5.0, 5.0)
    assert got[2] == pytest.approx((8.2, 1.8))  # rho = 0.9
    assert got[3:] == [(9.0, 1.0)] * 4  # held from the horizon on, whatever train.epochs is


def test_curriculum_none_is_train_epochs():
    epochs = [0, 5, 60, 119]
    today = _schedule(120, epochs, **BETA)
    # hand-computed: rho = epoch / 120, never 1
    assert today[1] == pytest.approx((1 + 8 * 5 / 120, 9 - 8 * 5 / 120))
    assert today[2] == (5.0, 5.0)
    assert today[3] == pytest.approx((8.9333333, 1.0666667))
    assert _schedule(120, epochs, curriculum_epochs=120, **BETA) == today


@pytest.mark.parametrize("bad", [0, -3])
def test_curriculum_epochs_must_be_positive(bad):
    with pytest.raises(ConfigError, match=rf"curriculum_epochs must be >= 1.*got {bad}"):
        CNSDiffOptions(curriculum_epochs=bad).resolved("x")
    with pytest.raises(ConfigError, match="curriculum_epochs"):
        build_sampler("cnsdiff", make_tiny().ctx, {"curriculum_epochs": str(bad)})


# ---------------------------------------------------------------- rescale


def test_rescale_candidates_hand_values():
    cands = torch.tensor(
        [
            [[3.0, 4.0], [0.0, 2.0]],
            [[0.0, 0.0], [6.0, 8.0]],
        ]
    )  # [C=2, B=2, D=2], norms [[5, 2], [0, 10]]
    pos = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # norms 1, 3
    items = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 3.0]])  # norms 5, 1, 3 -> mean 3
    assert rescale_candidates(cands, "none", pos, items) is cands
    by_pos = rescale_candidates(cands, "positive", pos, items)
    want = torch.tensor([[[0.6, 0.8], [0.0, 3.0]], [[0.0, 0.0], [1.8, 2.4]]])
    assert torch.allclose(by_pos, want)  # a zero candidate stays zero (clamped norm)
    by_items = rescale_candidates(cands, "items", pos, items)
    want = torch.tensor([[[1.8, 2.4], [0.0, 3.0]], [[0.0, 0.0], [1.8, 2.4]]])
    assert torch.allclose(by_items, want)


@pytest.mark.parametrize("mode", ["positive", "items"])
def test_rescale_through_the_sampler(mode):
    tiny = make_tiny()
    s = build_sampler("cnsdiff", tiny.ctx, {"rescale": mode, "mixup": False})
    s.start_epoch(0)
    emb = tiny.model.propagate()
    negs = s.sample(tiny.batch, emb, torch.Generator().manual_seed(0))
    norms = negs.emb.norm(dim=-1)  # [B]: without mixup the negative is the candidate
    if mode == "positive":
        want = emb.items[tiny.batch.pos_items].norm(dim=-1)
    else:
        want = emb.items.norm(dim=-1).mean().expand_as(norms)
    assert torch.allclose(norms, want.detach(), rtol=1e-5)
    assert not negs.emb.requires_grad  # the scale factor is detached: a constant negative


# ---------------------------------------------------------------- hand-built sampler


def _hand_sampler(candidates: torch.Tensor, **options):
    """A CNSDiff sampler over 2 users, 4 items, D = 2, whose generator returns ``candidates``.

    Users 0 and 1 both have training items 0 and 1, so the random negatives come from items 2
    and 3, which both embed as [1, 1]. The batch is (user 0, item 0), (user 1, item 1).
    """
    users, items = torch.tensor([0, 1]), torch.tensor([0, 1])
    ctx = make_context(users.repeat(2), items.repeat_interleave(2), 2, 4, emb_dim=2)
    s = build_sampler("cnsdiff", ctx, {"score_diagnostics": True, **options})
    s.generate = lambda pos, pos_items, gen: candidates  # [C, B, D]
    emb = hand_embeddings(
        torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True),
        torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [1.0, 1.0]], requires_grad=True),
    )
    return s, emb, TripletBatch(users, items)


# 5 levels {2, 6, 10, 14, 18}; scores u0 . c = c[0], u1 . c = c[1]
FIVE_LEVELS = dict(sample_start=2, stride=4)
CANDS = torch.tensor(
    [
        [[0.5, 7.0], [0.2, 4.0]],
        [[3.0, -5.0], [6.0, 0.0]],
        [[1.0, 0.3], [-3.0, 2.0]],
        [[2.0, 9.0], [1.0, -2.0]],
        [[-1.0, 1.0], [5.0, 1.0]],
    ]
)  # [C=5, B=2, D=2]; row 0 scores [0.5, 3, 1, 2, -1], row 1 scores [4, 0, 2, -2, 1]


@pytest.mark.parametrize("mix", [{"mixup": False}, {"min_mix_ratio": 1.0}])
def test_k3_keeps_the_three_hardest_and_averages_their_bpr_terms(mix):
    s, emb, batch = _hand_sampler(CANDS, negatives_per_positive=3, **FIVE_LEVELS, **mix)
    s.start_epoch(0)
    negs = s.sample(batch, emb, torch.Generator().manual_seed(0))
    assert negs.emb.shape == (2, 3, 2) and negs.reg_ego.shape == (2, 3, 2)
    # hardest first: row 0 picks levels 1, 3, 2 (scores 3, 2, 1); row 1 levels 0, 2, 4 (4, 2, 1)
    want = torch.stack([CANDS[[1, 3, 2], 0], CANDS[[0, 2, 4], 1]])  # [B, K, D]
    assert torch.equal(negs.emb.detach(), want)
    assert torch.allclose(negs.weights, torch.full((3,), 1 / 3))
    u, p = emb.users[batch.users], emb.items[batch.pos_items]  # s_pos = 2 and 3
    loss = bpr_loss(u, p, negs.emb, negs.weights)
    row0 = (softplus(3 - 2) + softplus(2 - 2) + softplus(1 - 2)) / 3
    row1 = (softplus(4 - 3) + softplus(2 - 3) + softplus(1 - 3)) / 3
    assert math.isclose(loss.item(), (row0 + row1) / 2, rel_tol=1e-6)
    stats = s.diagnostics()
    assert stats["cnsdiff_mix"] == 1.0
    assert math.isclose(stats["cnsdiff_mixed_score"], 13 / 6, rel_tol=1e-6)
    assert math.isclose(stats["cnsdiff_generated_score"], 13 / 6, rel_tol=1e-6)
    assert math.isclose(stats["cnsdiff_random_score"], 1.0, rel_tol=1e-6)
    assert stats["cnsdiff_level"] == 0.5  # hardest levels 1 and 0


def test_k1_is_the_argmax_and_rescale_acts_before_selection():
    # row 0: raw scores [0.5, 3, 1, 2, -1] pick level 1 = [3, -5]; at norm |p0| = 2 the scores
    # become 2 cos: [0.14, 1.03, 1.92, 0.43, -1.41], which pick level 2 = [1, 0.3]
    s, emb, batch = _hand_sampler(CANDS, mixup=False, **FIVE_LEVELS)
    s.start_epoch(0)
    raw = s.sample(batch, emb, torch.Generator().manual_seed(0))
    assert raw.emb.shape == (2, 2) and raw.weights is None
    assert torch.equal(raw.emb[0], CANDS[1, 0])
    s, emb, batch = _hand_sampler(CANDS, mixup=False, rescale="positive", **FIVE_LEVELS)
    s.start_epoch(0)
    scaled = s.sample(batch, emb, torch.Generator().manual_seed(0))
    c = CANDS[2, 0]
    assert torch.allclose(scaled.emb[0], 2 * c / c.norm())


def test_alignment_uses_the_hardest_candidate():
    s, emb, batch = _hand_sampler(CANDS, negatives_per_positive=3, **FIVE_LEVELS)
    s.start_epoch(0)
    s.sample(batch, emb, torch.Generator().manual_seed(0))
    pos, hard, rand = s._last
    assert torch.equal(hard, torch.stack([CANDS[1, 0], CANDS[0, 1]]))
    assert hard.shape == pos.shape == rand.shape == (2, 2)


def test_mix_weight_floor_and_ceiling_hand_values():
    # K = 1: the hardest candidates are CANDS[1, 0] = [3, -5] and CANDS[0, 1] = [0.2, 4]; every
    # random negative embeds as [1, 1]. m_min = m_max = 0.3 fixes the applied weight at 0.3.
    s, emb, batch = _hand_sampler(CANDS, min_mix_ratio=0.3, max_mix_ratio=0.3, **FIVE_LEVELS)
    s.start_epoch(0)
    negs = s.sample(batch, emb, torch.Generator().manual_seed(0))
    want = torch.tensor([[0.3 * 3 + 0.7, 0.3 * -5 + 0.7], [0.3 * 0.2 + 0.7, 0.3 * 4 + 0.7]])
    assert torch.allclose(negs.emb.detach().squeeze(1), want)
    assert s.diagnostics()["cnsdiff_mix"] == pytest.approx(0.3)


def test_mix_weight_ceiling_scales_the_drawn_weight():
    # the same Beta draws (same generator), mapped into [0, 0.5] instead of [0, 1]:
    # neg - rand = m (hard - rand), so the ceiling halves the distance from the random negative
    out = {}
    for ceiling in (1.0, 0.5):
        s, emb, batch = _hand_sampler(CANDS, max_mix_ratio=ceiling, **FIVE_LEVELS)
        s.start_epoch(0)
        negs = s.sample(batch, emb, torch.Generator().manual_seed(3))
        out[ceiling] = (negs.emb.detach() - 1.0, s.diagnostics()["cnsdiff_mix"])
    assert torch.allclose(out[0.5][0], 0.5 * out[1.0][0])
    assert out[0.5][1] == pytest.approx(0.5 * out[1.0][1])
    assert 0 < out[1.0][1] < 1  # a drawn weight, not a fixed one


@pytest.mark.parametrize(
    "bad", [{"max_mix_ratio": 1.5}, {"min_mix_ratio": 0.6, "max_mix_ratio": 0.4}]
)
def test_mix_weight_bounds_are_checked(bad):
    with pytest.raises(ConfigError, match="min_mix_ratio .* <= max_mix_ratio"):
        CNSDiffOptions(**bad).resolved("x")


@pytest.mark.parametrize("k", [4, 0])
def test_k_outside_the_candidates_is_a_config_error(k):
    # default levels {10, 14, 18}: 3 candidates
    with pytest.raises(ConfigError, match=rf"negatives_per_positive \({k}\).*\(3: levels"):
        CNSDiffOptions(negatives_per_positive=k).resolved("x")
    with pytest.raises(ConfigError, match="negatives_per_positive"):
        build_sampler("cnsdiff", make_tiny().ctx, {"negatives_per_positive": k})
    CNSDiffOptions(negatives_per_positive=5, **FIVE_LEVELS).resolved("x")  # 5 levels: fine


# ---------------------------------------------------------------- diagnostics in training


SCORES = ("cnsdiff_mixed_score", "cnsdiff_random_score", "cnsdiff_generated_score")


def _one_epoch(tiny_dir, **options):
    cfg = ExperimentConfig(
        data=DataConfig(dataset=str(tiny_dir)),
        sampler=SamplerConfig("cnsdiff", options),
        train=TrainConfig(epochs=1, batch_size=64, fhn_batches=1),
    )
    row = train(cfg, load_dataset(cfg.data)).history[0]
    return {k: v for k, v in row.items() if not k.endswith("seconds")}


def test_score_diagnostics_appear_and_change_nothing_else(tiny_dir):
    base = _one_epoch(tiny_dir, score_diagnostics=False)
    assert not set(SCORES) & set(base)
    row = _one_epoch(tiny_dir, score_diagnostics=True)
    assert set(row) - set(base) == set(SCORES)
    assert {k: row[k] for k in base} == base  # no training value moves
    assert all(math.isfinite(row[k]) for k in SCORES)
    assert 0.0 <= row["cnsdiff_mix"] <= 1.0


def test_all_new_options_train_one_epoch(tiny_dir):
    row = _one_epoch(
        tiny_dir,
        curriculum_epochs=1,
        rescale="items",
        negatives_per_positive=3,
        score_diagnostics=True,
    )
    assert math.isfinite(row["loss"]) and math.isfinite(row["fhn_ratio"])
    assert (row["cnsdiff_beta_a"], row["cnsdiff_beta_b"]) == (1.0, 9.0)  # epoch 0 of 1
    assert 0.0 <= row["cnsdiff_mix"] <= 1.0
    assert all(math.isfinite(row[k]) for k in SCORES)
