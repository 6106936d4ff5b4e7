"""CNSDiff's inert options: which options cannot change training given the others, checked by
hand and by training (changing an inert option leaves every logged training value equal; the
same change where the option is live moves them), and the warnings the grid, tune and CLI give."""

from __future__ import annotations

import logging

import pytest

from oodrec.config import DataConfig, ExperimentConfig, SamplerConfig, TrainConfig
from oodrec.data.dataset import load_dataset
from oodrec.samplers import inert_sampler_options
from oodrec.samplers.cnsdiff import CNSDiffOptions, CNSDiffSampler
from oodrec.train.loop import train


def _inert(**options) -> set[str]:
    return set(CNSDiffSampler.inert_options(CNSDiffOptions(**options), "food"))


def test_inert_options_by_hand():
    causal = _inert()  # causal mode: variational term, denoiser trained, gradient off
    assert "diffusion_loss_weight" in causal
    assert not causal & {"denoiser_lr", "causal_weight", "num_envs", "prior", "cl_weight"}
    assert "diffusion_loss_weight" not in _inert(diffusion_grad_to_backbone=True)
    paper = _inert(mode="paper")  # code KL, gradient on, denoiser trained
    assert {"num_envs", "prior", "generation", "env_supervision"} <= paper
    assert not paper & {"diffusion_loss_weight", "denoiser_lr", "causal_weight"}
    faithful = _inert(mode="code_faithful")  # denoiser never trained
    assert "denoiser_lr" in faithful and "causal_weight" not in faithful
    # code_faithful with lambda_2 = 0 computes no diffusion loss at all
    idle = _inert(mode="code_faithful", diffusion_loss_weight=0)
    assert "causal_weight" in idle and "causal_mode" not in idle  # it shapes the denoiser
    assert "causal_weight" in _inert(causal=False)
    assert {"env_supervision", "likelihood_scale"} <= _inert(causal_weight=0.0)
    assert {"cl_weight", "temperature"} <= _inert(align=False)
    assert "temperature" in _inert(cl_weight=0.0) and "cl_weight" not in _inert(cl_weight=0.0)
    assert {"curriculum_epochs", "initial_alpha", "min_mix_ratio", "max_mix_ratio"} <= _inert(
        mixup=False
    )
    assert "num_envs" not in _inert(causal_mode="rex")


def test_only_the_options_set_are_reported_and_the_reason_names_the_fix():
    assert inert_sampler_options("cnsdiff", {}, "food") == {}
    found = inert_sampler_options("cnsdiff", {"diffusion_loss_weight": 0.5}, "food")
    assert list(found) == ["diffusion_loss_weight"]
    assert "diffusion_grad_to_backbone=true" in found["diffusion_loss_weight"]
    assert "in mode 'causal'" in found["diffusion_loss_weight"]
    explicit = inert_sampler_options(
        "cnsdiff", {"diffusion_loss_weight": 0.5, "diffusion_grad_to_backbone": False}, "food"
    )
    assert "in mode" not in explicit["diffusion_loss_weight"]
    assert inert_sampler_options("rns", {}, "food") == {}


def _history(tiny_dir, epochs: int, **options) -> list[dict]:
    cfg = ExperimentConfig(
        data=DataConfig(dataset=str(tiny_dir)),
        sampler=SamplerConfig("cnsdiff", options),
        train=TrainConfig(epochs=epochs, batch_size=64, fhn_batches=1, patience=0),
    )
    rows = train(cfg, load_dataset(cfg.data)).history
    # Timings vary; the logged Beta(a, b) describes the schedule even when mixup is off.
    skip = ("cnsdiff_beta_a", "cnsdiff_beta_b")
    return [
        {k: v for k, v in r.items() if not k.endswith("seconds") and k not in skip} for r in rows
    ]


# (options where `key` is inert, key, changed value, options where the same change is live)
CASES = [
    ({}, "diffusion_loss_weight", 0.5, {"diffusion_grad_to_backbone": True}),
    ({"mode": "code_faithful"}, "denoiser_lr", 0.1, {"mode": "paper"}),
    ({"mode": "paper"}, "num_envs", 2, {"mode": "causal"}),
    ({"align": False}, "temperature", 0.2, {"align": True}),
    ({"causal": False}, "causal_weight", 0.9, {"causal": True}),
    ({"mixup": False}, "curriculum_epochs", 1, {"mixup": True}),
]


@pytest.mark.parametrize(("base", "key", "value", "live"), CASES, ids=[c[1] for c in CASES])
def test_an_inert_option_changes_no_logged_value_and_a_live_one_does(
    tiny_dir, base, key, value, live
):
    assert key in _inert(**base) and key not in _inert(**{**base, **live})
    epochs = 3 if key == "curriculum_epochs" else 1  # the curriculum moves from epoch 1 on
    alive = {**base, **live}
    assert _history(tiny_dir, epochs, **base, **{key: value}) == _history(tiny_dir, epochs, **base)
    assert _history(tiny_dir, epochs, **alive, **{key: value}) != _history(
        tiny_dir, epochs, **alive
    )


def test_grid_and_tune_warn_once_per_method_and_option(tmp_path, caplog):
    from oodrec.bench.grid import expand_grid, parse_grid
    from oodrec.bench.tune import parse_tune

    grid = {
        "out_dir": str(tmp_path),
        "methods": [
            {"name": "l2", "sampler": "cnsdiff", "options": {"diffusion_loss_weight": 0.5}},
            {"name": "ok", "sampler": "cnsdiff", "options": {"cl_weight": 0.1}},
        ],
        "datasets": ["food"],
        "seeds": [1, 2, 3],
    }
    with caplog.at_level(logging.WARNING):
        expand_grid(parse_grid(grid, "g.yaml"))
    warned = [r.getMessage() for r in caplog.records]
    assert (
        len(warned) == 1 and "g.yaml: method 'l2' sets sampler.diffusion_loss_weight" in warned[0]
    )
    caplog.clear()
    grid["methods"] = [{"name": "ok", "sampler": "cnsdiff"}]
    grid["tune"] = {
        "trials": 2,
        "space": {"sampler.diffusion_loss_weight": {"low": 1e-6, "high": 1.0, "log": True}},
    }
    with caplog.at_level(logging.WARNING):
        parse_tune(parse_grid(grid, "g.yaml"))
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "sampler.diffusion_loss_weight (searched)" in warned[0]


def test_cli_train_warns_about_an_inert_option(tiny_dir, tmp_path, caplog):
    from oodrec.cli import main

    rc = main(
        [
            "-q",
            "train",
            "--dataset",
            str(tiny_dir),
            "--sampler",
            "cnsdiff",
            "--set",
            "sampler.diffusion_loss_weight=0.5",
            "--set",
            "train.epochs=1",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    assert "sampler.diffusion_loss_weight=0.5 has no effect" in caplog.text
