"""eval.protocol=candidates: test positives ranked among each user's logged candidates."""

from __future__ import annotations

import math

import pytest
import torch

from oodrec.config import DataConfig, EvalConfig, TrainConfig
from oodrec.data.dataset import load_dataset
from oodrec.errors import ConfigError
from oodrec.eval.evaluate import Evaluator
from oodrec.train.selection import selection_label


def _write(path, pairs):
    path.write_text("".join(f"{u} {i}\n" for u, i in pairs))


@pytest.fixture
def cand_dir(tmp_path):
    d = tmp_path / "cand"
    d.mkdir()
    # 2 users, 8 items; every item seen in train
    _write(d / "train.txt", [(0, 0), (0, 1), (1, 2), (1, 3), (0, 4), (1, 5), (0, 6), (1, 7)])
    _write(d / "valid_iid.txt", [(0, 2), (1, 0)])
    _write(d / "test_ood.txt", [(0, 3), (1, 4)])
    # logged exposures (negatives); user 1's list holds an id beyond the item space (dropped)
    _write(d / "test_ood_candidates.txt", [(0, 5), (1, 1), (1, 6), (1, 99)])
    return d


# scores: user 0 prefers 7 > 5 > 3 > ... ; user 1 prefers 4 > 6 > 1 > ...
SCORES = torch.tensor(
    [
        [0.0, 0.0, 0.0, 5.0, 9.0, 6.0, 8.0, 7.0],
        [0.0, 3.0, 9.0, 8.0, 5.0, 0.0, 4.0, 9.5],
    ]
)


def _evaluate(cand_dir, protocol):
    ds = load_dataset(DataConfig(dataset=str(cand_dir)))
    ev = Evaluator(ds, EvalConfig(ks=(1, 2), protocol=protocol), torch.device("cpu"))
    return ds, ev.evaluate(lambda u: SCORES[u].clone(), ("val", "ood_test"))


def test_candidates_by_hand(cand_dir):
    ds, res = _evaluate(cand_dir, "candidates")
    # candidates = logged ∪ positives: user 0 {3, 5}, user 1 {1, 4, 6}; item 99 dropped
    assert ds.report.dropped_unseen["ood_test_candidates"] == 1
    assert sorted(ds.candidates["ood_test"].items.tolist()) == [1, 3, 4, 5, 6]
    # user 0 ranks 5 (6.0), 3 (5.0): positive 3 at rank 2 -> R@1 0, R@2 1, N@2 1/log2(3)
    # user 1 ranks 4 (5.0), 6 (4.0), 1 (3.0): positive 4 at rank 1 -> R@1 1, N@2 1
    ood = res["ood_test"].means
    assert ood["recall@1"] == pytest.approx(0.5)
    assert ood["recall@2"] == pytest.approx(1.0)
    assert ood["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1) / 2)
    # val ranks in full either way
    _, full = _evaluate(cand_dir, "full")
    assert res["val"].means == full["val"].means


def test_full_protocol_by_hand(cand_dir):
    _, res = _evaluate(cand_dir, "full")
    # history masked (user 0: train {0,1,4,6} + val {2}; user 1: train {2,3,5,7} + val {0}):
    # user 0 ranks 7 (7.0), 5, 3 -> positive 3 at rank 3; user 1 ranks 4 (5.0), 6, 1 -> rank 1
    ood = res["ood_test"].means
    assert ood["recall@2"] == pytest.approx(0.5)
    assert ood["ndcg@2"] == pytest.approx(0.5)


def test_short_candidate_lists_do_not_count_filler(tmp_path):
    d = tmp_path / "short"
    d.mkdir()
    _write(d / "train.txt", [(0, 0), (0, 1), (1, 2), (1, 3)])
    _write(d / "valid_iid.txt", [(0, 2), (1, 0)])
    _write(d / "test_ood.txt", [(0, 3), (1, 1)])
    _write(d / "test_ood_candidates.txt", [(0, 3)])  # user 0: {3}; user 1: only its positive
    ds = load_dataset(DataConfig(dataset=str(d)))
    ev = Evaluator(ds, EvalConfig(ks=(3,), protocol="candidates"), torch.device("cpu"))
    scores = torch.zeros(2, 4)
    res = ev.evaluate(lambda u: scores[u].clone(), ("ood_test",))
    # each user's one candidate is its positive: rank 1, whatever fills ranks 2 and 3
    assert res["ood_test"].means["recall@3"] == 1.0
    assert res["ood_test"].means["ndcg@3"] == 1.0


def test_candidates_protocol_needs_the_files(tmp_path, cand_dir):
    (cand_dir / "test_ood_candidates.txt").unlink()
    ds = load_dataset(DataConfig(dataset=str(cand_dir)))
    with pytest.raises(ConfigError, match="test_ood_candidates.txt"):
        Evaluator(ds, EvalConfig(protocol="candidates"), torch.device("cpu"))
    with pytest.raises(ConfigError, match="eval.protocol"):
        EvalConfig(protocol="sampled")


def test_protocol_in_the_label():
    assert selection_label(TrainConfig(), EvalConfig(protocol="candidates")) == (
        "selected on val; test ranked among logged candidates"
    )
    assert selection_label(TrainConfig(), EvalConfig()) == "selected on val"
