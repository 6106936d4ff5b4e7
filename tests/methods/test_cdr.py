"""CDR pieces against hand-computed values: the chronological environment split, the KL
annealing, the ELBO terms, the gradient-variance penalty, the sparsity term, and the inference
rolled forward over T + add_T slices; plus T > 1 training on a TrainData with timestamps."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from oodrec.config import ExperimentConfig, apply_overrides
from oodrec.methods import METHODS, MethodContext, TrainData
from oodrec.methods.cdr import CDR, NO_TIME, CDROptions
from oodrec.models.cdr import (
    chronological_slices,
    gaussian_kl,
    gradient_variance_penalty,
    kl_weight,
    multinomial_nll,
    normal_cdf_penalty,
)

# user 0: five pairs, two tied at t=10; user 1: two pairs in reverse file order; user 2: one
USERS = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])
ITEMS = torch.tensor([4, 1, 3, 0, 2, 0, 1, 3])
TIMES = torch.tensor([50, 10, 40, 10, 30, 5, 1, 7])


def _data(timed: bool = True, num_users: int = 3) -> TrainData:
    return TrainData("t", num_users, 5, USERS, ITEMS, TIMES if timed else None)


def _method(timed: bool = True, batch_size: int = 2048, **opts) -> CDR:
    cfg = apply_overrides(ExperimentConfig(), ["model.name=cdr", f"train.batch_size={batch_size}"])
    options = CDROptions(**{"encoder_dims": (3,), "a_dim": 2, "z_dim": 2, **opts})
    return CDR(MethodContext(_data(timed), cfg, torch.device("cpu")), options)


# ---------------------------------------------------------------- environments


def test_chronological_split_hand_case():
    # user 0 in time order (ties by item id): items 0, 1 (t=10), 2 (30), 3 (40), 4 (50)
    # S=2: chunk 5 // 2 = 2 -> items 0, 1 in slice 0, the remainder 2, 3, 4 in slice 1;
    # user 1 (items 1 at t=1, 0 at t=5): chunk 1 -> item 1 first; user 2: chunk 0 -> last slice
    two = chronological_slices(USERS, ITEMS, TIMES, 2, 3)
    assert two.tolist() == [1, 0, 1, 0, 1, 1, 0, 1]
    # S=3: chunk 1 for user 0 -> slices 0, 1, then 2 for the rest; user 1: chunk 0 -> all last
    three = chronological_slices(USERS, ITEMS, TIMES, 3, 3)
    assert three.tolist() == [2, 1, 2, 0, 2, 2, 2, 2]
    assert chronological_slices(USERS, ITEMS, TIMES, 1, 3).eq(0).all()


def test_chronological_split_ignores_file_order():
    perm = torch.tensor([7, 3, 0, 5, 1, 6, 4, 2])
    base = chronological_slices(USERS, ITEMS, TIMES, 5, 3)
    shuffled = chronological_slices(USERS[perm], ITEMS[perm], TIMES[perm], 5, 3)
    assert torch.equal(shuffled, base[perm])
    # the t=10 tie: item 0 (file position 3) comes before item 1 (file position 1)
    assert base[3].item() == 0 and base[1].item() == 1


def test_no_timestamps_means_one_slice_only():
    assert chronological_slices(USERS, ITEMS, None, 1, 3).eq(0).all()
    with pytest.raises(ValueError, match="timestamps"):
        chronological_slices(USERS, ITEMS, None, 2, 3)


def test_slice_inputs_gather_the_hand_split():
    m = _method(num_envs=2)
    x0, x1 = m.slice_inputs(torch.tensor([0, 1, 2]), m.train_history, 2)
    assert x0.tolist() == [[1, 1, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]]
    assert x1.tolist() == [[0, 0, 1, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 1, 0]]


def test_no_timestamps_is_t1_said_in_describe_and_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="oodrec.methods.cdr"):
        m = _method(timed=False)
    assert "no timestamps" in caplog.text
    d = m.describe()
    assert d["environments"] == NO_TIME and d["train_slices"] == 1 == d["inference_slices"]
    assert d["num_envs"] == 3 and d["add_envs"] == 2  # the options as given
    timed = _method(timed=True).describe()
    assert timed["train_slices"] == 3 and timed["inference_slices"] == 5
    assert timed["environments"].startswith("T=3")


# ---------------------------------------------------------------- loss pieces


def test_kl_annealing_schedule():
    assert kl_weight(0, 0.5, 0) == 0.5 and kl_weight(10**6, 0.5, 0) == 0.5  # official default
    assert kl_weight(0, 0.5, 1000) == 0.0
    assert kl_weight(100, 0.5, 1000) == pytest.approx(0.1)
    assert kl_weight(800, 0.5, 1000) == 0.5


def test_kl_weight_follows_the_optimiser_steps_and_scales_the_kl_term():
    m = _method(anneal_steps=10, kl_cap=0.5)
    m.train()
    batch = torch.tensor([0, 1, 2])
    m.after_step("main")
    a = m.loss(batch, torch.Generator().manual_seed(3))
    for _ in range(2):
        m.after_step("main")
    assert m.diagnostics()["cdr_kl_weight"] == pytest.approx(0.3)
    b = m.loss(batch, torch.Generator().manual_seed(3))
    # same draws, beta 0.1 -> 0.3 (the BN running stats do not enter a training pass)
    assert (b["kl"] / a["kl"]).item() == pytest.approx(3.0, rel=1e-5)
    assert b["recon"].item() == pytest.approx(a["recon"].item(), rel=1e-6)


def test_elbo_terms_hand_case():
    logits = torch.tensor([[0.0, math.log(3.0)], [5.0, -1.0]])
    x = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # the second user's slice is empty
    # softmax row 0 = [1/4, 3/4]; NLL = ln 4 + ln 4/3; the empty row adds 0 but counts in B
    want = (math.log(4.0) + math.log(4.0 / 3.0)) / 2
    assert multinomial_nll(logits, x).item() == pytest.approx(want, rel=1e-6)
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # row 0: -1/2 [(1 + 0 - 1 - 1) + (1 + ln 2 - 0 - 2)] = 1 - ln(2) / 2; row 1: 0
    assert gaussian_kl(mu, logvar).item() == pytest.approx((1 - math.log(2.0) / 2) / 2, rel=1e-6)


def test_gradient_variance_penalty_two_parameter_toy():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    l1 = w[0] ** 2 + w[1]  # g1 = [2 w1, 1] = [2, 1]
    l2 = 3 * w[0] + w[1] ** 2  # g2 = [3, 2 w2] = [3, 4]
    p = gradient_variance_penalty([l1, l2], w)
    # mean g = [2.5, 2.5]: 0.5^2 + 1.5^2 + 0.5^2 + 1.5^2
    assert p.item() == pytest.approx(5.0)
    # differentiable: P = (2 w1 - 3)^2 / 2 + (1 - 2 w2)^2 / 2 -> dP/dw = [2 (2 w1 - 3), ...]
    (grad,) = torch.autograd.grad(p, w)
    assert grad.tolist() == pytest.approx([-2.0, 6.0])
    assert gradient_variance_penalty([l1], w).item() == 0.0


def test_sparsity_term_is_the_normal_cdf_sum():
    w = torch.tensor([[0.0, 0.1], [-0.1, 0.2]])
    phi = [0.5, 0.8413447461, 0.1586552539, 0.9772498681]  # Phi(0), Phi(1), Phi(-1), Phi(2)
    assert normal_cdf_penalty(w, 0.1).item() == pytest.approx(sum(phi), rel=1e-6)
    m = _method(sparsity_weight=2.0, sigma=0.1)
    m.train()
    terms = m.loss(torch.tensor([0, 1]), torch.Generator().manual_seed(0))
    net = m.net
    want = 2.0 * (normal_cdf_penalty(net.w_ck, 0.1) + normal_cdf_penalty(net.w_cd, 0.1))
    assert terms["sparsity"].item() == pytest.approx(want.item(), rel=1e-6)


# ---------------------------------------------------------------- T > 1 training


def test_t_greater_than_one_trains_with_the_invariance_penalty():
    m = _method(num_envs=2, invariance_weight=1.0, regs=0.1)
    m.train()
    terms = m.loss(torch.tensor([0, 1, 2]), torch.Generator().manual_seed(1))
    assert set(terms) == {"recon", "kl", "invariance", "sparsity", "l2"}
    assert terms["invariance"].item() > 0
    assert terms["l2"].item() == pytest.approx(0.1 * m.net.weight_l2().item(), rel=1e-6)
    # double backward: the penalty alone reaches the encoder through d l_t / d W_p2
    m.zero_grad()
    terms["invariance"].backward()
    enc = m.net.encoder[0].weight.grad
    assert enc is not None and enc.abs().sum() > 0 and torch.isfinite(enc).all()


def test_one_environment_has_zero_invariance_penalty():
    m = _method(timed=False)
    m.train()
    terms = m.loss(torch.tensor([0, 1, 2]), torch.Generator().manual_seed(1))
    assert terms["invariance"].item() == 0.0


def test_batches_never_leave_one_user_alone_for_batchnorm():
    m = _method(batch_size=2)  # 3 users: [2, 1] would fail in BatchNorm -> one batch of 3
    (batch,) = list(m.batches(0, torch.Generator().manual_seed(0)))
    assert sorted(batch.tolist()) == [0, 1, 2]
    sizes = [b.numel() for b in _method(batch_size=2, batch_norm=False).batches(0, None)]
    assert sizes == [2, 1]


# ---------------------------------------------------------------- inference


def _by_hand(m: CDR, slices: list[torch.Tensor]) -> torch.Tensor:
    """The eval-mode chain written out: no noise, no dropout, BN with running stats."""
    net, tau = m.net, m.options.tau
    bn = net.bn_a
    z = torch.zeros(slices[0].shape[0], net.z_dim)
    w_ck = torch.softmax(net.w_ck.clamp(0, 1) / tau, 0)
    w_cd = torch.softmax(net.w_cd.clamp(0, 1) / tau, 0)
    for x in slices:
        h = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        e = net.encoder[1](torch.tanh(net.encoder[0](h)))
        mu = e[:, : net.a_dim]
        a = (mu - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        z = net.transition[0](torch.cat([a, z], 1))[:, : net.z_dim]
        logits = sum(net.decoder[0](z * w_ck[c]) * w_cd[c] for c in range(w_ck.shape[0])) / tau
    return logits


def test_inference_rolls_the_chain_over_t_plus_add_t_slices():
    m = _method(num_envs=1, add_envs=2)
    assert m.train_slices == 1 and m.infer_slices == 3
    m.eval()
    users = torch.tensor([0, 1, 2])
    with torch.no_grad():
        scores = m.scorer()(users)
        # user 0: chunk 5 // 3 = 1 -> {0}, {1}, {2, 3, 4}; users 1, 2: everything in slice 3
        s1 = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
        s2 = torch.tensor([[0.0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
        s3 = torch.tensor([[0.0, 0, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 1, 0]])
        want = _by_hand(m, [s1, s2, s3])
        one_slice = _by_hand(m, [s1 + s2 + s3])
    assert scores.shape == (3, 5) and scores.dtype == torch.float32
    assert torch.allclose(scores, want, atol=1e-6)
    assert not torch.allclose(scores, one_slice, atol=1e-4)  # the roll-forward matters


def test_without_timestamps_inference_uses_the_whole_history_once():
    m = _method(timed=False)
    m.eval()
    with torch.no_grad():
        scores = m.scorer()(torch.tensor([0, 1, 2]))
        history = F.one_hot(ITEMS, 5).float()
        full = torch.zeros(3, 5).index_add_(0, USERS, history).clamp_max(1)
        assert torch.allclose(scores, _by_hand(m, [full]), atol=1e-6)


def test_registered_with_official_implied_settings():
    assert METHODS.get("cdr") is CDR
    over = CDR.train_overrides({})
    assert over["train.lr"] == 1e-4 and over["train.batch_size"] == 500
    assert over["train.eval_every"] == 10 and over["train.epochs"] == 500
    assert CDR(
        MethodContext(_data(), ExperimentConfig(), torch.device("cpu")), CDROptions()
    ).max_grad_norm == pytest.approx(100.0)


def test_sparse_encoder_equals_the_dense_one():
    import torch.nn.functional as F

    from oodrec.models.cdr import CDRNetwork

    gen = torch.Generator().manual_seed(0)
    net = CDRNetwork(9, (6,), (), (), 3, 3, 2, 0.5, 0.1, 1.0, 0.5, False, 0.5, generator=gen)
    x = (torch.rand(5, 9, generator=gen) < 0.3).float()
    x[2] = 0.0  # an empty slice
    h = F.normalize(x, dim=1)
    want = net.encoder[1](torch.tanh(net.encoder[0](h)))
    net.eval()
    assert torch.allclose(net.encode(x), want, atol=1e-6)
    net.train()  # dropout keeps or drops nonzeros only, scaled by 1 / (1 - p)
    got = net.encode(x, torch.Generator().manual_seed(1))
    assert got.shape == want.shape and torch.isfinite(got).all()


def test_folded_decoder_equals_the_per_cluster_one_values_and_gradients():
    """With a one-layer p2, the clusters fold into the weight (one product, no [B, C, I]); the
    logits and every gradient equal the official per-cluster form."""
    from oodrec.models.cdr import CDRNetwork

    gen = torch.Generator().manual_seed(0)
    net = CDRNetwork(7, (6,), (), (), 3, 4, 3, 0.5, 0.1, 1.0, 0.5, False, 0.5, generator=gen)
    z = torch.randn(5, 4, generator=gen)
    w_ck = net.graph_weights(net.w_ck, gen)
    w_cd = net.graph_weights(net.w_cd, gen)
    grads = []
    for decode in (net.decode, net.decode_per_cluster):
        net.zero_grad()
        leaves = [t.detach().requires_grad_() for t in (z, w_ck, w_cd)]
        out = decode(*leaves)
        (out * torch.arange(35.0).view(5, 7)).sum().backward()
        layer = net.decoder[0]
        grads.append((out.detach(), layer.weight.grad, layer.bias.grad, *(t.grad for t in leaves)))
    for folded, literal in zip(*grads):
        assert torch.allclose(folded, literal, atol=1e-5)
    # a deeper p2 has a tanh between the layers: the literal form is used
    deep = CDRNetwork(7, (6,), (), (5,), 3, 4, 3, 0.5, 0.1, 1.0, 0.5, False, 0.5, generator=gen)
    assert torch.equal(deep.decode(z, w_ck, w_cd), deep.decode_per_cluster(z, w_ck, w_cd))
