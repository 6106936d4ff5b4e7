"""Report tables on hand-made records with known numbers."""

from __future__ import annotations

import io
import math
from csv import DictReader

import pytest

from oodrec.bench.records import derived_label, load_runs
from oodrec.bench.report import build_tables, write_report
from oodrec.bench.stats import paired_ttest, regularized_beta
from oodrec.errors import RunError

from .helpers import write_run

# OOD / IID values per seed (all four metrics equal): the best is cnsdiff, then dns, then rns.
VALUES = {"rns": (0.10, 0.12, 0.14), "dns": (0.20, 0.21, 0.25), "cnsdiff": (0.23, 0.25, 0.30)}
# cnsdiff - dns = (0.03, 0.04, 0.05): t = 0.04 / (0.01 / sqrt 3); df = 2 has a closed form.
T = 0.04 / (0.01 / math.sqrt(3))
P = 1 - T / math.sqrt(T * T + 2)


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    for sampler, values in VALUES.items():
        for seed, value in enumerate(values, start=1):
            write_run(
                root / "grid",
                f"food-{sampler}-seed{seed}",
                sampler=sampler,
                seed=seed,
                value=value,
                method=sampler,
            )
    # a test-selected run must never be mixed into the val-selected tables
    write_run(root, "food-rns-testsel", sampler="rns", seed=1, value=0.9876, select_on="ood_test")
    # ablation variants and Beta-schedule variants of cnsdiff (not in Table 1)
    for seed in (1, 2):
        write_run(
            root,
            f"abl-mixup-{seed}",
            sampler="cnsdiff",
            options={"mixup": False},
            seed=seed,
            value=0.05,
        )
        write_run(
            root,
            f"abl-align-{seed}",
            sampler="cnsdiff",
            options={"align": False},
            seed=seed,
            value=0.06,
        )
        for alpha in (2.0, 3.0):
            write_run(
                root,
                f"beta-{alpha}-{seed}",
                sampler="cnsdiff",
                options={"initial_alpha": alpha},
                seed=seed,
                value=alpha / 10,
                method="cnsdiff",
                sweep={"sampler.initial_alpha": alpha},
            )
    return root


def test_pure_python_t_test_matches_closed_form_and_scipy():
    a, b = VALUES["cnsdiff"], VALUES["dns"]
    t, p = paired_ttest(a, b, use_scipy=False)
    assert t == pytest.approx(T) and p == pytest.approx(P, rel=1e-9)
    pytest.importorskip("scipy")
    assert paired_ttest(a, b) == pytest.approx((t, p), rel=1e-9)
    assert paired_ttest([1, 2], [1, 2]) == (0.0, 1.0)
    assert regularized_beta(2.0, 3.0, 0.4) == pytest.approx(0.5248)  # 1 - sum_{k<2} Bin(4, .4)


def test_table1_markdown_and_latex(runs_dir, tmp_path):
    out = tmp_path / "results"
    write_report(runs_dir, out, target="cnsdiff")
    md = (out / "table1.md").read_text()
    val_part, test_part = md.split("TEST-SELECTED on ood_test", 1)
    assert "*selected on val; full ranking*" in val_part and "0.9876" not in val_part
    assert "0.9876" in test_part
    ood = val_part.split("### IID test")[0]
    assert "| **0.2600 ± 0.0361** |" in ood  # cnsdiff: best, bold
    assert "| <u>0.2200 ± 0.0265</u> |" in ood  # dns: second, underlined
    assert "| 0.1200 ± 0.0200 |" in ood  # rns
    assert "| Improv. (%) | +18.18% |" in ood  # (0.26 - 0.22) / 0.22
    assert f"| p-value | {P:.3g} |" in ood
    # rows: baselines first, then the target; sweep and ablation runs are left out
    lines = [ln.split(" | ")[0] for ln in ood.splitlines() if ln.startswith("| ")]
    assert lines[1:6] == ["| dns", "| rns", "| cnsdiff", "| Improv. (%)", "| p-value"]
    tex = (out / "table1.tex").read_text()
    assert r"\textbf{0.2600 $\pm$ 0.0361}" in tex and r"\underline{0.2200 $\pm$ 0.0265}" in tex
    assert r"\multicolumn{4}{c}{food}" in tex and "TEST-SELECTED on ood\\_test" in tex
    csv = (out / "table1.csv").read_text().splitlines()
    assert csv[0].startswith(
        "table,selection,split,dataset,method,metric,mean,std,n,seeds,values,style"
    )
    # the per-seed values behind each mean (paired tests across reports need them)
    for row in DictReader(io.StringIO((out / "table1.csv").read_text())):
        if row["values"]:
            vals = [float(v) for v in row["values"].split()]
            assert len(vals) == int(row["n"]) == len(row["seeds"].split())
            assert math.isclose(sum(vals) / len(vals), float(row["mean"]), rel_tol=1e-12)
    imp = [r for r in csv if "improvement_pct" in r and ",ood_test," in r and "recall@20" in r]
    assert len(imp) == 1 and ",cnsdiff,dns," in imp[0]


def test_ablation_alpha_beta_and_runtime_tables(runs_dir):
    tables = build_tables(load_runs(runs_dir), target="cnsdiff")
    assert {t.selection for t in tables["table1"]} == {
        "selected on val",
        "TEST-SELECTED on ood_test",
    }
    (abl,) = tables["ablation"]
    rows = {(r[0].text, r[1].text): r[2].text for r in abl.rows}
    assert rows[("cnsdiff", "full")] == "0.2600 ± 0.0361"
    assert rows[("cnsdiff", "w/o mixup")] == "0.0500 ± 0.0000"
    assert rows[("cnsdiff", "w/o align")] == "0.0600 ± 0.0000"
    (ab,) = tables["alpha_beta"]
    variants = [r[1].text for r in ab.rows]
    assert (
        "(2, preset) → (preset, preset)" in variants
        and "(3, preset) → (preset, preset)" in variants
    )
    best = [r for r in ab.rows if r[1].text.startswith("(3,")][0][2]
    assert best.style == "best" and best.text == "0.3000 ± 0.0000"
    runtime = {(r[0].text, r[1].text): r for r in tables["runtime"][0].rows}
    row = runtime[("dns", "food")]
    assert [c.text for c in row[2:]] == ["cpu", "x86_64", "2", "2.x", "3", "2.000", "–"]


def test_derived_labels_and_empty_dir(tmp_path):
    assert derived_label("cnsdiff", {"mode": "causal"}) == "cnsdiff"  # the default mode
    assert derived_label("cnsdiff", {"mode": "paper", "steps": 20}) == "cnsdiff[mode=paper]"
    assert derived_label("unknown", {"x": 1}) == "unknown[x=1]"
    with pytest.raises(RunError, match="no finished run"):
        write_report(tmp_path, tmp_path / "out")


def test_named_baseline_replaces_the_strongest_other_method(runs_dir, tmp_path):
    out = tmp_path / "vs_rns"
    write_report(runs_dir, out, target="cnsdiff", baseline="rns")
    ood = (out / "table1.md").read_text().split("### IID test")[0]
    imp = (0.26 - 0.12) / 0.12 * 100
    assert f"| Improv. (%) | {imp:+.2f}% |" in ood
    assert "vs method 'rns'" in ood
    csv = (out / "table1.csv").read_text().splitlines()
    row = [r for r in csv if "improvement_pct" in r and ",ood_test," in r and "recall@20" in r]
    assert len(row) == 1 and ",cnsdiff,rns," in row[0]
    write_report(runs_dir, tmp_path / "none", target="cnsdiff", baseline="nosuch")
    assert (
        "no improvement row: no method 'nosuch' (--baseline; methods: cnsdiff, dns, rns)"
        in (tmp_path / "none" / "table1.md").read_text()
    )


@pytest.mark.parametrize(
    ("target", "baseline", "reason"),
    [
        ("nosuch", None, "no method is named like the target 'nosuch' (--target; methods: "),
        # a sensitivity grid's default against itself: the baseline is also a target
        ("cnsdiff", "cnsdiff", "the baseline 'cnsdiff' is itself named like the target"),
        ("s", None, "every method is named like the target 's', so none is left to compare"),
    ],
)
def test_a_missing_improvement_row_says_which_option_to_change(
    runs_dir, tmp_path, target, baseline, reason
):
    write_report(runs_dir, tmp_path / "out", target=target, baseline=baseline)
    ood = (tmp_path / "out" / "table1.md").read_text().split("### IID test")[0]
    assert "Improv. (%)" not in ood
    assert f"- no improvement row: {reason}" in ood


def test_runtime_rows_split_by_device(tmp_path):
    """Seeds run on a CPU and on a GPU get one runtime row each, never one mixed median."""
    import json

    for seed, secs in ((1, (10.0, 10.0)), (2, (0.5, 0.5)), (3, (0.7, 0.7))):
        path = write_run(tmp_path, f"food-rns-seed{seed}", seed=seed, epoch_seconds=secs)
        if seed > 1:
            record = json.loads((path / "record.json").read_text())
            record["environment"].update(device="cuda", device_name="NVIDIA H100")
            (path / "record.json").write_text(json.dumps(record))
    (runtime,) = build_tables(load_runs(tmp_path))["runtime"]
    rows = {r[3].text: [c.text for c in r] for r in runtime.rows}
    assert rows["x86_64"][2:] == ["cpu", "x86_64", "2", "2.x", "1", "10.000", "–"]
    assert rows["NVIDIA H100"][2:] == ["cuda", "NVIDIA H100", "2", "2.x", "2", "0.600", "–"]


def test_epoch_cap_notes(tmp_path):
    from oodrec.bench.records import RunRecord
    from oodrec.bench.report import cap_notes

    def run(seed, best, ran, patience=5, stopped=False, cap=60):
        record = {
            "config": {"data": {"dataset": "food"}, "train": {"epochs": cap, "patience": patience}},
            "seed": seed,
            "selection": {"label": "selected on val"},
            "best_epoch": best,
            "epochs_run": ran,
            "stopped_early": stopped,
        }
        return RunRecord(tmp_path / str(seed), record, {"method": "rns"})

    runs = [run(1, 58, 60), run(2, 30, 36, stopped=True), run(3, 59, 60)]
    assert [r.capped for r in runs] == [True, False, True]
    # without early stopping only a best epoch at the cap counts
    assert not run(4, 50, 60, patience=0).capped and run(5, 59, 60, patience=0).capped
    assert not run(6, 10, 30).capped  # stopped before the cap
    assert cap_notes(runs) == [
        "epoch cap binds: rns on food, 2 of 3 seed(s) ended by the cap before early stopping "
        "(best epochs 58, 59 of 60); more epochs may change its row"
    ]


def test_tuning_notes_count_pruned_trials_per_dataset(tmp_path):
    from oodrec.bench.records import RunRecord
    from oodrec.bench.report import tuning_notes

    def run(dataset, label, pruned, **extra):
        tuning = {"budget": 12, "metric": "val ndcg@20", "pruned": pruned, **extra}
        tuning["space"] = ["train.lr in [0.0001, 0.03] (log)"]
        record = {"config": {"data": {"dataset": dataset}}, "dataset": dataset}
        return RunRecord(tmp_path / dataset, record, {"method": label, "tuning": tuning})

    runs = [
        run("food", "rns (tuned, 12 trials)", 4),
        run("yelp2018", "rns (tuned, 12 trials)", 8),
        run("food", "rns (tuned, 12 trials)", 4),
        run("food", "x", 2, final_epochs=120, trial_epochs=60),
        RunRecord(tmp_path / "plain", {"dataset": "food"}, {"method": "y"}),
    ]
    space = "over train.lr in [0.0001, 0.03] (log)"
    assert tuning_notes(runs) == [
        "rns (tuned, 12 trials): best of 12 trials on val ndcg@20 (Optuna TPE, median pruning; "
        f"pruned: food 4, yelp2018 8) {space}",
        "x: best of 12 trials on val ndcg@20 (Optuna TPE, median pruning; 2 pruned) "
        f"{space}; final runs capped at 120 epochs, trials at 60",
    ]


def test_a_report_removes_only_its_own_stale_files(runs_dir, tmp_path, capsys):
    import json
    import shutil

    from oodrec.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("hand-written\n")
    (out / "notes.csv").write_text("not the report's\n")
    assert main(["-q", "report", str(runs_dir), "--out", str(out), "--no-figures"]) == 0
    assert {"ablation.md", "ablation.csv", "ablation.tex"} <= set(
        json.loads((out / ".oodrec-report.json").read_text())
    )
    # a figure the last report drew: kept while figures are skipped
    (out / "figures").mkdir()
    (out / "figures" / "fig4_x.png").write_bytes(b"png")
    listed = json.loads((out / ".oodrec-report.json").read_text())
    (out / ".oodrec-report.json").write_text(json.dumps([*listed, "figures/fig4_x.png"]))
    for run in runs_dir.glob("abl-*"):  # the ablation runs are gone
        shutil.rmtree(run)
    capsys.readouterr()
    assert main(["-q", "report", str(runs_dir), "--out", str(out), "--no-figures"]) == 0
    err = capsys.readouterr().err
    assert not any((out / f"ablation{ext}").exists() for ext in (".md", ".csv", ".tex"))
    assert err.count("removed ") == 3 and "ablation.md" in err
    assert (out / "table1.md").exists() and (out / "alpha_beta.md").exists()
    assert (out / "README.md").read_text() == "hand-written\n" and (out / "notes.csv").exists()
    assert (out / "figures" / "fig4_x.png").exists()
    assert "figures/fig4_x.png" in json.loads((out / ".oodrec-report.json").read_text())


def test_improvement_rows_choose_the_target_variant_on_val_not_on_test(tmp_path):
    """Two CNSDiff variants: val prefers a (0.30 > 0.28), the test prefers b (0.25 > 0.20)."""
    import json

    root = tmp_path / "runs"
    plan = {"rns": (0.10, 0.10), "cnsdiff-a": (0.20, 0.30), "cnsdiff-b": (0.25, 0.28)}
    for method, (test, val) in plan.items():
        for seed in (1, 2, 3):
            path = write_run(
                root, f"food-{method}-seed{seed}", sampler=method.split("-")[0], seed=seed,
                value=test + seed / 1000, method=method,
            )  # fmt: skip
            record = json.loads((path / "record.json").read_text())
            record["selection"]["metric"] = "ndcg@20"
            record["metrics"]["val"]["ndcg@20"] = val
            (path / "record.json").write_text(json.dumps(record))
    (ood,) = [t for t in build_tables(load_runs(root), "cnsdiff")["table1"] if "OOD" in t.title]
    row = next(r for r in ood.rows if r[0].text == "Improv. (%)")
    assert row[1].text == "+98.04%"  # cnsdiff-a: (0.202 - 0.102) / 0.102; b would be +147%
    assert any("food: cnsdiff-a" in note and "never on a test split" in note for note in ood.notes)


def test_figure_file_suffix_names_the_selection_and_never_calls_val_test(tmp_path):
    """Runs selected on an OOD-aware val estimator are val-selected: their figures say so in the
    file name, where they once got the test-selected suffix."""
    import json

    from oodrec.bench.plots import figure_suffix

    def run(name, select_on="val", metric=None, label=None):
        path = write_run(tmp_path, name, select_on=select_on)
        record = json.loads((path / "record.json").read_text())
        if metric:
            record["selection"].update(metric=metric, label=label)
        (path / "record.json").write_text(json.dumps(record))
        return load_runs(path)

    taken: set[str] = set()
    assert figure_suffix(run("plain"), taken) == ""
    ips = "selected on val by IPS-weighted ndcg@20 (gamma=0.5, clip=100)"
    assert figure_suffix(run("ips", metric="ips_ndcg@20", label=ips), taken) == "_val-ips_ndcg20"
    other = "selected on val by IPS-weighted ndcg@20 (gamma=1, clip=10)"
    assert figure_suffix(run("ips2", metric="ips_ndcg@20", label=other), taken) == (
        "_val-ips_ndcg201"
    )
    assert figure_suffix(run("test", select_on="ood_test"), taken) == "_testsel"
    assert figure_suffix(run("test2", select_on="iid_test"), taken) == "_testsel1"
