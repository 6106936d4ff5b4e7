"""The one assembly of an experiment (oodrec.experiment): its order, what it implies, what it
checks, and a method without a sampler keeping none."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from oodrec.cli import main
from oodrec.config import ExperimentConfig, SamplerConfig
from oodrec.errors import ConfigError
from oodrec.experiment import assemble, choose_method, extend

SRC = Path(__file__).resolve().parents[1] / "src" / "oodrec"


def test_explicit_settings_win_and_implied_ones_fill_the_rest():
    cfg = assemble(None, ["model.name=diffrec"])
    assert cfg.sampler is None and cfg.train.lr == 1e-5 and cfg.train.batch_size == 400
    cfg = assemble(None, ["model.name=diffrec", "train.lr=0.001"])
    assert cfg.train.lr == 0.001 and cfg.train.batch_size == 400
    # the implied setting beats the base (a config file), an explicit one beats both
    base = ExperimentConfig().__class__(train=ExperimentConfig().train.__class__(lr=0.5))
    assert assemble(base, ["model.name=diffrec"]).train.lr == 1e-5


def test_what_a_sampler_mode_implies_follows_the_mode_given_last():
    cfg = assemble(None, ["sampler.name=cnsdiff", "sampler.mode=code_faithful"])
    assert cfg.train.l2_form == "selfrec"
    cfg = assemble(
        None,
        [
            ("sampler.name", "cnsdiff"),
            ("sampler.mode", "code_faithful"),
            ("train.l2_form", "squared"),
        ],
    )
    assert cfg.train.l2_form == "squared"
    # a trial that searches the mode: the L2 form follows it unless the study set it
    study = assemble(None, ["sampler.name=cnsdiff", "sampler.mode=paper"])
    assert study.train.l2_form == "squared"
    assert extend(study, [("sampler.mode", "code_faithful")]).train.l2_form == "selfrec"
    # a value the study set explicitly (not the one it implied) stays
    study = assemble(None, ["model.name=diffrec", "train.lr=0.001"])
    assert extend(study, [("model.steps", 10)]).train.lr == 0.001
    assert extend(study, [("train.lr", 0.01)]).train.lr == 0.01


def test_a_method_without_a_sampler_keeps_none_and_refuses_one():
    cfg = choose_method(ExperimentConfig(), "cdr")
    assert cfg.sampler is None
    assert assemble(cfg).sampler is None
    with pytest.raises(ConfigError, match=r"sampler.name=dns was given, but model 'diffrec'"):
        assemble(None, ["model.name=diffrec", "sampler.name=dns"])
    # lightgcn from a sampler-less base gets the default sampler back
    assert assemble(cfg, ["model.name=lightgcn"]).sampler == SamplerConfig()


def test_a_diffrec_run_names_no_sampler(tiny_dir, tmp_path):
    out = tmp_path / "runs"
    args = ["-q", "train", "--dataset", str(tiny_dir), "--model", "diffrec", "--epochs", "1"]
    assert main([*args, "--out", str(out), "--name", "d", "--set", "model.dims=[16]"]) == 0
    config = yaml.safe_load((out / "d" / "config.yaml").read_text())
    record = json.loads((out / "d" / "record.json").read_text())
    assert config["sampler"] is None and record["config"]["sampler"] is None
    assert record["sampler"] is None and "rns" not in json.dumps(record["resolved_options"])


def test_the_code_points_at_its_own_docs_not_an_outside_document():
    cited = [
        f"{p.relative_to(SRC)}:{n}"
        for p in SRC.rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"specs? (§|section )?\d", line)
    ]
    assert cited == []
    docs = Path(__file__).resolve().parents[1] / "docs"
    for p in SRC.rglob("*.py"):
        for ref in __import__("re").findall(r"docs/([a-z_/]+\.md)", p.read_text()):
            assert (docs / ref).is_file(), (
                f"{p.relative_to(SRC)} names docs/{ref}, which is missing"
            )
