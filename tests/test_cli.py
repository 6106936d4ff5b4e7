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
