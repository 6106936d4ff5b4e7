"""The estimator-validation table on hand-made per-epoch logs."""

from __future__ import annotations

import json

import pytest

from oodrec.bench.estimator_check import estimator_rows, estimator_table, search_rows, search_table
from oodrec.bench.records import RunRecord


def _run(path, rows, dataset="food"):
    path.mkdir(parents=True)
    (path / "epochs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    record = {"config": {"data": {"dataset": dataset}}, "selection": {"label": "selected on val"}}
    return RunRecord(path, record)


def _epochs(plain, ips, strat, ood):
    return [
        {
            "epoch": e,
            "val/ndcg@20": a,
            "val/ips_ndcg@20": b,
            "val/strat_ndcg@20": c,
            "ood_test/ndcg@20": d,
        }
        for e, (a, b, c, d) in enumerate(zip(plain, ips, strat, ood))
    ]


def test_estimator_rows_by_hand(tmp_path):
    run = _run(tmp_path / "a", _epochs([1, 2, 3], [3, 2, 1], [1, 3, 2], [0.3, 0.2, 0.1]))
    old = _run(tmp_path / "b", [{"epoch": 0, "val/ndcg@20": 1.0, "ood_test/ndcg@20": 0.5}])
    rows = {r["estimator"]: r for r in estimator_rows([run, old])}
    plain, ips, strat = rows["plain val"], rows["IPS-weighted val"], rows["stratified val"]
    assert plain["runs"] == 1 and plain["points"] == 3  # the run without estimators is left out
    assert plain["rho_within"] == pytest.approx(-1.0) and ips["rho_within"] == pytest.approx(1.0)
    # strat ranks (1, 3, 2) against OOD ranks (3, 2, 1): 1 - 6 * 6 / (3 * 8) = -0.5
    assert strat["rho_pooled"] == pytest.approx(-0.5)
    # picks: plain epoch 2 (0.1), IPS epoch 0 (0.3), strat epoch 1 (0.2); best 0.3
    assert plain["at_pick"] == pytest.approx(0.1) and plain["regret"] == pytest.approx(2 / 3)
    assert ips["at_pick"] == pytest.approx(0.3) and ips["regret"] == 0.0
    assert strat["regret"] == pytest.approx(1 / 3)
    table = estimator_table([run, old])
    assert table is not None and len(table.rows) == 3
    assert estimator_table([old]) is None


def test_search_rows_pick_a_trial_and_epoch_across_the_study():
    """Across trials: plain val picks trial a's epoch 1 (OOD 0.01), IPS trial a's epoch 0 (the
    best, 0.05), stratified val trial b's epoch 0 (0.04); a trial without a log is left out."""
    studies = {
        "food/rns": [
            ("trial 0", _epochs([0.1, 0.2], [0.3, 0.1], [0.2, 0.2], [0.05, 0.01])),
            ("trial 1", _epochs([0.15], [0.2], [0.25], [0.04])),
            ("trial 2", []),
        ],
        "food/empty": [("trial 0", [{"epoch": 0, "val/ndcg@20": 1.0}])],
    }
    rows = {r["estimator"]: r for r in search_rows(studies)}
    assert {r["study"] for r in search_rows(studies)} == {"food/rns"}
    plain, ips, strat = rows["plain val"], rows["IPS-weighted val"], rows["stratified val"]
    assert (plain["trial"], plain["epoch"], plain["at_pick"]) == ("trial 0", 1, 0.01)
    assert plain["best"] == 0.05 and plain["regret"] == pytest.approx(0.8)
    assert (ips["trial"], ips["epoch"], ips["regret"]) == ("trial 0", 0, 0.0)
    assert (strat["trial"], strat["epoch"], strat["regret"]) == ("trial 1", 0, pytest.approx(0.2))
    assert plain["trials"] == 2 and plain["points"] == 3
    # plain val ranks (1, 3, 2) against OOD (3, 1, 2): rho -1; IPS ranks like OOD: +1
    assert plain["rho_pooled"] == pytest.approx(-1.0) and ips["rho_pooled"] == pytest.approx(1.0)
    table = search_table(list(rows.values()), "search on val ndcg@20")
    assert [c.text for c in table.rows[0]][:6] == [
        "food/rns",
        "plain val",
        "2",
        "3",
        "-1.000",
        "trial 0, epoch 1",
    ]
