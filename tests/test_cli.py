"""The command line end to end on a tiny dataset."""

from __future__ import annotations

import json

from oodrec.cli import main


def test_train_then_evaluate(tiny_dir, tmp_path, capsys):
    rc = main(
        [
            "-q",
            "train",
            "--dataset",
            str(tiny_dir),
            "--epochs",
            "3",
            "--seed",
            "1",
            "--out",
            str(tmp_path),
            "--set",
            "train.batch_size=64",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "ood_test" in out and "selected on val" in out
    run = tmp_path / "tiny-rns-seed1"
    rec = json.loads((run / "record.json").read_text())
    assert rec["sampler"] == "rns" and rec["selection"]["test_selected"] is False
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "best.pt").is_file()
    rc = main(["-q", "evaluate", str(run)])
    out = capsys.readouterr().out
    assert rc == 0
    ood_line = next(line for line in out.splitlines() if line.startswith("ood_test"))
    assert f"{rec['metrics']['ood_test']['recall@10']:.4f}" in ood_line
    # existing run dir is refused with a hint
    rc = main(
        [
            "-q",
            "train",
            "--dataset",
            str(tiny_dir),
            "--epochs",
            "3",
            "--seed",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 2 and "--resume" in capsys.readouterr().err


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.txt").write_text("0 1\n1 oops\n")
    (tmp_path / "bad" / "test_ood.txt").write_text("0 1\n")
    rc = main(["-q", "train", "--dataset", str(tmp_path / "bad"), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "train.txt, line 2: malformed line '1 oops'" in err and "Traceback" not in err
    rc = main(["-q", "train", "--sampler", "rnss", "--dataset", str(tmp_path / "bad")])
    assert rc == 2


def test_help_lists_commands(capsys):
    main([])
    out = capsys.readouterr().out
    for cmd in ("datasets", "download", "train", "evaluate", "speed"):
        assert cmd in out


def test_models_lists_every_method_with_paper_and_whole_option_docs(capsys):
    from oodrec.methods import METHODS

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in METHODS.names():
        assert f"{name}: " in out
    assert "paper: Wang et al., Diffusion Recommender Model" in out
    assert "model.steps=5" in out and "takes no negative sampler" in out
    assert "implies (unless set): train.lr=1e-05" in out
    # option documentation is wrapped, never cut mid-sentence
    assert "…" not in out and "[...]" not in out


def test_sampler_with_a_method_that_takes_none_is_an_error(tiny_dir, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["-q", "train", "--dataset", str(tiny_dir), "--model", "diffrec", "--out", str(out)]
    assert main([*args, "--sampler", "dns"]) == 2
    err = capsys.readouterr().err
    assert "model 'diffrec' takes no negative sampler" in err and "Traceback" not in err
    assert main([*args, "--set", "sampler.num_candidates=4"]) == 2
    assert "takes no negative sampler" in capsys.readouterr().err
    assert main([*args, "--set", "model.stepz=3"]) == 2
    assert "unknown option(s) stepz for model 'diffrec'" in capsys.readouterr().err
    assert not out.exists(), "no run directory is created for a refused config"


def test_method_implied_settings_yield_to_explicit_ones(tiny_dir):
    import argparse

    from oodrec.cli import _build_config

    def build(*extra):
        ns = argparse.Namespace(
            config=None,
            dataset=str(tiny_dir),
            data_dir=None,
            on_bad_lines=None,
            model="diffrec",
            sampler=None,
            epochs=None,
            seed=None,
            lr=None,
            device=None,
            select_on=None,
            no_verify=False,
            set=[],
        )
        for k, v in extra:
            setattr(ns, k, v)
        return _build_config(ns)

    cfg = build()
    assert (cfg.train.lr, cfg.train.batch_size) == (1e-5, 400)
    assert build(("lr", 0.001)).train.lr == 0.001
    assert build(("set", ["train.batch_size=64"])).train.batch_size == 64
    assert cfg.run_name() == f"tiny-diffrec-seed{cfg.seed}"


def test_a_dataset_without_iid_test_trains_and_reports_it_absent(tiny_dir, tmp_path, capsys):
    (tiny_dir / "test_iid.txt").unlink()
    out = tmp_path / "runs"
    args = ["-q", "train", "--dataset", str(tiny_dir), "--epochs", "2", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "iid_test" in printed and "absent" in printed and "ood_test" in printed
    (run,) = list(out.iterdir())
    rec = json.loads((run / "record.json").read_text())
    assert set(rec["metrics"]) == {"val", "ood_test"}
    assert main(["-q", "evaluate", str(run)]) == 0
    assert "absent" in capsys.readouterr().out
    rc = main([*args, "--select-on", "iid_test", "--name", "sel"])
    err = capsys.readouterr().err
    assert rc == 2 and "has no iid_test split" in err and "Traceback" not in err
    assert not (out / "sel").exists()
