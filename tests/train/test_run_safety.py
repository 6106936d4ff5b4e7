"""Run directories that cannot be corrupted: one writer (an OS lock, tested with real
processes), --overwrite replaces the whole run, resume never loses or invents history, and a
resume changes only what is safe to change."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oodrec.cli import main
from oodrec.config import load_yaml
from oodrec.runs import LOCK_FILE, RunDir

ENV = dict(os.environ, PYTHONUNBUFFERED="1")
CLI = [sys.executable, "-m", "oodrec.cli", "-q"]


def _train_args(tiny_dir: Path, out: Path, name: str, *extra: str) -> list[str]:
    return [
        "train",
        "--dataset",
        str(tiny_dir),
        "--out",
        str(out),
        "--name",
        name,
        "--set",
        "train.batch_size=64",
        "--set",
        "train.patience=0",
        *extra,
    ]


def _rows(run: Path) -> int:
    path = run / "epochs.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _holder(run: Path) -> int | None:
    try:
        text = (run / LOCK_FILE).read_text().split()
    except FileNotFoundError:
        return None
    return int(text[0]) if text else None


def _start_long_run(tiny_dir: Path, out: Path, name: str, *extra: str) -> subprocess.Popen:
    """A real `oodrec train` process that runs until killed (100000 epochs, no early stop);
    returns once it has finished an epoch."""
    args = _train_args(tiny_dir, out, name, "--epochs", "100000", *extra)
    # at a low priority, so that it does not slow the processes the test starts next
    proc = subprocess.Popen(
        ["nice", "-n", "10", *CLI, *args],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    run = out / name
    deadline = time.time() + 120
    # started: it holds the lock, has removed an old run (record.json) and finished an epoch
    while _holder(run) != proc.pid or (run / "record.json").exists() or _rows(run) < 1:
        if proc.poll() is not None:
            pytest.fail(f"run ended early: {proc.stderr.read().decode()}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("run did not finish an epoch in 120 s")
        time.sleep(0.05)
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()


def _finished(tiny_dir: Path, out: Path, name: str, epochs: int = 3, *extra: str) -> Path:
    args = _train_args(tiny_dir, out, name, "--epochs", str(epochs), "--seed", "1", *extra)
    assert main(["-q", *args]) == 0
    return out / name


# ----------------------------------------------------------------------------- one writer


def test_one_writer_per_run_and_overwrite_replaces_the_whole_run(
    tiny_dir, tmp_path, capsys, caplog
):
    """Two real processes: an `oodrec train --overwrite` that runs until killed, and a second
    `oodrec train --resume` that is refused naming its PID; then a resume after the kill."""
    out = tmp_path / "runs"
    run = _finished(tiny_dir, out, "r")
    old = json.loads((run / "record.json").read_text())
    old_line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("val"))
    (run / "notes.txt").write_text("mine")
    first = _start_long_run(tiny_dir, out, "r", "--overwrite", "--seed", "2")
    try:
        # the old run is gone: its record and per-user metrics; files of others stay
        assert not (run / "record.json").exists() and not (run / "per_user.pt").exists()
        assert (run / "notes.txt").read_text() == "mine"
        assert load_yaml(run / "config.yaml").seed == 2
        second = subprocess.run(
            [*CLI, "train", "--resume", str(run)], env=ENV, capture_output=True, text=True
        )
        assert second.returncode == 2, second.stderr
        assert f"is being written by PID {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        args = _train_args(tiny_dir, out, "r", "--overwrite", "--epochs", "2")
        assert main(["-q", *args]) == 2  # this test's process is a writer too
        assert f"PID {first.pid}" in capsys.readouterr().err
        assert load_yaml(run / "config.yaml").seed == 2 and _rows(run) >= 1  # untouched
    finally:
        _kill(first)
    # the kernel released the dead writer's lock: a resume takes it over, with a warning, and
    # continues the new run (never the old one's metrics)
    done = _rows(run)
    with caplog.at_level(logging.WARNING):
        assert main(["-q", "train", "--resume", str(run), "--epochs", str(done + 1)]) == 0
    assert f"taking over the lock left by PID {first.pid}" in caplog.text
    printed = capsys.readouterr().out
    assert "already finished" not in printed and old_line not in printed
    new = json.loads((run / "record.json").read_text())
    assert new["seed"] == 2 and new["metrics"] != old["metrics"]
    assert new["epochs_run"] == done + 1
    assert [r["epoch"] for r in RunDir(run).read_epochs()] == list(range(done + 1))
    assert (run / LOCK_FILE).read_text() == ""  # released: no PID left behind


# ----------------------------------------------------------------------------- history


def test_a_garbled_middle_line_keeps_the_later_epochs(tiny_dir, tmp_path, caplog):
    run = _finished(tiny_dir, tmp_path, "r", 4)
    rd = RunDir(run)
    lines = rd.epochs_path.read_text().splitlines()
    lines[1] = lines[1][:20] + "#garbled"
    rd.epochs_path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        assert [r["epoch"] for r in rd.read_epochs()] == [0, 2, 3]
    assert "skipped 1 unreadable line(s), line(s) 2" in caplog.text
    # a resume says what it cannot restore and keeps the damaged file
    rd.record_path.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["-q", "train", "--resume", str(run)]) == 0
    assert "no readable row for epoch(s) 1; the run's history has a gap there" in caplog.text
    assert (run / "epochs.jsonl.corrupt").read_text().splitlines()[1].endswith("#garbled")
    assert [r["epoch"] for r in rd.read_epochs()] == [0, 2, 3]
    assert rd.is_finished()


def test_rows_after_the_checkpoint_are_dropped_with_a_warning(tiny_dir, tmp_path, caplog):
    run = _finished(tiny_dir, tmp_path, "r", 3)
    rd = RunDir(run)
    rows = rd.read_epochs()
    extra = dict(rows[-1], epoch=3)  # a row written by a run killed before its checkpoint
    rd.append_epoch(extra)
    with caplog.at_level(logging.WARNING):
        rd.truncate_epochs(3)
    assert "dropped 1 row(s) of epoch(s) 3" in caplog.text and "recomputed" in caplog.text
    assert rd.read_epochs() == rows


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_damaged_last_checkpoint_names_the_file_and_offers_prev(tiny_dir, tmp_path, capsys):
    run = _finished(tiny_dir, tmp_path, "r", 4)
    rd = RunDir(run)
    want = json.loads(rd.record_path.read_text())
    assert rd.prev_ckpt.is_file()
    rd.record_path.unlink()
    _truncate(rd.last_ckpt)
    capsys.readouterr()
    assert main(["-q", "train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {rd.last_ckpt} is unreadable" in err and "Traceback" not in err
    assert f"{rd.prev_ckpt} (3 epoch(s) done) is readable" in err
    assert f"oodrec train --resume {run} --resume-from prev" in err
    # continuing from prev.pt recomputes the last epoch and ends where the run ended
    assert main(["-q", "train", "--resume", str(run), "--resume-from", "prev"]) == 0
    got = json.loads(rd.record_path.read_text())
    assert got["metrics"] == want["metrics"] and got["best_epoch"] == want["best_epoch"]
    assert len(rd.read_epochs()) == 4


def test_missing_last_checkpoint_falls_back_on_prev(tiny_dir, tmp_path, caplog):
    run = _finished(tiny_dir, tmp_path, "r", 3)
    rd = RunDir(run)
    want = json.loads(rd.record_path.read_text())["metrics"]
    rd.record_path.unlink()
    rd.last_ckpt.unlink()  # a kill between the two renames of save_last
    with caplog.at_level(logging.WARNING):
        assert main(["-q", "train", "--resume", str(run)]) == 0
    assert "last.pt is missing" in caplog.text and "dropped 1 row(s) of epoch(s) 2" in caplog.text
    assert json.loads(rd.record_path.read_text())["metrics"] == want


def test_damaged_best_checkpoint_and_record_are_named(tiny_dir, tmp_path, capsys):
    run = _finished(tiny_dir, tmp_path, "r", 2)
    rd = RunDir(run)
    want = json.loads(rd.record_path.read_text())["metrics"]
    _truncate(rd.record_path)
    capsys.readouterr()
    assert main(["-q", "train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{rd.record_path} is unreadable" in err and "remove it and run" in err
    rd.record_path.unlink()  # as the message says: the record is written again
    assert main(["-q", "train", "--resume", str(run)]) == 0
    assert json.loads(rd.record_path.read_text())["metrics"] == want
    _truncate(rd.best_ckpt)
    capsys.readouterr()
    assert main(["-q", "evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {rd.best_ckpt} is unreadable" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- resume changes


def test_resume_refuses_unsafe_changes_naming_the_keys(tiny_dir, tmp_path, capsys):
    run = _finished(tiny_dir, tmp_path, "r", 2)
    before = (run / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["-q", "train", "--resume", str(run), "--set", "train.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "--resume cannot change train.lr (0.01 -> 0.5)" in err
    assert main(["-q", "train", "--resume", str(run), "--sampler", "dns", "--seed", "9"]) == 2
    err = capsys.readouterr().err
    assert "sampler.name ('rns' -> 'dns')" in err and "seed (1 -> 9)" in err
    assert main(["-q", "train", "--resume", str(run), "--name", "other"]) == 2
    assert "drop --name" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == before


def test_resume_extends_a_finished_run_and_records_the_change(tiny_dir, tmp_path, capsys):
    run = _finished(tiny_dir, tmp_path, "r", 3)
    full = _finished(tiny_dir, tmp_path, "full", 5)
    args = ["-q", "train", "--resume", str(run), "--epochs", "5", "--set", "train.threads=1"]
    assert main(args) == 0
    rec = json.loads((run / "record.json").read_text())
    want = json.loads((full / "record.json").read_text())
    assert rec["epochs_run"] == 5 and rec["metrics"] == want["metrics"]
    (change,) = rec["resume_changes"]
    assert change["at_epoch"] == 3
    assert change["changes"] == ["train.epochs (3 -> 5)", "train.threads (0 -> 1)"]
    cfg = load_yaml(run / "config.yaml")  # still a loadable config, with the new values
    assert cfg.train.epochs == 5 and cfg.train.threads == 1
    assert (run / "config.yaml").read_text().startswith("# resumed at epoch 3 (")
    assert json.loads((run / "record.prev.json").read_text())["epochs_run"] == 3
    # fewer epochs than done: nothing to resume, nothing changed
    capsys.readouterr()
    assert main(["-q", "train", "--resume", str(run), "--epochs", "2"]) == 0
    assert "not resumed" in capsys.readouterr().out
    assert load_yaml(run / "config.yaml").train.epochs == 5


def test_bench_refuses_a_run_directory_another_writer_holds(tmp_path):
    import fcntl

    from oodrec.bench.grid import expand_grid, load_grid
    from oodrec.bench.runner import Job, execute_job

    smoke = Path(__file__).parents[2] / "configs" / "smoke.yaml"
    run = expand_grid(load_grid(smoke), out_dir=str(tmp_path))[0]
    path = tmp_path / run.name
    path.mkdir()
    # another writer: its own open file description on the lock file (as another process has)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242 oodrec train since 2025-01-01T00:00:00\n")
        outcome = execute_job(Job(run, path, "new"))
    finally:
        os.close(fd)
    assert outcome.status == "failed"
    # one line, no traceback: the message names the holder
    assert "Traceback" not in outcome.error and len(outcome.error.strip().splitlines()) == 1
    assert "is being written by PID 4242 (oodrec train since" in outcome.error
    assert sorted(p.name for p in path.iterdir()) == [LOCK_FILE]  # nothing was written


def test_a_refused_resume_leaves_a_finished_run_as_it_was(tiny_dir, tmp_path, capsys):
    """Extending a finished run whose last checkpoint is damaged is refused, and the run keeps
    its record.json and checkpoints byte for byte (so report and archive still count it)."""
    out = tmp_path / "runs"
    assert main(["-q", *_train_args(tiny_dir, out, "r", "--epochs", "2")]) == 0
    run = out / "r"
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["-q", "train", "--resume", str(run), "--epochs", "4"]) == 2
    assert "last.pt" in capsys.readouterr().err
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    after.pop(Path(LOCK_FILE), None)
    before.pop(Path(LOCK_FILE), None)
    assert after == before


def _files(run: Path) -> dict[str, bytes]:
    """Every file of a run directory but the (empty) lock file, by relative path."""
    out = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    out.pop(LOCK_FILE, None)
    return out


RESUME_STEPS = [
    # (what fails, object, attribute, the call that fails: 1 = the first)
    ("loading the checkpoint", "rundir", "resume_checkpoint", 1),
    ("trimming epochs.jsonl", "rundir", "truncate_epochs", 1),
    ("setting record.json aside", "os", "replace", 1),
    ("recording the changed settings", "rundir", "record_resume_changes", 1),
    ("writing resolved.yaml", "rundir", "write_resolved", 1),
    ("the first new epoch", "trainer", "train_epoch", 1),
    ("appending the first new row", "rundir", "append_epoch", 1),
    ("the first new checkpoint", "rundir", "save_last", 1),
    ("the second new epoch (after a checkpoint)", "trainer", "train_epoch", 2),
    ("the second new checkpoint", "rundir", "save_last", 2),
    ("writing the new record.json", "rundir", "write_record", 1),
]


def test_a_resume_that_fails_at_any_step_leaves_the_run_as_it_was(
    tiny_dir, tmp_path, monkeypatch, capsys
):
    """Extending a finished run (with a changed setting) is failed at each of its steps in
    turn: every file of the run is byte-identical afterwards, the snapshot is gone, and
    ``oodrec report`` still counts the run; then the same resume, unfailed, succeeds."""
    from oodrec.bench.records import load_runs
    from oodrec.errors import RunError
    from oodrec.train import loop

    out = tmp_path / "runs"
    assert main(["-q", *_train_args(tiny_dir, out, "done", "--epochs", "2")]) == 0
    import shutil

    targets = {"rundir": RunDir, "trainer": loop.Trainer, "os": loop.os}
    for k, (step, owner, name, nth) in enumerate(RESUME_STEPS):
        run = out / f"r{k}"
        shutil.copytree(out / "done", run)
        before = _files(run)
        original = getattr(targets[owner], name)
        calls = []

        def failing(*args, _original=original, _nth=nth, _step=step, _calls=calls, **kwargs):
            if _original is os.replace and not str(args[1]).endswith("record.prev.json"):
                return _original(*args, **kwargs)  # only the move of record.json fails
            _calls.append(1)
            if len(_calls) == _nth:
                raise RunError(f"injected failure: {_step}")
            return _original(*args, **kwargs)

        with monkeypatch.context() as m:
            m.setattr(targets[owner], name, failing)
            args = ["-q", "train", "--resume", str(run), "--epochs", "4"]
            assert main([*args, "--set", "train.threads=1"]) == 2, step
        assert f"injected failure: {step}" in capsys.readouterr().err
        assert calls, f"{step}: the step was never reached"
        assert _files(run) == before, step
        assert not (run / ".resume-snapshot").exists(), step
        assert run in [r.path for r in load_runs(out)], step
    # unfailed, the resume extends the run
    assert main(["-q", "train", "--resume", str(out / "r0"), "--epochs", "4"]) == 0
    assert json.loads((out / "r0" / "record.json").read_text())["epochs_run"] == 4
    assert not (out / "r0" / ".resume-snapshot").exists()
    # an unfinished run keeps the progress a failed resume saved (a new checkpoint), and goes on
    run = out / "unfinished"
    shutil.copytree(out / "done", run)
    (run / "record.json").unlink()
    calls = []

    def fail_second(self, epoch, _original=loop.Trainer.train_epoch):
        calls.append(epoch)
        if len(calls) == 2:
            raise RunError("injected failure in the second new epoch")
        return _original(self, epoch)

    with monkeypatch.context() as m:
        m.setattr(loop.Trainer, "train_epoch", fail_second)
        assert main(["-q", "train", "--resume", str(run), "--epochs", "4"]) == 2
    assert len(RunDir(run).read_epochs()) == 3 and not (run / ".resume-snapshot").exists()
    assert main(["-q", "train", "--resume", str(run), "--epochs", "4"]) == 0
    assert json.loads((run / "record.json").read_text())["epochs_run"] == 4
