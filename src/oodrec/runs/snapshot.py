"""A resume either succeeds or leaves the run as it was.

A resume changes a run's files before it trains: it trims ``epochs.jsonl`` to the checkpoint,
sets a finished run's ``record.json`` aside as ``record.prev.json``, records the changed
settings in ``config.yaml`` and ``resumes.json``, rewrites ``resolved.yaml``; then each epoch
replaces the checkpoints. ``ResumeSnapshot`` keeps those files (hard links for checkpoints,
which are only ever replaced, never written into; copies of the small text files, one of which
is appended in place) in the hidden ``RUN_DIR/.resume-snapshot`` while the resume runs. When it
fails with an error, every file is put back and every file the resume created is removed, so a
refused or failed resume leaves ``record.json`` and the checkpoints byte for byte as they were
(``oodrec report`` and ``oodrec archive`` still count the run). The one exception is progress:
a resume of an unfinished run that has saved a new checkpoint keeps it (and the epochs before
it) when it fails later, as does one interrupted with Ctrl-C after a new checkpoint; it continues
from there. A resume that succeeds drops the snapshot; one left by a killed process is removed
by the next resume or a new run.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from oodrec.runs.rundir import RUN_FILES, SNAPSHOT_DIR, RunDir

logger = logging.getLogger(__name__)


def _keep(src: Path, dest: Path) -> None:
    """A hard link of a checkpoint (a copy where links are not supported), a copy otherwise."""
    if src.suffix == ".pt":
        try:
            os.link(src, dest)
            return
        except OSError:
            pass
    shutil.copy2(src, dest)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Identity of a file's content as far as a resume goes (it replaces, never rewrites)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class ResumeSnapshot:
    """Context manager around a resume of ``rd`` (whose lock the caller holds): when the resume
    fails, the run's files are restored (see the module docstring for when progress is kept),
    then the exception propagates."""

    def __init__(self, rd: RunDir) -> None:
        self.rd = rd
        self.dir = rd.path / SNAPSHOT_DIR
        self.finished = False
        self.last: tuple[int, int, int] | None = None

    def _names(self) -> list[str]:
        """The run's files a resume may change or create, relative to the run directory."""
        names = {n for n in RUN_FILES if n not in ("checkpoints", SNAPSHOT_DIR)}
        for base in (self.rd.path, self.dir):
            folder = base / "checkpoints"
            if folder.is_dir():
                names |= {
                    f"checkpoints/{p.name}"
                    for p in folder.iterdir()
                    if p.is_file() and not p.name.startswith(".")
                }
        return sorted(names)

    def __enter__(self) -> ResumeSnapshot:
        if self.dir.exists():
            shutil.rmtree(self.dir)  # left by a resume that was killed
        (self.dir / "checkpoints").mkdir(parents=True)
        self.finished = self.rd.is_finished()
        self.last = _stamp(self.rd.last_ckpt)
        for name in self._names():
            if (self.rd.path / name).is_file():
                _keep(self.rd.path / name, self.dir / name)
        return self

    def restore(self) -> None:
        """Put every kept file back and remove the files the resume created."""
        for name in self._names():
            kept, now = self.dir / name, self.rd.path / name
            if kept.is_file():
                now.parent.mkdir(parents=True, exist_ok=True)
                os.replace(kept, now)
            elif now.is_file():
                now.unlink()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        progressed = _stamp(self.rd.last_ckpt) not in (None, self.last)
        failed = exc_type is not None and issubclass(exc_type, Exception)
        if exc_type is not None and (not progressed or (failed and self.finished)):
            try:
                self.restore()
            except OSError as err:  # the resume's own error is the one to report
                logger.error("%s: could not restore the run's files: %s", self.rd.path, err)
            else:
                logger.info("%s: the resume failed; the run's files are as before", self.rd.path)
            return
        shutil.rmtree(self.dir, ignore_errors=True)


__all__ = ["ResumeSnapshot"]
