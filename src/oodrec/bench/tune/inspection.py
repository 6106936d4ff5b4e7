"""Views of a search, read from its studies and its trials' run directories: the summary of
each study, the trials that are running and how far they have got, every trial as a CSV row,
and which trial each val estimator would pick. Only the CSV and Markdown writers write, and only
the file they are given.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from oodrec.bench.tune.study import StudyJob, finished, open_study, study_name, trial_run_dir


def summarize(jobs: list[StudyJob]) -> list[dict[str, Any]]:
    """Per study: budget, finished / pruned counts, best value and values (None before any), and
    ``best_capped``: where the epoch cap ended the best trial's run (None when it did not)."""
    from optuna.trial import TrialState

    rows = []
    for job in jobs:
        study = open_study(job.url, study_name(job.dataset, job.method), job.tune)
        done = finished(study)
        complete = [t for t in done if t.state == TrialState.COMPLETE]
        best = max(complete, key=lambda t: t.value) if complete else None
        best_dir = trial_run_dir(job, best)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        rows.append(
            {
                "study": study_name(job.dataset, job.method),
                "running": len(running),
                "dataset": job.dataset,
                "method": job.method,
                "budget": job.trials,
                "finished": len(done),
                "pruned": len(done) - len(complete),
                "metric": job.base.train.select_metric,
                "best_value": best.value if best else None,
                "best_params": dict(best.params) if best else None,
                "best_trial": best.number if best else None,
                "best_run_dir": str(best_dir) if best_dir else None,
                "best_capped": _capped_at(best_dir),
                "space": [p.describe() for p in job.space.values()],
            }
        )
    return rows


def _trial_epochs(run_dir: str | Path | None) -> list[dict[str, Any]]:
    """The epoch rows a trial's run directory holds so far (none when it has no log yet, or the
    log cannot be read: a status view never fails on one trial)."""
    from oodrec.errors import OodrecError
    from oodrec.runs import RunDir

    if not run_dir or not RunDir(run_dir).epochs_path.is_file():
        return []
    try:
        return RunDir(run_dir).read_epochs()
    except (OSError, OodrecError):
        return []


def running_trials(jobs: list[StudyJob], now: float | None = None) -> list[dict[str, Any]]:
    """The RUNNING trials of each study and how far their runs have got, from their run
    directories: ``study``, ``number``, ``epochs`` done of ``cap``, the last ``val`` of the
    selection metric and the ``best`` so far, median ``epoch_s``, and ``idle_s``, the seconds
    since the run last wrote an epoch (a large value with no live worker means a killed one,
    whose trial the next ``oodrec tune`` continues)."""
    import statistics

    from optuna.trial import TrialState

    from oodrec.runs import RunDir

    now = time.time() if now is None else now
    out = []
    for job in jobs:
        study = open_study(job.url, study_name(job.dataset, job.method), job.tune)
        metric = f"{job.base.train.select_on}/{job.base.train.select_metric}"
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            run_dir = trial_run_dir(job, trial)
            rows = _trial_epochs(run_dir)
            vals = [r[metric] for r in rows if metric in r]
            secs = [r["epoch_seconds"] for r in rows[-5:] if "epoch_seconds" in r]
            out.append(
                {
                    "study": study_name(job.dataset, job.method),
                    "number": trial.number,
                    "epochs": len(rows),
                    "cap": job.base.train.epochs,
                    "metric": job.base.train.select_metric,
                    "val": vals[-1] if vals else None,
                    "best": max(vals) if vals else None,
                    "epoch_s": statistics.median(secs) if secs else None,
                    "idle_s": now - RunDir(run_dir).epochs_path.stat().st_mtime if rows else None,
                }
            )
    return out


TRIAL_COLUMNS = ("study", "trial", "state", "value", "epochs", "best_epoch", "run_dir")


def trial_rows(jobs: list[StudyJob]) -> list[dict[str, Any]]:
    """Every trial of each study, for an audit of the search (``oodrec tune --trials-csv``):
    ``study``, ``trial`` number, ``state`` (complete, pruned, running, fail, waiting), ``value``
    (val selection metric of the selected epoch; the last reported one for a pruned trial),
    ``epochs`` trained, ``best_epoch`` and ``run_dir``, then one column per searched key."""
    from oodrec.runs import RunDir

    out = []
    for job in jobs:
        study = open_study(job.url, study_name(job.dataset, job.method), job.tune)
        for trial in study.get_trials(deepcopy=False):
            if trial.user_attrs.get("surplus"):
                continue  # a worker's claim after the budget was full: it trained nothing
            value = trial.value
            if value is None and trial.intermediate_values:
                value = trial.intermediate_values[max(trial.intermediate_values)]
            run_dir = trial_run_dir(job, trial) or ""
            epochs = best = None
            if run_dir and RunDir(run_dir).epochs_path.is_file():
                rows = _trial_epochs(run_dir)
                epochs = len(rows)
                best = max((r["epoch"] for r in rows if r.get("improved")), default=None)
            row = {
                "study": study_name(job.dataset, job.method),
                "trial": trial.number,
                "state": trial.state.name.lower(),
                "value": value,
                "epochs": epochs,
                "best_epoch": best,
                "run_dir": str(run_dir),
            }
            row.update({key: trial.params.get(key) for key in job.space})
            out.append(row)
    return out


def write_trials_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` (``trial_rows``) as CSV; the searched keys of every study become columns."""
    import csv
    import io

    from oodrec.runs import atomic_write_text

    keys = list(TRIAL_COLUMNS)
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in keys})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, buf.getvalue())
    return out


def search_estimator_tables(jobs: list[StudyJob], split: str = "ood_test") -> list[Any]:
    """Which trial and epoch each val estimator would pick in each study, judged on ``split``
    (``estimator_check.search_rows``), for NDCG@20 and Recall@20. Every trial with an epoch log
    counts (complete, pruned, running). Empty when no trial logged the estimators."""
    from optuna.trial import TrialState

    from oodrec.bench.estimator_check import search_rows, search_table

    studies: dict[str, list[tuple[str, list[dict[str, Any]]]]] = {}
    for job in jobs:
        study = open_study(job.url, study_name(job.dataset, job.method), job.tune)
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        trials = [
            (f"trial {t.number}", _trial_epochs(trial_run_dir(job, t)))
            for t in study.get_trials(deepcopy=False, states=states)
        ]
        studies[study_name(job.dataset, job.method)] = [(n, e) for n, e in trials if e]
    metrics = sorted({job.base.train.select_metric.split("_")[-1] for job in jobs})
    selection = "; ".join(sorted({f"search on val {j.base.train.select_metric}" for j in jobs}))
    tables = []
    for metric in dict.fromkeys(["ndcg@20", "recall@20", *metrics]):
        rows = search_rows(studies, metric, split)
        if rows:
            tables.append(search_table(rows, selection))
    return tables


def write_search_estimators(path: str | Path, jobs: list[StudyJob]) -> Path:
    """``search_estimator_tables`` as Markdown in ``path`` (written atomically)."""
    from oodrec.bench.render import to_markdown
    from oodrec.runs import atomic_write_text

    tables = search_estimator_tables(jobs)
    text = (
        "\n".join(to_markdown(t) for t in tables) if tables else "no trial logged the estimators\n"
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    return out


def format_running(row: dict[str, Any]) -> str:
    """One line of ``oodrec tune --status`` for a running trial."""
    parts = [f"  {row['study']} trial {row['number']}: epoch {row['epochs']} of {row['cap']}"]
    if row["val"] is not None:
        parts.append(f"val {row['metric']} {row['val']:.4f} (best {row['best']:.4f})")
    if row["epoch_s"] is not None:
        sec = row["epoch_s"]
        parts.append(f"{sec:.0f} s/epoch" if sec >= 10 else f"{sec:.2g} s/epoch")
    if row["idle_s"] is not None:
        parts.append(f"last epoch written {row['idle_s']:.0f} s ago")
    return ", ".join(parts)


def _capped_at(run_dir: Path | None) -> str | None:
    """``best epoch B of N`` when the epoch cap ended the trial run in ``run_dir``
    (``RunRecord.capped``), else None (also for no trial, or a run directory that is gone)."""
    from oodrec.bench.records import RunRecord
    from oodrec.errors import RunError
    from oodrec.runs import RunDir

    if run_dir is None:
        return None
    try:
        record = RunDir(run_dir).read_record()
    except (OSError, RunError):
        return None
    if not RunRecord(Path(run_dir), record).capped:
        return None
    return f"best epoch {record['best_epoch']} of {record['config']['train']['epochs']}"


__all__ = [
    "TRIAL_COLUMNS",
    "format_running",
    "running_trials",
    "search_estimator_tables",
    "summarize",
    "trial_rows",
    "write_search_estimators",
    "write_trials_csv",
]
