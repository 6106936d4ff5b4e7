from __future__ import annotations

import pytest

from oodrec.config import ExperimentConfig, apply_overrides, dump_yaml, load_yaml
from oodrec.errors import ConfigError


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(
        ExperimentConfig(), ["train.lr=0.001", "eval.ks=5,10", "sampler.alpha=0.1"]
    )
    dump_yaml(cfg, tmp_path / "c.yaml")
    back = load_yaml(tmp_path / "c.yaml")
    assert back == cfg and back.train.lr == 0.001 and back.eval.ks == (5, 10)
    assert back.sampler.options == {"alpha": 0.1}


def test_unknown_yaml_key_fails_with_file(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown config key\(s\) train\.lrr"):
        load_yaml(tmp_path / "c.yaml")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=abc", r"train\.lr must be a number"),
        ("train.epochs=1.5", r"train\.epochs must be an integer"),
        ("train.select_on=test", r"train\.select_on must be one of"),
        ("model.emb_dim=abc", r"model\.emb_dim must be an integer"),
        ("trainlr", r"must look like key=value"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(ExperimentConfig(), [override])


def test_unknown_model_option_is_rejected_before_work():
    from oodrec.methods import check_method_config

    cfg = apply_overrides(ExperimentConfig(), ["model.foo=1"])
    assert cfg.model.options == {"foo": 1}
    with pytest.raises(ConfigError, match=r"model 'lightgcn' takes no options, got \['foo'\]"):
        check_method_config(cfg)
