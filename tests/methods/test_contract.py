"""Contract tests run over every registered method: a new method gets them by registering.

``lightgcn`` runs with the uniform sampler here (the samplers have their own contract suite).
Each method is trained on the tiny fixture with small, fast options.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from oodrec.cli import main
from oodrec.config import (
    DataConfig,
    ExperimentConfig,
    TrainConfig,
    apply_overrides,
    config_fields_doc,
)
from oodrec.data.dataset import load_dataset
from oodrec.errors import ConfigError
from oodrec.methods import METHODS, TrainData, build_method
from oodrec.train.loop import Trainer, train

NAMES = METHODS.names()

# Small options so that every contract test runs in about a second per method.
FAST = {
    "lightgcn": ["model.emb_dim=8"],
    "diffrec": ["model.dims=[16]", "train.lr=0.001"],
    "advinfonce": ["model.emb_dim=8", "model.neg_sample=4", "model.adv_dim=8", "train.lr=0.01"],
    "drgnn": ["model.emb_dim=8", "model.aug_warm_up=1", "model.aug_gap=1", "train.lr=0.05"],
    "invcf": ["model.emb_dim=16", "model.lambda2=0.1", "model.lambda1=0.1", "model.lambda3=0.1"],
    "causaldiff": [
        *("model.emb_dim=8", "model.steps=5", "model.sampling_steps=5", "model.pretrain_steps=2"),
        *("model.feature_dim=8", "model.num_candidates=8", "train.lr=0.01"),
    ],
    "hdrm_backbone": ["model.emb_dim=8", "train.lr=0.01"],
    "hdrm": [
        *("model.allow_untrained_backbone=true", "model.emb_dim=8", "model.dims=[16]"),
        *("model.steps=5", "model.sampling_steps=5", "train.lr=0.01"),
    ],
    "cdr": ["model.encoder_dims=[16]", "model.a_dim=8", "model.z_dim=8", "train.lr=0.001"],
    "drgo": [
        *("model.emb_dim=8", "model.steps=5", "model.pretrain_steps=2", "model.feature_dim=8"),
        *("model.hidden_dim=8", "model.mlp_dim=8", "model.num_groups=3", "train.lr=0.01"),
    ],
    "mostpop": [],
    "pda": ["model.emb_dim=8", "model.inference=pda"],
    "psl": ["model.emb_dim=8", "model.neg_sample=8"],
    "bc": ["model.emb_dim=8", "model.neg_sample=4", "model.freeze_epoch=1", "train.lr=0.01"],
}

# Contract rules that cannot apply to a method, with the reason; the method's own tests cover
# what the skipped test also checks (tests/methods/test_mostpop.py: the scorer's shape and dtype,
# identical runs under one seed).
NOT_APPLICABLE = {
    ("mostpop", "test_shapes_and_dtypes"): (
        "no parameters, so no batches and no loss terms (its epoch is empty by design)"
    ),
    ("mostpop", "test_deterministic_under_a_seed"): (
        "nothing random: every seed gives the same (empty) losses, so another seed cannot differ"
    ),
}


@pytest.fixture(autouse=True)
def _skip_rules_that_do_not_apply(request):
    callspec = getattr(request.node, "callspec", None)
    name = callspec.params.get("name") if callspec is not None else None
    reason = NOT_APPLICABLE.get((name, request.node.originalname))
    if reason:
        pytest.skip(f"{name}: {reason}")


def _cfg(
    tiny_dir: Path, name: str, epochs: int = 3, extra: tuple[str, ...] = ()
) -> ExperimentConfig:
    cfg = ExperimentConfig(
        data=DataConfig(dataset=str(tiny_dir)),
        train=TrainConfig(epochs=epochs, batch_size=16, patience=0),
        seed=5,
    )
    return apply_overrides(cfg, [f"model.name={name}", *FAST.get(name, []), *extra])


def _strip(history):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in history]


def _method(tiny_dir: Path, name: str):
    cfg = _cfg(tiny_dir, name)
    ds = load_dataset(cfg.data)
    return build_method(cfg, TrainData.from_dataset(ds), torch.device("cpu")), ds


def test_every_registered_method_has_fast_settings():
    assert set(FAST) == set(NAMES), "add small options for a new method to FAST"


@pytest.mark.parametrize("name", NAMES)
def test_options_documented_and_validated(name, tiny_dir):
    cls = METHODS.get(name)
    assert cls.__doc__ and "Paper" in cls.__doc__, "the class docstring must cite its paper"
    assert cls.paper
    if cls.Options is not type(None):
        assert dataclasses.is_dataclass(cls.Options) and cls.Options.__dataclass_params__.frozen
        names = {f.name for f in dataclasses.fields(cls.Options)}
        assert set(config_fields_doc(cls.Options)) == names, "every option needs a docstring"
    cfg = _cfg(tiny_dir, name, extra=("model.no_such_option=1",))
    ds = load_dataset(cfg.data)
    with pytest.raises(ConfigError, match="no_such_option"):
        build_method(cfg, TrainData.from_dataset(ds), torch.device("cpu"))


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtypes(name, tiny_dir):
    method, ds = _method(tiny_dir, name)
    method.train()
    method.start_epoch(0)
    gen = torch.Generator().manual_seed(0)
    batches = list(method.batches(0, gen))
    assert batches
    terms = method.loss(batches[0], gen, method.phase(0, 0))
    assert terms and all(v.dim() == 0 and v.dtype == torch.float32 for v in terms.values())
    assert all(math.isfinite(float(v.detach())) for v in terms.values())
    method.eval()
    with torch.no_grad():
        users = torch.tensor([0, 3, 7])
        scores = method.scorer()(users)
    assert scores.shape == (3, ds.num_items) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    assert set(method.optimizers()) >= {"main"}


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_trainable_parameter(name, tiny_dir):
    method, _ = _method(tiny_dir, name)
    method.train()
    gen = torch.Generator().manual_seed(0)
    phases: dict[str, set[str]] = {}
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    for epoch in range(5):  # phases may start later (AdvInfoNCE's adversary: epoch 2)
        method.start_epoch(epoch)
        for step, batch in enumerate(method.batches(epoch, gen)):
            phase = method.phase(epoch, step)
            method.zero_grad(set_to_none=True)
            sum(method.loss(batch, gen, phase).values()).backward()
            reached = phases.setdefault(phase, set())
            for pname, p in method.named_parameters():
                if p.grad is not None and bool(p.grad.ne(0).any()):
                    reached.add(pname)
        if trainable <= set().union(*phases.values()):
            break
    missing = trainable - set().union(*phases.values())
    assert not missing, f"no gradient reaches {sorted(missing)}"


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_a_seed(name, tiny_dir):
    cfg = _cfg(tiny_dir, name, epochs=2)
    ds = load_dataset(cfg.data)
    a, b = train(cfg, ds), train(cfg, ds)
    assert _strip(a.history) == _strip(b.history) and a.metrics == b.metrics
    c = train(apply_overrides(cfg, ["seed=6"]), ds)
    assert [h["loss"] for h in c.history] != [h["loss"] for h in a.history]


class _Killed(Exception):
    pass


@pytest.mark.parametrize("name", NAMES)
def test_killed_after_two_epochs_and_resumed_equals_uninterrupted(name, tiny_dir, tmp_path):
    cfg = _cfg(tiny_dir, name, epochs=4)
    ds = load_dataset(cfg.data)
    full = train(cfg, ds, run_dir=tmp_path / "full")

    class KilledTrainer(Trainer):
        def train_epoch(self, epoch):
            if epoch == 2:
                raise _Killed
            return super().train_epoch(epoch)

    from oodrec.train.runs import RunDir

    rd = RunDir(tmp_path / "part")
    rd.create(cfg)
    with pytest.raises(_Killed):
        KilledTrainer(cfg, ds, rd).fit()
    assert len(rd.read_epochs()) == 2 and not rd.is_finished()
    resumed = train(cfg, load_dataset(cfg.data), run_dir=rd.path, resume=True)
    assert _strip(resumed.history) == _strip(full.history)
    assert resumed.metrics == full.metrics and resumed.best_epoch == full.best_epoch


@pytest.mark.parametrize("name", NAMES)
def test_one_epoch_smoke_run_from_the_cli(name, tiny_dir, tmp_path, capsys):
    args = ["-q", "train", "--dataset", str(tiny_dir), "--model", name, "--epochs", "1"]
    out_dir = tmp_path / "runs"
    args += ["--out", str(out_dir)] + [x for o in FAST[name] for x in ("--set", o)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ood_test" in out and "selected on val" in out
    (run,) = list(out_dir.iterdir())
    rec = json.loads((run / "record.json").read_text())
    assert rec["model"] == name and run.name.startswith(f"tiny-{rec['method']}-seed")
    if not METHODS.get(name).takes_sampler:
        assert rec["sampler"] is None and rec["method"] == name
    assert main(["-q", "evaluate", str(run)]) == 0


@pytest.mark.parametrize("name", NAMES)
def test_method_cannot_reach_val_or_test_data(name, tmp_path, tiny_dataset_factory):
    """Training depends on the training split only: changing every val / test file leaves each
    epoch's training losses unchanged, and the method is built from a view without them."""
    a = tiny_dataset_factory(tmp_path / "a", seed=0)
    b = tiny_dataset_factory(tmp_path / "b", seed=0)
    train_pairs = (a / "train.txt").read_text()
    c = tiny_dataset_factory(tmp_path / "c", seed=1)  # other held-out items
    for f in ("valid_iid.txt", "test_iid.txt", "test_ood.txt"):
        (b / f).write_text((c / f).read_text())
    assert (b / "train.txt").read_text() == train_pairs
    losses = []
    for d in (a, b):
        cfg = _cfg(d, name, epochs=2)
        res = train(cfg, load_dataset(cfg.data))
        losses.append([{k: v for k, v in r.items() if k.startswith("loss")} for r in res.history])
    assert losses[0] == losses[1]
    method, _ = _method(a, name)
    assert not hasattr(method.ctx, "dataset") and set(vars(method.ctx.data)) == {
        f.name for f in dataclasses.fields(TrainData)
    }
