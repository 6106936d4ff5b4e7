"""MostPop: scores are training degrees, lists are the hand-sorted degree order, ties go to the
lower item index, and it trains (nothing) through the normal Trainer path."""

from __future__ import annotations

import json

import pytest
import torch

from oodrec.cli import main
from oodrec.config import ExperimentConfig, apply_overrides
from oodrec.data.dataset import load_dataset
from oodrec.methods import MethodContext, TrainData, implied_overrides
from oodrec.methods.mostpop import MostPop, MostPopOptions, degree_scores
from oodrec.train.loop import train
from oodrec.train.reload import load_run

from .test_contract import _cfg

# item degrees [3, 1, 3, 0, 1, 1, 5]
ITEMS = torch.tensor([0, 0, 0, 1, 2, 2, 2, 4, 5, 6, 6, 6, 6, 6])
USERS = torch.tensor([0, 1, 2, 0, 0, 1, 3, 2, 3, 0, 1, 2, 3, 4])
# by degree, ties by lower index: 6 (5); 0, 2 (3); 1, 4, 5 (1); 3 (0)
HAND_SORTED = [6, 0, 2, 1, 4, 5, 3]


def _method(tie_break: bool = True) -> MostPop:
    data = TrainData("t", 5, 7, USERS, ITEMS)
    cfg = apply_overrides(ExperimentConfig(), ["model.name=mostpop"])
    return MostPop(MethodContext(data, cfg, torch.device("cpu")), MostPopOptions(tie_break))


def test_scores_are_the_training_degrees():
    m = _method(tie_break=False)
    scores = m.scorer()(torch.tensor([0, 3, 4]))
    assert scores.shape == (3, 7) and scores.dtype == torch.float32
    assert scores.tolist() == [[3.0, 1.0, 3.0, 0.0, 1.0, 1.0, 5.0]] * 3


def test_tie_break_keeps_the_degree_and_orders_ties_by_index():
    scores = _method().scorer()(torch.tensor([0]))[0]
    assert scores.floor().tolist() == [3.0, 1.0, 3.0, 0.0, 1.0, 1.0, 5.0]
    # d + 0.5 (g - 1 - r) / g: items 0, 2 (g = 2) get 3.25, 3.0; items 1, 4, 5 (g = 3) 1 + 1/3,
    # 1 + 1/6, 1.0; the single items keep their degree
    want = [3.25, 1 + 1 / 3, 3.0, 0.0, 1 + 1 / 6, 1.0, 5.0]
    assert scores.tolist() == pytest.approx(want, rel=1e-7)
    assert torch.topk(scores, 7).indices.tolist() == HAND_SORTED
    assert torch.argsort(scores, descending=True).tolist() == HAND_SORTED


def test_tie_break_stays_exact_in_float32_for_large_groups():
    # 4000 items of degree 1000 (d * g < 2**22) and 100000 items of degree 1
    deg = torch.cat([torch.full((4000,), 1000), torch.ones(100_000, dtype=torch.long)])
    s = degree_scores(deg)
    assert s.unique().numel() == deg.numel()
    assert torch.equal(torch.sort(s, descending=True, stable=True).indices, torch.arange(104_000))
    assert (s.floor() == deg.float()).all()


def test_scorer_returns_a_copy_the_evaluator_may_mask():
    m = _method()
    scorer = m.scorer()
    first = scorer(torch.tensor([0, 1]))
    first[0, 6] = -torch.inf
    assert scorer(torch.tensor([0]))[0, 6] == pytest.approx(5.0)
    assert m.representations() is None and "no user vectors" in MostPop.unscored_reason


def test_no_parameters_no_batches_and_one_implied_epoch():
    m = _method()
    assert not list(m.parameters()) and not list(m.batches(0, torch.Generator()))
    assert set(m.optimizers()) == {"main"}
    cfg = apply_overrides(ExperimentConfig(), ["model.name=mostpop"])
    assert implied_overrides(cfg) == {"train.epochs": 1}


def test_cli_run_trains_one_empty_epoch_and_selects_it(tiny_dir, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["-q", "train", "--dataset", str(tiny_dir), "--model", "mostpop", "--out", str(out)]
    assert main(args) == 0
    (run,) = list(out.iterdir())
    rows = [json.loads(x) for x in (run / "epochs.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["loss"] == 0 and rows[0]["improved"]
    rec = json.loads((run / "record.json").read_text())
    assert rec["best_epoch"] == 0 and rec["config"]["train"]["epochs"] == 1
    assert (run / "checkpoints" / "best.pt").is_file()
    # the lists are the hand-sortable degree order, without the user's training items
    loaded = load_run(run)
    ds = loaded.dataset
    deg = torch.bincount(ds.train.items, minlength=ds.num_items).tolist()
    order = sorted(range(ds.num_items), key=lambda i: (-deg[i], i))
    with torch.no_grad():
        scores = loaded.method.scorer()(torch.tensor([0]))[0]
    assert torch.argsort(scores, descending=True, stable=True).tolist() == order


def test_runs_ignore_the_seed_and_repeat_exactly(tiny_dir):
    cfg = _cfg(tiny_dir, "mostpop", epochs=2)
    ds = load_dataset(cfg.data)
    a, b = train(cfg, ds), train(apply_overrides(cfg, ["seed=6"]), ds)
    assert a.metrics == b.metrics and a.best_epoch == b.best_epoch == 0
    assert [h["loss"] for h in a.history] == [0, 0]
