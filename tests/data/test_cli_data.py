"""`prepare` and `stats` subcommands, on a standalone parser (as cli.py will mount them)."""

from __future__ import annotations

import argparse
import json

import pytest

from oodrec.cli_data import add_data_commands
from oodrec.errors import ConfigError


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="oodrec")
    add_data_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_help_has_examples(capsys):
    for cmd in ("prepare", "stats"):
        with pytest.raises(SystemExit):
            _run([cmd, "--help"])
        out = capsys.readouterr().out
        assert "examples:" in out and f"oodrec {cmd} " in out


def test_stats_of_a_directory(tiny_dir, capsys):
    assert _run(["stats", str(tiny_dir)]) == 0
    out = capsys.readouterr().out
    assert "dataset tiny" in out and "20 users x 30 items" in out
    assert out.count("\n") >= 8 and "ood_test" in out and "total variation" in out
    assert _run(["stats", str(tiny_dir), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_users"] == 20 and set(stats["splits"]) == {
        "train", "val", "iid_test", "ood_test"
    }  # fmt: skip


def test_stats_of_shipped_food_matches_readme(real_data, capsys):
    assert _run(["stats", "food", "--data-dir", str(real_data)]) == 0
    out = capsys.readouterr().out
    assert "7,732 users x 6,293 items, 216,053 interactions" in out
    for line in (
        "train           106,253   7,732   6,293",
        "ood_test         46,149   7,724   6,159",
    ):
        assert line in out


def test_prepare_from_food_com(food_raw, tmp_path, capsys):
    out_dir = tmp_path / "mine"
    argv = ["prepare", str(food_raw), "--format", "foodcom", "--protocol", "temporal"]
    argv += ["--out", str(out_dir), "--min-user", "5", "--min-item", "5", "--seed", "3"]
    assert _run(argv) == 0
    out = capsys.readouterr().out
    assert f"wrote {out_dir}" in out and "ood_test" in out
    assert (out_dir / "test_ood.txt").is_file()
    rec = json.loads((out_dir / "prepare.json").read_text())
    assert rec["options"]["min_user_interactions"] == 5 and rec["options"]["seed"] == 3
    with pytest.raises(ConfigError, match=r"already holds"):
        _run(argv)
    assert _run(argv + ["--force", "--threshold", "5", "--fractions", "0.8,0.1,0.1"]) == 0
    rec = json.loads((out_dir / "prepare.json").read_text())
    assert rec["positive_threshold"] == 5.0 and rec["options"]["split"]["fractions"] == [
        0.8,
        0.1,
        0.1,
    ]


def test_prepare_rejects_flags_of_another_protocol(food_raw, tmp_path):
    argv = ["prepare", str(food_raw), "--format", "foodcom", "--protocol", "temporal"]
    argv += ["--out", str(tmp_path / "x")]
    with pytest.raises(
        ConfigError, match=r"--overlap-keep does not apply to the temporal protocol"
    ):
        _run(argv + ["--overlap-keep", "biased"])
    with pytest.raises(ConfigError, match=r"--threshold must be a number, 'auto' or 'none'"):
        _run(argv + ["--threshold", "high"])
    with pytest.raises(ConfigError, match=r"--columns applies only to the csv"):
        _run(argv + ["--columns", "user=a,item=b"])


def test_prepare_infers_the_format_and_says_so(food_raw, tmp_path, capsys):
    argv = ["prepare", str(food_raw), "--protocol", "temporal", "--out", str(tmp_path / "a")]
    assert _run([*argv, "--min-user", "5", "--min-item", "5"]) == 0
    err = capsys.readouterr().err
    assert "format: foodcom (from its name)" in err or "format: csv (from the suffix" in err
    odd = tmp_path / "log.dat"
    odd.write_text("u i\n")
    with pytest.raises(ConfigError, match=r"--format is needed: log\.dat: the name does not say"):
        _run(["prepare", str(odd), "--protocol", "temporal", "--out", str(tmp_path / "b")])
