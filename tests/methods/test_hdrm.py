"""HDRM pieces against hand calculations (margin loss, propagation, schedule, forward noising,
directional noise, reconstruction and the full stage-2 loss), the frozen backbone, and the
two-stage workflow: loading a stage-1 run, and refusing one trained on other data."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from torch import nn

from oodrec.cli import main
from oodrec.config import DataConfig, ExperimentConfig, TrainConfig, apply_overrides
from oodrec.data.dataset import load_dataset
from oodrec.errors import ConfigError
from oodrec.methods import MethodContext, TrainData, build_method, implied_overrides
from oodrec.methods.hdrm import HDRM, HDRMOptions, directional_noise, recon_loss
from oodrec.methods.hdrm_backbone import HDRMBackbone, margin_loss, train_fingerprint
from oodrec.models import hyperbolic as H
from oodrec.train.loop import train
from oodrec.train.reload import load_run

# 2 users x 3 items: user 0 has items 0, 1 and user 1 has items 1, 2, so each user has exactly
# one non-positive item (2 and 0): the uniform negatives are known.
USERS, ITEMS = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 2])


def _ctx(extra=(), num_layers=1, emb_dim=3) -> MethodContext:
    data = TrainData("hand", 2, 3, USERS, ITEMS)
    cfg = apply_overrides(
        ExperimentConfig(seed=3),
        [f"model.num_layers={num_layers}", f"model.emb_dim={emb_dim}", *extra],
    )
    return MethodContext(data, cfg, torch.device("cpu"))


def _stage2(**opts) -> HDRM:
    base = {"allow_untrained_backbone": True, "dims": (4,), "steps": 2, "sampling_steps": 2}
    return HDRM(_ctx(("model.name=hdrm",)), HDRMOptions(**{**base, **opts}))


def _point(*spatial: float) -> torch.Tensor:
    return H.expmap0(torch.tensor([[0.0, *spatial]], dtype=torch.float64), 1.0)


# ------------------------------------------------------------------ stage 1


def test_margin_loss_is_a_summed_hinge():
    d2_pos = torch.tensor([1.0, 0.5, 3.0])
    d2_neg = torch.tensor([1.5, 0.1, 0.0])
    # max(0, -0.3) + max(0, 0.6) + max(0, 3.2)
    assert float(margin_loss(d2_pos, d2_neg, 0.2)) == pytest.approx(3.8)


def test_hgcf_margin_on_hyperboloid_points():
    u, near, far = _point(0.0, 0.0), _point(0.5, 0.0), _point(0.0, 1.0)
    d2_near, d2_far = H.sqdist(u, near, 1.0), H.sqdist(u, far, 1.0)
    assert float(d2_near) == pytest.approx(0.25) and float(d2_far) == pytest.approx(1.0)
    assert float(margin_loss(d2_near, d2_far, 0.2)) == 0.0  # the positive is nearer by > margin
    assert float(margin_loss(d2_far, d2_near, 0.2)) == pytest.approx(1.0 - 0.25 + 0.2)


def test_propagation_sums_layers_one_to_l_without_layer_zero():
    # one user and one item linked: A_hat swaps them (degrees 1)
    data = TrainData("pair", 1, 1, torch.tensor([0]), torch.tensor([0]))
    for layers, (w_user, w_item) in {1: (0, 1), 2: (1, 1), 3: (1, 2)}.items():
        cfg = apply_overrides(ExperimentConfig(), [f"model.num_layers={layers}", "model.emb_dim=3"])
        m = HDRMBackbone(MethodContext(data, cfg, torch.device("cpu")), None)
        e_u = H.logmap0(m.backbone.user_emb, 1.0)
        e_i = H.logmap0(m.backbone.item_emb, 1.0)
        user_t, item_t = m.backbone.tangent()
        assert torch.allclose(user_t, w_user * e_u + w_item * e_i, atol=1e-6)
        assert torch.allclose(item_t, w_user * e_i + w_item * e_u, atol=1e-6)


def test_stage1_loss_uses_the_only_negative_and_scores_are_negative_sqdist():
    m = HDRMBackbone(_ctx(("model.name=hdrm_backbone",)), None)
    batch = next(iter(m.batches(0, torch.Generator().manual_seed(0))))
    terms = m.loss(batch, torch.Generator().manual_seed(1))
    user_t, item_t = m.backbone.tangent()
    neg = torch.where(batch.users == 0, 2, 0)
    to = m.backbone.to_manifold
    u = to(user_t[batch.users])
    d2p, d2n = H.sqdist(u, to(item_t[batch.pos_items]), 1.0), H.sqdist(u, to(item_t[neg]), 1.0)
    assert torch.allclose(terms["margin"], (d2p - d2n + 0.2).clamp_min(0).sum())
    m.eval()
    with torch.no_grad():
        scores = m.scorer()(torch.tensor([0, 1]))
    assert torch.allclose(scores, -H.pairwise_sqdist(to(user_t), to(item_t), 1.0))
    assert (scores <= 0).all()


def test_user_sampling_draws_train_size_pairs_that_are_training_pairs():
    m = HDRMBackbone(_ctx(("model.name=hdrm_backbone",)), None)
    pairs = list(m.batches(0, torch.Generator().manual_seed(0)))
    users = torch.cat([b.users for b in pairs])
    items = torch.cat([b.pos_items for b in pairs])
    assert users.numel() == USERS.numel()
    assert m.positives.contains(users, items).all()


def test_train_fingerprint_ignores_order_and_sees_pairs():
    a = TrainData("x", 2, 3, USERS, ITEMS)
    b = TrainData("x", 2, 3, USERS.flip(0), ITEMS.flip(0))
    c = TrainData("x", 2, 3, USERS, torch.tensor([0, 1, 0, 2]))
    assert train_fingerprint(a) == train_fingerprint(b) != train_fingerprint(c)


# ------------------------------------------------------------------ stage 2: diffusion terms


def test_schedule_fixes_the_first_beta_as_the_official_code():
    noise = {"noise_scale": 0.1, "noise_min": 0.1, "noise_max": 0.5}
    m = _stage2(**noise)
    v = [0.01, 0.05]  # linspace(0.1 * 0.1, 0.1 * 0.5, 2), read as 1 - alpha_bar
    betas = [1e-5, 1 - (1 - v[1]) / (1 - v[0])]
    assert m.sched.betas.tolist() == pytest.approx(betas, rel=1e-5)
    ab = [1 - betas[0], (1 - betas[0]) * (1 - betas[1])]
    assert m.sched.alphas_cumprod.tolist() == pytest.approx(ab, rel=1e-6)
    free = _stage2(**noise, fix_first_beta=False)
    assert free.sched.betas[0].item() == pytest.approx(v[0])


def test_forward_noising_by_hand():
    m = _stage2()
    x0 = torch.tensor([[0.0, 1.0, -2.0], [0.0, 0.5, 0.5]])
    t = torch.tensor([0, 1])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))
    got = m.noised(x0, t, torch.Generator().manual_seed(4))
    ab = m.sched.alphas_cumprod[t].unsqueeze(1)
    assert torch.allclose(got, ab.sqrt() * x0 + (1 - ab).sqrt() * noise)


def test_directional_noise_by_hand():
    x0 = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    noise = torch.tensor([[-0.5, 0.5], [1.0, -1.0]])
    r2 = math.sqrt(2.0)  # unbiased std of both columns
    expected = [[2 + r2 * 0.5, -1 - r2 * 0.5], [2 + r2 * 1.0, -1 + 0.0]]
    assert torch.allclose(directional_noise(noise, x0), torch.tensor(expected))
    # a single row has no spread: the noise is the row itself
    assert torch.equal(directional_noise(noise[:1], x0[:1]), x0[:1])


def test_recon_loss_by_hand():
    u, u_new = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.zeros(2, 2)
    i, i_new = torch.tensor([[0.0, 0.0], [2.0, 2.0]]), torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # rows: 1/2 (0.5 + 0) and 1/2 (2 + 1)
    assert float(recon_loss(u, u_new, i, i_new)) == pytest.approx(0.25 + 1.5)


class _Zero(nn.Module):
    """A denoiser that predicts x0 = 0 (so u' = (1 - w) u)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x, cond, t, gen=None):
        return torch.zeros_like(x) * self.w


def test_stage2_loss_by_hand_with_a_zero_denoiser():
    m = _stage2(alpha=0.3, blend=0.05, margin=0.2)
    m.user_dnn, m.item_dnn = _Zero(), _Zero()
    users, pos = torch.tensor([0, 1]), torch.tensor([0, 2])
    from oodrec.samplers import TripletBatch

    terms = m.loss(TripletBatch(users, pos), torch.Generator().manual_seed(0))
    user_t, item_t = m.tangent()
    u, i = user_t[users].double(), item_t[pos].double()
    j = item_t[torch.tensor([2, 0])].double()  # the only non-positives
    recon = sum(
        0.5 * ((0.05 * u[b]) ** 2).mean() + 0.5 * ((0.05 * i[b]) ** 2).mean() for b in range(2)
    )

    def d2(a, b):  # arcosh(-<x, y>_L)^2 for c = 1, written out
        x, y = H.expmap0(a.unsqueeze(0), 1.0)[0], H.expmap0(b.unsqueeze(0), 1.0)[0]
        return math.acosh(max(1.0, float(x[0] * y[0] - (x[1:] * y[1:]).sum()))) ** 2

    margin = sum(
        max(0.0, d2(0.95 * u[b], 0.95 * i[b]) - d2(0.95 * u[b], j[b]) + 0.2) for b in range(2)
    )
    terms = {k: v.detach() for k, v in terms.items()}
    assert float(terms["recon"]) == pytest.approx(0.3 * float(recon), rel=1e-4)
    assert margin > 0.1 and float(terms["margin"]) == pytest.approx(0.7 * margin, rel=1e-4)


# ------------------------------------------------------------------ frozen backbone


def test_frozen_backbone_gets_no_gradient_and_does_not_move(tiny_dir, tmp_path):
    cfg = _tiny_cfg(tiny_dir, "hdrm", "model.allow_untrained_backbone=true", epochs=2)
    ds = load_dataset(cfg.data)
    m = build_method(cfg, TrainData.from_dataset(ds), torch.device("cpu"))
    before = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    m.train()
    gen = torch.Generator().manual_seed(0)
    batch = next(iter(m.batches(0, gen)))
    sum(m.loss(batch, gen).values()).backward()
    assert all(not p.requires_grad and p.grad is None for p in m.backbone.parameters())
    assert all(p.grad is not None for p in m.user_dnn.parameters())
    assert set(m.optimizers()["main"].optimizers) == {"user_dnn", "item_dnn"}
    train(cfg, ds, run_dir=tmp_path / "run")
    trained = load_run(tmp_path / "run", checkpoint="last").method
    assert all(torch.equal(before[k], v) for k, v in trained.backbone.state_dict().items())
    assert not all(
        torch.equal(a, b) for a, b in zip(m.user_dnn.parameters(), trained.user_dnn.parameters())
    )


def test_unfrozen_backbone_trains_with_riemannian_sgd(tiny_dir):
    extra = ("model.allow_untrained_backbone=true", "model.freeze_backbone=false")
    cfg = _tiny_cfg(tiny_dir, "hdrm", *extra)
    ds = load_dataset(cfg.data)
    m = build_method(cfg, TrainData.from_dataset(ds), torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    sum(m.loss(next(iter(m.batches(0, gen))), gen).values()).backward()
    assert m.backbone.user_emb.grad is not None and m.backbone.user_emb.grad.abs().sum() > 0
    assert set(m.optimizers()["main"].optimizers) == {"user_dnn", "item_dnn", "backbone"}


# ------------------------------------------------------------------ the two stages


def _tiny_cfg(data_dir, name, *extra, epochs=1):
    cfg = ExperimentConfig(
        data=DataConfig(dataset=str(data_dir)),
        train=TrainConfig(epochs=epochs, batch_size=16, patience=0),
        seed=5,
    )
    fast = ["model.emb_dim=8", "train.lr=0.01"]
    if name == "hdrm":
        fast += ["model.dims=[16]", "model.steps=5", "model.sampling_steps=5"]
    return apply_overrides(cfg, [f"model.name={name}", "model.num_layers=2", *fast, *extra])


@pytest.fixture
def stage1_run(tiny_dir, tmp_path):
    cfg = _tiny_cfg(tiny_dir, "hdrm_backbone")
    run = tmp_path / "stage1"
    train(cfg, load_dataset(cfg.data), run_dir=run)
    return run


def test_stage2_loads_the_stage1_best_checkpoint_and_records_it(tiny_dir, stage1_run):
    cfg = _tiny_cfg(tiny_dir, "hdrm", f"model.backbone_run={stage1_run}")
    ds = load_dataset(cfg.data)
    m = build_method(cfg, TrainData.from_dataset(ds), torch.device("cpu"))
    stage1 = load_run(stage1_run)
    for a, b in zip(m.backbone.parameters(), stage1.method.backbone.parameters()):
        assert torch.equal(a, b)
    info = m.describe()["backbone"]
    record = json.loads((stage1_run / "record.json").read_text())
    assert info["path"] == str(stage1_run.resolve()) and info["dataset"] == "tiny"
    assert info["train_fingerprint"] == record["resolved_options"]["train_fingerprint"]
    assert len(info["config_fingerprint"]) == 16 and info["untrained"] is False
    # stage 2 takes D and L from the stage-1 run; an explicit other value is refused
    implied = implied_overrides(apply_overrides(cfg, ["model.num_layers=3"]))
    assert implied["model.num_layers"] == 2 and implied["model.emb_dim"] == 8
    with pytest.raises(ConfigError, match="num_layers=3.*num_layers=2"):
        build_method(
            apply_overrides(cfg, ["model.num_layers=3"]),
            TrainData.from_dataset(ds),
            torch.device("cpu"),
        )


def test_stage2_without_a_backbone_run_says_how_to_train_stage1(tiny_dir):
    cfg = _tiny_cfg(tiny_dir, "hdrm")
    ds = load_dataset(cfg.data)
    with pytest.raises(ConfigError, match="--model hdrm_backbone.*model.backbone_run=runs/tiny-"):
        build_method(cfg, TrainData.from_dataset(ds), torch.device("cpu"))


def test_stage2_refuses_a_stage1_run_on_other_data(
    tmp_path, tiny_dir, stage1_run, tiny_dataset_factory
):
    # same name and sizes, other training pairs: the fingerprint differs
    other = tiny_dataset_factory(tmp_path / "o", seed=1)
    cfg = _tiny_cfg(other, "hdrm", f"model.backbone_run={stage1_run}")
    data = TrainData.from_dataset(load_dataset(cfg.data))
    with pytest.raises(ConfigError, match="other data.*train_fingerprint"):
        build_method(cfg, data, torch.device("cpu"))
    # another dataset name: both names are in the message
    renamed = tmp_path / "r" / "food_like"
    shutil.copytree(tiny_dir, renamed)
    cfg = _tiny_cfg(renamed, "hdrm", f"model.backbone_run={stage1_run}")
    with pytest.raises(ConfigError, match="'tiny'.*'food_like'"):
        build_method(cfg, TrainData.from_dataset(load_dataset(cfg.data)), torch.device("cpu"))


def test_stage2_refuses_a_run_of_another_model_or_an_unfinished_one(tiny_dir, tmp_path):
    lgn = ExperimentConfig(
        data=DataConfig(dataset=str(tiny_dir)),
        train=TrainConfig(epochs=1, batch_size=16, patience=0),
    )
    ds = load_dataset(lgn.data)
    train(lgn, ds, run_dir=tmp_path / "lgn")
    cfg = _tiny_cfg(tiny_dir, "hdrm", f"model.backbone_run={tmp_path / 'lgn'}")
    with pytest.raises(ConfigError, match="'lightgcn' run"):
        build_method(cfg, TrainData.from_dataset(ds), torch.device("cpu"))
    (tmp_path / "lgn" / "record.json").unlink()
    with pytest.raises(ConfigError, match="has not finished"):
        build_method(cfg, TrainData.from_dataset(ds), torch.device("cpu"))
    cfg = _tiny_cfg(tiny_dir, "hdrm", f"model.backbone_run={tmp_path / 'nothing'}")
    with pytest.raises(ConfigError, match="not a run directory"):
        build_method(cfg, TrainData.from_dataset(ds), torch.device("cpu"))


def test_the_documented_two_commands_from_the_cli(tiny_dir, tmp_path, capsys):
    out = tmp_path / "runs"
    fast = ["--set", "model.emb_dim=8", "--set", "model.num_layers=2"]
    base = ["-q", "train", "--dataset", str(tiny_dir), "--seed", "1", "--epochs", "1"]
    assert main([*base, "--model", "hdrm_backbone", "--out", str(out), *fast]) == 0
    stage1 = out / "tiny-hdrm_backbone-seed1"
    assert stage1.is_dir()
    stage2 = ["--set", "model.dims=[16]", "--set", f"model.backbone_run={stage1}"]
    assert main([*base, "--model", "hdrm", "--out", str(out), *stage2]) == 0
    rec = json.loads((out / "tiny-hdrm-seed1" / "record.json").read_text())
    assert rec["resolved_options"]["backbone"]["path"] == str(stage1.resolve())
    assert rec["config"]["model"]["num_layers"] == 2 and rec["config"]["model"]["emb_dim"] == 8
    assert rec["config"]["train"]["batch_size"] == 20000  # implied by HDRM
    assert main(["-q", "evaluate", str(out / "tiny-hdrm-seed1")]) == 0
    capsys.readouterr()
