"""CausalDiff pieces against hand calculations and dense references: the GCN propagation, the
environment graphs (flips as a dense XOR), the balanced VGAE loss (the official dense weighted
BCE), the KL terms, the loss combination, the diffusion weighting, the generator's log-probability,
the outer Var + beta Mean loss, and a check that no tensor of N^2 entries is ever allocated."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from oodrec.config import ExperimentConfig, apply_overrides
from oodrec.diffusion.schedule import make_schedule
from oodrec.methods import METHODS, MethodContext, TrainData, implied_overrides
from oodrec.methods.causaldiff import CausalDiff, CausalDiffOptions, EnvStep
from oodrec.models.causaldiff import (
    EdgeFlipGenerator,
    EnvVAE,
    GCNLayer,
    balanced_recon_loss,
    combine_env_loss,
    diffusion_x0_loss,
    environment_keys,
    gcn_adjacency,
    vgae_kl_term,
)
from oodrec.samplers import TripletBatch
from oodrec.seeding import make_generator

# 2 users, 3 items: nodes u0, u1, i0 = 2, i1 = 3, i2 = 4
USERS = torch.tensor([0, 0, 1, 1])
ITEMS = torch.tensor([0, 1, 1, 2])


def _dense_bipartite(users, items, num_users=2, num_items=3) -> torch.Tensor:
    n = num_users + num_items
    a = torch.zeros(n, n)
    a[users, items + num_users] = 1.0
    a[items + num_users, users] = 1.0
    return a


def _method(users=USERS, items=ITEMS, num_users=2, num_items=3, extra=(), **kw) -> CausalDiff:
    data = TrainData("t", num_users, num_items, users, items)
    cfg = apply_overrides(
        ExperimentConfig(),
        ["model.name=causaldiff", "model.emb_dim=4", "train.batch_size=4", *extra],
    )
    opts = CausalDiffOptions(**{"steps": 5, "sampling_steps": 5, "feature_dim": 6, **kw})
    return CausalDiff(MethodContext(data, cfg, torch.device("cpu")), opts)


# ---------------------------------------------------------------------- sparse graph pieces


def test_gcn_step_equals_the_dense_reference_on_a_five_node_graph():
    a = _dense_bipartite(USERS, ITEMS) + torch.eye(5)
    d = a.sum(1).rsqrt()
    a_hat = d[:, None] * a * d[None, :]
    adj = gcn_adjacency(USERS, ITEMS, 2, 5)
    assert torch.allclose(adj.to_dense(), a_hat, atol=1e-7)
    assert adj.values().numel() == 2 * 4 + 5  # both directions and the self loops

    layer = GCNLayer(3, 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([0.5, -1.0]))
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    out = layer(adj, x)
    w = layer.weight.detach().clone().requires_grad_(True)
    want = a_hat @ (x @ w) + layer.bias.detach()
    assert torch.allclose(out, want, atol=1e-6)
    # the symmetric sparse backward equals the dense one
    out.pow(2).sum().backward()
    want.pow(2).sum().backward()
    assert torch.allclose(layer.weight.grad, w.grad, atol=1e-5)


def test_flips_toggle_pairs_like_the_dense_official_update():
    # official: C = A + M * (A_c - A), i.e. the flipped entries of A toggle (dense XOR)
    flip_u, flip_i = torch.tensor([0, 1, 1]), torch.tensor([1, 0, 0])  # remove (0,1), add (1,0)
    keys = environment_keys(USERS, ITEMS, 2, 3, 0.0, flip_u, flip_i, torch.Generator())
    got = _dense_bipartite(keys // 3, keys % 3)
    a = _dense_bipartite(USERS, ITEMS)
    m = _dense_bipartite(torch.tensor([0, 1]), torch.tensor([1, 0]))
    assert torch.equal(got, a + m * ((1 - a) - a))
    assert sorted(keys.tolist()) == [0 * 3 + 0, 1 * 3 + 0, 1 * 3 + 1, 1 * 3 + 2]


def test_noise_level_rewires_edges_and_zero_keeps_them():
    none = torch.empty(0, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    keys = environment_keys(USERS, ITEMS, 2, 3, 0.0, none, none, gen)
    assert keys.tolist() == sorted((USERS * 3 + ITEMS).tolist())
    users, items = torch.arange(200), torch.arange(200)  # 200 edges among 10^6 pairs
    train = set((users * 1000 + items).tolist())
    keys = environment_keys(users, items, 1000, 1000, 1.0, none, none, gen)
    assert 190 <= len(keys) <= 200 and len(set(keys.tolist()) & train) < 5  # all rewired
    assert keys.min() >= 0 and keys.max() < 1000 * 1000
    keys = environment_keys(users, items, 1000, 1000, 0.5, none, none, gen)
    assert 60 < len(set(keys.tolist()) & train) < 140  # about half kept


def test_balanced_recon_loss_equals_the_official_dense_weighted_bce():
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    adj = _dense_bipartite(USERS, ITEMS)
    n2, pos = adj.numel(), adj.sum()
    # utils/evaulate.py: compute_loss_para and compute_vgae_loss (reconstruction part)
    pos_weight = (n2 - pos) / pos
    norm = n2 / float((n2 - pos) * 2)
    weight = torch.where(adj.view(-1) == 1, pos_weight, torch.ones(()))
    dense = norm * F.binary_cross_entropy(torch.sigmoid(z @ z.T).view(-1), adj.view(-1), weight)
    pa, pb = adj.nonzero(as_tuple=True)
    na, nb = (adj == 0).nonzero(as_tuple=True)  # every non-edge, diagonal included
    got = balanced_recon_loss(z, pa, pb, na, nb)
    assert got.item() == pytest.approx(dense.item(), rel=1e-5)
    # one direction per edge gives the same mean (symmetric logits)
    got_one = balanced_recon_loss(z, USERS, ITEMS + 2, na, nb)
    assert got_one.item() == pytest.approx(dense.item(), rel=1e-5)


def test_vgae_kl_term_by_hand():
    mean = torch.tensor([[1.0, 0.0]])
    log_std = torch.tensor([[0.0, math.log(2.0)]])
    # 0.5 / 1 * [(1 + 0 - 1 - 1) + (1 + 2 ln 2 - 0 - 4)] = ln 2 - 2 = -KL(q || N(0, 1))
    assert vgae_kl_term(mean, log_std).item() == pytest.approx(math.log(2.0) - 2.0, rel=1e-6)


def test_env_vae_kl_is_the_gaussian_kl_to_the_learnable_prior():
    evae = EnvVAE(3, with_encoder=True, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        evae.prior_mu.copy_(torch.tensor([0.5, -1.0, 0.0]))
        evae.prior_log_std.copy_(torch.tensor([0.2, -0.3, 0.1]))
    mu = torch.randn(4, 3, generator=torch.Generator().manual_seed(3))
    log_std = 0.3 * torch.randn(4, 3, generator=torch.Generator().manual_seed(4))
    normal = torch.distributions.Normal
    want = torch.distributions.kl_divergence(
        normal(mu, log_std.exp()), normal(evae.prior_mu, evae.prior_log_std.exp())
    ).sum()
    assert evae.kl(mu, log_std).item() == pytest.approx(want.item(), rel=1e-5)
    assert not hasattr(EnvVAE(3, with_encoder=False, generator=None), "prior_mu")


def test_loss_combination_code_and_paper_intended():
    elbo, vgae, infer = torch.tensor(2.0), torch.tensor(3.0), torch.tensor(5.0)
    assert combine_env_loss("code", elbo, vgae, None).item() == pytest.approx(0.1 * 3 + 0.03)
    assert combine_env_loss("paper_intended", elbo, vgae, infer).item() == pytest.approx(0.55)
    with pytest.raises(ValueError):
        combine_env_loss("paper_intended", elbo, vgae, None)


def test_diffusion_loss_weighting_by_hand():
    sched = make_schedule("linear-var", 3, 0.1, 0.01, 0.09)
    # linear-var: 1 - alpha_bar = linspace(0.001, 0.009, 3) -> alpha_bar = .999, .995, .991
    snr = [0.999 / 0.001, 0.995 / 0.005, 0.991 / 0.009]
    x0 = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    x0_hat = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # row mse 0.5 and 2.0
    t, pt = torch.tensor([0, 2]), torch.tensor([1.0, 2.0])
    loss, per_row = diffusion_x0_loss(sched, x0, x0_hat, t, pt, reweight=True)
    w2 = snr[1] - snr[2]
    assert per_row.tolist() == pytest.approx([0.5, w2 * 2.0], rel=1e-4)
    assert loss.item() == pytest.approx((0.5 / 1 + w2 * 2.0 / 2) / 2, rel=1e-4)
    loss, _ = diffusion_x0_loss(sched, x0, x0_hat, t, pt, reweight=False)
    assert loss.item() == pytest.approx((0.5 + 2.0 / 2) / 2)


# ---------------------------------------------------------------------- generator and losses


def test_generator_flips_and_log_probability():
    ed = EdgeFlipGenerator(num_envs=1, num_users=1, num_items=3, num_candidates=3)
    with torch.no_grad():
        ed.candidates.copy_(torch.tensor([[0, 1, 2], [0, 0, 0], [0, 0, 0], [0, 0, 0]]))
        ed.logits.copy_(torch.tensor([[[50.0, 0.0, -50.0]] + [[0.0, 1.0, 2.0]] * 3]))
    users, items, log_p = ed.sample(0, 1, torch.Generator().manual_seed(0))
    assert (users[0].item(), items[0].item()) == (0, 0)  # the user's dominant candidate
    assert users[1:].tolist() == [0, 0, 0] and items[1:].tolist() == [0, 1, 2]  # item rows
    assert log_p[0].item() == pytest.approx(0.0, abs=1e-6)
    # official formula: sum of the chosen logits minus one log-normaliser per node
    _, _, log_p = ed.sample(0, 3, torch.Generator().manual_seed(0))  # every candidate once
    lse = torch.logsumexp(ed.logits[0], dim=1)
    assert torch.allclose(log_p, ed.logits[0].sum(1) - lse)
    log_p.sum().backward()
    assert ed.logits.grad is not None and ed.logits.grad.abs().sum() > 0


def test_outer_loss_is_variance_plus_beta_mean_and_reinforce(monkeypatch):
    m = _method(beta=0.5)
    values = iter([1.0, 2.0, 4.0])
    monkeypatch.setattr(m, "environment_loss", lambda adj, gen: torch.tensor(next(values)))
    seen = []
    sample = m.editor.sample

    def record(k, num, gen):
        out = sample(k, num, gen)
        seen.append(out[2].detach())
        return out

    monkeypatch.setattr(m.editor, "sample", record)
    terms = m.env_loss(torch.Generator().manual_seed(0))
    assert terms["var"].item() == pytest.approx(7 / 3)  # unbiased variance of 1, 2, 4
    assert terms["mean"].item() == pytest.approx(0.5 * 7 / 3)
    want = -(7 / 3) * torch.stack(seen).sum(0).mean()
    assert terms["generator"].item() == pytest.approx(want.item(), rel=1e-5)


def test_non_edge_pairs_exclude_training_edges_in_both_directions():
    m = _method(recon_negatives=50)
    a, b = m.non_edge_pairs(torch.Generator().manual_seed(0))
    assert 0 < a.numel() <= 50 * 4
    edges = set(zip(USERS.tolist(), (ITEMS + 2).tolist()))
    edges |= {(j, i) for i, j in edges}
    assert not set(zip(a.tolist(), b.tolist())) & edges
    assert bool(((a < 2) == (b < 2)).any())  # user-user / item-item pairs are non-edges too


def test_every_epoch_restarts_the_lightgcn_from_generated_embeddings():
    m = _method(rec_init="every_epoch", env_steps=2)
    opt = m.optimizers()
    m.train()
    m.start_epoch(3)
    gen = torch.Generator().manual_seed(0)
    it = iter(m.batches(3, gen))
    assert [m.phase(3, s) for s in range(3)] == ["env", "env", "main"]
    assert isinstance(next(it), EnvStep) and isinstance(next(it), EnvStep)
    sum(m.loss(TripletBatch(USERS, ITEMS), gen).values()).backward()
    opt["main"].step()
    assert opt["main"].state
    batch = next(it)  # the restart happens here, after the env steps
    assert isinstance(batch, TripletBatch) and not opt["main"].state
    want = m.generate(make_generator(m.ctx.cfg.seed, "diffusion", 3))
    assert torch.equal(m.model.user_emb, want[:2]) and torch.equal(m.model.item_emb, want[2:])
    once = _method(pretrain_steps=3)
    assert [once.phase(0, s) for s in range(4)] == ["env"] * 3 + ["main"]
    assert once.phase(1, 0) == "main"


def test_paper_intended_trains_the_env_vae_encoder_and_prior():
    m = _method(loss_mode="paper_intended")
    m.train()
    terms = m.env_loss(torch.Generator().manual_seed(0))
    sum(terms.values()).backward()
    for p in (m.evae.prior_mu, m.evae.prior_log_std, m.evae.enc_mu.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert not hasattr(_method().evae, "enc_mu")  # code mode: the dropped loss's parts


@pytest.mark.parametrize(
    "kw",
    [
        {"features": "learned"},
        {"rec_init": "every_epoch"},
        {"loss_mode": "paper_intended"},
        {"reset_generator": False, "noise_level": 0.0},
    ],
)
def test_every_variant_reaches_every_parameter_and_stays_finite(kw):
    m = _method(pretrain_steps=1, **kw)
    opt = m.optimizers()
    m.train()
    reached = set()
    for epoch in range(2):
        m.start_epoch(epoch)
        gen = torch.Generator().manual_seed(epoch)
        for step, batch in enumerate(m.batches(epoch, gen)):
            phase = m.phase(epoch, step)
            for o in opt.values():
                o.zero_grad()
            terms = m.loss(batch, gen, phase)
            assert all(torch.isfinite(v) for v in terms.values())
            sum(terms.values()).backward()
            reached |= {n for n, p in m.named_parameters() if p.grad is not None and p.grad.any()}
            opt[phase].step()
    assert reached == {n for n, _ in m.named_parameters()}
    assert m.diagnostics() == {} or m.diagnostics()["causaldiff_env_edge_ratio"] > 0


def test_generated_embeddings_and_implied_settings():
    m = _method()
    emb = m.generate(torch.Generator().manual_seed(0))
    assert emb.shape == (5, 4) and torch.isfinite(emb).all() and emb.abs().max() <= 10
    cfg = apply_overrides(ExperimentConfig(), ["model.name=causaldiff"])
    implied = implied_overrides(cfg)
    assert implied["model.emb_dim"] == 8 and implied["model.num_layers"] == 3
    assert implied["train.lr"] == 1e-3 and implied["train.epochs"] == 25
    assert METHODS.get("causaldiff") is CausalDiff


# ---------------------------------------------------------------------- memory


def _stored(t: torch.Tensor) -> int:
    """Entries a tensor holds (a sparse tensor: its stored values, not its dense size)."""
    if t.layout == torch.strided:
        return t.numel()
    if t.layout == torch.sparse_coo:
        return t._nnz()
    return t.values().numel()


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op returns (forward and backward, factories too)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest, self.where, self.ops = 0, "", 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and _stored(t) > self.largest:
                self.largest, self.where = _stored(t), f"{func} -> {tuple(t.shape)}"
        return out


def test_the_probe_sees_a_dense_square_and_counts_sparse_tensors_by_entries():
    with LargestTensor() as probe:
        torch.ones(300, 300)
    assert probe.largest == 300 * 300
    with LargestTensor() as probe:
        adj = gcn_adjacency(torch.tensor([0]), torch.tensor([0]), 1000, 3000)
    assert adj.shape == (3000, 3000) and probe.largest < 10_000


def test_no_tensor_grows_with_nodes_squared():
    """A graph with N = 6000 nodes and 3000 edges: construction, an env step (forward, backward
    and optimiser step), the generation, a BPR step and scoring never hold N^2 / 20 entries."""
    num_users = num_items = 3000
    n = num_users + num_items
    users = torch.arange(num_users)
    items = torch.randint(num_items, (num_users,), generator=torch.Generator().manual_seed(0))
    with LargestTensor() as probe:
        m = _method(
            users, items, num_users, num_items, extra=("model.emb_dim=8",), steps=10,
            sampling_steps=10, feature_dim=64, pretrain_steps=1,
        )  # fmt: skip
        opt = m.optimizers()
        m.train()
        m.start_epoch(0)
        gen = torch.Generator().manual_seed(1)
        for step, batch in enumerate(m.batches(0, gen)):
            phase = m.phase(0, step)
            for o in opt.values():
                o.zero_grad()
            sum(m.loss(batch, gen, phase).values()).backward()
            opt[phase].step()
            if step == 2:
                break
        m.eval()
        with torch.no_grad():
            scores = m.scorer()(torch.arange(4))
    assert scores.shape == (4, num_items)
    assert probe.ops > 1000  # it saw the whole run
    assert probe.largest >= 3 * n * 32  # and the generator's [K, N, C] logits
    assert probe.largest < n * n // 20, probe.where
