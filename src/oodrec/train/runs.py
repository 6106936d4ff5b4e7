"""Run directories: resolved config, per-epoch JSONL, final record and checkpoints.

Layout::

    RUN_DIR/config.yaml        resolved ExperimentConfig
    RUN_DIR/epochs.jsonl       one JSON object per finished epoch
    RUN_DIR/record.json        final record (written when the run ends)
    RUN_DIR/checkpoints/last.pt  everything needed to resume
    RUN_DIR/checkpoints/best.pt  model (and sampler) state of the selected epoch

Writes are atomic (temporary file + rename), so a run killed at any point can be resumed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from oodrec.config import ExperimentConfig, dump_yaml, load_yaml
from oodrec.errors import RunError


class RunDir:
    """Paths and I/O of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def epochs_path(self) -> Path:
        return self.path / "epochs.jsonl"

    @property
    def record_path(self) -> Path:
        return self.path / "record.json"

    @property
    def last_ckpt(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def best_ckpt(self) -> Path:
        return self.path / "checkpoints" / "best.pt"

    def create(self, cfg: ExperimentConfig) -> None:
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, self.config_path)
        self.epochs_path.write_text("")

    def load_config(self) -> ExperimentConfig:
        if not self.config_path.is_file():
            raise RunError(f"{self.path} is not a run directory (no config.yaml)")
        return load_yaml(self.config_path)

    def is_finished(self) -> bool:
        return self.record_path.is_file()

    def append_epoch(self, row: dict[str, Any]) -> None:
        with open(self.epochs_path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read_epochs(self) -> list[dict[str, Any]]:
        if not self.epochs_path.is_file():
            return []
        rows = []
        for line in self.epochs_path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                # A line cut by a kill: everything after it is discarded on resume.
                break
        return rows

    def truncate_epochs(self, upto: int) -> None:
        """Keep only JSONL rows of epochs < ``upto`` (the checkpointed ones)."""
        rows = [r for r in self.read_epochs() if r["epoch"] < upto]
        atomic_write_text(self.epochs_path, "".join(json.dumps(r) + "\n" for r in rows))

    def write_record(self, record: dict[str, Any]) -> None:
        atomic_write_text(self.record_path, json.dumps(record, indent=2, sort_keys=False))

    def read_record(self) -> dict[str, Any]:
        if not self.record_path.is_file():
            raise RunError(f"{self.path}: no record.json (the run has not finished)")
        return json.loads(self.record_path.read_text())


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise RunError(f"checkpoint {path} not found")
    return torch.load(path, map_location=device, weights_only=False)


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


__all__ = ["RunDir", "atomic_save", "load_checkpoint", "load_method_state", "load_yaml"]
