"""Popularity-adjusted scoring ``s - gamma * log(1 + d_i)``: the evaluator's gamma grid equals
ranking the adjusted scores directly, selection picks (epoch, gamma) on val only, and the run's
record, reload and recommendations use the chosen gamma."""

from __future__ import annotations

import json
import math

import pytest
import torch

from oodrec.cli import main
from oodrec.config import EvalConfig, ExperimentConfig, apply_overrides
from oodrec.data.dataset import load_dataset
from oodrec.errors import ConfigError
from oodrec.eval.evaluate import Evaluator, adjusted_scorer, popularity_offsets
from oodrec.experiment import check
from oodrec.recommend import recommend
from oodrec.train.reload import load_run


def _scorer(num_items: int):
    gen = torch.Generator().manual_seed(3)
    table = torch.randn(64, num_items, generator=gen)
    return lambda users: table[users].clone()


def test_offsets_and_the_adjusted_scorer_by_hand():
    deg = torch.tensor([0, 1, 3])
    off = popularity_offsets(deg)
    assert torch.allclose(off, torch.tensor([0.0, math.log(2), math.log(4)]))
    scorer = adjusted_scorer(lambda u: torch.ones(len(u), 3), off, 0.5)
    got = scorer(torch.tensor([0]))
    assert torch.allclose(got, torch.tensor([[1.0, 1 - 0.5 * math.log(2), 1 - 0.5 * math.log(4)]]))
    plain = lambda u: u  # noqa: E731
    assert adjusted_scorer(plain, off, 0.0) is plain


def test_the_gamma_grid_equals_ranking_the_adjusted_scores(tiny_dir):
    ds = load_dataset(ExperimentConfig().data.__class__(dataset=str(tiny_dir)))
    ev = Evaluator(ds, EvalConfig(user_batch_size=7), torch.device("cpu"))
    scorer = _scorer(ds.num_items)
    grid = (-1.0, 0.5, 2.0)
    res = ev.evaluate(scorer, ("val", "ood_test"), gammas=grid)
    assert set(res["val"].adjusted) == set(grid) and res["ood_test"].adjusted == {}
    for g in grid:
        direct = ev.evaluate(scorer, ("val",), gamma=g)["val"].means
        assert res["val"].adjusted[g] == pytest.approx(direct, abs=1e-12), g
    # the plain metrics are untouched by the grid
    assert res["val"].means == ev.evaluate(scorer, ("val", "ood_test"))["val"].means


def test_gamma_is_chosen_on_val_only():
    base = ExperimentConfig()
    with pytest.raises(ConfigError, match="needs train.select_on=val"):
        check(apply_overrides(base, ["eval.adjust_gammas=[1]", "train.select_on=ood_test"]))
    with pytest.raises(ConfigError, match="finite"):
        apply_overrides(base, ["eval.adjust_gammas=[inf]"])
    assert apply_overrides(base, ["eval.adjust_gammas=[0,1,1,-2]"]).eval.adjust_gammas == (1, -2)


def test_a_run_selects_epoch_and_gamma_and_every_output_uses_it(tiny_dir, tmp_path):
    out = tmp_path / "runs"
    args = ["-q", "train", "--dataset", str(tiny_dir), "--epochs", "3", "--out", str(out)]
    args += ["--name", "a", "--set", "model.emb_dim=8", "--set", "train.patience=0"]
    assert main([*args, "--set", "eval.adjust_gammas=[-1,-0.3,-0.1,0.1,0.3,1]"]) == 0
    run = out / "a"
    rec = json.loads((run / "record.json").read_text())
    adj = rec["selection"]["adjustment"]
    assert adj["grid"] == [0.0, -1.0, -0.3, -0.1, 0.1, 0.3, 1.0] and adj["gamma"] in adj["grid"]
    assert "popularity-adjusted" in rec["selection"]["label"]
    rows = [json.loads(x) for x in (run / "epochs.jsonl").read_text().splitlines()]
    best = rows[rec["best_epoch"]]
    metric = rec["selection"]["metric"]
    val_at = {0.0: best[f"val/{metric}"]} | {
        float(g): m[metric] for g, m in best["val_adjusted"].items()
    }
    assert best["gamma"] == adj["gamma"] and val_at[adj["gamma"]] == max(val_at.values())
    assert rec["metrics"]["val"][metric] == pytest.approx(val_at[adj["gamma"]])
    loaded = load_run(run)
    assert loaded.gamma == adj["gamma"] != 0  # this tiny run prefers an adjusted ranking
    again = {s: r.means for s, r in loaded.evaluate().items()}
    for split in ("val", "ood_test"):
        assert again[split] == pytest.approx(rec["metrics"][split])
    # the lists are ranked with the chosen gamma
    lists = {}
    Evaluator(loaded.dataset, loaded.cfg.eval, torch.device("cpu")).evaluate(
        loaded.method.scorer(),
        ("val",),
        gamma=loaded.gamma,
        on_top=lambda s, u, t: lists.update(zip(u.tolist(), t.tolist())),
    )
    _, table = recommend(loaded, None, k=20)
    got = {}
    for u, i in zip(table.column("user").to_pylist(), table.column("item").to_pylist()):
        got.setdefault(u, []).append(i)
    train = set(zip(loaded.dataset.train.users.tolist(), loaded.dataset.train.items.tolist()))
    for u, want in lists.items():
        assert got[u] == [i for i in want if (u, i) not in train]
    if loaded.gamma:
        # exported vectors minus the item offsets reproduce the adjusted scores
        import numpy as np

        assert main(["-q", "export", str(run), "--out", str(tmp_path / "x")]) == 0
        users = np.load(tmp_path / "x" / "user_embeddings.npy")
        items = np.load(tmp_path / "x" / "item_embeddings.npy")
        offsets = np.load(tmp_path / "x" / "item_offsets.npy")
        with torch.no_grad():
            want = loaded.scorer()(torch.arange(2)).numpy()
        np.testing.assert_allclose(users[:2] @ items.T - offsets, want, rtol=1e-4, atol=1e-5)
