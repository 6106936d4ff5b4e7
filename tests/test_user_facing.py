"""What a user sees: a progress bar that knows about early stopping, resolved options in the
run, data notes once and large drops as warnings, the CPU model in the runtime table, a report
that leaves results/ alone, and a per-epoch figure that marks the selected epoch."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from oodrec.bench.records import load_runs
from oodrec.bench.report import build_tables
from oodrec.cli import main
from oodrec.config import DataConfig, ExperimentConfig, TrainConfig, load_yaml
from oodrec.data.dataset import load_dataset
from oodrec.train.loop import Trainer
from oodrec.train.record import cpu_model, data_warnings

UNSEEN = "pair(s) with a user or item unseen in train dropped"


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return fh.read()
    except OSError:
        return ""


@pytest.fixture
def shifted_dir(tiny_dir):
    """The tiny dataset with 3 OOD pairs of an item unseen in train (> 1% of the split)."""
    with open(tiny_dir / "test_ood.txt", "a") as fh:
        fh.write("0 500\n1 500\n2 500\n")
    return tiny_dir


@pytest.fixture
def trained(shifted_dir, tmp_path, caplog, capsys):
    """One finished dns run on the shifted data, with its console output and log records."""
    args = ["-q", "train", "--dataset", str(shifted_dir), "--sampler", "dns", "--epochs", "3"]
    args += ["--out", str(tmp_path / "runs"), "--name", "r", "--set", "train.batch_size=64"]
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    return tmp_path / "runs" / "r", capsys.readouterr(), list(caplog.records)


def test_progress_bar_total_follows_early_stopping(tiny_dir):
    cfg = ExperimentConfig(
        data=DataConfig(dataset=str(tiny_dir)),
        train=TrainConfig(epochs=50, batch_size=64, patience=2),
    )
    trainer = Trainer(cfg, load_dataset(cfg.data))
    assert trainer.horizon(0) == 3  # first evaluation, then 2 without improvement
    trainer.selector.update({"ndcg@20": 0.5}, 0)
    assert trainer.horizon(1) == 3
    trainer.selector.update({"ndcg@20": 0.4}, 1)
    assert trainer.horizon(2) == 3
    trainer.selector.update({"ndcg@20": 0.6}, 2)
    assert trainer.horizon(3) == 5
    row = {"loss": 9.99, "loss_bpr": 0.69, "loss_l2": 9.3, "val/ndcg@20": 0.6}
    assert trainer.progress_postfix(row) == {
        "bpr": "0.6900",
        "val/ndcg@20": "0.6000",
        "patience": "2/2",
    }
    assert trainer.progress_postfix({"loss": 1.5}) == {"loss": "1.5000", "patience": "2/2"}


def test_progress_bar_ends_at_the_early_stop(tiny_dir, capsys):
    cfg = ExperimentConfig(
        data=DataConfig(dataset=str(tiny_dir)),
        train=TrainConfig(epochs=50, batch_size=64, patience=1, lr=0.05),
    )
    res = Trainer(cfg, load_dataset(cfg.data), show_progress=True).fit()
    err = capsys.readouterr().err
    n = len(res.history)
    assert res.stopped_early and n < 50
    assert f"{n}/{n}" in err and "/50" not in err and "bpr=" in err and "patience=" in err


def test_resolved_options_reach_record_and_resolved_yaml(trained):
    run, _, _ = trained
    rec = json.loads((run / "record.json").read_text())
    opts = rec["resolved_options"]
    assert opts["sampler"] == "dns" and "num_candidates" in opts["sampler_options"]
    resolved = yaml.safe_load((run / "resolved.yaml").read_text())
    assert resolved == {"model": "lightgcn", "method": "dns", "resolved_options": opts}
    assert load_yaml(run / "config.yaml").sampler.name == "dns"  # schema unchanged


def test_data_notes_once_and_large_drops_are_warnings(trained):
    run, captured, records = trained
    notes = [r for r in records if UNSEEN in r.getMessage()]
    assert len(notes) == 1 and notes[0].name == "oodrec.data.dataset"
    assert f"data: ood_test: 3 {UNSEEN}" not in captured.err  # no second, printed copy
    warned = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    ok = [m for m in warned if m.startswith("data: ood_test: 3 of ")]
    assert ok and "unseen user or item 3" in ok[0]
    rec = json.loads((run / "record.json").read_text())
    (line,) = rec["data_warnings"]
    assert line.startswith("ood_test: 3 of ") and "dropped by the data checks" in line


def test_small_drops_are_no_warning():
    report = {"sizes": {"ood_test": 1000}, "dropped_unseen": {"ood_test": 10}}
    assert data_warnings(report) == []
    report["dropped_in_train"] = {"ood_test": 1}
    assert data_warnings(report) == [
        "ood_test: 11 of 1011 pair(s) (1.1%) dropped by the data checks "
        "(unseen user or item 10, also in train 1)"
    ]


def test_runtime_table_names_the_cpu_model_and_report_leaves_results_alone(
    trained, tmp_path, monkeypatch
):
    run, _, _ = trained
    env = json.loads((run / "record.json").read_text())["environment"]
    assert env["cpu_model"] == cpu_model() and env["device_name"] == cpu_model()
    names = [ln for ln in _cpuinfo().splitlines() if ln.startswith("model name")]
    if names:  # the CPU model, not just the architecture
        assert cpu_model() == " ".join(names[0].split(":", 1)[1].split())
    (runtime,) = build_tables(load_runs(run.parent))["runtime"]
    assert runtime.rows[0][3].text == cpu_model()
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "report", "runs", "--no-figures"]) == 0
    assert (tmp_path / "runs" / "report" / "table1.md").is_file()
    assert not (tmp_path / "results").exists()
    report = (tmp_path / "runs" / "report" / "report.md").read_text()
    assert "## Data warnings" in report and "- tiny: ood_test: 3 of " in report


def test_epoch_figure_shows_val_curve_and_marks_the_selected_epoch(trained, monkeypatch):
    pytest.importorskip("matplotlib")
    from oodrec.bench import plots

    run, _, _ = trained
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, out, stem: figs.append(fig) or [])
    plots.figure5(load_runs(run.parent), run.parent / "fig")
    (fig,) = figs
    axes = fig.axes
    assert axes[2].get_ylabel() == "val/ndcg@20"
    best = json.loads((run / "record.json").read_text())["best_epoch"]
    for ax in axes:
        marks = [ln for ln in ax.lines if list(ln.get_xdata()) == [best, best]]
        assert marks and marks[0].get_linestyle() == ":"
