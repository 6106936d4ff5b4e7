"""Copy the results of finished runs, without their checkpoints, to another directory.

A grid's run directories hold checkpoints of tens of megabytes each, and the machine that ran
them may not last (a cloud node, a CI runner, a session's scratch disk). What a report needs,
and what tells ``oodrec bench`` and ``oodrec tune`` that a run is done, is small text:
``config.yaml``, ``resolved.yaml``, ``epochs.jsonl``, ``record.json``, ``resumes.json`` and
``bench.json``. ``archive_runs`` copies those files of every finished run below SRC to the same
relative place below DEST, and the study file ``tune.db`` of ``oodrec tune`` with SQLite's
online backup (consistent while workers write it).

The study file grows while a search goes on, so archiving a search again replaces DEST's
``tune.db`` when it holds an earlier state of SRC's studies (every trial of DEST is in SRC with the
same values, and each one DEST had finished has the same result in SRC). A DEST study with
anything else is kept and named in the summary.

Both directions use it: archive a grid into a results folder that goes under version control,
and later copy that folder back under ``runs/`` so that a grid resumed on a fresh machine
skips the runs that finished elsewhere and the report covers all of them. A copied run has no
checkpoints, so ``oodrec evaluate`` and the popularity-bucket figure (which reload the model)
say so and leave it out; its numbers are in ``record.json`` and ``epochs.jsonl``.

No run is overwritten. A run that DEST already holds with the same ``record.json`` is left as
it is; any other run there under the same name (unfinished, or finished with other results) is
a conflict, and a conflict stops the copy before anything is written. Each run is copied into a
hidden directory first and renamed into place, so a kill never leaves half a run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from oodrec.bench.records import find_runs
from oodrec.errors import RunError

logger = logging.getLogger(__name__)

RESULT_FILES = (
    "config.yaml",
    "resolved.yaml",
    "epochs.jsonl",
    "record.json",
    "resumes.json",
    "bench.json",
)
"""The files of a run that are copied: everything but checkpoints, ``per_user.pt`` and the lock."""

STUDY_FILE = "tune.db"
PARTIAL = ".archive-partial"


@dataclass
class ArchivePlan:
    """What ``archive_runs`` does (or did): run paths relative to SRC, by outcome."""

    src: Path
    dest: Path
    copy: list[str] = field(default_factory=list)
    same: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    study: str = "none"  # none | copy | update | same | kept (DEST's tune.db holds other trials)
    study_note: str = ""  # why a DEST study is kept
    bytes: int = 0

    def summary(self, done: bool = True) -> str:
        """One line of counts; ``done=False`` words it as a plan (a dry run)."""
        copied = "copied" if done else "to copy"
        parts = [f"{len(self.copy)} run(s) {copied}", f"{len(self.same)} already there"]
        if self.unfinished:
            parts.append(f"{len(self.unfinished)} unfinished left out")
        if self.study == "copy":
            parts.append(f"{STUDY_FILE} {copied}")
        elif self.study == "update":
            updated = "updated" if done else "to update"
            parts.append(f"{STUDY_FILE} {updated} (DEST held an earlier state of the study)")
        elif self.study == "same":
            parts.append(f"{STUDY_FILE} already there")
        elif self.study == "kept":
            parts.append(f"{STUDY_FILE} not copied ({self.dest / STUDY_FILE} {self.study_note})")
        return f"{self.src} -> {self.dest}: " + ", ".join(parts) + f"; {self.bytes / 1e6:.1f} MB"


def _same_record(a: Path, b: Path) -> bool:
    try:
        return json.loads(a.read_text()) == json.loads(b.read_text())
    except (OSError, ValueError):
        return False


def plan_archive(src: str | Path, dest: str | Path) -> ArchivePlan:
    """What copying SRC's finished runs to DEST would do, without writing anything.

    Raises:
        ConfigError: SRC is missing or a file, DEST is a file or lies below one.
        RunError: SRC holds no run and no study, or DEST is SRC or lies inside it.
    """
    from oodrec.paths import check_in_dir, check_out_dir

    src, dest = Path(src), Path(dest)
    check_in_dir(src, "SRC")
    check_out_dir(dest, "DEST")
    if dest.resolve() == src.resolve() or src.resolve() in dest.resolve().parents:
        raise RunError(f"{dest}: the destination is {src} or lies inside it; choose another")
    finished, unfinished = find_runs(src)
    plan = ArchivePlan(src, dest)
    plan.unfinished = [str(p.relative_to(src)) for p in unfinished]
    for path in finished:
        rel = path.relative_to(src)
        if path.resolve() == (dest / rel).resolve():  # DEST reaches SRC's run through a link
            plan.same.append(str(rel))
            continue
        target = dest / rel
        if not target.exists() or (target.is_dir() and not any(target.iterdir())):
            plan.copy.append(str(rel))
            plan.bytes += sum(
                (path / n).stat().st_size for n in RESULT_FILES if (path / n).is_file()
            )
        elif _same_record(path / "record.json", target / "record.json"):
            plan.same.append(str(rel))
        else:
            plan.conflicts.append(str(rel))
    if (src / STUDY_FILE).is_file():
        plan.study, plan.study_note = "copy", ""
        if (dest / STUDY_FILE).exists():
            plan.study, plan.study_note = _compare_studies(src / STUDY_FILE, dest / STUDY_FILE)
        if plan.study in ("copy", "update"):
            plan.bytes += (src / STUDY_FILE).stat().st_size
    if not finished and not unfinished and plan.study == "none":
        raise RunError(f"{src}: no run directory and no {STUDY_FILE} below it")
    return plan


def _study_trials(db: Path) -> dict[tuple[str, int], tuple[str, float | None, dict]]:
    """``(study, trial number) -> (state, value, params)`` of every trial in the Optuna study
    file ``db``, read from a private copy (opening a file with Optuna may write to it).

    Raises:
        RunError: the file cannot be read as Optuna studies (or Optuna is not installed).
    """
    import tempfile

    try:
        import optuna
    except ImportError:
        raise RunError(f"{db}: reading a study needs optuna (pip install optuna)") from None
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / STUDY_FILE
        _copy_study(db, copy)
        con = sqlite3.connect(copy)
        try:
            tables = {r[0] for r in con.execute("select name from sqlite_master")}
        finally:
            con.close()
        if not {"studies", "trials"} <= tables:
            raise RunError(f"{db}: not an Optuna study file (no studies and trials tables)")
        out = {}
        try:
            storage = optuna.storages.RDBStorage(f"sqlite:///{copy}")
        except Exception as exc:  # noqa: BLE001 - any storage error means "not a study file"
            raise RunError(f"{db}: not an Optuna study file ({type(exc).__name__})") from None
        try:
            for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
                study = optuna.load_study(study_name=summary.study_name, storage=storage)
                for t in study.get_trials(deepcopy=False):
                    out[(summary.study_name, t.number)] = (t.state.name, t.value, dict(t.params))
        finally:
            storage.engine.dispose()
    return out


def _compare_studies(src: Path, dest: Path) -> tuple[str, str]:
    """``("update", "")`` when ``dest`` holds an earlier state of ``src``'s studies,
    ``("same", "")`` when it holds the same trials, else ``("kept", why)``."""
    try:
        new, old = _study_trials(src), _study_trials(dest)
    except RunError as exc:
        return "kept", f"could not be compared: {exc}"
    if new == old:
        return "same", ""
    for key, (state, value, params) in old.items():
        if key not in new:
            return "kept", f"holds trial {key[1]} of {key[0]}, which {src} does not"
        if new[key][2] != params:
            return "kept", f"holds trial {key[1]} of {key[0]} with other values than {src}'s"
        if state not in ("RUNNING", "WAITING") and new[key][:2] != (state, value):
            return "kept", f"holds trial {key[1]} of {key[0]} with another result"
    return "update", ""


def _copy_run(path: Path, target: Path) -> None:
    """Copy one run's result files: into a hidden sibling directory, then renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}{PARTIAL}"
    if partial.exists():  # left by a copy that was killed
        shutil.rmtree(partial)
    partial.mkdir()
    for name in RESULT_FILES:
        if (path / name).is_file():
            shutil.copy2(path / name, partial / name)
    if target.is_dir():  # empty (checked by the plan)
        target.rmdir()
    os.rename(partial, target)


def _copy_study(src: Path, dest: Path) -> None:
    """SQLite's online backup: a consistent copy even while tune workers write the study."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.parent / f".{dest.name}{PARTIAL}"
    partial.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(partial)
        try:
            source.backup(target)
        finally:
            target.close()
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise RunError(f"{src}: cannot copy the study: {exc}") from None
    finally:
        source.close()
    os.replace(partial, dest)


def archive_runs(src: str | Path, dest: str | Path, *, dry_run: bool = False) -> ArchivePlan:
    """Copy the result files of every finished run below ``src`` to the same place below
    ``dest``, and ``tune.db`` where ``dest`` has none or an earlier state of it; see the
    module docstring.

    Args:
        src: a directory of run directories (any depth), e.g. a grid's ``out_dir``.
        dest: where the copies go; created if missing.
        dry_run: only plan.

    Returns:
        The plan, carried out unless ``dry_run``.

    Raises:
        RunError: see ``plan_archive``; or a conflict (a run under the same name in ``dest``
            that is unfinished or has another ``record.json``), before anything is copied.
    """
    plan = plan_archive(src, dest)
    for rel in plan.unfinished:
        logger.warning("skipping run directory %s: no record.json (the run has not finished)", rel)
    if plan.unfinished:
        logger.warning(
            "%s: skipped %d unfinished run director%s (left out of the copy)",
            plan.src,
            len(plan.unfinished),
            "y" if len(plan.unfinished) == 1 else "ies",
        )
    if plan.conflicts:
        shown = ", ".join(plan.conflicts[:10])
        more = f" and {len(plan.conflicts) - 10} more" if len(plan.conflicts) > 10 else ""
        raise RunError(
            f"{plan.dest}: {len(plan.conflicts)} run(s) there differ from {plan.src} "
            f"(unfinished, or finished with other results): {shown}{more}; nothing was copied. "
            "Copy to another directory, or move those runs aside."
        )
    if dry_run:
        return plan
    for rel in plan.copy:
        _copy_run(plan.src / rel, plan.dest / rel)
        logger.debug("copied %s", rel)
    if plan.study in ("copy", "update"):
        _copy_study(plan.src / STUDY_FILE, plan.dest / STUDY_FILE)
    return plan


__all__ = ["RESULT_FILES", "ArchivePlan", "archive_runs", "plan_archive"]
