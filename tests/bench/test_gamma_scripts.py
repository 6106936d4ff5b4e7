"""benchmarks/gamma_rules.py and benchmarks/ood_table.py on tiny inputs."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
from scipy import stats

from oodrec.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_gamma_rules_picks_on_val_and_reports_the_test_oracle(tiny_dir, tmp_path):
    rules = _script("gamma_rules")
    row = {"val/ndcg@20": 0.2, "val_adjusted": {"-1": {"ndcg@20": 0.3}, "1": {"ndcg@20": 0.3}}}
    assert rules.picks(row, [0.0, -1.0, 1.0], "ndcg@20") == -1.0  # a tie: the first smaller |g|
    row["val_adjusted"]["1"]["ndcg@20"] = 0.4
    assert rules.picks(row, [0.0, -1.0, 1.0], "ndcg@20") == 1.0

    out = tmp_path / "runs"
    args = ["-q", "train", "--dataset", str(tiny_dir), "--epochs", "2", "--out", str(out)]
    args += ["--name", "a", "--set", "model.emb_dim=8", "--set", "train.patience=0"]
    assert main([*args, "--set", "eval.adjust_gammas=[-1,1]"]) == 0
    assert main([*args[:-6], "--name", "plain", "--set", "model.emb_dim=8"]) == 0
    assert rules.run_dirs([str(out)], None) == [out / "a"]  # the plain run logged no grid
    md = tmp_path / "rules.md"
    assert rules.main([str(out), "--rules", "ndcg@20,ips_ndcg@20~1", "--out", str(md)]) == 0
    text = md.read_text()
    assert "oracle (test-chosen, diagnostic)" in text and "ips_ndcg@20~1" in text
    result = rules.measure(out / "a", ("ndcg@20",), ("recall@20",), {})
    record = json.loads((out / "a" / "record.json").read_text())
    # the logged rule picks what the run's own selection picked (same metric, same epoch)
    assert result["rules"]["ndcg@20"]["gamma"] == record["selection"]["adjustment"]["gamma"]
    oracle = result["oracle"]["recall@20"]
    assert oracle["value"] >= result["rules"]["ndcg@20"]["recall@20"]


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["table", "selection", "split", "dataset", "method", "metric", "mean", "std", "n"]
    fields += [k for k in ("seeds", "values") if any(k in r for r in rows)]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({"table": "table1", "split": "ood_test", **r})


def test_ood_table_marks_the_best_and_tests_against_the_best_other(tmp_path):
    table = _script("ood_table")
    sel, adj = "selected on val", "selected on val; popularity-adjusted scores, gamma chosen on val"

    def rows(method, mean, std, selection=sel):
        return [
            {
                "selection": selection,
                "dataset": "food",
                "method": method,
                "metric": m,
                "mean": mean,
                "std": std,
                "n": 3,
            }
            for m in ("recall@20", "ndcg@20")
        ]

    _write(
        tmp_path / "ood_methods/food/table1.csv",
        rows("rns", 0.04, 0.001) + rows("rns-adj", 0.05, 0.002, adj),
    )
    _write(tmp_path / "causal_methods/table1.csv", rows("cdr", 0.045, 0.001))
    _write(tmp_path / "ood_adjusted/food/table1.csv", rows("cdr", 0.046, 0.001, adj))
    lines, flat = table.build(tmp_path)
    got = {(r["system"], r["scores"], r["metric"]): r for r in flat if r["dataset"] == "food"}
    best = got[("LightGCN + RNS", "adjusted", "recall@20")]
    assert best["best"] and best["rival"] == "CDR (adjusted)"
    want = stats.ttest_ind_from_stats(0.05, 0.002, 3, 0.046, 0.001, 3, False).pvalue
    assert math.isclose(best["p"], want) and best["test"] == "Welch"
    plain = got[("LightGCN + RNS", "plain", "recall@20")]
    assert not plain["best"] and plain["rival"] == "CDR (adjusted)"  # never its own other row
    assert any(line.startswith("| CDR | adjusted | 0.0460 ± 0.0010") for line in lines)
    assert any("| DiffRec | adjusted | not run |" in line for line in lines)
    assert any(line.startswith("| LightGCN + RNS | adjusted | **0.0500**") for line in lines)


@pytest.mark.parametrize("std", [0.0])
def test_welch_is_undefined_without_spread(std):
    table = _script("ood_table")
    a = table.Cell(0.1, std, 3, "x")
    assert math.isnan(table.welch(a, a))


def test_ood_table_pairs_by_seed_where_both_reports_list_values(tmp_path):
    table = _script("ood_table")
    sel = "selected on val"

    def rows(method, values, seeds="1 2 3"):
        mean = sum(values) / len(values)
        std = stats.tstd(values) if len(values) > 1 else 0.0
        return [
            {
                "selection": sel,
                "dataset": "food",
                "method": method,
                "metric": m,
                "mean": mean,
                "std": std,
                "n": len(values),
                "seeds": seeds,
                "values": " ".join(map(repr, values)),
            }
            for m in ("recall@20", "ndcg@20")
        ]

    # PDA: seeds 1..3; RNS: seeds 2..4 (two in common); CDR without values: Welch
    pda, rns = [0.050, 0.052, 0.049], [0.041, 0.044, 0.040]
    _write(tmp_path / "ood_methods/food/table1.csv", rows("pda", pda) + rows("rns", rns, "2 3 4"))
    flat = {(r["system"], r["scores"], r["metric"]): r for r in table.build(tmp_path)[1]}
    rns_row = flat[("LightGCN + RNS", "plain", "recall@20")]
    assert rns_row["rival"] == "PDA" and rns_row["test"] == "paired"
    want = stats.ttest_rel([0.041, 0.044], [0.052, 0.049]).pvalue  # seeds 2 and 3
    assert math.isclose(rns_row["p"], want)
    lines, _ = table.build(tmp_path)
    assert any(f"(paired p {want:.2g})" in line for line in lines)
    _write(tmp_path / "causal_methods/table1.csv", [{**r, "values": ""} for r in rows("cdr", rns)])
    flat = {(r["system"], r["scores"], r["metric"]): r for r in table.build(tmp_path)[1]}
    assert flat[("CDR", "plain", "recall@20")]["test"] == "Welch"  # CDR lists no values
    _write(tmp_path / "ood_adjusted/food/table1.csv", rows("cdr", [0.05]))  # one seed so far
    lines, _ = table.build(tmp_path)
    assert any(line.startswith("| CDR | adjusted | 0.0500 ± 0.0000 [1 seed]") for line in lines)
