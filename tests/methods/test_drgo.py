"""DRGO (our reconstruction): its loss pieces against hand-computed values on tiny tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from oodrec.config import DataConfig, ExperimentConfig, TrainConfig, apply_overrides
from oodrec.data.dataset import load_dataset
from oodrec.errors import ConfigError
from oodrec.methods import TrainData, build_method
from oodrec.methods.drgo import GenStep
from oodrec.models.drgo import (
    approx_betweenness,
    entropic_weights,
    exponentiated_weights,
    group_means,
    group_point_sets,
    kmeans,
    nominal_nodes,
    sinkhorn_divergence,
    truncated_svd_rows,
    update_ema,
    user_groups,
)
from oodrec.samplers.base import uniform_items
from oodrec.seeding import make_generator

T, F_ = True, False


def test_group_means_and_presence():
    # groups 0: (1 + 3) / 2 = 2; 1: 2; 2: 4; 3: absent -> 0
    means, present = group_means(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0, 1, 0, 2]), 4)
    assert means.tolist() == [2.0, 2.0, 4.0, 0.0]
    assert present.tolist() == [T, T, T, F_]


def test_moving_average_skips_absent_groups():
    # 0.7 * 1 + 0.3 * 2 = 1.3; 0.7 * 1 + 0.3 * 4 = 1.9; the absent group keeps 1
    out = update_ema(
        torch.ones(4), torch.tensor([2.0, 2.0, 4.0, 0.0]), torch.tensor([T, T, T, F_]), 0.3
    )
    assert torch.allclose(out, torch.tensor([1.3, 1.3, 1.9, 1.0]))


def test_entropic_weights_are_a_softmax_over_present_groups():
    adv, present = torch.tensor([0.5, 0.3, 0.9]), torch.tensor([T, T, F_])
    # softmax(0.5, 0.3): 1 / (1 + e^-0.2) = 0.549834; the absent group gets 0
    w = entropic_weights(adv, present, beta=1.0)
    assert torch.allclose(w, torch.tensor([0.549834, 0.450166, 0.0]), atol=1e-6)
    # beta = 0.1 sharpens: 1 / (1 + e^-2) = 0.880797
    w = entropic_weights(adv, present, beta=0.1)
    assert torch.allclose(w, torch.tensor([0.880797, 0.119203, 0.0]), atol=1e-6)


def test_entropic_weights_maximise_the_regularised_objective():
    # w = softmax(a / beta) maximises sum w a + beta H(w) on the simplex: any other point is worse
    a, beta = np.array([0.2, -0.1, 0.4]), 0.5
    w = entropic_weights(torch.tensor(a), torch.tensor([T, T, T]), beta).numpy()

    def objective(v):
        return float((v * a).sum() - beta * (v * np.log(v)).sum())

    rng = np.random.default_rng(0)
    for _ in range(20):
        other = rng.dirichlet(np.ones(3))
        assert objective(w) >= objective(other) - 1e-12


def test_exponentiated_weights_match_the_released_update():
    # [0.5 e^0.1, 0.5 e^0] / sum = [0.524979, 0.475021]
    w = exponentiated_weights(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]), 0.1)
    assert torch.allclose(w, torch.tensor([0.524979, 0.475021]), atol=1e-6)


def _all(n: int, g: int = 1) -> torch.Tensor:
    return torch.ones(g, n, dtype=torch.bool)


def test_sinkhorn_single_points_is_the_ground_cost():
    # one point each: the only plan is the product, so the divergence is |x - y| = 5 (p = 1)
    # and |x - y|^2 / 2 = 12.5 (p = 2), with no entropic term
    x, y = torch.tensor([[[0.0, 0.0]]]), torch.tensor([[3.0, 4.0]])
    assert torch.allclose(sinkhorn_divergence(x, _all(1), y), torch.tensor([5.0]))
    assert torch.allclose(sinkhorn_divergence(x, _all(1), y, p=2), torch.tensor([12.5]))


def test_sinkhorn_two_point_sets_and_debiasing():
    y = torch.tensor([[1.0], [11.0]])
    # {0, 10} -> {1, 11}: each point moves 1; the entropic parts eps log 2 of OT(a, b) and of the
    # two self terms cancel, so the divergence is 1
    x = torch.tensor([[[0.0], [10.0]]])
    assert sinkhorn_divergence(x, _all(2), y).item() == pytest.approx(1.0, abs=1e-4)
    # {5} -> {1, 11}: OT = (4 + 6) / 2 = 5, OT(a, a) = 0, OT(b, b) = eps log 2 with eps = 0.05
    x = torch.tensor([[[5.0], [123.0]]])  # the second row is padding
    mask = torch.tensor([[T, F_]])
    expected = 5.0 - 0.5 * 0.05 * math.log(2)  # 4.982671
    assert sinkhorn_divergence(x, mask, y).item() == pytest.approx(expected, abs=1e-4)


def test_sinkhorn_identical_sets_and_empty_groups_give_zero():
    y = torch.tensor([[0.0, 1.0], [2.0, 0.5], [1.0, 1.0]])
    x = torch.stack([y, y[[1, 0, 2]]])  # two groups, both the same set as y
    out = sinkhorn_divergence(x, _all(3, 2), y)
    assert torch.allclose(out, torch.zeros(2), atol=1e-4)
    empty = sinkhorn_divergence(torch.ones(1, 2, 2), torch.zeros(1, 2, dtype=torch.bool), y)
    assert empty.tolist() == [0.0]


def test_betweenness_on_a_path_and_a_cycle():
    # path u0 - i0 - u1 - i1 (nodes 0, 2, 1, 3): i0 is inside the pairs (u0, u1), (u0, i1),
    # u1 inside (u0, i1), (i0, i1); counted once per source -> 2 * 2 = 4; the ends 0
    users, items = torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1])
    assert approx_betweenness(users, items, 2, 2, torch.arange(4)).tolist() == [0, 4, 4, 0]
    # one source, u0: its BFS passes i0 on the way to u1 and i1, u1 on the way to i1
    assert approx_betweenness(users, items, 2, 2, torch.tensor([0])).tolist() == [0, 1, 2, 0]
    # the 4-cycle u0 - i0 - u1 - i1 - u0: each node carries half of the pair of its two
    # neighbours, in both directions -> 1
    users, items = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    assert approx_betweenness(users, items, 2, 2, torch.arange(4)).tolist() == [1, 1, 1, 1]


def test_betweenness_matches_networkx():
    nx = pytest.importorskip("networkx")
    g = torch.Generator().manual_seed(0)
    num_u, num_i = 15, 12
    keys = torch.unique(torch.randint(num_u * num_i, (40,), generator=g))
    users, items = keys // num_i, keys % num_i
    graph = nx.Graph()
    graph.add_nodes_from(range(num_u + num_i))
    graph.add_edges_from(zip(users.tolist(), (items + num_u).tolist()))
    ref = nx.betweenness_centrality(graph, normalized=False)  # unordered pairs
    ours = approx_betweenness(users, items, num_u, num_i, torch.arange(num_u + num_i))
    assert np.allclose(ours.numpy() / 2, [ref[n] for n in range(num_u + num_i)])


def test_nominal_nodes_take_the_top_share():
    c = torch.tensor([0.1, 0.5, 0.5, 0.2, 0.0])
    assert nominal_nodes(c, 0.4).tolist() == [1, 2]  # ceil(0.4 * 5) = 2, ties by id
    assert nominal_nodes(c, 0.01).tolist() == [1]  # at least one node


def test_group_point_sets_hold_each_groups_distinct_users():
    users = torch.tensor([3, 1, 3, 0, 2])
    group_of = torch.tensor([0, 1, 0, 1])  # user -> group; group 2 has no user
    ids, mask = group_point_sets(users, group_of, 3, 5, torch.Generator().manual_seed(0))
    assert mask.tolist() == [[T, T], [T, T], [F_, F_]]
    assert sorted(ids[0].tolist()) == [0, 2] and sorted(ids[1].tolist()) == [1, 3]
    ids, mask = group_point_sets(users, group_of, 3, 1, torch.Generator().manual_seed(0))
    assert mask.tolist() == [[T], [T], [F_]]
    assert ids[0, 0].item() in (0, 2) and ids[1, 0].item() in (1, 3)


def test_truncated_svd_matches_numpy():
    users = torch.tensor([0, 0, 1, 1, 2, 3, 3, 3, 4])
    items = torch.tensor([0, 1, 1, 2, 0, 0, 2, 3, 3])
    dense = np.zeros((5, 4))
    dense[users.numpy(), items.numpy()] = 1
    u, s, _ = np.linalg.svd(dense)
    ref = u[:, :2] * s[:2]
    ours = truncated_svd_rows(users, items, 5, 4, 2, torch.Generator().manual_seed(0)).numpy()
    signs = np.sign((ours * ref).sum(0))  # singular vectors are defined up to sign
    assert np.allclose(ours * signs, ref, atol=1e-5)


def test_kmeans_separates_clear_clusters():
    x = torch.tensor([[0.0, 0], [0.1, 0], [5, 5], [5.1, 5], [10, 0], [10, 0.1]])
    labels = kmeans(x, 3, torch.Generator().manual_seed(1)).tolist()
    assert labels[0] == labels[1] and labels[2] == labels[3] and labels[4] == labels[5]
    assert len({labels[0], labels[2], labels[4]}) == 3
    # the groups of users: a user's group only depends on their training items
    users = torch.tensor([0, 1, 2, 3])
    items = torch.tensor([0, 0, 1, 1])
    groups = user_groups(users, items, 4, 2, 2, 64, torch.Generator().manual_seed(0)).tolist()
    assert groups[0] == groups[1] != groups[2] == groups[3]


def _method(tiny_dir, *extra: str):
    cfg = ExperimentConfig(
        data=DataConfig(dataset=str(tiny_dir)), train=TrainConfig(batch_size=16), seed=3
    )
    cfg = apply_overrides(
        cfg,
        [
            "model.name=drgo",
            *("model.emb_dim=8", "model.steps=5", "model.feature_dim=8", "model.hidden_dim=8"),
            *("model.mlp_dim=8", "model.num_groups=3", "model.pretrain_steps=2", *extra),
        ],
    )
    ds = load_dataset(cfg.data)
    return build_method(cfg, TrainData.from_dataset(ds), torch.device("cpu"))


def test_dro_term_is_the_weighted_group_mean(tiny_dir):
    # without the Sinkhorn term and from zero moving averages: L~ = 0.3 L_g, w = softmax(0.3 L_g)
    method = _method(tiny_dir, "model.sinkhorn_weight=0")
    method.train()
    method.start_epoch(1)
    batch = next(iter(method.batches(1, torch.Generator().manual_seed(0))))
    gen = torch.Generator().manual_seed(1)
    terms = method.loss(batch, gen, "main")
    # the same negatives, from the same stream
    neg_gen = torch.Generator().manual_seed(1)
    neg = uniform_items(batch.users, method.num_items, neg_gen, positives=method.positives)
    with torch.no_grad():
        emb = method.model.propagate()
        u = emb.users[batch.users].numpy()
        s_pos = (u * emb.items[batch.pos_items].numpy()).sum(1)
        s_neg = (u * emb.items[neg].numpy()).sum(1)
    per_pair = np.log1p(np.exp(s_neg - s_pos))
    groups = method.user_group[batch.users].numpy()
    present = np.unique(groups)
    means = np.array([per_pair[groups == g].mean() for g in present])
    w = np.exp(0.3 * means) / np.exp(0.3 * means).sum()
    assert terms["dro"].item() == pytest.approx(float((w * means).sum()), rel=1e-5)
    assert torch.allclose(method.loss_ema[present], torch.tensor(0.3 * means, dtype=torch.float32))


def test_vgae_weight_decays_over_stage_a(tiny_dir):
    # kappa_s = 0.01 ** (s / S): with S = 2, step 1 weighs the VGAE loss 0.1 of step 0
    method = _method(tiny_dir)
    method.train()
    a = method.gen_loss(GenStep(0), torch.Generator().manual_seed(4))
    b = method.gen_loss(GenStep(1), torch.Generator().manual_seed(4))
    assert b["vgae"].item() == pytest.approx(0.1 * a["vgae"].item(), rel=1e-5)
    assert b["diff"].item() == pytest.approx(a["diff"].item(), rel=1e-6)


def test_stage_a_ends_by_starting_the_lightgcn_from_the_denoised_latents(tiny_dir):
    method = _method(tiny_dir)
    method.train()
    gen = torch.Generator().manual_seed(0)
    steps = list(method.batches(0, gen))
    assert [method.phase(0, i) for i in range(3)] == ["gen", "gen", "main"]
    assert isinstance(steps[0], GenStep) and not isinstance(steps[2], GenStep)
    expected = method.generate(make_generator(3, "diffusion"))
    egos = torch.cat([method.model.user_emb, method.model.item_emb]).detach()
    assert torch.equal(egos, expected)
    assert [method.phase(1, 0)] == ["main"]


def test_options_are_checked(tiny_dir):
    with pytest.raises(ConfigError, match="sinkhorn_p"):
        _method(tiny_dir, "model.sinkhorn_p=3")
    with pytest.raises(ConfigError, match="beta"):
        _method(tiny_dir, "model.beta=0")
