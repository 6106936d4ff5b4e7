"""DiffRec pieces against hand-computed values: schedule, loss weights, importance sampling,
the vectorised loss-history update, the sparse history gather, the loss and the reverse chain."""

from __future__ import annotations

import math

import pytest
import torch

from oodrec.config import ExperimentConfig, apply_overrides
from oodrec.methods import MethodContext, TrainData
from oodrec.methods.diffrec import DiffRec, DiffRecOptions
from oodrec.models.diffrec import importance_probs, update_loss_history

V = [1e-5, 3.25e-5, 5.5e-5, 7.75e-5, 1e-4]  # linspace(0.01 * 0.001, 0.01 * 0.01, 5)


def _method(**opts) -> DiffRec:
    users = torch.tensor([0, 0, 1, 2, 2, 2])
    items = torch.tensor([1, 3, 0, 0, 2, 4])
    data = TrainData("t", 3, 5, users, items)
    cfg = apply_overrides(ExperimentConfig(), ["model.name=diffrec", "model.dims=[4]"])
    return DiffRec(MethodContext(data, cfg, torch.device("cpu")), DiffRecOptions(dims=(4,), **opts))


def test_official_schedule_is_linear_var_with_alpha_bar_one_minus_v():
    sched = _method().sched
    # linear-var reads the linspace as 1 - alpha_bar, so alpha_bar_t = 1 - v_t exactly.
    assert torch.allclose(sched.alphas_cumprod.double(), 1 - torch.tensor(V, dtype=torch.float64))
    assert sched.betas[0].item() == pytest.approx(1e-5)
    assert sched.betas[1].item() == pytest.approx(1 - (1 - 3.25e-5) / (1 - 1e-5), rel=1e-5)


def test_loss_weights_are_snr_differences_with_w0_one():
    w = _method().sched.reweight.double()
    # SNR_t = (1 - v_t) / v_t, so w_t = SNR_{t-1} - SNR_t = 1 / v_{t-1} - 1 / v_t.
    assert w[0].item() == 1.0
    for t in range(1, 5):
        assert w[t].item() == pytest.approx(1 / V[t - 1] - 1 / V[t], rel=1e-4)
    assert w[1].item() == pytest.approx(69230.77, rel=1e-4)


def test_importance_probs_hand_case():
    hist = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    # sqrt(mean(h^2)) = [sqrt(12.5), 0] -> [1, 0], then 0.999 * p + 0.001 / 2
    assert torch.allclose(importance_probs(hist, 0.001), torch.tensor([0.9995, 0.0005]))


def _sequential(history, count, t, loss):
    history, count = history.clone(), count.clone()
    width = history.shape[1]
    for ti, li in zip(t.tolist(), loss.tolist()):  # the official per-sample loop
        if count[ti] == width:
            history[ti, :-1] = history[ti, 1:].clone()
            history[ti, -1] = li
        else:
            history[ti, count[ti]] = li
            count[ti] += 1
    return history, count


def test_loss_history_update_hand_case():
    hist = torch.tensor([[1.0, 2.0, 0.0], [5.0, 6.0, 7.0]])
    count = torch.tensor([2, 3])
    t = torch.tensor([0, 1, 0, 0, 1])
    loss = torch.tensor([10.0, 20.0, 11.0, 12.0, 21.0])
    new, c = update_loss_history(hist, count, t, loss)
    assert new.tolist() == [[10.0, 11.0, 12.0], [7.0, 20.0, 21.0]]
    assert c.tolist() == [3, 3]


@pytest.mark.parametrize("seed", range(6))
def test_loss_history_update_equals_the_sequential_loop(seed):
    g = torch.Generator().manual_seed(seed)
    steps, width = 4, 5
    count = torch.randint(0, width + 1, (steps,), generator=g)
    hist = torch.rand(steps, width, generator=g) * (torch.arange(width) < count.unsqueeze(1))
    t = torch.randint(0, steps, (int(torch.randint(1, 30, (1,), generator=g)),), generator=g)
    loss = torch.rand(t.numel(), generator=g)
    want = _sequential(hist, count, t, loss)
    got = update_loss_history(hist, count, t, loss)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_steps_are_uniform_until_every_history_is_full_then_importance():
    m = _method(history_per_step=2)
    g = torch.Generator().manual_seed(0)
    t, pt = m.sample_steps(8, g)
    assert torch.equal(pt, torch.ones(8)) and t.max() < 5
    m.loss_history.copy_(torch.tensor([[3.0, 4.0]] + [[0.0, 0.0]] * 4))
    m.loss_count.fill_(2)
    t, pt = m.sample_steps(1000, g)
    probs = importance_probs(m.loss_history, 0.001)
    assert torch.allclose(pt, probs[t] * 5)
    assert (t == 0).float().mean() > 0.99  # p_0 = 0.9992


def test_history_gather_is_the_binary_training_matrix():
    x0 = _method().x0(torch.tensor([2, 0]))
    assert x0.tolist() == [[1, 0, 1, 0, 1], [0, 1, 0, 1, 0]]


def test_loss_is_weighted_mse_over_sampling_probability(monkeypatch):
    m = _method()
    t, pt = torch.tensor([1, 0, 3]), torch.tensor([0.5, 2.0, 1.0])
    monkeypatch.setattr(m, "sample_steps", lambda n, gen: (t, pt))
    monkeypatch.setattr(m.dnn, "forward", lambda x, tt, gen=None: torch.zeros_like(x))
    users = torch.tensor([0, 1, 2])
    loss = m.loss(users, torch.Generator().manual_seed(0))["diffusion"]
    deg = torch.tensor([2.0, 1.0, 3.0])  # predicting zeros: MSE = deg / |I|
    w = m.sched.reweight[t]
    assert loss.item() == pytest.approx(float((w * deg / 5 / pt).mean()), rel=1e-6)
    # the recorded history holds the weighted loss before the division by p_t
    assert m.loss_count.tolist() == [1, 1, 0, 1, 0]
    assert m.loss_history[1, 0].item() == pytest.approx(float(w[0] * 2 / 5), rel=1e-6)


def test_scores_run_all_reverse_steps_from_the_clean_history(monkeypatch):
    m = _method()
    m.eval()
    monkeypatch.setattr(m.dnn, "forward", lambda x, tt, gen=None: x)  # f(x_t, t) = x_t
    x0 = m.x0(torch.tensor([1]))
    with torch.no_grad():
        got = m.scorer()(torch.tensor([1]))
    s = m.sched
    factor = math.prod(float(s.coef1[t] + s.coef2[t]) for t in range(5))
    assert torch.allclose(got, x0 * factor)
