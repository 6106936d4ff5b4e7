"""Run directories: resolved config, per-epoch JSONL, final record, checkpoints, one writer.

Layout::

    RUN_DIR/config.yaml        resolved ExperimentConfig (comment lines list resume changes)
    RUN_DIR/resolved.yaml      the method's resolved options (sampler options with defaults)
    RUN_DIR/epochs.jsonl       one JSON object per finished epoch
    RUN_DIR/record.json        final record (written when the run ends)
    RUN_DIR/resumes.json       settings changed when the run was resumed (if any)
    RUN_DIR/checkpoints/last.pt  everything needed to resume
    RUN_DIR/checkpoints/prev.pt  the checkpoint before last.pt (a fallback if last.pt is damaged)
    RUN_DIR/checkpoints/best.pt  model (and sampler) state of the selected epoch
    RUN_DIR/tracking.json      the MLflow run it is tracked in (``--track mlflow``)
    RUN_DIR/tensorboard/       TensorBoard event files (``--track tensorboard``)
    RUN_DIR/.lock              OS lock of the process writing the run (holds its PID)

Writes are atomic (temporary file + rename), so a run killed at any point can be resumed. One
process writes a run at a time (``RunLock``). Nothing read back is dropped without a warning
that says how much and why. torch is imported only to save or load a checkpoint, so a second
writer is refused before torch loads.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from oodrec.config import ExperimentConfig, load_yaml, to_dict
from oodrec.errors import RunError
from oodrec.paths import mkstemp_shared
from oodrec.runs.lock import LOCK_FILE, RunLock, now

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

RUN_FILES = (
    "config.yaml",
    "resolved.yaml",
    "epochs.jsonl",
    "epochs.jsonl.corrupt",
    "record.json",
    "record.prev.json",
    "resumes.json",
    "per_user.pt",
    "checkpoints",
    "tracking.json",
    "tensorboard",
    ".resume-snapshot",
)
"""What a run writes; a new run removes leftovers of these (not ``bench.json``, not the lock)."""
SNAPSHOT_DIR = ".resume-snapshot"
"""Where a resume keeps the run's files until it succeeds (``oodrec.runs.snapshot``)."""


class RunDir:
    """Paths and I/O of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def resolved_path(self) -> Path:
        return self.path / "resolved.yaml"

    @property
    def epochs_path(self) -> Path:
        return self.path / "epochs.jsonl"

    @property
    def record_path(self) -> Path:
        return self.path / "record.json"

    @property
    def resumes_path(self) -> Path:
        return self.path / "resumes.json"

    @property
    def last_ckpt(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def prev_ckpt(self) -> Path:
        return self.path / "checkpoints" / "prev.pt"

    @property
    def best_ckpt(self) -> Path:
        return self.path / "checkpoints" / "best.pt"

    def lock(self, command: str = "train") -> RunLock:
        """The run's writer lock (a context manager; see ``RunLock``)."""
        return RunLock(self.path, command)

    # ------------------------------------------------------------------ create / clear

    def clear(self) -> int:
        """Remove the run's files (``RUN_FILES``, ``bench.json`` and leftover temporary files);
        ``config.yaml`` goes first, so a kill half-way leaves a directory that is no longer
        resumable, never a mix of two runs. Other entries are left in place with a warning.
        Returns the number of entries removed."""
        if not self.path.is_dir():
            return 0
        removed = 0
        if self.config_path.is_file():
            self.config_path.unlink()
            removed += 1
        owned = set(RUN_FILES) | {"bench.json"}
        foreign = []
        for entry in sorted(self.path.iterdir()):
            temp = entry.name.startswith(".") and entry.name.lstrip(".").split(".")[0] in {
                n.split(".")[0] for n in owned
            }
            if entry.name == LOCK_FILE or not (entry.name in owned or temp):
                if entry.name != LOCK_FILE:
                    foreign.append(entry.name)
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
        if foreign:
            logger.warning(
                "%s: left %d entr(ies) that are not run files in place: %s",
                self.path,
                len(foreign),
                ", ".join(foreign[:10]),
            )
        return removed

    def create(self, cfg: ExperimentConfig) -> None:
        """Start a new run: remove a previous run's files (config.yaml first), then write an
        empty ``epochs.jsonl`` and, last, ``config.yaml``."""
        if self.config_path.is_file():
            self.config_path.unlink()
        for name in RUN_FILES:
            entry = self.path / name
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.exists():
                entry.unlink()
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.epochs_path, "")
        self.write_config(cfg)

    def write_config(self, cfg: ExperimentConfig, header: str = "") -> None:
        text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
        atomic_write_text(self.config_path, header + text)

    def write_resolved(self, resolved: dict[str, Any]) -> None:
        """``resolved.yaml``: the method's resolved options (JSON types only)."""
        plain = json.loads(json.dumps(resolved, default=str))
        atomic_write_text(self.resolved_path, yaml.safe_dump(plain, sort_keys=False))

    def load_config(self) -> ExperimentConfig:
        if not self.config_path.is_file():
            raise RunError(f"{self.path} is not a run directory (no config.yaml)")
        return load_yaml(self.config_path)

    def is_finished(self) -> bool:
        return self.record_path.is_file()

    # ------------------------------------------------------------------ epochs.jsonl

    def append_epoch(self, row: dict[str, Any]) -> None:
        with open(self.epochs_path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _parse_epochs(self) -> tuple[list[dict[str, Any]], list[int], int]:
        """Rows, numbers of unreadable lines, and the line count."""
        if not self.epochs_path.is_file():
            return [], [], 0
        lines = self.epochs_path.read_text(errors="replace").splitlines()
        rows, bad = [], []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad.append(number)
                continue
            if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                bad.append(number)
                continue
            rows.append(row)
        return rows, bad, len(lines)

    def _warn_bad_lines(self, bad: list[int], total: int) -> None:
        if not bad:
            return
        cut = " (the last one was cut by a kill)" if bad[-1] == total else ""
        logger.warning(
            "%s: skipped %d unreadable line(s), line(s) %s%s; the rows after them are kept",
            self.epochs_path,
            len(bad),
            ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else ""),
            cut,
        )

    def read_epochs(self) -> list[dict[str, Any]]:
        """Every readable row; an unreadable line (a garbled middle line, or a last line cut by
        a kill) is skipped with a warning naming it, and never hides the rows after it."""
        rows, bad, total = self._parse_epochs()
        self._warn_bad_lines(bad, total)
        return rows

    def truncate_epochs(self, upto: int) -> None:
        """Keep only rows of epochs < ``upto`` (the checkpointed ones); each dropped row is
        reported, and a file with unreadable lines is kept as ``epochs.jsonl.corrupt``."""
        rows, bad, total = self._parse_epochs()
        self._warn_bad_lines(bad, total)
        keep = [r for r in rows if r["epoch"] < upto]
        later = sorted({r["epoch"] for r in rows} - {r["epoch"] for r in keep})
        if later:
            logger.warning(
                "%s: dropped %d row(s) of epoch(s) %s: they were written after the checkpoint "
                "the run continues from (%d epoch(s) done) and are recomputed",
                self.epochs_path,
                len(rows) - len(keep),
                ", ".join(map(str, later)),
                upto,
            )
        missing = sorted(set(range(upto)) - {r["epoch"] for r in keep})
        if missing:
            logger.warning(
                "%s: no readable row for epoch(s) %s; the run's history has a gap there",
                self.epochs_path,
                ", ".join(map(str, missing)),
            )
        if bad:
            backup = self.path / "epochs.jsonl.corrupt"
            shutil.copyfile(self.epochs_path, backup)
            logger.warning("%s: the file with unreadable lines is kept as %s", self.path, backup)
        if later or bad:
            atomic_write_text(self.epochs_path, "".join(json.dumps(r) + "\n" for r in keep))

    # ------------------------------------------------------------------ record.json

    def write_record(self, record: dict[str, Any]) -> None:
        atomic_write_text(self.record_path, json.dumps(record, indent=2, sort_keys=False))

    def read_record(self) -> dict[str, Any]:
        if not self.record_path.is_file():
            raise RunError(f"{self.path}: no record.json (the run has not finished)")
        try:
            return json.loads(self.record_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunError(
                f"{self.record_path} is unreadable (truncated or corrupt: {exc}); remove it and "
                f"run `oodrec train --resume {self.path}` to write it again from the last "
                f"checkpoint"
            ) from None

    # ------------------------------------------------------------------ resume changes

    def resume_changes(self) -> list[dict[str, Any]]:
        """Settings changed on earlier resumes (``resumes.json``), oldest first."""
        if not self.resumes_path.is_file():
            return []
        try:
            return json.loads(self.resumes_path.read_text())
        except json.JSONDecodeError as exc:
            raise RunError(f"{self.resumes_path} is unreadable: {exc}") from None

    def record_resume_changes(
        self, cfg: ExperimentConfig, changes: list[str], at_epoch: int
    ) -> None:
        """Store the changed settings of a resume: ``resumes.json`` gets an entry, and
        ``config.yaml`` the new values with one comment line per change."""
        history = self.resume_changes()
        history.append({"at_epoch": at_epoch, "time": now(), "changes": list(changes)})
        atomic_write_text(self.resumes_path, json.dumps(history, indent=2))
        header = "".join(
            f"# resumed at epoch {h['at_epoch']} ({h['time']}): {'; '.join(h['changes'])}\n"
            for h in history
        )
        self.write_config(cfg, header)

    # ------------------------------------------------------------------ checkpoints

    def save_last(self, state: dict[str, Any]) -> None:
        """Write ``last.pt``; the checkpoint it replaces becomes ``prev.pt``. ``last.pt`` exists
        at every moment (the old one is hard-linked to ``prev.pt`` before the new one lands)."""
        last, prev = self.last_ckpt, self.prev_ckpt
        last.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = mkstemp_shared(last.parent, ".last.pt.")
        os.close(fd)
        import torch

        torch.save(state, tmp)
        if last.is_file():
            link = last.parent / f".prev.pt.{os.getpid()}"
            link.unlink(missing_ok=True)
            try:
                os.link(last, link)
            except OSError:  # no hard links on this file system
                shutil.copyfile(last, link)
            os.replace(link, prev)
        os.replace(tmp, last)

    def resume_checkpoint(
        self, device: torch.device | str = "cpu", source: str = "last"
    ) -> tuple[dict[str, Any], Path] | None:
        """The checkpoint a resume continues from, or None when the run has none yet.

        Args:
            device: where tensors go.
            source: ``last`` (default; falls back on ``prev.pt`` only when ``last.pt`` is
                missing) or ``prev``.

        Raises:
            RunError: the checkpoint is unreadable; when ``prev.pt`` is readable the message
                says how to continue from it.
        """
        if source not in ("last", "prev"):
            raise RunError(f"resume from 'last' or 'prev', got {source!r}")
        if source == "prev":
            if not self.prev_ckpt.is_file():
                raise RunError(f"{self.path}: no previous checkpoint ({self.prev_ckpt})")
            return load_checkpoint(self.prev_ckpt, device), self.prev_ckpt
        if not self.last_ckpt.is_file():
            if not self.prev_ckpt.is_file():
                return None
            logger.warning(
                "%s is missing (the run was killed while replacing it); continuing from %s",
                self.last_ckpt,
                self.prev_ckpt,
            )
            return load_checkpoint(self.prev_ckpt, device), self.prev_ckpt
        try:
            return load_checkpoint(self.last_ckpt, device), self.last_ckpt
        except RunError as exc:
            if not self.prev_ckpt.is_file():
                raise
            try:
                done = load_checkpoint(self.prev_ckpt, "cpu").get("next_epoch")
            except RunError:
                raise exc from None
            raise RunError(
                f"{exc}. The previous checkpoint {self.prev_ckpt} ({done} epoch(s) done) is "
                f"readable: continue from it with `oodrec train --resume {self.path} "
                f"--resume-from prev` (the epochs after it are recomputed)"
            ) from None


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file renamed into place (mode: 0666 less the umask)."""
    fd, tmp = mkstemp_shared(path.parent, f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = mkstemp_shared(path.parent, f".{path.name}.")
    os.close(fd)
    import torch

    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint.

    Raises:
        RunError: missing, or unreadable (truncated, corrupt); the message names the file.
    """
    if not path.is_file():
        raise RunError(f"checkpoint {path} not found")
    import torch

    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"checkpoint {path} is unreadable (truncated or corrupt: {first})") from None
    if not isinstance(state, dict):
        raise RunError(f"checkpoint {path} is not an oodrec checkpoint")
    return state


def load_method_state(method: Any, state: dict[str, Any], path: Path) -> None:
    """Load a checkpoint's method state; checkpoints written before methods existed (keys
    ``model`` and ``sampler``) load through the method's ``load_legacy_state``.

    Raises:
        RunError: the checkpoint does not fit the method (names ``path``).
    """
    try:
        if "method" in state:
            method.load_state_dict(state["method"])
        else:
            method.load_legacy_state(state)
    except (KeyError, RuntimeError) as exc:
        raise RunError(f"{path}: checkpoint does not fit the run's method: {exc}") from None


__all__ = [
    "LOCK_FILE",
    "RunDir",
    "RunLock",
    "atomic_save",
    "atomic_write_text",
    "load_checkpoint",
    "load_method_state",
    "load_yaml",
]
