"""The methods' shared toolkit (``oodrec.methods.common``): batch cutting, pair and user batches
drawn from the epoch generator only, user-first pair draws, the probe and the scorer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import oodrec.methods
from oodrec.config import ExperimentConfig, apply_overrides
from oodrec.methods import MethodContext, TrainData
from oodrec.methods.common import (
    UserSampledPairs,
    batch_slices,
    build_lightgcn,
    inner_product_scorer,
    pair_batches,
    uniform_probe,
    user_batches,
)
from oodrec.samplers import PositiveIndex

USERS = torch.tensor([0, 0, 1, 2, 2, 2, 4])
ITEMS = torch.tensor([1, 3, 0, 0, 2, 4, 1])
DATA = TrainData("t", 5, 5, USERS, ITEMS)


def _bounds(slices: list[slice]) -> list[tuple[int, int]]:
    return [(s.start, s.stop) for s in slices]


@pytest.mark.parametrize(
    ("n", "bs", "drop", "merge", "want"),
    [
        (7, 3, False, False, [(0, 3), (3, 6), (6, 7)]),
        (7, 3, True, False, [(0, 3), (3, 6)]),
        (2, 3, True, False, [(0, 2)]),  # fewer rows than a batch: the only batch is kept
        (7, 3, False, True, [(0, 3), (3, 7)]),  # a last batch of one joins the previous one
        (8, 3, False, True, [(0, 3), (3, 6), (6, 8)]),
        (1, 3, False, True, [(0, 1)]),  # a single batch is never merged away
        (0, 3, False, False, []),
    ],
)
def test_batch_slices(n, bs, drop, merge, want):
    assert _bounds(batch_slices(n, bs, drop, merge)) == want


def test_pair_batches_draw_one_permutation_from_the_generator():
    got = list(pair_batches(DATA, 3, False, torch.Generator().manual_seed(4)))
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(4))
    assert torch.equal(torch.cat([b.users for b in got]), USERS[perm])
    assert torch.equal(torch.cat([b.pos_items for b in got]), ITEMS[perm])
    assert [len(b) for b in got] == [3, 3, 1]


def test_user_batches_draw_one_permutation_and_merge_a_single_last_user():
    users = torch.arange(7)
    got = list(user_batches(users, 3, False, torch.Generator().manual_seed(2), merge_single=True))
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(2))
    assert [b.numel() for b in got] == [3, 4]
    assert torch.equal(torch.cat(got), perm)


def test_batches_leave_the_global_rng_alone():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    gen = torch.Generator().manual_seed(1)
    list(pair_batches(DATA, 2, False, gen))
    list(user_batches(torch.arange(5), 2, True, gen))
    list(UserSampledPairs(DATA).batches(2, False, gen))
    assert torch.equal(before, torch.get_rng_state())


def test_user_sampled_pairs_draw_training_pairs_of_active_users():
    sampler = UserSampledPairs(DATA)
    got = list(sampler.batches(3, False, torch.Generator().manual_seed(0)))
    users = torch.cat([b.users for b in got])
    items = torch.cat([b.pos_items for b in got])
    assert users.numel() == USERS.numel()
    assert not (users == 3).any()  # user 3 has no training item
    assert PositiveIndex(USERS, ITEMS, 5).contains(users, items).all()


def test_probe_and_scorer_use_one_propagation():
    cfg = apply_overrides(ExperimentConfig(), ["model.emb_dim=4", "model.num_layers=1"])
    model = build_lightgcn(MethodContext(DATA, cfg, torch.device("cpu")))
    emb = model.propagate()
    scores = inner_product_scorer(model)(torch.tensor([0, 2]))
    assert torch.allclose(scores, emb.users[[0, 2]] @ emb.items.T)
    positives = PositiveIndex(USERS, ITEMS, 5)
    negs = uniform_probe(model, positives, 5, torch.Generator().manual_seed(0)).sample(USERS, ITEMS)
    assert not positives.contains(USERS, negs.ids).any()
    assert torch.allclose(negs.emb, emb.items[negs.ids])


def test_methods_import_helpers_from_common_not_from_each_other():
    """A method file imports other method modules only for its own stages (HDRM)."""
    allowed = {"oodrec.methods.base", "oodrec.methods.common"}
    own = {
        "hdrm.py": {"oodrec.methods.hdrm_backbone", "oodrec.methods.hdrm_stage1"},
        "hdrm_stage1.py": {"oodrec.methods.hdrm_backbone"},
    }
    root = Path(oodrec.methods.__file__).parent
    for path in sorted(root.glob("*.py")):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "oodrec.methods."
            ):
                assert node.module in allowed | own.get(path.name, set()), (
                    f"{path.name} imports {node.module}"
                )
