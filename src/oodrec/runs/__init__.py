"""Run directories: their files, checkpoints and the one-writer lock.

This layer sits below methods and training: it knows the layout of a run directory and how to
read and write its files, and nothing about how a run is trained. ``RunDir`` is the entry point.
"""

from oodrec.runs.lock import LOCK_FILE, RunLock
from oodrec.runs.rundir import (
    RUN_FILES,
    RunDir,
    atomic_save,
    atomic_write_text,
    load_checkpoint,
    load_method_state,
)
from oodrec.runs.snapshot import ResumeSnapshot

__all__ = [
    "LOCK_FILE",
    "RUN_FILES",
    "RunDir",
    "ResumeSnapshot",
    "RunLock",
    "atomic_save",
    "atomic_write_text",
    "load_checkpoint",
    "load_method_state",
]
