"""Post-hoc re-selection of a run's epoch by another val estimator (``report --reselect``)."""

from __future__ import annotations

import json

import pytest

from oodrec.bench.records import load_runs
from oodrec.bench.report import build_tables, write_report
from oodrec.bench.reselect import reselect, reselect_all
from oodrec.errors import ConfigError
from tests.bench.helpers import write_run


def _log(path, rows):
    (path / "epochs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _epochs(plain, ips, ood):
    return [
        {
            "epoch": e,
            "val/ndcg@20": a,
            "val/ips_ndcg@20": b,
            "iid_test/ndcg@20": 10 * d,
            "ood_test/ndcg@20": d,
        }
        for e, (a, b, d) in enumerate(zip(plain, ips, ood))
    ]


def test_reselect_reads_the_epoch_the_estimator_picks(tmp_path):
    path = write_run(tmp_path, "food-rns-seed1", value=0.5)
    # plain val picks epoch 2; IPS ties at epochs 0 and 3 and picks the first, epoch 0
    _log(path, _epochs([1, 2, 3, 1], [4, 2, 1, 4], [0.3, 0.2, 0.1, 0.9]))
    (run,) = load_runs(tmp_path)
    copy = reselect(run, "ips_ndcg@20")
    assert copy is not None
    assert copy.metric("ood_test", "ndcg@20") == 0.3 and copy.metric("iid_test", "ndcg@20") == 3
    assert copy.record["best_epoch"] == 0
    assert copy.selection.startswith("re-selected on val by IPS-weighted ndcg@20 (gamma=")
    assert "post hoc" in copy.selection
    # the original is untouched
    assert run.metric("ood_test", "ndcg@20") == 0.5 and run.selection == "selected on val"
    assert reselect(run, "strat_ndcg@20") is None  # not logged


def test_test_selected_runs_and_logs_without_test_metrics_are_left_out(tmp_path):
    a = write_run(tmp_path, "a", select_on="ood_test")
    _log(a, _epochs([1], [1], [0.1]))
    b = write_run(tmp_path, "b")
    _log(b, [{"epoch": 0, "val/ndcg@20": 1.0, "val/ips_ndcg@20": 1.0}])
    c = write_run(tmp_path, "c")
    _log(c, _epochs([1, 2], [2, 1], [0.4, 0.2]))
    runs = load_runs(tmp_path)
    assert [reselect(r, "ips_ndcg@20") is None for r in runs] == [True, True, False]
    with pytest.raises(ConfigError, match=r"--reselect ips_recall@5: .* ips_ndcg@20, ndcg@20"):
        reselect_all(runs, ["ips_recall@5"])


def test_report_gets_a_separate_labelled_table1(tmp_path):
    runs_dir = tmp_path / "runs"
    for seed, ood in ((1, (0.3, 0.1)), (2, (0.5, 0.2))):
        path = write_run(runs_dir, f"food-rns-seed{seed}", seed=seed, value=0.1)
        _log(path, _epochs([1, 2], [2, 1], ood))
    runs = load_runs(runs_dir)
    tables = build_tables(runs + reselect_all(runs, ["ips_ndcg@20"]))
    labels = [t.selection for t in tables["table1"]]
    assert labels[:2] == ["selected on val"] * 2 and all("re-selected" in x for x in labels[2:])
    assert len(tables["runtime"]) == 1  # the copies add Table 1 only
    write_report(runs_dir, tmp_path / "out", reselect=["ips_ndcg@20"])
    text = (tmp_path / "out" / "table1.md").read_text()
    assert "re-selected on val by IPS-weighted ndcg@20" in text
    assert "0.4000 ± 0.1414" in text  # OOD N@20 at the IPS-picked epoch 0 of both seeds


def test_the_label_keeps_the_runs_own_selection_and_protocol(tmp_path):
    from oodrec.train.selection import CANDIDATES_LABEL

    path = write_run(tmp_path, "r")
    _log(path, _epochs([1, 2], [2, 1], [0.4, 0.2]))
    (run,) = load_runs(tmp_path)
    run.record["selection"]["label"] = "selected on val" + CANDIDATES_LABEL
    label = reselect(run, "ips_ndcg@20").selection
    assert label.endswith("evaluated by runs selected on val)" + CANDIDATES_LABEL)
